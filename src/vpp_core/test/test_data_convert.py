"""Bags -> dataset: both storages, precise rejections, determinism, resume, xhand shapes, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vpp_core.data import dataset as dataset_module
from vpp_core.data.convert import convert, convert_bag, load_config, main
from vpp_core.data.dataset import DatasetError, VPPDataset
from vpp_core.data.synthetic import write_synthetic_bag

SECONDS = 2.0
IMAGE = 64

BAGS = [  # (name, embodiment, storage, faults)
    ("ep0_mcap", "panda", "mcap", ()),
    ("ep1_sqlite3", "panda", "sqlite3", ()),
    ("ep2_missing_wrist", "panda", "mcap", ("missing_wrist_camera",)),
    ("ep3_out_of_order", "panda", "sqlite3", ("out_of_order_stamps",)),
    ("ep4_corrupt", "panda", "mcap", ("corrupt_message",)),
    ("ep5_no_command", "panda", "mcap", ("no_commanded_pose",)),
]


@pytest.fixture(scope="module")
def bag_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bags")
    for seed, (name, embodiment, storage, faults) in enumerate(BAGS):
        write_synthetic_bag(root / name, embodiment=embodiment, storage=storage, seconds=SECONDS, seed=seed,
                            image_size=(48, 64), faults=faults)
    return root


def _config(**overrides):
    values = dict(image_size=IMAGE, fps=10.0, horizon=10)
    values.update(overrides)
    return load_config(**values)


@pytest.fixture(scope="module")
def converted(bag_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("out") / "dataset"
    summary = convert([bag_dir], output, "panda", _config(), progress=False)
    assert len(summary.converted) == 3 and len(summary.rejected) == 3
    return output


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_both_storages_convert_and_bad_bags_are_rejected_with_reasons(converted, bag_dir):
    dataset = VPPDataset(converted)
    sources = [Path(e.source).name for e in dataset.episodes]
    assert sources == ["ep0_mcap", "ep1_sqlite3", "ep5_no_command"]
    assert [e.sync["storage"] for e in dataset.episodes] == ["mcap", "sqlite3", "mcap"]
    reasons = {Path(r["source"]).name: r["reason"] for r in dataset.rejected}
    assert set(reasons) == {"ep2_missing_wrist", "ep3_out_of_order", "ep4_corrupt"}
    assert reasons["ep2_missing_wrist"].startswith("missing camera topic /wrist_camera/image_raw (view 'wrist')")
    assert reasons["ep3_out_of_order"].startswith("out-of-order header stamps on /static_camera/image_raw: message 30")
    assert reasons["ep4_corrupt"].startswith("corrupt message on /joint_states (message 100")
    info = dataset.info
    assert (info.embodiment, info.fps, info.action_horizon, info.image_size) == ("panda", 10.0, 10, IMAGE)
    assert info.state_names[-1] == "gripper_width" and len(info.state_names) == 8 and info.proprio_names == []
    episode = dataset.load_episode(0)
    length = episode.length
    assert 18 <= length <= 20  # 2 s at 10 Hz, trimmed to the window every stream covers
    assert episode.actions.shape == (length, 10, 7) and episode.state.shape == (length, 8)
    assert episode.frames["static"].shape == (length, IMAGE, IMAGE, 3)
    np.testing.assert_allclose(np.diff(episode.timestamps), 0.1, atol=1e-9)
    sync = dataset.episodes[0].sync
    assert sync["cameras"]["static"]["max_skew_s"] <= 0.02 and sync["cameras"]["wrist"]["dropped_frames"] == 0
    assert sync["targets"].startswith("/commanded_pose") and sync["instruction_source"] == "custom_data vpp.instruction"
    assert episode.instruction == "pick up the red cube"
    # Gripper: open (1) at the start, closed (0) after mid-episode, as commanded.
    assert episode.actions[0, 0, 6] == pytest.approx(1.0) and episode.actions[-1, 0, 6] == pytest.approx(0.0)
    stats = json.loads((converted / "meta" / "stats.json").read_text())
    assert len(stats["actions"]["low"]) == 7 and stats["proprio"] is None
    assert stats["summary"]["action"]["names"][6] == "gripper"


def test_bag_without_commanded_pose_falls_back_to_the_measured_pose(converted):
    dataset = VPPDataset(converted)
    meta = dataset.episodes[2]
    assert meta.sync["targets"].startswith("/ee_pose (measured; no /commanded_pose")
    assert any("no /commanded_pose" in note for note in meta.sync["notes"])
    episode = dataset.load_episode(2, load_frames=False)
    # Step 0's target is the measured pose at the frame itself: a zero delta.
    np.testing.assert_allclose(episode.actions[:, 0, :6], 0.0, atol=1e-6)
    assert np.abs(episode.actions[:, -1, :3]).max() > 0.005


def test_conversion_is_deterministic_with_any_worker_count(bag_dir, converted, tmp_path):
    again = tmp_path / "again"
    convert([bag_dir], again, "panda", _config(workers=2), progress=False)
    first, second = _tree(converted), _tree(again)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []


def test_interrupted_conversion_resumes_and_ends_identical(bag_dir, converted, tmp_path, monkeypatch):
    output = tmp_path / "resumed"
    real_write_video = dataset_module.write_video
    calls = {"n": 0}

    def dying_write_video(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # first view of the second episode: as if the process was killed
            raise KeyboardInterrupt
        return real_write_video(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "write_video", dying_write_video)
    with pytest.raises(KeyboardInterrupt):
        convert([bag_dir], output, "panda", _config(), progress=False)
    monkeypatch.setattr(dataset_module, "write_video", real_write_video)
    with pytest.raises(DatasetError, match="not finalised"):
        VPPDataset(output)
    assert sorted(p.name for p in (output / "data").iterdir()) == ["episode_000000.parquet"]
    summary = convert([bag_dir], output, "panda", _config(), progress=False)
    assert summary.skipped == 1 and len(summary.converted) == 2
    assert _tree(output) == _tree(converted)
    # A third run has nothing left to do and changes nothing.
    summary = convert([bag_dir], output, "panda", _config(), progress=False)
    assert summary.skipped == len(BAGS) and not summary.converted
    assert _tree(output) == _tree(converted)


def test_resuming_with_other_settings_is_refused(bag_dir, converted, capsys):
    code = main(["--bags", str(bag_dir / "ep0_mcap"), "--output", str(converted), "--embodiment", "panda",
                 "--fps", "15", "--image-size", str(IMAGE), "--no-progress"])
    assert code == 2
    assert "fps: dataset 10.0, now 15.0" in capsys.readouterr().err


def test_xhand_dataset_has_18d_actions_and_19d_proprio(tmp_path):
    write_synthetic_bag(tmp_path / "bags" / "xhand0", embodiment="xhand", storage="sqlite3", seconds=SECONDS,
                        image_size=(48, 64))
    summary = convert([tmp_path / "bags"], tmp_path / "ds", "xhand", _config(), progress=False)
    assert len(summary.converted) == 1, summary.rejected
    dataset = VPPDataset(tmp_path / "ds")
    episode = dataset.load_episode(0, load_frames=False)
    assert episode.actions.shape[1:] == (10, 18) and episode.proprio.shape[1] == 19
    assert dataset.info.proprio_names[7:] == list(dataset.info.action_names[6:])
    assert set(dataset.normalizers()) == {"actions", "proprio"}
    # Proprio hand joints are the measured ones; the action's hand part is the commanded target.
    assert np.all(episode.proprio[:, 7:] >= -0.7) and np.all(episode.proprio[:, 7:] <= 1.92)


def test_cli_instruction_fallback_and_summary(tmp_path, capsys):
    write_synthetic_bag(tmp_path / "bags" / "a", seconds=SECONDS, image_size=(48, 64), faults=("no_instruction",))
    args = ["--bags", str(tmp_path / "bags"), "--embodiment", "panda", "--image-size", str(IMAGE), "--no-progress"]
    assert main(args + ["--output", str(tmp_path / "no_instruction")]) == 1
    out = capsys.readouterr().out
    assert "rejected 1" in out and "no instruction: no vpp.instruction in the bag's custom_data" in out
    assert main(args + ["--output", str(tmp_path / "with_instruction"), "--instruction", "stack  the cubes"]) == 0
    assert "converted 1 episode(s)" in capsys.readouterr().out
    meta = VPPDataset(tmp_path / "with_instruction").episodes[0]
    assert meta.instruction == "stack the cubes" and meta.sync["instruction_source"] == "--instruction"


def test_bags_recorded_for_another_robot_are_rejected(tmp_path):
    write_synthetic_bag(tmp_path / "bags" / "x", embodiment="xhand", seconds=SECONDS, image_size=(48, 64))
    summary = convert([tmp_path / "bags"], tmp_path / "ds", "panda", _config(), progress=False)
    assert summary.rejected and "recorded for embodiment 'xhand'" in summary.rejected[0][1]


@pytest.mark.parametrize("fault,reason", [
    ("camera_gap", "camera 'wrist' (/wrist_camera/image_raw): 5"),
    ("state_gap", "/ee_pose: 310 ms without messages after t=0.790 s"),
    ("no_instruction", "no instruction"),
])
def test_sync_tolerances_give_precise_reasons(tmp_path, fault, reason):
    bag = write_synthetic_bag(tmp_path / fault, seconds=SECONDS, image_size=(48, 64), faults=(fault,))
    result = convert_bag(bag, _config(), "panda")
    assert result.episode is None and result.reason.startswith(reason), result.reason


def test_looser_tolerance_accepts_the_gap_and_reports_it(tmp_path):
    import dataclasses

    bag = write_synthetic_bag(tmp_path / "gap", seconds=SECONDS, image_size=(48, 64), faults=("camera_gap",))
    config = _config()
    config.sync = dataclasses.replace(config.sync, max_camera_gap_s=1.0, max_camera_skew_s=0.3)
    result = convert_bag(bag, config, "panda")
    assert result.reason is None
    wrist = result.report["cameras"]["wrist"]
    assert wrist["dropped_frames"] >= 14 and wrist["repeated_frames"] >= 3 and wrist["max_skew_s"] > 0.1


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_file_is_rejected_with_a_reason(tmp_path, storage):
    bag = write_synthetic_bag(tmp_path / "cut", storage=storage, seconds=SECONDS, image_size=(48, 64))
    data_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    with open(data_file, "r+b") as handle:
        handle.truncate(data_file.stat().st_size // 2)
    result = convert_bag(bag, _config(), "panda")
    assert result.episode is None
    assert result.reason.startswith(("cannot open bag", "bag storage unreadable")), result.reason
