"""C3: DatasetWriter -> VPPDataset round trip, byte-identical rewrites, resume, and the shared resize."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vpp_core.data.dataset import (DatasetError, DatasetInfo, DatasetWriter, Episode, VPPDataset, read_video,
                                   write_video)
from vpp_core.image import resize_square_uint8

SIZE = 64


def _info(**overrides) -> DatasetInfo:
    values = dict(embodiment="panda", action_space="panda", fps=10.0, action_horizon=4, image_size=SIZE,
                  state_names=[f"q{i}" for i in range(8)], action_names=[f"a{i}" for i in range(7)],
                  converter={"test": True})
    values.update(overrides)
    return DatasetInfo(**values)


def _smooth_frames(rng: np.random.Generator, length: int) -> np.ndarray:
    """Camera-like frames: smooth gradients + a moving coloured square (compressible, not noise)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    frames = np.zeros((length, SIZE, SIZE, 3), np.uint8)
    base = rng.uniform(40, 200, 3)
    for t in range(length):
        frames[t, ..., 0] = (base[0] + 40 * np.sin(x / 9.0 + t / 5)).astype(np.uint8)
        frames[t, ..., 1] = (base[1] + 40 * np.cos(y / 7.0)).astype(np.uint8)
        frames[t, ..., 2] = base[2]
        c = 10 + 2 * t
        frames[t, c:c + 12, 20:32] = (220, 30, 30)
    return frames


def _episode(seed: int, length: int = 12, proprio: bool = False) -> Episode:
    rng = np.random.default_rng(seed)
    quat = rng.normal(size=(length, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    return Episode(
        frames={"static": _smooth_frames(rng, length), "wrist": _smooth_frames(rng, length)},
        timestamps=np.arange(length) * 0.1,
        state=rng.normal(size=(length, 8)).astype(np.float32),
        ee_pose=np.concatenate([rng.normal(size=(length, 3)), quat], 1).astype(np.float32),
        proprio=rng.normal(size=(length, 19)).astype(np.float32) if proprio else None,
        actions=rng.normal(size=(length, 4, 7)).astype(np.float32),
        instruction=f"task {seed}",
        stamp_ns=1_000_000_000 + np.arange(length, dtype=np.int64) * 100_000_000,
    )


def _write(root: Path, seeds=(0, 1, 2)) -> list[Episode]:
    writer = DatasetWriter(root, _info())
    episodes = [_episode(seed) for seed in seeds]
    for seed, episode in zip(seeds, episodes):
        writer.add_episode(episode, f"bags/ep{seed}", {"max_camera_skew_s": {"static": 0.01}})
    writer.add_rejected("bags/bad", "missing camera topic /wrist_camera/image_raw")
    writer.finalize()
    return episodes


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip(tmp_path):
    episodes = _write(tmp_path / "ds")
    dataset = VPPDataset(tmp_path / "ds")
    assert dataset.info.episodes == 3 and dataset.info.frames == 36 and len(dataset) == 3
    assert dataset.rejected == [{"source": "bags/bad", "reason": "missing camera topic /wrist_camera/image_raw"}]
    for i, original in enumerate(episodes):
        loaded = dataset.load_episode(i)
        assert loaded.index == i and loaded.instruction == original.instruction
        np.testing.assert_array_equal(loaded.actions, original.actions)
        np.testing.assert_array_equal(loaded.state, original.state)
        np.testing.assert_array_equal(loaded.ee_pose, original.ee_pose)
        np.testing.assert_array_equal(loaded.stamp_ns, original.stamp_ns)
        assert loaded.proprio is None
        for view in ("static", "wrist"):
            error = np.abs(loaded.frames[view].astype(int) - original.frames[view].astype(int))
            assert loaded.frames[view].shape == original.frames[view].shape
            assert error.mean() < 2.0, f"{view}: mean abs error {error.mean():.2f}"
    normalizers = dataset.normalizers()
    assert set(normalizers) == {"actions"} and normalizers["actions"].dim == 7
    all_actions = np.concatenate([e.actions.reshape(-1, 7) for e in episodes])
    np.testing.assert_allclose(normalizers["actions"].low, np.percentile(all_actions.astype(np.float64), 1, axis=0))
    # Inspectable with common tools: plain pyarrow (or pandas) reads the documented columns.
    frame = pq.read_table(tmp_path / "ds" / "data" / "episode_000001.parquet").to_pydict()
    assert list(frame) == ["episode_index", "frame_index", "timestamp", "stamp_ns", "observation.state",
                                   "observation.ee_pose", "action"]
    assert len(frame["action"][0]) == 4 * 7
    assert json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())["format"] == "vpp-dataset"


def test_rewrite_is_byte_identical(tmp_path):
    _write(tmp_path / "a")
    _write(tmp_path / "b")
    first, second = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert sorted(first) == sorted(second)
    different = [name for name in first if first[name] != second[name]]
    assert not different


def test_resume_removes_uncommitted_files_and_matches_a_straight_run(tmp_path):
    _write(tmp_path / "straight")
    root = tmp_path / "resumed"
    writer = DatasetWriter(root, _info())
    writer.add_episode(_episode(0), "bags/ep0", {"max_camera_skew_s": {"static": 0.01}})
    # A crash mid-episode: files of episode 1 exist but it was never committed.
    (root / "data" / "episode_000001.parquet").write_bytes(b"half written")
    (root / "videos" / "static" / ".tmp-episode_000001.mp4").write_bytes(b"half")
    with pytest.raises(DatasetError, match="not finalised"):
        VPPDataset(root)
    writer = DatasetWriter(root, _info())
    assert writer.done_sources == {"bags/ep0"}
    assert not (root / "data" / "episode_000001.parquet").exists()
    for seed in (1, 2):
        writer.add_episode(_episode(seed), f"bags/ep{seed}", {"max_camera_skew_s": {"static": 0.01}})
    writer.add_rejected("bags/bad", "missing camera topic /wrist_camera/image_raw")
    writer.finalize()
    assert _tree(root) == _tree(tmp_path / "straight")


def test_resume_with_other_settings_is_refused(tmp_path):
    _write(tmp_path / "ds", seeds=(0,))
    with pytest.raises(DatasetError, match="fps: dataset 10.0, now 15.0"):
        DatasetWriter(tmp_path / "ds", _info(fps=15.0))


def test_invalid_episode_is_refused_before_anything_is_written(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", _info())
    episode = _episode(0)
    episode.actions[3, 1, 2] = np.nan
    with pytest.raises(ValueError, match="actions contains NaN"):
        writer.add_episode(episode, "x", {})
    assert not list((tmp_path / "ds" / "data").iterdir())


def test_proprio_column_and_normalizer(tmp_path):
    info = _info(embodiment="xhand", proprio_names=[f"p{i}" for i in range(19)])
    writer = DatasetWriter(tmp_path / "ds", info)
    writer.add_episode(_episode(0, proprio=True), "x", {})
    writer.finalize()
    dataset = VPPDataset(tmp_path / "ds")
    assert dataset.load_episode(0, load_frames=False).proprio.shape == (12, 19)
    assert dataset.normalizers()["proprio"].dim == 19


def test_video_encoding_is_deterministic(tmp_path):
    frames = _smooth_frames(np.random.default_rng(3), 20)
    write_video(tmp_path / "a.mp4", frames, 10.0)
    write_video(tmp_path / "b.mp4", frames, 10.0)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert read_video(tmp_path / "a.mp4", expected_frames=20).shape == frames.shape


def test_converter_resize_equals_engine_resize():
    """The stored frame is the engine's own resize of the camera frame, up to uint8 rounding."""
    from vpp_core.model.engine import PolicyEngine
    from vpp_core.model.normalization import PercentileNormalizer
    from vpp_core.model.presets import build_policy

    policy = build_policy("panda-tiny", seed=0)
    normalizers = {"actions": PercentileNormalizer(-np.ones(policy.action_dim), np.ones(policy.action_dim))}
    engine = PolicyEngine(policy, normalizers, resize_images=True)
    size = policy.image_size
    rng = np.random.default_rng(0)
    camera = {view: rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8) for view in ("static", "wrist")}
    pixels = engine.prepare_images(camera)[0]  # [V, 3, S, S] in [-1, 1], what the network sees
    for index, view in enumerate(policy.view_names):
        stored = resize_square_uint8(camera[view], size)
        seen = (pixels[index].permute(1, 2, 0).numpy() + 1.0) * 127.5
        assert stored.shape == (size, size, 3)
        assert np.abs(stored.astype(np.float64) - seen).max() <= 0.5 + 1e-3
