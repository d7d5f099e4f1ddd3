"""The one interface every camera implements, real or simulated.

A camera delivers :class:`Frame` objects: an RGB image plus the time it was captured on the
host's system clock, so the ROS camera node can copy ``capture_time_s`` straight into
``header.stamp`` whichever driver produced the frame.

Drivers push frames into a :class:`FrameSlot` from their own thread (a librealsense callback,
the simulator's render thread); :meth:`Camera.read` and :meth:`Camera.read_latest` only read
from that slot, so a slow consumer never stalls the device.
"""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Camera",
    "CameraConfig",
    "CameraError",
    "CameraIntrinsics",
    "CameraNotConnectedError",
    "CameraTimeoutError",
    "Frame",
    "FrameSlot",
]


class CameraError(RuntimeError):
    """A camera could not be opened, configured or read."""


class CameraNotConnectedError(CameraError):
    """The operation needs a connected camera."""


class CameraTimeoutError(CameraError, TimeoutError):
    """No (fresh enough) frame arrived in time."""


@dataclass(frozen=True)
class Frame:
    """One colour image and when it was taken.

    Attributes:
        image: ``(height, width, 3)`` uint8 array, RGB channel order. Treat as read-only: the
            same array is handed to every reader of the frame.
        capture_time_s: capture instant in seconds on the host system clock (``time.time()``
            epoch, the clock ROS uses for ``header.stamp``).
        hardware_timestamp_s: the same instant on the device's own clock (RealSense hardware
            clock, or simulation time for simulated cameras); None when the device has none.
        frame_number: the device's frame counter; gaps mean frames were lost on the way.
        camera_name: the configured name of the camera that produced the frame.
    """

    image: np.ndarray
    capture_time_s: float
    hardware_timestamp_s: float | None
    frame_number: int
    camera_name: str

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError("Frame.image must be a uint8 numpy array")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"Frame.image must be HxWx3 RGB, got shape {image.shape}")
        if not np.isfinite(self.capture_time_s):
            raise ValueError("Frame.capture_time_s must be finite")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole model of a camera's images, in the conventions of ROS ``sensor_msgs/CameraInfo``.

    Attributes:
        width, height: image size in pixels.
        fx, fy: focal lengths in pixels.
        cx, cy: principal point in pixels (pixel centres at integer coordinates).
        distortion_model: ``"plumb_bob"`` (Brown-Conrady k1, k2, p1, p2, k3) or
            ``"equidistant"`` (Kannala-Brandt k1..k4).
        distortion_coefficients: coefficients of that model.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    distortion_coefficients: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(kw_only=True)
class CameraConfig:
    """Settings every camera has.

    Attributes:
        name: identifies the camera in frames, logs and topics (e.g. ``"static"``, ``"wrist"``).
        width: image width in pixels.
        height: image height in pixels.
        fps: nominal frame rate in frames per second.
    """

    name: str
    width: int = 640
    height: int = 480
    fps: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("camera name must be a non-empty string")
        for attribute in ("width", "height"):
            value = getattr(self, attribute)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"camera {attribute} must be a positive int, got {value!r}")
        if isinstance(self.fps, bool) or not np.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"camera fps must be a positive finite number, got {self.fps!r}")


@dataclass
class _SlotEntry:
    sequence: int
    frame: Frame
    published_monotonic_s: float


class FrameSlot:
    """Holds the newest frame of one camera; thread-safe, one writer, many readers.

    Each published frame gets a sequence number (1, 2, ...) so a reader can wait for a frame newer
    than the one it saw last. Only the newest frame is kept: a reader that falls behind skips
    frames rather than building up latency.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._entry: _SlotEntry | None = None
        self._sequence = 0
        self._closed_reason: str | None = None

    def publish(self, frame: Frame) -> int:
        """Store ``frame`` as the newest one, wake waiting readers and return its sequence."""
        with self._condition:
            self._sequence += 1
            self._entry = _SlotEntry(self._sequence, frame, time.monotonic())
            self._condition.notify_all()
            return self._sequence

    def latest(self) -> tuple[int, Frame, float] | None:
        """The newest ``(sequence, frame, age_s)``, or None before the first frame."""
        with self._condition:
            entry = self._entry
        if entry is None:
            return None
        return entry.sequence, entry.frame, time.monotonic() - entry.published_monotonic_s

    def wait_newer(self, after_sequence: int, timeout_s: float) -> tuple[int, Frame]:
        """Block until a frame with sequence > ``after_sequence`` exists and return it.

        Raises:
            CameraTimeoutError: nothing newer within ``timeout_s``.
            CameraNotConnectedError: the slot was closed while waiting.
        """
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                if self._closed_reason is not None:
                    raise CameraNotConnectedError(self._closed_reason)
                entry = self._entry
                if entry is not None and entry.sequence > after_sequence:
                    return entry.sequence, entry.frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraTimeoutError(f"no new frame within {timeout_s:.3f} s")
                self._condition.wait(remaining)

    def close(self, reason: str) -> None:
        """Wake all waiting readers with :class:`CameraNotConnectedError`."""
        with self._condition:
            self._closed_reason = reason
            self._condition.notify_all()

    def reopen(self) -> None:
        """Allow waiting again after :meth:`close` (the last frame is kept)."""
        with self._condition:
            self._closed_reason = None


class Camera(abc.ABC):
    """A source of timestamped RGB frames.

    Subclasses implement :meth:`connect`, :meth:`disconnect` and :attr:`is_connected`, and
    publish frames into :attr:`frame_slot`; reading is shared here.

    ``read`` returns each frame at most once per camera object (it waits for the next one);
    ``read_latest`` returns the newest frame immediately, for consumers that sample at their own
    rate. Both raise :class:`CameraNotConnectedError` when the camera is not connected.
    """

    def __init__(self, config: CameraConfig, frame_slot: FrameSlot | None = None) -> None:
        self.config = config
        self._frame_slot = frame_slot if frame_slot is not None else FrameSlot()
        self._last_read_sequence = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def frame_slot(self) -> FrameSlot:
        return self._frame_slot

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool:
        """True while the camera is open and expected to deliver frames."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the device and start streaming. Raises :class:`CameraError` on failure."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Stop streaming and release the device. Safe to call more than once."""

    @abc.abstractmethod
    def intrinsics(self) -> CameraIntrinsics:
        """The pinhole model of the delivered images (for ``CameraInfo``).

        Raises:
            CameraNotConnectedError: the model comes from the device and it was never opened.
        """

    def read(self, timeout_s: float = 1.0) -> Frame:
        """Wait for the next frame not yet returned by ``read`` and return it.

        Raises:
            CameraNotConnectedError: the camera is not connected.
            CameraTimeoutError: no new frame within ``timeout_s`` seconds.
        """
        self._require_connected()
        if not np.isfinite(timeout_s) or timeout_s < 0:
            raise ValueError(f"timeout_s must be a finite non-negative number, got {timeout_s!r}")
        sequence, frame = self._frame_slot.wait_newer(self._last_read_sequence, timeout_s)
        self._last_read_sequence = sequence
        return frame

    def read_latest(self, max_age_s: float | None = None) -> Frame:
        """Return the newest frame without waiting.

        Args:
            max_age_s: reject a frame published longer ago than this (host monotonic time).

        Raises:
            CameraNotConnectedError: the camera is not connected.
            CameraTimeoutError: no frame yet, or the newest one is older than ``max_age_s``.
        """
        self._require_connected()
        latest = self._frame_slot.latest()
        if latest is None:
            raise CameraTimeoutError(f"camera {self.name!r} has not delivered a frame yet")
        _sequence, frame, age_s = latest
        if max_age_s is not None and age_s > max_age_s:
            raise CameraTimeoutError(
                f"newest frame of camera {self.name!r} is {age_s:.3f} s old (limit {max_age_s} s)"
            )
        return frame

    def _require_connected(self) -> None:
        if not self.is_connected:
            raise CameraNotConnectedError(f"camera {self.name!r} is not connected")

    def __enter__(self) -> Camera:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()
