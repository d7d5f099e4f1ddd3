"""EDM (Karras et al. 2022) diffusion utilities shared by the action head and the TVP video loss.

Conventions: ``sigma`` is the noise standard deviation, a noised sample is ``x + sigma * eps``,
and a *denoiser* ``D(x_noisy, sigma) -> x0_estimate`` predicts the clean sample. A network ``F``
is wrapped into a denoiser by the preconditioning

    D(x, sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma)).

Every random draw takes an optional ``torch.Generator`` so training batches and sampled plans can
be reproduced exactly. Noise is drawn on the generator's device and then moved, so one CPU
generator yields the same noise whether the model runs on CPU or GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "EdmScalings",
    "edm_scalings",
    "edm_loss_weight",
    "edm_training_target",
    "sample_log_logistic_sigmas",
    "sample_lognormal_sigmas",
    "exponential_sigma_schedule",
    "dpm_solver_1_step",
    "dpm_solver_1_sample",
    "sample_edm",
    "randn",
    "Denoiser",
]

# Denoiser signature used by the sampler: (x_noisy [B, ...], sigma [B]) -> x0 estimate [B, ...].
Denoiser = Callable[[Tensor, Tensor], Tensor]

ShapeLike = Union[int, Sequence[int], torch.Size]


@dataclass(frozen=True)
class EdmScalings:
    """The four EDM preconditioning coefficients, each shaped like the ``sigma`` they came from."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def _check_sigma(sigma: Tensor, allow_zero: bool = False) -> None:
    if not torch.is_tensor(sigma):
        raise TypeError(f"sigma must be a torch.Tensor, got {type(sigma).__name__}")
    if not torch.isfinite(sigma).all():
        raise ValueError("sigma contains NaN or Inf")
    if allow_zero:
        if (sigma < 0).any():
            raise ValueError("sigma must be >= 0")
    elif (sigma <= 0).any():
        raise ValueError("sigma must be > 0 (c_noise = ln(sigma)/4 is undefined at 0)")


def edm_scalings(sigma: Tensor, sigma_data: float = 0.5, validate: bool = True) -> EdmScalings:
    """EDM preconditioning coefficients for noise levels ``sigma`` (any shape, all > 0).

    c_skip = sd^2 / (s^2 + sd^2), c_out = s * sd / sqrt(s^2 + sd^2),
    c_in = 1 / sqrt(s^2 + sd^2), c_noise = ln(s) / 4.
    They keep the network's input and training target at unit variance for data of std ``sd``.
    ``validate=False`` skips the finiteness/positivity check (a host-device sync on GPU) for
    sigmas that are valid by construction, e.g. inside a sampling loop.
    """
    if validate:
        _check_sigma(sigma)
    if sigma_data <= 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
    sigma_sq = sigma * sigma
    total_var = sigma_sq + sigma_data**2
    c_skip = sigma_data**2 / total_var
    c_out = sigma * sigma_data / total_var.sqrt()
    c_in = total_var.rsqrt()
    c_noise = sigma.log() / 4.0
    return EdmScalings(c_skip=c_skip, c_out=c_out, c_in=c_in, c_noise=c_noise)


def edm_loss_weight(sigma: Tensor, sigma_data: float = 0.5) -> Tensor:
    """EDM loss weight lambda(sigma) = (s^2 + sd^2) / (s * sd)^2 = 1 / c_out^2.

    With this weight, ``lambda * |D - x0|^2`` equals the unit-weighted error of the raw network
    output against ``edm_training_target`` — the form used for training because it avoids
    multiplying tiny differences by ~1e6 at sigma ~ 1e-3 (bad in reduced precision).
    """
    _check_sigma(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_training_target(clean: Tensor, noisy: Tensor, scalings: EdmScalings) -> Tensor:
    """Target for the raw network output F: (x0 - c_skip * x_noisy) / c_out.

    ``scalings`` must already be broadcastable against ``clean`` (e.g. sigma shaped [B, 1, 1]).
    """
    return (clean - scalings.c_skip * noisy) / scalings.c_out


def _as_shape(shape: ShapeLike) -> tuple[int, ...]:
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


def randn(
    shape: ShapeLike,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise; with a generator it is drawn on the generator's device, then moved.

    Drawing on the generator's device makes a seeded CPU generator give bit-identical noise for a
    model on any device.
    """
    if generator is None:
        return torch.randn(_as_shape(shape), device=device, dtype=dtype)
    noise = torch.randn(_as_shape(shape), generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device) if device is not None else noise


def _rand(
    shape: ShapeLike,
    generator: Optional[torch.Generator],
    device: Optional[Union[str, torch.device]],
    dtype: torch.dtype,
) -> Tensor:
    if generator is None:
        return torch.rand(_as_shape(shape), device=device, dtype=dtype)
    values = torch.rand(_as_shape(shape), generator=generator, device=generator.device, dtype=dtype)
    return values.to(device) if device is not None else values


def sample_log_logistic_sigmas(
    shape: ShapeLike,
    loc: float = math.log(0.5),
    scale: float = 0.5,
    sigma_min: float = 0.001,
    sigma_max: float = 80.0,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Training noise levels: ln(sigma) ~ Logistic(loc, scale) truncated to [sigma_min, sigma_max].

    Drawn exactly by inverse-CDF sampling of a uniform restricted to the CDF values of the bounds,
    so no sample is rejected or clamped onto the boundary. The computation runs in float64 so
    that the logit stays accurate near the CDF bounds.
    """
    if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")

    def logistic_cdf(value: float) -> float:
        return 1.0 / (1.0 + math.exp(-(value - loc) / scale))

    cdf_low = logistic_cdf(math.log(sigma_min))
    cdf_high = logistic_cdf(math.log(sigma_max))
    uniform = _rand(shape, generator, device, torch.float64)
    u = cdf_low + uniform * (cdf_high - cdf_low)
    log_sigma = loc + scale * (u.log() - (-u).log1p())
    # Guard against the last ulp of rounding pushing a value just outside the range.
    sigma = log_sigma.exp().clamp(sigma_min, sigma_max)
    return sigma.to(dtype)


def sample_lognormal_sigmas(
    shape: ShapeLike,
    mean: float = 0.7,
    std: float = 1.6,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Noise levels with ln(sigma) ~ Normal(mean, std) (EDM's default; TVP fine-tuning uses 0.7, 1.6)."""
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    return (mean + std * randn(shape, generator, device, dtype)).exp()


def exponential_sigma_schedule(
    steps: int,
    sigma_min: float = 0.001,
    sigma_max: float = 80.0,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``steps`` noise levels spaced evenly in ln(sigma) from sigma_max down to sigma_min, then 0.

    Returns ``steps + 1`` values; a sampler makes one denoiser call per step. With ``steps == 1``
    the single level is sigma_max (the one-shot prediction from pure noise).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not (0 < sigma_min <= sigma_max) or not math.isfinite(sigma_max):
        raise ValueError(f"need 0 < sigma_min <= sigma_max < inf, got {sigma_min}, {sigma_max}")
    if steps == 1:
        levels = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        levels = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp()
    sigmas = torch.cat([levels, levels.new_zeros(1)])
    return sigmas.to(device=device, dtype=dtype)


def dpm_solver_1_step(x: Tensor, denoised: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """One first-order DPM-Solver step in EDM form (identical to deterministic DDIM).

    x_next = (s_next / s) * x + (1 - s_next / s) * D(x, s); at s_next = 0 this returns D exactly.
    ``sigma`` and ``sigma_next`` must broadcast against ``x``.
    """
    ratio = sigma_next / sigma
    return ratio * x + (1.0 - ratio) * denoised


def dpm_solver_1_sample(
    denoiser: Denoiser,
    x_init: Tensor,
    sigmas: Tensor,
    callback: Optional[Callable[[int, Tensor, Tensor], None]] = None,
) -> Tensor:
    """Run DPM-Solver-1 from ``x_init`` (already noise at level ``sigmas[0]``) along ``sigmas``.

    ``sigmas`` is a decreasing 1-D schedule ending in 0 (see ``exponential_sigma_schedule``). The
    denoiser is called once per step with a per-sample sigma vector of shape [B]. The loop itself
    is deterministic: all randomness lives in ``x_init``. ``callback(step, x, denoised)``, if given,
    sees every intermediate state (useful for debugging and visualisation).
    """
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    if not torch.isfinite(sigmas).all() or (sigmas[:-1] <= 0).any() or sigmas[-1] < 0:
        raise ValueError("sigmas must be finite, > 0 except possibly the last entry, which must be >= 0")
    if (sigmas[1:] >= sigmas[:-1]).any():
        raise ValueError("sigmas must be strictly decreasing")
    if x_init.ndim < 1:
        raise ValueError("x_init needs a batch dimension")
    batch = x_init.shape[0]
    x = x_init
    sigma_values = sigmas.to(device=x.device, dtype=x.dtype)
    for step in range(sigma_values.numel() - 1):
        sigma = sigma_values[step]
        sigma_next = sigma_values[step + 1]
        denoised = denoiser(x, sigma.expand(batch))
        if denoised.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(denoised.shape)}, expected {tuple(x.shape)}")
        x = dpm_solver_1_step(x, denoised, sigma, sigma_next)
        if callback is not None:
            callback(step, x, denoised)
    return x


def sample_edm(
    denoiser: Denoiser,
    shape: ShapeLike,
    sigmas: Tensor,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``N(0, sigmas[0]^2)`` noise of ``shape`` (seedable) and denoise it with DPM-Solver-1."""
    x_init = randn(shape, generator, device, dtype) * float(sigmas[0])
    return dpm_solver_1_sample(denoiser, x_init, sigmas)
