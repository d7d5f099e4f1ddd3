"""When each step of an action chunk runs, and which chunk wins.

Time model (all in one clock, the *executor clock*, see :mod:`.executor`):

* A chunk planned from an observation captured at ``stamp_s`` has ``H`` steps ``dt_s`` apart.
  Step ``i`` is due at ``t_i = stamp_s + latency_offset_s + i * dt_s`` and owns the slot
  ``[t_i, t_i + dt_s)``. ``latency_offset_s`` shifts the whole chunk (e.g. to skip the part the
  policy knows it will always be too late for).
* At time ``now`` inside slot ``i`` the target is step ``i``, or with interpolation the point a
  fraction ``(now - t_i) / dt_s`` of the way from step ``i`` to step ``i + 1``; so step ``i`` is
  commanded exactly at ``t_i``. After the last slot the chunk is exhausted and
  :meth:`ChunkScheduler.target_at` returns ``None`` (the executor then holds).
* Steps whose slot has already ended when their chunk arrives are dropped and counted
  (``dropped_late_steps``); a chunk with no step left is rejected as late.
* A chunk replaces the older one when its ``(stamp_s, seq)`` is larger; an older or duplicate key
  is rejected as out of order. Until the new chunk's first live step is due, the older one keeps
  running. With ``blend_steps = k > 0`` the first ``k`` slots of the new chunk are blended with
  where the old chunk's plan would have been (weight of the new plan rising linearly from
  ``1/(k+1)`` to 1), removing the jump between two plans. Only the old chunk's own plan is used
  for blending, not a blend it was still doing itself.

The scheduler never converts actions to poses: it returns :class:`ScheduledTarget` step
references and weights; the executor resolves them with the action space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TimedChunk", "StepRef", "ScheduledTarget", "ScheduleDecision", "ChunkScheduler"]

# Float slack so a step due exactly "now" is not judged late by rounding.
_TIME_EPSILON_S = 1e-9


@dataclass(frozen=True, eq=False)
class TimedChunk:
    """An action chunk with its timing.

    Attributes:
        stamp_s: capture time of the observation the chunk was planned from (executor clock).
        dt_s: time between consecutive steps [s].
        actions: ``(H, A)`` actions (layout: :mod:`vpp_core.action_space`).
        reference_pose: ``(4, 4)`` end-effector pose at that observation; the deltas' origin.
        seq: sender's sequence number; orders chunks with the same stamp.
    """

    stamp_s: float
    dt_s: float
    actions: np.ndarray
    reference_pose: np.ndarray
    seq: int = 0

    def __post_init__(self) -> None:
        # Private read-only copies: a sender reusing its buffers cannot change a queued chunk.
        for name in ("actions", "reference_pose"):
            array = np.array(getattr(self, name), dtype=np.float64, copy=True)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, "stamp_s", float(self.stamp_s))
        object.__setattr__(self, "dt_s", float(self.dt_s))
        object.__setattr__(self, "seq", int(self.seq))

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0]) if self.actions.ndim >= 1 else 0

    @property
    def order_key(self) -> tuple[float, int]:
        return (self.stamp_s, self.seq)


@dataclass(frozen=True)
class StepRef:
    """Position inside one chunk: step ``index``, ``fraction`` of the way to ``next_index``."""

    chunk: TimedChunk
    index: int
    fraction: float = 0.0

    @property
    def next_index(self) -> int:
        return min(self.index + 1, self.chunk.horizon - 1)


@dataclass(frozen=True)
class ScheduledTarget:
    """What to command now: ``step`` of the newest chunk, possibly blended with the old plan.

    The commanded target is ``interpolate(resolve(blend_from), resolve(step), new_weight)``;
    without a blend ``blend_from`` is None and ``new_weight`` is 1.
    """

    step: StepRef
    blend_from: StepRef | None = None
    new_weight: float = 1.0


@dataclass(frozen=True)
class ScheduleDecision:
    """Outcome of :meth:`ChunkScheduler.submit`."""

    accepted: bool
    reason: str
    dropped_steps: int = 0
    first_live_step: int = 0


@dataclass
class SchedulerCounters:
    accepted_chunks: int = 0
    rejected_out_of_order: int = 0
    rejected_late_chunks: int = 0
    dropped_late_steps: int = 0
    superseded_steps: int = 0
    skipped_steps: int = 0


class ChunkScheduler:
    """Decides which chunk step is due at a given time. Not thread-safe; the executor locks."""

    def __init__(self, latency_offset_s: float = 0.0, blend_steps: int = 0, interpolate: bool = True):
        if not math.isfinite(latency_offset_s):
            raise ValueError("latency_offset_s must be finite")
        if blend_steps < 0:
            raise ValueError("blend_steps must be >= 0")
        self.latency_offset_s = float(latency_offset_s)
        self.blend_steps = int(blend_steps)
        self.interpolate = bool(interpolate)
        self.counters = SchedulerCounters()
        self._current: TimedChunk | None = None
        self._current_first_step = 0
        self._previous: TimedChunk | None = None
        self._last_key: tuple[float, int] | None = None
        self._last_returned: StepRef | None = None  # for counting skipped steps
        self._exhausted = False

    # ---------------------------------------------------------------- time helpers

    def step_time(self, chunk: TimedChunk, index: int) -> float:
        """Time step ``index`` of ``chunk`` is due."""
        return chunk.stamp_s + self.latency_offset_s + index * chunk.dt_s

    def end_time(self, chunk: TimedChunk) -> float:
        """End of the chunk's last slot."""
        return self.step_time(chunk, chunk.horizon)

    def _slot(self, chunk: TimedChunk, now: float) -> tuple[int, float]:
        """Slot index (may be <0 or >=H) and the fraction through it at ``now``."""
        position = (now - self.step_time(chunk, 0)) / chunk.dt_s
        index = math.floor(position + _TIME_EPSILON_S)
        return index, min(max(position - index, 0.0), 1.0)

    def _ref(self, chunk: TimedChunk, now: float) -> StepRef:
        """Step reference of ``chunk`` at ``now``, clamped to its first/last step."""
        index, fraction = self._slot(chunk, now)
        if index < 0:
            return StepRef(chunk, 0, 0.0)
        if index >= chunk.horizon - 1:
            return StepRef(chunk, chunk.horizon - 1, 0.0)
        return StepRef(chunk, index, fraction if self.interpolate else 0.0)

    # ---------------------------------------------------------------- state

    @property
    def active_chunk(self) -> TimedChunk | None:
        """The newest accepted chunk (may already be exhausted)."""
        return self._current

    @property
    def referenced_chunks(self) -> tuple[TimedChunk, ...]:
        """Chunks a future :meth:`lookup` may still refer to."""
        return tuple(c for c in (self._current, self._previous) if c is not None)

    def clear(self) -> None:
        """Forget queued chunks (e.g. after a fault); ordering history is kept."""
        if self._current is not None and not self._exhausted:
            self.counters.superseded_steps += max(0, self._current.horizon - self._current_first_step)
        self._current = None
        self._previous = None
        self._exhausted = False

    # ---------------------------------------------------------------- submit

    def submit(self, chunk: TimedChunk, now: float) -> ScheduleDecision:
        """Queue ``chunk`` at time ``now``; see the module docstring for the rules."""
        if chunk.horizon < 1 or not (chunk.dt_s > 0.0 and math.isfinite(chunk.dt_s)):
            return ScheduleDecision(False, f"chunk seq={chunk.seq} has no steps or a bad dt {chunk.dt_s}")
        if self._last_key is not None and chunk.order_key <= self._last_key:
            self.counters.rejected_out_of_order += 1
            return ScheduleDecision(
                False,
                f"chunk (stamp={chunk.stamp_s:.6f}, seq={chunk.seq}) is not newer than the last "
                f"accepted (stamp={self._last_key[0]:.6f}, seq={self._last_key[1]})",
            )
        slot, _ = self._slot(chunk, now)
        first_live = max(slot, 0)
        if first_live >= chunk.horizon:
            self.counters.rejected_late_chunks += 1
            self.counters.dropped_late_steps += chunk.horizon
            late_by = now - self.end_time(chunk)
            return ScheduleDecision(
                False,
                f"chunk seq={chunk.seq} is late: arrived {late_by * 1e3:.1f} ms after its last step ended; "
                f"all {chunk.horizon} steps dropped",
                dropped_steps=chunk.horizon,
            )
        self._retire_previous(now)
        if self._current is not None:
            new_start = self.step_time(chunk, first_live)
            remaining_old = self._remaining_steps(self._current, new_start)
            self.counters.superseded_steps += remaining_old
            keep_old = self.blend_steps > 0 or now < self.step_time(chunk, 0)
            self._previous = self._current if keep_old else None
        self._current = chunk
        self._current_first_step = first_live
        self._last_key = chunk.order_key
        self._exhausted = False
        self.counters.accepted_chunks += 1
        self.counters.dropped_late_steps += first_live
        reason = "accepted"
        if first_live:
            reason = f"accepted; {first_live} late step(s) dropped"
        return ScheduleDecision(True, reason, dropped_steps=first_live, first_live_step=first_live)

    def remaining_steps(self, chunk: TimedChunk, now: float) -> int:
        """Steps of ``chunk`` not yet due at ``now``."""
        return self._remaining_steps(chunk, now)

    def _remaining_steps(self, chunk: TimedChunk, from_time: float) -> int:
        slot, _ = self._slot(chunk, from_time)
        return int(min(max(chunk.horizon - max(slot, 0), 0), chunk.horizon))

    def _blend_end_time(self) -> float:
        assert self._current is not None
        return self.step_time(self._current, self._current_first_step + self.blend_steps)

    def _retire_previous(self, now: float) -> None:
        if self._previous is None or self._current is None:
            return
        start = self.step_time(self._current, self._current_first_step)
        if now >= start and (self.blend_steps == 0 or now >= self._blend_end_time()):
            self._previous = None

    # ---------------------------------------------------------------- lookup

    def lookup(self, now: float) -> ScheduledTarget | None:
        """The target due at ``now`` without changing any state (safe to call for look-ahead)."""
        current = self._current
        if current is None:
            return None
        start = self.step_time(current, self._current_first_step)
        if now < start - _TIME_EPSILON_S:
            # New chunk not due yet: the older one, if any, keeps running unblended.
            previous = self._previous
            if previous is None or now >= self.end_time(previous):
                return None
            return ScheduledTarget(self._ref(previous, now))
        if now >= self.end_time(current) - _TIME_EPSILON_S:
            return None
        step = self._ref(current, now)
        if self._previous is None or self.blend_steps == 0:
            return ScheduledTarget(step)
        steps_since_switch = (now - start) / current.dt_s
        if not self.interpolate:
            steps_since_switch = math.floor(steps_since_switch + _TIME_EPSILON_S)
        weight = (steps_since_switch + 1.0) / (self.blend_steps + 1.0)
        if weight >= 1.0:
            return ScheduledTarget(step)
        return ScheduledTarget(step, self._ref(self._previous, now), float(weight))

    def target_at(self, now: float) -> ScheduledTarget | None:
        """The target due at ``now``; also retires finished chunks and counts skipped steps."""
        self._retire_previous(now)
        target = self.lookup(now)
        if target is None:
            if self._current is not None and now >= self.end_time(self._current) - _TIME_EPSILON_S:
                self._exhausted = True
            return None
        last = self._last_returned
        if last is not None and last.chunk is target.step.chunk:
            self.counters.skipped_steps += max(0, target.step.index - last.index - 1)
        self._last_returned = target.step
        return target

    @property
    def exhausted(self) -> bool:
        """True once the newest chunk's last slot has passed (as seen by :meth:`target_at`)."""
        return self._exhausted
