"""Checkpoint directories: round trip gives identical plans; bad files fail with precise errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vpp_core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vpp_core.model.engine import PolicyEngine
from vpp_core.model.normalization import PercentileNormalizer
from vpp_core.model.presets import build_policy

torch.set_num_threads(1)


def _normalizers(action_dim: int, proprio_dim: int = 0) -> dict[str, PercentileNormalizer]:
    rng = np.random.default_rng(0)
    result = {"actions": PercentileNormalizer.fit(rng.normal(size=(200, action_dim)) * 0.05)}
    if proprio_dim:
        result["proprio"] = PercentileNormalizer.fit(rng.normal(size=(200, proprio_dim)))
    return result


def _observation(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {view: rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for view in ("static", "wrist")}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    policy = build_policy("xhand-tiny", seed=3)
    normalizers = _normalizers(policy.action_dim, policy.proprio_dim)
    directory = tmp_path_factory.mktemp("ckpt") / "xhand-tiny"
    save_checkpoint(policy, directory, normalizers, metadata={"preset": "xhand-tiny", "step": 12})
    return policy, normalizers, directory


def test_round_trip_gives_identical_plans(saved):
    policy, normalizers, directory = saved
    loaded = load_checkpoint(directory)
    assert loaded.metadata == {"preset": "xhand-tiny", "step": 12}
    assert loaded.policy.config.to_dict() == policy.config.to_dict()
    assert {k: v.to_dict() for k, v in loaded.normalizers.items()} == {k: v.to_dict() for k, v in normalizers.items()}
    for name, tensor in policy.state_dict().items():
        assert torch.equal(tensor, loaded.policy.state_dict()[name]), name

    original = PolicyEngine(policy, normalizers, seed=5)
    restored = PolicyEngine.from_checkpoint(directory, seed=5)
    proprio = np.linspace(-1.0, 1.0, policy.proprio_dim)
    for step in range(2):
        observation = _observation(policy.image_size, seed=step)
        expected = original.plan(observation, "grasp the handle", proprio)
        got = restored.plan(observation, "grasp the handle", proprio)
        np.testing.assert_array_equal(got, expected)


def test_checkpoint_directory_layout(saved):
    _, _, directory = saved
    assert {p.name for p in directory.iterdir()} == {"config.json", "model.safetensors", "normalization.json", "tokenizer"}
    config = json.loads((directory / "config.json").read_text())
    assert config["format"] == "vpp-policy" and config["format_version"] == 1
    assert config["policy"]["action_head"]["action_dim"] == 18


def _copy_checkpoint(source, target):
    target.mkdir()
    for path in source.iterdir():
        if path.is_dir():
            (target / path.name).mkdir()
            for inner in path.iterdir():
                (target / path.name / inner.name).write_bytes(inner.read_bytes())
        else:
            (target / path.name).write_bytes(path.read_bytes())
    return target


def test_mismatched_weights_name_every_bad_tensor(saved, tmp_path):
    _, _, directory = saved
    broken = _copy_checkpoint(directory, tmp_path / "broken")
    tensors = load_file(str(broken / "model.safetensors"))
    del tensors["action_head.action_out.weight"]
    tensors["video_former.extra_bias"] = torch.zeros(3)
    tensors["action_head.action_pos"] = torch.zeros(11, tensors["action_head.action_pos"].shape[1])
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(broken)
    message = str(error.value)
    assert "missing (1)" in message and "action_head.action_out.weight" in message
    assert "unexpected (1)" in message and "video_former.extra_bias" in message
    assert "shape mismatch (1)" in message and "action_head.action_pos: checkpoint (11, 64) vs model (10, 64)" in message


def test_malformed_directories_are_rejected(saved, tmp_path):
    _, _, directory = saved
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    wrong_version = _copy_checkpoint(directory, tmp_path / "version")
    config = json.loads((wrong_version / "config.json").read_text())
    config["format_version"] = 99
    (wrong_version / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(wrong_version)
    no_weights = _copy_checkpoint(directory, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(no_weights)


def test_save_requires_matching_normalizers(tmp_path):
    policy = build_policy("xhand-tiny")
    with pytest.raises(CheckpointError, match=r"missing for \['proprio'\]"):
        save_checkpoint(policy, tmp_path / "a", _normalizers(policy.action_dim))
    with pytest.raises(CheckpointError, match="'actions' has 7 dims, the policy 18"):
        save_checkpoint(policy, tmp_path / "b", _normalizers(7, policy.proprio_dim))
    assert not (tmp_path / "a" / "config.json").exists()
