"""Embodiment-agnostic action-chunk executor: chunks in, safe Cartesian targets out.

Pipeline of one control tick (:meth:`ChunkExecutor.tick`)::

    arm.read_state -> watchdog (arm alive?) -> scheduler.target_at(now)
        -> actions_to_poses (cached per chunk) -> interpolation / blending -> velocity feed-forward
        -> SafetyFilter -> arm.stream_target + effector.apply      (or arm.hold on any failure)

Clock
-----
Every time in here is on one *executor clock*, and chunk stamps (the observation capture times)
must be on the same clock. ``ChunkExecutorConfig.clock`` picks it:

* ``"arm"``: the arm controller's own time (``robot.state.time`` for Franka), read each tick.
  Use it in simulation: franky-sim runs slower (stock CLI ~0.91x) or faster (``realtime=False``,
  ~2.6x) than real time, and only robot time stays in step with the simulated robot; observations
  rendered from the simulator must then be stamped with robot time too.
* ``"wall"``: ``time.time()``, the clock ROS ``header.stamp`` uses on real hardware (keep the
  camera and robot PCs synchronised, e.g. chrony/PTP).
* ``"monotonic"``: ``time.monotonic()``, for single-process setups.
A callable passed as ``clock=`` overrides the setting.

Threads
-------
The executor starts no threads. :meth:`submit` may be called from another thread (a ROS
subscription callback) than :meth:`tick`/:meth:`run` (the control thread): one lock guards the
shared state, and :meth:`submit` never touches the arm. Everything that talks to the arm happens
inside :meth:`tick`.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from vpp_core.action_space import (
    InvalidActionError,
    actions_to_poses,
    get_action_space,
    interpolate_poses,
    is_valid_pose,
    matrix_to_rotvec,
    pose_distance,
)
from vpp_hardware.arms.arm import Arm, ArmError, ArmState
from vpp_hardware.executor.chunk_schedule import ChunkScheduler, ScheduledTarget, StepRef, TimedChunk
from vpp_core.config import dataclass_from_dict, dataclass_to_dict
from vpp_hardware.executor.effector import Effector, GripperEffectorConfig
from vpp_hardware.executor.safety import SafetyFilter, SafetyLimits, SafetyVerdict
from vpp_hardware.executor.watchdog import Watchdog, WatchdogConfig

__all__ = [
    "ChunkExecutorConfig",
    "ChunkExecutor",
    "ExecutorMode",
    "ExecutorCounters",
    "ExecutorStatus",
    "SubmitResult",
    "TickResult",
    "LoopStats",
]

logger = logging.getLogger(__name__)

_CLOCKS = ("arm", "wall", "monotonic")


@dataclass
class ChunkExecutorConfig:
    """Every executor parameter, with defaults; :meth:`from_dict` fills it from YAML."""

    #: Name in :data:`vpp_core.action_space.ACTION_SPACES`.
    action_space: str = "panda"
    #: Executor clock: "arm", "wall" or "monotonic" (see the module docstring).
    clock: str = "arm"
    #: Control loop rate of :meth:`ChunkExecutor.run` [Hz].
    rate_hz: float = 100.0
    #: Added to every step's due time (see :mod:`.chunk_schedule`).
    latency_offset_s: float = 0.0
    #: Steps over which a new chunk is blended with the old plan; 0 = switch at once.
    blend_steps: int = 0
    #: Interpolate between chunk steps at the control rate (smoother impedance tracking).
    interpolate: bool = True
    #: Send the planned velocity as feed-forward to the arm.
    velocity_feedforward: bool = True
    #: Chunk sanity limits checked on submit.
    max_horizon: int = 256
    min_step_dt_s: float = 0.005
    max_step_dt_s: float = 1.0
    #: A chunk's reference pose further than this from the measured pose is refused (a reference
    #: from another robot, frame or a corrupted message).
    max_reference_deviation_m: float = 0.15
    max_reference_deviation_rad: float = 0.75
    #: Refuse a whole chunk when any of its steps leaves the workspace by more than
    #: ``safety.workspace_clamp_margin_m`` (nothing of it moves).
    reject_chunks_leaving_workspace: bool = True
    #: Arm faults without a successfully executed chunk step in between before the executor
    #: latches FAULT (a fault that comes back after every recovery must not loop forever).
    max_consecutive_faults: int = 3
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    gripper: GripperEffectorConfig = field(default_factory=GripperEffectorConfig)

    def __post_init__(self) -> None:
        get_action_space(self.action_space)
        if self.clock not in _CLOCKS:
            raise ValueError(f"clock must be one of {_CLOCKS}, got {self.clock!r}")
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"rate_hz must be positive, got {self.rate_hz}")
        if not 0 < self.min_step_dt_s <= self.max_step_dt_s:
            raise ValueError("need 0 < min_step_dt_s <= max_step_dt_s")
        if self.max_horizon < 1 or self.blend_steps < 0 or self.max_consecutive_faults < 1:
            raise ValueError("max_horizon and max_consecutive_faults must be >= 1, blend_steps >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ChunkExecutorConfig":
        """Build from a (YAML) dict; unknown keys raise, missing keys keep defaults."""
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclass_to_dict(self)


class ExecutorMode(enum.Enum):
    STOPPED = "stopped"    # not started; chunks refused, arm untouched
    HOLDING = "holding"    # keeping the last commanded pose (no chunk, timeout or rejection)
    TRACKING = "tracking"  # streaming chunk targets
    FAULT = "fault"        # arm failed and could not be recovered; reset_fault() to retry


@dataclass
class ExecutorCounters:
    ticks: int = 0
    accepted_chunks: int = 0
    rejected_chunks: int = 0
    executed_steps: int = 0
    dropped_late_steps: int = 0
    skipped_steps: int = 0
    superseded_steps: int = 0
    rejected_steps: int = 0
    limited_steps: int = 0
    holds: int = 0
    faults: int = 0
    recoveries: int = 0


@dataclass(frozen=True)
class SubmitResult:
    accepted: bool
    reason: str
    dropped_steps: int = 0


@dataclass(frozen=True, eq=False)
class TickResult:
    """What one tick did. ``commanded`` is True when a chunk target was streamed."""

    time_s: float
    mode: ExecutorMode
    commanded: bool
    reason: str
    target_pose: np.ndarray | None = None
    chunk_seq: int | None = None
    step_index: int | None = None


@dataclass(frozen=True, eq=False)
class ExecutorStatus:
    """Snapshot for publishing (e.g. a ROS status/diagnostics message)."""

    mode: ExecutorMode
    reason: str
    time_s: float
    action_space: str
    active_chunk_seq: int | None
    active_step: int | None
    steps_remaining: int
    time_since_command_s: float
    counters: ExecutorCounters
    commanded_pose: np.ndarray | None
    measured_pose: np.ndarray | None

    def as_dict(self) -> dict[str, Any]:
        """Plain types only (lists, floats, strings)."""
        return {
            "mode": self.mode.value,
            "reason": self.reason,
            "time_s": self.time_s,
            "action_space": self.action_space,
            "active_chunk_seq": self.active_chunk_seq,
            "active_step": self.active_step,
            "steps_remaining": self.steps_remaining,
            "time_since_command_s": self.time_since_command_s,
            "counters": asdict(self.counters),
            "commanded_pose": None if self.commanded_pose is None else self.commanded_pose.tolist(),
            "measured_pose": None if self.measured_pose is None else self.measured_pose.tolist(),
        }


@dataclass(frozen=True, eq=False)
class LoopStats:
    """Timing of :meth:`ChunkExecutor.run`.

    ``periods_s``: time between consecutive tick starts (the command period);
    ``tick_durations_s``: time spent inside each :meth:`ChunkExecutor.tick`;
    ``overruns``: ticks that ended after the next tick was due.
    """

    ticks: int
    overruns: int
    periods_s: np.ndarray
    tick_durations_s: np.ndarray


@dataclass(frozen=True, eq=False)
class _ResolvedChunk:
    chunk: TimedChunk
    poses: np.ndarray      # (H, 4, 4) absolute targets
    effector: np.ndarray   # (H, E)


class ChunkExecutor:
    """Runs action chunks on an :class:`~vpp_hardware.arms.arm.Arm` (+ optional effector)."""

    def __init__(
        self,
        config: ChunkExecutorConfig,
        arm: Arm,
        effector: Effector | None = None,
        clock: Callable[[], float] | None = None,
    ):
        self.config = config
        self.arm = arm
        self.effector = effector
        self.action_space = get_action_space(config.action_space)
        if effector is not None and effector.dim != self.action_space.effector_dim:
            raise ValueError(
                f"effector consumes {effector.dim} values, action space {self.action_space.name!r} "
                f"has {self.action_space.effector_dim}"
            )
        self.safety = SafetyFilter(config.safety, self.action_space.effector_bounds,
                                   effector_names=self.action_space.effector_names)
        if self.safety.effector_dim != self.action_space.effector_dim:
            raise ValueError(
                f"safety.effector_bounds must give {self.action_space.effector_dim} (low, high) pairs for "
                f"{self.action_space.name!r} ({', '.join(self.action_space.effector_names)}), "
                f"got {self.safety.effector_dim}"
            )
        self.scheduler = ChunkScheduler(config.latency_offset_s, config.blend_steps, config.interpolate)
        self.watchdog = Watchdog(config.watchdog)
        self.counters = ExecutorCounters()
        self._clock = clock
        self._lock = threading.RLock()
        self._mode = ExecutorMode.STOPPED
        self._reason = "not started"
        self._resolved: dict[int, _ResolvedChunk] = {}
        self._last_state: ArmState | None = None
        self._last_tick_time: float | None = None
        self._last_time: float | None = None
        self._last_step: StepRef | None = None
        self._consecutive_faults = 0

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """Current executor-clock time (stamp observations with this clock).

        With the ``"arm"`` clock this is the arm time read by the latest tick (at most one tick
        old), so calling it never touches the arm from a foreign thread.
        """
        if self._clock is not None:
            return float(self._clock())
        if self.config.clock == "wall":
            return time.time()
        if self.config.clock == "monotonic":
            return time.monotonic()
        with self._lock:
            if self._last_time is None:
                raise RuntimeError("the arm clock is only known after start()")
            return self._last_time

    def _time_from_state(self, state: ArmState) -> float:
        if self._clock is None and self.config.clock == "arm":
            return state.time_s
        return self.now()

    # ------------------------------------------------------------------ lifecycle

    @property
    def mode(self) -> ExecutorMode:
        return self._mode

    def start(self) -> None:
        """Begin holding the current pose; chunks are accepted from now on. Arm must be connected."""
        with self._lock:
            state = self.arm.read_state()
            self._last_state = state
            self._last_time = self._time_from_state(state)
            self.watchdog.observe_state(state.time_s, time.monotonic())
            self.watchdog.reset(self._last_time)
            self.arm.hold()
            self._set_mode(ExecutorMode.HOLDING, "started; holding the current pose")
            self._consecutive_faults = 0

    def stop(self) -> None:
        """Hold the arm and refuse further chunks (the arm stays connected)."""
        with self._lock:
            self.scheduler.clear()
            self._resolved.clear()
            try:
                self.arm.hold()
            except ArmError as error:
                logger.warning("hold on stop failed: %s", error)
            self._mode = ExecutorMode.STOPPED
            self._reason = "stopped"

    def reset_fault(self) -> None:
        """Leave FAULT after the cause was fixed: recover the arm and hold."""
        with self._lock:
            if self._mode is not ExecutorMode.FAULT:
                return
            self._consecutive_faults = 0
            if self.arm.recover_errors():
                self.counters.recoveries += 1
                self.scheduler.clear()
                self._resolved.clear()
                self._set_mode(ExecutorMode.HOLDING, "fault reset; holding")
            else:
                self._reason = "fault reset failed: arm did not recover"

    def hold_now(self, reason: str) -> None:
        """Drop every queued step and hold from the next tick on (safe from any thread).

        Does not touch the arm itself (the driver belongs to the control thread): the next tick
        finds no target and holds the last commanded pose.
        """
        with self._lock:
            self.scheduler.clear()
            self._resolved.clear()
            if self._mode is ExecutorMode.TRACKING:
                self._set_mode(ExecutorMode.HOLDING, reason)

    def recover(self) -> tuple[bool, str]:
        """Clear controller errors (and a latched FAULT) through the arm driver's bounded recovery.

        Returns (success, message for a person). Serialised with :meth:`tick` by the executor lock.
        """
        with self._lock:
            was_fault = self._mode is ExecutorMode.FAULT
            try:
                ok = self.arm.recover_errors()
            except ArmError as error:
                return False, f"recovery raised: {error}"
            if not ok:
                return False, "the arm did not recover (driver retry limit reached); check the robot"
            self.counters.recoveries += 1
            self._consecutive_faults = 0
            if was_fault:
                self.scheduler.clear()
                self._resolved.clear()
                self._set_mode(ExecutorMode.HOLDING, "fault cleared by recovery; holding")
                return True, "fault cleared; holding the current pose"
            return True, "controller errors cleared"

    @property
    def last_state(self) -> ArmState | None:
        """The arm state read by the latest tick (None before :meth:`start`)."""
        with self._lock:
            return self._last_state

    def _set_mode(self, mode: ExecutorMode, reason: str) -> None:
        if mode is not self._mode:
            if mode is ExecutorMode.HOLDING:
                self.counters.holds += 1
            log = logger.warning if mode is ExecutorMode.FAULT else logger.info
            log("executor %s -> %s: %s", self._mode.value, mode.value, reason)
        self._mode = mode
        self._reason = reason

    # ------------------------------------------------------------------ submit

    def submit(self, chunk: TimedChunk, now: float | None = None) -> SubmitResult:
        """Validate and queue a chunk. Never moves the arm; never raises for bad chunks."""
        with self._lock:
            result = self._submit_locked(chunk, now)
            if result.accepted:
                self.counters.accepted_chunks += 1
            else:
                self.counters.rejected_chunks += 1
                logger.info("chunk seq=%s rejected: %s", getattr(chunk, "seq", "?"), result.reason)
            self._sync_scheduler_counters()
            return result

    def _submit_locked(self, chunk: TimedChunk, now: float | None) -> SubmitResult:
        if self._mode is ExecutorMode.STOPPED:
            return SubmitResult(False, "executor not started")
        if self._mode is ExecutorMode.FAULT:
            return SubmitResult(False, f"executor in fault: {self._reason}")
        if not isinstance(chunk, TimedChunk):
            return SubmitResult(False, f"expected a TimedChunk, got {type(chunk).__name__}")
        try:
            actions = self.action_space.validate_actions(chunk.actions)
        except InvalidActionError as error:
            return SubmitResult(False, str(error))
        config = self.config
        if actions.shape[0] > config.max_horizon:
            return SubmitResult(False, f"horizon {actions.shape[0]} > max_horizon {config.max_horizon}")
        if not (math.isfinite(chunk.dt_s) and config.min_step_dt_s <= chunk.dt_s <= config.max_step_dt_s):
            return SubmitResult(
                False, f"step dt {chunk.dt_s} s outside [{config.min_step_dt_s}, {config.max_step_dt_s}]"
            )
        if not math.isfinite(chunk.stamp_s):
            return SubmitResult(False, f"stamp {chunk.stamp_s} is not finite")
        if chunk.reference_pose.shape != (4, 4) or not is_valid_pose(chunk.reference_pose, tolerance=1e-4):
            return SubmitResult(False, "reference pose is not a finite 4x4 rigid transform")
        if now is None:
            now = self.now()
        stale = self.watchdog.observation_age_violation(chunk.stamp_s, now)
        if stale is not None:
            return SubmitResult(False, stale)
        if self._last_state is not None:
            distance, angle = pose_distance(chunk.reference_pose, self._last_state.ee_pose)
            if distance > config.max_reference_deviation_m or angle > config.max_reference_deviation_rad:
                return SubmitResult(
                    False,
                    f"reference pose is {distance * 1e3:.0f} mm / {math.degrees(angle):.1f} deg from the "
                    f"measured pose (limits {config.max_reference_deviation_m * 1e3:.0f} mm / "
                    f"{math.degrees(config.max_reference_deviation_rad):.1f} deg)",
                )
        poses, effector = actions_to_poses(chunk.reference_pose, actions)
        if config.reject_chunks_leaving_workspace:
            for index, pose in enumerate(poses):
                violation = self.safety.workspace_violation(pose[:3, 3])
                if violation is not None:
                    return SubmitResult(False, f"step {index}: {violation}")
        decision = self.scheduler.submit(chunk, now)
        if not decision.accepted:
            return SubmitResult(False, decision.reason, decision.dropped_steps)
        self._resolved[id(chunk)] = _ResolvedChunk(chunk, poses, effector)
        live = {id(c) for c in self.scheduler.referenced_chunks}
        for key in [k for k in self._resolved if k not in live]:
            del self._resolved[key]
        return SubmitResult(True, decision.reason, decision.dropped_steps)

    def _sync_scheduler_counters(self) -> None:
        scheduler_counters = self.scheduler.counters
        self.counters.dropped_late_steps = scheduler_counters.dropped_late_steps
        self.counters.skipped_steps = scheduler_counters.skipped_steps
        self.counters.superseded_steps = scheduler_counters.superseded_steps

    # ------------------------------------------------------------------ target resolution

    def _resolve_step(self, step: StepRef) -> tuple[np.ndarray, np.ndarray]:
        resolved = self._resolved[id(step.chunk)]
        pose, effector = resolved.poses[step.index], resolved.effector[step.index]
        if step.fraction > 0.0 and step.next_index != step.index:
            pose = interpolate_poses(pose, resolved.poses[step.next_index], step.fraction)
            effector = (1.0 - step.fraction) * effector + step.fraction * resolved.effector[step.next_index]
        return pose, effector

    def _resolve(self, target: ScheduledTarget) -> tuple[np.ndarray, np.ndarray]:
        pose, effector = self._resolve_step(target.step)
        if target.blend_from is not None:
            old_pose, old_effector = self._resolve_step(target.blend_from)
            weight = target.new_weight
            pose = interpolate_poses(old_pose, pose, weight)
            effector = (1.0 - weight) * old_effector + weight * effector
        return pose, effector

    def _feedforward_velocity(self, pose: np.ndarray, now: float) -> np.ndarray:
        """Planned twist at ``now`` by a forward difference over one control period."""
        horizon_s = 1.0 / self.config.rate_hz
        ahead = self.scheduler.lookup(now + horizon_s)
        if ahead is None:
            return np.zeros(6)
        next_pose, _ = self._resolve(ahead)
        linear = (next_pose[:3, 3] - pose[:3, 3]) / horizon_s
        angular = matrix_to_rotvec(next_pose[:3, :3] @ pose[:3, :3].T) / horizon_s
        return np.concatenate([linear, angular])

    # ------------------------------------------------------------------ tick

    def tick(self, now: float | None = None) -> TickResult:
        """Run one control step at executor time ``now`` (read from the clock when None)."""
        with self._lock:
            self.counters.ticks += 1
            result = self._tick_locked(now)
            self._sync_scheduler_counters()
            return result

    def _tick_locked(self, now: float | None) -> TickResult:
        if self._mode is ExecutorMode.STOPPED:
            return TickResult(self._last_time or 0.0, self._mode, False, "executor not started")
        monotonic_now = time.monotonic()
        try:
            state = self.arm.read_state()
        except ArmError as error:
            return self._arm_fault(f"state read failed: {error}", now)
        self._last_state = state
        if now is None:
            now = self._time_from_state(state)
        self._last_time = now
        self.watchdog.observe_state(state.time_s, monotonic_now)
        if self.watchdog.state_stale(monotonic_now):
            return self._arm_fault(
                f"arm state time stuck at {state.time_s:.3f} s for >= "
                f"{self.config.watchdog.state_timeout_s * 1e3:.0f} ms", now)
        if self._mode is ExecutorMode.FAULT:
            return TickResult(now, self._mode, False, self._reason)
        if state.has_errors or not state.in_control:
            return self._arm_fault("arm reports errors" if state.has_errors else "arm controller not in control", now)

        if self._last_tick_time is not None and now <= self._last_tick_time:
            # No new arm packet since the last tick (the arm clock only moves with the arm):
            # nothing is due that was not due before, and the controller keeps the last target.
            return TickResult(now, self._mode, False, "clock did not advance; last target kept",
                              self.arm.last_commanded_pose)
        elapsed = (now - self._last_tick_time) if self._last_tick_time is not None else 1.0 / self.config.rate_hz
        self._last_tick_time = now
        target = self.scheduler.target_at(now)
        if target is None:
            return self._hold(now, self._idle_reason(now))

        pose, effector = self._resolve(target)
        velocity = self._feedforward_velocity(pose, now) if self.config.velocity_feedforward else None
        previous = self.arm.last_commanded_pose
        if previous is None:
            previous = state.ee_pose
        decision = self.safety.check(pose, effector, previous, max(elapsed, 0.0), velocity)
        step = target.step
        if not decision.allowed:
            self.counters.rejected_steps += 1
            return self._hold(now, f"step {step.index} of chunk seq={step.chunk.seq} rejected: {decision.reason}",
                              rejected=True)
        try:
            self.arm.stream_target(decision.pose, decision.velocity)
            if self.effector is not None and decision.effector is not None and decision.effector.size:
                self.effector.apply(decision.effector)
        except ArmError as error:
            return self._arm_fault(f"command failed: {error}", now)
        self._consecutive_faults = 0
        self.watchdog.feed(now)
        if decision.verdict is SafetyVerdict.LIMITED:
            self.counters.limited_steps += 1
        last = self._last_step
        if last is None or last.chunk is not step.chunk or last.index != step.index:
            self.counters.executed_steps += 1
        self._last_step = step
        reason = "tracking" if decision.verdict is SafetyVerdict.ACCEPTED else decision.reason
        self._set_mode(ExecutorMode.TRACKING, reason)
        return TickResult(now, self._mode, True, reason, decision.pose, step.chunk.seq, step.index)

    def _idle_reason(self, now: float) -> str:
        if self.scheduler.active_chunk is None:
            return "no chunk received"
        if self.scheduler.exhausted:
            return f"chunk seq={self.scheduler.active_chunk.seq} finished"
        return f"waiting for chunk seq={self.scheduler.active_chunk.seq} to start"

    def _hold(self, now: float, reason: str, rejected: bool = False) -> TickResult:
        """Keep the last commanded pose.

        A rejected step enters HOLDING at once. Without a target (no chunk, chunk finished) the
        arm holds as well, but the mode only changes to HOLDING once the watchdog's command
        timeout has passed, so short gaps between chunks do not count as holds.
        """
        try:
            self.arm.hold()
        except ArmError as error:
            return self._arm_fault(f"hold failed: {error}", now)
        if rejected:
            self._set_mode(ExecutorMode.HOLDING, reason)
        elif self.watchdog.command_expired(now):
            reason = f"{reason}; no valid step for {self.watchdog.time_since_command(now) * 1e3:.0f} ms"
            if self._mode is not ExecutorMode.HOLDING:
                self._set_mode(ExecutorMode.HOLDING, reason)
        return TickResult(now, self._mode, False, reason, self.arm.last_commanded_pose)

    def _arm_fault(self, reason: str, now: float | None) -> TickResult:
        self.counters.faults += 1
        self._consecutive_faults += 1
        time_s = now if now is not None else (self._last_time or 0.0)
        if self._mode is ExecutorMode.FAULT:
            return TickResult(time_s, self._mode, False, self._reason)
        if self._consecutive_faults > self.config.max_consecutive_faults:
            self.scheduler.clear()
            self._resolved.clear()
            self._set_mode(ExecutorMode.FAULT, f"{reason} ({self._consecutive_faults} faults in a row)")
            return TickResult(time_s, self._mode, False, self._reason)
        logger.warning("arm fault: %s; recovering", reason)
        try:
            recovered = self.arm.recover_errors()
        except ArmError as error:
            recovered = False
            reason = f"{reason}; recovery raised {error}"
        if recovered:
            self.counters.recoveries += 1
            # Restarted controllers hold the measured pose; the next tick continues from there
            # under the step limits.
            self._set_mode(ExecutorMode.HOLDING, f"recovered from: {reason}")
        else:
            self.scheduler.clear()
            self._resolved.clear()
            self._set_mode(ExecutorMode.FAULT, f"{reason}; recovery failed")
        return TickResult(time_s, self._mode, False, self._reason)

    # ------------------------------------------------------------------ loop

    def run(
        self,
        stop_event: threading.Event,
        on_tick: Callable[[TickResult], None] | None = None,
        max_ticks: int | None = None,
        period_history: int = 100_000,
    ) -> LoopStats:
        """Call :meth:`tick` at ``config.rate_hz`` until ``stop_event`` is set.

        Paced on the host's monotonic clock with absolute deadlines (no drift); a tick that
        overruns its slot is counted and the schedule re-anchored instead of bursting to catch
        up. Runs in the calling thread. Holds the arm on exit.
        """
        if self._mode is ExecutorMode.STOPPED:
            self.start()
        period = 1.0 / self.config.rate_hz
        periods: deque[float] = deque(maxlen=period_history)
        durations: deque[float] = deque(maxlen=period_history)
        ticks = overruns = 0
        deadline = time.monotonic()
        previous_start: float | None = None
        try:
            while not stop_event.is_set() and (max_ticks is None or ticks < max_ticks):
                start = time.monotonic()
                if previous_start is not None:
                    periods.append(start - previous_start)
                previous_start = start
                result = self.tick()
                durations.append(time.monotonic() - start)
                ticks += 1
                if on_tick is not None:
                    on_tick(result)
                deadline += period
                delay = deadline - time.monotonic()
                if delay > 0.0:
                    stop_event.wait(delay)
                else:
                    overruns += 1
                    if delay < -period:
                        deadline = time.monotonic()
        finally:
            with self._lock:
                if self._mode not in (ExecutorMode.STOPPED, ExecutorMode.FAULT):
                    try:
                        self.arm.hold()
                    except ArmError as error:
                        logger.warning("hold on loop exit failed: %s", error)
        return LoopStats(ticks, overruns, np.asarray(periods, dtype=float), np.asarray(durations, dtype=float))

    # ------------------------------------------------------------------ status

    def status(self) -> ExecutorStatus:
        with self._lock:
            active = self.scheduler.active_chunk
            now = self._last_time if self._last_time is not None else 0.0
            return ExecutorStatus(
                mode=self._mode,
                reason=self._reason,
                time_s=now,
                action_space=self.action_space.name,
                active_chunk_seq=None if active is None else active.seq,
                active_step=None if self._last_step is None else self._last_step.index,
                steps_remaining=0 if active is None else self.scheduler.remaining_steps(active, now),
                time_since_command_s=self.watchdog.time_since_command(now),
                counters=ExecutorCounters(**asdict(self.counters)),
                commanded_pose=self.arm.last_commanded_pose,
                measured_pose=None if self._last_state is None else self._last_state.ee_pose.copy(),
            )
