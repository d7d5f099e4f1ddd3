"""sensor_msgs/Image <-> numpy without cv_bridge (not available from PyPI)."""

from __future__ import annotations

import numpy as np

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class ImageConversionError(ValueError):
    """An Image message cannot be read as an 8-bit colour image."""


def rgb_to_image_msg(rgb: np.ndarray, stamp, frame_id: str):
    """HxWx3 uint8 RGB -> ``sensor_msgs/Image`` (rgb8)."""
    from sensor_msgs.msg import Image

    arr = np.ascontiguousarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageConversionError(f"expected HxWx3 uint8 RGB, got {arr.dtype} {arr.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = arr.tobytes()
    return msg


def image_msg_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) -> HxWx3 uint8 RGB (a copy)."""
    channels = _CHANNELS.get(msg.encoding)
    if channels is None:
        raise ImageConversionError(
            f"unsupported image encoding {msg.encoding!r}; expected one of {sorted(_CHANNELS)}"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image ({width}x{height})")
    if step < width * channels:
        raise ImageConversionError(f"row step {step} is shorter than width x channels = {width * channels}")
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray)) else msg.data,
                         dtype=np.uint8)
    if data.size < height * step:
        raise ImageConversionError(f"image data holds {data.size} bytes, expected {height * step}")
    rows = data[: height * step].reshape(height, step)[:, : width * channels]
    pixels = rows.reshape(height, width, channels)
    if msg.encoding in ("bgr8", "bgra8"):
        pixels = pixels[..., 2::-1]
    elif channels == 4:
        pixels = pixels[..., :3]
    elif channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.array(pixels, dtype=np.uint8, order="C", copy=True)
