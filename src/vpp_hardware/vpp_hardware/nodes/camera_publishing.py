"""Publishing camera frames as sensor_msgs/Image + CameraInfo, shared by real and simulated cameras.

A reader thread per camera waits on the camera's :class:`FrameSlot` and publishes every new frame,
stamped with the frame's capture time (host clock), with sensor-data QoS.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from rclpy._rclpy_pybind11 import RCLError
from sensor_msgs.msg import CameraInfo, Image

from vpp_hardware.cameras.camera import (
    CameraIntrinsics,
    CameraNotConnectedError,
    CameraTimeoutError,
    Frame,
    FrameSlot,
)
from vpp_ros.image_conversion import rgb_to_image_msg
from vpp_ros.qos import SENSOR_QOS
from vpp_ros.time_conversion import seconds_to_stamp


def camera_info_msg(intrinsics: CameraIntrinsics, frame_id: str) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of a camera's intrinsics (real calibration or simulated pinhole)."""
    i = intrinsics
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width, info.height = int(i.width), int(i.height)
    info.distortion_model = i.distortion_model
    info.d = [float(v) for v in i.distortion_coefficients]
    info.k = [i.fx, 0.0, i.cx, 0.0, i.fy, i.cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [i.fx, 0.0, i.cx, 0.0, 0.0, i.fy, i.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class FramePublisher:
    """Publishes ``<topic_prefix>/image_raw`` and ``<topic_prefix>/camera_info`` from a frame slot."""

    def __init__(self, node, slot: FrameSlot, topic_prefix: str, frame_id: str,
                 camera_info: Optional[CameraInfo] = None,
                 on_frame: Optional[Callable[[Frame], None]] = None) -> None:
        self.node = node
        self.slot = slot
        self.frame_id = frame_id
        self.camera_info = camera_info
        self.on_frame = on_frame
        self.image_pub = node.create_publisher(Image,
                                               f"{topic_prefix}/image_raw", SENSOR_QOS)
        self.info_pub = node.create_publisher(CameraInfo, f"{topic_prefix}/camera_info", SENSOR_QOS)
        self.published = 0
        self.timeouts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish-{topic_prefix}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        sequence = 0
        while not self._stop.is_set():
            try:
                sequence, frame = self.slot.wait_newer(sequence, timeout_s=0.5)
            except CameraTimeoutError:
                self.timeouts += 1
                continue
            except CameraNotConnectedError:
                self._stop.wait(0.1)
                continue
            try:
                self.publish(frame)
            except RCLError:
                return  # the node is shutting down

    def publish(self, frame: Frame) -> None:
        stamp = seconds_to_stamp(frame.capture_time_s)
        self.image_pub.publish(rgb_to_image_msg(frame.image, stamp, self.frame_id))
        if self.camera_info is not None:
            self.camera_info.header.stamp = stamp
            self.info_pub.publish(self.camera_info)
        self.published += 1
        if self.on_frame is not None:
            self.on_frame(frame)
