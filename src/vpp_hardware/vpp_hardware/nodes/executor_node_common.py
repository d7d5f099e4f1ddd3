"""What every action-chunk executor node does the same way, whatever the robot.

:class:`ChunkExecutorNodeMixin` turns ``vpp_msgs/ActionChunk`` messages into executor submissions
(rejections logged with the reason and counted), serves ``~/hold`` and ``~/recover`` and fills
``vpp_msgs/ExecutorStatus``. The node class provides ``chunk_executor`` (a
:class:`~vpp_hardware.executor.executor.ChunkExecutor`), ``exec_cfg`` (its config), ``cfg.frame_id``,
``status_pub``, the counters ``_chunks_received`` / ``_last_rejection``, the stop event ``_stop`` and
``_on_tick``, ``_last_mode``, ``commanded``, ``pose_pub``, ``joint_pub``, ``_loop`` (the control thread) and ``_disconnect_devices``; connecting the robot and
publishing its state stay in the robot's own node.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from vpp_msgs.msg import ActionChunk
from vpp_msgs.msg import ExecutorStatus as ExecutorStatusMsg

from vpp_core.action_space import pose_from_pos_quat, pose_to_pos_quat
from vpp_hardware.executor.chunk_schedule import TimedChunk
from vpp_hardware.executor.executor import ExecutorMode, TickResult
from vpp_ros.chunk_conversion import ChunkValidationError, msg_to_chunk

__all__ = ["ChunkExecutorNodeMixin", "MODE_TO_STATE"]

MODE_TO_STATE = {
    ExecutorMode.STOPPED: ExecutorStatusMsg.STATE_IDLE,
    ExecutorMode.HOLDING: ExecutorStatusMsg.STATE_HOLDING,
    ExecutorMode.TRACKING: ExecutorStatusMsg.STATE_EXECUTING,
    ExecutorMode.FAULT: ExecutorStatusMsg.STATE_ERROR,
}


class ChunkExecutorNodeMixin:
    """Chunk input, hold/recover services and status of an executor node (mix into an rclpy Node)."""

    def _control_loop(self) -> None:
        """Body of the node's control thread: the executor's fixed-rate loop until ``_stop`` is set."""
        try:
            stats = self.chunk_executor.run(self._stop, on_tick=self._on_tick)
            periods = stats.periods_s
            if periods.size:
                self.get_logger().info(
                    f"control loop ended: {stats.ticks} ticks, {stats.overruns} overruns, period p50 "
                    f"{np.percentile(periods, 50) * 1e3:.2f} ms p99 {np.percentile(periods, 99) * 1e3:.2f} ms")
        except Exception as exc:  # noqa: BLE001 - a dead control loop must take the node down visibly
            self.get_logger().fatal(f"control loop crashed: {type(exc).__name__}: {exc}; shutting the node down")
            self.context.try_shutdown()

    def _log_mode_change(self, result: TickResult) -> bool:
        """Log the executor's mode when it changes (holding/fault as warnings); True if it changed."""
        if result.mode is self._last_mode:
            return False
        self._last_mode = result.mode
        # rclpy insists that one call site always logs at one severity.
        if result.mode in (ExecutorMode.HOLDING, ExecutorMode.FAULT):
            self.get_logger().warning(f"executor {result.mode.value}: {result.reason}")
        else:
            self.get_logger().info(f"executor {result.mode.value}: {result.reason}")
        return True

    def _publish_robot_state(self, arm_joint_names, effector_names=(), effector_positions=()) -> None:
        """Publish the commanded topics, the latest tick's end-effector pose and the joint states.

        The joint states hold the arm joints from the same tick, then the effector joints the node
        read (fingers or hand; empty while it has no reading), with zero velocity.
        """
        self.commanded.publish()
        state = self.chunk_executor.last_state
        if state is None:
            return
        # The pose is the one read by the latest control tick (at most one period old).
        position, quat = pose_to_pos_quat(state.ee_pose)
        pose = PoseStamped()
        pose.header.stamp = self.get_clock().now().to_msg()
        pose.header.frame_id = self.cfg.frame_id
        (pose.pose.position.x, pose.pose.position.y, pose.pose.position.z) = map(float, position)
        (pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z,
         pose.pose.orientation.w) = map(float, quat)
        self.pose_pub.publish(pose)
        joints = JointState()
        joints.header = pose.header
        joints.name = list(arm_joint_names) + list(effector_names)
        joints.position = [float(v) for v in state.joint_positions] + [float(v) for v in effector_positions]
        joints.velocity = [float(v) for v in state.joint_velocities] + [0.0] * len(effector_names)
        self.joint_pub.publish(joints)

    def _on_chunk(self, msg: ActionChunk) -> None:
        self._chunks_received += 1
        try:
            chunk = msg_to_chunk(msg, expected_embodiment=self.exec_cfg.action_space)
        except ChunkValidationError as exc:
            self._reject(msg.sequence_id, str(exc))
            return
        position, quat = chunk.reference_pose.as_arrays()
        timed = TimedChunk(stamp_s=chunk.stamp, dt_s=chunk.dt, actions=chunk.actions,
                           reference_pose=pose_from_pos_quat(position, quat), seq=chunk.sequence_id)
        result = self.chunk_executor.submit(timed)
        if not result.accepted:
            self._reject(msg.sequence_id, result.reason)
        elif result.dropped_steps:
            self.get_logger().debug(f"chunk {msg.sequence_id}: {result.dropped_steps} late steps dropped")

    def _reject(self, seq: int, reason: str) -> None:
        self._last_rejection = f"chunk {seq}: {reason}"
        self.get_logger().error(f"rejected {self._last_rejection} (robot holds / keeps its current plan)")

    def _on_hold(self, request, response):
        self.chunk_executor.hold_now("hold requested over ~/hold")
        response.success, response.message = True, "holding the current pose"
        return response

    def _on_recover(self, request, response):
        ok, message = self.chunk_executor.recover()
        response.success, response.message = ok, message
        if ok:
            self.get_logger().info(f"recover: {message}")
        else:
            self.get_logger().error(f"recover: {message}")
        return response

    def _publish_status(self) -> None:
        status = self.chunk_executor.status()
        c = status.counters
        msg = ExecutorStatusMsg()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.cfg.frame_id
        msg.embodiment = self.exec_cfg.action_space
        msg.state = MODE_TO_STATE[status.mode]
        msg.reason = status.reason
        msg.active_chunk_sequence_id = status.active_chunk_seq or 0
        msg.steps_remaining = status.steps_remaining
        msg.chunks_received = self._chunks_received
        # Refused here (malformed message) or by the executor: everything received but not accepted.
        msg.chunks_rejected = self._chunks_received - c.accepted_chunks
        msg.steps_executed = c.executed_steps
        msg.steps_dropped_late = c.dropped_late_steps
        msg.steps_limited = c.limited_steps
        msg.holds = c.holds
        msg.recoveries = c.recoveries
        msg.last_rejection_reason = self._last_rejection
        self.status_pub.publish(msg)

    def _disconnect_devices(self) -> None:
        """Release the robot's devices (arm, gripper or hand); each node names its own."""
        raise NotImplementedError

    def destroy_node(self) -> bool:
        # Also called by rclpy's shutdown on a node whose __init__ failed half-way.
        if not hasattr(self, "_stop"):
            return super().destroy_node()
        self._stop.set()
        if self._loop is not None:
            self._loop.join(timeout=5)
        try:
            if hasattr(self, "chunk_executor"):
                self.chunk_executor.stop()
        finally:
            self._disconnect_devices()
        return super().destroy_node()
