"""Franka arm and gripper over libfranka, through ``franky`` (PyPI ``franky-control``).

The arm streams Cartesian targets to a ``franky.CartesianImpedanceTracker``: a compliant
torque-level impedance controller running franky's 1 kHz loop, fed new targets (plus a velocity
feed-forward) whenever :meth:`FrankyArm.stream_target` is called. The tracker is created without
a period, so nothing here sleeps: the caller's loop (the chunk executor) sets the rate.

The same driver drives the simulated robot: point ``host`` at a franky-sim server
(:mod:`vpp_hardware.arms.franka.sim_server`) and use :meth:`FrankyArmConfig.franky_sim`.

Robot versions: the PyPI ``franky-control`` wheel speaks Franka robot server version 10 (FR3 and
what franky-sim emulates). An older Panda needs the franky wheel built for its libfranka/server
version (see franky's README, "Installation"), otherwise ``connect`` raises
``IncompatibleVersionException``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

# Explicit imports only: ``from franky import *`` would shadow the builtin ``Exception``.
from franky import (
    Affine,
    CartesianImpedanceTracker,
    CommandException,
    ControlException,
    FrictionCompensationParams,
    Gripper as _FrankyGripper,
    GripperException,
    IncompatibleVersionException,
    InvalidOperationException,
    NetworkException,
    PostureTask,
    RealtimeConfig,
    Robot,
    Twist,
)

from vpp_core.action_space import is_valid_pose
from vpp_hardware.arms.arm import Arm, ArmError, ArmState, CommandHandle, Gripper
from vpp_core.config import dataclass_from_dict, dataclass_to_dict

__all__ = ["FrankyArmConfig", "FrankyArm", "FrankyGripperConfig", "FrankyGripper", "FRANKY_SIM_JOINT_FRICTION"]

logger = logging.getLogger(__name__)

# libfranka/franky errors that mean "the command or the connection failed" (never ``Exception``).
_FRANKY_ERRORS = (
    ControlException,
    CommandException,
    NetworkException,
    InvalidOperationException,
    IncompatibleVersionException,
    GripperException,
    RuntimeError,
)

#: Joint friction of franky-sim's FR3 model (``franky_sim/assets/fr3.xml``: ``frictionloss`` and
#: ``damping``). Simulator values, for :meth:`FrankyArmConfig.franky_sim` only; a real arm's
#: friction must be identified on that arm.
FRANKY_SIM_JOINT_FRICTION = {
    "coulomb_nm": (1.137, 1.137, 1.137, 1.137, 0.763, 0.44, 0.248),
    "viscous_nms_per_rad": (0.21,) * 7,
}


@dataclass
class FrankyArmConfig:
    """Connection and impedance-controller settings for :class:`FrankyArm`."""

    host: str = "172.16.0.2"
    #: True to run without a realtime kernel (franky-sim, development machines). A real robot
    #: needs a PREEMPT_RT kernel and False, or libfranka's communication constraints fail.
    ignore_realtime: bool = False
    translational_stiffness: float = 2000.0
    rotational_stiffness: float = 200.0
    #: Optional clip of the Cartesian error the spring acts on ([m] xyz, [rad] xyz); bounds the
    #: force the impedance law can produce after a target jump. None = unclipped, which is unstable
    #: on the simulated FR3 at low reaches (a 5 cm error there made the arm swing ~80 cm away);
    #: config/panda.yaml clips at 3 cm / 0.15 rad.
    translational_error_clip_m: tuple[float, float, float] | None = None
    rotational_error_clip_rad: tuple[float, float, float] | None = None
    #: Friction feed-forward per joint; None = no compensation.
    friction_coulomb_nm: tuple[float, ...] | None = None
    friction_viscous_nms_per_rad: tuple[float, ...] | None = None
    friction_max_torque_nm: tuple[float, ...] = (2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0)
    friction_velocity_epsilon_radps: float = 0.03
    #: Largest torque change per 1 kHz control cycle [Nm] (franky's rate limiter).
    max_delta_tau_nm: float = 1.0
    #: Nullspace posture task: the 7-DoF arm's redundant motion (the elbow) is pulled towards
    #: ``nullspace_posture_rad`` with this stiffness [Nm/rad] (0 turns it off). Without it a
    #: Cartesian impedance law leaves the elbow free: contacts and long streams of targets let it
    #: drift until a joint limit, and the arm ends in a posture from which Cartesian moves can no
    #: longer bring it back (seen in simulation: folded over its base after a few policy
    #: episodes). Only the nullspace is affected; the end-effector target is tracked as before.
    nullspace_stiffness_nm_per_rad: float = 10.0
    #: Posture the nullspace task pulls towards [rad] x 7; empty: the joint configuration
    #: measured when tracking starts.
    nullspace_posture_rad: tuple[float, ...] = ()
    #: Joint limits [rad] x 7 the tracker pushes away from (franky's joint-limit avoidance: a
    #: spring of ``joint_limit_stiffness_nm_per_rad`` within ``joint_limit_activation_rad`` of a
    #: limit, at most ``joint_limit_max_torque_nm``); empty: none. Why: a Cartesian target the
    #: arm can only reach through a joint limit (the FR3's elbow, joint 4, folds to its limit
    #: when the hand goes low near the base) otherwise drives the joint into its stop, where the
    #: impedance law loses control of the arm (seen in franky-sim: the arm thrashed about and
    #: ended folded over its base).
    joint_limits_lower_rad: tuple[float, ...] = ()
    joint_limits_upper_rad: tuple[float, ...] = ()
    joint_limit_activation_rad: float = 0.15
    joint_limit_stiffness_nm_per_rad: float = 20.0
    joint_limit_max_torque_nm: float = 10.0
    #: Collision thresholds passed to libfranka (reflex on exceed); None keeps the robot's.
    collision_torque_threshold_nm: float | None = None
    collision_force_threshold_n: float | None = None
    #: ``recover_errors`` tries this many times before giving up.
    max_recovery_attempts: int = 3
    recovery_retry_delay_s: float = 0.1

    def __post_init__(self) -> None:
        if not (np.isfinite(self.nullspace_stiffness_nm_per_rad) and self.nullspace_stiffness_nm_per_rad >= 0):
            raise ValueError(f"nullspace_stiffness_nm_per_rad must be >= 0, got {self.nullspace_stiffness_nm_per_rad}")
        posture = tuple(self.nullspace_posture_rad or ())
        if posture and (len(posture) != 7 or not np.all(np.isfinite(posture))):
            raise ValueError(f"nullspace_posture_rad must be empty or 7 finite joint angles [rad], got {list(posture)}")
        lower, upper = tuple(self.joint_limits_lower_rad or ()), tuple(self.joint_limits_upper_rad or ())
        if (lower or upper) and not (len(lower) == len(upper) == 7 and np.all(np.isfinite(lower + upper))
                                     and np.all(np.asarray(lower) < np.asarray(upper))):
            raise ValueError("joint_limits_lower_rad / joint_limits_upper_rad must both be empty or 7 finite "
                             f"angles [rad] with lower < upper, got {list(lower)} and {list(upper)}")
        for name in ("joint_limit_activation_rad", "joint_limit_stiffness_nm_per_rad", "joint_limit_max_torque_nm"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "FrankyArmConfig":
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclass_to_dict(self)

    @classmethod
    def franky_sim(cls, host: str = "127.0.0.1", **overrides: Any) -> "FrankyArmConfig":
        """Settings for a franky-sim server: no realtime kernel, the simulator's joint friction."""
        settings: dict[str, Any] = {
            "host": host,
            "ignore_realtime": True,
            "friction_coulomb_nm": FRANKY_SIM_JOINT_FRICTION["coulomb_nm"],
            "friction_viscous_nms_per_rad": FRANKY_SIM_JOINT_FRICTION["viscous_nms_per_rad"],
        }
        settings.update(overrides)
        return cls(**settings)


def _as_pose_matrix(pose: np.ndarray) -> np.ndarray:
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not is_valid_pose(pose, tolerance=1e-4):
        raise ArmError(f"target must be a finite 4x4 rigid transform, got shape {pose.shape}")
    return pose


class FrankyArm(Arm):
    """Franka arm streaming Cartesian impedance targets through franky.

    Not thread-safe: call it from one control thread (the executor's). ``read_state`` blocks up
    to ~1 ms while libfranka waits for the next state packet.
    """

    def __init__(self, config: FrankyArmConfig):
        self.config = config
        self._robot: Robot | None = None
        self._tracker: CartesianImpedanceTracker | None = None
        self._last_commanded: np.ndarray | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def robot(self) -> Robot:
        """The underlying ``franky.Robot`` (for diagnostics; do not start other motions)."""
        if self._robot is None:
            raise ArmError("FrankyArm is not connected")
        return self._robot

    @property
    def is_connected(self) -> bool:
        return self._robot is not None

    def connect(self) -> None:
        if self._robot is not None:
            return
        realtime = RealtimeConfig.Ignore if self.config.ignore_realtime else RealtimeConfig.Enforce
        try:
            robot = Robot(self.config.host, realtime_config=realtime)
        except _FRANKY_ERRORS as error:
            raise ArmError(f"cannot connect to Franka at {self.config.host}: {error}") from error
        self._robot = robot
        try:
            robot.recover_from_errors()
            torque, force = self.config.collision_torque_threshold_nm, self.config.collision_force_threshold_n
            if torque is not None or force is not None:
                robot.set_collision_behavior(
                    torque if torque is not None else 20.0, force if force is not None else 30.0
                )
            self._start_tracker()
        except _FRANKY_ERRORS as error:
            self._robot = None
            raise ArmError(f"cannot start the impedance tracker on {self.config.host}: {error}") from error

    def disconnect(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                tracker.stop()  # ~0.2 s torque ramp-down that ends without a preemption error
            except _FRANKY_ERRORS as error:
                logger.warning("stopping the impedance tracker failed: %s", error)
        self._robot = None
        self._last_commanded = None

    def _friction(self) -> FrictionCompensationParams | None:
        config = self.config
        if config.friction_coulomb_nm is None and config.friction_viscous_nms_per_rad is None:
            return None
        return FrictionCompensationParams(
            coulomb=list(config.friction_coulomb_nm or (0.0,) * 7),
            viscous=list(config.friction_viscous_nms_per_rad or (0.0,) * 7),
            max_torque=list(config.friction_max_torque_nm),
            velocity_epsilon=config.friction_velocity_epsilon_radps,
        )

    def _start_tracker(self) -> None:
        config = self.config
        optional: dict[str, Any] = {}
        if config.translational_error_clip_m is not None:
            optional["translational_error_clip"] = np.asarray(config.translational_error_clip_m, dtype=float)
        if config.rotational_error_clip_rad is not None:
            optional["rotational_error_clip"] = np.asarray(config.rotational_error_clip_rad, dtype=float)
        friction = self._friction()
        if friction is not None:
            optional["friction"] = friction
        if config.nullspace_stiffness_nm_per_rad > 0:
            posture = config.nullspace_posture_rad or tuple(self.robot.current_joint_positions)
            optional["posture_task"] = PostureTask(np.asarray(posture, dtype=float),
                                                   float(config.nullspace_stiffness_nm_per_rad))
        if config.joint_limits_lower_rad:
            optional.update(
                lower_joint_limits=np.asarray(config.joint_limits_lower_rad, dtype=float),
                upper_joint_limits=np.asarray(config.joint_limits_upper_rad, dtype=float),
                joint_limit_activation_distance=float(config.joint_limit_activation_rad),
                joint_limit_stiffness=float(config.joint_limit_stiffness_nm_per_rad),
                joint_limit_max_torque=float(config.joint_limit_max_torque_nm),
            )
        # The tracker seeds its target with the measured pose, so starting it never moves the arm.
        self._tracker = CartesianImpedanceTracker(
            self.robot,
            translational_stiffness=config.translational_stiffness,
            rotational_stiffness=config.rotational_stiffness,
            max_delta_tau=config.max_delta_tau_nm,
            period=None,
            **optional,
        )
        self._last_commanded = np.array(self.robot.current_pose.end_effector_pose.matrix)

    # ---------------------------------------------------------------- state

    def read_state(self) -> ArmState:
        robot = self.robot
        try:
            state = robot.state
            in_control = bool(robot.is_in_control)
            has_errors = bool(robot.has_errors)
        except _FRANKY_ERRORS as error:
            raise ArmError(f"cannot read the Franka state: {error}") from error
        return ArmState(
            ee_pose=np.array(state.O_T_EE.matrix),
            joint_positions=np.array(state.q),
            joint_velocities=np.array(state.dq),
            time_s=float(state.time.to_sec()),
            in_control=in_control and self._tracker is not None,
            has_errors=has_errors,
        )

    @property
    def last_commanded_pose(self) -> np.ndarray | None:
        return None if self._last_commanded is None else self._last_commanded.copy()

    # ---------------------------------------------------------------- commands

    def _send(self, pose: np.ndarray, velocity: np.ndarray) -> None:
        tracker = self._tracker
        if tracker is None or not self.robot.is_in_control:
            raise ArmError("the impedance tracker is not running (stopped or faulted); recover_errors() first")
        try:
            tracker.set_target(Affine(pose), Twist(velocity[:3], velocity[3:]))
        except _FRANKY_ERRORS as error:
            raise ArmError(f"set_target failed: {error}") from error
        self._last_commanded = pose.copy()

    def stream_target(self, pose: np.ndarray, velocity: np.ndarray | None = None) -> None:
        pose = _as_pose_matrix(pose)
        if velocity is None:
            velocity = np.zeros(6)
        velocity = np.asarray(velocity, dtype=np.float64).reshape(-1)
        if velocity.shape != (6,) or not np.all(np.isfinite(velocity)):
            raise ArmError(f"velocity feed-forward must be 6 finite numbers, got {velocity}")
        self._send(pose, velocity)

    def hold(self) -> None:
        target = self._last_commanded
        if target is None:
            target = np.array(self.robot.current_pose.end_effector_pose.matrix)
        self._send(target, np.zeros(6))

    def recover_errors(self) -> bool:
        """Clear errors and restart the tracker at the measured pose; up to ``max_recovery_attempts``."""
        robot = self.robot
        for attempt in range(1, self.config.max_recovery_attempts + 1):
            try:
                if self._tracker is not None and robot.is_in_control:
                    return True
                self._tracker = None
                try:
                    # Surfaces (and clears) the exception the failed motion stored.
                    robot.join_motion(timeout=0.5)
                except _FRANKY_ERRORS as error:
                    logger.info("previous motion ended with: %s", error)
                robot.recover_from_errors()
                self._start_tracker()
                logger.warning("Franka recovered on attempt %d", attempt)
                return True
            except _FRANKY_ERRORS as error:
                logger.error("Franka recovery attempt %d/%d failed: %s", attempt,
                             self.config.max_recovery_attempts, error)
                time.sleep(self.config.recovery_retry_delay_s)
        return False

    def stop_tracking(self) -> None:
        """Stop the impedance tracker gracefully but stay connected (``recover_errors`` restarts it)."""
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                tracker.stop()
            except _FRANKY_ERRORS as error:
                logger.warning("stopping the impedance tracker failed: %s", error)


# -------------------------------------------------------------------- gripper

@dataclass
class FrankyGripperConfig:
    """Settings for the Franka Hand through :class:`FrankyGripper`."""

    host: str = "172.16.0.2"
    speed_mps: float = 0.05
    grasp_force_n: float = 20.0
    #: Home on connect to learn the maximum width (needed after changing fingers; takes ~1 s).
    home_on_connect: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "FrankyGripperConfig":
        return dataclass_from_dict(cls, data)


class _BoolFutureHandle(CommandHandle):
    def __init__(self, future: Any):
        self._future = future

    def done(self) -> bool:
        return bool(self._future.wait(0.0))

    def wait(self, timeout_s: float | None = None) -> bool:
        return bool(self._future.wait(timeout_s))

    def succeeded(self) -> bool:
        try:
            return bool(self._future.get())
        except _FRANKY_ERRORS as error:
            logger.warning("gripper command failed: %s", error)
            return False


class FrankyGripper(Gripper):
    """Franka Hand via ``franky.Gripper``. Commands queue behind each other on the gripper side."""

    def __init__(self, config: FrankyGripperConfig):
        self.config = config
        self._gripper: _FrankyGripper | None = None

    def connect(self) -> None:
        if self._gripper is not None:
            return
        try:
            self._gripper = _FrankyGripper(self.config.host)
            if self.config.home_on_connect:
                self._gripper.homing()
        except _FRANKY_ERRORS as error:
            self._gripper = None
            raise ArmError(f"cannot connect to the Franka gripper at {self.config.host}: {error}") from error

    def disconnect(self) -> None:
        gripper, self._gripper = self._gripper, None
        if gripper is not None:
            try:
                gripper.stop()
            except _FRANKY_ERRORS as error:
                logger.warning("gripper stop failed: %s", error)

    @property
    def _device(self) -> _FrankyGripper:
        if self._gripper is None:
            raise ArmError("FrankyGripper is not connected")
        return self._gripper

    @property
    def width(self) -> float:
        return float(self._device.width)

    @property
    def max_width(self) -> float:
        return float(self._device.max_width)

    @property
    def is_grasped(self) -> bool:
        return bool(self._device.is_grasped)

    def move_async(self, width: float) -> CommandHandle:
        if not np.isfinite(width):
            raise ArmError(f"gripper width {width} is not finite")
        width = float(min(max(width, 0.0), self.max_width))
        return _BoolFutureHandle(self._device.move_async(width, self.config.speed_mps))

    def grasp_async(self) -> CommandHandle:
        # Target width 0 with tolerances spanning the whole stroke: "close on whatever is there".
        span = self.max_width
        return _BoolFutureHandle(
            self._device.grasp_async(0.0, self.config.speed_mps, self.config.grasp_force_n, span, span)
        )

    def stop(self) -> None:
        try:
            self._device.stop()
        except _FRANKY_ERRORS as error:
            raise ArmError(f"gripper stop failed: {error}") from error
