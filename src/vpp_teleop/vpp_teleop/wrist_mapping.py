"""Operator wrist -> robot end-effector (XArm wrist / Panda EE) target, behind a clutch.

Clutch. Nothing moves while it is released. Engaging (a pinch gesture of the clutch hand, or the
node's ``~/clutch`` service) captures two references: the operator's wrist pose ``W0`` (headset
world) and the robot's measured pose ``E0`` (base frame). While engaged, the target is

* position: ``p = p_E0 + s * A @ (p_W - p_W0)``, clamped to the workspace box;
* rotation: ``R = (A @ R_W @ R_W0^T @ A^T) @ R_E0`` (the operator's rotation since engaging,
  expressed in the robot base frame, composed on the left as in :mod:`vpp_core.action_space`),

with ``s`` = ``translation_scale`` and ``A`` = ``operator_to_base`` (rotation from the headset
world frame, Z up, to the robot base frame: where the operator stands relative to the robot),
followed by exponential smoothing (position lerp, rotation slerp with ``smoothing_alpha`` per
update). Re-engaging captures new references, so the operator can walk their hand back
("ratchet") without moving the robot. A stale or invalid sample yields no target (the caller
sends nothing and the executor holds); tracking that comes back continues from the same
references, with the smoothing restarted from the last target so a jump is smoothed.

Pinch gesture: a pinch starts when the clutch hand's thumb-index distance drops below
``pinch_engage_m`` and ends above ``pinch_release_m`` (hysteresis). ``toggle`` mode flips the
clutch at each pinch start; ``hold`` engages only while pinching (a dead-man switch); ``off``
leaves the clutch to the service. No ROS import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vpp_core.action_space import interpolate_poses, is_valid_pose

__all__ = ["WristMappingConfig", "ClutchConfig", "Clutch", "WristMapper", "ClutchEvent"]


@dataclass
class ClutchConfig:
    """The clutch (``clutch.`` parameters)."""

    #: toggle: each pinch flips engaged/released; hold: engaged while pinching; off: service only.
    gesture: str = "toggle"
    #: Operator hand whose pinch is the clutch gesture (the other hand drives the robot).
    gesture_hand: str = "left"
    #: Thumb-index distance below which a pinch starts [m].
    pinch_engage_m: float = 0.02
    #: Distance above which the pinch ends [m] (> pinch_engage_m: hysteresis).
    pinch_release_m: float = 0.04

    def validate(self) -> None:
        if self.gesture not in ("toggle", "hold", "off"):
            raise ValueError(f"clutch.gesture must be toggle, hold or off, got {self.gesture!r}")
        if self.gesture_hand not in ("left", "right"):
            raise ValueError(f"clutch.gesture_hand must be left or right, got {self.gesture_hand!r}")
        if not (0 < self.pinch_engage_m < self.pinch_release_m):
            raise ValueError("clutch: need 0 < pinch_engage_m < pinch_release_m")


@dataclass
class WristMappingConfig:
    """Wrist mapping (``wrist.`` parameters)."""

    #: Robot metres per operator metre.
    translation_scale: float = 1.0
    #: Follow the operator's wrist rotation (false: keep the orientation captured at engage).
    follow_rotation: bool = True
    #: Headset world (Z up) -> robot base rotation, row-major 3x3 (identity: the operator faces
    #: the robot's +x, standing behind it).
    operator_to_base: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    #: Target position box in the robot base frame [m]; keep it inside the executor's workspace.
    workspace_min_m: tuple[float, float, float] = (0.2, -0.45, 0.05)
    workspace_max_m: tuple[float, float, float] = (0.75, 0.45, 0.7)
    #: Exponential smoothing per tracking update: 1 = none, smaller = smoother and later.
    smoothing_alpha: float = 0.5
    #: The operator's rotation since engaging is capped at this angle per update [rad]
    #: (guards against a flipped wrist frame from a tracking glitch).
    max_rotation_jump_rad: float = 0.5

    def validate(self) -> None:
        if not (math.isfinite(self.translation_scale) and self.translation_scale > 0):
            raise ValueError("wrist.translation_scale must be > 0")
        a = np.asarray(self.operator_to_base, dtype=np.float64)
        if a.shape != (9,) or not np.allclose(a.reshape(3, 3) @ a.reshape(3, 3).T, np.eye(3), atol=1e-6) \
                or np.linalg.det(a.reshape(3, 3)) < 0:
            raise ValueError("wrist.operator_to_base must be a row-major 3x3 rotation")
        low, high = np.asarray(self.workspace_min_m), np.asarray(self.workspace_max_m)
        if low.shape != (3,) or high.shape != (3,) or not (low < high).all():
            raise ValueError("wrist.workspace_min_m must be below workspace_max_m on every axis")
        if not 0 < self.smoothing_alpha <= 1:
            raise ValueError("wrist.smoothing_alpha must be in (0, 1]")


@dataclass(frozen=True)
class ClutchEvent:
    engaged: bool
    reason: str


class Clutch:
    """Engaged/released state from pinch gestures and explicit requests."""

    def __init__(self, config: ClutchConfig) -> None:
        config.validate()
        self.config = config
        self.engaged = False
        self._pinching = False
        self._request: Optional[ClutchEvent] = None

    def request(self, engaged: bool, reason: str = "service") -> None:
        """Queue an explicit engage/release; applied at the next :meth:`update`."""
        self._request = ClutchEvent(bool(engaged), reason)

    def release(self, reason: str) -> ClutchEvent:
        self.engaged = False
        self._request = None
        return ClutchEvent(False, reason)

    def update(self, pinch_distance: Optional[float]) -> Optional[ClutchEvent]:
        """Feed the clutch hand's pinch distance (None: hand not tracked); returns a change or None."""
        before = self.engaged
        reason = ""
        if self._request is not None:
            self.engaged, reason = self._request.engaged, self._request.reason
            self._request = None
        if pinch_distance is not None and math.isfinite(pinch_distance) and self.config.gesture != "off":
            started = False
            if not self._pinching and pinch_distance < self.config.pinch_engage_m:
                self._pinching, started = True, True
            elif self._pinching and pinch_distance > self.config.pinch_release_m:
                self._pinching = False
            if self.config.gesture == "toggle" and started:
                self.engaged, reason = not self.engaged, "pinch"
            elif self.config.gesture == "hold" and self.engaged != self._pinching:
                self.engaged, reason = self._pinching, "pinch"
        elif self.config.gesture == "hold" and self.engaged:
            self._pinching = False
            self.engaged, reason = False, "clutch hand lost"
        if self.engaged != before:
            return ClutchEvent(self.engaged, reason)
        return None


class WristMapper:
    """Operator wrist poses -> smoothed robot targets while engaged."""

    def __init__(self, config: WristMappingConfig) -> None:
        config.validate()
        self.config = config
        self.operator_to_base = np.asarray(config.operator_to_base, dtype=np.float64).reshape(3, 3)
        self._low = np.asarray(config.workspace_min_m, dtype=np.float64)
        self._high = np.asarray(config.workspace_max_m, dtype=np.float64)
        self._operator_ref: Optional[np.ndarray] = None
        self._robot_ref: Optional[np.ndarray] = None
        self._smoothed: Optional[np.ndarray] = None
        self.clamped = False

    @property
    def engaged(self) -> bool:
        return self._robot_ref is not None

    def engage(self, operator_wrist: np.ndarray, robot_pose: np.ndarray) -> None:
        """Capture the references (the operator's wrist and the robot's measured pose now)."""
        if not (is_valid_pose(operator_wrist, 1e-3) and is_valid_pose(robot_pose, 1e-3)):
            raise ValueError("cannot engage: operator wrist or robot pose is not a rigid transform")
        self._operator_ref = np.array(operator_wrist, dtype=np.float64)
        self._robot_ref = np.array(robot_pose, dtype=np.float64)
        self._smoothed = self._robot_ref.copy()

    def release(self) -> None:
        self._operator_ref = self._robot_ref = self._smoothed = None

    def restart_smoothing(self, robot_pose: Optional[np.ndarray]) -> None:
        """After a tracking gap: smooth from where the robot is instead of the old target."""
        if self.engaged and robot_pose is not None and is_valid_pose(robot_pose, 1e-3):
            self._smoothed = np.array(robot_pose, dtype=np.float64)

    def raw_target(self, operator_wrist: np.ndarray) -> np.ndarray:
        """Unsmoothed, clamped target for ``operator_wrist`` (engaged only)."""
        if not self.engaged:
            raise RuntimeError("wrist mapper is not engaged")
        a = self.operator_to_base
        target = np.eye(4)
        displacement = operator_wrist[:3, 3] - self._operator_ref[:3, 3]
        position = self._robot_ref[:3, 3] + self.config.translation_scale * (a @ displacement)
        clamped = np.clip(position, self._low, self._high)
        self.clamped = bool(np.any(clamped != position))
        target[:3, 3] = clamped
        if self.config.follow_rotation:
            delta = a @ operator_wrist[:3, :3] @ self._operator_ref[:3, :3].T @ a.T
            target[:3, :3] = delta @ self._robot_ref[:3, :3]
        else:
            target[:3, :3] = self._robot_ref[:3, :3]
        return target

    def update(self, operator_wrist: np.ndarray) -> np.ndarray:
        """Smoothed target for a valid operator wrist pose (engaged only)."""
        if not is_valid_pose(operator_wrist, 1e-3):
            raise ValueError("operator wrist pose is not a rigid transform")
        raw = self.raw_target(operator_wrist)
        previous = self._smoothed if self._smoothed is not None else raw
        # Cap the rotation step: a wrist-frame glitch must not swing the robot's hand around.
        step = raw[:3, :3] @ previous[:3, :3].T
        angle = math.acos(max(-1.0, min(1.0, (np.trace(step) - 1.0) / 2.0)))
        weight = self.config.smoothing_alpha
        if angle > self.config.max_rotation_jump_rad:
            weight = min(weight, self.config.max_rotation_jump_rad / angle)
        smoothed = interpolate_poses(previous, raw, weight)
        # Translation keeps the configured smoothing even when the rotation step was capped.
        smoothed[:3, 3] = previous[:3, 3] + self.config.smoothing_alpha * (raw[:3, 3] - previous[:3, 3])
        self._smoothed = smoothed
        return smoothed.copy()
