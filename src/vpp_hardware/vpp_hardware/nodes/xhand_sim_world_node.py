"""ROS 2 node owning the simulated XArm + XHand world (the xhand stack's ``sim_world``).

* The xArm is served over the xArm controller protocol by the loopback peer (Unix sockets
  ``/tmp/xarmcontroller_uds_*`` by default), so the executor's ``XArmAPI`` drives it like a real
  arm (``robot_ip`` any address, ``arm.forbid_uds: false``).
* The XHand: joint targets arrive on ``hand_command_topic`` (JointState by name), measured
  joints go out on ``hand_state_topic`` at ``hand_state_rate_hz``.
* Static and wrist cameras are rendered from the same scene and published on the same topics
  as the real camera nodes.

Services: ``~/reset`` (std_srvs/Trigger) puts the cubes at new random positions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState

from vpp_core.action_space import XHAND_JOINT_NAMES
from vpp_hardware.hands.hand import HandError
from vpp_hardware.hands.mujoco_hand import MujocoXHand
from vpp_hardware.nodes.sim_world_node import SimWorldServices
from vpp_hardware.sim.configuration_sim import SimWorldConfig
from vpp_hardware.sim.xhand_world import XHandSimConfig, XHandSimWorld, default_xhand_cameras
from vpp_ros.node_main import run_node
from vpp_ros.params import declare_dataclass_parameters
from vpp_ros.qos import SENSOR_QOS


@dataclass
class XHandSimWorldNodeConfig:
    realtime: bool = field(default=True, metadata={"help": "pace physics against the host clock"})
    seed: int = field(default=0, metadata={"help": "seed of the object placement on start and resets"})
    peer_host: str = field(default="", metadata={"help": "serve the xArm protocol on TCP here (root); empty: Unix sockets"})
    arm_initial_joints: tuple[float, ...] = field(default=(0.0, -0.3, -0.9, 0.0, 1.2, 0.0),
                                                  metadata={"help": "xArm6 start joints [rad]"})
    arm_max_joint_speed_radps: float = field(default=2.0, metadata={"help": "servo-mode joint speed limit"})
    image_width: int = field(default=256, metadata={"help": "rendered image width [px]"})
    image_height: int = field(default=256, metadata={"help": "rendered image height [px]"})
    fps: float = field(default=10.0, metadata={"help": "camera rate in simulated time [Hz]"})
    static_topic_prefix: str = field(default="/static_camera", metadata={"help": "static camera topics prefix"})
    wrist_topic_prefix: str = field(default="/wrist_camera", metadata={"help": "wrist camera topics prefix"})
    static_frame_id: str = field(default="static_camera_optical_frame", metadata={"help": "static camera frame"})
    wrist_frame_id: str = field(default="wrist_camera_optical_frame", metadata={"help": "wrist camera frame"})
    hand_command_topic: str = field(default="/xhand_sim/joint_commands", metadata={"help": "hand targets in"})
    hand_state_topic: str = field(default="/xhand_sim/joint_states", metadata={"help": "measured hand joints out"})
    hand_state_rate_hz: float = field(default=100.0, metadata={"help": "rate of the hand joint states"})
    object_pose_topic: str = field(default="/sim/object_poses",
                                   metadata={"help": "ground-truth object poses (PoseArray, base frame)"})
    base_frame_id: str = field(default="link_base", metadata={"help": "robot base frame"})
    object_pose_rate_hz: float = field(default=10.0, metadata={"help": "rate of the ground-truth poses"})


class XHandSimWorldNode(SimWorldServices, Node):
    def __init__(self) -> None:
        super().__init__("sim_world")
        self.cfg: XHandSimWorldNodeConfig = declare_dataclass_parameters(self, XHandSimWorldNodeConfig)
        cfg = self.cfg
        cameras = default_xhand_cameras(width=cfg.image_width, height=cfg.image_height, fps=cfg.fps)
        self.world = XHandSimWorld(XHandSimConfig(
            world=SimWorldConfig(realtime=cfg.realtime, seed=cfg.seed, cameras=cameras),
            arm_initial_joints=tuple(cfg.arm_initial_joints), arm_max_joint_speed_radps=cfg.arm_max_joint_speed_radps,
            peer_host=cfg.peer_host))
        self.get_logger().info(f"starting the simulated XArm + XHand world (MuJoCo cameras "
                               f"{cfg.image_width}x{cfg.image_height} at {cfg.fps:g} Hz)")
        self.world.start()
        self.world.reset(seed=cfg.seed)
        self.hand = MujocoXHand(self.world)
        self.hand.connect()
        self._start_cameras(*cameras)
        self._index = {name: i for i, name in enumerate(XHAND_JOINT_NAMES)}
        self.create_subscription(JointState, cfg.hand_command_topic, self._on_hand_command, SENSOR_QOS)
        self.hand_pub = self.create_publisher(JointState, cfg.hand_state_topic, SENSOR_QOS)
        self.create_timer(1.0 / cfg.hand_state_rate_hz, self._publish_hand)
        self._start_object_services()
        self._bad_commands = 0
        where = "Unix sockets /tmp/xarmcontroller_uds_*" if self.world.uses_unix_sockets else f"TCP {self.world.host}"
        self.get_logger().info(f"simulated world ready: xArm controller on {where}; hand on {cfg.hand_command_topic}; "
                               f"objects {list(self.world.object_names)}")

    def _on_hand_command(self, msg: JointState) -> None:
        target = self.hand.read_positions()
        if len(msg.name) != len(msg.position):
            self._bad_hand_command("name and position lengths differ")
            return
        for name, value in zip(msg.name, msg.position):
            index = self._index.get(name)
            if index is None:
                self._bad_hand_command(f"unknown joint {name!r}")
                return
            target[index] = value
        if not np.all(np.isfinite(target)):
            self._bad_hand_command("non-finite position")
            return
        try:
            self.hand.command_positions(target)
        except HandError as exc:
            self._bad_hand_command(str(exc))

    def _bad_hand_command(self, reason: str) -> None:
        self._bad_commands += 1
        self.get_logger().error(f"hand command ignored: {reason}", throttle_duration_sec=1.0)

    def _publish_hand(self) -> None:
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(XHAND_JOINT_NAMES)
        msg.position = [float(v) for v in self.hand.read_positions()]
        self.hand_pub.publish(msg)


def main(argv: Optional[list[str]] = None) -> int:
    return run_node(XHandSimWorldNode, argv)


if __name__ == "__main__":
    sys.exit(main())
