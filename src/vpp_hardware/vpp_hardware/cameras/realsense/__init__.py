"""Intel RealSense colour cameras through pyrealsense2."""

from vpp_hardware.cameras.realsense.camera_realsense import (
    DeviceClockMapper,
    RealSenseCamera,
    RealSenseDeviceNotFoundError,
    RealSenseDiagnostics,
)
from vpp_hardware.cameras.realsense.configuration_realsense import RealSenseCameraConfig

__all__ = [
    "DeviceClockMapper",
    "RealSenseCamera",
    "RealSenseCameraConfig",
    "RealSenseDeviceNotFoundError",
    "RealSenseDiagnostics",
]
