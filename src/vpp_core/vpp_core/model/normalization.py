"""Per-dimension percentile normalisation of actions / proprioception to [-1, 1].

Fit: for every dimension, the ``lower_percentile`` and ``upper_percentile`` (default 1st / 99th)
of the data become ``low`` and ``high``. Normalise: ``2 (x - low) / (high - low) - 1``, clipped to
[-1, 1], so rare outliers cannot dominate training. Un-normalise: the inverse affine map, with the
input clipped to [-1, 1] first — the policy was trained on that range only, so a sample slightly
outside it is not extrapolated into a larger motion.

Dimensions whose range is below ``min_range`` (e.g. a gripper that never moved in the data) are
"constant": they normalise to 0 and un-normalise to the midpoint, with no division by ~0.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, TypeVar, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["PercentileNormalizer"]

ArrayLike = TypeVar("ArrayLike", np.ndarray, Tensor)


def _reject_non_finite(values: Union[np.ndarray, Tensor], what: str) -> None:
    finite = torch.isfinite(values).all() if torch.is_tensor(values) else np.isfinite(values).all()
    if not bool(finite):
        raise ValueError(f"{what} contains NaN or Inf")


class PercentileNormalizer:
    """Maps each of ``D`` dimensions from its [low, high] percentile range to [-1, 1]."""

    def __init__(
        self,
        low: Union[np.ndarray, Tensor, list[float]],
        high: Union[np.ndarray, Tensor, list[float]],
        lower_percentile: float = 1.0,
        upper_percentile: float = 99.0,
        min_range: float = 1e-8,
    ) -> None:
        low_array = np.asarray(low.detach().cpu() if torch.is_tensor(low) else low, dtype=np.float64)
        high_array = np.asarray(high.detach().cpu() if torch.is_tensor(high) else high, dtype=np.float64)
        if low_array.ndim != 1 or low_array.shape != high_array.shape or low_array.size == 0:
            raise ValueError(
                f"low and high must be non-empty 1-D arrays of equal length, got {low_array.shape}, {high_array.shape}"
            )
        _reject_non_finite(low_array, "low")
        _reject_non_finite(high_array, "high")
        if (high_array < low_array).any():
            raise ValueError("high must be >= low in every dimension")
        if not 0.0 <= lower_percentile < upper_percentile <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got {lower_percentile}, {upper_percentile}")
        if not (min_range >= 0.0 and math.isfinite(min_range)):
            raise ValueError(f"min_range must be finite and >= 0, got {min_range}")
        self.low = low_array
        self.high = high_array
        self.lower_percentile = float(lower_percentile)
        self.upper_percentile = float(upper_percentile)
        self.min_range = float(min_range)
        span = high_array - low_array
        self.constant = span <= min_range
        # Constant dimensions get a unit half-range, so (x - centre) / half_range is finite; their
        # normalised value is then forced to 0.
        self._centre = (high_array + low_array) / 2.0
        self._half_range = np.where(self.constant, 1.0, span / 2.0)

    @classmethod
    def fit(
        cls,
        data: Union[np.ndarray, Tensor],
        lower_percentile: float = 1.0,
        upper_percentile: float = 99.0,
        min_range: float = 1e-8,
    ) -> "PercentileNormalizer":
        """Fit per-dimension percentiles of ``data`` [N, D] (or [..., D], leading dims pooled)."""
        array = np.asarray(data.detach().cpu() if torch.is_tensor(data) else data, dtype=np.float64)
        if array.ndim < 2 or array.shape[0] == 0 or array.shape[-1] == 0:
            raise ValueError(f"data must be [N, D] with N, D >= 1, got shape {array.shape}")
        _reject_non_finite(array, "data")
        if not 0.0 <= lower_percentile < upper_percentile <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got {lower_percentile}, {upper_percentile}")
        flat = array.reshape(-1, array.shape[-1])
        low, high = np.percentile(flat, [lower_percentile, upper_percentile], axis=0)
        return cls(low, high, lower_percentile, upper_percentile, min_range)

    @property
    def dim(self) -> int:
        """Number of dimensions D."""
        return int(self.low.shape[0])

    def _stats_like(self, values: ArrayLike) -> tuple[Any, Any, Any]:
        if values.shape[-1:] != (self.dim,):
            raise ValueError(f"last dimension must be {self.dim}, got shape {tuple(values.shape)}")
        _reject_non_finite(values, "input")
        if torch.is_tensor(values):
            if not values.is_floating_point():
                values = values.float()
            device, dtype = values.device, values.dtype
            return (
                torch.as_tensor(self._centre, dtype=dtype, device=device),
                torch.as_tensor(self._half_range, dtype=dtype, device=device),
                torch.as_tensor(self.constant, dtype=torch.bool, device=device),
            )
        return self._centre, self._half_range, self.constant

    def normalize(self, values: ArrayLike) -> ArrayLike:
        """Raw values [..., D] -> [-1, 1] (clipped). NumPy in -> NumPy out, tensor in -> tensor out."""
        centre, half_range, constant = self._stats_like(values)
        if torch.is_tensor(values):
            scaled = ((values.to(centre.dtype) - centre) / half_range).clamp(-1.0, 1.0)
            return torch.where(constant, torch.zeros_like(scaled), scaled)
        scaled = np.clip((np.asarray(values, dtype=np.float64) - centre) / half_range, -1.0, 1.0)
        return np.where(constant, 0.0, scaled)

    def unnormalize(self, values: ArrayLike) -> ArrayLike:
        """Normalised values [..., D] -> raw units; input clipped to [-1, 1] first (see module doc)."""
        centre, half_range, constant = self._stats_like(values)
        if torch.is_tensor(values):
            clipped = values.to(centre.dtype).clamp(-1.0, 1.0)
            return torch.where(constant, centre.expand_as(clipped), centre + clipped * half_range)
        clipped = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
        return np.where(constant, centre, centre + clipped * half_range)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable statistics (plain lists and floats)."""
        return {
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "lower_percentile": self.lower_percentile,
            "upper_percentile": self.upper_percentile,
            "min_range": self.min_range,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PercentileNormalizer":
        """Inverse of ``to_dict``."""
        unknown = sorted(set(data) - {"low", "high", "lower_percentile", "upper_percentile", "min_range"})
        if unknown:
            raise ValueError(f"unknown PercentileNormalizer keys: {unknown}")
        return cls(
            data["low"],
            data["high"],
            data.get("lower_percentile", 1.0),
            data.get("upper_percentile", 99.0),
            data.get("min_range", 1e-8),
        )

    def state_tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """float64 tensors for a safetensors file: ``{prefix}low``, ``{prefix}high``, ``{prefix}percentiles``
        ([lower, upper]) and ``{prefix}min_range`` ([value])."""
        return {
            f"{prefix}low": torch.from_numpy(self.low.copy()),
            f"{prefix}high": torch.from_numpy(self.high.copy()),
            f"{prefix}percentiles": torch.tensor([self.lower_percentile, self.upper_percentile], dtype=torch.float64),
            f"{prefix}min_range": torch.tensor([self.min_range], dtype=torch.float64),
        }

    @classmethod
    def from_state_tensors(cls, tensors: Mapping[str, Tensor], prefix: str = "") -> "PercentileNormalizer":
        """Inverse of ``state_tensors`` (e.g. on the dict from ``safetensors.torch.load_file``)."""
        missing = [k for k in ("low", "high", "percentiles", "min_range") if f"{prefix}{k}" not in tensors]
        if missing:
            raise ValueError(f"missing normaliser tensors: {[prefix + k for k in missing]}")
        lower, upper = tensors[f"{prefix}percentiles"].tolist()
        return cls(
            tensors[f"{prefix}low"],
            tensors[f"{prefix}high"],
            lower,
            upper,
            float(tensors[f"{prefix}min_range"].item()),
        )

    def __repr__(self) -> str:
        return (
            f"PercentileNormalizer(dim={self.dim}, percentiles=({self.lower_percentile}, "
            f"{self.upper_percentile}), constant_dims={np.flatnonzero(self.constant).tolist()})"
        )
