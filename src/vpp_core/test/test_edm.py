"""EDM preconditioning, noise samplers, sigma schedule and the DPM-Solver-1 sampler."""

import math

import pytest
import torch

from vpp_core.model.edm import (
    dpm_solver_1_sample,
    edm_loss_weight,
    edm_scalings,
    edm_training_target,
    exponential_sigma_schedule,
    randn,
    sample_edm,
    sample_log_logistic_sigmas,
    sample_lognormal_sigmas,
)

torch.set_num_threads(1)

SIGMA_DATA = 0.5


def test_scalings_limits_small_and_large_sigma():
    tiny = edm_scalings(torch.tensor([1e-6]), SIGMA_DATA)
    assert tiny.c_skip.item() == pytest.approx(1.0, abs=1e-9)
    assert tiny.c_out.item() == pytest.approx(1e-6, rel=1e-4)
    assert tiny.c_in.item() == pytest.approx(1.0 / SIGMA_DATA, rel=1e-6)
    huge = edm_scalings(torch.tensor([1e4]), SIGMA_DATA)
    assert huge.c_skip.item() == pytest.approx(0.0, abs=1e-8)
    assert huge.c_out.item() == pytest.approx(SIGMA_DATA, rel=1e-6)
    assert huge.c_in.item() == pytest.approx(1e-4, rel=1e-6)


def test_scalings_closed_forms_and_unit_variance_identities():
    sigma = torch.logspace(-3, math.log10(80.0), 50, dtype=torch.float64)
    sc = edm_scalings(sigma, SIGMA_DATA)
    total = sigma**2 + SIGMA_DATA**2
    torch.testing.assert_close(sc.c_noise, sigma.log() / 4)
    # Network input c_in * (x0 + sigma n) has unit variance when std(x0) = sigma_data.
    torch.testing.assert_close(sc.c_in**2 * total, torch.ones_like(sigma))
    # Training target (x0 - c_skip x) / c_out has unit variance too.
    target_var = ((1 - sc.c_skip) ** 2 * SIGMA_DATA**2 + sc.c_skip**2 * sigma**2) / sc.c_out**2
    torch.testing.assert_close(target_var, torch.ones_like(sigma))
    # The EDM loss weight cancels c_out^2 exactly.
    torch.testing.assert_close(edm_loss_weight(sigma, SIGMA_DATA) * sc.c_out**2, torch.ones_like(sigma))


def test_training_target_makes_weighted_denoiser_error_equal_raw_error():
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(6, 3, generator=gen, dtype=torch.float64) * SIGMA_DATA
    sigma = sample_log_logistic_sigmas(6, generator=gen, dtype=torch.float64).view(-1, 1)
    noisy = clean + sigma * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    sc = edm_scalings(sigma, SIGMA_DATA)
    raw = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    denoised = sc.c_skip * noisy + sc.c_out * raw
    weighted = edm_loss_weight(sigma, SIGMA_DATA) * (denoised - clean) ** 2
    torch.testing.assert_close(weighted, (raw - edm_training_target(clean, noisy, sc)) ** 2)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_scalings_reject_invalid_sigma(bad):
    with pytest.raises(ValueError):
        edm_scalings(torch.tensor([1.0, bad]))


def test_log_logistic_sigmas_distribution_range_and_seed():
    sigmas = sample_log_logistic_sigmas(100_000, generator=torch.Generator().manual_seed(0))
    assert sigmas.shape == (100_000,)
    assert sigmas.min() >= 0.001 and sigmas.max() <= 80.0
    # ln(sigma) ~ Logistic(ln 0.5, 0.5): median 0.5, std pi * scale / sqrt(3).
    assert sigmas.median().item() == pytest.approx(0.5, rel=0.02)
    assert sigmas.log().std().item() == pytest.approx(math.pi * 0.5 / math.sqrt(3), rel=0.02)
    again = sample_log_logistic_sigmas(100_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sigmas, again)


def test_log_logistic_truncation_is_exact_not_clamping():
    gen = torch.Generator().manual_seed(1)
    sigmas = sample_log_logistic_sigmas(20_000, sigma_min=0.4, sigma_max=0.6, generator=gen)
    assert sigmas.min() >= 0.4 and sigmas.max() <= 0.6
    # Clamping would pile probability mass onto the bounds; inverse-CDF sampling does not.
    at_bounds = ((sigmas == 0.4) | (sigmas == 0.6)).float().mean().item()
    assert at_bounds < 0.001
    assert 0.45 < sigmas.median().item() < 0.55


def test_lognormal_sigmas_parameters():
    sigmas = sample_lognormal_sigmas((200, 500), mean=0.7, std=1.6, generator=torch.Generator().manual_seed(0))
    assert sigmas.shape == (200, 500)
    assert (sigmas > 0).all()
    assert sigmas.log().mean().item() == pytest.approx(0.7, abs=0.02)
    assert sigmas.log().std().item() == pytest.approx(1.6, rel=0.01)


@pytest.mark.parametrize("steps", [1, 2, 10, 37])
def test_exponential_schedule(steps):
    sigmas = exponential_sigma_schedule(steps, 0.001, 80.0, dtype=torch.float64)
    assert sigmas.shape == (steps + 1,)
    assert sigmas[0].item() == pytest.approx(80.0)
    assert sigmas[-1].item() == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()
    if steps > 1:
        assert sigmas[-2].item() == pytest.approx(0.001)
        log_gaps = sigmas[:-1].log().diff()
        torch.testing.assert_close(log_gaps, log_gaps[:1].expand_as(log_gaps))


def test_exponential_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError):
        exponential_sigma_schedule(0)
    with pytest.raises(ValueError):
        exponential_sigma_schedule(10, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError):
        exponential_sigma_schedule(10, sigma_min=0.0)


def test_sampler_with_oracle_denoiser_converges_to_x0_along_the_ddim_path():
    target = torch.tensor([[0.3, -0.7, 0.1], [1.0, 0.0, -1.0]], dtype=torch.float64)
    sigmas = exponential_sigma_schedule(10, dtype=torch.float64)
    x_init = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigmas[0]
    seen_sigmas = []
    states = []

    def oracle(x, sigma):
        assert sigma.shape == (2,)
        seen_sigmas.append(sigma[0].item())
        return target.clone()

    out = dpm_solver_1_sample(oracle, x_init, sigmas, callback=lambda step, x, _: states.append(x))
    torch.testing.assert_close(out, target)
    assert seen_sigmas == pytest.approx(sigmas[:-1].tolist())
    # With a perfect x0 prediction, DDIM shrinks the offset from x0 by sigma_next / sigma each step.
    for step, state in enumerate(states):
        expected = target + (sigmas[step + 1] / sigmas[0]) * (x_init - target)
        torch.testing.assert_close(state, expected)


def test_sampler_solves_gaussian_probability_flow_ode():
    # For data ~ N(mu, s^2) the exact denoiser is known, and so is the probability-flow ODE
    # solution: x(0) = mu + s / sqrt(s^2 + sigma_max^2) * (x(sigma_max) - mu). DPM-Solver-1 is
    # first order, so its error must shrink about 4x when the number of steps grows 4x.
    mu, std, sigma_max = 0.3, 0.5, 80.0

    def gaussian_denoiser(x, sigma):
        return mu + (std**2 / (std**2 + sigma[:, None] ** 2)) * (x - mu)

    x_init = torch.randn(500, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sigma_max
    exact = mu + std / math.sqrt(std**2 + sigma_max**2) * (x_init - mu)
    errors = {}
    for steps in (50, 200):
        sigmas = exponential_sigma_schedule(steps, 0.001, sigma_max, dtype=torch.float64)
        errors[steps] = (dpm_solver_1_sample(gaussian_denoiser, x_init, sigmas) - exact).abs().max().item()
    assert errors[200] < 0.05
    assert errors[50] / errors[200] > 3.0


def test_sampler_rejects_bad_schedules_and_shapes():
    x = torch.zeros(2, 3)
    identity = lambda x, sigma: x  # noqa: E731
    with pytest.raises(ValueError):
        dpm_solver_1_sample(identity, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError):
        dpm_solver_1_sample(identity, x, torch.tensor([1.0, float("nan"), 0.0]))
    with pytest.raises(ValueError):
        dpm_solver_1_sample(identity, x, torch.tensor([1.0]))
    with pytest.raises(ValueError):
        dpm_solver_1_sample(lambda x, sigma: x[:, :2], x, torch.tensor([1.0, 0.0]))


def test_sample_edm_is_seedable():
    def shrink(x, sigma):
        return 0.5 * x / (1 + sigma[:, None, None])

    sigmas = exponential_sigma_schedule(5)
    first = sample_edm(shrink, (3, 4, 2), sigmas, generator=torch.Generator().manual_seed(7))
    second = sample_edm(shrink, (3, 4, 2), sigmas, generator=torch.Generator().manual_seed(7))
    other = sample_edm(shrink, (3, 4, 2), sigmas, generator=torch.Generator().manual_seed(8))
    assert first.shape == (3, 4, 2)
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_randn_with_generator_matches_plain_torch():
    expected = torch.randn(4, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(randn((4, 5), torch.Generator().manual_seed(3)), expected)
    assert torch.equal(randn((4, 5), torch.Generator().manual_seed(3), device="cpu", dtype=torch.float32), expected)
