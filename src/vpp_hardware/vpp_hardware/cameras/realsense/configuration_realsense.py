"""Settings of an Intel RealSense colour camera."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vpp_hardware.cameras.camera import CameraConfig

__all__ = ["RealSenseCameraConfig"]


def _require_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(kw_only=True)
class RealSenseCameraConfig(CameraConfig):
    """One RealSense colour stream, chosen by serial number.

    Attributes:
        serial_number: the device's serial (``rs-enumerate-devices`` prints it).
        exposure: fixed exposure in the device's own units (D400 colour sensor: 0.1 ms steps);
            setting it turns auto exposure off. None keeps auto exposure.
        white_balance_k: fixed white balance in kelvin; setting it turns auto white balance
            off. None keeps auto white balance.
        frame_timeout_s: no frame for this long counts as a dropped camera and starts a
            reconnect.
        first_frame_timeout_s: the same limit for the first frame after (re)opening, which
            takes longer (USB start-up, auto exposure).
        reconnect_initial_backoff_s: wait before the second reconnect attempt; doubles after
            each failure ...
        reconnect_max_backoff_s: ... up to this.
        clock_drift_bound_ppm: worst-case rate difference between the camera's clock and the
            host clock, used by the clock mapper to age its offset estimate (RealSense crystals
            are far better than the default).
        clock_reset_threshold_s: a frame whose host-minus-device time differs from the current
            offset estimate by more than this means the device clock restarted: the estimate is
            rebuilt from scratch.
        use_time_of_arrival_metadata: take the host arrival time from librealsense's
            ``time_of_arrival`` metadata (stamped when the backend received the frame) instead of
            the time the Python callback ran, when the device provides it.
    """

    serial_number: str
    exposure: float | None = None
    white_balance_k: float | None = None
    frame_timeout_s: float = 2.0
    first_frame_timeout_s: float = 5.0
    reconnect_initial_backoff_s: float = 0.5
    reconnect_max_backoff_s: float = 5.0
    clock_drift_bound_ppm: float = 200.0
    clock_reset_threshold_s: float = 1.0
    use_time_of_arrival_metadata: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not float(self.fps).is_integer():
            raise ValueError(f"RealSense frame rates are whole numbers, got fps={self.fps!r}")
        if not isinstance(self.serial_number, str) or not self.serial_number.strip():
            raise ValueError("serial_number must be a non-empty string")
        if self.exposure is not None:
            _require_positive("exposure", self.exposure)
        if self.white_balance_k is not None:
            _require_positive("white_balance_k", self.white_balance_k)
        _require_positive("frame_timeout_s", self.frame_timeout_s)
        _require_positive("first_frame_timeout_s", self.first_frame_timeout_s)
        _require_positive("reconnect_initial_backoff_s", self.reconnect_initial_backoff_s)
        _require_positive("reconnect_max_backoff_s", self.reconnect_max_backoff_s)
        if self.reconnect_max_backoff_s < self.reconnect_initial_backoff_s:
            raise ValueError("reconnect_max_backoff_s must be >= reconnect_initial_backoff_s")
        _require_positive("clock_drift_bound_ppm", self.clock_drift_bound_ppm)
        _require_positive("clock_reset_threshold_s", self.clock_reset_threshold_s)
