"""The teleop node over DDS: fake headset (gRPC) -> real avp-stream client in the node -> chunks.

The node runs as its own process with config/xhand.yaml, started as the graph starts
nodes; the test plays the robot (publishes /ee_pose) and watches /hand_tracking and
/action_chunk, and drives the clutch through the node's service.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from vpp_msgs.msg import ActionChunk, HandTracking  # noqa: E402

from vpp_core.action_space import get_action_space  # noqa: E402
from vpp_ros.chunk_conversion import msg_to_chunk  # noqa: E402
from vpp_ros.graph import NodeSpec, node_command, stop_process  # noqa: E402
from vpp_ros.qos import CHUNK_QOS, SENSOR_QOS, STATUS_QOS  # noqa: E402
from vpp_ros.time_conversion import stamp_to_seconds  # noqa: E402
from vpp_teleop.fake_avp_server import FakeAvpServer, free_loopback_host  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]
CONFIG = REPO / "config" / "xhand.yaml"
ROBOT_POSITION = (0.45, 0.0, 0.35)
ROBOT_QUAT = (1.0, 0.0, 0.0, 0.0)


def teleop_spec(host: str, **extra) -> NodeSpec:
    params = {"avp_client.ip": host, "avp_client.connect_timeout_s": 10.0,
              "teleop.clutch.gesture": "off", **extra}
    return NodeSpec("teleop_node", "vpp_teleop", "teleop_node", "vpp_teleop.teleop_node", params)


class Rig:
    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("teleop_test_rig")
        self.pose_pub = self.node.create_publisher(PoseStamped, "/ee_pose", SENSOR_QOS)
        self.tracking: list[HandTracking] = []
        self.chunks: list[ActionChunk] = []
        self.node.create_subscription(HandTracking, "/hand_tracking", self.tracking.append, SENSOR_QOS)
        self.node.create_subscription(ActionChunk, "/action_chunk", self.chunks.append, CHUNK_QOS)
        self.clutch = self.node.create_client(SetBool, "/teleop_node/clutch")
        self.status: dict = {}
        self.node.create_subscription(String, "/teleop_node/status", self._on_status, STATUS_QOS)
        self.node.create_timer(0.02, self._publish_pose)

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)

    def _publish_pose(self) -> None:
        msg = PoseStamped()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = "link_base"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = ROBOT_POSITION
        (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z,
         msg.pose.orientation.w) = ROBOT_QUAT
        self.pose_pub.publish(msg)

    def spin_until(self, until, timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not until():
            rclpy.spin_once(self.node, timeout_sec=0.02)
        return until()

    def call_clutch(self, engage: bool) -> SetBool.Response:
        assert self.clutch.wait_for_service(timeout_sec=60.0), "teleop node offers no ~/clutch service"
        future = self.clutch.call_async(SetBool.Request(data=engage))
        assert self.spin_until(future.done), "~/clutch did not answer"
        return future.result()

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture
def graph(tmp_path):
    host = free_loopback_host()
    server = FakeAvpServer(host, scenario="wrist", rate_hz=60.0).start()
    proc = subprocess.Popen(node_command(teleop_spec(host), str(CONFIG), tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rig = Rig()
    yield rig, proc, server
    rig.close()
    output = stop_process(proc)
    server.stop()
    print(output)


def test_node_streams_tracking_and_chunks_behind_the_clutch(graph):
    rig, proc, server = graph
    assert rig.spin_until(lambda: len(rig.tracking) >= 10 or proc.poll() is not None, 90.0), \
        "no /hand_tracking from the node"
    assert proc.poll() is None, "teleop node exited"
    msg = rig.tracking[-1]
    assert msg.right.tracking_valid and msg.header.frame_id == "avp_world" and len(msg.right.joints) == 27
    source, arrival = stamp_to_seconds(msg.source_stamp), stamp_to_seconds(msg.header.stamp)
    assert source > 0 and arrival >= source - 1e-3
    assert [m.sequence_id for m in rig.tracking] == sorted(m.sequence_id for m in rig.tracking)
    assert not rig.chunks, "chunks sent while the clutch was released"

    assert rig.call_clutch(True).success
    assert rig.spin_until(lambda: len(rig.chunks) >= 20 or proc.poll() is not None), "no chunks after engaging"
    space = get_action_space("xhand")
    for chunk_msg in rig.chunks:
        chunk = msg_to_chunk(chunk_msg, expected_embodiment="xhand")
        assert chunk.actions.shape == (3, space.dim) and chunk.frame_id == "link_base"
        np.testing.assert_allclose(chunk.reference_pose.position, ROBOT_POSITION, atol=1e-9)
        assert np.all(np.abs(chunk.actions[:, :3]) < 0.2)  # the wrist circle is 5 cm
        hand = chunk.actions[:, 6:]
        assert np.all(hand >= -0.7) and np.all(hand <= 1.92)
    assert len({m.sequence_id for m in rig.chunks}) == len(rig.chunks)

    assert rig.call_clutch(False).success
    # Released at the next headset update: after a few more updates, no new chunk may appear.
    seen = len(rig.tracking)
    assert rig.spin_until(lambda: len(rig.tracking) >= seen + 10)
    released_count = len(rig.chunks)
    seen = len(rig.tracking)
    assert rig.spin_until(lambda: len(rig.tracking) >= seen + 30)
    assert len(rig.chunks) == released_count, "chunks kept coming after the clutch was released"


def test_node_holds_when_the_headset_goes_silent(graph):
    rig, proc, server = graph
    assert rig.spin_until(lambda: len(rig.tracking) >= 5 or proc.poll() is not None, 90.0)
    assert rig.call_clutch(True).success
    assert rig.spin_until(lambda: len(rig.chunks) >= 5)
    server.stop()  # the headset disappears
    assert rig.spin_until(lambda: rig.status.get("headset") in ("stale", "reconnecting", "no_data", "connecting")), \
        f"status never showed the headset gone: {rig.status}"
    rig.spin_until(lambda: False, timeout=1.0)  # drain what DDS still holds
    # Without new tracking there are no new chunks.
    tracked, count = len(rig.tracking), len(rig.chunks)
    rig.spin_until(lambda: False, timeout=1.0)
    assert len(rig.tracking) == tracked and len(rig.chunks) == count
    assert proc.poll() is None, "teleop node died when the headset went away"
