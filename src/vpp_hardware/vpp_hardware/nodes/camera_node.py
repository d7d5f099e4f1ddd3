"""ROS 2 RealSense camera node: colour images + CameraInfo with sensor-data QoS, diagnostics.

One node per camera, chosen by serial number. Frames are stamped with the capture time mapped
from the camera's hardware clock into the host clock (see the driver); the driver reconnects
when the camera drops, and this node reports its health on /diagnostics.

    ros2 run vpp_hardware camera_node --ros-args -r __node:=static_camera -p serial:=123456789
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from vpp_hardware.cameras.realsense.camera_realsense import RealSenseCamera
from vpp_hardware.cameras.realsense.configuration_realsense import RealSenseCameraConfig
from vpp_hardware.nodes.camera_publishing import FramePublisher, camera_info_msg
from vpp_ros.node_main import run_node
from vpp_ros.params import declare_dataclass_parameters


@dataclass
class CameraNodeConfig:
    serial: str = field(default="", metadata={"help": "RealSense serial number (rs-enumerate-devices)"})
    width: int = field(default=640, metadata={"help": "colour stream width [px]"})
    height: int = field(default=480, metadata={"help": "colour stream height [px]"})
    fps: float = field(default=30.0, metadata={"help": "colour stream rate [Hz]"})
    exposure: float = field(default=math.nan, metadata={"help": "fixed exposure (device units); NaN: auto"})
    white_balance_k: float = field(default=math.nan, metadata={"help": "fixed white balance [K]; NaN: auto"})
    frame_timeout_s: float = field(default=2.0, metadata={"help": "no frame for this long starts a reconnect"})
    topic_prefix: str = field(default="", metadata={"help": "topics prefix; empty: /<node name>"})
    frame_id: str = field(default="", metadata={"help": "optical frame; empty: <node name>_optical_frame"})
    diagnostics_period_s: float = field(default=1.0, metadata={"help": "/diagnostics period [s]"})


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera")
        cfg: CameraNodeConfig = declare_dataclass_parameters(self, CameraNodeConfig)
        if not cfg.serial:
            raise ValueError(f"parameter 'serial' of {self.get_name()} is empty: set the camera's serial number")
        self.cfg = cfg
        name = self.get_name()
        self.camera = RealSenseCamera(RealSenseCameraConfig(
            name=name, serial_number=cfg.serial, width=cfg.width, height=cfg.height, fps=cfg.fps,
            exposure=None if math.isnan(cfg.exposure) else cfg.exposure,
            white_balance_k=None if math.isnan(cfg.white_balance_k) else cfg.white_balance_k,
            frame_timeout_s=cfg.frame_timeout_s,
        ))
        self.camera.connect()
        prefix = cfg.topic_prefix or f"/{name}"
        frame_id = cfg.frame_id or f"{name}_optical_frame"
        self.publisher = FramePublisher(self, self.camera.frame_slot, prefix, frame_id,
                                        camera_info=camera_info_msg(self.camera.intrinsics(), frame_id))
        self.publisher.start()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f"RealSense {cfg.serial}: {cfg.width}x{cfg.height} @ {cfg.fps:g} Hz on {prefix}/image_raw")

    def _publish_diagnostics(self) -> None:
        d = self.camera.diagnostics()
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: RealSense {d.serial_number}"
        status.hardware_id = d.serial_number
        if not d.connected:
            status.level, status.message = DiagnosticStatus.ERROR, f"disconnected: {d.last_error or 'no frames'}"
        elif d.frames_dropped:
            status.level, status.message = DiagnosticStatus.WARN, f"{d.frames_dropped} frames dropped"
        else:
            status.level, status.message = DiagnosticStatus.OK, "streaming"
        values = {
            "frames_received": d.frames_received, "frames_dropped": d.frames_dropped,
            "frames_published": self.publisher.published, "reconnects": d.reconnects,
            "failed_reconnect_attempts": d.failed_reconnect_attempts,
            "seconds_since_last_frame": d.seconds_since_last_frame, "clock_offset_s": d.clock_offset_s,
            "clock_resets": d.clock_resets, "timestamp_domain": d.timestamp_domain, "last_error": d.last_error,
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.diag_pub.publish(msg)

    def destroy_node(self) -> bool:
        # Also called by rclpy's shutdown on a node whose __init__ failed half-way.
        if getattr(self, "publisher", None) is not None:
            self.publisher.stop()
        if getattr(self, "camera", None) is not None:
            self.camera.disconnect()
        return super().destroy_node()


def main(argv: Optional[list[str]] = None) -> int:
    return run_node(CameraNode, argv)


if __name__ == "__main__":
    sys.exit(main())
