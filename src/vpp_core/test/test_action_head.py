"""Diffusion action head: shapes, EDM preconditioning, loss, seeded sampling and a tiny overfit run."""

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vpp_core.model.action_head import ActionHeadConfig, DiffusionActionHead
from vpp_core.model.edm import edm_loss_weight, randn, sample_log_logistic_sigmas

torch.set_num_threads(1)


def tiny_config(**overrides) -> ActionHeadConfig:
    values = dict(
        action_dim=7,
        horizon=10,
        dim=64,
        heads=4,
        encoder_depth=2,
        decoder_depth=2,
        lang_dim=32,
        lang_hidden=64,
        num_vision_tokens=8,
    )
    values.update(overrides)
    return ActionHeadConfig(**values)


def observation(cfg: ActionHeadConfig, batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lang = torch.randn(batch, cfg.lang_dim, generator=gen)
    vision = torch.randn(batch, cfg.num_vision_tokens, cfg.dim, generator=gen)
    proprio = torch.randn(batch, cfg.proprio_dim, generator=gen) if cfg.proprio_dim else None
    return lang, vision, proprio


def randomise_zero_initialised_layers(head: DiffusionActionHead, seed: int = 0) -> None:
    """adaLN-Zero starts every block as the identity and the output at 0; give those layers random
    weights so structural tests see a head whose every path carries signal."""
    gen = torch.Generator().manual_seed(seed)
    layers = [block.modulation[-1] for block in head.decoder] + [head.output_modulation[-1], head.action_out]
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.05)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.05)


@pytest.mark.parametrize(
    "batch, vision_tokens, proprio_dim, action_dim, horizon",
    [(1, 8, 0, 7, 10), (3, 12, 19, 18, 8), (2, 5, 4, 3, 1)],
)
def test_shapes_of_every_stage(batch, vision_tokens, proprio_dim, action_dim, horizon):
    cfg = tiny_config(num_vision_tokens=vision_tokens, proprio_dim=proprio_dim, action_dim=action_dim, horizon=horizon)
    head = DiffusionActionHead(cfg)
    lang, vision, proprio = observation(cfg, batch)
    context = head.encode(lang, vision, proprio)
    assert context.shape == (batch, cfg.num_context_tokens, cfg.dim)
    assert cfg.num_context_tokens == 1 + vision_tokens + (1 if proprio_dim else 0)
    noisy = torch.randn(batch, horizon, action_dim)
    assert head.denoise(noisy, torch.full((batch,), 0.7), context).shape == (batch, horizon, action_dim)
    assert head.denoise(noisy, torch.tensor(0.7), context).shape == (batch, horizon, action_dim)
    loss = head.loss(torch.rand(batch, horizon, action_dim) * 2 - 1, context)
    assert loss.ndim == 0 and torch.isfinite(loss)
    sampled = head.sample(context, steps=3)
    assert sampled.shape == (batch, horizon, action_dim) and torch.isfinite(sampled).all()


def test_full_size_defaults_match_the_paper():
    cfg = ActionHeadConfig(action_dim=7, horizon=10)
    assert (cfg.dim, cfg.heads, cfg.encoder_depth, cfg.decoder_depth) == (384, 8, 4, 4)
    assert (cfg.lang_dim, cfg.lang_hidden, cfg.num_vision_tokens, cfg.proprio_dim) == (512, 768, 224, 0)
    assert (cfg.sigma_data, cfg.sigma_min, cfg.sigma_max, cfg.sampling_steps) == (0.5, 0.001, 80.0, 10)
    assert cfg.num_context_tokens == 225


def test_config_round_trip_and_validation():
    cfg = tiny_config(proprio_dim=19, dropout=0.1)
    assert ActionHeadConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ActionHeadConfig.from_dict({**cfg.to_dict(), "causal": True})
    with pytest.raises(ValueError):
        tiny_config(dim=66, heads=4)
    with pytest.raises(ValueError):
        tiny_config(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError):
        tiny_config(horizon=0)


def test_encode_rejects_bad_inputs():
    cfg = tiny_config(proprio_dim=3)
    head = DiffusionActionHead(cfg)
    lang, vision, proprio = observation(cfg, 2)
    with pytest.raises(ValueError, match="proprio"):
        head.encode(lang, vision)
    with pytest.raises(ValueError):
        head.encode(lang, vision[:, :-1], proprio)
    with pytest.raises(ValueError):
        head.encode(lang[:, :-1], vision, proprio)
    with pytest.raises(ValueError):
        head.encode(lang, vision, proprio[:1])
    no_proprio = DiffusionActionHead(tiny_config())
    with pytest.raises(ValueError, match="proprio"):
        no_proprio.encode(lang, vision, proprio)
    context = head.encode(lang, vision, proprio)
    with pytest.raises(ValueError):
        head.denoise(torch.zeros(2, cfg.horizon, cfg.action_dim + 1), torch.ones(2), context)
    with pytest.raises(ValueError):
        head.denoise(torch.zeros(2, cfg.horizon, cfg.action_dim), torch.ones(3), context)
    with pytest.raises(ValueError):
        head.denoise(torch.zeros(2, cfg.horizon, cfg.action_dim), torch.zeros(2), context)
    with pytest.raises(ValueError):
        head.sample(context[:, :-1])


def test_preconditioning_identities():
    cfg = tiny_config()
    head = DiffusionActionHead(cfg).eval()
    lang, vision, _ = observation(cfg, 3)
    context = head.encode(lang, vision)
    noisy = torch.randn(3, cfg.horizon, cfg.action_dim)
    # Fresh head: zero output layer, so D = c_skip * x exactly.
    sigma = torch.tensor([0.1, 1.0, 10.0])
    c_skip = (0.25 / (sigma**2 + 0.25)).view(-1, 1, 1)
    torch.testing.assert_close(head.denoise(noisy, sigma, context), c_skip * noisy)
    # Any network: as sigma -> 0, c_out -> 0 and c_skip -> 1, so D(x) -> x.
    randomise_zero_initialised_layers(head)
    assert (head.denoise(noisy, torch.full((3,), 0.5), context) - noisy).abs().max() > 0.05
    denoised = head.denoise(noisy, torch.full((3,), 1e-6), context)
    torch.testing.assert_close(denoised, noisy, atol=1e-5, rtol=0)


def test_loss_is_edm_weighted_mse_of_the_denoiser():
    cfg = tiny_config()
    head = DiffusionActionHead(cfg).eval()
    randomise_zero_initialised_layers(head)
    lang, vision, _ = observation(cfg, 4)
    context = head.encode(lang, vision)
    actions = torch.rand(4, cfg.horizon, cfg.action_dim, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loss = head.loss(actions, context, generator=torch.Generator().manual_seed(9))
    # Replay the same draws (sigmas first, then noise) and compute the textbook EDM loss.
    gen = torch.Generator().manual_seed(9)
    sigma = sample_log_logistic_sigmas(
        4, loc=math.log(cfg.train_sigma_median), scale=cfg.train_sigma_log_scale,
        sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, generator=gen,
    )
    noise = randn(actions.shape, gen)
    denoised = head.denoise(actions + sigma.view(-1, 1, 1) * noise, sigma, context)
    weights = edm_loss_weight(sigma, cfg.sigma_data).view(-1, 1, 1)
    expected = (weights * (denoised - actions) ** 2).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-3, atol=0)
    assert torch.equal(loss, head.loss(actions, context, generator=torch.Generator().manual_seed(9)))


def test_sample_is_seeded_and_deterministic():
    cfg = tiny_config()
    head = DiffusionActionHead(cfg).eval()
    randomise_zero_initialised_layers(head)
    lang, vision, _ = observation(cfg, 2)
    context = head.encode(lang, vision)
    first = head.sample(context, generator=torch.Generator().manual_seed(0))
    second = head.sample(context, generator=torch.Generator().manual_seed(0))
    other = head.sample(context, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_one_step_sample_is_the_denoiser_at_sigma_max():
    cfg = tiny_config()
    head = DiffusionActionHead(cfg).eval()
    randomise_zero_initialised_layers(head)
    lang, vision, _ = observation(cfg, 2)
    context = head.encode(lang, vision)
    sampled = head.sample(context, generator=torch.Generator().manual_seed(4), steps=1)
    noise = randn((2, cfg.horizon, cfg.action_dim), torch.Generator().manual_seed(4)) * cfg.sigma_max
    with torch.no_grad():
        expected = head.denoise(noise, torch.full((2,), cfg.sigma_max), context)
    torch.testing.assert_close(sampled, expected)


def test_sample_runs_encoder_zero_times_and_decoder_once_per_step():
    cfg = tiny_config()
    head = DiffusionActionHead(cfg).eval()
    lang, vision, _ = observation(cfg, 2)
    context = head.encode(lang, vision)
    calls = {"encoder": 0, "decoder": 0, "context_kv": 0}

    def counter(key):
        def hook(*_):
            calls[key] += 1

        return hook

    head.encoder[0].register_forward_hook(counter("encoder"))
    head.decoder[0].register_forward_hook(counter("decoder"))
    head.decoder[0].cross_attn.to_kv.register_forward_hook(counter("context_kv"))
    head.sample(context, steps=7)
    assert calls == {"encoder": 0, "decoder": 7, "context_kv": 1}


def test_cross_attention_is_not_causal():
    # The reference lets action token i see only context tokens 0..i. With a horizon (2) shorter
    # than the context (9 tokens), a causal mask would hide the last context token from every
    # action token; ours lets the first action token see it.
    cfg = tiny_config(horizon=2)
    head = DiffusionActionHead(cfg).eval()
    randomise_zero_initialised_layers(head)
    lang, vision, _ = observation(cfg, 1)
    context = head.encode(lang, vision)
    changed = context.clone()
    changed[:, -1] += 1.0
    noisy = torch.randn(1, cfg.horizon, cfg.action_dim)
    sigma = torch.tensor([1.0])
    delta = (head.denoise(noisy, sigma, changed) - head.denoise(noisy, sigma, context))[0, 0]
    assert delta.abs().max() > 1e-5


def test_every_parameter_including_proprio_projection_is_trained():
    cfg = tiny_config(proprio_dim=5)
    head = DiffusionActionHead(cfg)
    randomise_zero_initialised_layers(head)
    lang, vision, proprio = observation(cfg, 3)
    actions = torch.rand(3, cfg.horizon, cfg.action_dim) * 2 - 1
    head.loss(actions, head.encode(lang, vision, proprio), generator=torch.Generator().manual_seed(0)).backward()
    for name, param in head.named_parameters():
        assert param.requires_grad, name
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_flop_counter_works_under_no_grad():
    cfg = tiny_config()
    head = DiffusionActionHead(cfg)
    lang, vision, _ = observation(cfg, 1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        head.sample(head.encode(lang, vision), steps=2)
    assert counter.get_total_flops() > 0


def test_tiny_head_overfits_four_action_chunks():
    """Training loss must fall >= 10x and sampled chunks must land on their targets.

    Tolerance: targets are uniform in [-1, 1] (distinct chunks differ by ~0.67 per element on
    average); after training, the mean absolute error of samples from 8 noise draws per context
    is < 0.05 and the worst element < 0.3, and every sample is nearest to its own chunk.
    """
    torch.manual_seed(0)
    cfg = tiny_config()
    head = DiffusionActionHead(cfg)
    batch, repeats, steps = 4, 8, 400
    gen = torch.Generator().manual_seed(1)
    actions = torch.rand(batch, cfg.horizon, cfg.action_dim, generator=gen) * 2 - 1
    lang = torch.randn(batch, cfg.lang_dim, generator=gen)
    vision = torch.randn(batch, cfg.num_vision_tokens, cfg.dim, generator=gen)

    def fixed_draw_loss() -> float:
        with torch.no_grad():
            context = head.encode(lang, vision).repeat(32, 1, 1)
            return head.loss(actions.repeat(32, 1, 1), context, generator=torch.Generator().manual_seed(123)).item()

    initial_loss = fixed_draw_loss()
    optimiser = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    train_gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        context = head.encode(lang, vision).repeat(repeats, 1, 1)
        loss = head.loss(actions.repeat(repeats, 1, 1), context, generator=train_gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    final_loss = fixed_draw_loss()
    assert final_loss < initial_loss / 10, (initial_loss, final_loss)

    head.eval()
    with torch.no_grad():
        context = head.encode(lang, vision).repeat(repeats, 1, 1)
        sampled = head.sample(context, generator=torch.Generator().manual_seed(5))
    targets = actions.repeat(repeats, 1, 1)
    errors = (sampled - targets).abs()
    assert errors.mean() < 0.05, errors.mean()
    assert errors.max() < 0.3, errors.max()
    distances = torch.cdist(sampled.flatten(1), actions.flatten(1))
    assert torch.equal(distances.argmin(dim=1), torch.arange(batch).repeat(repeats))


def test_module_can_run_in_float64():
    cfg = tiny_config()
    head = DiffusionActionHead(cfg).to(torch.float64)
    lang, vision, _ = observation(cfg, 2)
    context = head.encode(lang.double(), vision.double())
    assert context.dtype == torch.float64
    sampled = head.sample(context, generator=torch.Generator().manual_seed(0), steps=2)
    assert sampled.dtype == torch.float64 and torch.isfinite(sampled).all()
