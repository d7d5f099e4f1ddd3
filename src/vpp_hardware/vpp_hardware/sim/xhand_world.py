"""The simulated XArm + XHand tabletop: MuJoCo xArm7 (or xArm6) + the project's XHand + table, cubes, cameras.

One process runs:

* the physics thread: MuJoCo at 500 Hz, paced against the host clock;
* the xArm controller: an :class:`~vpp_hardware.arms.xarm.loopback_peer.XArmLoopbackPeer`
  whose backend is the simulated arm, so the real ``XArmAPI`` client (and the project's
  :class:`~vpp_hardware.arms.xarm.xarm_arm.XArmArm`) drives it exactly like a real xArm; servo
  targets are followed at the configured joint speed limit, like the controller's servo mode;
* the render thread and camera scheduling of :class:`~vpp_hardware.sim.sim_world.SimWorld`
  (shared code: this class only replaces what is franky-specific);
* the hand: MuJoCo position servos on the 12 XHand joints, driven through
  :class:`~vpp_hardware.hands.mujoco_hand.MujocoXHand`.

The arm (xArm7 by default, or xArm6) is modelled from the published DH parameters
(:mod:`vpp_hardware.arms.xarm.kinematics`) with capsule links: the peer's forward/inverse
kinematics and the MuJoCo arm share one table. Link masses are rough (~10 kg total);
gravity on the arm links is compensated (``gravcomp``), as the real controller does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from types import SimpleNamespace

import mujoco
import numpy as np

from vpp_hardware.arms.xarm.kinematics import MODELS, XArmModel
from vpp_hardware.arms.xarm.loopback_peer import XArmBackend, XArmLoopbackPeer
from vpp_hardware.cameras.mujoco.configuration_mujoco import default_static_camera, default_wrist_camera
from vpp_hardware.description.xhand import model as xhand_model
from vpp_hardware.sim.configuration_sim import SimWorldConfig
from vpp_hardware.sim.scene import build_tabletop
from vpp_hardware.sim.sim_world import ObjectPose, SimWorld

__all__ = ["XHandSimConfig", "XHandSimWorld", "ARM_PREFIX", "HAND_PREFIX", "default_xhand_cameras"]

logger = logging.getLogger(__name__)

ARM_PREFIX = "xarm_"
HAND_PREFIX = "xhand_"
_TIMESTEP_S = 0.002
_MAX_CATCH_UP_S = 0.05
_LINK_MASSES_KG = (2.2, 2.1, 1.6, 1.3, 1.2, 1.0, 0.3)
_LINK_RADII_M = (0.05, 0.048, 0.045, 0.045, 0.04, 0.04, 0.035)


def default_xhand_cameras(width: int = 256, height: int = 256, fps: float = 10.0):
    """Static camera as for the Panda scene; wrist camera on the back of the hand (the palm
    faces +x of the palm frame, fingers along +z) looking past the fingers."""
    return (
        default_static_camera(width=width, height=height, fps=fps),
        default_wrist_camera(width=width, height=height, fps=fps, position=(-0.065, 0.0, 0.0),
                             look_at=(0.02, 0.0, 0.3), up=(-1.0, 0.0, 0.0), fovy_deg=75.0),
    )


@dataclass(kw_only=True)
class XHandSimConfig:
    """The XArm + XHand simulation.

    Attributes:
        world: table, objects, cameras, pacing (``host`` / ``initial_joint_positions`` of the
            Panda world are not used here).
        arm_model: "xarm7" (default; the xhand policy's proprio has 7 arm joints) or "xarm6".
        arm_initial_joints: start configuration [rad]; empty: the model's default (flange 0.4 m
            in front of the base, 0.4 m up, pointing down).
        hand_initial_joints: XHand start configuration [rad] (open hand).
        arm_max_joint_speed_radps: servo targets are followed at most this fast per joint.
        peer_host: serve the xArm protocol on TCP at this address (needs root for port 502);
            empty: the SDK's Unix sockets (one simulated xArm per machine).
        report_rate_hz: rate of the xArm 'real' report.
    """

    world: SimWorldConfig = field(default_factory=lambda: SimWorldConfig(cameras=default_xhand_cameras()))
    arm_model: str = "xarm7"
    arm_initial_joints: tuple[float, ...] = ()
    hand_initial_joints: tuple[float, ...] = (0.0,) * 12
    arm_max_joint_speed_radps: float = 2.0
    peer_host: str = ""
    report_rate_hz: float = 100.0

    def __post_init__(self) -> None:
        if self.arm_model not in MODELS:
            raise ValueError(f"arm_model must be one of {sorted(MODELS)}, got {self.arm_model!r}")
        if not self.arm_initial_joints:
            self.arm_initial_joints = DEFAULT_ARM_JOINTS[self.arm_model]
        if len(self.arm_initial_joints) != MODELS[self.arm_model].dof:
            raise ValueError(f"arm_initial_joints must have {MODELS[self.arm_model].dof} values")
        if len(self.hand_initial_joints) != len(xhand_model.JOINTS):
            raise ValueError(f"hand_initial_joints must have {len(xhand_model.JOINTS)} values")
        if not (math.isfinite(self.arm_max_joint_speed_radps) and self.arm_max_joint_speed_radps > 0):
            raise ValueError("arm_max_joint_speed_radps must be positive")


#: Start configurations: flange at (0.4, 0, 0.4) m in the base frame, pointing down.
DEFAULT_ARM_JOINTS = {
    "xarm7": (0.0, -0.247, 0.0, 0.909, 0.0, 1.156, 0.0),
    "xarm6": (0.0, -0.3, -0.9, 0.0, 1.2, 0.0),
}


def _fmt(values) -> str:
    return " ".join(f"{float(v):.7g}" for v in values)


def _quat_rx_rz(alpha: float, offset: float) -> tuple[float, float, float, float]:
    """Quaternion (w, x, y, z) of Rx(alpha) @ Rz(offset)."""
    qx = np.array([math.cos(alpha / 2), math.sin(alpha / 2), 0.0, 0.0])
    qz = np.array([math.cos(offset / 2), 0.0, 0.0, math.sin(offset / 2)])
    out = np.empty(4)
    mujoco.mju_mulQuat(out, qx, qz)
    return tuple(out)


def arm_mjcf(model: XArmModel, hand_xml: str) -> str:
    """The arm's body tree from its DH table, with ``hand_xml`` mounted on the flange.

    Body ``link<i>`` carries joint i; its frame is DH frame i-1 rotated by the joint angle plus
    the DH offset, so link i's geometry runs along z (d_i) then x (a_i).
    """
    lines = []
    depth = 0
    previous = None
    for index, joint in enumerate(model.joints, start=1):
        pad = "  " * (depth + 3)
        if previous is None:
            pos, quat = (0.0, 0.0, 0.0), _quat_rx_rz(0.0, joint.offset)
        else:
            pos, quat = (previous.a, 0.0, previous.d), _quat_rx_rz(previous.alpha, joint.offset)
        lines.append(f'{pad}<body name="{ARM_PREFIX}link{index}" pos="{_fmt(pos)}" quat="{_fmt(quat)}" gravcomp="1">')
        lines.append(f'{pad}  <joint name="{ARM_PREFIX}joint{index}" class="xarm" range="{joint.lower} {joint.upper}"/>')
        radius = _LINK_RADII_M[index - 1]
        mass = _LINK_MASSES_KG[index - 1]
        segments = []
        if joint.d > 1e-6:
            segments.append(((0, 0, 0), (0, 0, joint.d)))
        if joint.a > 1e-6:
            segments.append(((0, 0, joint.d), (joint.a, 0, joint.d)))
        if not segments:
            segments.append(((0, 0, -0.03), (0, 0, 0.03)))
        for start, end in segments:
            lines.append(f'{pad}  <geom class="xarm" type="capsule" fromto="{_fmt(start)} {_fmt(end)}" '
                         f'size="{radius}" mass="{mass / len(segments):.4g}"/>')
        previous = joint
        depth += 1
    pad = "  " * (depth + 3)
    flange_quat = _quat_rx_rz(previous.alpha, 0.0)
    lines.append(f'{pad}<body name="{ARM_PREFIX}flange" pos="{_fmt((previous.a, 0, previous.d))}" '
                 f'quat="{_fmt(flange_quat)}">')
    lines.append(f'{pad}  <site name="{ARM_PREFIX}flange_site" size="0.005"/>')
    lines.append(hand_xml)
    lines.append(f"{pad}</body>")
    for level in range(depth - 1, -1, -1):
        lines.append("  " * (level + 3) + "</body>")
    return "\n".join(lines)


def scene_xml(config: XHandSimConfig) -> str:
    """The full MJCF (before the tabletop is added): floor, light, arm base, arm, hand."""
    height = config.world.table_height_m
    arm = MODELS[config.arm_model]
    hand_xml = xhand_model.mjcf_hand_body(prefix=HAND_PREFIX, indent="  " * (arm.dof + 4))
    arm_xml = arm_mjcf(arm, hand_xml)
    arm_actuators = "\n".join(
        f'    <position name="{ARM_PREFIX}joint{i}" class="xarm" joint="{ARM_PREFIX}joint{i}"/>'
        for i in range(1, arm.dof + 1))
    return f"""<mujoco model="xarm6_xhand_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{_TIMESTEP_S}" integrator="implicitfast"/>
  <default>
    <default class="xarm">
      <joint damping="2.0" armature="0.1" limited="true"/>
      <geom contype="1" conaffinity="1" rgba="0.85 0.85 0.87 1"/>
      <position kp="4000" dampratio="1" inheritrange="1"/>
    </default>
{xhand_model.mjcf_defaults()}
  </default>
  <asset/>
  <visual><headlight ambient="0.4 0.4 0.4" diffuse="0.6 0.6 0.6"/></visual>
  <worldbody>
    <light name="top" pos="0.4 0 3" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="3 3 0.1" rgba="0.8 0.8 0.8 1"/>
    <body name="{ARM_PREFIX}base" pos="0 0 {height}">
      <geom class="xarm" type="cylinder" size="0.06 0.04" pos="0 0 0.04" contype="0" conaffinity="0"/>
{arm_xml}
    </body>
  </worldbody>
  <actuator>
{arm_actuators}
{xhand_model.mjcf_actuators(prefix=HAND_PREFIX)}
  </actuator>
</mujoco>
"""


class _MujocoArmBackend(XArmBackend):
    """The peer's view of the simulated arm: joint targets in, measured joints out."""

    def __init__(self, world: "XHandSimWorld") -> None:
        self.model = world.arm_model
        self._world = world

    def joint_positions(self) -> np.ndarray:
        return self._world.arm_joint_positions()

    def joint_torques(self) -> np.ndarray:
        return self._world.arm_joint_torques()

    def command_joints(self, q: np.ndarray) -> None:
        self._world.set_arm_joint_target(q)


class XHandSimWorld(SimWorld):
    """See the module docstring. Start/stop like :class:`SimWorld`; ``host`` is the address to
    give ``XArmAPI`` (with ``forbid_uds=False`` when the peer serves Unix sockets)."""

    def __init__(self, config: XHandSimConfig | None = None) -> None:
        self.xhand_config = config if config is not None else XHandSimConfig()
        super().__init__(self.xhand_config.world)
        self.arm_model: XArmModel = MODELS[self.xhand_config.arm_model]
        self.peer: XArmLoopbackPeer | None = None
        self._arm_qpos: np.ndarray = np.zeros(0, dtype=int)
        self._arm_dof: np.ndarray = np.zeros(0, dtype=int)
        self._arm_ctrl: np.ndarray = np.zeros(0, dtype=int)
        self._hand_qpos: np.ndarray = np.zeros(0, dtype=int)
        self._hand_ctrl: np.ndarray = np.zeros(0, dtype=int)
        self._arm_target = np.asarray(self.xhand_config.arm_initial_joints, dtype=float).copy()
        self._arm_command = self._arm_target.copy()
        self._hand_low = np.zeros(0)
        self._hand_high = np.zeros(0)

    # ------------------------------------------------------------------ lifecycle
    @property
    def host(self) -> str:
        if self.peer is None:
            raise RuntimeError("XHandSimWorld is not started")
        return self.peer.client_address

    @property
    def uses_unix_sockets(self) -> bool:
        return self.peer is not None and self.peer.uses_unix_sockets

    def start(self) -> None:
        if self._running:
            return
        if self._sim is not None:
            raise RuntimeError("a SimWorld cannot be restarted; create a new one")
        cfg = self.xhand_config
        scene = ET.fromstring(scene_xml(cfg))
        worldbody = scene.find("worldbody")
        # Cameras are placed in the arm-base frame: the base sits on the table top at (0, 0, h).
        build_tabletop(scene, worldbody, cfg.world, hand_body=f"{HAND_PREFIX}palm")
        self._model = mujoco.MjModel.from_xml_string(ET.tostring(scene, encoding="unicode"))
        self._data = mujoco.MjData(self._model)
        self._sim = SimpleNamespace(step_lock=threading.Lock())
        self._resolve_addresses()
        self._data.qpos[self._arm_qpos] = self._arm_target
        self._data.ctrl[self._arm_ctrl] = self._arm_target
        hand_q = np.clip(np.asarray(cfg.hand_initial_joints, dtype=float), self._hand_low, self._hand_high)
        self._data.qpos[self._hand_qpos] = hand_q
        self._data.ctrl[self._hand_ctrl] = hand_q
        mujoco.mj_forward(self._model, self._data)  # body poses, for the base frame below
        self._apply_object_poses(self._sample_object_poses(self._rng))
        mujoco.mj_forward(self._model, self._data)
        self._start_physics(self._start_rendering())
        try:
            self.peer = XArmLoopbackPeer(_MujocoArmBackend(self), host=cfg.peer_host or None,
                                         report_rate_hz=cfg.report_rate_hz)
            self.peer.start()
        except BaseException:
            self.stop()
            raise
        logger.info("XArm + XHand world running; xArm controller at %s (%s)", self.host,
                    "Unix sockets" if self.uses_unix_sockets else "TCP")

    def _shutdown_server(self) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.stop()

    # ------------------------------------------------------------------ addresses
    def _resolve_addresses(self) -> None:
        model = self._model
        super_objects = self.config.objects
        from vpp_hardware.sim.scene import object_joint_name

        for obj in super_objects:
            joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, object_joint_name(obj.name))
            self._object_qpos[obj.name] = int(model.jnt_qposadr[joint_id])
            self._object_dof[obj.name] = int(model.jnt_dofadr[joint_id])
        for name in [f"{ARM_PREFIX}base", f"{ARM_PREFIX}flange", f"{HAND_PREFIX}palm"] + list(self.object_names):
            body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
            if body_id < 0:
                raise RuntimeError(f"body {name!r} missing from the compiled scene")
            self._body_ids[name] = body_id

        def joint_addresses(names):
            ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in names]
            if min(ids) < 0:
                raise RuntimeError(f"joints missing from the scene: {[n for n, i in zip(names, ids) if i < 0]}")
            return (np.array([model.jnt_qposadr[i] for i in ids]), np.array([model.jnt_dofadr[i] for i in ids]),
                    np.array([model.jnt_range[i] for i in ids]))

        def actuators(names):
            ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in names]
            if min(ids) < 0:
                raise RuntimeError(f"actuators missing from the scene: {names}")
            return np.array(ids)

        arm_names = [f"{ARM_PREFIX}joint{i}" for i in range(1, self.arm_model.dof + 1)]
        self._arm_qpos, self._arm_dof, _ = joint_addresses(arm_names)
        self._arm_ctrl = actuators(arm_names)
        hand_names = [HAND_PREFIX + j.name for j in xhand_model.JOINTS]
        self._hand_qpos, _, hand_range = joint_addresses(hand_names)
        self._hand_ctrl = actuators(hand_names)
        self._hand_low, self._hand_high = hand_range[:, 0].copy(), hand_range[:, 1].copy()

    def _base_frame(self) -> tuple[np.ndarray, np.ndarray]:
        base = self._body_ids[f"{ARM_PREFIX}base"]
        return self._data.xpos[base].copy(), self._data.xquat[base].copy()

    def hand_pose(self) -> ObjectPose:
        """Pose of the palm (= the xArm flange, the wrist of the action space) in the base frame."""
        return self.body_pose(f"{HAND_PREFIX}palm")

    def site_position(self, site_name: str) -> np.ndarray:
        """Position of a site (e.g. ``xhand_index_tip``) in the arm-base frame."""
        self._require_running()
        site = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_SITE, site_name)
        if site < 0:
            raise KeyError(f"no site {site_name!r}")
        with self._sim.step_lock:
            position = self._data.site_xpos[site].copy()
            base_position, base_quaternion = self._base_frame()
        inverse = np.empty(4)
        mujoco.mju_negQuat(inverse, base_quaternion)
        out = np.empty(3)
        mujoco.mju_rotVecQuat(out, position - base_position, inverse)
        return out

    def _require_running(self) -> None:
        if self._model is None or self._sim is None:
            raise RuntimeError("XHandSimWorld is not running")

    _require_started = _require_running

    # ------------------------------------------------------------------ arm and hand access
    def arm_joint_positions(self) -> np.ndarray:
        self._require_running()
        with self._sim.step_lock:
            return self._data.qpos[self._arm_qpos].copy()

    def arm_joint_torques(self) -> np.ndarray:
        self._require_running()
        with self._sim.step_lock:
            return self._data.actuator_force[self._arm_ctrl].copy()

    def set_arm_joint_target(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (self.arm_model.dof,) or not np.all(np.isfinite(q)):
            raise ValueError(f"arm target must be {self.arm_model.dof} finite values")
        with self._sim.step_lock:
            self._arm_target = q.copy()

    def hand_joint_positions(self) -> np.ndarray:
        self._require_running()
        with self._sim.step_lock:
            return self._data.qpos[self._hand_qpos].copy()

    def set_hand_joint_targets(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (len(xhand_model.JOINTS),) or not np.all(np.isfinite(q)):
            raise ValueError(f"hand target must be {len(xhand_model.JOINTS)} finite values")
        with self._sim.step_lock:
            self._data.ctrl[self._hand_ctrl] = np.clip(q, self._hand_low, self._hand_high)

    # ------------------------------------------------------------------ physics
    def _before_physics_step(self) -> None:
        super()._before_physics_step()
        # Servo mode: follow the latest target at most arm_max_joint_speed_radps per joint.
        max_step = self.xhand_config.arm_max_joint_speed_radps * _TIMESTEP_S
        self._arm_command = self._arm_command + np.clip(self._arm_target - self._arm_command, -max_step, max_step)
        self._data.ctrl[self._arm_ctrl] = self._arm_command

    def _physics_loop(self) -> None:
        next_step_s = time.monotonic()
        try:
            while not self._stop_event.is_set():
                with self._sim.step_lock:
                    self._before_physics_step()
                    mujoco.mj_step(self._model, self._data)
                    self._after_physics_step()
                if not self.config.realtime:
                    continue
                next_step_s += _TIMESTEP_S
                delay = next_step_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -_MAX_CATCH_UP_S:
                    next_step_s = time.monotonic()
        except Exception as error:  # recorded for stats()/is_running
            self._physics_error = f"{type(error).__name__}: {error}"
            logger.exception("simulation physics stopped")
            self._running = False
            self._reset_applied.set()
            for slot in self._frame_slots.values():
                slot.close(f"simulation stopped: {self._physics_error}")
