"""Time alignment of one demonstration to the policy rate, with a sync report.

Everything is aligned by **header stamps** (capture time for images, measurement time for
states, command time for targets), never by the bag's log (arrival) time.

- Episode window: from the latest first stamp to the earliest last stamp over every stream the
  dataset needs (both cameras, ``/ee_pose``, the joints used, and the commanded targets when
  present), so every tick has data on both sides.
- Ticks: ``t_k = start + k / fps`` while ``t_k <= end``.
- Cameras: per tick the frame with the nearest capture stamp. The report gives each camera's
  max / mean skew to the tick, frames dropped by the camera (gaps in its own stamp sequence),
  ticks that reuse the previous tick's frame, and duplicate stamps.
- Measured state: joint positions linearly interpolated at the tick; the end-effector pose
  interpolated linearly in position and along the rotation geodesic (slerp) in orientation.
- Commanded targets: zero-order hold, i.e. the last command stamped at or before the query time
  (what the executor was sending to the arm at that moment).
- Actions (``action_space.poses_to_actions``): for frame ``t`` and step ``k`` the target held at
  ``t + k * dt`` (``dt = 1 / fps``, queries past the last tick repeat the last tick's target),
  relative to the measured pose at ``t``. Without ``/commanded_pose`` in the bag (recorded
  without our executor) the measured pose at ``t + k * dt`` is the target instead, and the
  report says so (``targets``); likewise the effector falls back to the measured gripper width
  (normalised to [0, 1]) or hand joints when ``/commanded_effector`` is absent.

An episode outside the tolerances raises :class:`SyncError` naming the stream, the time and the
figure that broke the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ..action_space import get_action_space, interpolate_poses, matrix_to_quat, poses_to_actions
from .bag_reader import BagContents, Series

__all__ = ["SyncError", "SyncTolerances", "EmbodimentSpec", "AlignedEpisode", "align_episode"]


class SyncError(ValueError):
    """An episode breaks a sync tolerance (or lacks a stream); the message is the rejection reason."""


@dataclass(frozen=True)
class SyncTolerances:
    #: A camera's nearest frame must be within this of every tick [s].
    max_camera_skew_s: float = 0.05
    #: Largest allowed gap between consecutive frames of one camera inside the window [s].
    max_camera_gap_s: float = 0.2
    #: Largest allowed gap in /ee_pose or any joint used, inside the window [s].
    max_state_gap_s: float = 0.1
    #: Largest allowed gap between commanded targets inside the window [s].
    max_command_gap_s: float = 0.5
    #: Episodes with fewer aligned frames are rejected.
    min_frames: int = 5


@dataclass(frozen=True)
class EmbodimentSpec:
    """Which recorded joints make up state / proprio, and the effector fallback, for one robot."""

    name: str
    action_space: str
    arm_joints: tuple[str, ...]
    #: Panda finger joints (each at half the opening): the state gets their sum, the gripper width.
    gripper_joints: tuple[str, ...] = ()
    #: XHand joints, in the action space's effector order.
    hand_joints: tuple[str, ...] = ()
    #: Proprio vector = arm joints + hand joints (the XHand policy's proprio input).
    proprio: bool = False
    #: Gripper width that maps to command 1.0 (open), for the no-/commanded_effector fallback [m].
    gripper_max_width_m: float = 0.08

    @property
    def state_names(self) -> list[str]:
        return list(self.arm_joints) + (["gripper_width"] if self.gripper_joints else []) + list(self.hand_joints)

    @property
    def proprio_names(self) -> list[str]:
        return list(self.arm_joints) + list(self.hand_joints) if self.proprio else []


@dataclass
class AlignedEpisode:
    ticks_ns: np.ndarray                 # (T,) absolute tick stamps
    frame_indexes: dict[str, np.ndarray]  # view -> (T,) message positions in the camera topic
    state: np.ndarray                    # (T, Ds)
    ee_pose: np.ndarray                  # (T, 7) xyz + quat xyzw
    reference_poses: np.ndarray          # (T, 4, 4) measured pose at each tick
    target_poses: np.ndarray             # (T, H, 4, 4)
    target_effector: np.ndarray          # (T, H, E)
    actions: np.ndarray                  # (T, H, A) float64
    proprio: Optional[np.ndarray]        # (T, P)
    report: dict[str, Any] = field(default_factory=dict)


def _hold(series: Series, query_ns: np.ndarray) -> np.ndarray:
    """Zero-order hold: index of the last sample stamped at or before each query."""
    index = np.searchsorted(series.stamps_ns, query_ns, side="right") - 1
    if np.any(index < 0):
        raise SyncError("internal: hold query before the first command")  # the window prevents this
    return index


def _interp_scalar(series: Series, query_ns: np.ndarray) -> np.ndarray:
    base = series.stamps_ns[0]
    return np.interp((query_ns - base).astype(np.float64), (series.stamps_ns - base).astype(np.float64), series.values)


def _interp_poses(series: Series, query_ns: np.ndarray) -> np.ndarray:
    stamps = series.stamps_ns
    if len(stamps) == 1:
        return np.repeat(series.values, len(query_ns), axis=0)
    right = np.clip(np.searchsorted(stamps, query_ns, side="right"), 1, len(stamps) - 1)
    left = right - 1
    weight = (query_ns - stamps[left]) / (stamps[right] - stamps[left])
    weight = np.clip(weight.astype(np.float64), 0.0, 1.0)
    return interpolate_poses(series.values[left], series.values[right], weight[:, None])


def _max_gap_s(stamps: np.ndarray, start: int, end: int) -> tuple[float, int]:
    """Largest gap between consecutive stamps covering [start, end], and where it starts."""
    lo = max(int(np.searchsorted(stamps, start, side="right")) - 1, 0)
    hi = min(int(np.searchsorted(stamps, end, side="left")) + 1, len(stamps))
    window = stamps[lo:hi]
    if len(window) < 2:
        return 0.0, int(window[0]) if len(window) else start
    gaps = np.diff(window)
    worst = int(np.argmax(gaps))
    return float(gaps[worst]) / 1e9, int(window[worst])


def _rel(stamp_ns: int, origin_ns: int) -> str:
    return f"t={(stamp_ns - origin_ns) / 1e9:.3f} s"


def align_episode(
    contents: BagContents,
    spec: EmbodimentSpec,
    views: Sequence[str],
    fps: float,
    horizon: int,
    tolerances: SyncTolerances = SyncTolerances(),
) -> AlignedEpisode:
    """Resample one bag's contents to ``fps`` ticks and compute its action chunks (see module doc)."""
    if fps <= 0 or horizon < 1:
        raise ValueError(f"fps must be > 0 and horizon >= 1, got {fps}, {horizon}")
    space = get_action_space(spec.action_space)
    notes: list[str] = list(contents.notes)

    # ---------------------------------------------------------------- which streams
    needed_joints = list(spec.arm_joints) + list(spec.gripper_joints) + list(spec.hand_joints)
    missing = [name for name in needed_joints if name not in contents.joints]
    if missing:
        raise SyncError(
            f"/joint_states lacks joints {missing} (it has {sorted(contents.joints)}); "
            "set the joint names for this robot in config/data/convert.yaml"
        )
    command_pose = contents.commanded_pose
    effector_names = list(space.effector_names)
    recorded_effector = all(name in contents.commanded_effector for name in effector_names)
    if command_pose is None:
        notes.append("no /commanded_pose: targets are the measured /ee_pose at t + k*dt")
    if not recorded_effector:
        if contents.commanded_effector:
            raise SyncError(
                f"/commanded_effector has {sorted(contents.commanded_effector)}, "
                f"the {space.name} action space needs {effector_names}"
            )
        if spec.gripper_joints:
            notes.append("no /commanded_effector: gripper command = measured width / gripper_max_width_m")
        elif spec.hand_joints:
            notes.append("no /commanded_effector: hand targets are the measured hand joints at t + k*dt")
        else:
            raise SyncError(f"no /commanded_effector and no measured effector joints for {space.name}")

    streams: dict[str, np.ndarray] = {contents.cameras[v].topic: contents.cameras[v].stamps_ns for v in views}
    streams["/ee_pose"] = contents.ee_pose.stamps_ns
    for name in needed_joints:
        streams[f"/joint_states[{name}]"] = contents.joints[name].stamps_ns
    if command_pose is not None:
        streams["/commanded_pose"] = command_pose.stamps_ns
    if recorded_effector:
        for name in effector_names:
            streams[f"/commanded_effector[{name}]"] = contents.commanded_effector[name].stamps_ns
    origin = min(int(s[0]) for s in streams.values())
    start = max(int(s[0]) for s in streams.values())
    end = min(int(s[-1]) for s in streams.values())
    late = max(streams, key=lambda k: int(streams[k][0]))
    early = min(streams, key=lambda k: int(streams[k][-1]))
    if end <= start:
        raise SyncError(f"streams do not overlap in time: {late} starts at {_rel(start, origin)}, "
                        f"{early} ends at {_rel(end, origin)}")
    period_ns = 1e9 / fps
    count = int(np.floor((end - start) / period_ns + 1e-9)) + 1
    ticks = start + np.round(np.arange(count) * period_ns).astype(np.int64)
    if count < tolerances.min_frames:
        raise SyncError(f"episode too short: {count} frames at {fps:g} fps (min_frames {tolerances.min_frames}); "
                        f"the streams overlap for {(end - start) / 1e9:.3f} s")
    report: dict[str, Any] = {
        "frames": count,
        "fps": fps,
        "window_s": [round((start - origin) / 1e9, 6), round((end - origin) / 1e9, 6)],
        "window_limited_by": {"start": late, "end": early},
        "cameras": {},
    }

    # ---------------------------------------------------------------- cameras
    frame_indexes: dict[str, np.ndarray] = {}
    chosen_stamps: dict[str, np.ndarray] = {}
    for view in views:
        camera = contents.cameras[view]
        stamps = camera.stamps_ns
        right = np.clip(np.searchsorted(stamps, ticks), 0, len(stamps) - 1)
        left = np.clip(right - 1, 0, len(stamps) - 1)
        nearest = np.where(np.abs(stamps[left] - ticks) <= np.abs(stamps[right] - ticks), left, right)
        skew = np.abs(stamps[nearest] - ticks) / 1e9
        worst = int(np.argmax(skew))
        in_window = stamps[(stamps >= start) & (stamps <= end)]
        period = float(np.median(np.diff(stamps))) if len(stamps) > 1 else 0.0
        dropped = int(np.sum(np.maximum(np.round(np.diff(in_window) / period) - 1, 0))) if period > 0 and len(in_window) > 1 else 0
        gap_s, gap_at = _max_gap_s(stamps, start, end)
        camera_report = {
            "topic": camera.topic,
            "max_skew_s": round(float(skew.max()), 6),
            "mean_skew_s": round(float(skew.mean()), 6),
            "rate_hz": round(1e9 / period, 3) if period > 0 else None,
            "dropped_frames": dropped,
            "max_frame_gap_s": round(gap_s, 6),
            "repeated_frames": int(np.sum(nearest[1:] == nearest[:-1])),
            "duplicate_stamps": camera.duplicates,
            "source_size": [camera.width, camera.height],
        }
        report["cameras"][view] = camera_report
        if gap_s > tolerances.max_camera_gap_s:
            raise SyncError(
                f"camera '{view}' ({camera.topic}): {gap_s * 1e3:.0f} ms without frames after {_rel(gap_at, origin)} "
                f"(~{dropped} frames dropped in the episode; max_camera_gap_s {tolerances.max_camera_gap_s:g})"
            )
        if skew.max() > tolerances.max_camera_skew_s:
            raise SyncError(
                f"camera '{view}' ({camera.topic}): nearest frame to the tick at {_rel(int(ticks[worst]), origin)} "
                f"is {skew.max() * 1e3:.1f} ms away (max_camera_skew_s {tolerances.max_camera_skew_s:g})"
            )
        frame_indexes[view] = camera.indexes[nearest]
        chosen_stamps[view] = stamps[nearest]
    if len(views) > 1:
        pair = np.max([np.abs(chosen_stamps[a] - chosen_stamps[b]) for a in views for b in views if a < b], axis=0)
        report["max_camera_pair_skew_s"] = round(float(pair.max()) / 1e9, 6)

    # ---------------------------------------------------------------- measured state
    state_gaps = {"/ee_pose": _max_gap_s(contents.ee_pose.stamps_ns, start, end)}
    for name in needed_joints:
        state_gaps[f"/joint_states[{name}]"] = _max_gap_s(contents.joints[name].stamps_ns, start, end)
    worst_state = max(state_gaps, key=lambda k: state_gaps[k][0])
    report["max_state_gap_s"] = round(state_gaps[worst_state][0], 6)
    report["max_state_gap_stream"] = worst_state
    if state_gaps[worst_state][0] > tolerances.max_state_gap_s:
        raise SyncError(
            f"{worst_state}: {state_gaps[worst_state][0] * 1e3:.0f} ms without messages after "
            f"{_rel(state_gaps[worst_state][1], origin)} (max_state_gap_s {tolerances.max_state_gap_s:g})"
        )
    reference = _interp_poses(contents.ee_pose, ticks)
    arm = np.stack([_interp_scalar(contents.joints[n], ticks) for n in spec.arm_joints], -1)
    columns = [arm]
    if spec.gripper_joints:
        columns.append(sum(_interp_scalar(contents.joints[n], ticks) for n in spec.gripper_joints)[:, None])
    hand = (np.stack([_interp_scalar(contents.joints[n], ticks) for n in spec.hand_joints], -1)
            if spec.hand_joints else np.zeros((count, 0)))
    columns.append(hand)
    state = np.concatenate(columns, axis=1)
    proprio = np.concatenate([arm, hand], axis=1) if spec.proprio else None
    position, quat = reference[:, :3, 3], matrix_to_quat(reference[:, :3, :3])
    ee_pose = np.concatenate([position, quat], axis=1)

    # ---------------------------------------------------------------- targets and actions
    steps = np.arange(horizon)
    query = np.minimum(ticks[:, None] + np.round(steps[None, :] * period_ns).astype(np.int64), ticks[-1])
    flat_query = query.reshape(-1)
    if command_pose is not None:
        gap_s, gap_at = _max_gap_s(command_pose.stamps_ns, start, end)
        report["max_command_gap_s"] = round(gap_s, 6)
        if gap_s > tolerances.max_command_gap_s:
            raise SyncError(f"/commanded_pose: {gap_s * 1e3:.0f} ms without commands after {_rel(gap_at, origin)} "
                            f"(max_command_gap_s {tolerances.max_command_gap_s:g})")
        targets = command_pose.values[_hold(command_pose, flat_query)]
        report["targets"] = "/commanded_pose (zero-order hold)"
    else:
        targets = _interp_poses(contents.ee_pose, flat_query)
        report["targets"] = "/ee_pose (measured; no /commanded_pose in the bag)"
    if recorded_effector:
        effector = np.stack([contents.commanded_effector[n].values[_hold(contents.commanded_effector[n], flat_query)]
                             for n in effector_names], -1)
        report["effector_targets"] = "/commanded_effector (zero-order hold)"
    elif spec.gripper_joints:
        width = sum(_interp_scalar(contents.joints[n], flat_query) for n in spec.gripper_joints)
        effector = np.clip(width / spec.gripper_max_width_m, 0.0, 1.0)[:, None]
        report["effector_targets"] = "/joint_states gripper width (measured; no /commanded_effector)"
    else:
        effector = np.stack([_interp_scalar(contents.joints[n], flat_query) for n in spec.hand_joints], -1)
        report["effector_targets"] = "/joint_states hand joints (measured; no /commanded_effector)"
    targets = targets.reshape(count, horizon, 4, 4)
    effector = effector.reshape(count, horizon, -1)
    actions = np.stack([poses_to_actions(reference[i], targets[i], effector[i], space) for i in range(count)])
    report["notes"] = notes
    return AlignedEpisode(
        ticks_ns=ticks, frame_indexes=frame_indexes, state=state, ee_pose=ee_pose, reference_poses=reference,
        target_poses=targets, target_effector=effector, actions=actions, proprio=proprio, report=report,
    )
