"""Conversion between ``vpp_msgs/ActionChunk`` and numpy arrays, with validation.

Every producer (policy node, teleop) builds chunks with :func:`chunk_to_msg` and every consumer
(executors, recorders) reads them with :func:`msg_to_chunk`, so a malformed chunk is caught with
the same clear message wherever it comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vpp_core.action_space import ActionSpace, get_action_space
from vpp_ros.time_conversion import seconds_to_stamp, stamp_to_seconds


class ChunkValidationError(ValueError):
    """An action chunk is malformed; the message says what is wrong and what was expected."""


@dataclass(frozen=True)
class Pose:
    """A pose in the robot base frame: position [m] and unit quaternion (x, y, z, w)."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quaternion_xyzw: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.position, dtype=np.float64), np.asarray(self.quaternion_xyzw, dtype=np.float64)


@dataclass(frozen=True)
class ChunkData:
    """A validated action chunk in plain Python/numpy form."""

    actions: np.ndarray  # [horizon, action_dim] float32, action-space units
    embodiment: str
    action_space: str
    dt: float  # [s]
    stamp: float  # [s] capture time of the observation the chunk was planned from
    sequence_id: int = 0
    frame_id: str = ""
    reference_pose: Pose = field(default_factory=Pose)
    planning_latency: float = 0.0  # [s]
    instruction: str = ""

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])


def _resolve_space(embodiment: str, action_space: str | None) -> ActionSpace:
    try:
        space = get_action_space(embodiment)
    except (KeyError, ValueError) as exc:
        raise ChunkValidationError(f"unknown embodiment {embodiment!r}: {exc}") from None
    if action_space and action_space != space.name:
        raise ChunkValidationError(
            f"action space {action_space!r} does not match embodiment {embodiment!r} "
            f"(expected {space.name!r})"
        )
    return space


def validate_actions(actions: np.ndarray, space: ActionSpace, *, horizon: int | None = None) -> np.ndarray:
    """Return ``actions`` as float32 [H, D] after checking shape and finiteness."""
    arr = np.asarray(actions)
    if arr.ndim != 2:
        raise ChunkValidationError(
            f"actions must be 2-D [horizon x {space.dim}] for {space.name!r}, got shape {arr.shape}"
        )
    if arr.shape[1] != space.dim:
        raise ChunkValidationError(
            f"action_dim is {arr.shape[1]} but {space.name!r} has {space.dim} dimensions "
            f"({', '.join(space.dimension_names)})"
        )
    if arr.shape[0] < 1:
        raise ChunkValidationError("a chunk needs at least one step (horizon >= 1)")
    if horizon is not None and arr.shape[0] != horizon:
        raise ChunkValidationError(f"horizon says {horizon} steps but the data holds {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ChunkValidationError(f"actions must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        step, dim = np.argwhere(bad)[0]
        raise ChunkValidationError(
            f"non-finite value {arr[step, dim]} at step {step}, dimension "
            f"{space.dimension_names[dim]!r} ({int(bad.sum())} non-finite values in total)"
        )
    return arr


def _validate_pose(pose: Pose) -> None:
    values = (*pose.position, *pose.quaternion_xyzw)
    if not all(math.isfinite(v) for v in values):
        raise ChunkValidationError(f"reference pose has non-finite values: {values}")
    norm = math.sqrt(sum(q * q for q in pose.quaternion_xyzw))
    if abs(norm - 1.0) > 1e-3:
        raise ChunkValidationError(f"reference pose quaternion is not unit length (norm {norm:.4f})")


def chunk_to_msg(chunk: ChunkData):
    """Build a ``vpp_msgs/ActionChunk`` from validated data (validates again)."""
    from geometry_msgs.msg import Pose as PoseMsg
    from vpp_msgs.msg import ActionChunk

    space = _resolve_space(chunk.embodiment, chunk.action_space)
    actions = validate_actions(chunk.actions, space)
    if not (math.isfinite(chunk.dt) and chunk.dt > 0):
        raise ChunkValidationError(f"dt must be a positive number of seconds, got {chunk.dt}")
    _validate_pose(chunk.reference_pose)

    msg = ActionChunk()
    msg.header.stamp = seconds_to_stamp(chunk.stamp)
    msg.header.frame_id = chunk.frame_id
    msg.sequence_id = int(chunk.sequence_id)
    msg.embodiment = chunk.embodiment
    msg.action_space = space.name
    msg.dimension_names = list(space.dimension_names)
    msg.dt = float(chunk.dt)
    msg.horizon = actions.shape[0]
    msg.action_dim = actions.shape[1]
    msg.data = actions.reshape(-1).tolist()
    pose = PoseMsg()
    (pose.position.x, pose.position.y, pose.position.z) = map(float, chunk.reference_pose.position)
    (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w) = map(
        float, chunk.reference_pose.quaternion_xyzw
    )
    msg.reference_pose = pose
    msg.planning_latency = float(chunk.planning_latency)
    msg.instruction = chunk.instruction
    return msg


def msg_to_chunk(msg, *, expected_embodiment: str | None = None) -> ChunkData:
    """Validate a received ``vpp_msgs/ActionChunk`` and return it as :class:`ChunkData`.

    Raises :class:`ChunkValidationError` with a message fit for a log line when the chunk is for
    another robot, its shape fields disagree with its data or the action space, or it holds
    NaN/Inf anywhere.
    """
    if expected_embodiment is not None and msg.embodiment != expected_embodiment:
        raise ChunkValidationError(
            f"chunk is for embodiment {msg.embodiment!r}, this executor drives {expected_embodiment!r}"
        )
    space = _resolve_space(msg.embodiment, msg.action_space)
    if msg.action_dim != space.dim:
        raise ChunkValidationError(
            f"action_dim field is {msg.action_dim} but {space.name!r} has {space.dim} dimensions"
        )
    data = np.asarray(msg.data, dtype=np.float32)
    if msg.horizon < 1 or data.size != msg.horizon * msg.action_dim:
        raise ChunkValidationError(
            f"data holds {data.size} values but horizon x action_dim = {msg.horizon} x {msg.action_dim}"
        )
    if msg.dimension_names and list(msg.dimension_names) != list(space.dimension_names):
        raise ChunkValidationError(
            f"dimension names {list(msg.dimension_names)} differ from {space.name!r}'s "
            f"{list(space.dimension_names)}"
        )
    actions = validate_actions(data.reshape(msg.horizon, msg.action_dim), space, horizon=msg.horizon)
    if not (math.isfinite(msg.dt) and msg.dt > 0):
        raise ChunkValidationError(f"dt must be a positive number of seconds, got {msg.dt}")
    p, q = msg.reference_pose.position, msg.reference_pose.orientation
    pose = Pose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
    _validate_pose(pose)
    return ChunkData(
        actions=actions,
        embodiment=msg.embodiment,
        action_space=space.name,
        dt=float(msg.dt),
        stamp=stamp_to_seconds(msg.header.stamp),
        sequence_id=int(msg.sequence_id),
        frame_id=msg.header.frame_id,
        reference_pose=pose,
        planning_latency=float(msg.planning_latency),
        instruction=msg.instruction,
    )
