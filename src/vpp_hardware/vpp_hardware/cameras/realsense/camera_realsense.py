"""Intel RealSense colour camera driver (pyrealsense2), with clock mapping and reconnection.

Frame path
----------
The driver does not use ``rs.pipeline``. It finds the device by serial number in an
``rs.context``, picks the sensor that offers the requested colour profile, and calls
``sensor.open(profile)`` + ``sensor.start(callback)``. Two reasons:

* ``rs.pipeline`` refuses a ``rs.software_device`` ("No device connected"), so a pipeline-based
  driver could only be tested against a mock. Opening the sensor directly is the path librealsense
  itself offers for software devices, and it is an ordinary, fully supported path for USB cameras,
  so the tests run exactly the code that runs on hardware: enumeration by serial, profile
  selection, option setting, the frame callback, timestamp handling and reconnection.
* The callback runs the moment librealsense hands the frame over, which gives a tighter host
  arrival time than polling a pipeline queue.

Time stamps
-----------
Each frame carries a device timestamp (global time is switched off when the device allows it, so
this is the camera's own hardware clock) and a host arrival time (librealsense's
``time_of_arrival`` metadata when present, else the time the callback ran). The arrival time is
the capture time plus a transport latency that is never negative and usually close to its minimum.
:class:`DeviceClockMapper` therefore estimates ``offset = host - device`` as the lower envelope of
the observed ``arrival - device`` differences, letting old minima age by the worst-case clock
drift (Olson, "A passive solution to the sensor synchronization problem", IROS 2010). A frame's
``capture_time_s`` is its device timestamp plus that offset: latency jitter does not reach the
stamps, relative timing is as good as the camera clock, and the absolute error is the minimum
transport latency (a few milliseconds over USB). When the metadata offers the exposure midpoint
(``sensor_timestamp``) the device timestamp is moved to it.

Reconnection
------------
A supervisor thread watches the stream. No frame for ``frame_timeout_s`` seconds, or a
devices-changed event that removes the camera, closes the sensor and starts reconnect attempts
with exponential backoff (a devices-changed event announcing the serial cuts the wait short).
Frame-number gaps count as dropped frames; :meth:`RealSenseCamera.diagnostics` returns all counters.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vpp_hardware.cameras.camera import (
    Camera,
    CameraError,
    CameraIntrinsics,
    CameraNotConnectedError,
    Frame,
)
from vpp_hardware.cameras.realsense.configuration_realsense import RealSenseCameraConfig

try:  # The import needs the libusb-1.0-0 system package.
    import pyrealsense2 as rs
except ImportError as _import_error:  # pragma: no cover - depends on the machine
    rs = None
    _RS_IMPORT_ERROR: ImportError | None = _import_error
else:
    _RS_IMPORT_ERROR = None

__all__ = [
    "DeviceClockMapper",
    "RealSenseCamera",
    "RealSenseDeviceNotFoundError",
    "RealSenseDiagnostics",
]

logger = logging.getLogger(__name__)

# RealSense hardware timestamps are 32-bit microsecond counters.
_HARDWARE_CLOCK_WRAP_S = 2**32 * 1e-6


class RealSenseDeviceNotFoundError(CameraError):
    """No connected RealSense device has the configured serial number."""


def _wall_minus_monotonic_s() -> float:
    """Current difference between the system clock and the monotonic clock."""
    return time.time() - time.monotonic()


class DeviceClockMapper:
    """Maps a device clock onto the host monotonic clock from (device time, host arrival) pairs.

    Every observation gives ``sample = host_arrival - device_time = offset + latency`` with
    ``latency >= 0``, so each sample is an upper bound on the true offset. A bound taken at device
    time ``s_j`` loosens by at most ``drift * |s - s_j|`` at time ``s``; the estimate is the
    tightest bound, ``min_j(sample_j + drift * (s - s_j))``, kept in O(1) as one anchor sample.

    The estimate includes the minimum transport latency (it cannot be separated from the offset
    without extra hardware); that bias is constant, so it does not disturb relative timing.

    Device-clock restarts (reconnect, hardware reset) show up as a timestamp that goes backwards
    or a sample far from the estimate: the mapper then starts over from the new sample. A backwards
    step close to the 32-bit microsecond wrap of the RealSense hardware clock is unwrapped instead.
    """

    def __init__(
        self,
        drift_bound_ppm: float = 200.0,
        reset_threshold_s: float = 1.0,
        wrap_period_s: float | None = _HARDWARE_CLOCK_WRAP_S,
    ) -> None:
        if not math.isfinite(drift_bound_ppm) or drift_bound_ppm < 0:
            raise ValueError("drift_bound_ppm must be finite and >= 0")
        if not math.isfinite(reset_threshold_s) or reset_threshold_s <= 0:
            raise ValueError("reset_threshold_s must be finite and > 0")
        self._drift = drift_bound_ppm * 1e-6
        self._reset_threshold_s = reset_threshold_s
        self._wrap_period_s = wrap_period_s
        self._anchor_device_s: float | None = None
        self._anchor_offset_s = 0.0
        self._last_raw_device_s: float | None = None
        self._unwrap_s = 0.0
        self.resets = 0

    def reset(self) -> None:
        """Forget everything (the next observation starts a new estimate)."""
        self._anchor_device_s = None
        self._last_raw_device_s = None
        self._unwrap_s = 0.0

    @property
    def offset_s(self) -> float | None:
        """Current ``host - device`` estimate at the anchor, or None before any observation."""
        return None if self._anchor_device_s is None else self._anchor_offset_s

    def _unwrapped(self, raw_device_s: float) -> float:
        last = self._last_raw_device_s
        if last is not None and raw_device_s < last:
            backwards = last - raw_device_s
            if self._wrap_period_s is not None and abs(
                backwards - self._wrap_period_s
            ) < self._reset_threshold_s + 0.1 * self._wrap_period_s:
                self._unwrap_s += self._wrap_period_s
            else:
                logger.info("device clock went back by %.3f s: restarting clock mapping", backwards)
                self._restart()
        self._last_raw_device_s = raw_device_s
        return raw_device_s + self._unwrap_s

    def _restart(self) -> None:
        self._anchor_device_s = None
        self._unwrap_s = 0.0
        self.resets += 1

    def observe(self, device_time_s: float, host_arrival_s: float) -> float:
        """Add one observation and return the current offset estimate at ``device_time_s``."""
        if not (math.isfinite(device_time_s) and math.isfinite(host_arrival_s)):
            raise ValueError("clock observations must be finite")
        device_s = self._unwrapped(device_time_s)
        sample = host_arrival_s - device_s
        if self._anchor_device_s is not None:
            aged = self._anchor_offset_s + self._drift * abs(device_s - self._anchor_device_s)
            if abs(sample - aged) > self._reset_threshold_s:
                logger.info("clock offset jumped by %.3f s: restarting the mapping", sample - aged)
                self._restart()
            elif sample > aged:
                return aged
        self._anchor_device_s = device_s
        self._anchor_offset_s = sample
        return sample

    def to_host(self, device_time_s: float) -> float:
        """Host monotonic time of ``device_time_s`` (a time near the latest observation).

        Raises:
            RuntimeError: before the first observation.
        """
        if self._anchor_device_s is None:
            raise RuntimeError("DeviceClockMapper has no observation yet")
        device_s = device_time_s + self._unwrap_s
        offset = self._anchor_offset_s + self._drift * abs(device_s - self._anchor_device_s)
        return device_s + offset


@dataclass(frozen=True)
class RealSenseDiagnostics:
    """A snapshot of the driver's health counters.

    Attributes:
        serial_number: the configured serial.
        connected: the sensor is open and streaming.
        frames_received: frames delivered since :meth:`RealSenseCamera.connect`.
        frames_dropped: frames missing from the frame-number sequence (gaps).
        reconnects: successful reconnections after a drop.
        failed_reconnect_attempts: attempts that did not find or open the device.
        last_error: the most recent problem, or None.
        seconds_since_last_frame: host time since the last frame arrived, None before any.
        clock_offset_s: current host-monotonic minus device-clock estimate, None before any frame.
        clock_resets: times the clock mapping had to start over.
        timestamp_domain: librealsense's name for the domain of the frame timestamps.
    """

    serial_number: str
    connected: bool
    frames_received: int
    frames_dropped: int
    reconnects: int
    failed_reconnect_attempts: int
    last_error: str | None
    seconds_since_last_frame: float | None
    clock_offset_s: float | None
    clock_resets: int
    timestamp_domain: str | None


def _require_pyrealsense2() -> Any:
    if rs is None:
        raise CameraError(
            "pyrealsense2 cannot be imported (pip install pyrealsense2; it needs the system "
            f"package libusb-1.0-0): {_RS_IMPORT_ERROR}"
        )
    return rs


def _device_serial(device: Any) -> str | None:
    try:
        if device.supports(rs.camera_info.serial_number):
            return str(device.get_info(rs.camera_info.serial_number))
    except RuntimeError:  # a device that went away while we looked at it
        return None
    return None


def _intrinsics_of(profile: Any) -> CameraIntrinsics:
    calibration = profile.as_video_stream_profile().get_intrinsics()
    # As realsense-ros does: Kannala-Brandt is ROS's "equidistant", the Brown-Conrady variants
    # (D400 colour streams report inverse Brown-Conrady with zero coefficients) are "plumb_bob".
    equidistant = calibration.model == rs.distortion.kannala_brandt4
    coefficients = tuple(float(c) for c in calibration.coeffs)
    return CameraIntrinsics(
        width=int(calibration.width),
        height=int(calibration.height),
        fx=float(calibration.fx),
        fy=float(calibration.fy),
        cx=float(calibration.ppx),
        cy=float(calibration.ppy),
        distortion_model="equidistant" if equidistant else "plumb_bob",
        distortion_coefficients=coefficients[:4] if equidistant else coefficients,
    )


class RealSenseCamera(Camera):
    """A RealSense colour stream as a :class:`~vpp_hardware.cameras.camera.Camera`.

    While the driver reconnects, :attr:`is_connected` is False and ``read`` raises
    :class:`~vpp_hardware.cameras.camera.CameraNotConnectedError` at once;
    :meth:`diagnostics` says why. :meth:`disconnect` stops reconnecting.

    Args:
        config: which device (by serial) and stream, plus exposure and robustness settings.
        context: the librealsense context to enumerate devices in; by default a new one. Pass one
            only if this camera is its sole user: the driver installs the context's (single)
            devices-changed callback.
    """

    config: RealSenseCameraConfig

    def __init__(self, config: RealSenseCameraConfig, context: Any | None = None) -> None:
        super().__init__(config)
        _require_pyrealsense2()
        self._given_context = context
        self._context: Any | None = None
        # _device_lock serialises opening and closing; the frame callback never takes it, because
        # sensor.stop() waits for a running callback to return.
        self._device_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._device: Any | None = None
        self._sensor: Any | None = None
        self._announced_device: Any | None = None
        self._session = 0
        self._streaming = False
        self._user_connected = False
        self._device_removed = threading.Event()
        self._device_announced = threading.Event()
        self._stop_supervisor = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._clock = DeviceClockMapper(
            drift_bound_ppm=config.clock_drift_bound_ppm,
            reset_threshold_s=config.clock_reset_threshold_s,
        )
        self._frames_received = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._failed_reconnect_attempts = 0
        self._last_error: str | None = None
        self._last_frame_number: int | None = None
        self._last_frame_monotonic_s: float | None = None
        self._stream_started_monotonic_s = 0.0
        self._timestamp_domain: str | None = None
        self._intrinsics: CameraIntrinsics | None = None

    # ------------------------------------------------------------------ public API

    @property
    def is_connected(self) -> bool:
        return self._user_connected and self._streaming

    def connect(self) -> None:
        """Open the device with the configured serial and start the colour stream.

        Raises:
            RealSenseDeviceNotFoundError: no device with that serial (the message lists the
                serials that are connected).
            CameraError: the device lacks the requested profile or options.
        """
        if self._user_connected:
            return
        self._context = self._given_context if self._given_context is not None else rs.context()
        self._context.set_devices_changed_callback(self._on_devices_changed)
        self._frame_slot.reopen()
        self._open_device()
        self._user_connected = True
        self._stop_supervisor.clear()
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"realsense-{self.config.serial_number}", daemon=True
        )
        self._supervisor.start()

    def disconnect(self) -> None:
        """Stop streaming, stop reconnecting and release the device."""
        self._user_connected = False
        self._stop_supervisor.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=10.0)
        self._supervisor = None
        self._close_device()
        self._announced_device = None
        self._frame_slot.close(f"camera {self.name!r} was disconnected")

    def intrinsics(self) -> CameraIntrinsics:
        """The colour stream's factory calibration, read when the stream was opened."""
        if self._intrinsics is None:
            raise CameraNotConnectedError(
                f"camera {self.name!r}: intrinsics are known once the device has been opened"
            )
        return self._intrinsics

    def diagnostics(self) -> RealSenseDiagnostics:
        """Counters and state for health monitoring (safe to call from any thread)."""
        with self._stats_lock:
            last = self._last_frame_monotonic_s
            return RealSenseDiagnostics(
                serial_number=self.config.serial_number,
                connected=self.is_connected,
                frames_received=self._frames_received,
                frames_dropped=self._frames_dropped,
                reconnects=self._reconnects,
                failed_reconnect_attempts=self._failed_reconnect_attempts,
                last_error=self._last_error,
                seconds_since_last_frame=None if last is None else time.monotonic() - last,
                clock_offset_s=self._clock.offset_s,
                clock_resets=self._clock.resets,
                timestamp_domain=self._timestamp_domain,
            )

    # ------------------------------------------------------------------ device handling

    def _find_device(self) -> Any:
        announced, self._announced_device = self._announced_device, None
        if announced is not None and _device_serial(announced) == self.config.serial_number:
            return announced
        serials = []
        for device in self._context.query_devices():
            serial = _device_serial(device)
            if serial == self.config.serial_number:
                return device
            if serial is not None:
                serials.append(serial)
        listed = ", ".join(sorted(serials)) if serials else "none"
        raise RealSenseDeviceNotFoundError(
            f"no RealSense device with serial {self.config.serial_number!r} "
            f"(connected serials: {listed})"
        )

    def _select_color_stream(self, device: Any) -> tuple[Any, Any]:
        """The sensor and profile for the configured colour stream (RGB8, width x height @ fps).

        The colour stream is looked up across all sensors: a D405 delivers colour from its
        stereo module, other models from a separate RGB sensor.
        """
        wanted = (self.config.width, self.config.height, int(round(self.config.fps)))
        offered = set()
        for sensor in device.query_sensors():
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() != rs.stream.color:
                    continue
                if not profile.is_video_stream_profile():
                    continue
                video = profile.as_video_stream_profile()
                key = (video.width(), video.height(), profile.fps())
                offered.add(key)
                if key == wanted and profile.format() == rs.format.rgb8:
                    return sensor, profile
        offered_text = ", ".join(f"{w}x{h}@{f}" for w, h, f in sorted(offered)) or "none"
        raise CameraError(
            f"RealSense {self.config.serial_number} has no RGB8 colour stream "
            f"{wanted[0]}x{wanted[1]}@{wanted[2]} (colour profiles offered: {offered_text})"
        )

    def _set_option(self, sensor: Any, option: Any, value: float, purpose: str) -> None:
        if not sensor.supports(option):
            raise CameraError(
                f"RealSense {self.config.serial_number}: the colour sensor has no option "
                f"{option} needed for {purpose}"
            )
        option_range = sensor.get_option_range(option)
        if not option_range.min <= value <= option_range.max:
            raise CameraError(
                f"RealSense {self.config.serial_number}: {purpose} value {value} outside the "
                f"device range [{option_range.min}, {option_range.max}]"
            )
        sensor.set_option(option, float(value))

    def _apply_options(self, sensor: Any) -> None:
        # Raw hardware timestamps: DeviceClockMapper does the host mapping in one place (with
        # global time on, librealsense would already have mapped them with its own estimator).
        if sensor.supports(rs.option.global_time_enabled):
            sensor.set_option(rs.option.global_time_enabled, 0.0)
        if self.config.exposure is not None:
            self._set_option(sensor, rs.option.enable_auto_exposure, 0.0, "fixed exposure")
            self._set_option(sensor, rs.option.exposure, self.config.exposure, "fixed exposure")
        if self.config.white_balance_k is not None:
            self._set_option(
                sensor, rs.option.enable_auto_white_balance, 0.0, "fixed white balance"
            )
            self._set_option(
                sensor, rs.option.white_balance, self.config.white_balance_k, "fixed white balance"
            )

    def _open_device(self) -> None:
        with self._device_lock:
            device = self._find_device()
            sensor, profile = self._select_color_stream(device)
            self._apply_options(sensor)
            self._intrinsics = _intrinsics_of(profile)
            with self._stats_lock:
                self._session += 1
                session = self._session
                self._clock.reset()
                self._last_frame_number = None
                self._stream_started_monotonic_s = time.monotonic()
            self._device_removed.clear()
            sensor.open(profile)
            try:
                sensor.start(self._make_frame_callback(session))
            except Exception:
                sensor.close()
                raise
            self._device, self._sensor = device, sensor
            self._streaming = True
        logger.info("RealSense %s streaming %dx%d@%s", self.config.serial_number,
                    self.config.width, self.config.height, self.config.fps)

    def _close_device(self) -> None:
        with self._device_lock:
            self._streaming = False
            with self._stats_lock:
                self._session += 1  # frames still in flight from the old session are ignored
            sensor, self._sensor, self._device = self._sensor, None, None
            if sensor is None:
                return
            for action in (sensor.stop, sensor.close):
                try:
                    action()
                except RuntimeError as error:  # expected when the device is already gone
                    logger.debug("RealSense %s: %s failed: %s", self.config.serial_number,
                                 action.__name__, error)

    def _on_devices_changed(self, event: Any) -> None:
        # Runs on a librealsense thread: only flag things, the supervisor acts on them.
        device = self._device
        try:
            if device is not None and event.was_removed(device):
                self._device_removed.set()
            for added in event.get_new_devices():
                if _device_serial(added) == self.config.serial_number:
                    # Keeping the device object also keeps a software device alive in the
                    # context, which holds only weak references to those.
                    self._announced_device = added
                    self._device_announced.set()
        except RuntimeError as error:
            logger.debug("devices-changed event could not be read: %s", error)

    # ------------------------------------------------------------------ supervision

    def _record_error(self, message: str) -> None:
        with self._stats_lock:
            self._last_error = message
        logger.warning("RealSense %s: %s", self.config.serial_number, message)

    def _stream_problem(self) -> str | None:
        if self._device_removed.is_set():
            return "device removed"
        with self._stats_lock:
            last = self._last_frame_monotonic_s
            started = self._stream_started_monotonic_s
        if last is None or last < started:
            reference, timeout_s = started, self.config.first_frame_timeout_s
        else:
            reference, timeout_s = last, self.config.frame_timeout_s
        silent_s = time.monotonic() - reference
        if silent_s > timeout_s:
            return f"no frame for {silent_s:.2f} s (timeout {timeout_s} s)"
        return None

    def _supervise(self) -> None:
        poll_s = min(0.05, self.config.frame_timeout_s / 10.0)
        backoff_s = self.config.reconnect_initial_backoff_s
        next_attempt_s = 0.0
        while not self._stop_supervisor.wait(poll_s):
            if self._streaming:
                problem = self._stream_problem()
                if problem is None:
                    continue
                self._record_error(f"{problem}; reconnecting")
                self._close_device()
                backoff_s = self.config.reconnect_initial_backoff_s
                next_attempt_s = time.monotonic()
                continue
            if time.monotonic() < next_attempt_s and not self._device_announced.is_set():
                continue
            self._device_announced.clear()
            try:
                self._open_device()
            except Exception as error:  # keep retrying whatever librealsense raises
                with self._stats_lock:
                    self._failed_reconnect_attempts += 1
                self._record_error(f"reconnect failed: {error}")
                next_attempt_s = time.monotonic() + backoff_s
                backoff_s = min(2.0 * backoff_s, self.config.reconnect_max_backoff_s)
            else:
                with self._stats_lock:
                    self._reconnects += 1

    # ------------------------------------------------------------------ frame path

    def _make_frame_callback(self, session: int) -> Callable[[Any], None]:
        def on_frame(frame: Any) -> None:
            arrival_monotonic_s = time.monotonic()
            try:
                self._handle_frame(frame, session, arrival_monotonic_s)
            except Exception as error:  # an exception must not escape into librealsense
                self._record_error(f"frame handling failed: {error!r}")

        return on_frame

    def _image_from(self, video_frame: Any) -> np.ndarray:
        height, width = video_frame.get_height(), video_frame.get_width()
        if (width, height) != (self.config.width, self.config.height):
            raise CameraError(f"frame is {width}x{height}, expected "
                              f"{self.config.width}x{self.config.height}")
        stride = video_frame.get_stride_in_bytes()
        raw = np.frombuffer(video_frame.get_data(), dtype=np.uint8)
        rows = raw[: stride * height].reshape(height, stride)
        # Copy: the frame's memory goes back to librealsense when the callback returns.
        image = np.empty((height, width, 3), dtype=np.uint8)
        image.reshape(height, width * 3)[:] = rows[:, : width * 3]
        return image

    def _arrival_time_s(self, frame: Any, callback_monotonic_s: float) -> float:
        metadata = rs.frame_metadata_value.time_of_arrival
        if self.config.use_time_of_arrival_metadata and frame.supports_frame_metadata(metadata):
            # time_of_arrival is system-clock milliseconds; the mapping works on the monotonic
            # clock so that a system-clock step cannot corrupt the offset estimate.
            return frame.get_frame_metadata(metadata) * 1e-3 - _wall_minus_monotonic_s()
        return callback_monotonic_s

    @staticmethod
    def _exposure_midpoint_correction_s(frame: Any) -> float:
        """How far the frame timestamp lies after the middle of the exposure, if known."""
        sensor_ts = rs.frame_metadata_value.sensor_timestamp
        frame_ts = rs.frame_metadata_value.frame_timestamp
        if frame.supports_frame_metadata(sensor_ts) and frame.supports_frame_metadata(frame_ts):
            return (frame.get_frame_metadata(frame_ts) - frame.get_frame_metadata(sensor_ts)) * 1e-6
        return 0.0

    def _handle_frame(self, frame: Any, session: int, callback_monotonic_s: float) -> None:
        if session != self._session:
            return
        image = self._image_from(frame.as_video_frame())
        frame_number = int(frame.get_frame_number())
        device_time_s = frame.get_timestamp() * 1e-3
        arrival_s = self._arrival_time_s(frame, callback_monotonic_s)
        capture_device_s = device_time_s - self._exposure_midpoint_correction_s(frame)
        with self._stats_lock:
            if session != self._session:
                return
            last = self._last_frame_number
            if last is not None and frame_number > last + 1:
                self._frames_dropped += frame_number - last - 1
            self._last_frame_number = frame_number
            self._frames_received += 1
            self._last_frame_monotonic_s = callback_monotonic_s
            self._timestamp_domain = str(frame.get_frame_timestamp_domain()).split(".")[-1]
            self._clock.observe(device_time_s, arrival_s)
            capture_monotonic_s = self._clock.to_host(capture_device_s)
        self._frame_slot.publish(
            Frame(
                image=image,
                capture_time_s=capture_monotonic_s + _wall_minus_monotonic_s(),
                hardware_timestamp_s=capture_device_s,
                frame_number=frame_number,
                camera_name=self.name,
            )
        )
