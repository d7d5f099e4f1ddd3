"""ROS 2 teleop node: Apple Vision Pro hand tracking -> action chunks for the robot's executor.

Thin adapter over :class:`vpp_teleop.runner.TeleopRunner`: the real avp-stream client (connect
timeout, retries, staleness: :mod:`vpp_teleop.avp_client`), one worker thread, and
:class:`vpp_teleop.teleop.TeleopCore` (clutch, wrist mapping, XHand retargeting, chunk
building). The worker publishes the chunk built from the newest headset update on
``chunk_topic`` (the executor's input, the same interface the policy uses), then every update
on ``hand_tracking_topic``.

Topics: publishes ``hand_tracking_topic`` (vpp_msgs/HandTracking: header.stamp = arrival time,
source_stamp = the sender's time when carried), ``chunk_topic`` (vpp_msgs/ActionChunk) and
``~/status`` (std_msgs/String, JSON); subscribes ``ee_pose_topic`` (the reference pose of every
chunk) and ``joint_state_topic``.
Services: ``~/clutch`` (std_srvs/SetBool: engage / release), ``~/calibrate`` (std_srvs/Trigger:
re-capture the operator and robot reference poses while engaged).
Parameters: this node's section in config/<robot>.yaml (``teleop_node:``); the XHand joint
limits come from the executor's ``hand.joint_limits`` in the same file (one source).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from geometry_msgs.msg import Pose as PoseMsg
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from vpp_msgs.msg import ActionChunk, HandTracking

from vpp_core.action_space import XHAND_JOINT_NAMES, matrix_to_quat, pose_from_pos_quat
from vpp_ros.chunk_conversion import chunk_to_msg
from vpp_ros.node_main import run_node
from vpp_ros.params import declare_dataclass_parameters, load_node_parameters
from vpp_ros.qos import CHUNK_QOS, SENSOR_QOS, STATUS_QOS
from vpp_ros.time_conversion import seconds_to_stamp
from vpp_teleop.avp_client import AvpClientConfig, HandPose, TrackingSample
from vpp_teleop.runner import TeleopRunner
from vpp_teleop.teleop import TeleopConfig, TeleopCore, TeleopOutput


@dataclass
class TeleopNodeConfig:
    """Node-level parameters (the headset client and the mapping have their own namespaces)."""

    hand_tracking_topic: str = field(default="/hand_tracking", metadata={"help": "vpp_msgs/HandTracking output"})
    chunk_topic: str = field(default="/action_chunk", metadata={"help": "vpp_msgs/ActionChunk output (executor input)"})
    ee_pose_topic: str = field(default="/ee_pose", metadata={"help": "measured end-effector pose input"})
    joint_state_topic: str = field(default="/joint_states", metadata={"help": "robot joint states input"})
    frame_id: str = field(default="link_base", metadata={"help": "robot base frame (chunks' frame_id)"})
    hand_tracking_frame_id: str = field(default="avp_world", metadata={"help": "headset world frame, Z up"})
    robot_config_file: str = field(
        default="", metadata={"help": "YAML with the executor's hand.joint_limits; empty: config/<embodiment>.yaml"})
    executor_node: str = field(default="xhand_executor", metadata={"help": "executor section holding hand.joint_limits"})
    workspace_from_executor: bool = field(
        default=True, metadata={"help": "wrist box = the executor's workspace (else teleop.wrist.workspace_*)"})
    workspace_margin_m: float = field(
        default=0.01, metadata={"help": "shrink the executor's workspace by this for the wrist box [m]"})
    status_period_s: float = field(default=0.5, metadata={"help": "~/status period [s]"})


def _pose_msgs(matrices: np.ndarray, valid: bool) -> list[PoseMsg]:
    """Pose messages for ``(N, 4, 4)`` transforms; identity poses for an untracked hand (its
    transforms are zeros, which have no quaternion)."""
    out = []
    if valid and np.isfinite(matrices).all():
        quats = matrix_to_quat(matrices[:, :3, :3])
        quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
        positions = matrices[:, :3, 3]
    else:
        quats = np.tile([0.0, 0.0, 0.0, 1.0], (len(matrices), 1))
        positions = np.zeros((len(matrices), 3))
    for (x, y, z), (qx, qy, qz, qw) in zip(positions.tolist(), quats.tolist()):
        msg = PoseMsg()
        msg.position.x, msg.position.y, msg.position.z = x, y, z
        msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = qx, qy, qz, qw
        out.append(msg)
    return out


def _fill_hand(msg, hand: HandPose) -> None:
    msg.tracking_valid = bool(hand.valid)
    msg.wrist = _pose_msgs(hand.wrist[None], hand.valid)[0]
    joints = _pose_msgs(hand.joints[:27], hand.valid)
    joints += _pose_msgs(np.tile(np.eye(4), (27 - len(joints), 1, 1)), True)  # 25-joint apps
    msg.joints = joints
    msg.pinch_distance = float(hand.pinch_distance) if math.isfinite(hand.pinch_distance) else 0.0


def hand_tracking_msg(sample: TrackingSample, frame_id: str) -> HandTracking:
    msg = HandTracking()
    msg.header.stamp = seconds_to_stamp(sample.arrival_s)
    msg.header.frame_id = frame_id
    if sample.source_s is not None:
        msg.source_stamp = seconds_to_stamp(sample.source_s)
    msg.sequence_id = int(sample.sequence)
    _fill_hand(msg.left, sample.left)
    _fill_hand(msg.right, sample.right)
    msg.head_valid = bool(np.isfinite(sample.head).all())
    msg.head = _pose_msgs(sample.head[None], msg.head_valid)[0]
    return msg


def executor_workspace_from_config(path: str, executor_node: str, margin_m: float):
    """The executor's ``executor.safety`` workspace box shrunk by ``margin_m``, or None."""
    params = load_node_parameters(path, executor_node)
    low, high = params.get("executor.safety.workspace_min_m"), params.get("executor.safety.workspace_max_m")
    if low is None or high is None:
        return None
    low = tuple(float(v) + margin_m for v in low)
    high = tuple(float(v) - margin_m for v in high)
    return low, high


def joint_limits_from_config(path: str, executor_node: str) -> tuple[float, ...]:
    """Flat (low, high) pairs in XHAND_JOINT_NAMES order from ``hand.joint_limits.<joint>``."""
    params = load_node_parameters(path, executor_node)
    limits: list[float] = []
    for name in XHAND_JOINT_NAMES:
        pair = params.get(f"hand.joint_limits.{name}")
        if pair is None:
            return ()
        limits.extend(float(v) for v in pair)
    return tuple(limits)


class TeleopNode(Node):
    def __init__(self) -> None:
        super().__init__("teleop_node")
        log = self.get_logger()
        self.cfg: TeleopNodeConfig = declare_dataclass_parameters(self, TeleopNodeConfig)
        client_cfg: AvpClientConfig = declare_dataclass_parameters(self, AvpClientConfig, prefix="avp_client.")
        teleop_cfg: TeleopConfig = declare_dataclass_parameters(self, TeleopConfig, prefix="teleop.")
        self._fill_from_robot_config(teleop_cfg)
        self.core = TeleopCore(teleop_cfg, frame_id=self.cfg.frame_id)

        self.tracking_pub = self.create_publisher(HandTracking, self.cfg.hand_tracking_topic, SENSOR_QOS)
        self.chunk_pub = self.create_publisher(ActionChunk, self.cfg.chunk_topic, CHUNK_QOS)
        self.status_pub = self.create_publisher(String, "~/status", STATUS_QOS)
        self.create_subscription(PoseStamped, self.cfg.ee_pose_topic, self._on_pose, SENSOR_QOS)
        self.create_subscription(JointState, self.cfg.joint_state_topic, self._on_joints, SENSOR_QOS)
        self.create_service(SetBool, "~/clutch", self._on_clutch)
        self.create_service(Trigger, "~/calibrate", self._on_calibrate)
        self.create_timer(self.cfg.status_period_s, self._publish_status)

        self._state_lock = threading.Lock()
        self._robot_pose: Optional[np.ndarray] = None
        self._robot_pose_mono = -math.inf
        self._joint_state_mono = -math.inf
        self._last_hold = ""
        self._chunks_published = 0
        self.runner = TeleopRunner(self.core, client_cfg, self._robot_pose_now, self._on_output,
                                   self._on_tracking, logger=_RosLogger(log)).start()
        self.client = self.runner.client
        log.info(f"teleop for {teleop_cfg.embodiment}: {teleop_cfg.drive_hand} hand drives, "
                 f"{teleop_cfg.clutch.gesture_hand} pinch = clutch ({teleop_cfg.clutch.gesture}); chunks "
                 f"{teleop_cfg.chunk_horizon} x {teleop_cfg.chunk_dt_s * 1000:.0f} ms on {self.cfg.chunk_topic}; "
                 f"headset {self.client.address}")

    def _fill_from_robot_config(self, teleop_cfg: TeleopConfig) -> None:
        """Hand joint limits and the workspace box come from the executor's section (one source)."""
        log = self.get_logger()
        path = self.cfg.robot_config_file
        if not path:
            from vpp_ros.graph import default_config_path
            try:
                path = str(default_config_path(teleop_cfg.embodiment))
            except Exception as exc:  # no source tree and no installed vpp_bringup share
                path = f"config/{teleop_cfg.embodiment}.yaml ({type(exc).__name__})"
        wrist = teleop_cfg.wrist
        if self.cfg.workspace_from_executor:
            try:
                box = executor_workspace_from_config(path, self.cfg.executor_node, self.cfg.workspace_margin_m)
            except OSError as exc:
                box = None
                log.error(f"cannot read {path}: {exc}")
            if box is None:
                raise ValueError(f"workspace_from_executor is set but {path} has no {self.cfg.executor_node}"
                                 ".executor.safety workspace: set it false and give teleop.wrist.workspace_*")
            wrist.workspace_min_m, wrist.workspace_max_m = box
            log.info(f"wrist workspace {list(box[0])}..{list(box[1])} (the executor's box in {path} "
                     f"minus {self.cfg.workspace_margin_m} m)")
        if teleop_cfg.embodiment == "xhand" and not teleop_cfg.retargeting.joint_limits:
            try:
                limits = joint_limits_from_config(path, self.cfg.executor_node)
            except OSError as exc:
                log.warning(f"cannot read the robot config for the hand joint limits: {exc}")
                limits = ()
            if limits:
                teleop_cfg.retargeting.joint_limits = limits
                log.info(f"XHand joint limits from {path} ({self.cfg.executor_node}.hand.joint_limits)")
            else:
                log.warning(f"no {self.cfg.executor_node}.hand.joint_limits in {path}: retargeting clamps to "
                            "the URDF limits only (the executor still clamps to its own)")

    # ---------------------------------------------------------------- inputs

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        values = np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w])
        if not np.isfinite(values).all() or abs(np.linalg.norm(values[3:]) - 1.0) > 1e-3:
            return  # never let a malformed pose become a reference
        pose = pose_from_pos_quat(values[:3], values[3:])
        with self._state_lock:
            self._robot_pose, self._robot_pose_mono = pose, time.monotonic()

    def _on_joints(self, msg: JointState) -> None:
        with self._state_lock:
            self._joint_state_mono = time.monotonic()

    def _robot_pose_now(self) -> tuple[Optional[np.ndarray], float]:
        with self._state_lock:
            return self._robot_pose, time.monotonic() - self._robot_pose_mono

    # ---------------------------------------------------------------- outputs (runner's worker thread)

    def _on_output(self, sample: TrackingSample, out: TeleopOutput) -> None:
        log = self.get_logger()
        if out.chunk is not None:
            self.chunk_pub.publish(chunk_to_msg(out.chunk))
            self._chunks_published += 1
        if out.clutch_event is not None:
            log.info(f"clutch {'ENGAGED' if out.clutch_event.engaged else 'RELEASED'} ({out.clutch_event.reason})")
        if out.chunk is None and out.hold_reason != self._last_hold and out.hold_reason != "clutch released":
            log.warning(f"holding: {out.hold_reason}")
        self._last_hold = out.hold_reason

    def _on_tracking(self, samples: list[TrackingSample]) -> None:
        for sample in samples:
            self.tracking_pub.publish(hand_tracking_msg(sample, self.cfg.hand_tracking_frame_id))

    # ---------------------------------------------------------------- services & status

    def _on_clutch(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            with self._state_lock:
                pose_age = time.monotonic() - self._robot_pose_mono
            if pose_age > self.core.config.max_robot_pose_age_s:
                response.success = False
                response.message = (f"not engaging: no fresh robot pose on {self.cfg.ee_pose_topic} "
                                    f"({'never received' if not math.isfinite(pose_age) else f'{pose_age:.2f} s old'})")
                self.get_logger().warning(response.message)
                return response
        self.core.request_clutch(bool(request.data), "service")
        response.success = True
        response.message = (f"clutch {'engage' if request.data else 'release'} requested; applied at the next "
                            f"headset update (headset: {self.client.state.value})")
        return response

    def _on_calibrate(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success = self.core.request_calibration()
        response.message = ("references re-captured at the next headset update" if response.success
                            else "clutch released: engaging captures the references")
        return response

    def _publish_status(self) -> None:
        state = self.client.state
        now = time.monotonic()
        with self._state_lock:
            pose_age, joints_age = now - self._robot_pose_mono, now - self._joint_state_mono
        status = {
            "headset": state.value, "address": self.client.address, "engaged": self.core.engaged,
            "samples": self.client.counters.samples, "samples_superseded": self.runner.samples_superseded,
            "chunks": self._chunks_published, "holding": self._last_hold,
            "robot_pose_age_s": round(pose_age, 3) if math.isfinite(pose_age) else None,
            "joint_state_age_s": round(joints_age, 3) if math.isfinite(joints_age) else None,
            "held": dict(self.core.counters.held),
        }
        self.status_pub.publish(String(data=json.dumps(status)))

    def destroy_node(self) -> None:
        if hasattr(self, "runner"):
            self.runner.close()
        super().destroy_node()


class _RosLogger:
    """Adapts the node's logger to the ``logging.Logger`` methods AvpClient calls."""

    def __init__(self, ros_logger) -> None:
        self._log = ros_logger

    def info(self, message: str) -> None:
        self._log.info(message)

    def warning(self, message: str) -> None:
        self._log.warning(message)

    def error(self, message: str) -> None:
        self._log.error(message)


def main(argv: Optional[list[str]] = None) -> int:
    return run_node(TeleopNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
