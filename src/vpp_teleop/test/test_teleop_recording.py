"""A teleoperated demonstration, end to end: fake Vision Pro -> teleop node -> simulated XArm +
XHand -> fallback recorder -> rosbag2 (mcap) -> dataset converter -> one episode.

The graph is the one ``launch/teleop_xhand.launch.py`` starts (``build_teleop_graph``, recorder
forced to the fallback since CI has no rosbag2), run as processes like ``python -m
vpp_teleop.teleop_graph --use-sim``. The clutch is engaged through the node's ``~/clutch``
service; the scripted operator moves the right wrist on a circle while opening and closing the
fingers.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from std_srvs.srv import SetBool  # noqa: E402
from vpp_msgs.msg import ActionChunk  # noqa: E402
from vpp_msgs.srv import RecordEpisode  # noqa: E402

from vpp_core.data.convert import convert, load_config  # noqa: E402
from vpp_core.data.dataset import VPPDataset  # noqa: E402
from vpp_ros.graph import GraphArgs, GraphProcesses  # noqa: E402
from vpp_ros.qos import CHUNK_QOS  # noqa: E402
from vpp_ros.recorder import read_custom_data  # noqa: E402
from vpp_teleop.fake_avp_server import FakeAvpServer, free_loopback_host  # noqa: E402
from vpp_teleop.teleop_graph import build_teleop_graph  # noqa: E402

INSTRUCTION = "wave the hand over the red cube"


def test_graph_description_matches_the_launch_file(tmp_path):
    """What teleop_xhand.launch.py starts: no policy, the teleop node, a recorder with /hand_tracking."""
    args = GraphArgs(robot="xhand", use_sim=True)
    specs = {s.name: s for s in build_teleop_graph(args, avp_ip="10.0.0.7", recorder="fallback", bag_dir=str(tmp_path))}
    assert set(specs) == {"sim_world", "xhand_executor", "teleop_node", "recorder"}
    assert specs["teleop_node"].parameters == {"avp_client.ip": "10.0.0.7"}
    recorder = specs["recorder"]
    assert recorder.module == "vpp_ros.recorder" and recorder.parameters["output_dir"] == str(tmp_path)
    assert "/hand_tracking:vpp_msgs/msg/HandTracking" in recorder.parameters["topics"]
    assert build_teleop_graph(args, recorder="none")[-1].name == "teleop_node"
    real = {s.name for s in build_teleop_graph(GraphArgs(robot="xhand"), recorder="fallback")}
    assert {"static_camera", "wrist_camera", "xhand_executor"} <= real
    launch_text = (pathlib.Path(__file__).resolve().parents[3] / "launch" / "teleop_xhand.launch.py").read_text()
    assert "build_teleop_graph" in launch_text


class Rig:
    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("teleop_recording_rig")
        self.chunks: list[ActionChunk] = []
        self.node.create_subscription(ActionChunk, "/action_chunk", self.chunks.append, CHUNK_QOS)
        self.episode = self.node.create_client(RecordEpisode, "/recorder/episode")
        self.clutch = self.node.create_client(SetBool, "/teleop_node/clutch")

    def spin_until(self, until, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not until():
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return until()

    def call(self, command: int, instruction: str = "") -> RecordEpisode.Response:
        assert self.episode.wait_for_service(timeout_sec=90.0), "no /recorder/episode service"
        future = self.episode.call_async(RecordEpisode.Request(command=command, instruction=instruction))
        assert self.spin_until(future.done, 60.0), "/recorder/episode did not answer"
        return future.result()

    def engage(self) -> bool:
        """Engage through the service; refused until the node has the robot's pose: retry."""
        assert self.clutch.wait_for_service(timeout_sec=90.0), "no /teleop_node/clutch service"
        for _ in range(200):
            future = self.clutch.call_async(SetBool.Request(data=True))
            if self.spin_until(future.done, 30.0) and future.result().success:
                return True
            self.spin_until(lambda: False, 0.25)
        return False

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown()


@pytest.mark.slow
def test_teleoperated_episode_becomes_a_dataset_episode(tmp_path):
    host = free_loopback_host()
    bags, logs = tmp_path / "bags", tmp_path / "logs"
    args = GraphArgs(robot="xhand", use_sim=True)
    server = FakeAvpServer(host, scenario="demo", rate_hz=30.0).start()
    graph = GraphProcesses(args, log_dir=logs)
    graph.specs = build_teleop_graph(args, avp_ip=host, recorder="fallback", bag_dir=str(bags))
    rig = None
    try:
        graph.start()
        rig = Rig()
        # The scripted pinch at 0.5 s may come before the robot's pose reaches the teleop node
        # (then the node refuses to engage): engage through the service as well.
        assert rig.engage(), "the teleop node never accepted the clutch"
        assert rig.spin_until(lambda: len(rig.chunks) >= 20 or graph.dead(), 120.0), \
            f"no teleop chunks (dead nodes: {graph.dead()}); logs in {logs}"
        assert not graph.dead(), f"nodes exited: {graph.dead()}"
        started = rig.call(RecordEpisode.Request.START, INSTRUCTION)
        assert started.success, started.message
        before = len(rig.chunks)
        # ~3 s of demonstration (90 chunks at the headset's 30 Hz; longer if the node skips).
        assert rig.spin_until(lambda: len(rig.chunks) >= before + 90 or graph.dead(), 120.0)
        stopped = rig.call(RecordEpisode.Request.STOP)
        assert stopped.success, stopped.message
    finally:
        if rig is not None:
            rig.close()
        graph.stop()
        server.stop()

    episodes = sorted(p for p in bags.iterdir() if p.is_dir())
    assert len(episodes) == 1, episodes
    custom = read_custom_data(episodes[0])
    assert custom["vpp.instruction"] == INSTRUCTION and custom["vpp.embodiment"] == "xhand"
    counts = json.loads(custom["vpp.message_counts"])
    assert counts.get("/hand_tracking", 0) > 45 and counts.get("/action_chunk", 0) > 45, counts

    dataset_dir = tmp_path / "dataset"
    config = load_config(image_size=64)
    # The simulated cameras render at 10 Hz, the dataset's rate, and five processes share two
    # cores here: a late render puts a tick up to a period from its nearest frame, and the
    # executor's 50 Hz state stream has paused for up to ~0.4 s in CI, beyond the converter's
    # defaults (50 ms, 0.1 s). What is tested here is the teleop -> recorder -> converter chain,
    # not the sim's timing.
    config.sync = dataclasses.replace(config.sync, max_camera_skew_s=0.2, max_camera_gap_s=1.0,
                                      max_state_gap_s=1.0)
    convert([bags], dataset_dir, "xhand", config=config, progress=False)
    dataset = VPPDataset(dataset_dir)
    assert len(dataset.episodes) == 1, f"rejected: {(dataset_dir / 'meta' / 'rejected.jsonl').read_text()}"
    episode = dataset.load_episode(0)
    assert episode.instruction == INSTRUCTION
    frames = len(episode.timestamps)
    assert frames >= 15  # >= 3 s at 10 Hz
    np.testing.assert_allclose(np.diff(episode.timestamps), 0.1, atol=1e-6)
    assert set(episode.frames) == {"static", "wrist"}
    assert all(v.shape == (frames, 64, 64, 3) for v in episode.frames.values())
    assert episode.actions.shape == (frames, dataset.info.action_horizon, 18)
    assert episode.proprio is not None and episode.proprio.shape == (frames, 19)
    # The hand moved: the recorded commanded finger joints vary over the episode.
    assert np.ptp(episode.actions[:, 0, 6:], axis=0).max() > 0.2
    assert dataset.episodes[0].sync, "the converter wrote no synchronisation report"


def test_ros2_bag_record_command_per_episode():
    """The rosbag2 path (robot PCs): mcap, explicit topics, QoS overrides, instruction in custom_data."""
    from vpp_teleop.bag_episodes import BagEpisodeConfig, bag_record_command

    config = BagEpisodeConfig(topics=("/static_camera/image_raw:sensor_msgs/msg/Image", "/hand_tracking"))
    command = bag_record_command(config, "/data/ep1", {"vpp.instruction": INSTRUCTION, "vpp.embodiment": "xhand"},
                                 "/cfg/bag_qos_overrides.yaml")
    assert command[:7] == ["ros2", "bag", "record", "-s", "mcap", "-o", "/data/ep1"]
    assert command[command.index("--qos-profile-overrides-path") + 1] == "/cfg/bag_qos_overrides.yaml"
    assert f"vpp.instruction={INSTRUCTION}" in command and "vpp.embodiment=xhand" in command
    assert command[command.index("--topics") + 1:] == ["/static_camera/image_raw", "/hand_tracking"]
    overrides = pathlib.Path(__file__).resolve().parents[3] / "config" / "teleop" / "bag_qos_overrides.yaml"
    import yaml

    profiles = yaml.safe_load(overrides.read_text())
    assert profiles["/static_camera/image_raw"]["reliability"] == "best_effort"
    with pytest.raises(ValueError):
        bag_record_command(BagEpisodeConfig(), "/data/ep2", {}, None)
