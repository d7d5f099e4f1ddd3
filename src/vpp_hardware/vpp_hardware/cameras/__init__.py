"""Cameras: one interface (:mod:`.camera`), one sub-package per implementation."""

from vpp_hardware.cameras.camera import (
    Camera,
    CameraConfig,
    CameraError,
    CameraIntrinsics,
    CameraNotConnectedError,
    CameraTimeoutError,
    Frame,
    FrameSlot,
)

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
