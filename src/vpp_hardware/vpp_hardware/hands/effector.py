"""Executor effector for a hand: joint-limit clamping, then non-blocking sends.

``apply`` (called from the executor's control tick) clamps the 12 joint targets into the
configured limits, logs which joints were clamped (at most once per ``log_period_s``, with a
count of the suppressed lines), stores the target and returns. A sender thread passes the newest
stored target to :meth:`Hand.command_positions` (a bus write for the real hand): targets the hand
could not take in time are superseded, never queued. A failed send is reported as an
:class:`ArmError` by the next ``apply``, which makes the executor hold and latch a fault like
an arm error.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from vpp_hardware.arms.arm import ArmError
from vpp_hardware.executor.effector import Effector
from vpp_hardware.hands.hand import Hand, XHandJointLimits

__all__ = ["HandEffector"]

logger = logging.getLogger(__name__)

#: Excess over a joint limit [rad] treated as rounding, not as an out-of-limit command.
_ROUNDING_SLACK = 1e-6


class HandEffector(Effector):
    def __init__(self, hand: Hand, limits: XHandJointLimits, log_period_s: float = 1.0) -> None:
        self.hand = hand
        self.limits = limits
        self._low, self._high = limits.arrays()
        if len(hand.joint_names) != self._low.size:
            raise ValueError(f"hand has {len(hand.joint_names)} joints, limits give {self._low.size}")
        self.log_period_s = log_period_s
        self._names = limits.names
        self._condition = threading.Condition()
        self._pending: np.ndarray | None = None
        self._last_command: np.ndarray | None = None
        self._error: str | None = None
        self._stop = False
        self._last_log_s = -float("inf")
        self._suppressed_logs = 0
        self.clamped_commands = 0
        self.commands_sent = 0
        self._thread = threading.Thread(target=self._send_loop, name="hand-sender", daemon=True)
        self._thread.start()

    @property
    def dim(self) -> int:
        return int(self._low.size)

    @property
    def last_command(self) -> np.ndarray | None:
        """The last (clamped) target handed to the sender, or None."""
        with self._condition:
            return None if self._last_command is None else self._last_command.copy()

    def clamp(self, command: np.ndarray) -> np.ndarray:
        """Clamp to the joint limits, logging the joints that were outside (rate-limited)."""
        clamped = np.clip(command, self._low, self._high)
        # Targets that leave the limits only by float32 rounding (a sender's 1.919 arrives as
        # 1.9190000295) are clamped silently: a warning there would only be noise.
        outside = np.flatnonzero(np.abs(clamped - command) > _ROUNDING_SLACK)
        if outside.size:
            self.clamped_commands += 1
            now = time.monotonic()
            if now - self._last_log_s >= self.log_period_s:
                details = ", ".join(
                    f"{self._names[i]}={command[i]:.3f} rad -> {clamped[i]:.3f} "
                    f"(limit [{self._low[i]:.3f}, {self._high[i]:.3f}])" for i in outside)
                suppressed = f" ({self._suppressed_logs} similar lines suppressed)" if self._suppressed_logs else ""
                logger.warning("hand target clamped to joint limits: %s%s", details, suppressed)
                self._last_log_s = now
                self._suppressed_logs = 0
            else:
                self._suppressed_logs += 1
        return clamped

    def apply(self, command: np.ndarray) -> None:
        command = np.asarray(command, dtype=float).reshape(-1)
        if command.shape != (self.dim,) or not np.all(np.isfinite(command)):
            raise ArmError(f"hand command must be {self.dim} finite values, got {command}")
        with self._condition:
            if self._error is not None:
                error, self._error = self._error, None
                raise ArmError(f"hand: {error}")
        clamped = self.clamp(command)
        with self._condition:
            self._pending = clamped
            self._last_command = clamped
            self._condition.notify()

    def _send_loop(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._stop:
                    self._condition.wait()
                if self._stop:
                    return
                target, self._pending = self._pending, None
            try:
                self.hand.command_positions(target)
                self.commands_sent += 1
            except Exception as error:  # noqa: BLE001 - reported to the control loop by apply()
                with self._condition:
                    self._error = f"{type(error).__name__}: {error}"
                logger.error("hand command failed: %s: %s", type(error).__name__, error)

    def close(self) -> None:
        with self._condition:
            self._stop = True
            self._condition.notify()
        self._thread.join(timeout=2.0)
