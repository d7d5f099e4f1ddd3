"""Teleoperation core: one headset sample + the robot's measured pose -> one short action chunk.

The chunk goes to the same executor interface the policy uses (``vpp_msgs/ActionChunk`` on
``/action_chunk``), so the executor's validation, safety limits and watchdog apply unchanged:

* ``stamp`` = the headset sample's arrival time, ``reference_pose`` = the robot's measured pose
  (the newest ``/ee_pose``, at most ``max_robot_pose_age_s`` old), actions = the wrist target as a
  delta from that pose (:func:`vpp_core.action_space.poses_to_actions`) + the 12 retargeted XHand
  joints (or the Panda gripper), repeated over ``chunk_horizon`` steps ``chunk_dt_s`` apart.
* One chunk per headset update (~90 Hz). Each replaces the previous one in the executor (newer
  stamp); with the executor's ``blend_steps = k`` the new target enters at weight ``1/(k+1)``
  against the previous chunk's own target, a lag of under one headset period (no accumulation,
  since blending uses the old chunk's plan, not its blend). The horizon (3 x 50 ms) is the hold
  budget: when updates stop (tracking lost, stale stream, clutch released, node dead) nothing new
  is sent and the executor runs out of steps after at most 150 ms and holds; its own watchdog
  (``command_timeout_s``) is the second line.

Holding rules: no chunk while the clutch is released, the driving hand is not tracked or its
skeleton is unusable, the sample is older than ``stale_after_s``, or the robot pose is missing or
old. After such a gap the wrist smoothing restarts from the robot's measured pose and the finger
filter is reset, so tracking that comes back does not jump. No ROS import here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from vpp_core.action_space import get_action_space, is_valid_pose, pose_to_pos_quat, poses_to_actions
from vpp_ros.chunk_conversion import ChunkData, Pose
from vpp_teleop.avp_client import TrackingSample
from vpp_teleop.keypoints import InvalidHandError
from vpp_teleop.retargeting import HandRetargeter, RetargetingSettings
from vpp_teleop.wrist_mapping import Clutch, ClutchConfig, ClutchEvent, WristMapper, WristMappingConfig

__all__ = ["TeleopConfig", "TeleopCore", "TeleopOutput", "PandaGripperConfig"]


@dataclass
class PandaGripperConfig:
    """Panda path: the driving hand's pinch opens/closes the gripper (``gripper.`` parameters)."""

    #: Pinch distance at or below which the gripper command is 0 (closed) [m].
    closed_pinch_m: float = 0.02
    #: Pinch distance at or above which the gripper command is 1 (open) [m].
    open_pinch_m: float = 0.08


@dataclass
class TeleopConfig:
    """Everything the teleop core needs (the teleop node's parameters, minus its topics)."""

    #: Robot driven: "xhand" (XArm + XHand) or "panda".
    embodiment: str = "xhand"
    #: Operator hand driving the robot (wrist -> end effector, fingers -> hand).
    drive_hand: str = "right"
    #: Steps per chunk and their spacing [s]: horizon x dt is how long the robot keeps the last
    #: target after updates stop, before the executor holds on its own.
    chunk_horizon: int = 3
    chunk_dt_s: float = 0.05
    #: Samples older than this when processed are not sent [s].
    stale_after_s: float = 0.15
    #: The robot's measured pose must be at most this old to serve as the reference [s].
    max_robot_pose_age_s: float = 0.2
    wrist: WristMappingConfig = field(default_factory=WristMappingConfig)
    clutch: ClutchConfig = field(default_factory=ClutchConfig)
    retargeting: RetargetingSettings = field(default_factory=RetargetingSettings)
    gripper: PandaGripperConfig = field(default_factory=PandaGripperConfig)

    def validate(self) -> None:
        if self.embodiment not in ("xhand", "panda"):
            raise ValueError(f"embodiment must be xhand or panda, got {self.embodiment!r}")
        if self.drive_hand not in ("right", "left"):
            raise ValueError(f"drive_hand must be right or left, got {self.drive_hand!r}")
        if self.drive_hand == self.clutch.gesture_hand and self.clutch.gesture != "off":
            raise ValueError("clutch.gesture_hand must differ from drive_hand (grasping would toggle the clutch)")
        if self.chunk_horizon < 1 or not (0.01 <= self.chunk_dt_s <= 1.0):
            raise ValueError("chunk_horizon must be >= 1 and chunk_dt_s in [0.01, 1] s")
        for name in ("stale_after_s", "max_robot_pose_age_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


@dataclass
class TeleopOutput:
    """Result of processing one sample."""

    chunk: Optional[ChunkData]
    #: Why no chunk was produced ("" when one was).
    hold_reason: str = ""
    clutch_event: Optional[ClutchEvent] = None
    effector: Optional[np.ndarray] = None
    target_pose: Optional[np.ndarray] = None
    processing_s: float = 0.0


@dataclass
class TeleopCounters:
    samples: int = 0
    chunks: int = 0
    held: dict = field(default_factory=dict)


class TeleopCore:
    """Stateful mapping from samples to chunks. Not thread-safe: one worker calls :meth:`process`."""

    def __init__(self, config: TeleopConfig, frame_id: str = "") -> None:
        config.validate()
        self.config = config
        self.frame_id = frame_id
        self.space = get_action_space(config.embodiment)
        self.clutch = Clutch(config.clutch)
        self.wrist = WristMapper(config.wrist)
        self.retargeter: Optional[HandRetargeter] = None
        if config.embodiment == "xhand":
            settings = config.retargeting
            if settings.hand != config.drive_hand:
                settings = RetargetingSettings(settings.config_file, config.drive_hand, settings.joint_limits)
            self.retargeter = HandRetargeter(settings)
        self.counters = TeleopCounters()
        self._sequence = 0
        self._in_gap = False
        self._recalibrate = False
        self._pending_event: Optional[ClutchEvent] = None
        self.last_effector: Optional[np.ndarray] = None

    @property
    def engaged(self) -> bool:
        return self.clutch.engaged and self.wrist.engaged

    def request_clutch(self, engaged: bool, reason: str = "service") -> None:
        self.clutch.request(engaged, reason)

    def request_calibration(self) -> bool:
        """Re-capture both references at the next usable sample; False when released."""
        if not self.engaged:
            return False
        self._recalibrate = True
        return True

    def _clutch_update(self, sample: TrackingSample) -> Optional[ClutchEvent]:
        gesture = sample.hand(self.config.clutch.gesture_hand)
        return self.clutch.update(gesture.pinch_distance if gesture.valid else None)

    def observe_clutch(self, sample: TrackingSample) -> None:
        """Feed a sample that will not be mapped (superseded) to the clutch gesture only."""
        event = self._clutch_update(sample)
        if event is not None:
            self._pending_event = event

    def _hold(self, reason: str, event: Optional[ClutchEvent], started: float) -> TeleopOutput:
        self.counters.held[reason.split(":")[0]] = self.counters.held.get(reason.split(":")[0], 0) + 1
        if self.engaged:
            self._in_gap = True
        return TeleopOutput(None, reason, event, processing_s=time.perf_counter() - started)

    def process(self, sample: TrackingSample, robot_pose: Optional[np.ndarray], robot_pose_age_s: float,
                now_mono: Optional[float] = None) -> TeleopOutput:
        """One headset sample -> a chunk (or the reason for holding)."""
        started = time.perf_counter()
        self.counters.samples += 1
        cfg = self.config
        now_mono = time.monotonic() if now_mono is None else now_mono
        event = self._clutch_update(sample) or self._pending_event
        self._pending_event = None
        drive = sample.hand(cfg.drive_hand)
        robot_ok = (robot_pose is not None and robot_pose_age_s <= cfg.max_robot_pose_age_s
                    and is_valid_pose(robot_pose, 1e-3))

        if not self.clutch.engaged and self.wrist.engaged:
            self._release()
        if self.clutch.engaged and (not self.wrist.engaged or self._recalibrate):
            # Engaging (or re-calibrating) needs the operator's wrist and the robot's pose now.
            if not drive.valid or not robot_ok:
                why = "the driving hand is not tracked" if not drive.valid else "no fresh robot pose"
                self.clutch.release(f"engage refused: {why}")
                self._release()
                return self._hold(f"engage refused: {why}",
                                  ClutchEvent(False, f"engage refused: {why}"), started)
            self.wrist.engage(drive.wrist, robot_pose)
            self._recalibrate = False
            self._in_gap = False
            if self.retargeter is not None:
                self.retargeter.reset()
        if not self.engaged:
            return self._hold("clutch released", event, started)
        if now_mono - sample.arrival_mono_s > cfg.stale_after_s:
            return self._hold(f"stale sample: {now_mono - sample.arrival_mono_s:.3f} s old", event, started)
        if not drive.valid:
            return self._hold(f"{cfg.drive_hand} hand not tracked", event, started)
        if not robot_ok:
            age = "none" if robot_pose is None else f"{robot_pose_age_s:.3f} s old"
            return self._hold(f"robot pose unusable ({age})", event, started)

        if self._in_gap:
            self.wrist.restart_smoothing(robot_pose)
            if self.retargeter is not None:
                self.retargeter.reset()
            self._in_gap = False
        try:
            target = self.wrist.update(drive.wrist)
            if self.retargeter is not None:
                effector = self.retargeter.retarget(drive.joints)
            else:
                g = cfg.gripper
                span = max(g.open_pinch_m - g.closed_pinch_m, 1e-6)
                effector = np.array([min(1.0, max(0.0, (drive.pinch_distance - g.closed_pinch_m) / span))])
        except (InvalidHandError, ValueError, RuntimeError) as exc:
            return self._hold(f"unusable hand: {exc}", event, started)

        horizon = cfg.chunk_horizon
        actions = poses_to_actions(robot_pose, np.repeat(target[None], horizon, axis=0),
                                   extra=np.repeat(effector[None], horizon, axis=0), action_space=self.space)
        position, quat = pose_to_pos_quat(robot_pose)
        self._sequence += 1
        chunk = ChunkData(
            actions=actions.astype(np.float32), embodiment=cfg.embodiment, action_space=self.space.name,
            dt=cfg.chunk_dt_s, stamp=sample.arrival_s, sequence_id=self._sequence, frame_id=self.frame_id,
            reference_pose=Pose(tuple(map(float, position)), tuple(map(float, quat))),
            planning_latency=0.0, instruction="")
        self.counters.chunks += 1
        self.last_effector = effector
        return TeleopOutput(chunk, "", event, effector=effector, target_pose=target,
                            processing_s=time.perf_counter() - started)

    def _release(self) -> None:
        self.wrist.release()
        self._in_gap = False
        self._recalibrate = False
        if self.retargeter is not None:
            self.retargeter.reset()

    def note_gap(self) -> None:
        """Tell the core that updates stopped (stale stream): the next chunk restarts smoothing."""
        if self.engaged:
            self._in_gap = True
