"""ROS 2 node owning the simulated world: franky-sim's robot server + the simulated cameras.

The robot is driven exactly like a real one, over libfranka's network protocol on ``host``
(the executor connects to it); the static and wrist cameras are rendered from the same MuJoCo
scene and published on the same topics as the real camera nodes, stamped with the host time of
the physics step they show.

Services: ``~/reset`` (std_srvs/Trigger) puts the objects at new random positions.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Optional

from geometry_msgs.msg import PoseArray, Pose
from rclpy.node import Node
from std_srvs.srv import Trigger

from vpp_hardware.cameras.mujoco.configuration_mujoco import default_static_camera, default_wrist_camera
from vpp_hardware.cameras.mujoco.camera_mujoco import MujocoCamera
from vpp_hardware.nodes.camera_publishing import FramePublisher, camera_info_msg
from vpp_hardware.sim.configuration_sim import SimWorldConfig
from vpp_hardware.sim.sim_world import SimWorld, reset_seed
from vpp_ros.node_main import run_node
from vpp_ros.params import declare_dataclass_parameters
from vpp_ros.qos import SENSOR_QOS


@dataclass
class SimWorldNodeConfig:
    host: str = field(default="127.0.0.1", metadata={"help": "loopback address of the libfranka server"})
    realtime: bool = field(default=True, metadata={"help": "pace physics against the host clock"})
    command_wait_s: float = field(default=0.05, metadata={
        "help": "during a motion, longest wait per physics step for the libfranka client's command [s]; 0: never wait"})
    seed: int = field(default=0, metadata={"help": "seed (>= 0) of the object placement on start and resets"})
    image_width: int = field(default=256, metadata={"help": "rendered image width [px]"})
    image_height: int = field(default=256, metadata={"help": "rendered image height [px]"})
    fps: float = field(default=10.0, metadata={"help": "camera rate in simulated time [Hz]"})
    static_topic_prefix: str = field(default="/static_camera", metadata={"help": "static camera topics prefix"})
    wrist_topic_prefix: str = field(default="/wrist_camera", metadata={"help": "wrist camera topics prefix"})
    static_frame_id: str = field(default="static_camera_optical_frame", metadata={"help": "static camera frame"})
    wrist_frame_id: str = field(default="wrist_camera_optical_frame", metadata={"help": "wrist camera frame"})
    object_pose_topic: str = field(default="/sim/object_poses",
                                   metadata={"help": "ground-truth object poses (PoseArray, base frame)"})
    base_frame_id: str = field(default="fr3_link0", metadata={"help": "robot base frame"})
    object_pose_rate_hz: float = field(default=10.0, metadata={"help": "rate of the ground-truth poses"})
    static_camera_position_m: list[float] = field(
        default_factory=list, metadata={"help": "static camera position, world frame [m]; [] keeps the default view"})
    static_camera_look_at_m: list[float] = field(
        default_factory=list, metadata={"help": "point the static camera looks at, world frame [m]; [] keeps the default"})
    static_camera_fovy_deg: float = field(
        default=math.nan, metadata={"help": "static camera vertical field of view [deg]; NaN keeps the default"})

    def static_camera_overrides(self) -> dict[str, object]:
        overrides: dict[str, object] = {}
        for key, value in (("position", self.static_camera_position_m), ("look_at", self.static_camera_look_at_m)):
            if value:
                if len(value) != 3:
                    raise ValueError(f"static_camera_{key}_m must have 3 values [m], got {list(value)}")
                overrides[key] = tuple(float(v) for v in value)
        if not math.isnan(self.static_camera_fovy_deg):
            overrides["fovy_deg"] = float(self.static_camera_fovy_deg)
        return overrides


class SimWorldServices:
    """Cameras, object poses, ``~/reset`` and shutdown shared by every simulated-world node.

    The node provides ``world`` (a :class:`SimWorld`) and ``cfg`` (camera topic prefixes and
    frame ids, ``object_pose_topic``, ``object_pose_rate_hz``, ``base_frame_id``, ``seed``), then
    calls ``_start_cameras`` and ``_start_object_services`` once its world runs.
    """

    def _start_cameras(self, static_camera, wrist_camera) -> None:
        """Publish the world's static and wrist views (camera configs by name) on the cfg's topics."""
        cfg = self.cfg
        self.frame_publishers: list[FramePublisher] = []
        for config, prefix, frame_id in ((static_camera, cfg.static_topic_prefix, cfg.static_frame_id),
                                         (wrist_camera, cfg.wrist_topic_prefix, cfg.wrist_frame_id)):
            # The same Camera interface as the RealSense driver, so both publish identically.
            camera = MujocoCamera(self.world, config.name)
            camera.connect()
            pub = FramePublisher(self, camera.frame_slot, prefix, frame_id,
                                 camera_info_msg(camera.intrinsics(), frame_id))
            pub.start()
            self.frame_publishers.append(pub)

    def _start_object_services(self) -> None:
        """Ground-truth object poses at ``object_pose_rate_hz`` and the ``~/reset`` service."""
        self._resets = 0
        self.object_pub = self.create_publisher(PoseArray, self.cfg.object_pose_topic, SENSOR_QOS)
        self.create_timer(1.0 / self.cfg.object_pose_rate_hz, self._publish_objects)
        self.create_service(Trigger, "~/reset", self._on_reset)

    def _publish_objects(self) -> None:
        msg = PoseArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.cfg.base_frame_id
        for name in self.world.object_names:
            pose = self.world.object_pose(name)
            p = Pose()
            p.position.x, p.position.y, p.position.z = map(float, pose.position)
            w, x, y, z = map(float, pose.quaternion_wxyz)
            p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = x, y, z, w
            msg.poses.append(p)
        self.object_pub.publish(msg)

    def _on_reset(self, request, response):
        self._resets += 1
        poses = self.world.reset(seed=reset_seed(self.cfg.seed, self._resets))
        response.success = True
        response.message = ", ".join(f"{n} at ({p.position[0]:.3f}, {p.position[1]:.3f})" for n, p in poses.items())
        return response

    def destroy_node(self) -> bool:
        # Also called by rclpy's shutdown on a node whose __init__ failed half-way.
        for pub in getattr(self, "frame_publishers", []):
            pub.stop()
        if getattr(self, "world", None) is not None:
            stats = self.world.stats()
            self.get_logger().info(
                f"simulated {stats.sim_time_s:.1f} s at {stats.realtime_factor:.2f}x real time; "
                f"{stats.stale_command_steps} physics steps of motions ran on a stale arm command")
            self.world.stop()
        return super().destroy_node()


class SimWorldNode(SimWorldServices, Node):
    def __init__(self) -> None:
        super().__init__("sim_world")
        self.cfg: SimWorldNodeConfig = declare_dataclass_parameters(self, SimWorldNodeConfig)
        cfg = self.cfg
        size = dict(width=cfg.image_width, height=cfg.image_height, fps=cfg.fps)
        cameras = (default_static_camera(**size, **cfg.static_camera_overrides()), default_wrist_camera(**size))
        self.world = SimWorld(SimWorldConfig(host=cfg.host, realtime=cfg.realtime, command_wait_s=cfg.command_wait_s,
                                             seed=cfg.seed, cameras=cameras))
        self.get_logger().info(f"starting the simulated world (franky-sim on {cfg.host}, MuJoCo cameras "
                               f"{cfg.image_width}x{cfg.image_height} at {cfg.fps:g} Hz)")
        self.world.start()
        self.world.reset(seed=reset_seed(cfg.seed, 0))
        self._start_cameras(*cameras)
        self._start_object_services()
        self.get_logger().info(f"simulated world ready: robot at {self.world.host}, objects "
                               f"{list(self.world.object_names)}")


def main(argv: Optional[list[str]] = None) -> int:
    return run_node(SimWorldNode, argv)


if __name__ == "__main__":
    sys.exit(main())
