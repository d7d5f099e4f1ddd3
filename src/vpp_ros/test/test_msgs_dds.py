"""Every vpp_msgs type survives a trip over DDS between two processes on loopback."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosidl_parser import definition as idl  # noqa: E402

from vpp_ros.relay import import_message_type  # noqa: E402

MESSAGE_TYPES = [
    "vpp_msgs/msg/ActionChunk",
    "vpp_msgs/msg/Hand",
    "vpp_msgs/msg/HandTracking",
    "vpp_msgs/msg/ExecutorStatus",
    "vpp_msgs/msg/PolicyStatus",
    "vpp_msgs/srv/RecordEpisode_Request",
    "vpp_msgs/srv/RecordEpisode_Response",
]

_INT_RANGES = {
    "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "uint16": (0, 65535),
    "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-2**63, 2**63 - 1),
    "uint64": (0, 2**64 - 1), "char": (0, 255), "octet": (0, 255), "byte": (0, 255),
}


def _random_value(slot, rng: random.Random):
    if isinstance(slot, idl.BasicType):
        t = slot.typename
        if t in ("float", "double"):
            # float32 fields would not round-trip float64 values bit-exactly: draw float32s.
            return float(np.float32(rng.uniform(-1e3, 1e3))) if t == "float" else rng.uniform(-1e6, 1e6)
        if t == "boolean":
            return rng.random() < 0.5
        if t in ("octet", "byte"):
            return bytes([rng.randint(0, 255)])
        lo, hi = _INT_RANGES[t]
        return rng.randint(lo, hi)
    if isinstance(slot, (idl.UnboundedString, idl.BoundedString)):
        return "".join(rng.choice("abcxyz _-/é") for _ in range(rng.randint(0, 24)))
    if isinstance(slot, idl.NamespacedType):
        return _random_message(import_message_type("/".join(slot.namespaces + [slot.name])), rng)
    if isinstance(slot, idl.Array):
        return [_random_value(slot.value_type, rng) for _ in range(slot.size)]
    if isinstance(slot, (idl.UnboundedSequence, idl.BoundedSequence)):
        n = rng.randint(0, 40)
        if isinstance(slot, idl.BoundedSequence):
            n = min(n, slot.maximum_size)
        return [_random_value(slot.value_type, rng) for _ in range(n)]
    raise TypeError(f"unhandled slot type {slot!r}")


def _random_message(msg_type, rng: random.Random):
    msg = msg_type()
    for name, slot in zip(msg_type.__slots__, msg_type.SLOT_TYPES):
        value = _random_value(slot, rng)
        field = name.lstrip("_")
        if isinstance(slot, (idl.Array, idl.UnboundedSequence, idl.BoundedSequence)) and isinstance(
            slot.value_type, idl.BasicType
        ) and slot.value_type.typename in ("float", "double"):
            value = np.asarray(value, dtype=np.float32 if slot.value_type.typename == "float" else np.float64)
        setattr(msg, field, value)
    return msg


def _messages_equal(a, b) -> bool:
    return a == b


@pytest.fixture(scope="module")
def ros_node():
    rclpy.init()
    node = rclpy.create_node("vpp_msgs_roundtrip_test")
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def relays():
    """One relay process per message type: /rt_in_<i> -> /rt_out_<i>."""
    procs = []
    for i, type_name in enumerate(MESSAGE_TYPES):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "vpp_ros.relay", "--type", type_name,
             "--input", f"/rt_in_{i}", "--output", f"/rt_out_{i}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy(),
        ))
    yield procs
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.mark.parametrize("index", range(len(MESSAGE_TYPES)), ids=MESSAGE_TYPES)
def test_message_round_trips_between_processes(ros_node, relays, index):
    type_name = MESSAGE_TYPES[index]
    msg_type = import_message_type(type_name)
    rng = random.Random(index)
    sent = [_random_message(msg_type, rng) for _ in range(3)]
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                     reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    received = []
    sub = ros_node.create_subscription(msg_type, f"/rt_out_{index}", received.append, qos)
    pub = ros_node.create_publisher(msg_type, f"/rt_in_{index}", qos)
    try:
        deadline = time.monotonic() + 60.0
        # Wait until the relay's subscription is matched so nothing is published into the void.
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            assert relays[index].poll() is None, relays[index].stdout.read().decode()
            rclpy.spin_once(ros_node, timeout_sec=0.05)
        for msg in sent:
            pub.publish(msg)
        while len(received) < len(sent) and time.monotonic() < deadline:
            rclpy.spin_once(ros_node, timeout_sec=0.05)
        assert len(received) == len(sent), f"{type_name}: got {len(received)} of {len(sent)} messages back"
        for a, b in zip(sent, received):
            assert _messages_equal(a, b), f"{type_name} changed in transit:\n{a}\n!=\n{b}"
    finally:
        ros_node.destroy_subscription(sub)
        ros_node.destroy_publisher(pub)
