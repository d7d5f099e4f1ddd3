"""Scripted expert: action chunks that perform a task, planned from the measured state.

Pure numpy, no ROS: :meth:`ScriptedExpert.plan` takes the measured end-effector pose and the
object positions (base frame) and returns a ``(horizon, 7)`` chunk in the Panda action space
(deltas relative to the measured pose, gripper absolute), exactly what the policy node publishes;
the caller wraps it into a vpp_msgs/ActionChunk for the executor. Like the policy it is replanned
every few steps (``replan_after_steps``) from the newest state, so it is a state-feedback
controller: what it commands depends on where the arm and the cubes are, not on the time since
the episode started (which is what a policy can learn from images).

Motion: walk a polyline of waypoints from the measured position at a constant speed, ``speed *
dt`` per step, orientation fixed (gripper pointing down), gripper closed. The last stretch into a
goal (a cube top, the spot behind a cube) runs down a cone of slope ``approach_slope`` around the
goal, not straight down from above it: the descent then starts before the arm is exactly above
the goal, so what the expert commands near a cube varies smoothly with where the arm is. (With a
vertical descent gated on xy alignment, a policy whose position estimate was 2-3 cm off hovered
above the cube and never descended.) Per episode the speed,
approach heights and small offsets of the contact point are drawn at random so demonstrations
are diverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from vpp_core.action_space import get_action_space, poses_to_actions
from vpp_sim.tasks import CUBE_HALF_SIZE_M, Task

__all__ = ["DOWN_ROTATION", "ExpertConfig", "ScriptedExpert", "polyline_targets", "home_chunk", "near_goal_start"]

#: Gripper pointing down, fingers along y: franky-sim's FR3 start orientation (base frame).
DOWN_ROTATION = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


@dataclass
class ExpertConfig:
    """Motion parameters of the scripted expert (metres, seconds)."""

    dt: float = 0.1  # chunk step, as the policy's
    horizon: int = 10  # steps per chunk, as the policy's
    replan_after_steps: int = 5  # as the policy node's replan_after_steps
    speed_mps: float = 0.13  # mean Cartesian speed
    speed_jitter: float = 0.2  # per episode, +- this fraction
    pre_height_m: float = 0.07  # approach point above the cube top (touch) / push height (push)
    touch_height_m: float = 0.006  # fingertip goal above the cube top
    push_height_m: float = 0.022  # fingertip height (above the table) while pushing
    push_backoff_m: float = 0.065  # fingertip start behind the cube centre
    push_ahead_m: float = 0.10  # pushing aims this far ahead of the cube's centre
    offset_jitter_m: float = 0.006  # per episode, +- on the contact point (xy)
    height_jitter_m: float = 0.01  # per episode, +- on the approach height
    align_tolerance_m: float = 0.012  # xy distance under which the arm heads straight for the goal
    approach_slope: float = 1.5  # height gained per metre of xy distance on the cone into the goal
    gripper: float = 0.0  # closed: a firm finger block for touching and pushing


def polyline_targets(start: np.ndarray, waypoints: Sequence[np.ndarray], step_m: float, steps: int) -> np.ndarray:
    """Positions ``k * step_m`` along start -> waypoints for k = 0..steps-1 (stops at the end)."""
    points = [np.asarray(start, dtype=float)] + [np.asarray(w, dtype=float) for w in waypoints]
    segments = [(a, b, float(np.linalg.norm(b - a))) for a, b in zip(points[:-1], points[1:])]
    out = np.empty((steps, 3))
    for k in range(steps):
        remaining = k * step_m
        position = points[-1]
        for a, b, length in segments:
            if remaining <= length and length > 0:
                position = a + (b - a) * (remaining / length)
                break
            remaining -= length
        out[k] = position
    return out


def _chunk(reference_pose: np.ndarray, positions: np.ndarray, gripper: float) -> np.ndarray:
    targets = np.repeat(np.eye(4)[None], len(positions), axis=0)
    targets[:, :3, :3] = DOWN_ROTATION
    targets[:, :3, 3] = positions
    extra = np.full((len(positions), 1), float(gripper))
    return poses_to_actions(reference_pose, targets, extra, action_space="panda").astype(np.float32)


def home_chunk(reference_pose: np.ndarray, home_position: Sequence[float], cfg: ExpertConfig,
               safe_height_m: float = 0.15) -> np.ndarray:
    """A chunk towards the home position (up first when low), gripper as configured."""
    p = np.asarray(reference_pose, dtype=float)[:3, 3]
    home = np.asarray(home_position, dtype=float)
    waypoints = []
    if p[2] < safe_height_m - 0.01 and np.linalg.norm((home - p)[:2]) > 0.03:
        waypoints.append(np.array([p[0], p[1], safe_height_m]))
    waypoints.append(home)
    return _chunk(reference_pose, polyline_targets(p, waypoints, cfg.speed_mps * cfg.dt, cfg.horizon), cfg.gripper)


class ScriptedExpert:
    """Plans chunks for one task; :meth:`reset` at the start of each episode."""

    def __init__(self, task: Task, cfg: Optional[ExpertConfig] = None, rng: Optional[np.random.Generator] = None):
        self.task = task
        self.cfg = cfg or ExpertConfig()
        self.rng = rng if rng is not None else np.random.default_rng()
        get_action_space("panda")  # fail early if the action space is unknown
        self.reset()

    def reset(self) -> None:
        """Draw this episode's speed, heights and contact offset."""
        cfg, rng = self.cfg, self.rng
        self.speed = cfg.speed_mps * (1.0 + rng.uniform(-cfg.speed_jitter, cfg.speed_jitter))
        self.pre_height = cfg.pre_height_m + rng.uniform(-cfg.height_jitter_m, cfg.height_jitter_m)
        self.offset = np.append(rng.uniform(-cfg.offset_jitter_m, cfg.offset_jitter_m, size=2), 0.0)

    def approach_goal(self, objects: Mapping[str, Sequence[float]]) -> tuple[np.ndarray, float]:
        """The point the approach cone leads into (a cube top, the spot behind a cube) and the
        cone's height above it."""
        task, cfg = self.task, self.cfg
        cube = np.asarray(objects[task.target], dtype=float)
        top_z = cube[2] + CUBE_HALF_SIZE_M
        if task.kind == "touch":
            return np.array([cube[0], cube[1], top_z + cfg.touch_height_m]) + self.offset, self.pre_height
        if task.kind == "push":
            direction = np.append(np.asarray(task.push_direction, dtype=float), 0.0)
            behind = cube - direction * cfg.push_backoff_m + self.offset
            low = np.array([behind[0], behind[1], cfg.push_height_m])
            return low, float(top_z + self.pre_height - low[2])
        raise ValueError(f"unknown task kind {task.kind!r}")

    def waypoints(self, ee_position: np.ndarray, objects: Mapping[str, Sequence[float]]) -> list[np.ndarray]:
        """Where to go from ``ee_position``, given the current object positions."""
        task, cfg = self.task, self.cfg
        p = np.asarray(ee_position, dtype=float)
        goal, clearance = self.approach_goal(objects)
        if task.kind == "push":
            direction = np.append(np.asarray(task.push_direction, dtype=float), 0.0)
            rel = p - goal
            along = float(rel @ direction)
            across = float(np.linalg.norm(rel[:2] - along * direction[:2]))
            if p[2] < cfg.push_height_m + 0.02 and across < 0.02 and along > -0.02:
                # In contact position behind the cube: push through it.
                ahead = np.asarray(objects[task.target], dtype=float) + direction * cfg.push_ahead_m
                return [np.array([ahead[0], ahead[1], cfg.push_height_m])]
        return self._approach(p, goal, clearance)

    def _approach(self, p: np.ndarray, goal: np.ndarray, clearance: float) -> list[np.ndarray]:
        """Waypoints from ``p`` into ``goal``: over the cone ``z = goal_z + min(clearance, slope * d)``.

        ``d`` is the xy distance from the goal. The cone's rim (``d = clearance / slope``) is
        reached at height ``clearance``; from there the arm descends straight into the goal.
        Below the cone (low, beside the goal) the arm goes up first, so the fingers never sweep
        across a cube.
        """
        cfg = self.cfg
        offset = (p - goal)[:2]
        d = float(np.linalg.norm(offset))
        if d <= cfg.align_tolerance_m:
            return [goal]
        cone_height = min(clearance, cfg.approach_slope * d)
        rim_distance = clearance / cfg.approach_slope
        rim = np.append(goal[:2] + offset / d * rim_distance, goal[2] + clearance)
        waypoints = []
        if p[2] < goal[2] + cone_height - 0.02:
            waypoints.append(np.array([p[0], p[1], goal[2] + cone_height]))
        if d > rim_distance:
            waypoints.append(rim)
        return waypoints + [goal]

    def plan(self, reference_pose: np.ndarray, objects: Mapping[str, Sequence[float]]) -> np.ndarray:
        """A ``(horizon, 7)`` chunk relative to ``reference_pose`` (the measured EE pose, 4x4)."""
        p = np.asarray(reference_pose, dtype=float)[:3, 3]
        positions = polyline_targets(p, self.waypoints(p, objects), self.speed * self.cfg.dt, self.cfg.horizon)
        return _chunk(reference_pose, positions, self.cfg.gripper)


#: Where the cubes can be and the arm may start an episode (base frame, x and |y| bounds).
START_REGION_X_M = (0.30, 0.72)
START_REGION_MAX_ABS_Y_M = 0.35


def near_goal_start(expert: ScriptedExpert, objects: Mapping[str, Sequence[float]], rng: np.random.Generator,
                    distance_range_m: Sequence[float] = (0.03, 0.08),
                    height_range_m: Sequence[float] = (0.005, 0.07),
                    max_tries: int = 500) -> Optional[np.ndarray]:
    """A start position beside ``expert``'s approach goal, off the path it takes from home.

    Demonstrations that all start at home only show the last centimetres into a cube along the
    expert's own cone; a policy a few cm off there meets states no demonstration covers (session
    7's policy hovered 3-4 cm beside the cube until the time limit). Episodes started from here
    show the expert correcting from such offsets. The point is ``distance_range_m`` (xy) from the
    goal, ``height_range_m`` above it, outside the touch radius, clear of the target cube's body,
    behind the cube for a push (never on its path), 10 cm from the other cube. None if no draw
    of ``max_tries`` qualifies.
    """
    task = expert.task
    goal, _ = expert.approach_goal(objects)
    target = np.asarray(objects[task.target], dtype=float)
    other = np.asarray(objects[task.distractor], dtype=float)
    top = target + np.array([0.0, 0.0, CUBE_HALF_SIZE_M])
    for _ in range(max_tries):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        distance = rng.uniform(*distance_range_m)
        p = goal + np.array([distance * np.cos(angle), distance * np.sin(angle), rng.uniform(*height_range_m)])
        if not (START_REGION_X_M[0] <= p[0] <= START_REGION_X_M[1] and abs(p[1]) <= START_REGION_MAX_ABS_Y_M):
            continue
        if task.kind == "touch" and np.linalg.norm(p - top) < task.touch_radius_m + 0.01:
            continue
        if p[2] < top[2] + 0.015 and np.linalg.norm((p - target)[:2]) < 0.06:
            continue
        if task.kind == "push" and float((p - target)[:2] @ np.asarray(task.push_direction, dtype=float)) > -0.03:
            continue
        if np.linalg.norm((p - other)[:2]) < 0.10:
            continue
        return p
    return None
