"""The simulated XHand: the 12 MuJoCo position servos of :class:`~vpp_hardware.sim.xhand_world.XHandSimWorld`."""

from __future__ import annotations

import numpy as np

from vpp_core.action_space import XHAND_JOINT_NAMES
from vpp_hardware.hands.hand import Hand, HandError

__all__ = ["MujocoXHand"]


class MujocoXHand(Hand):
    def __init__(self, world) -> None:
        self._world = world
        self._connected = False

    @property
    def joint_names(self) -> tuple[str, ...]:
        return XHAND_JOINT_NAMES

    @property
    def is_connected(self) -> bool:
        return self._connected and self._world.is_running

    def connect(self) -> None:
        if not self._world.is_running:
            raise HandError("the simulated world is not running")
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def command_positions(self, positions: np.ndarray) -> None:
        positions = self._check_command(positions)
        if not self.is_connected:
            raise HandError("simulated XHand not connected (or the world stopped)")
        self._world.set_hand_joint_targets(positions)

    def read_positions(self) -> np.ndarray:
        if not self.is_connected:
            raise HandError("simulated XHand not connected (or the world stopped)")
        return self._world.hand_joint_positions()
