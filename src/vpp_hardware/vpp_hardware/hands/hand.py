"""What every hand driver does, and the XHand's joint limits (configuration, mapped by name).

A :class:`Hand` takes joint position targets (radians, in its ``joint_names`` order) and reports
measured joint positions. ``command_positions`` may block for a bus transaction (the vendor SDK
writes a serial/EtherCAT frame); the executor therefore reaches a hand only through
:class:`~vpp_hardware.hands.effector.HandEffector`, which sends from its own thread.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import numpy as np

from vpp_core.action_space import XHAND_JOINT_NAMES

__all__ = ["Hand", "HandError", "XHandJointLimits"]


class HandError(RuntimeError):
    """A hand driver failure (not connected, bus error, malformed command)."""


@dataclass
class XHandJointLimits:
    """Lower/upper limit [rad] of each XHand joint, by name (``config/xhand.yaml``,
    ``hand.joint_limits.<joint>: [low, high]``).

    Defaults: the XHand's published URDF limits (see
    ``vpp_hardware/description/xhand/model.py`` for the source). The executor clamps every hand
    target into these before it is sent.
    """

    thumb_bend: tuple[float, float] = (0.0, 1.832)
    thumb_rota1: tuple[float, float] = (-0.698, 1.57)
    thumb_rota2: tuple[float, float] = (0.0, 1.57)
    index_bend: tuple[float, float] = (-0.174, 0.174)
    index_joint1: tuple[float, float] = (0.0, 1.919)
    index_joint2: tuple[float, float] = (0.0, 1.919)
    mid_joint1: tuple[float, float] = (0.0, 1.919)
    mid_joint2: tuple[float, float] = (0.0, 1.919)
    ring_joint1: tuple[float, float] = (0.0, 1.919)
    ring_joint2: tuple[float, float] = (0.0, 1.919)
    pinky_joint1: tuple[float, float] = (0.0, 1.919)
    pinky_joint2: tuple[float, float] = (0.0, 1.919)

    def __post_init__(self) -> None:
        names = tuple(f.name for f in fields(self))
        if names != XHAND_JOINT_NAMES:  # the action space and this table must agree
            raise ValueError(f"joint limit names {names} differ from XHAND_JOINT_NAMES {XHAND_JOINT_NAMES}")
        for name in names:
            pair = getattr(self, name)
            if (len(pair) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in pair)
                    or pair[0] > pair[1]):
                raise ValueError(f"joint limit {name} must be [low, high] with low <= high, got {pair!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return XHAND_JOINT_NAMES

    def as_bounds(self) -> tuple[tuple[float, float], ...]:
        """``((low, high), ...)`` in :data:`XHAND_JOINT_NAMES` order."""
        return tuple((float(getattr(self, n)[0]), float(getattr(self, n)[1])) for n in XHAND_JOINT_NAMES)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        bounds = np.array(self.as_bounds())
        return bounds[:, 0].copy(), bounds[:, 1].copy()


class Hand(ABC):
    """A position-controlled multi-joint hand."""

    @property
    @abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """Joint order of commands and readings."""

    @abstractmethod
    def connect(self) -> None:
        """Open the device; raises :class:`HandError`."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release the device (idempotent)."""

    @property
    @abstractmethod
    def is_connected(self) -> bool:
        ...

    @abstractmethod
    def command_positions(self, positions: np.ndarray) -> None:
        """Send joint position targets [rad] (already clamped to the limits by the caller)."""

    @abstractmethod
    def read_positions(self) -> np.ndarray:
        """Latest measured joint positions [rad]; raises :class:`HandError` when unknown."""

    def _check_command(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=float).reshape(-1)
        if positions.shape != (len(self.joint_names),) or not np.all(np.isfinite(positions)):
            raise HandError(f"hand command must be {len(self.joint_names)} finite values, got {positions}")
        return positions

    def __enter__(self) -> "Hand":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
