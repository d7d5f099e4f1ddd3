"""``/commanded_pose`` and ``/commanded_effector``: what an executor actually sent (contract C1).

Shared by every executor node. :class:`CommandRecorder` wraps the executor's effector and keeps
the last effector command it was given (after the safety filter's limits);
:class:`CommandedPublisher` takes the target pose of each control tick that commanded the arm
(tracking or holding) and publishes both from the node's state timer (50 Hz), stamped with the
executor time of that command when the executor runs on the wall clock (ROS time), else with
the publishing time.
"""

from __future__ import annotations

import threading

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState

from vpp_core.action_space import pose_to_pos_quat
from vpp_hardware.executor.effector import Effector
from vpp_hardware.executor.executor import ExecutorMode, TickResult
from vpp_ros.qos import SENSOR_QOS
from vpp_ros.time_conversion import seconds_to_stamp

__all__ = ["CommandRecorder", "CommandedPublisher"]


class CommandRecorder(Effector):
    """Forwards to ``inner`` (may be None: record only) and remembers the last command."""

    def __init__(self, inner: Effector | None, dim: int) -> None:
        if inner is not None and inner.dim != dim:
            raise ValueError(f"effector consumes {inner.dim} values, expected {dim}")
        self.inner = inner
        self._dim = dim
        self._last: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def last_command(self) -> np.ndarray | None:
        last = self._last
        return None if last is None else last.copy()

    def apply(self, command: np.ndarray) -> None:
        if self.inner is not None:
            self.inner.apply(command)
        self._last = np.asarray(command, dtype=float).reshape(-1).copy()


class CommandedPublisher:
    def __init__(self, node, effector_names: tuple[str, ...], frame_id: str, recorder: CommandRecorder | None,
                 stamp_with_executor_time: bool, pose_topic: str = "/commanded_pose",
                 effector_topic: str = "/commanded_effector") -> None:
        self._node = node
        self._names = list(effector_names)
        self._frame_id = frame_id
        self._recorder = recorder
        self._executor_stamps = stamp_with_executor_time
        self._pose_pub = node.create_publisher(PoseStamped, pose_topic, SENSOR_QOS)
        self._effector_pub = node.create_publisher(JointState, effector_topic, SENSOR_QOS)
        self._lock = threading.Lock()
        self._latest: tuple[float, np.ndarray] | None = None
        self._published_time: float | None = None

    def on_tick(self, result: TickResult) -> None:
        """Control thread: remember the tick's commanded target (tracking or holding)."""
        if result.target_pose is None or result.mode not in (ExecutorMode.TRACKING, ExecutorMode.HOLDING):
            return
        with self._lock:
            self._latest = (result.time_s, result.target_pose)

    def publish(self) -> None:
        """State timer: publish the latest command once (nothing while not commanding)."""
        with self._lock:
            latest = self._latest
        if latest is None or latest[0] == self._published_time:
            return
        self._published_time = latest[0]
        time_s, pose = latest
        stamp = seconds_to_stamp(time_s) if self._executor_stamps else self._node.get_clock().now().to_msg()
        msg = PoseStamped()
        msg.header.stamp = stamp
        msg.header.frame_id = self._frame_id
        position, quat = pose_to_pos_quat(pose)
        (msg.pose.position.x, msg.pose.position.y, msg.pose.position.z) = map(float, position)
        (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
         msg.pose.orientation.w) = map(float, quat)
        self._pose_pub.publish(msg)
        command = self._recorder.last_command if self._recorder is not None else None
        if command is not None and command.size == len(self._names):
            effector = JointState()
            effector.header = msg.header
            effector.name = list(self._names)
            effector.position = [float(v) for v in command]
            self._effector_pub.publish(effector)
