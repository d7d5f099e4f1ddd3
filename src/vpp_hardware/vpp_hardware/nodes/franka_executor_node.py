"""ROS 2 Franka executor: vpp_msgs/ActionChunk -> franky Cartesian impedance targets.

Thin adapter over :class:`vpp_hardware.executor.executor.ChunkExecutor` (time alignment, safety
limits, watchdog) and :class:`vpp_hardware.arms.franka.franky_arm.FrankyArm` (franky's
``CartesianImpedanceTracker``). The control loop runs on its own thread at ``executor.rate_hz``;
chunks arrive on the ROS executor thread and are only queued there.

Topics: subscribes ``chunk_topic``; publishes ``joint_state_topic`` (arm + fingers),
``ee_pose_topic`` (PoseStamped in ``frame_id``), ``/commanded_pose`` + ``/commanded_effector``
(what was sent, after the safety limits) and ``~/status`` (vpp_msgs/ExecutorStatus).
Services: ``~/hold`` (stop executing, hold the current pose), ``~/recover`` (clear a latched
fault with franky's ``recover_from_errors``, bounded by ``arm.max_recovery_attempts``).
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

from vpp_core.action_space import get_action_space
from vpp_hardware.arms.arm import ArmError
from vpp_hardware.arms.franka.franky_arm import FrankyArm, FrankyArmConfig, FrankyGripper, FrankyGripperConfig
from vpp_hardware.arms.gripper_worker import GripperWorker
from vpp_hardware.executor.effector import BinaryGripperEffector
from vpp_hardware.executor.executor import ChunkExecutor, ChunkExecutorConfig, TickResult
from vpp_hardware.nodes.executor_node_common import ChunkExecutorNodeMixin
from vpp_hardware.nodes.commanded_publishing import CommandedPublisher, CommandRecorder
from vpp_ros.node_main import run_node
from vpp_ros.params import declare_dataclass_parameters
from vpp_ros.qos import CHUNK_QOS, SENSOR_QOS, STATUS_QOS



@dataclass
class FrankaExecutorNodeConfig:
    """Node-level parameters (the executor, arm and gripper have their own namespaces)."""

    robot_ip: str = field(default="172.16.0.2", metadata={"help": "Franka controller (FCI) address"})
    use_gripper: bool = field(default=True, metadata={"help": "drive the Franka Hand from the gripper action"})
    chunk_topic: str = field(default="/action_chunk", metadata={"help": "vpp_msgs/ActionChunk input"})
    joint_state_topic: str = field(default="/joint_states", metadata={"help": "sensor_msgs/JointState output"})
    ee_pose_topic: str = field(default="/ee_pose", metadata={"help": "geometry_msgs/PoseStamped output"})
    frame_id: str = field(default="fr3_link0", metadata={"help": "robot base frame"})
    joint_names: tuple[str, ...] = field(
        default=tuple(f"fr3_joint{i}" for i in range(1, 8)), metadata={"help": "arm joint names, base to flange"})
    finger_joint_names: tuple[str, ...] = field(
        default=("fr3_finger_joint1", "fr3_finger_joint2"), metadata={"help": "gripper joints (half width each)"})
    state_publish_rate_hz: float = field(default=50.0, metadata={"help": "joint state / EE pose rate"})
    status_period_s: float = field(default=0.2, metadata={"help": "ExecutorStatus period [s]"})
    connect_timeout_s: float = field(default=30.0, metadata={"help": "keep retrying to connect this long [s]"})


class FrankaExecutorNode(ChunkExecutorNodeMixin, Node):
    def __init__(self) -> None:
        super().__init__("franka_executor")
        self.cfg: FrankaExecutorNodeConfig = declare_dataclass_parameters(self, FrankaExecutorNodeConfig)
        self.exec_cfg: ChunkExecutorConfig = declare_dataclass_parameters(self, ChunkExecutorConfig, prefix="executor.")
        arm_cfg: FrankyArmConfig = declare_dataclass_parameters(self, FrankyArmConfig, prefix="arm.", skip=("host",))
        grip_cfg: FrankyGripperConfig = declare_dataclass_parameters(
            self, FrankyGripperConfig, prefix="gripper_device.", skip=("host",))
        arm_cfg.host = grip_cfg.host = self.cfg.robot_ip
        log = self.get_logger()

        self._stop = threading.Event()
        self._loop: Optional[threading.Thread] = None
        self.arm = FrankyArm(arm_cfg)
        # The worker owns the (blocking, not thread-safe) gripper connection: the control tick
        # and the state publisher only ever see cached state and queued commands.
        self.gripper: Optional[GripperWorker] = (
            GripperWorker(FrankyGripper(grip_cfg)) if self.cfg.use_gripper else None)
        self._connect_with_retries()
        effector = BinaryGripperEffector(self.gripper, self.exec_cfg.gripper) if self.gripper else None
        # Records the (limited) gripper command for /commanded_effector, then forwards it.
        action_space = get_action_space(self.exec_cfg.action_space)
        self.command_recorder = CommandRecorder(effector, action_space.effector_dim)
        self.chunk_executor = ChunkExecutor(self.exec_cfg, self.arm, effector=self.command_recorder)
        self.chunk_executor.start()

        self.joint_pub = self.create_publisher(JointState, self.cfg.joint_state_topic, SENSOR_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, self.cfg.ee_pose_topic, SENSOR_QOS)
        self.status_pub = self.create_publisher(ExecutorStatusMsg, "~/status", STATUS_QOS)
        self.commanded = CommandedPublisher(self, action_space.effector_names, self.cfg.frame_id,
                                            self.command_recorder, stamp_with_executor_time=self.exec_cfg.clock == "wall")
        self.create_subscription(ActionChunk, self.cfg.chunk_topic, self._on_chunk, CHUNK_QOS)
        self.create_service(Trigger, "~/hold", self._on_hold)
        self.create_service(Trigger, "~/recover", self._on_recover)
        self.create_timer(self.cfg.status_period_s, self._publish_status)

        self._chunks_received = 0
        self._last_rejection = ""
        self._last_mode = None
        # State goes out from a ROS timer, so the control thread does nothing but control.
        self.create_timer(1.0 / self.cfg.state_publish_rate_hz, self._publish_state)
        self._loop = threading.Thread(target=self._control_loop, name="franka-control", daemon=True)
        self._loop.start()
        log.info(f"executing chunks from {self.cfg.chunk_topic} at {self.exec_cfg.rate_hz:.0f} Hz "
                 f"(clock: {self.exec_cfg.clock}, latency offset {self.exec_cfg.latency_offset_s:.3f} s, "
                 f"workspace {list(self.exec_cfg.safety.workspace_min_m)}..{list(self.exec_cfg.safety.workspace_max_m)})")

    def _connect_with_retries(self) -> None:
        """The robot (or simulator) may still be booting: retry until ``connect_timeout_s``."""
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                self.arm.connect()
                if self.gripper is not None:
                    self.gripper.connect()
                self.get_logger().info(f"connected to Franka at {self.cfg.robot_ip} (attempt {attempt})")
                return
            except ArmError as exc:
                if time.monotonic() > deadline:
                    raise ArmError(f"no Franka at {self.cfg.robot_ip} after {attempt} attempts in "
                                   f"{self.cfg.connect_timeout_s:.0f} s: {exc}. Is the robot on, FCI enabled, "
                                   "and the IP right (robot_ip:=...)?") from exc
                self.get_logger().warning(f"connecting to Franka at {self.cfg.robot_ip} failed ({exc}); retrying",
                                          throttle_duration_sec=5.0)
                time.sleep(min(1.0, 0.2 * attempt))

    # -------------------------------------------------------------- control thread
    def _on_tick(self, result: TickResult) -> None:
        self.commanded.on_tick(result)
        self._log_mode_change(result)

    def _publish_state(self) -> None:
        fingers: tuple[str, ...] = ()
        half_width = None
        if self.gripper is not None:
            try:
                half_width = self.gripper.width / 2.0
                fingers = tuple(self.cfg.finger_joint_names)
            except ArmError:
                pass  # no reading yet
        self._publish_robot_state(self.cfg.joint_names, fingers, [half_width] * len(fingers))

    def _disconnect_devices(self) -> None:
        if getattr(self, "gripper", None) is not None:
            self.gripper.disconnect()
        if getattr(self, "arm", None) is not None:
            self.arm.disconnect()


def main(argv: Optional[list[str]] = None) -> int:
    return run_node(FrankaExecutorNode, argv)


if __name__ == "__main__":
    sys.exit(main())
