"""ROS 2 XArm + XHand executor: vpp_msgs/ActionChunk (18-d) -> xArm servo targets + XHand joints.

Thin adapter over the same :class:`~vpp_hardware.executor.executor.ChunkExecutor` as the Panda
(time alignment, workspace/step/speed limits, watchdog, NaN and shape rejection), with
:class:`~vpp_hardware.arms.xarm.xarm_arm.XArmArm` (``xarm-python-sdk`` servo mode) and a
:class:`~vpp_hardware.hands.effector.HandEffector` (joint-limit clamping from
``hand.joint_limits``, non-blocking sends) in front of the hand:

* ``hand_backend: sdk``: the real XHand through the vendor SDK (robot PC);
* ``hand_backend: sim``: the simulated hand of ``xhand_sim_world_node`` over
  ``sim_hand_command_topic`` / ``sim_hand_state_topic``;
* ``hand_backend: none``: arm only (hand targets are still checked, clamped and published).

Topics: subscribes ``chunk_topic``; publishes ``joint_state_topic`` (arm joints, then the 12 hand
joints by name when the hand reports), ``ee_pose_topic`` (wrist = xArm flange pose),
``/commanded_pose`` + ``/commanded_effector`` and ``~/status``. Services ``~/hold``,
``~/recover`` (``clean_error`` + servo mode again).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from vpp_msgs.msg import ActionChunk
from vpp_msgs.msg import ExecutorStatus as ExecutorStatusMsg

from vpp_core.action_space import XHAND_JOINT_NAMES, get_action_space
from vpp_hardware.arms.arm import ArmError
from vpp_hardware.arms.xarm.xarm_arm import XArmArm, XArmConfig
from vpp_hardware.executor.executor import ChunkExecutorConfig, TickResult
from vpp_hardware.hands.hand import HandError, XHandJointLimits
from vpp_hardware.hands.xhand_executor import build_xhand_executor
from vpp_hardware.hands.xhand_sdk import XHandSDKConfig, XHandSDKHand
from vpp_hardware.nodes.executor_node_common import ChunkExecutorNodeMixin
from vpp_hardware.nodes.commanded_publishing import CommandedPublisher, CommandRecorder
from vpp_hardware.nodes.ros_hand import RosTopicHand
from vpp_ros.node_main import run_node
from vpp_ros.params import declare_dataclass_parameters
from vpp_ros.qos import CHUNK_QOS, SENSOR_QOS, STATUS_QOS

_HAND_BACKENDS = ("sdk", "sim", "none")


@dataclass
class XHandExecutorNodeConfig:
    """Node-level parameters (executor, arm, hand and hand limits have their own namespaces)."""

    robot_ip: str = field(default="192.168.1.185", metadata={"help": "xArm controller address"})
    hand_backend: str = field(default="sdk", metadata={"help": "sdk (vendor SDK), sim (simulated hand topics) or none"})
    chunk_topic: str = field(default="/action_chunk", metadata={"help": "vpp_msgs/ActionChunk input"})
    joint_state_topic: str = field(default="/joint_states", metadata={"help": "sensor_msgs/JointState output"})
    ee_pose_topic: str = field(default="/ee_pose", metadata={"help": "wrist (flange) PoseStamped output"})
    commanded_pose_topic: str = field(default="/commanded_pose", metadata={"help": "pose target sent (C1)"})
    commanded_effector_topic: str = field(default="/commanded_effector", metadata={"help": "hand targets sent (C1)"})
    frame_id: str = field(default="link_base", metadata={"help": "xArm base frame"})
    arm_joint_names: tuple[str, ...] = field(
        default=tuple(f"joint{i}" for i in range(1, 8)), metadata={"help": "xArm joint names, base to flange"})
    sim_hand_command_topic: str = field(default="/xhand_sim/joint_commands",
                                        metadata={"help": "hand_backend=sim: JointState targets to the sim"})
    sim_hand_state_topic: str = field(default="/xhand_sim/joint_states",
                                      metadata={"help": "hand_backend=sim: measured hand joints from the sim"})
    clamp_log_period_s: float = field(default=1.0, metadata={"help": "at most one clamp log line per period [s]"})
    state_publish_rate_hz: float = field(default=50.0, metadata={"help": "joint state / pose rate"})
    status_period_s: float = field(default=0.2, metadata={"help": "ExecutorStatus period [s]"})
    connect_timeout_s: float = field(default=30.0, metadata={"help": "keep retrying to connect this long [s]"})

    def __post_init__(self) -> None:
        if self.hand_backend not in _HAND_BACKENDS:
            raise ValueError(f"hand_backend must be one of {_HAND_BACKENDS}, got {self.hand_backend!r}")


class XHandExecutorNode(ChunkExecutorNodeMixin, Node):
    def __init__(self) -> None:
        super().__init__("xhand_executor")
        self.cfg: XHandExecutorNodeConfig = declare_dataclass_parameters(self, XHandExecutorNodeConfig)
        self.exec_cfg: ChunkExecutorConfig = declare_dataclass_parameters(self, ChunkExecutorConfig, prefix="executor.")
        arm_cfg: XArmConfig = declare_dataclass_parameters(self, XArmConfig, prefix="arm.", skip=("host",))
        hand_cfg: XHandSDKConfig = declare_dataclass_parameters(self, XHandSDKConfig, prefix="hand.")
        self.limits: XHandJointLimits = declare_dataclass_parameters(self, XHandJointLimits, prefix="hand.joint_limits.")
        arm_cfg.host = self.cfg.robot_ip
        if len(self.cfg.arm_joint_names) != arm_cfg.dof:
            raise ValueError(f"arm_joint_names has {len(self.cfg.arm_joint_names)} names for a {arm_cfg.dof}-joint arm")
        log = self.get_logger()

        self._stop = threading.Event()
        self._loop: Optional[threading.Thread] = None
        self.arm = XArmArm(arm_cfg)
        if self.cfg.hand_backend == "sdk":
            self.hand = XHandSDKHand(hand_cfg)
        elif self.cfg.hand_backend == "sim":
            self.hand = RosTopicHand(self, self.cfg.sim_hand_command_topic, self.cfg.sim_hand_state_topic)
        else:
            self.hand = None
        self._connect_with_retries()

        action_space = get_action_space(self.exec_cfg.action_space)
        self.chunk_executor, self.hand_effector = build_xhand_executor(
            self.exec_cfg, self.arm, self.hand, self.limits, self.cfg.clamp_log_period_s)
        # Records the clamped hand targets for /commanded_effector, then forwards them.
        self.command_recorder = CommandRecorder(self.hand_effector, action_space.effector_dim)
        self.chunk_executor.effector = self.command_recorder
        self.chunk_executor.start()

        self.joint_pub = self.create_publisher(JointState, self.cfg.joint_state_topic, SENSOR_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, self.cfg.ee_pose_topic, SENSOR_QOS)
        self.status_pub = self.create_publisher(ExecutorStatusMsg, "~/status", STATUS_QOS)
        self.commanded = CommandedPublisher(
            self, action_space.effector_names, self.cfg.frame_id, self.command_recorder,
            stamp_with_executor_time=self.exec_cfg.clock == "wall", pose_topic=self.cfg.commanded_pose_topic,
            effector_topic=self.cfg.commanded_effector_topic)
        self.create_subscription(ActionChunk, self.cfg.chunk_topic, self._on_chunk, CHUNK_QOS)
        self.create_service(Trigger, "~/hold", self._on_hold)
        self.create_service(Trigger, "~/recover", self._on_recover)
        self.create_timer(self.cfg.status_period_s, self._publish_status)
        self._chunks_received = 0
        self._last_rejection = ""
        self._last_mode = None
        self._last_limited_log = 0.0
        self.create_timer(1.0 / self.cfg.state_publish_rate_hz, self._publish_state)
        self._loop = threading.Thread(target=self._control_loop, name="xhand-control", daemon=True)
        self._loop.start()
        log.info(f"executing 18-d chunks from {self.cfg.chunk_topic} at {self.exec_cfg.rate_hz:.0f} Hz on the xArm at "
                 f"{self.cfg.robot_ip} (hand: {self.cfg.hand_backend}; clock {self.exec_cfg.clock}, workspace "
                 f"{list(self.exec_cfg.safety.workspace_min_m)}..{list(self.exec_cfg.safety.workspace_max_m)})")

    def _connect_with_retries(self) -> None:
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                self.arm.connect()
                if self.hand is not None:
                    self.hand.connect()
                self.get_logger().info(f"connected to the xArm at {self.cfg.robot_ip} (attempt {attempt})")
                return
            except (ArmError, HandError) as exc:
                if time.monotonic() > deadline:
                    raise ArmError(f"no xArm/XHand after {attempt} attempts in {self.cfg.connect_timeout_s:.0f} s: "
                                   f"{exc}. Is the controller on and robot_ip:={self.cfg.robot_ip} right?") from exc
                self.get_logger().warning(f"connecting failed ({exc}); retrying", throttle_duration_sec=5.0)
                if self.arm.is_connected:
                    self.arm.disconnect()
                time.sleep(min(1.0, 0.2 * attempt))

    # -------------------------------------------------------------- control thread
    def _on_tick(self, result: TickResult) -> None:
        self.commanded.on_tick(result)
        if not self._log_mode_change(result) and result.commanded and "clamped" in result.reason:
            now = time.monotonic()
            if now - self._last_limited_log >= self.cfg.clamp_log_period_s:
                self._last_limited_log = now
                self.get_logger().warning(f"step {result.step_index} of chunk {result.chunk_seq}: {result.reason}")

    def _publish_state(self) -> None:
        hand = None
        if self.hand is not None:
            try:
                hand = self.hand.read_positions()
            except HandError:
                pass  # no reading yet: arm joints only
        if hand is None:
            self._publish_robot_state(self.cfg.arm_joint_names)
        else:
            self._publish_robot_state(self.cfg.arm_joint_names, XHAND_JOINT_NAMES, hand)

    def _disconnect_devices(self) -> None:
        if getattr(self, "hand_effector", None) is not None:
            self.hand_effector.close()
        if getattr(self, "hand", None) is not None:
            self.hand.disconnect()
        if getattr(self, "arm", None) is not None:
            self.arm.disconnect()


def main(argv: Optional[list[str]] = None) -> int:
    return run_node(XHandExecutorNode, argv)


if __name__ == "__main__":
    sys.exit(main())
