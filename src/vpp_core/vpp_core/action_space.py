"""The one definition of every embodiment's action space.

The dataset converter turns recorded robot targets into actions with :func:`poses_to_actions`;
the executors turn policy actions back into robot targets with :func:`actions_to_poses`. Both
sides import this module, so the two directions cannot drift apart.

Conventions (all units SI: metres, radians, seconds)
----------------------------------------------------
* **Pose representation**: a 4x4 homogeneous transform ``T`` (float64) mapping end-effector
  coordinates to robot-base coordinates, ``T[:3, :3]`` the rotation and ``T[:3, 3]`` the
  position. Batches are ``(..., 4, 4)``. :func:`pose_from_pos_quat` / :func:`pose_to_pos_quat`
  convert from/to ``(position, quaternion)`` with quaternions in ``[x, y, z, w]`` order (the order
  used by franky, ROS ``geometry_msgs`` and scipy).
* **What a delta is relative to**: every step of a chunk is relative to the *reference pose*:
  the end-effector (or wrist) pose measured at the observation the chunk was planned from, which
  travels with the chunk (``ActionChunk.reference_pose``). Steps are **not** relative to the
  previous step, so a dropped or late step does not accumulate drift: step ``i`` always means
  the same absolute target.
* **Translation**: ``p_target = p_ref + delta_xyz``, expressed in the robot base frame.
* **Rotation**: a rotation vector (axis * angle, ``|angle| <= pi``) composed on the left in the
  base frame: ``R_target = exp(rotvec) @ R_ref``; so ``rotvec = log(R_target @ R_ref.T)``.
* **Effector part**: whatever follows the six pose dimensions is absolute (not a delta):
  the Panda gripper command in ``[0, 1]`` (1 = open, 0 = closed), or the 12 XHand joint targets
  in radians, in :data:`XHAND_JOINT_NAMES` order.

Nothing here imports ROS; only numpy is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

__all__ = [
    "ActionSpace",
    "ACTION_SPACES",
    "InvalidActionError",
    "POSE_DIM",
    "XHAND_JOINT_NAMES",
    "get_action_space",
    "poses_to_actions",
    "actions_to_poses",
    "rotvec_to_matrix",
    "matrix_to_rotvec",
    "quat_to_matrix",
    "matrix_to_quat",
    "rotvec_to_quat",
    "quat_to_rotvec",
    "pose_from_pos_quat",
    "pose_to_pos_quat",
    "pose_from_pos_rotvec",
    "interpolate_poses",
    "pose_distance",
    "is_valid_pose",
]

#: Number of leading action dimensions that encode the pose delta (xyz + rotation vector).
POSE_DIM = 6

#: XHand joints in the vendor SDK's index order. ``index_bend`` is the index finger's abduction;
#: ``*_joint1``/``*_joint2`` are the proximal/distal flexion joints.
XHAND_JOINT_NAMES: tuple[str, ...] = (
    "thumb_bend",
    "thumb_rota1",
    "thumb_rota2",
    "index_bend",
    "index_joint1",
    "index_joint2",
    "mid_joint1",
    "mid_joint2",
    "ring_joint1",
    "ring_joint2",
    "pinky_joint1",
    "pinky_joint2",
)

_ROTATION_ORTHONORMAL_TOLERANCE = 1e-5
_SMALL_ANGLE = 1e-8


class InvalidActionError(ValueError):
    """Raised when actions or poses are malformed (wrong shape, NaN/Inf, not a rigid transform)."""


@dataclass(frozen=True)
class ActionSpace:
    """Layout of one embodiment's action vector.

    The first :data:`POSE_DIM` dimensions are always the pose delta (translation xyz, rotation
    vector); the rest are the absolute effector command (gripper or hand joints).
    """

    name: str
    dim: int
    dimension_names: tuple[str, ...]
    units: tuple[str, ...]
    description: str
    #: Inclusive ``(low, high)`` per effector dimension when the action space itself defines the
    #: range (the gripper command is [0, 1] by definition); ``None`` when the range is a property
    #: of the hardware and must come from configuration (XHand joint limits).
    effector_bounds: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.dim < POSE_DIM:
            raise ValueError(f"action space {self.name!r}: dim {self.dim} < {POSE_DIM}")
        if len(self.dimension_names) != self.dim or len(self.units) != self.dim:
            raise ValueError(
                f"action space {self.name!r}: {self.dim} dims but {len(self.dimension_names)} "
                f"names and {len(self.units)} units"
            )
        if self.effector_bounds is not None and len(self.effector_bounds) != self.effector_dim:
            raise ValueError(
                f"action space {self.name!r}: {len(self.effector_bounds)} effector bounds for "
                f"{self.effector_dim} effector dims"
            )

    @property
    def translation_slice(self) -> slice:
        return slice(0, 3)

    @property
    def rotation_slice(self) -> slice:
        return slice(3, 6)

    @property
    def effector_slice(self) -> slice:
        return slice(POSE_DIM, self.dim)

    @property
    def effector_dim(self) -> int:
        return self.dim - POSE_DIM

    @property
    def effector_names(self) -> tuple[str, ...]:
        return self.dimension_names[POSE_DIM:]

    def validate_actions(self, actions: np.ndarray) -> np.ndarray:
        """Return ``actions`` as a float64 ``(H, dim)`` array or raise :class:`InvalidActionError`.

        Rejects wrong rank/width, empty chunks and any NaN/Inf, naming the first bad entry.
        """
        array = np.asarray(actions, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise InvalidActionError(
                f"{self.name}: actions must have shape (H, {self.dim}), got {array.shape}"
            )
        if array.shape[0] == 0:
            raise InvalidActionError(f"{self.name}: empty action chunk")
        finite = np.isfinite(array)
        if not finite.all():
            step, column = np.argwhere(~finite)[0]
            raise InvalidActionError(
                f"{self.name}: non-finite value {array[step, column]} at step {step}, "
                f"dimension {self.dimension_names[column]!r}"
            )
        return array


def _pose_space(name: str, prefix: str, effector_names: tuple[str, ...], effector_units: tuple[str, ...],
                description: str, effector_bounds: tuple[tuple[float, float], ...] | None) -> ActionSpace:
    pose_names = tuple(f"{prefix}_{axis}" for axis in ("dx", "dy", "dz", "drx", "dry", "drz"))
    return ActionSpace(
        name=name,
        dim=POSE_DIM + len(effector_names),
        dimension_names=pose_names + effector_names,
        units=("m", "m", "m", "rad", "rad", "rad") + effector_units,
        description=description,
        effector_bounds=effector_bounds,
    )


#: Registry of every embodiment's action space, by name.
ACTION_SPACES: Mapping[str, ActionSpace] = {
    space.name: space
    for space in (
        _pose_space(
            "panda",
            "ee",
            ("gripper",),
            ("1",),
            "Franka Panda: end-effector delta (xyz [m], rotation vector [rad], base frame, "
            "relative to the chunk's reference pose) + gripper command in [0, 1], 1 = open.",
            ((0.0, 1.0),),
        ),
        _pose_space(
            "xhand",
            "wrist",
            XHAND_JOINT_NAMES,
            ("rad",) * len(XHAND_JOINT_NAMES),
            "XArm + XHand: wrist delta (xyz [m], rotation vector [rad], base frame, relative to "
            "the chunk's reference pose) + 12 absolute XHand joint targets [rad].",
            None,
        ),
    )
}


def get_action_space(name: str) -> ActionSpace:
    """Return the registered action space ``name`` or raise ``KeyError`` listing the known ones."""
    try:
        return ACTION_SPACES[name]
    except KeyError:
        raise KeyError(
            f"unknown action space {name!r}; known action spaces: {sorted(ACTION_SPACES)}"
        ) from None


# --------------------------------------------------------------------------------------------
# SO(3) helpers. All accept batches (..., 3) / (..., 4) / (..., 3, 3).
# --------------------------------------------------------------------------------------------

def _skew(vectors: np.ndarray) -> np.ndarray:
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    zero = np.zeros_like(x)
    return np.stack(
        [np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)],
        -2,
    )


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector(s) ``(..., 3)`` to rotation matrices ``(..., 3, 3)`` (Rodrigues)."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec, axis=-1)[..., None, None]
    small = angle < 1e-6
    safe_angle = np.where(small, 1.0, angle)
    # Taylor expansions keep the small-angle branch accurate to ~1e-18 instead of dividing by ~0.
    sin_term = np.where(small, 1.0 - angle**2 / 6.0, np.sin(safe_angle) / safe_angle)
    cos_term = np.where(small, 0.5 - angle**2 / 24.0, (1.0 - np.cos(safe_angle)) / safe_angle**2)
    k = _skew(rotvec)
    return np.eye(3) + sin_term * k + cos_term * (k @ k)


def matrix_to_quat(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` to unit quaternions ``(..., 4)`` ``[x, y, z, w]``, ``w >= 0``.

    Uses Shepperd's method (pivot on the largest of w, x, y, z) so rotations near pi stay accurate.
    """
    m = np.asarray(matrix, dtype=np.float64)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    trace = m00 + m11 + m22
    candidates = np.stack(
        [
            np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                      m[..., 1, 0] - m[..., 0, 1], 1.0 + trace], -1),
            np.stack([1.0 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0],
                      m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
            np.stack([m[..., 0, 1] + m[..., 1, 0], 1.0 - m00 + m11 - m22,
                      m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
            np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                      1.0 - m00 - m11 + m22, m[..., 1, 0] - m[..., 0, 1]], -1),
        ],
        -2,
    )
    pivots = np.stack([trace, m00, m11, m22], -1)
    best = np.argmax(pivots, axis=-1)
    quat = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    return np.where(quat[..., 3:4] < 0.0, -quat, quat)


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` ``[x, y, z, w]`` (normalised here) to matrices ``(..., 3, 3)``."""
    q = np.asarray(quat, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < 1e-12) or not np.all(np.isfinite(q)):
        raise InvalidActionError("quaternion must be finite and non-zero")
    x, y, z, w = np.moveaxis(q / norm, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def quat_to_rotvec(quat: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` ``[x, y, z, w]`` to rotation vectors with angle in ``[0, pi]``."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., 3:4] < 0.0, -q, q)
    vector, w = q[..., :3], q[..., 3]
    vector_norm = np.linalg.norm(vector, axis=-1)
    angle = 2.0 * np.arctan2(vector_norm, w)
    small = vector_norm < _SMALL_ANGLE
    # For tiny angles angle/|v| -> 2/w; w is ~1 there, never 0.
    scale = np.where(small, 2.0 / np.where(small, w, 1.0), angle / np.where(small, 1.0, vector_norm))
    return vector * scale[..., None]


def rotvec_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors ``(..., 3)`` to unit quaternions ``(..., 4)`` ``[x, y, z, w]``."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec, axis=-1)
    small = angle < 1e-6
    safe_angle = np.where(small, 1.0, angle)
    scale = np.where(small, 0.5 - angle**2 / 48.0, np.sin(safe_angle / 2.0) / safe_angle)
    quat = np.concatenate([rotvec * scale[..., None], np.cos(angle / 2.0)[..., None]], -1)
    return np.where(quat[..., 3:4] < 0.0, -quat, quat)


def matrix_to_rotvec(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` to rotation vectors ``(..., 3)``, angle in ``[0, pi]``."""
    return quat_to_rotvec(matrix_to_quat(matrix))


# --------------------------------------------------------------------------------------------
# Pose helpers (4x4 homogeneous transforms).
# --------------------------------------------------------------------------------------------

def pose_from_pos_quat(position: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """Build ``(..., 4, 4)`` poses from positions ``(..., 3)`` and quaternions ``(..., 4)`` xyzw."""
    position = np.asarray(position, dtype=np.float64)
    rotation = quat_to_matrix(quat_xyzw)
    return _assemble(position, rotation)


def pose_to_pos_quat(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``(..., 4, 4)`` poses into positions ``(..., 3)`` and quaternions xyzw ``(..., 4)``."""
    pose = np.asarray(pose, dtype=np.float64)
    return pose[..., :3, 3].copy(), matrix_to_quat(pose[..., :3, :3])


def pose_from_pos_rotvec(position: np.ndarray, rotvec: np.ndarray) -> np.ndarray:
    """Build ``(..., 4, 4)`` poses from positions and rotation vectors."""
    return _assemble(np.asarray(position, dtype=np.float64), rotvec_to_matrix(rotvec))


def _assemble(position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    batch = np.broadcast_shapes(position.shape[:-1], rotation.shape[:-2])
    pose = np.zeros(batch + (4, 4))
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = position
    pose[..., 3, 3] = 1.0
    return pose


def is_valid_pose(pose: np.ndarray, tolerance: float = _ROTATION_ORTHONORMAL_TOLERANCE) -> bool:
    """True when ``pose`` is a finite ``(..., 4, 4)`` rigid transform (orthonormal, det +1)."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape[-2:] != (4, 4) or not np.all(np.isfinite(pose)):
        return False
    rotation = pose[..., :3, :3]
    identity_error = np.abs(rotation @ np.swapaxes(rotation, -1, -2) - np.eye(3)).max()
    bottom_row_ok = np.allclose(pose[..., 3, :], [0.0, 0.0, 0.0, 1.0], atol=tolerance)
    determinant_ok = np.all(np.abs(np.linalg.det(rotation) - 1.0) < 10 * tolerance)
    return bool(identity_error < tolerance and bottom_row_ok and determinant_ok)


def _require_pose(pose: np.ndarray, what: str, batched: bool) -> np.ndarray:
    pose = np.asarray(pose, dtype=np.float64)
    expected_rank = 3 if batched else 2
    if pose.ndim != expected_rank or pose.shape[-2:] != (4, 4):
        shape = "(H, 4, 4)" if batched else "(4, 4)"
        raise InvalidActionError(f"{what} must have shape {shape}, got {pose.shape}")
    if not is_valid_pose(pose):
        raise InvalidActionError(f"{what} is not a finite rigid transform")
    return pose


def interpolate_poses(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """Pose ``weight`` of the way from ``start`` to ``end`` (0 -> start, 1 -> end).

    Translation is interpolated linearly, rotation along the geodesic, composed on the left in
    the base frame like the action deltas: ``R = exp(w * log(R_end R_start^T)) R_start``.
    """
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    relative = matrix_to_rotvec(end[..., :3, :3] @ np.swapaxes(start[..., :3, :3], -1, -2))
    rotation = rotvec_to_matrix(weight * relative) @ start[..., :3, :3]
    position = (1.0 - weight) * start[..., :3, 3] + weight * end[..., :3, 3]
    return _assemble(position, rotation)


def pose_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(translation distance [m], rotation angle [rad])`` between two poses."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    translation = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    angle = float(np.linalg.norm(matrix_to_rotvec(b[:3, :3] @ a[:3, :3].T)))
    return translation, angle


# --------------------------------------------------------------------------------------------
# Poses <-> actions.
# --------------------------------------------------------------------------------------------

def _resolve_space(action_space: ActionSpace | str | None) -> ActionSpace | None:
    if isinstance(action_space, str):
        return get_action_space(action_space)
    return action_space


def poses_to_actions(
    reference_pose: np.ndarray,
    target_poses: np.ndarray,
    extra: np.ndarray | None = None,
    action_space: ActionSpace | str | None = None,
) -> np.ndarray:
    """Express absolute targets as actions relative to ``reference_pose``.

    Args:
        reference_pose: ``(4, 4)`` end-effector pose at the observation the chunk starts from.
        target_poses: ``(H, 4, 4)`` absolute target poses in the base frame.
        extra: absolute effector commands, ``(H, E)`` or ``(H,)`` for a single effector
            dimension; ``None`` for pose-only actions.
        action_space: when given, the result is checked against it (width, finiteness).

    Returns:
        ``(H, 6 + E)`` actions: ``[p - p_ref, log(R R_ref^T), extra]``.
    """
    reference = _require_pose(reference_pose, "reference_pose", batched=False)
    targets = _require_pose(target_poses, "target_poses", batched=True)
    horizon = targets.shape[0]
    translation = targets[:, :3, 3] - reference[:3, 3]
    rotation = matrix_to_rotvec(targets[:, :3, :3] @ reference[:3, :3].T)
    parts = [translation, rotation]
    if extra is not None:
        extra_array = np.asarray(extra, dtype=np.float64)
        if extra_array.ndim == 1:
            extra_array = extra_array[:, None]
        if extra_array.ndim != 2 or extra_array.shape[0] != horizon:
            raise InvalidActionError(
                f"extra must have shape ({horizon}, E) or ({horizon},), got {np.shape(extra)}"
            )
        parts.append(extra_array)
    actions = np.concatenate(parts, axis=1)
    space = _resolve_space(action_space)
    if space is not None:
        space.validate_actions(actions)
    return actions


def actions_to_poses(
    reference_pose: np.ndarray,
    actions: np.ndarray,
    action_space: ActionSpace | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn actions relative to ``reference_pose`` back into absolute targets.

    Args:
        reference_pose: ``(4, 4)`` end-effector pose the chunk was planned from.
        actions: ``(H, A)`` actions, ``A >= 6``; validated against ``action_space`` when given,
            otherwise only checked for shape and finiteness.

    Returns:
        ``(poses (H, 4, 4), effector commands (H, A - 6))``.
    """
    reference = _require_pose(reference_pose, "reference_pose", batched=False)
    space = _resolve_space(action_space)
    if space is not None:
        actions = space.validate_actions(actions)
    else:
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] < POSE_DIM:
            raise InvalidActionError(f"actions must have shape (H, >={POSE_DIM}), got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise InvalidActionError("actions contain NaN or Inf")
    positions = reference[:3, 3] + actions[:, 0:3]
    rotations = rotvec_to_matrix(actions[:, 3:6]) @ reference[:3, :3]
    return _assemble(positions, rotations), actions[:, POSE_DIM:].copy()
