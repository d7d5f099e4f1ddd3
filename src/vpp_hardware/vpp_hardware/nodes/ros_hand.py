"""A :class:`Hand` reached over ROS topics: how the executor drives the simulated XHand.

The simulated world runs in its own node (``xhand_sim_world_node``), like franky-sim for the
Panda; the XArm is reached through the xArm protocol, the simulated hand through two topics:
``command_topic`` (sensor_msgs/JointState, positions by joint name) and ``state_topic``
(measured positions). Publishing never blocks; the latest received state is cached.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from sensor_msgs.msg import JointState

from vpp_core.action_space import XHAND_JOINT_NAMES
from vpp_hardware.hands.hand import Hand, HandError
from vpp_ros.qos import SENSOR_QOS

__all__ = ["RosTopicHand"]


class RosTopicHand(Hand):
    def __init__(self, node, command_topic: str, state_topic: str, state_timeout_s: float = 1.0) -> None:
        self._node = node
        self._command_topic, self._state_topic = command_topic, state_topic
        self._state_timeout_s = state_timeout_s
        self._publisher = None
        self._lock = threading.Lock()
        self._state: tuple[float, np.ndarray] | None = None
        self._index = {name: i for i, name in enumerate(XHAND_JOINT_NAMES)}

    @property
    def joint_names(self) -> tuple[str, ...]:
        return XHAND_JOINT_NAMES

    @property
    def is_connected(self) -> bool:
        return self._publisher is not None

    def connect(self) -> None:
        if self._publisher is None:
            self._publisher = self._node.create_publisher(JointState, self._command_topic, SENSOR_QOS)
            self._node.create_subscription(JointState, self._state_topic, self._on_state, SENSOR_QOS)

    def wait_for_state(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._state is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._state is not None

    def disconnect(self) -> None:
        pass  # publishers/subscriptions live as long as the node

    def _on_state(self, msg: JointState) -> None:
        positions = np.full(len(XHAND_JOINT_NAMES), np.nan)
        for name, value in zip(msg.name, msg.position):
            index = self._index.get(name)
            if index is not None:
                positions[index] = value
        if np.all(np.isfinite(positions)):
            with self._lock:
                self._state = (time.monotonic(), positions)

    def command_positions(self, positions: np.ndarray) -> None:
        positions = self._check_command(positions)
        if self._publisher is None:
            raise HandError("hand command topic not open")
        msg = JointState()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.name = list(XHAND_JOINT_NAMES)
        msg.position = [float(v) for v in positions]
        self._publisher.publish(msg)

    def read_positions(self) -> np.ndarray:
        with self._lock:
            state = self._state
        if state is None:
            raise HandError(f"no hand state received on {self._state_topic}")
        if time.monotonic() - state[0] > self._state_timeout_s:
            raise HandError(f"hand state on {self._state_topic} is {time.monotonic() - state[0]:.1f} s old")
        return state[1].copy()
