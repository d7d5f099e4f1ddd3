"""Last check between a computed target and the arm driver.

Policy (the order checks run in):

1. Anything non-finite (pose, effector command, velocity) or a pose that is not a rigid
   transform: **rejected**; the executor holds.
2. A position outside the workspace box (base frame) by more than ``workspace_clamp_margin_m``
   on any axis: **rejected**; the executor holds. Clamping a far-away target would move the
   robot along the box wall towards a target the policy did not mean. A position outside by at
   most the margin is **projected onto the box** (``limited``): a learned policy aiming at the
   table top a few millimetres under the floor means "go down to the floor", and refusing it
   would freeze the arm wherever its plans graze the box (the margin bounds how far the command
   moves from what was meant). The margin is 0 (reject everything outside) unless configured.
3. A step larger than allowed since the last commanded target (the smaller of the per-step limit
   and speed limit x elapsed time): **limited** (moved the allowed distance along the same
   direction / rotation axis) with ``step_limit_policy = "limit"``, or rejected with ``"reject"``.
   The previous target is inside the box and the box is convex, so a limited target is too.
4. Effector commands outside their range are clamped (a gripper command of 1.2 means "open").
5. The velocity feed-forward is scaled down to the speed limits.

Every decision carries a human-readable ``reason`` for logs and status messages.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from vpp_core.action_space import is_valid_pose, matrix_to_rotvec, rotvec_to_matrix

__all__ = ["SafetyLimits", "SafetyFilter", "SafetyDecision", "SafetyVerdict"]


@dataclass
class SafetyLimits:
    """Limits applied to every commanded target. Set the workspace per robot cell in YAML.

    The defaults are a conservative box in front of a Franka base; they are not a substitute for
    measuring the real cell.
    """

    workspace_min_m: tuple[float, float, float] = (0.25, -0.45, 0.05)
    workspace_max_m: tuple[float, float, float] = (0.80, 0.45, 0.75)
    #: Largest change of the commanded target between two control ticks.
    max_step_translation_m: float = 0.01
    max_step_rotation_rad: float = 0.05
    #: Speed limits; with the tick's elapsed time they give a second per-tick bound.
    max_translation_speed_mps: float = 0.25
    max_rotation_speed_radps: float = 1.0
    #: Effector command range, one (low, high) per effector dimension; empty = use the action
    #: space's own bounds (the gripper's [0, 1]). Required for hands (joint limits).
    effector_bounds: tuple[tuple[float, float], ...] = ()
    #: "limit" moves the allowed distance towards a too-far target; "reject" holds instead.
    step_limit_policy: str = "limit"
    #: Targets outside the workspace by at most this much (per axis) are projected onto the box
    #: instead of rejected; 0 rejects every target outside.
    workspace_clamp_margin_m: float = 0.0

    def __post_init__(self) -> None:
        low = np.asarray(self.workspace_min_m, dtype=float)
        high = np.asarray(self.workspace_max_m, dtype=float)
        if low.shape != (3,) or high.shape != (3,) or not np.all(np.isfinite(low)) or not np.all(np.isfinite(high)):
            raise ValueError("workspace_min_m/workspace_max_m must be 3 finite numbers each")
        if np.any(low >= high):
            raise ValueError(f"empty workspace: min {low.tolist()} >= max {high.tolist()}")
        for name in ("max_step_translation_m", "max_step_rotation_rad",
                     "max_translation_speed_mps", "max_rotation_speed_radps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        for bound in self.effector_bounds:
            if len(bound) != 2 or not bound[0] <= bound[1]:
                raise ValueError(f"effector bound {bound} must be (low, high) with low <= high")
        if not (math.isfinite(self.workspace_clamp_margin_m) and 0.0 <= self.workspace_clamp_margin_m <= 0.1):
            raise ValueError(f"workspace_clamp_margin_m must be in [0, 0.1] m, got {self.workspace_clamp_margin_m}")
        if self.step_limit_policy not in ("limit", "reject"):
            raise ValueError(f"step_limit_policy must be 'limit' or 'reject', got {self.step_limit_policy!r}")


class SafetyVerdict(enum.Enum):
    ACCEPTED = "accepted"
    LIMITED = "limited"
    REJECTED = "rejected"


@dataclass(frozen=True, eq=False)
class SafetyDecision:
    """Result of :meth:`SafetyFilter.check`; ``pose``/``effector``/``velocity`` are what may be sent."""

    verdict: SafetyVerdict
    reason: str
    pose: np.ndarray | None = None
    effector: np.ndarray | None = None
    velocity: np.ndarray | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict is not SafetyVerdict.REJECTED


class SafetyFilter:
    """Applies :class:`SafetyLimits` to targets. Stateless apart from the limits."""

    def __init__(self, limits: SafetyLimits, effector_bounds: tuple[tuple[float, float], ...] | None = None,
                 effector_names: tuple[str, ...] = ()):
        """``effector_bounds`` is the fallback when ``limits.effector_bounds`` is empty;
        ``effector_names`` (optional) name the clamped dimensions in the decision's reason."""
        self.limits = limits
        self.effector_names = tuple(effector_names)
        bounds = limits.effector_bounds or effector_bounds or ()
        self._effector_low = np.array([b[0] for b in bounds], dtype=float)
        self._effector_high = np.array([b[1] for b in bounds], dtype=float)
        self._workspace_low = np.asarray(limits.workspace_min_m, dtype=float)
        self._workspace_high = np.asarray(limits.workspace_max_m, dtype=float)

    @property
    def effector_dim(self) -> int:
        return int(self._effector_low.shape[0])

    def workspace_violation(self, position: np.ndarray) -> str | None:
        """Reason text when ``position`` is outside the box by more than the clamp margin (or not
        finite), else None: a position within the margin is one :meth:`clamp_to_workspace` moves in."""
        position = np.asarray(position, dtype=float)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            return f"target position {position} is not 3 finite numbers"
        margin = self.limits.workspace_clamp_margin_m
        outside = (position < self._workspace_low - margin) | (position > self._workspace_high + margin)
        if not outside.any():
            return None
        axes = ", ".join(
            f"{axis}={position[i]:.3f} not in [{self._workspace_low[i]:.3f}, {self._workspace_high[i]:.3f}]"
            for i, axis in enumerate("xyz") if outside[i]
        )
        beyond = f" (by more than the {margin * 1e3:.0f} mm clamp margin)" if margin > 0 else ""
        return f"target outside workspace{beyond}: {axes} m"

    def clamp_to_workspace(self, position: np.ndarray) -> np.ndarray:
        """``position`` projected onto the workspace box (unchanged when inside)."""
        return np.clip(np.asarray(position, dtype=float), self._workspace_low, self._workspace_high)

    def check(
        self,
        pose: np.ndarray,
        effector: np.ndarray | None,
        previous_pose: np.ndarray,
        elapsed_s: float,
        velocity: np.ndarray | None = None,
    ) -> SafetyDecision:
        """Validate and limit one target against the previously commanded ``previous_pose``.

        ``elapsed_s`` is the time since ``previous_pose`` was commanded (bounds the step through
        the speed limits). Returns a :class:`SafetyDecision`; on rejection nothing may be sent.
        """
        pose = np.asarray(pose, dtype=float)
        effector = np.zeros(0) if effector is None else np.asarray(effector, dtype=float).reshape(-1)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            return SafetyDecision(SafetyVerdict.REJECTED, "target pose is not a finite 4x4 matrix")
        if not is_valid_pose(pose, tolerance=1e-4):
            return SafetyDecision(SafetyVerdict.REJECTED, "target pose rotation is not orthonormal")
        if not np.all(np.isfinite(effector)):
            return SafetyDecision(SafetyVerdict.REJECTED, f"effector command {effector} is not finite")
        if effector.shape[0] != self.effector_dim:
            return SafetyDecision(
                SafetyVerdict.REJECTED,
                f"effector command has {effector.shape[0]} values, limits configured for {self.effector_dim}",
            )
        if velocity is not None:
            velocity = np.asarray(velocity, dtype=float).reshape(-1)
            if velocity.shape != (6,) or not np.all(np.isfinite(velocity)):
                return SafetyDecision(SafetyVerdict.REJECTED, f"velocity feed-forward {velocity} is not 6 finite numbers")
        if not math.isfinite(elapsed_s) or elapsed_s < 0.0:
            return SafetyDecision(SafetyVerdict.REJECTED, f"elapsed time {elapsed_s} is invalid")
        outside = self.workspace_violation(pose[:3, 3])
        if outside is not None:
            return SafetyDecision(SafetyVerdict.REJECTED, outside)

        limits = self.limits
        notes: list[str] = []
        pose_position = pose[:3, 3].copy()
        inside = self.clamp_to_workspace(pose_position)
        if np.any(inside != pose_position):
            moved = ", ".join(f"{axis} {pose[i, 3]:.3f} -> {inside[i]:.3f}"
                              for i, axis in enumerate("xyz") if inside[i] != pose[i, 3])
            notes.append(f"target clamped onto the workspace: {moved} m")
            pose = pose.copy()
            pose[:3, 3] = inside
            if velocity is not None:
                # Moving on through the wall would overshoot the clamped target on those axes.
                velocity = velocity.copy()
                velocity[:3][inside != pose_position] = 0.0
        limited_pose = pose.copy()
        max_translation = min(limits.max_step_translation_m, limits.max_translation_speed_mps * elapsed_s)
        max_rotation = min(limits.max_step_rotation_rad, limits.max_rotation_speed_radps * elapsed_s)
        step = pose[:3, 3] - previous_pose[:3, 3]
        step_length = float(np.linalg.norm(step))
        rotation_step = matrix_to_rotvec(pose[:3, :3] @ previous_pose[:3, :3].T)
        rotation_angle = float(np.linalg.norm(rotation_step))
        too_far = step_length > max_translation + 1e-12
        too_much_turn = rotation_angle > max_rotation + 1e-12
        if too_far or too_much_turn:
            description = []
            if too_far:
                description.append(f"translation step {step_length * 1e3:.1f} mm > {max_translation * 1e3:.1f} mm")
            if too_much_turn:
                description.append(f"rotation step {math.degrees(rotation_angle):.2f} deg > {math.degrees(max_rotation):.2f} deg")
            if limits.step_limit_policy == "reject":
                return SafetyDecision(SafetyVerdict.REJECTED, "; ".join(description))
            if too_far:
                limited_pose[:3, 3] = previous_pose[:3, 3] + step * (max_translation / step_length)
            if too_much_turn:
                limited_pose[:3, :3] = rotvec_to_matrix(rotation_step * (max_rotation / rotation_angle)) @ previous_pose[:3, :3]
            notes.append("limited: " + "; ".join(description))

        if self.effector_dim:
            clamped = np.clip(effector, self._effector_low, self._effector_high)
            # Excess below 1e-6 is float32 rounding of a command sent at the limit: clamp quietly.
            changed = np.flatnonzero(np.abs(clamped - effector) > 1e-6)
            if changed.size:
                if len(self.effector_names) == self.effector_dim:
                    notes.append("effector command clamped to its range: " + ", ".join(
                        f"{self.effector_names[i]} {effector[i]:.3f} -> {clamped[i]:.3f}" for i in changed))
                else:
                    notes.append("effector command clamped to its range")
            effector = clamped

        if velocity is not None:
            velocity = velocity.copy()
            for part, cap in ((slice(0, 3), limits.max_translation_speed_mps), (slice(3, 6), limits.max_rotation_speed_radps)):
                speed = float(np.linalg.norm(velocity[part]))
                if speed > cap:
                    velocity[part] *= cap / speed
            if too_far or too_much_turn:
                # The limited target lags the plan; feeding the plan's speed forward would make
                # the controller overshoot the limited target.
                velocity[:] = 0.0

        verdict = SafetyVerdict.LIMITED if notes else SafetyVerdict.ACCEPTED
        return SafetyDecision(verdict, "; ".join(notes) or "ok", limited_pose, effector, velocity)
