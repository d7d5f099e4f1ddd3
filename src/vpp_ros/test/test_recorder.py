"""The episode recorder over DDS: messages published by another process end up in rosbag2 bags.

The recorder runs as its own process with config/panda.yaml's ``recorder`` section (as the graph
starts it); the test publishes images (best effort), joint states, poses, action chunks and
instructions (reliable), drives START / STOP / DISCARD through ``/recorder/episode`` and reads the
bags back with ``rosbags`` (mcap and sqlite3).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from vpp_msgs.msg import ActionChunk  # noqa: E402
from vpp_msgs.srv import RecordEpisode  # noqa: E402

from vpp_ros.graph import NodeSpec, node_command, stop_process  # noqa: E402
from vpp_ros.qos import CHUNK_QOS, COMMAND_QOS, SENSOR_QOS, STATUS_QOS  # noqa: E402
from vpp_ros.recorder import parse_topic_entry, read_custom_data, update_custom_data  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]
GUARD_S = 30.0  # failure guard for waits (never a timing assertion)


def _start_recorder(tmp_path: pathlib.Path, storage: str) -> tuple[subprocess.Popen, pathlib.Path]:
    out = tmp_path / f"bags_{storage}"
    spec = NodeSpec("recorder", "vpp_ros", "recorder", "vpp_ros.recorder",
                    {"output_dir": str(out), "storage": storage, "status_period_s": 0.2})
    params = tmp_path / f"params_{storage}"
    params.mkdir()
    proc = subprocess.Popen(node_command(spec, str(REPO / "config" / "panda.yaml"), params),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    return proc, out


class _Rig:
    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("recorder_test_rig")
        n = self.node
        self.image_pub = n.create_publisher(Image, "/static_camera/image_raw", SENSOR_QOS)
        self.joint_pub = n.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        self.pose_pub = n.create_publisher(PoseStamped, "/ee_pose", SENSOR_QOS)
        self.chunk_pub = n.create_publisher(ActionChunk, "/action_chunk", CHUNK_QOS)
        self.lang_pub = n.create_publisher(String, "/task_language", COMMAND_QOS)
        self.client = n.create_client(RecordEpisode, "/recorder/episode")
        self.status: dict | None = None
        n.create_subscription(String, "/recorder/status", self._on_status, STATUS_QOS)

    def _on_status(self, msg: String) -> None:
        self.status = json.loads(msg.data)

    def spin_until(self, condition, what: str, proc: subprocess.Popen) -> None:
        end = time.monotonic() + GUARD_S
        while not condition():
            if proc.poll() is not None:
                pytest.fail(f"recorder exited ({proc.returncode}) while waiting for {what}:\n{proc.stdout.read()}")
            if time.monotonic() > end:
                pytest.fail(f"gave up waiting for {what}; last status {self.status}")
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def call(self, command: int, instruction: str = "") -> RecordEpisode.Response:
        future = self.client.call_async(RecordEpisode.Request(command=command, instruction=instruction))
        end = time.monotonic() + GUARD_S
        while not future.done():
            assert time.monotonic() < end, "no answer from /recorder/episode"
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return future.result()

    def received(self, topic: str) -> int:
        return int((self.status or {}).get("received", {}).get(topic, 0))

    def publish_batch(self, k: int) -> None:
        stamp = self.node.get_clock().now().to_msg()
        img = Image(height=4, width=6, encoding="rgb8", step=18, data=bytes([k % 256]) * 72)
        img.header.stamp, img.header.frame_id = stamp, "static_camera_optical_frame"
        self.image_pub.publish(img)
        js = JointState(name=[f"fr3_joint{i}" for i in range(1, 8)], position=[0.1 * k] * 7)
        js.header.stamp = stamp
        self.joint_pub.publish(js)
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, "fr3_link0"
        pose.pose.position.x, pose.pose.orientation.w = 0.3 + 0.01 * k, 1.0
        self.pose_pub.publish(pose)
        chunk = ActionChunk(sequence_id=k, embodiment="panda", action_space="panda", dt=0.1, horizon=1,
                            action_dim=7, data=[float(k)] * 7, instruction="touch the red cube")
        chunk.header.stamp = stamp
        self.chunk_pub.publish(chunk)

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown()


def _read_bag(path: pathlib.Path) -> dict[str, list]:
    from rosbags.rosbag2 import Reader

    from vpp_core.data.ros_types import vpp_typestore

    store = vpp_typestore()
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, t_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t_ns, store.deserialize_cdr(raw, conn.msgtype)))
    return out


def test_topic_entries_parse():
    assert parse_topic_entry("/a/b:sensor_msgs/msg/Image") == ("/a/b", "sensor_msgs/msg/Image")
    assert parse_topic_entry("/a:std_msgs/String") == ("/a", "std_msgs/msg/String")
    assert parse_topic_entry(" /joint_states ") == ("/joint_states", None)
    for bad in ("joint_states", "/a:Image", "", "/a:pkg//x"):
        with pytest.raises(ValueError):
            parse_topic_entry(bad)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_start_stop_discard_and_read_back(tmp_path, storage):
    proc, out = _start_recorder(tmp_path, storage)
    rig = _Rig()
    try:
        rig.spin_until(lambda: rig.status is not None and len(rig.status["subscribed"]) >= 5
                       and rig.client.service_is_ready(), "the recorder's status and service", proc)
        # A START without instruction is refused and nothing is created.
        bad = rig.call(RecordEpisode.Request.START, "   ")
        assert not bad.success and "instruction" in bad.message
        assert rig.call(RecordEpisode.Request.STOP).success is False  # not recording

        # An instruction published before START is not part of the episode.
        rig.lang_pub.publish(String(data="touch the blue cube"))
        rig.spin_until(lambda: rig.received("/task_language") >= 1, "the instruction", proc)
        start = rig.call(RecordEpisode.Request.START, "touch the red cube")
        assert start.success, start.message
        assert rig.call(RecordEpisode.Request.START, "again").success is False  # one at a time
        base = {t: rig.received(t) for t in ("/static_camera/image_raw", "/joint_states", "/ee_pose", "/action_chunk")}
        n = 6
        for k in range(n):
            rig.publish_batch(k)
            rclpy.spin_once(rig.node, timeout_sec=0.02)
        rig.lang_pub.publish(String(data="touch the red cube"))
        # Reliable topics arrive in full; wait for the recorder to have received them all.
        rig.spin_until(lambda: rig.received("/action_chunk") >= base["/action_chunk"] + n
                       and rig.received("/task_language") >= 2
                       and all(rig.received(t) > base[t] for t in base), "the published messages", proc)
        stop = rig.call(RecordEpisode.Request.STOP)
        assert stop.success, stop.message
        assert stop.episode_name == start.episode_name

        bag = out / start.episode_name
        assert (bag / "metadata.yaml").is_file()
        custom = read_custom_data(bag)
        assert custom["vpp.instruction"] == "touch the red cube"
        assert custom["vpp.embodiment"] == "panda" and custom["vpp.episode_name"] == start.episode_name
        assert custom["vpp.outcome"] == "kept"
        counts = json.loads(custom["vpp.message_counts"])
        assert json.loads(custom["vpp.dropped"]) == {}

        msgs = _read_bag(bag)
        chunks = [m for _t, m in msgs["/action_chunk"]]
        assert [int(c.sequence_id) for c in chunks] == list(range(n))  # all, in order
        np.testing.assert_allclose(chunks[3].data, [3.0] * 7)
        assert [m.data for _t, m in msgs["/task_language"]] == ["touch the red cube"]
        images = [m for _t, m in msgs["/static_camera/image_raw"]]
        assert images and images[0].encoding == "rgb8" and images[0].width == 6 and len(images[0].data) == 72
        assert msgs["/joint_states"][0][1].name[0] == "fr3_joint1" and msgs["/ee_pose"]
        assert counts == {t: len(v) for t, v in msgs.items()}
        # Bag time = receive time: non-decreasing within a topic and after the header stamps.
        for topic in ("/action_chunk", "/ee_pose"):
            times = [t for t, _m in msgs[topic]]
            assert times == sorted(times)
            assert all(t >= m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for t, m in msgs[topic])

        # DISCARD deletes the bag.
        again = rig.call(RecordEpisode.Request.START, "touch the blue cube")
        assert again.success and again.episode_name != start.episode_name
        rig.publish_batch(99)
        discard = rig.call(RecordEpisode.Request.DISCARD)
        assert discard.success and "discarded" in discard.message
        assert not (out / again.episode_name).exists()
        assert sorted(p.name for p in out.iterdir()) == [start.episode_name]

        # The caller can tag an outcome afterwards; the bag stays readable.
        update_custom_data(bag, {"vpp.outcome": "success", "vpp.seed": 7})
        assert read_custom_data(bag)["vpp.outcome"] == "success" and read_custom_data(bag)["vpp.seed"] == "7"
        assert len(_read_bag(bag)["/action_chunk"]) == n
    finally:
        rig.close()
        log = stop_process(proc)
    assert "Traceback" not in log, log


def test_sigint_during_an_episode_leaves_a_readable_bag(tmp_path):
    proc, out = _start_recorder(tmp_path, "mcap")
    rig = _Rig()
    try:
        rig.spin_until(lambda: rig.status is not None and rig.client.service_is_ready(), "the recorder", proc)
        start = rig.call(RecordEpisode.Request.START, "push the red cube to the left")
        assert start.success, start.message
        for k in range(4):
            rig.publish_batch(k)
        rig.spin_until(lambda: rig.received("/action_chunk") >= 4, "the chunks", proc)
        os.killpg(proc.pid, signal.SIGINT)
        log, _ = proc.communicate(timeout=GUARD_S)
    finally:
        rig.close()
        if proc.poll() is None:
            stop_process(proc)
    assert proc.returncode in (0, -signal.SIGINT), log
    assert "Traceback" not in log, log
    bag = out / start.episode_name
    custom = read_custom_data(bag)
    assert custom["vpp.outcome"] == "interrupted"
    assert custom["vpp.instruction"] == "push the red cube to the left"
    assert [int(m.sequence_id) for _t, m in _read_bag(bag)["/action_chunk"]] == [0, 1, 2, 3]
