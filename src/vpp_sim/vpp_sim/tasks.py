"""Language-conditioned tabletop tasks of the simulation proof, with success checks from sim state.

Pure Python + numpy (no ROS, no MuJoCo): a task is an instruction, a layout filter and a monitor
that turns the stream of (end-effector position, object positions) into success / failure.
Positions are in the robot base frame (x forward, y left, z up; the base stands on the table, so
the table top is z = 0 and a cube of half size h has its centre at z = h). The end-effector point
is Franka's EE frame (franky's ``O_T_EE``), which sits between the fingertips.

Tasks (``TASKS``):

* ``touch_red`` - "touch the red cube": the fingertips come within ``touch_radius_m`` of the red
  cube's top centre while the blue cube is never touched (approached or moved).
* ``touch_blue`` - "touch the blue cube": the same with the colours swapped. Same scene, same
  objects, different instruction: the policy needs the language; the cubes are placed anew every
  episode: it needs the image.
* ``push_red_left`` - "push the red cube to the left": the red cube moves more than
  ``push_distance_m`` towards +y (the robot's left) without the blue cube being moved. Same object
  as ``touch_red``, different motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "CUBE_HALF_SIZE_M",
    "Task",
    "TaskMonitor",
    "TaskStatus",
    "TASKS",
    "TASK_NAMES",
    "get_task",
    "resolve_tasks",
    "task_for_instruction",
]

#: Half edge of the simulated cubes (vpp_hardware.sim.configuration_sim default).
CUBE_HALF_SIZE_M = 0.025


@dataclass(frozen=True)
class Task:
    """One task: its instruction, target object, kind, and the numbers of its success check.

    Attributes:
        name: short identifier (CLI, file names).
        instruction: what is published on /task_language.
        kind: ``touch`` or ``push``.
        target: object the task is about.
        distractor: the other object, which must stay untouched.
        touch_radius_m: touch: fingertips within this distance of the target's top centre.
        push_direction: push: unit direction (base frame, xy) the target must move.
        push_distance_m: push: displacement along ``push_direction`` that counts as success.
        distractor_radius_m: coming this close to the distractor's top centre fails the task.
        distractor_motion_m: the distractor moving this far fails the task.
        time_limit_s: an episode not successful after this long fails.
    """

    name: str
    instruction: str
    kind: str
    target: str
    distractor: str
    touch_radius_m: float = 0.03
    push_direction: tuple[float, float] = (0.0, 1.0)
    push_distance_m: float = 0.05
    distractor_radius_m: float = 0.035
    distractor_motion_m: float = 0.02
    time_limit_s: float = 15.0

    def layout_ok(self, objects: Mapping[str, np.ndarray]) -> bool:
        """Whether a reset layout suits the task (a push must not drive into the other cube)."""
        if self.kind != "push":
            return True
        target, other = np.asarray(objects[self.target])[:2], np.asarray(objects[self.distractor])[:2]
        direction = np.asarray(self.push_direction, dtype=float)
        side = np.array([-direction[1], direction[0]])
        along = float((other - target) @ direction)
        across = float(abs((other - target) @ side))
        # The corridor the finger and the cube sweep: from behind the cube to 15 cm ahead.
        return not (-0.12 < along < 0.20 and across < 0.09)


class TaskStatus:
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


@dataclass
class TaskMonitor:
    """Success check of one episode, fed with simulator state as it arrives.

    ``update`` takes the current fingertip (EE) position and object positions (base frame);
    the first call's object positions are the episode's initial layout.
    """

    task: Task
    status: str = TaskStatus.RUNNING
    reason: str = ""
    initial: Optional[dict[str, np.ndarray]] = None
    start_time_s: Optional[float] = None
    success_time_s: Optional[float] = None
    min_target_distance_m: float = math.inf
    min_distractor_distance_m: float = math.inf
    max_progress_m: float = 0.0
    updates: int = 0
    history: list = field(default_factory=list)

    @staticmethod
    def top_centre(position: Sequence[float]) -> np.ndarray:
        p = np.asarray(position, dtype=float)
        return np.array([p[0], p[1], p[2] + CUBE_HALF_SIZE_M])

    def update(self, time_s: float, ee_position: Sequence[float], objects: Mapping[str, Sequence[float]]) -> str:
        task = self.task
        ee = np.asarray(ee_position, dtype=float)
        objs = {k: np.asarray(v, dtype=float) for k, v in objects.items()}
        if self.initial is None:
            self.initial = {k: v.copy() for k, v in objs.items()}
            self.start_time_s = time_s
        self.updates += 1
        if self.status != TaskStatus.RUNNING:
            return self.status
        target, other = objs[task.target], objs[task.distractor]
        d_target = float(np.linalg.norm(ee - self.top_centre(target)))
        d_other = float(np.linalg.norm(ee - self.top_centre(other)))
        self.min_target_distance_m = min(self.min_target_distance_m, d_target)
        self.min_distractor_distance_m = min(self.min_distractor_distance_m, d_other)
        other_moved = float(np.linalg.norm((other - self.initial[task.distractor])[:2]))
        if d_other < task.distractor_radius_m or other_moved > task.distractor_motion_m:
            self.status = TaskStatus.FAILED
            self.reason = (f"touched the {task.distractor.replace('_', ' ')} (distance {d_other * 100:.1f} cm, "
                           f"moved {other_moved * 100:.1f} cm)")
            return self.status
        if task.kind == "touch":
            if d_target < task.touch_radius_m:
                self.status, self.success_time_s = TaskStatus.SUCCESS, time_s
                self.reason = f"fingertips {d_target * 100:.1f} cm from the {task.target.replace('_', ' ')} top"
        elif task.kind == "push":
            progress = float((target - self.initial[task.target])[:2] @ np.asarray(task.push_direction, dtype=float))
            self.max_progress_m = max(self.max_progress_m, progress)
            if progress > task.push_distance_m:
                self.status, self.success_time_s = TaskStatus.SUCCESS, time_s
                self.reason = f"{task.target.replace('_', ' ')} pushed {progress * 100:.1f} cm"
        else:  # pragma: no cover - guarded by the task table
            raise ValueError(f"unknown task kind {task.kind!r}")
        if self.status == TaskStatus.RUNNING and time_s - self.start_time_s > task.time_limit_s:
            self.status = TaskStatus.FAILED
            self.reason = (f"time limit {task.time_limit_s:g} s (closest to target "
                           f"{self.min_target_distance_m * 100:.1f} cm, pushed {self.max_progress_m * 100:.1f} cm)")
        return self.status

    def summary(self) -> dict:
        return {
            "task": self.task.name, "status": self.status, "reason": self.reason,
            "duration_s": (self.success_time_s - self.start_time_s)
            if self.success_time_s is not None and self.start_time_s is not None else None,
            "min_target_distance_m": self.min_target_distance_m if math.isfinite(self.min_target_distance_m) else None,
            "min_distractor_distance_m": self.min_distractor_distance_m
            if math.isfinite(self.min_distractor_distance_m) else None,
            "max_push_progress_m": self.max_progress_m,
        }


TASKS: dict[str, Task] = {
    t.name: t for t in (
        Task("touch_red", "touch the red cube", "touch", "red_cube", "blue_cube"),
        Task("touch_blue", "touch the blue cube", "touch", "blue_cube", "red_cube"),
        Task("push_red_left", "push the red cube to the left", "push", "red_cube", "blue_cube",
             distractor_radius_m=0.03),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; tasks: {', '.join(TASK_NAMES)}") from None


def resolve_tasks(spec: str | Sequence[str]) -> list[Task]:
    """``'all'`` or a comma-separated list / sequence of task names."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return list(TASKS.values())
    return [get_task(n) for n in names]


def task_for_instruction(instruction: str) -> Optional[Task]:
    text = instruction.strip().lower()
    for task in TASKS.values():
        if task.instruction == text:
            return task
    return None
