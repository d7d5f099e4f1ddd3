"""RealSenseCamera against librealsense's own software device (no camera needed).

``rs.software_device`` is a real librealsense device: frames injected into its sensor travel the
same path as USB frames (context enumeration, sensor.open/start, the frame callback, metadata,
timestamp domains). Only the pixels and timestamps come from the test.

librealsense quirk the fixture works around: a context keeps software devices only through weak
references; the device stays listed while someone holds the device list of the devices-changed
event that announced it. The fixture keeps those lists until the camera under test installs its
own callback.

What a software device cannot show, and is therefore untested here:
* the devices-changed "removed" event: a context has no call that removes a software device (it
  just stops being listed once unreferenced, without an event), so removal is tested through
  the no-frame timeout and a failed re-enumeration instead;
* real USB timing: the arrival times and the ``time_of_arrival`` / exposure metadata are set by
  the test, not measured by a backend, so the tests check the mapping arithmetic and causality,
  not the accuracy reached on hardware;
* option side effects: the software sensor stores option values but no image changes with them.
"""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from vpp_hardware.cameras.camera import CameraError, CameraNotConnectedError  # noqa: E402
from vpp_hardware.cameras.realsense import (  # noqa: E402
    DeviceClockMapper,
    RealSenseCamera,
    RealSenseCameraConfig,
    RealSenseDeviceNotFoundError,
)

WIDTH, HEIGHT, FPS = 32, 24, 30


def _option_range(minimum: float, maximum: float, step: float, default: float):
    # pyrealsense2's 4-argument constructor swaps step and default: set the fields instead.
    option_range = rs.option_range()
    option_range.min, option_range.max = minimum, maximum
    option_range.step, option_range.default = step, default
    return option_range


class SoftwareRealSense:
    """A librealsense software device with one RGB8 colour stream, registered in ``context``."""

    def __init__(self, context: SoftwareContext, serial: str,
                 with_white_balance: bool = True) -> None:
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        self.sensor = self.device.add_sensor("RGB Camera")
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps = WIDTH, HEIGHT, FPS
        stream.bpp, stream.fmt = 3, rs.format.rgb8
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = WIDTH, HEIGHT
        intrinsics.fx = intrinsics.fy = 30.0
        intrinsics.ppx, intrinsics.ppy = WIDTH / 2, HEIGHT / 2
        stream.intrinsics = intrinsics
        self.profile = self.sensor.add_video_stream(stream).as_video_stream_profile()
        self.sensor.add_option(rs.option.global_time_enabled, _option_range(0, 1, 1, 1), True)
        self.sensor.add_option(rs.option.enable_auto_exposure, _option_range(0, 1, 1, 1), True)
        self.sensor.add_option(rs.option.exposure, _option_range(1, 10000, 1, 166), True)
        if with_white_balance:
            self.sensor.add_option(
                rs.option.enable_auto_white_balance, _option_range(0, 1, 1, 1), True
            )
            self.sensor.add_option(
                rs.option.white_balance, _option_range(2800, 6500, 10, 4600), True
            )
        self._pixels: list[np.ndarray] = []
        self.device.add_to(context.context)

    def inject(self, image: np.ndarray, frame_number: int, device_time_ms: float,
               time_of_arrival_ms: int | None = None) -> np.ndarray:
        """Inject one frame; returns the pixel buffer librealsense reads from (not a copy)."""
        if time_of_arrival_ms is not None:
            self.sensor.set_metadata(rs.frame_metadata_value.time_of_arrival, time_of_arrival_ms)
        pixels = np.ascontiguousarray(image)
        self._pixels.append(pixels)  # librealsense reads the buffer without owning it
        # A software_video_frame may be injected once only (a second injection double-frees).
        frame = rs.software_video_frame()
        frame.pixels = pixels
        frame.stride, frame.bpp = WIDTH * 3, 3
        frame.timestamp = float(device_time_ms)
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.frame_number = frame_number
        frame.profile = self.profile
        self.sensor.on_video_frame(frame)
        return pixels


class SoftwareContext:
    """An ``rs.context`` plus the devices-changed events that keep its software devices listed."""

    def __init__(self) -> None:
        self.context = rs.context()
        self.kept_events: list = []
        self.context.set_devices_changed_callback(self.kept_events.append)


@pytest.fixture()
def context() -> SoftwareContext:
    return SoftwareContext()


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]


def _config(serial: str, **overrides) -> RealSenseCameraConfig:
    settings = dict(name="front", serial_number=serial, width=WIDTH, height=HEIGHT, fps=FPS)
    settings.update(overrides)
    return RealSenseCameraConfig(**settings)


def _wait_until(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_frames_are_bit_exact_and_capture_time_follows_the_clock_mapping(context):
    device = SoftwareRealSense(context, "SW0001")
    camera = RealSenseCamera(_config("SW0001"), context=context.context)
    camera.connect()
    try:
        images = _images(6)
        device_ms = [50_000.0 + 33.0 * i for i in range(6)]
        latency_ms = [9, 4, 7, 3, 12, 5]  # minimum 3 ms at frame 3
        wall0_ms = int(time.time() * 1000)
        arrival_ms = [
            wall0_ms + int(d - device_ms[0]) + lat
            for d, lat in zip(device_ms, latency_ms, strict=True)
        ]
        drift = camera.config.clock_drift_bound_ppm * 1e-6
        for i, image in enumerate(images):
            device.inject(image, frame_number=100 + i, device_time_ms=device_ms[i],
                          time_of_arrival_ms=arrival_ms[i])
            frame = camera.read(timeout_s=2.0)
            assert np.array_equal(frame.image, image)
            # The frame must own its pixels: librealsense frees or reuses the frame's memory once
            # the callback returns (a view would read freed memory later).
            assert frame.image.flags.owndata
            assert frame.image.dtype == np.uint8 and frame.image.shape == (HEIGHT, WIDTH, 3)
            assert frame.frame_number == 100 + i
            assert frame.camera_name == "front"
            assert frame.hardware_timestamp_s == pytest.approx(device_ms[i] / 1000, abs=1e-9)
            # Reference: the tightest drift-aged lower envelope over the frames seen so far.
            offset_s = min(
                (arrival_ms[j] - device_ms[j]) / 1000 + drift * (device_ms[i] - device_ms[j]) / 1000
                for j in range(i + 1)
            )
            assert frame.capture_time_s == pytest.approx(device_ms[i] / 1000 + offset_s, abs=1e-3)
        # After the low-latency frame the stamps stop following the latency jitter.
        diagnostics = camera.diagnostics()
        assert diagnostics.frames_received == 6
        assert diagnostics.frames_dropped == 0
        assert diagnostics.timestamp_domain == "hardware_clock"
        assert device.sensor.get_option(rs.option.global_time_enabled) == 0.0
        intrinsics = camera.intrinsics()
        assert (intrinsics.width, intrinsics.height) == (WIDTH, HEIGHT)
        assert (intrinsics.fx, intrinsics.fy) == (30.0, 30.0)
        assert (intrinsics.cx, intrinsics.cy) == (WIDTH / 2, HEIGHT / 2)
        assert intrinsics.distortion_model == "plumb_bob"
    finally:
        camera.disconnect()


def test_capture_time_without_arrival_metadata_lies_between_injection_and_read(context):
    device = SoftwareRealSense(context, "SW0002")
    camera = RealSenseCamera(_config("SW0002"), context=context.context)
    camera.connect()
    try:
        previous = -np.inf
        for i, image in enumerate(_images(4, seed=1)):
            before = time.time()
            device.inject(image, frame_number=i + 1, device_time_ms=1_000.0 + 33.0 * i)
            frame = camera.read(timeout_s=2.0)
            after = time.time()
            assert before - 1e-3 <= frame.capture_time_s <= after + 1e-3
            assert frame.capture_time_s > previous
            previous = frame.capture_time_s
    finally:
        camera.disconnect()


def test_exposure_midpoint_metadata_moves_the_capture_instant(context):
    device = SoftwareRealSense(context, "SW0008")
    camera = RealSenseCamera(_config("SW0008"), context=context.context)
    camera.connect()
    try:
        frame_timestamp_us = 70_000_000
        # Metadata in microseconds: the exposure midpoint lies 8 ms before the frame timestamp.
        device.sensor.set_metadata(rs.frame_metadata_value.frame_timestamp, frame_timestamp_us)
        device.sensor.set_metadata(rs.frame_metadata_value.sensor_timestamp,
                                   frame_timestamp_us - 8_000)
        arrival_ms = int(time.time() * 1000)
        device.inject(_images(1, seed=9)[0], frame_number=1,
                      device_time_ms=frame_timestamp_us / 1000, time_of_arrival_ms=arrival_ms)
        frame = camera.read(timeout_s=2.0)
        assert frame.hardware_timestamp_s == pytest.approx(70.0 - 0.008, abs=1e-9)
        assert frame.capture_time_s == pytest.approx(arrival_ms / 1000 - 0.008, abs=1e-3)
    finally:
        camera.disconnect()


def test_frame_number_gaps_count_as_dropped_frames(context):
    device = SoftwareRealSense(context, "SW0003")
    camera = RealSenseCamera(_config("SW0003"), context=context.context)
    camera.connect()
    try:
        for number, image in zip([1, 2, 3, 7, 8], _images(5, seed=2), strict=True):
            device.inject(image, frame_number=number, device_time_ms=10.0 * number)
            assert camera.read(timeout_s=2.0).frame_number == number
        diagnostics = camera.diagnostics()
        assert diagnostics.frames_received == 5
        assert diagnostics.frames_dropped == 3
    finally:
        camera.disconnect()


def test_stopped_stream_reconnects_and_frames_flow_again(context):
    device = SoftwareRealSense(context, "SW0004")
    config = _config("SW0004", frame_timeout_s=0.3, reconnect_initial_backoff_s=0.05,
                     reconnect_max_backoff_s=0.2)
    camera = RealSenseCamera(config, context=context.context)
    camera.connect()
    try:
        images = _images(4, seed=3)
        device.inject(images[0], frame_number=1, device_time_ms=1_000.0)
        device.inject(images[1], frame_number=2, device_time_ms=1_033.0)
        assert camera.read(timeout_s=2.0).frame_number == 2
        # The stream stops: the supervisor must notice and reopen the sensor.
        assert _wait_until(lambda: camera.diagnostics().reconnects >= 1 and camera.is_connected)
        diagnostics = camera.diagnostics()
        assert "no frame" in (diagnostics.last_error or "")
        # A restarted device counts frames and time from scratch; that is not a drop.
        device.inject(images[2], frame_number=1, device_time_ms=5.0)
        frame = camera.read(timeout_s=2.0)
        assert frame.frame_number == 1
        assert np.array_equal(frame.image, images[2])
        assert camera.diagnostics().frames_dropped == 0
    finally:
        camera.disconnect()
    with pytest.raises(CameraNotConnectedError):
        camera.read(timeout_s=0.1)


def test_vanished_device_is_retried_until_a_device_with_the_serial_returns(context):
    first = SoftwareRealSense(context, "SW0005")
    config = _config("SW0005", frame_timeout_s=0.3, reconnect_initial_backoff_s=0.05,
                     reconnect_max_backoff_s=0.2)
    camera = RealSenseCamera(config, context=context.context)
    camera.connect()
    try:
        first.inject(_images(1, seed=4)[0], frame_number=1, device_time_ms=1.0)
        camera.read(timeout_s=2.0)
        # Unplug: drop every reference that keeps the software device listed in the context.
        context.kept_events.clear()
        del first
        gc.collect()
        assert _wait_until(lambda: camera.diagnostics().failed_reconnect_attempts >= 2)
        diagnostics = camera.diagnostics()
        assert not diagnostics.connected
        assert "SW0005" in (diagnostics.last_error or "")
        # Plug a device with the same serial back in; the announcement wakes the reconnect.
        second = SoftwareRealSense(context, "SW0005")
        assert _wait_until(lambda: camera.is_connected)
        image = _images(1, seed=5)[0]
        second.inject(image, frame_number=1, device_time_ms=2.0)
        assert np.array_equal(camera.read(timeout_s=2.0).image, image)
        assert camera.diagnostics().reconnects == 1
    finally:
        camera.disconnect()


def test_unknown_serial_error_lists_connected_serials(context):
    devices = [SoftwareRealSense(context, "SW1111"), SoftwareRealSense(context, "SW2222")]
    camera = RealSenseCamera(_config("SW9999"), context=context.context)
    with pytest.raises(RealSenseDeviceNotFoundError) as error:
        camera.connect()
    message = str(error.value)
    assert "SW9999" in message and "SW1111" in message and "SW2222" in message
    assert not camera.is_connected
    assert len(devices) == 2  # they had to stay alive (and listed) during connect()


def test_fixed_exposure_and_white_balance_turn_auto_modes_off(context):
    device = SoftwareRealSense(context, "SW0006")
    camera = RealSenseCamera(_config("SW0006", exposure=120.0, white_balance_k=4000.0),
                             context=context.context)
    camera.connect()
    try:
        assert device.sensor.get_option(rs.option.enable_auto_exposure) == 0.0
        assert device.sensor.get_option(rs.option.exposure) == 120.0
        assert device.sensor.get_option(rs.option.enable_auto_white_balance) == 0.0
        assert device.sensor.get_option(rs.option.white_balance) == 4000.0
    finally:
        camera.disconnect()


def test_unsupported_option_or_profile_is_a_clear_error(context):
    device = SoftwareRealSense(context, "SW0007", with_white_balance=False)  # noqa: F841 (kept alive)
    camera = RealSenseCamera(_config("SW0007", white_balance_k=4000.0), context=context.context)
    with pytest.raises(CameraError, match="white balance"):
        camera.connect()
    camera = RealSenseCamera(_config("SW0007", exposure=1e6), context=context.context)
    with pytest.raises(CameraError, match="outside the device range"):
        camera.connect()
    camera = RealSenseCamera(_config("SW0007", width=640, height=480), context=context.context)
    with pytest.raises(CameraError, match=f"{WIDTH}x{HEIGHT}@{FPS}"):
        camera.connect()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        _config("")
    with pytest.raises(ValueError):
        _config("X", exposure=float("nan"))
    with pytest.raises(ValueError):
        _config("X", frame_timeout_s=0.0)
    with pytest.raises(ValueError):
        _config("X", width=0)


def test_clock_mapper_tracks_a_drifting_clock_through_latency_jitter():
    rng = np.random.default_rng(7)
    true_offset_s, skew = 1234.5, 80e-6  # device runs 80 ppm slow against the host
    mapper = DeviceClockMapper(drift_bound_ppm=100.0)
    errors = []
    for i in range(30 * 600):  # ten minutes at 30 fps
        host_capture_s = i / 30.0
        device_s = (host_capture_s - true_offset_s) * (1 - skew)
        arrival_s = host_capture_s + 0.002 + rng.exponential(0.004)
        mapper.observe(device_s, arrival_s)
        if i > 30:
            errors.append(mapper.to_host(device_s) - (host_capture_s + 0.002))
    errors = np.abs(errors)
    # The latency jitter (mean 4 ms, tail > 20 ms) is filtered out to well under a millisecond.
    assert errors.max() < 1e-3, errors.max()


def test_clock_mapper_restarts_on_clock_reset_and_unwraps_the_hardware_counter():
    mapper = DeviceClockMapper(drift_bound_ppm=0.0)
    mapper.observe(100.0, 200.005)
    mapper.observe(100.1, 200.102)
    assert mapper.to_host(100.1) == pytest.approx(200.102)
    mapper.observe(0.5, 300.0)  # device restarted: its clock went back
    assert mapper.resets == 1
    assert mapper.to_host(0.5) == pytest.approx(300.0)
    wrap = 2**32 * 1e-6
    mapper = DeviceClockMapper(drift_bound_ppm=0.0)
    mapper.observe(wrap - 0.01, 1000.0)
    mapper.observe(0.02, 1000.03)  # 30 ms later, after the 32-bit microsecond wrap
    assert mapper.resets == 0
    assert mapper.offset_s == pytest.approx(1000.0 - (wrap - 0.01))
    with pytest.raises(ValueError):
        mapper.observe(float("nan"), 1.0)
