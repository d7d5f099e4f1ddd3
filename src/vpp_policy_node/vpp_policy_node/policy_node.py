"""ROS 2 policy node: camera images + EE pose + /task_language -> vpp_msgs/ActionChunk.

A thin adapter over :mod:`vpp_policy_node.planning` (when/whether to plan) and
:class:`vpp_core.model.engine.PolicyEngine` (the model). Inference runs on the planning thread,
never in a subscription callback.

    ros2 run vpp_policy_node policy_node --ros-args --params-file config/panda.yaml
    ros2 topic pub --once /task_language std_msgs/msg/String "data: 'open the drawer'"
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from vpp_msgs.msg import ActionChunk, PolicyStatus

from vpp_policy_node.planning import (
    ObservationBuffer,
    PlannedChunk,
    PlannerStatus,
    PlanningLoop,
    PolicyNodeConfig,
    check_instruction,
    resolve_proprio_joint_names,
)
from vpp_ros.chunk_conversion import ChunkData, ChunkValidationError, Pose, chunk_to_msg
from vpp_ros.image_conversion import ImageConversionError, image_msg_to_rgb
from vpp_ros.node_main import run_node
from vpp_ros.params import declare_dataclass_parameters
from vpp_ros.qos import CHUNK_QOS, COMMAND_QOS, SENSOR_QOS, STATUS_QOS
from vpp_ros.time_conversion import seconds_to_stamp, stamp_to_seconds

_STATE_CODES = {
    "idle": PolicyStatus.STATE_IDLE,
    "planning": PolicyStatus.STATE_PLANNING,
    "waiting": PolicyStatus.STATE_WAITING_FOR_OBSERVATION,
    "error": PolicyStatus.STATE_ERROR,
}


def _resolve_device_dtype(cfg: PolicyNodeConfig) -> tuple[str, str]:
    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bf16" if device.startswith("cuda") else "fp32"
    return device, dtype


def apply_cpu_settings(cfg: PolicyNodeConfig, log) -> None:
    """Lower this process's CPU priority and cap torch's threads as configured (before the model loads)."""
    if cfg.process_nice:
        log.info(f"niceness raised by {cfg.process_nice}: planning yields the CPU to the control loop")
        os.nice(cfg.process_nice)
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(cfg.torch_threads)


def load_planner(cfg: PolicyNodeConfig, log):
    """The inference engine for ``cfg``: the checkpoint's, or a tiny random policy with a warning."""
    from vpp_core.model.engine import PolicyEngine

    device, dtype = _resolve_device_dtype(cfg)
    options = dict(device=device, dtype=dtype, compile=cfg.compile, seed=cfg.seed,
                   resize_images=cfg.resize_images, sampling_steps=cfg.sampling_steps or None,
                   samples_per_plan=cfg.samples_per_plan)
    if cfg.checkpoint:
        log.info(f"loading checkpoint {cfg.checkpoint} on {device} ({dtype})")
        engine = PolicyEngine.from_checkpoint(cfg.checkpoint, **options)
    else:
        from vpp_core.model.normalization import PercentileNormalizer
        from vpp_core.model.presets import build_policy

        log.warning(
            f"NO CHECKPOINT GIVEN: using a tiny RANDOM '{cfg.fallback_preset}' policy. The robot will move "
            "(within fallback_action_low/high and the executor's limits), but not sensibly. "
            "Pass checkpoint:=/path/to/checkpoint for a trained policy."
        )
        policy = build_policy(cfg.fallback_preset, seed=cfg.seed)
        if len(cfg.fallback_action_low) != policy.action_dim or len(cfg.fallback_action_high) != policy.action_dim:
            raise ValueError(f"fallback_action_low/high need {policy.action_dim} values for {cfg.fallback_preset!r}")
        # A random network's outputs span [-1, 1]; these ranges decide how far that moves the robot.
        normalizers = {"actions": PercentileNormalizer(low=list(cfg.fallback_action_low),
                                                       high=list(cfg.fallback_action_high))}
        if policy.proprio_dim:
            normalizers["proprio"] = PercentileNormalizer(low=[-3.2] * policy.proprio_dim,
                                                          high=[3.2] * policy.proprio_dim)
        engine = PolicyEngine(policy, normalizers, **options)
    views = tuple(engine.policy.view_names)
    if tuple(cfg.view_names) != views:
        raise ValueError(f"node view_names {tuple(cfg.view_names)} do not match the policy's views {views}")
    return engine


class PolicyNode(Node):
    def __init__(self, planner=None) -> None:
        super().__init__("policy_node")
        self.cfg: PolicyNodeConfig = declare_dataclass_parameters(self, PolicyNodeConfig)
        cfg = self.cfg
        if planner is None:
            apply_cpu_settings(cfg, self.get_logger())
        self.planner = planner if planner is not None else load_planner(cfg, self.get_logger())
        self.horizon = int(self.planner.policy.horizon)
        self.action_dim = int(self.planner.policy.action_dim)
        self.proprio_dim = int(self.planner.policy.proprio_dim)
        trained_on = tuple((getattr(self.planner, "metadata", None) or {}).get("proprio_names") or ())
        self.proprio_joint_names = resolve_proprio_joint_names(cfg.proprio_joint_names, self.proprio_dim, trained_on)
        self.buffer = ObservationBuffer(cfg.view_names)
        self._bad_input_counts: dict[str, int] = {}

        self.chunk_pub = self.create_publisher(ActionChunk, cfg.chunk_topic, CHUNK_QOS)
        self.status_pub = self.create_publisher(PolicyStatus, "~/status", STATUS_QOS)
        for view, topic in zip(cfg.view_names, cfg.image_topics):
            self.create_subscription(Image, topic, lambda msg, v=view: self._on_image(v, msg), SENSOR_QOS)
        self.create_subscription(PoseStamped, cfg.ee_pose_topic, self._on_pose, SENSOR_QOS)
        if self.proprio_dim:
            self.create_subscription(JointState, cfg.joint_state_topic, self._on_joints, SENSOR_QOS)
        self.create_subscription(String, cfg.instruction_topic, self._on_instruction, COMMAND_QOS)
        self.hold_client = self.create_client(Trigger, cfg.executor_hold_service)

        self._logged_state, self._logged_at = "", 0.0
        self.loop = PlanningLoop(cfg, self.planner, self.buffer, clock=self._now, publish=self._publish_chunk,
                                 on_state=self._on_state, need_proprio=bool(self.proprio_dim))
        self.loop.start()
        self.create_timer(cfg.status_period, self._publish_status)
        self.get_logger().info(
            f"ready: views {list(cfg.view_names)} from {list(cfg.image_topics)}, chunks {self.horizon} x "
            f"{self.action_dim} every ~{cfg.replan_after_steps * cfg.action_dt:.2f} s on {cfg.chunk_topic}; "
            f"send an instruction on {cfg.instruction_topic}"
        )

    # -------------------------------------------------------------- inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _warn_bad_input(self, key: str, text: str) -> None:
        count = self._bad_input_counts.get(key, 0) + 1
        self._bad_input_counts[key] = count
        if count <= 3 or count % 100 == 0:
            self.get_logger().warning(f"{text} (ignored; {count} so far)")

    def _on_image(self, view: str, msg: Image) -> None:
        try:
            rgb = image_msg_to_rgb(msg)
        except ImageConversionError as exc:
            self._warn_bad_input(f"image-{view}", f"bad image on view {view!r}: {exc}")
            return
        self.buffer.add_frame(view, stamp_to_seconds(msg.header.stamp), rgb)

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        position, quat = np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])
        if not (np.isfinite(position).all() and np.isfinite(quat).all()):
            self._warn_bad_input("pose", "end-effector pose with NaN/Inf")
            return
        self.buffer.add_pose(stamp_to_seconds(msg.header.stamp), position, quat)

    def _on_joints(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        try:
            values = np.array([msg.position[index[n]] for n in self.proprio_joint_names], dtype=np.float32)
        except (KeyError, IndexError):
            self._warn_bad_input("joints", f"joint state lacks some of {list(self.proprio_joint_names)}")
            return
        if not np.isfinite(values).all():
            self._warn_bad_input("joints", "joint state with NaN/Inf")
            return
        self.buffer.add_proprio(stamp_to_seconds(msg.header.stamp), values)

    def _on_instruction(self, msg: String) -> None:
        decision = check_instruction(msg.data, self.cfg.max_instruction_chars)
        if decision.kind == "reject":
            self.get_logger().error(f"instruction refused: {decision.reason}; still running "
                                    f"{self.loop.status.instruction or 'nothing'!r}")
            return
        if decision.kind == "stop":
            self.get_logger().info("empty instruction: stopping; the executor holds the current pose")
            self.loop.set_instruction(None)
            if self.hold_client.service_is_ready():
                self.hold_client.call_async(Trigger.Request())
            else:
                self.get_logger().warning(f"hold service {self.cfg.executor_hold_service} not available; "
                                          "the executor's watchdog will hold once the last chunk ends")
            return
        self.get_logger().info(f"new instruction: {decision.text!r}")
        self.loop.set_instruction(decision.text)

    # -------------------------------------------------------------- outputs
    def _publish_chunk(self, planned: PlannedChunk) -> None:
        obs = planned.observation
        try:
            msg = chunk_to_msg(ChunkData(
                actions=planned.actions, embodiment=self.cfg.embodiment, action_space=self.cfg.embodiment,
                dt=self.cfg.action_dt, stamp=obs.stamp, sequence_id=planned.sequence_id, frame_id=self.cfg.frame_id,
                reference_pose=Pose(tuple(obs.reference_position), tuple(obs.reference_quaternion)),
                planning_latency=planned.planning_latency, instruction=planned.instruction,
            ))
        except ChunkValidationError as exc:
            # A policy that outputs NaN must not move the robot: drop the chunk and say so.
            self.get_logger().error(f"planned chunk {planned.sequence_id} is invalid and was not published: {exc}")
            return
        self.chunk_pub.publish(msg)

    def _on_state(self, status: PlannerStatus) -> None:
        # A waiting reason carries numbers that change every check: log a new state at once, the
        # same state again at most every 2 s. (rclpy wants one severity per call site.)
        now = time.monotonic()
        if status.state != self._logged_state or now - self._logged_at > 2.0:
            self._logged_state, self._logged_at = status.state, now
            if status.state in ("waiting", "error"):
                self.get_logger().warning(f"policy {status.state}: {status.reason}")
            else:
                self.get_logger().info(f"policy {status.state}: {status.reason}")
        self._publish_status()

    def _publish_status(self) -> None:
        status = self.loop.status
        msg = PolicyStatus()
        now = self._now()
        msg.header.stamp = seconds_to_stamp(now)
        msg.state = _STATE_CODES[status.state]
        msg.instruction = status.instruction
        msg.reason = status.reason
        msg.chunks_published = status.chunks_published
        msg.last_planning_latency = float(status.last_planning_latency)
        self.status_pub.publish(msg)

    def destroy_node(self) -> bool:
        self.loop.shutdown()
        return super().destroy_node()


def main(argv: Optional[list[str]] = None) -> int:
    return run_node(PolicyNode, argv)


if __name__ == "__main__":
    sys.exit(main())
