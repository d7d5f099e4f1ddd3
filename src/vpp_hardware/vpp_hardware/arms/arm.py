"""What every arm and gripper driver must do.

An :class:`Arm` streams Cartesian end-effector targets (4x4 poses in the robot base frame, the
convention of :mod:`vpp_core.action_space`) and reports its state with the arm's own timestamp.
A :class:`Gripper` moves fingers asynchronously. Executors only talk to these interfaces, so the
Franka (franky) and XArm drivers, real or simulated, are interchangeable behind them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Arm", "ArmError", "ArmState", "CommandHandle", "Gripper"]


class ArmError(RuntimeError):
    """A driver-level failure (connection lost, controller fault, rejected command)."""


@dataclass(frozen=True, eq=False)
class ArmState:
    """One snapshot of the arm.

    Attributes:
        ee_pose: ``(4, 4)`` measured end-effector pose in the base frame.
        joint_positions: ``(N,)`` [rad].
        joint_velocities: ``(N,)`` [rad/s].
        time_s: the arm controller's own clock [s] (robot time for Franka), monotonic.
        in_control: True while a streaming controller is active and accepting targets.
        has_errors: True when the controller reports an error that needs recovery.
        ee_velocity: ``(6,)`` measured ``[vx, vy, vz, wx, wy, wz]`` in the base frame, when known.
    """

    ee_pose: np.ndarray
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    time_s: float
    in_control: bool = False
    has_errors: bool = False
    ee_velocity: np.ndarray | None = field(default=None)


class CommandHandle(ABC):
    """Completion handle of an asynchronous device command."""

    @abstractmethod
    def done(self) -> bool:
        """True once the command has finished (successfully or not)."""

    @abstractmethod
    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until finished or ``timeout_s`` passed; True when finished."""

    @abstractmethod
    def succeeded(self) -> bool:
        """Result of a finished command; blocks until it finishes."""


class Arm(ABC):
    """A Cartesian-streaming arm.

    ``stream_target`` and ``hold`` must not block for longer than one control period: the
    executor calls them from its control loop.
    """

    @abstractmethod
    def connect(self) -> None:
        """Open the connection and start the streaming controller, holding the current pose."""

    @abstractmethod
    def disconnect(self) -> None:
        """Stop the streaming controller gracefully and release the connection."""

    @property
    @abstractmethod
    def is_connected(self) -> bool:
        """True between a successful :meth:`connect` and :meth:`disconnect`."""

    @abstractmethod
    def read_state(self) -> ArmState:
        """Return the latest state; raises :class:`ArmError` when it cannot be read."""

    @abstractmethod
    def stream_target(self, pose: np.ndarray, velocity: np.ndarray | None = None) -> None:
        """Set the tracked target ``pose`` (4x4, base frame) with optional ``(6,)`` velocity
        feed-forward ``[vx, vy, vz, wx, wy, wz]`` (base frame). Raises :class:`ArmError` on
        malformed input or a controller fault; the caller decides whether to recover."""

    @abstractmethod
    def hold(self) -> None:
        """Keep the last commanded target (the measured pose if none yet) with zero velocity."""

    @abstractmethod
    def recover_errors(self) -> bool:
        """Clear controller errors and restart streaming from the measured pose.

        Returns True on success; gives up (False) after the driver's configured retry limit.
        """

    @property
    @abstractmethod
    def last_commanded_pose(self) -> np.ndarray | None:
        """The last target sent to the controller (by stream_target or hold), or None."""

    def is_moving(self, linear_tolerance_mps: float = 1e-3, angular_tolerance_radps: float = 1e-2) -> bool:
        """True when the measured end-effector (or joint) speed exceeds the tolerances."""
        state = self.read_state()
        if state.ee_velocity is not None:
            return bool(
                np.linalg.norm(state.ee_velocity[:3]) > linear_tolerance_mps
                or np.linalg.norm(state.ee_velocity[3:]) > angular_tolerance_radps
            )
        return bool(np.max(np.abs(state.joint_velocities)) > angular_tolerance_radps)

    def __enter__(self) -> "Arm":
        self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.disconnect()


class Gripper(ABC):
    """A parallel gripper with asynchronous commands (they return immediately)."""

    @abstractmethod
    def connect(self) -> None:
        """Open the connection."""

    @abstractmethod
    def disconnect(self) -> None:
        """Stop any motion and release the connection."""

    @property
    @abstractmethod
    def width(self) -> float:
        """Measured opening width [m]."""

    @property
    @abstractmethod
    def max_width(self) -> float:
        """Fully open width [m]."""

    @property
    @abstractmethod
    def is_grasped(self) -> bool:
        """True when the last grasp holds an object."""

    @abstractmethod
    def move_async(self, width: float) -> CommandHandle:
        """Move the fingers to ``width`` [m] (clamped to ``[0, max_width]``)."""

    @abstractmethod
    def grasp_async(self) -> CommandHandle:
        """Close until the fingers meet an object (or each other) and hold with the configured force."""

    def open_async(self) -> CommandHandle:
        """Open fully."""
        return self.move_async(self.max_width)

    @abstractmethod
    def stop(self) -> None:
        """Stop the current finger motion."""

    def __enter__(self) -> "Gripper":
        self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.disconnect()
