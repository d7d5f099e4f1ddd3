"""Watchdog: hold when commands stop, refuse plans from stale observations, notice a dead arm.

Three independent timers:

* **command timeout** (executor clock): no valid step executed for ``command_timeout_s`` ->
  :meth:`Watchdog.command_expired` is True and the executor holds the last commanded pose.
* **observation age** (executor clock): a chunk planned from an observation older than
  ``max_observation_age_s`` at arrival is refused; the world has moved on since.
* **arm state** (host monotonic clock, because the executor clock may *be* the arm's clock):
  the arm's own timestamp not advancing for ``state_timeout_s`` means the controller stopped
  talking; the executor holds and reports a fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["WatchdogConfig", "Watchdog"]

# Float slack so "exactly timeout_s later" counts as expired despite rounding.
_TIME_EPSILON_S = 1e-9


@dataclass
class WatchdogConfig:
    command_timeout_s: float = 0.2
    max_observation_age_s: float = 1.0
    state_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("command_timeout_s", "max_observation_age_s", "state_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"watchdog {name} must be a positive finite number, got {value}")


class Watchdog:
    """Timers for the three conditions above. Not thread-safe; the executor locks."""

    def __init__(self, config: WatchdogConfig):
        self.config = config
        self._last_command_time: float | None = None
        self._last_state_time: float | None = None
        self._state_changed_monotonic: float | None = None

    def reset(self, now: float) -> None:
        """Start the command timer at ``now`` (the executor starts in hold)."""
        self._last_command_time = now

    def feed(self, now: float) -> None:
        """A valid step was commanded at ``now``."""
        self._last_command_time = now

    def time_since_command(self, now: float) -> float:
        if self._last_command_time is None:
            return math.inf
        return max(0.0, now - self._last_command_time)

    def command_expired(self, now: float) -> bool:
        return self.time_since_command(now) >= self.config.command_timeout_s - _TIME_EPSILON_S

    def observation_age_violation(self, stamp_s: float, now: float) -> str | None:
        """Reason text when an observation stamped ``stamp_s`` is too old (or from the future)."""
        age = now - stamp_s
        if age > self.config.max_observation_age_s:
            return (f"observation is {age * 1e3:.0f} ms old (limit "
                    f"{self.config.max_observation_age_s * 1e3:.0f} ms)")
        if age < -self.config.max_observation_age_s:
            # A stamp far in the future means the sender uses another clock: every step would
            # be scheduled wrongly.
            return (f"observation stamp is {-age * 1e3:.0f} ms in the future; sender and "
                    "executor clocks disagree")
        return None

    def observe_state(self, arm_time_s: float, monotonic_now: float) -> None:
        """Record the arm's timestamp as read at host time ``monotonic_now``."""
        if self._last_state_time is None or arm_time_s != self._last_state_time:
            self._last_state_time = arm_time_s
            self._state_changed_monotonic = monotonic_now

    def state_stale(self, monotonic_now: float) -> bool:
        """True when the arm's timestamp has not advanced for ``state_timeout_s``."""
        if self._state_changed_monotonic is None:
            return False
        return monotonic_now - self._state_changed_monotonic >= self.config.state_timeout_s
