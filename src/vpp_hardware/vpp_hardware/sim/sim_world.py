"""The simulated tabletop world: franky-sim's FR3 + table + cubes + rendered cameras.

One process runs three things:

* the physics thread: franky-sim's :class:`SimulationServer` (libfranka protocol on
  ``host``:1337/1338, so ``franky.Robot(host)`` drives the simulated arm exactly as a real one)
  stepped at 1 kHz and paced against the host clock;
* the render thread: renders the cameras offscreen from copies of the physics state, so the
  10-40 ms a CPU render takes never stalls the 1 kHz control loop;
* the caller's thread: pose queries, resets and camera reads.

Time stamps. A frame shows the physics state right after one physics step. Its
``capture_time_s`` is the host system time at the end of that step, the moment franky-sim
sends the robot state of that same step to the libfranka client, so frames and robot states
stamped on receipt share one clock. ``hardware_timestamp_s`` is the simulation time
(``MjData.time``) of the step; franky's ``robot.state.time`` advances by the same 1 ms per step
(it counts steps since the client connected). Cameras are scheduled in simulation time: at
``fps`` they show states ``1/fps`` simulated seconds apart even when the simulation runs
slower or faster than real time.
"""

from __future__ import annotations

import logging
import math
import select
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from franky_sim import DEFAULT_INITIAL_JOINT_POS, SimulationServer
from franky_sim.mujoco_simulator import MujocoSimulator

from vpp_hardware.cameras.camera import Frame, FrameSlot
from vpp_hardware.cameras.mujoco.configuration_mujoco import MujocoCameraConfig
from vpp_hardware.sim.configuration_sim import SimWorldConfig
from vpp_hardware.sim.scene import ROBOT_PREFIX, build_tabletop, object_joint_name

__all__ = ["ObjectPose", "SimWorld", "SimWorldStats", "reset_seed"]

logger = logging.getLogger(__name__)

_PHYSICS_PERIOD_S = 0.001  # franky-sim's fixed MuJoCo time step
_MAX_CATCH_UP_S = 0.05  # further behind than this, the pacer stops trying to catch up
# Consecutive unanswered states after which a client counts as gone (hung, or killed without
# closing its motion): the physics stops waiting for it until it answers again.
_MAX_UNANSWERED_STATES = 20


def reset_seed(world_seed: int, reset_index: int) -> int:
    """Seed of reset number ``reset_index`` of a world seeded ``world_seed`` (both >= 0).

    Mixed rather than added: with ``world_seed + reset_index``, worlds seeded s and s + 1 replayed
    each other's layouts one reset apart, so evaluations under neighbouring seeds were not
    independent samples.
    """
    if world_seed < 0 or reset_index < 0:
        raise ValueError(f"seeds must be >= 0, got world seed {world_seed} and reset index {reset_index}")
    return int(np.random.SeedSequence([int(world_seed), int(reset_index)]).generate_state(1)[0])


@dataclass(frozen=True)
class ObjectPose:
    """Pose of a body in the robot base frame.

    Attributes:
        position: ``(3,)`` metres.
        quaternion_wxyz: ``(4,)`` unit quaternion, scalar first.
    """

    position: np.ndarray
    quaternion_wxyz: np.ndarray


@dataclass(frozen=True)
class SimWorldStats:
    """Health figures of a running world.

    Attributes:
        sim_time_s: simulation time of the last physics step.
        realtime_factor: simulated seconds per host second since start.
        frames_rendered: per camera, frames published.
        frames_skipped: per camera, scheduled frames superseded before the renderer got to them.
        render_time_p50_ms, render_time_p99_ms: per camera, over the last 1000 renders.
        physics_error: why the physics thread stopped, if it did.
        render_error: why the render thread stopped, if it did.
        stale_command_steps: physics steps of a motion integrated with the previous command
            because the libfranka client had not answered the last state (within
            ``command_wait_s``, when that is > 0).
    """

    sim_time_s: float
    realtime_factor: float
    frames_rendered: dict[str, int]
    frames_skipped: dict[str, int]
    render_time_p50_ms: dict[str, float]
    render_time_p99_ms: dict[str, float]
    physics_error: str | None
    render_error: str | None
    stale_command_steps: int = 0


class _CommandLockstep:
    """Makes a physics step wait for the libfranka client's answer to the last state sent.

    franky-sim's robot server hands each received UDP command to ``_handle_udp_command``; an
    instance attribute of the same name counts them before passing them on (franky-sim offers
    no public hook). Only motions are waited for: an idle client sends nothing.
    """

    def __init__(self, robot_server: Any, wait_s: float) -> None:
        self._robot_server = robot_server
        self._wait_s = wait_s
        self.commands_received = 0
        self._received_when_state_sent = 0
        self._unanswered_in_a_row = 0
        self.stale_command_steps = 0
        handler = robot_server._handle_udp_command

        def count_then_handle(command_data: bytes) -> None:
            self.commands_received += 1
            handler(command_data)

        robot_server._handle_udp_command = count_then_handle

    def await_answer(self, stop_event: threading.Event) -> None:
        """Process the robot server's input until the client answered the last state (or timeout)."""
        robot_server = self._robot_server
        if self.commands_received > self._received_when_state_sent:
            self._unanswered_in_a_row = 0
            return
        if robot_server.current_motion_id == 0 or not robot_server.udp_connected:
            return  # no motion: nothing to answer
        if self._wait_s > 0 and self._unanswered_in_a_row < _MAX_UNANSWERED_STATES:
            deadline = time.monotonic() + self._wait_s
            while not stop_event.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # The UDP socket is franky-sim's private attribute: without it, poll by sleeping.
                udp_socket = getattr(robot_server, "_FrankaServer__udp_socket", None)
                if udp_socket is not None:
                    select.select([udp_socket], [], [], min(remaining, 0.005))
                else:
                    time.sleep(min(remaining, 0.0002))
                robot_server.process_commands()
                if self.commands_received > self._received_when_state_sent:
                    self._unanswered_in_a_row = 0
                    return
                if robot_server.current_motion_id == 0:  # the motion ended (or was stopped) meanwhile
                    return
            self._unanswered_in_a_row += 1
            if self._unanswered_in_a_row == _MAX_UNANSWERED_STATES:
                logger.warning("the libfranka client stopped answering during a motion; the simulation runs "
                               "on without waiting until it answers again")
        self.stale_command_steps += 1

    def state_sent(self) -> None:
        self._received_when_state_sent = self.commands_received


@dataclass
class _RenderRequest:
    qpos: np.ndarray
    sim_time_s: float
    capture_time_s: float
    frame_numbers: dict[str, int]


class _TabletopSimulator(MujocoSimulator):
    """franky-sim's MuJoCo simulator with hooks around each physics step.

    ``step_lock`` is held while MuJoCo integrates, so other threads read a consistent state.
    """

    def __init__(self, world: SimWorld) -> None:
        super().__init__(enable_visualization=False)
        self.step_lock = threading.Lock()
        self._world = world

    def _step(self) -> None:
        with self.step_lock:
            self._world._before_physics_step()
            super()._step()
            self._world._after_physics_step()


class SimWorld:
    """The simulated tabletop world (see the module docstring).

    Use as a context manager or call :meth:`start` / :meth:`stop`::

        with SimWorld() as world:
            robot = franky.Robot(world.host, realtime_config=franky.RealtimeConfig.Ignore)
            frame = MujocoCamera(world, "wrist").read()
    """

    def __init__(self, config: SimWorldConfig | None = None) -> None:
        self.config = config if config is not None else SimWorldConfig()
        self._camera_configs: dict[str, MujocoCameraConfig] = {
            camera.name: camera for camera in self.config.cameras
        }
        self._frame_slots = {name: FrameSlot() for name in self._camera_configs}
        self._rng = np.random.default_rng(self.config.seed)
        self._sim: _TabletopSimulator | None = None
        self._server: SimulationServer | None = None
        self._model: Any = None
        self._data: Any = None
        self._running = False
        self._stop_event = threading.Event()
        self._physics_thread: threading.Thread | None = None
        self._render_thread: threading.Thread | None = None
        self._physics_error: str | None = None
        self._render_error: str | None = None
        self._started_monotonic_s = 0.0
        self._started_sim_time_s = 0.0
        # Set in start(): model addresses.
        self._object_qpos: dict[str, int] = {}
        self._object_dof: dict[str, int] = {}
        self._body_ids: dict[str, int] = {}
        # Physics-thread render scheduling.
        self._next_due_s: dict[str, float] = {}
        self._frame_counters: dict[str, int] = {}
        # Hand-over to the render thread.
        self._render_condition = threading.Condition()
        self._pending_render: _RenderRequest | None = None
        self._frames_rendered = {name: 0 for name in self._camera_configs}
        self._frames_skipped = {name: 0 for name in self._camera_configs}
        self._render_times_s = {name: deque(maxlen=1000) for name in self._camera_configs}
        self._render_stats_lock = threading.Lock()
        # Hand-over of resets to the physics thread.
        self._pending_reset: dict[str, ObjectPose] | None = None
        self._reset_applied = threading.Event()
        self._lockstep: list[_CommandLockstep] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SimWorld:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def is_running(self) -> bool:
        """True while physics and rendering run without error."""
        return self._running and self._physics_error is None and self._render_error is None

    @property
    def host(self) -> str:
        """The address the libfranka server is bound to (robot port 1337, gripper 1338)."""
        if self._server is None or not self._server.robot_servers:
            raise RuntimeError("SimWorld is not started")
        return self._server.robot_servers[0].hostname

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self._camera_configs)

    @property
    def object_names(self) -> tuple[str, ...]:
        return tuple(obj.name for obj in self.config.objects)

    @property
    def model(self) -> Any:
        """The compiled ``mujoco.MjModel`` (read-only use), None before start."""
        return self._model

    def camera_config(self, name: str) -> MujocoCameraConfig:
        try:
            return self._camera_configs[name]
        except KeyError:
            raise KeyError(f"no camera {name!r}; cameras: {', '.join(self.camera_names)}") from None

    def frame_slot(self, camera_name: str) -> FrameSlot:
        """Where the render thread publishes the frames of ``camera_name``."""
        self.camera_config(camera_name)
        return self._frame_slots[camera_name]

    def start(self) -> None:
        """Build the scene, bind the libfranka server, start physics and rendering.

        Raises:
            OSError: none of the configured hosts had ports 1337/1338 free.
            RuntimeError: the renderer could not be created (no OpenGL backend).
        """
        if self._running:
            return
        if self._sim is not None:
            raise RuntimeError("a SimWorld cannot be restarted; create a new one")
        config = self.config
        sim = _TabletopSimulator(self)
        sim.init()
        initial_q = config.initial_joint_positions or DEFAULT_INITIAL_JOINT_POS
        sim.add_robot(initial_q=tuple(float(q) for q in initial_q),
                      position=(0.0, 0.0, config.table_height_m))
        build_tabletop(sim.scene, sim.worldbody, config)
        server = SimulationServer(sim, hostname_candidates=[config.host, *config.fallback_hosts])
        self._sim, self._server = sim, server
        try:
            server.init()  # binds the ports, then compiles the model (sim.start())
            self._lockstep = [_CommandLockstep(robot_server, config.command_wait_s)
                              for robot_server in server.robot_servers]
            self._model, self._data = sim.model, sim.data
            self._resolve_addresses()
            self._apply_object_poses(self._sample_object_poses(self._rng))
            mujoco.mj_forward(self._model, self._data)
            now_sim = self._start_rendering()
        except BaseException:
            self._shutdown_server()
            raise
        self._start_physics(now_sim)
        logger.info("SimWorld running; libfranka server on %s", self.host)

    def _start_rendering(self) -> float:
        """Schedule every camera from the current simulated time and start the render thread.

        Returns that simulated time. Raises RuntimeError when offscreen rendering is unavailable.
        """
        now_sim = float(self._data.time)
        for name in self._camera_configs:
            self._next_due_s[name] = now_sim
            self._frame_counters[name] = 0
        for slot in self._frame_slots.values():
            slot.reopen()
        self._stop_event.clear()
        render_ready = threading.Event()
        self._render_thread = threading.Thread(
            target=self._render_loop, args=(render_ready,), name="sim-render", daemon=True
        )
        self._render_thread.start()
        render_ready.wait()
        if self._render_error is not None:
            raise RuntimeError(
                f"offscreen rendering unavailable: {self._render_error}. Without a display "
                "set MUJOCO_GL=osmesa (needs the libosmesa6 package) or egl before mujoco "
                "is first imported."
            )
        return now_sim

    def _start_physics(self, now_sim: float) -> None:
        """Start stepping the simulation from ``now_sim`` (the time rendering was scheduled from)."""
        self._running = True
        self._started_monotonic_s = time.monotonic()
        self._started_sim_time_s = now_sim
        self._physics_thread = threading.Thread(
            target=self._physics_loop, name="sim-physics", daemon=True
        )
        self._physics_thread.start()

    def stop(self) -> None:
        """Stop physics and rendering, disconnect clients and release the ports."""
        if self._sim is None:
            return
        self._running = False
        self._stop_event.set()
        with self._render_condition:
            self._render_condition.notify_all()
        for thread in (self._physics_thread, self._render_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=10.0)
        self._physics_thread = self._render_thread = None
        self._reset_applied.set()  # release a reset() caller still waiting
        for slot in self._frame_slots.values():
            slot.close("the simulated world stopped")
        self._shutdown_server()

    def _shutdown_server(self) -> None:
        server, sim = self._server, self._sim
        if server is not None:
            for robot_server in server.robot_servers:
                # Close the client connections too, so a connected franky client notices.
                if robot_server.gripper_server is not None:
                    robot_server.gripper_server.reset_state()
                robot_server.reset_state()
            server.cleanup()
        if sim is not None and sim.is_initialized and not sim.is_cleaned_up:
            sim.cleanup()
        self._server = None

    # ------------------------------------------------------------------ queries and reset

    def _resolve_addresses(self) -> None:
        model = self._model
        for obj in self.config.objects:
            joint_name = object_joint_name(obj.name)
            joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint_name)
            self._object_qpos[obj.name] = int(model.jnt_qposadr[joint_id])
            self._object_dof[obj.name] = int(model.jnt_dofadr[joint_id])
        for name in [ROBOT_PREFIX + "base", ROBOT_PREFIX + "hand"] + list(self.object_names):
            body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
            if body_id < 0:
                raise RuntimeError(f"body {name!r} missing from the compiled scene")
            self._body_ids[name] = body_id

    def _require_started(self) -> None:
        if self._sim is None or self._model is None or self._server is None:
            raise RuntimeError("SimWorld is not running")

    def _base_frame(self) -> tuple[np.ndarray, np.ndarray]:
        base = self._body_ids[ROBOT_PREFIX + "base"]
        return self._data.xpos[base].copy(), self._data.xquat[base].copy()

    def body_pose(self, body_name: str) -> ObjectPose:
        """Pose of a MuJoCo body (by full model name) in the robot base frame."""
        self._require_started()
        body_id = self._body_ids.get(body_name)
        if body_id is None:
            body_id = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_BODY, body_name)
            if body_id < 0:
                raise KeyError(f"no body {body_name!r} in the simulated world")
        with self._sim.step_lock:
            position = self._data.xpos[body_id].copy()
            quaternion = self._data.xquat[body_id].copy()
            base_position, base_quaternion = self._base_frame()
        base_inverse = np.empty(4)
        mujoco.mju_negQuat(base_inverse, base_quaternion)
        local_position = np.empty(3)
        mujoco.mju_rotVecQuat(local_position, position - base_position, base_inverse)
        local_quaternion = np.empty(4)
        mujoco.mju_mulQuat(local_quaternion, base_inverse, quaternion)
        return ObjectPose(position=local_position, quaternion_wxyz=local_quaternion)

    def object_pose(self, name: str) -> ObjectPose:
        """Pose of one of the configured objects in the robot base frame."""
        if name not in self._object_qpos and name not in self.object_names:
            raise KeyError(f"no object {name!r}; objects: {', '.join(self.object_names)}")
        return self.body_pose(name)

    def object_poses(self) -> dict[str, ObjectPose]:
        """Poses of all configured objects in the robot base frame."""
        return {name: self.object_pose(name) for name in self.object_names}

    def hand_pose(self) -> ObjectPose:
        """Pose of the robot's hand body (the gripper housing) in the robot base frame."""
        return self.body_pose(ROBOT_PREFIX + "hand")

    @property
    def sim_time_s(self) -> float:
        self._require_started()
        return float(self._data.time)

    def _sample_object_poses(self, rng: np.random.Generator) -> dict[str, ObjectPose]:
        config = self.config
        for _attempt in range(1000):
            poses: dict[str, ObjectPose] = {}
            for obj in config.objects:
                x = rng.uniform(*config.object_region_x_m)
                y = rng.uniform(*config.object_region_y_m)
                yaw = rng.uniform(-math.pi, math.pi)
                poses[obj.name] = ObjectPose(
                    position=np.array([x, y, obj.half_size_m]),
                    quaternion_wxyz=np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]),
                )
            centres = [p.position[:2] for p in poses.values()]
            if all(
                np.linalg.norm(a - b) >= config.min_object_separation_m
                for i, a in enumerate(centres) for b in centres[i + 1:]
            ):
                return poses
        raise ValueError(
            "cannot place the objects with the configured separation inside the object region"
        )

    def _apply_object_poses(self, poses: dict[str, ObjectPose]) -> None:
        """Write object poses (base frame) into the physics state; physics thread or not started."""
        base_position, base_quaternion = self._base_frame()
        data = self._data
        for name, pose in poses.items():
            address, dof = self._object_qpos[name], self._object_dof[name]
            world_position = np.empty(3)
            mujoco.mju_rotVecQuat(world_position, pose.position, base_quaternion)
            world_quaternion = np.empty(4)
            mujoco.mju_mulQuat(world_quaternion, base_quaternion, pose.quaternion_wxyz)
            data.qpos[address:address + 3] = world_position + base_position
            data.qpos[address + 3:address + 7] = world_quaternion
            data.qvel[dof:dof + 6] = 0.0

    def reset(self, seed: int | None = None, timeout_s: float = 5.0) -> dict[str, ObjectPose]:
        """Place the objects at new random poses on the table and return them (base frame).

        The robot is not moved: home it through the robot client (franky), which owns it.

        Args:
            seed: seed for this reset (same seed, same poses); None continues the world's own
                random sequence (seeded by ``config.seed``).
            timeout_s: how long to wait for the physics thread to apply the reset.
        """
        self._require_started()
        if not self.is_running:
            raise RuntimeError(f"SimWorld is not running ({self._physics_error or 'stopped'})")
        rng = np.random.default_rng(seed) if seed is not None else self._rng
        poses = self._sample_object_poses(rng)
        with self._sim.step_lock:
            self._reset_applied.clear()
            self._pending_reset = poses
        if not self._reset_applied.wait(timeout_s):
            raise TimeoutError("the physics thread did not apply the reset in time")
        if not self.is_running:
            reason = self._physics_error or "stopped"
            raise RuntimeError(f"SimWorld stopped during reset ({reason})")
        return poses

    # ------------------------------------------------------------------ physics thread

    def _before_physics_step(self) -> None:
        if self._pending_reset is not None:
            self._apply_object_poses(self._pending_reset)

    def _after_physics_step(self) -> None:
        if self._pending_reset is not None:
            self._pending_reset = None
            self._reset_applied.set()
        now_sim = float(self._data.time)
        due = [name for name, t in self._next_due_s.items() if now_sim + 1e-9 >= t]
        if not due:
            return
        frame_numbers = {}
        for name in due:
            period = 1.0 / self._camera_configs[name].fps
            next_due = self._next_due_s[name] + period
            if next_due <= now_sim:  # more than a period late (e.g. after a stall): skip ahead
                next_due = now_sim + period
            self._next_due_s[name] = next_due
            self._frame_counters[name] += 1
            frame_numbers[name] = self._frame_counters[name]
        request = _RenderRequest(
            qpos=self._data.qpos.copy(),
            sim_time_s=now_sim,
            capture_time_s=time.time(),
            frame_numbers=frame_numbers,
        )
        with self._render_condition:
            previous = self._pending_render
            if previous is not None:
                # The renderer is behind: the newer state wins, older frames are skipped.
                for name in previous.frame_numbers:
                    self._frames_skipped[name] += 1
            self._pending_render = request
            self._render_condition.notify()

    def _physics_loop(self) -> None:
        server = self._server
        next_step_s = time.monotonic()
        try:
            while not self._stop_event.is_set():
                # franky-sim's SimulationServer.run_once (commands, step, state) without its
                # sleep, plus the wait for the client's answer before integrating.
                for robot_server in server.robot_servers:
                    robot_server.process_commands()
                for lockstep in self._lockstep:
                    lockstep.await_answer(self._stop_event)
                server.sim.step()
                for robot_server in server.robot_servers:
                    robot_server.send_state()
                for lockstep in self._lockstep:
                    lockstep.state_sent()
                if not self.config.realtime:
                    continue
                # Deadline pacing: sleep off what is left of this 1 ms, catch up small delays.
                next_step_s += _PHYSICS_PERIOD_S
                delay = next_step_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -_MAX_CATCH_UP_S:
                    next_step_s = time.monotonic()
        except Exception as error:  # recorded for stats()/is_running instead of dying silently
            self._physics_error = f"{type(error).__name__}: {error}"
            logger.exception("simulation physics stopped")
            self._running = False
            self._reset_applied.set()
            for slot in self._frame_slots.values():
                slot.close(f"simulation stopped: {self._physics_error}")

    # ------------------------------------------------------------------ render thread

    def _render_loop(self, ready: threading.Event) -> None:
        # GL contexts belong to the thread that created them: create, use and free them here.
        renderers: dict[tuple[int, int], Any] = {}
        try:
            render_data = mujoco.MjData(self._model)
            camera_ids = {}
            for name, camera in self._camera_configs.items():
                camera_ids[name] = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, name)
                size = (camera.height, camera.width)
                if size not in renderers:
                    renderer = mujoco.Renderer(self._model, height=size[0], width=size[1])
                    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.config.shadows
                    renderers[size] = renderer
        except Exception as error:
            self._render_error = f"{type(error).__name__}: {error}"
            ready.set()
            for renderer in renderers.values():
                renderer.close()
            return
        ready.set()
        try:
            while True:
                with self._render_condition:
                    while self._pending_render is None and not self._stop_event.is_set():
                        self._render_condition.wait()
                    if self._stop_event.is_set():
                        return
                    request, self._pending_render = self._pending_render, None
                render_data.qpos[:] = request.qpos
                render_data.time = request.sim_time_s
                # Positions of bodies, geoms, cameras and lights; no dynamics needed to draw.
                mujoco.mj_kinematics(self._model, render_data)
                mujoco.mj_comPos(self._model, render_data)
                mujoco.mj_camlight(self._model, render_data)
                for name, frame_number in request.frame_numbers.items():
                    camera = self._camera_configs[name]
                    renderer = renderers[(camera.height, camera.width)]
                    started = time.perf_counter()
                    renderer.update_scene(render_data, camera=camera_ids[name])
                    image = renderer.render()
                    with self._render_stats_lock:
                        self._render_times_s[name].append(time.perf_counter() - started)
                        self._frames_rendered[name] += 1
                    self._frame_slots[name].publish(
                        Frame(
                            image=image,
                            capture_time_s=request.capture_time_s,
                            hardware_timestamp_s=request.sim_time_s,
                            frame_number=frame_number,
                            camera_name=name,
                        )
                    )
        except Exception as error:
            self._render_error = f"{type(error).__name__}: {error}"
            logger.exception("simulation rendering stopped")
            for slot in self._frame_slots.values():
                slot.close(f"rendering stopped: {self._render_error}")
        finally:
            for renderer in renderers.values():
                renderer.close()

    # ------------------------------------------------------------------ stats

    def stats(self) -> SimWorldStats:
        """Current health figures (safe from any thread)."""
        elapsed = time.monotonic() - self._started_monotonic_s if self._running else 0.0
        sim_time = float(self._data.time) if self._data is not None else 0.0
        with self._render_stats_lock:
            render_times = {name: list(samples) for name, samples in self._render_times_s.items()}
            frames_rendered = dict(self._frames_rendered)
        p50, p99 = {}, {}
        for name, samples in render_times.items():
            values = np.array(samples) * 1e3
            p50[name] = float(np.percentile(values, 50)) if values.size else float("nan")
            p99[name] = float(np.percentile(values, 99)) if values.size else float("nan")
        return SimWorldStats(
            sim_time_s=sim_time,
            realtime_factor=(sim_time - self._started_sim_time_s) / elapsed if elapsed > 0 else 0.0,
            frames_rendered=frames_rendered,
            frames_skipped=dict(self._frames_skipped),
            render_time_p50_ms=p50,
            render_time_p99_ms=p99,
            physics_error=self._physics_error,
            render_error=self._render_error,
            stale_command_steps=sum(lockstep.stale_command_steps for lockstep in self._lockstep),
        )
