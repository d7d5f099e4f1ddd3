"""The policy node as a separate process over DDS: chunks from camera images, instruction handling."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from vpp_msgs.msg import ActionChunk, PolicyStatus  # noqa: E402

from vpp_ros.chunk_conversion import msg_to_chunk  # noqa: E402
from vpp_ros.graph import NodeSpec, node_command, stop_process  # noqa: E402
from vpp_ros.image_conversion import rgb_to_image_msg  # noqa: E402
from vpp_ros.qos import CHUNK_QOS, COMMAND_QOS, SENSOR_QOS, STATUS_QOS  # noqa: E402
from vpp_ros.time_conversion import seconds_to_stamp  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def policy_process(tmp_path_factory):
    spec = NodeSpec("policy_node", "vpp_policy_node", "policy_node", "vpp_policy_node.policy_node",
                    {"replan_after_steps": 3})
    proc = subprocess.Popen(node_command(spec, str(REPO / "config" / "panda.yaml"), tmp_path_factory.mktemp("params")),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    yield proc
    print(stop_process(proc))


class _Rig:
    """Test-side camera/robot publishers and chunk/status subscribers."""

    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("policy_node_test_rig")
        self.static_pub = self.node.create_publisher(Image, "/static_camera/image_raw", SENSOR_QOS)
        self.wrist_pub = self.node.create_publisher(Image, "/wrist_camera/image_raw", SENSOR_QOS)
        self.pose_pub = self.node.create_publisher(PoseStamped, "/ee_pose", SENSOR_QOS)
        self.lang_pub = self.node.create_publisher(String, "/task_language", COMMAND_QOS)
        self.chunks: list[ActionChunk] = []
        self.statuses: list[PolicyStatus] = []
        self.node.create_subscription(ActionChunk, "/action_chunk", self.chunks.append, CHUNK_QOS)
        self.node.create_subscription(PolicyStatus, "/policy_node/status", self.statuses.append, STATUS_QOS)
        self.sent_stamps: list[float] = []
        self.rng = np.random.default_rng(0)

    def publish_observation(self) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        stamp = seconds_to_stamp(now)
        for pub in (self.static_pub, self.wrist_pub):
            pub.publish(rgb_to_image_msg(self.rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), stamp, "cam"))
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.4, 0.1, 0.45
        pose.pose.orientation.x = 1.0
        pose.pose.orientation.w = 0.0
        self.pose_pub.publish(pose)
        self.sent_stamps.append(now)

    def run(self, seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        next_obs = 0.0
        while time.monotonic() < end and not until():
            if time.monotonic() >= next_obs:
                self.publish_observation()
                next_obs = time.monotonic() + 0.05
            rclpy.spin_once(self.node, timeout_sec=0.01)

    def say(self, text: str) -> None:
        self.lang_pub.publish(String(data=text))

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture(scope="module")
def rig(policy_process):
    r = _Rig()
    # Wait until the node is up (its status topic is latched).
    r.run(120, until=lambda: bool(r.statuses) or policy_process.poll() is not None)
    assert policy_process.poll() is None, "policy node exited during start-up"
    assert r.statuses, "policy node did not come up within 120 s"
    yield r
    r.close()


def test_no_chunks_before_an_instruction(rig):
    rig.run(1.0)
    assert rig.chunks == []
    assert rig.statuses[-1].state == PolicyStatus.STATE_IDLE


def test_chunks_are_well_formed_and_stamped_with_observation_time(rig):
    rig.say("push the red block to the left")
    rig.run(60, until=lambda: len(rig.chunks) >= 3)
    assert len(rig.chunks) >= 3, "no chunks within 60 s of the instruction"
    for msg in rig.chunks:
        chunk = msg_to_chunk(msg, expected_embodiment="panda")  # raises on any malformation
        assert chunk.actions.shape == (10, 7)
        assert chunk.instruction == "push the red block to the left"
        # Stamped with the capture time of an observation the rig sent, not the publish time.
        assert min(abs(s - chunk.stamp) for s in rig.sent_stamps) < 1e-6
        assert chunk.reference_pose.position == pytest.approx((0.4, 0.1, 0.45))
        # The random fallback policy maps to the configured ranges.
        assert np.all(np.abs(chunk.actions[:, :3]) <= 0.02 + 1e-6)
        assert chunk.planning_latency > 0
    seqs = [m.sequence_id for m in rig.chunks]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.parametrize("text", ["x" * 5000, "open\x01\x02 the drawer\ufffd\ufffd", "!!!!????####"])
def test_bad_instructions_are_refused_without_a_crash(rig, policy_process, text):
    rig.say(text)
    before = len(rig.chunks)
    rig.run(1.5)
    assert policy_process.poll() is None, "policy node died on a bad instruction"
    # The previous instruction keeps running.
    assert len(rig.chunks) > before
    assert rig.chunks[-1].instruction == "push the red block to the left"


def test_empty_instruction_stops_planning(rig, policy_process):
    rig.say("")
    rig.run(1.5)
    count = len(rig.chunks)
    rig.run(1.5)
    assert len(rig.chunks) == count, "chunks kept coming after an empty instruction"
    assert rig.statuses[-1].state == PolicyStatus.STATE_IDLE
    assert policy_process.poll() is None


def test_stale_images_stop_planning_with_a_reason(rig):
    rig.say("open the drawer")
    rig.run(30, until=lambda: rig.chunks and rig.chunks[-1].instruction == "open the drawer")
    # Cameras stop: the node must refuse to plan and say why.
    end = time.monotonic() + 3
    while time.monotonic() < end:
        rclpy.spin_once(rig.node, timeout_sec=0.05)
    count = len(rig.chunks)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        rclpy.spin_once(rig.node, timeout_sec=0.05)
    assert len(rig.chunks) == count
    waiting = [s for s in rig.statuses if s.state == PolicyStatus.STATE_WAITING_FOR_OBSERVATION]
    assert waiting and "old" in waiting[-1].reason
