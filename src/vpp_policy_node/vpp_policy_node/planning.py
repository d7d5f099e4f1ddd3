"""ROS-free core of the policy node: observations in, timed action chunks out.

The ROS node (:mod:`vpp_policy_node.policy_node`) only feeds :class:`ObservationBuffer` from its
subscriptions and publishes what :class:`PlanningLoop` hands back; everything that decides
*whether* and *when* to plan lives here, where it can be tested without DDS.

Timing model. All stamps are seconds on the graph's clock (the ROS clock). A chunk is stamped
with the capture time of the observation it was planned from; its step ``i`` runs at
``stamp + i * dt`` (+ the executor's latency offset). To keep the robot moving between chunks
the next plan starts early enough that its chunk arrives after ``replan_after_steps`` steps of
the current one: at ``stamp + replan_after_steps * dt - expected_latency``.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import numpy as np


@dataclass
class PolicyNodeConfig:
    """Parameters of the policy node (each becomes a ROS parameter of the same name)."""

    embodiment: str = field(default="panda", metadata={"help": "action space / robot: panda or xhand"})
    checkpoint: str = field(default="", metadata={"help": "checkpoint directory; empty: tiny random policy (warns)"})
    fallback_preset: str = field(default="panda-tiny", metadata={"help": "preset built when no checkpoint is given"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if present), cuda, cuda:N or cpu"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (GPU; slow first plan)"})
    resize_images: bool = field(default=True, metadata={
        "help": "stretch camera frames to the model's square input size (must match the dataset converter)"})
    fallback_action_low: tuple[float, ...] = field(
        default=(-0.02, -0.02, -0.02, -0.05, -0.05, -0.05, 0.0),
        metadata={"help": "no checkpoint only: action value a random output of -1 maps to"})
    fallback_action_high: tuple[float, ...] = field(
        default=(0.02, 0.02, 0.02, 0.05, 0.05, 0.05, 1.0),
        metadata={"help": "no checkpoint only: action value a random output of +1 maps to"})
    sampling_steps: int = field(default=0, metadata={"help": "diffusion steps per plan; 0: the checkpoint's"})
    samples_per_plan: int = field(default=1, metadata={
        "help": "chunks drawn per observation and averaged (1: one draw, as trained; >1 only for unimodal tasks)"})
    torch_threads: int = field(default=0, metadata={
        "help": "CPU threads for inference; 0: torch's default (every core)"})
    process_nice: int = field(default=0, metadata={
        "help": "raise this process's niceness by this much at start (0-19): on a CPU-only machine that also "
                "runs the arm's control loop or a simulator, planning must not starve them"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling noise (deterministic plans)"})
    view_names: tuple[str, ...] = field(default=("static", "wrist"),
                                        metadata={"help": "policy camera views, in model order"})
    image_topics: tuple[str, ...] = field(default=("/static_camera/image_raw", "/wrist_camera/image_raw"),
                                          metadata={"help": "image topic per view (same order as view_names)"})
    ee_pose_topic: str = field(default="/ee_pose", metadata={"help": "geometry_msgs/PoseStamped of the end effector"})
    joint_state_topic: str = field(default="/joint_states", metadata={"help": "sensor_msgs/JointState (proprio)"})
    proprio_joint_names: tuple[str, ...] = field(
        default=(), metadata={"help": "joints whose positions form the proprio vector, in order; empty: the "
                                      "checkpoint's (the data set's proprio_names), for a policy with proprio"})
    chunk_topic: str = field(default="/action_chunk", metadata={"help": "where ActionChunk messages go"})
    instruction_topic: str = field(default="/task_language", metadata={"help": "std_msgs/String instructions"})
    executor_hold_service: str = field(default="/franka_executor/hold",
                                       metadata={"help": "std_srvs/Trigger called when an empty instruction stops the task"})
    frame_id: str = field(default="fr3_link0", metadata={"help": "robot base frame of reference poses"})
    action_dt: float = field(default=0.1, metadata={"help": "time between chunk steps [s] (the training data's rate)"})
    replan_after_steps: int = field(default=5, metadata={"help": "plan the next chunk to arrive after this many steps"})
    max_image_age: float = field(default=0.5, metadata={"help": "refuse to plan on images older than this [s]"})
    max_view_skew: float = field(default=0.1, metadata={"help": "refuse to plan when views' stamps differ more [s]"})
    max_pose_age: float = field(default=0.2, metadata={"help": "max gap between image stamp and nearest EE pose [s]"})
    max_instruction_chars: int = field(default=300, metadata={"help": "longer instructions are refused"})
    status_period: float = field(default=0.5, metadata={"help": "PolicyStatus publish period [s]"})

    def __post_init__(self) -> None:
        if len(self.view_names) != len(self.image_topics):
            raise ValueError(f"{len(self.view_names)} view_names but {len(self.image_topics)} image_topics")
        if self.action_dt <= 0 or self.replan_after_steps < 1:
            raise ValueError("action_dt must be > 0 and replan_after_steps >= 1")
        if self.samples_per_plan < 1:
            raise ValueError(f"samples_per_plan must be >= 1, got {self.samples_per_plan}")
        if not 0 <= self.process_nice <= 19 or self.torch_threads < 0:
            raise ValueError(f"process_nice must be in [0, 19] and torch_threads >= 0, got {self.process_nice} "
                             f"and {self.torch_threads}")


# ------------------------------------------------------------------------------ instructions

@dataclass(frozen=True)
class InstructionDecision:
    kind: str  # "start", "stop" or "reject"
    text: str = ""
    reason: str = ""


def check_instruction(raw: object, max_chars: int) -> InstructionDecision:
    """Decide what a message on /task_language means. Never raises."""
    if not isinstance(raw, str):
        return InstructionDecision("reject", reason=f"instruction is not text ({type(raw).__name__})")
    text = " ".join(raw.split())
    if not text:
        return InstructionDecision("stop", reason="empty instruction: stop and hold")
    if len(text) > max_chars:
        return InstructionDecision("reject", reason=f"instruction has {len(text)} characters, more than "
                                                    f"max_instruction_chars={max_chars}; send a shorter one")
    bad = [c for c in text if c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")]
    if bad:
        return InstructionDecision("reject", reason=f"instruction holds {len(bad)} control/undecodable "
                                                    f"characters (first {bad[0]!r}); is it garbled?")
    letters = sum(c.isalpha() for c in text)
    if letters < max(1, len(text) // 3):
        return InstructionDecision("reject", reason=f"instruction {text[:40]!r} has too few letters to be "
                                                    "an instruction; is it garbled?")
    return InstructionDecision("start", text=text)


def resolve_proprio_joint_names(configured: tuple[str, ...], proprio_dim: int,
                                checkpoint_names: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The joints whose positions make the policy's proprio vector, in order.

    ``configured`` (the node parameter) wins; empty takes ``checkpoint_names`` (the data set's
    ``proprio_names`` that stage 2 stores), so a checkpoint trained with proprio runs without
    repeating its joint list in YAML. Raises ValueError, saying what to set, when the result does
    not give ``proprio_dim`` values or contradicts the checkpoint.
    """
    configured, checkpoint_names = tuple(configured), tuple(checkpoint_names)
    if proprio_dim <= 0:
        return ()
    names = configured or checkpoint_names
    if not names:
        raise ValueError(f"the policy takes a {proprio_dim}-d proprio vector: set proprio_joint_names "
                         "(the checkpoint does not name its joints)")
    if len(names) != proprio_dim:
        raise ValueError(f"the policy takes a {proprio_dim}-d proprio vector but proprio_joint_names "
                         f"lists {len(names)} joints")
    if configured and checkpoint_names and configured != checkpoint_names:
        raise ValueError(f"proprio_joint_names {list(configured)} differ from the joints the checkpoint was "
                         f"trained on {list(checkpoint_names)}; leave the parameter empty to use the checkpoint's")
    return names


# ------------------------------------------------------------------------------ observations

@dataclass(frozen=True)
class Observation:
    images: dict[str, np.ndarray]  # view -> HxWx3 uint8 RGB
    stamp: float  # capture time used for the chunk: the oldest view's stamp
    reference_position: np.ndarray  # [3] m, base frame
    reference_quaternion: np.ndarray  # [4] xyzw
    proprio: Optional[np.ndarray]


class ObservationBuffer:
    """Newest frame per view plus a short history of end-effector poses. Thread-safe."""

    def __init__(self, view_names: tuple[str, ...], pose_history: int = 400) -> None:
        self._views = tuple(view_names)
        self._lock = threading.Lock()
        self._frames: dict[str, tuple[float, np.ndarray]] = {}
        self._poses: collections.deque[tuple[float, np.ndarray, np.ndarray]] = collections.deque(maxlen=pose_history)
        self._proprio: Optional[tuple[float, np.ndarray]] = None

    def add_frame(self, view: str, stamp: float, image: np.ndarray) -> None:
        if view not in self._views:
            raise KeyError(f"unknown view {view!r}; views: {self._views}")
        with self._lock:
            self._frames[view] = (stamp, image)

    def add_pose(self, stamp: float, position: np.ndarray, quaternion_xyzw: np.ndarray) -> None:
        position = np.asarray(position, dtype=np.float64)
        quaternion_xyzw = np.asarray(quaternion_xyzw, dtype=np.float64)
        if not (np.isfinite(position).all() and np.isfinite(quaternion_xyzw).all()):
            return  # a NaN pose must never become a chunk's reference
        with self._lock:
            if self._poses and stamp < self._poses[-1][0]:
                return
            self._poses.append((stamp, position, quaternion_xyzw))

    def add_proprio(self, stamp: float, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32)
        if np.isfinite(values).all():
            with self._lock:
                self._proprio = (stamp, values)

    def snapshot(self, now: float, cfg: PolicyNodeConfig, need_proprio: bool) -> tuple[Optional[Observation], str]:
        """A complete, fresh observation, or None and the reason (for the log and the status)."""
        with self._lock:
            frames = dict(self._frames)
            poses = list(self._poses)
            proprio = self._proprio
        missing = [v for v in self._views if v not in frames]
        if missing:
            return None, f"no image yet from view(s) {missing}"
        stamps = {v: frames[v][0] for v in self._views}
        ages = {v: now - s for v, s in stamps.items()}
        stale = {v: a for v, a in ages.items() if a > cfg.max_image_age}
        if stale:
            worst = max(stale, key=stale.get)
            return None, (f"image from view {worst!r} is {stale[worst]:.2f} s old "
                          f"(max_image_age={cfg.max_image_age} s)")
        skew = max(stamps.values()) - min(stamps.values())
        if skew > cfg.max_view_skew:
            return None, f"views are {skew:.3f} s apart (max_view_skew={cfg.max_view_skew} s)"
        stamp = min(stamps.values())
        if not poses:
            return None, "no end-effector pose received yet"
        times = np.array([p[0] for p in poses])
        nearest = int(np.argmin(np.abs(times - stamp)))
        if abs(times[nearest] - stamp) > cfg.max_pose_age:
            return None, (f"nearest end-effector pose is {abs(times[nearest] - stamp):.3f} s from the image "
                          f"stamp (max_pose_age={cfg.max_pose_age} s)")
        proprio_values = None
        if need_proprio:
            if proprio is None:
                return None, "no joint state for the proprio vector yet"
            if now - proprio[0] > cfg.max_image_age:
                return None, f"joint state is {now - proprio[0]:.2f} s old"
            proprio_values = proprio[1]
        return Observation(
            images={v: frames[v][1] for v in self._views},
            stamp=stamp,
            reference_position=poses[nearest][1],
            reference_quaternion=poses[nearest][2],
            proprio=proprio_values,
        ), ""


# ------------------------------------------------------------------------------ planning loop

class ChunkPlanner(Protocol):
    """What the loop needs from the inference engine."""

    def plan(self, images: dict[str, np.ndarray], instruction: str, proprio: Optional[np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class PlannedChunk:
    actions: np.ndarray
    observation: Observation
    instruction: str
    planning_latency: float
    sequence_id: int


@dataclass
class PlannerStatus:
    state: str = "idle"  # idle | planning | waiting | error
    instruction: str = ""
    reason: str = "no instruction yet"
    chunks_published: int = 0
    last_planning_latency: float = 0.0


class PlanningLoop:
    """Plans chunks on its own thread while an instruction is active.

    ``clock`` returns the graph's time in seconds; ``publish`` receives each :class:`PlannedChunk`
    (called from the planning thread); ``on_state`` receives :class:`PlannerStatus` copies when
    the state or its reason changes.
    """

    def __init__(self, cfg: PolicyNodeConfig, planner: ChunkPlanner, buffer: ObservationBuffer,
                 clock: Callable[[], float], publish: Callable[[PlannedChunk], None],
                 on_state: Callable[[PlannerStatus], None] = lambda s: None,
                 need_proprio: bool = False) -> None:
        self.cfg = cfg
        self.planner = planner
        self.buffer = buffer
        self.clock = clock
        self.publish = publish
        self.on_state = on_state
        self.need_proprio = need_proprio
        self.status = PlannerStatus()
        self._cond = threading.Condition()
        self._instruction: Optional[str] = None
        self._generation = 0  # bumps on every new instruction, so a plan for an old one is dropped
        self._next_plan_time = 0.0
        self._latency_estimate = 0.0
        self._sequence = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="vpp-planning", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def set_instruction(self, text: Optional[str]) -> None:
        """Start planning for ``text``; None stops planning."""
        with self._cond:
            self._instruction = text
            self._generation += 1
            self._next_plan_time = 0.0
            self._cond.notify_all()
        if text is None:
            self._set_state("idle", "", "stopped by an empty instruction")
        else:
            self._set_state("planning", text, "planning")

    def _set_state(self, state: str, instruction: str, reason: str) -> None:
        changed = (state, reason) != (self.status.state, self.status.reason)
        self.status.state, self.status.instruction, self.status.reason = state, instruction, reason
        if changed:
            self.on_state(dataclasses.replace(self.status))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self._instruction is None:
                    self._cond.wait()
                if self._stop:
                    return
                instruction, generation = self._instruction, self._generation
                wait = self._next_plan_time - self.clock()
                if wait > 0:
                    self._cond.wait(timeout=min(wait, 0.05))
                    continue
            obs, reason = self.buffer.snapshot(self.clock(), self.cfg, self.need_proprio)
            if obs is None:
                self._set_state("waiting", instruction, reason)
                with self._cond:
                    self._cond.wait(timeout=0.02)
                continue
            started = time.perf_counter()
            try:
                actions = self.planner.plan(obs.images, instruction, obs.proprio)
            except Exception as exc:  # noqa: BLE001 - a bad plan must not kill the node
                self._set_state("error", instruction, f"planning failed: {type(exc).__name__}: {exc}")
                with self._cond:
                    self._cond.wait(timeout=0.5)
                continue
            latency = time.perf_counter() - started
            with self._cond:
                if generation != self._generation or self._stop:
                    continue  # the instruction changed while planning: this chunk is for the old one
                self._sequence += 1
                seq = self._sequence
                self._latency_estimate = latency if self._latency_estimate == 0 else (
                    0.7 * self._latency_estimate + 0.3 * latency)
                self._next_plan_time = (obs.stamp + self.cfg.replan_after_steps * self.cfg.action_dt
                                        - self._latency_estimate)
            self.status.chunks_published += 1
            self.status.last_planning_latency = latency
            self._set_state("planning", instruction, "planning")
            self.publish(PlannedChunk(np.asarray(actions, dtype=np.float32), obs, instruction, latency, seq))
