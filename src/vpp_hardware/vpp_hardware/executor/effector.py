"""The non-pose part of an action (gripper command, hand joints) going to its device.

The executor hands every accepted target's effector command (already range-checked by the
safety filter) to an :class:`Effector`. Effectors must not block the control loop.
"""

from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from vpp_hardware.arms.arm import ArmError, CommandHandle, Gripper

__all__ = ["Effector", "GripperEffectorConfig", "BinaryGripperEffector"]

logger = logging.getLogger(__name__)


class Effector(ABC):
    """Receives the effector slice of each executed action."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Number of action dimensions this effector consumes."""

    @abstractmethod
    def apply(self, command: np.ndarray) -> None:
        """Act on one command (shape ``(dim,)``); must return without waiting for the device."""


@dataclass
class GripperEffectorConfig:
    """Hysteresis thresholds on the [0, 1] gripper command (1 = open)."""

    open_threshold: float = 0.6
    close_threshold: float = 0.4

    def __post_init__(self) -> None:
        if not 0.0 <= self.close_threshold < self.open_threshold <= 1.0:
            raise ValueError(
                "gripper thresholds need 0 <= close_threshold < open_threshold <= 1, got "
                f"close={self.close_threshold}, open={self.open_threshold}"
            )


class GripperPosition(enum.Enum):
    UNKNOWN = "unknown"
    OPEN = "open"
    CLOSED = "closed"


class BinaryGripperEffector(Effector):
    """Turns the continuous gripper command into open / grasp commands.

    A command at or above ``open_threshold`` opens, at or below ``close_threshold`` grasps (close
    with force); in between the last decision stands, so a command hovering around 0.5 does not
    make the gripper chatter. A device command is only sent when the decision changes.
    """

    def __init__(self, gripper: Gripper, config: GripperEffectorConfig | None = None):
        self.gripper = gripper
        self.config = config or GripperEffectorConfig()
        self.position = GripperPosition.UNKNOWN
        self.pending: CommandHandle | None = None
        self.commands_sent = 0

    @property
    def dim(self) -> int:
        return 1

    def apply(self, command: np.ndarray) -> None:
        value = float(np.asarray(command, dtype=float).reshape(-1)[0])
        if not np.isfinite(value):
            raise ArmError(f"gripper command {value} is not finite")
        if value >= self.config.open_threshold:
            wanted = GripperPosition.OPEN
        elif value <= self.config.close_threshold:
            wanted = GripperPosition.CLOSED
        else:
            return
        if wanted is self.position:
            return
        self.pending = self.gripper.open_async() if wanted is GripperPosition.OPEN else self.gripper.grasp_async()
        self.position = wanted
        self.commands_sent += 1
        logger.debug("gripper -> %s", wanted.value)
