"""Recorded commands -> dataset actions -> executed targets reproduce the recorded commands.

The action space (vpp_core.action_space) is defined once; the converter uses
``poses_to_actions`` (reference = measured pose at the frame, targets = commands held at
t + k*dt) and the executors ``actions_to_poses``. Here a synthetic demonstration goes through a
real bag and the converter, then back through ``actions_to_poses`` and through the real executor
core streaming to franky-sim, and must give the recorded commanded targets again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from vpp_core.action_space import actions_to_poses, pose_distance, pose_from_pos_quat
from vpp_core.data.bag_reader import read_bag
from vpp_core.data.convert import convert, load_config
from vpp_core.data.dataset import VPPDataset
from vpp_core.data.synthetic import write_synthetic_bag

FPS, HORIZON = 10.0, 10
TOLERANCE = 1e-6  # m and rad (float32 storage of actions and reference pose)


def _dataset(tmp_path: Path, embodiment: str, storage: str):
    bag = write_synthetic_bag(tmp_path / "bags" / "demo", embodiment=embodiment, storage=storage, seconds=2.5,
                              image_size=(48, 64), seed=3)
    config = load_config(fps=FPS, horizon=HORIZON, image_size=32)
    summary = convert([bag], tmp_path / "ds", embodiment, config, progress=False)
    assert not summary.rejected, summary.rejected
    dataset = VPPDataset(tmp_path / "ds")
    contents = read_bag(bag, config.bag_topics())
    return dataset, dataset.load_episode(0, load_frames=False), contents


def _recorded_targets(contents, embodiment_names, query_ns):
    """The commands the executor was sending at ``query_ns``: last one stamped at or before."""
    index = np.searchsorted(contents.commanded_pose.stamps_ns, query_ns, side="right") - 1
    poses = contents.commanded_pose.values[index]
    effector = np.stack([contents.commanded_effector[name].values[
        np.searchsorted(contents.commanded_effector[name].stamps_ns, query_ns, side="right") - 1]
        for name in embodiment_names], -1)
    return poses, effector


@pytest.mark.parametrize("embodiment,storage", [("panda", "mcap"), ("xhand", "sqlite3")])
def test_actions_to_poses_reproduces_the_recorded_commands(tmp_path, embodiment, storage):
    dataset, episode, contents = _dataset(tmp_path, embodiment, storage)
    names = dataset.info.action_names[6:]
    dt_ns = int(round(1e9 / FPS))
    worst = [0.0, 0.0, 0.0]
    for t in range(episode.length):
        reference = pose_from_pos_quat(episode.ee_pose[t, :3].astype(np.float64), episode.ee_pose[t, 3:].astype(np.float64))
        poses, effector = actions_to_poses(reference, episode.actions[t], dataset.info.action_space)
        query = np.minimum(episode.stamp_ns[t] + np.arange(HORIZON) * dt_ns, episode.stamp_ns[-1])
        expected_poses, expected_effector = _recorded_targets(contents, names, query)
        for k in range(HORIZON):
            translation, rotation = pose_distance(poses[k], expected_poses[k])
            worst[0], worst[1] = max(worst[0], translation), max(worst[1], rotation)
        worst[2] = max(worst[2], float(np.abs(effector - expected_effector).max()))
    assert worst[0] < TOLERANCE and worst[1] < TOLERANCE, worst
    assert worst[2] < TOLERANCE, worst
    # The chunk really moves (a test with constant targets would prove nothing).
    assert np.abs(episode.actions[:, -1, :3]).max() > 0.01


# ------------------------------------------------------------------------------------ executor

def test_executor_streams_the_recorded_targets_at_the_step_times(tmp_path):
    pytest.importorskip("franky_sim")
    from vpp_hardware.arms.franka.franky_arm import FrankyArm, FrankyArmConfig
    from vpp_hardware.arms.franka.sim_server import FrankySimServer
    from vpp_hardware.executor import ChunkExecutor, ChunkExecutorConfig, TimedChunk
    from vpp_core.action_space import poses_to_actions, interpolate_poses

    dataset, episode, contents = _dataset(tmp_path, "panda", "mcap")
    frame = episode.length // 2
    reference = pose_from_pos_quat(episode.ee_pose[frame, :3].astype(np.float64),
                                   episode.ee_pose[frame, 3:].astype(np.float64))
    dt_ns = int(round(1e9 / FPS))
    query = np.minimum(episode.stamp_ns[frame] + np.arange(HORIZON) * dt_ns, episode.stamp_ns[-1])
    expected, _ = _recorded_targets(contents, ["gripper"], query)

    server = FrankySimServer(mode="inprocess", realtime=False)
    server.start()
    arm = FrankyArm(FrankyArmConfig.franky_sim(server.hostname))
    arm.connect()
    try:
        executor = ChunkExecutor(ChunkExecutorConfig(rate_hz=100.0), arm)
        executor.start()
        # 1. Bring the simulated arm to the recorded pose of that frame ("the same start"),
        #    through the executor itself, inside its speed limits.
        start_pose = arm.read_state().ee_pose
        steps = 20
        approach = np.stack([interpolate_poses(start_pose, reference, (i + 1) / steps) for i in range(steps)])
        actions = poses_to_actions(start_pose, approach, np.ones(steps), "panda")
        assert executor.submit(TimedChunk(executor.now(), 0.1, actions, start_pose, seq=1)).accepted
        end = executor.now() + steps * 0.1 + 0.5
        while executor.tick().time_s < end:
            time.sleep(0.01)
        assert pose_distance(arm.last_commanded_pose, reference)[0] < 1e-9
        # 2. Execute the dataset's chunk for that frame, ticking exactly at its step times.
        stamp = executor.now() + 0.1
        chunk = TimedChunk(stamp, 1.0 / FPS, episode.actions[frame], reference, seq=2)
        result = executor.submit(chunk, now=stamp)
        assert result.accepted, result.reason
        streamed = []
        for k in range(HORIZON):
            tick = executor.tick(now=stamp + k / FPS + 1e-6)
            assert tick.commanded and tick.step_index == k, tick.reason
            np.testing.assert_array_equal(tick.target_pose, arm.last_commanded_pose)  # what the arm got
            streamed.append(np.array(tick.target_pose))
    finally:
        arm.disconnect()
        server.stop()
    for k in range(HORIZON):
        translation, rotation = pose_distance(streamed[k], expected[k])
        assert translation < TOLERANCE and rotation < TOLERANCE, (k, translation, rotation)
