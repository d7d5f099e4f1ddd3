"""The one image resize shared by the dataset converter and the inference engine.

A camera frame becomes a model input by a bilinear, antialiased resize straight to
``size`` x ``size`` (no crop: a non-square frame is stretched), computed by
``torch.nn.functional.interpolate`` on pixels scaled to [-1, 1]. The converter stores the
result as uint8 (``resize_square_uint8``); the engine feeds the float result to the network
(``resize_pixels``). Because both call the same function, a frame seen in training and the same
frame seen at inference differ only by the uint8 rounding of the stored image (<= 0.5 / 127.5)
plus the video codec's loss.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_pixels", "resize_square_uint8", "uint8_to_pixels", "pixels_to_uint8"]


def uint8_to_pixels(images: Tensor) -> Tensor:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` in [-1, 1] (the engine's scaling)."""
    return images.movedim(-1, -3).float() / 127.5 - 1.0


def pixels_to_uint8(pixels: Tensor) -> Tensor:
    """Inverse of :func:`uint8_to_pixels`, rounded to nearest: float ``(..., 3, H, W)`` -> uint8 ``(..., H, W, 3)``."""
    return ((pixels.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def resize_pixels(pixels: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize of float ``(3, H, W)`` or ``(N, 3, H, W)`` pixels to ``size`` x ``size``."""
    if pixels.ndim not in (3, 4) or pixels.shape[-3] != 3:
        raise ValueError(f"pixels must be (3, H, W) or (N, 3, H, W), got {tuple(pixels.shape)}")
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    batch = pixels if pixels.ndim == 4 else pixels[None]
    if tuple(batch.shape[-2:]) != (size, size):
        batch = F.interpolate(batch, size=(int(size), int(size)), mode="bilinear", antialias=True, align_corners=False)
    return batch if pixels.ndim == 4 else batch[0]


def resize_square_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Resize RGB uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` images to ``size`` x ``size`` uint8.

    Exactly the engine's resize (:func:`resize_pixels` on the engine's [-1, 1] scaling), rounded
    back to uint8. Frames already ``size`` x ``size`` are returned unchanged (copied).
    """
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (H, W, 3) or (N, H, W, 3) RGB, got {array.dtype} {array.shape}")
    if array.shape[-3:-1] == (size, size):
        return array.copy()
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. a view of a bag's message buffer; torch wants writable memory
        array = array.copy()
    with torch.inference_mode():
        pixels = uint8_to_pixels(torch.from_numpy(array))
        resized = resize_pixels(pixels, size)
        return pixels_to_uint8(resized).numpy()
