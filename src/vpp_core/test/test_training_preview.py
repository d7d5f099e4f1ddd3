"""TVP directories round-trip, and the preview command writes playable videos of the right length."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from vpp_core.model.presets import preset_config
from vpp_core.model.tvp import TextGuidedVideoPredictor
from vpp_core.training import preview
from vpp_core.training.toy_data import write_reaching_dataset
from vpp_core.training.tvp_io import load_tvp, save_tvp, tvp_fingerprint

torch.set_num_threads(1)


def _tiny_tvp() -> TextGuidedVideoPredictor:
    torch.manual_seed(0)
    return TextGuidedVideoPredictor(dataclasses.replace(preset_config("panda-tiny").tvp, image_size=64, num_frames=4))


def test_tvp_directory_round_trips(tmp_path):
    tvp = _tiny_tvp()
    save_tvp(tvp, tmp_path / "tvp", {"stage": 1, "train_fps_id": 7})
    loaded = load_tvp(tmp_path / "tvp")
    assert loaded.config.to_dict() == tvp.config.to_dict()
    assert tvp_fingerprint(loaded) == tvp_fingerprint(tvp)
    assert loaded.tokenize(["reach the red cube"])["input_ids"].tolist() == tvp.tokenize(["reach the red cube"])["input_ids"].tolist()
    # Saving again over it replaces it cleanly; a changed weight changes the fingerprint.
    with torch.no_grad():
        tvp.unet.conv_in.bias.add_(1.0)
    save_tvp(tvp, tmp_path / "tvp")
    assert tvp_fingerprint(load_tvp(tmp_path / "tvp")) == tvp_fingerprint(tvp) != tvp_fingerprint(loaded)


def test_preview_writes_mp4_and_gif_with_every_predicted_frame(tmp_path):
    save_tvp(_tiny_tvp(), tmp_path / "tvp", {"train_fps_id": 7})
    data = write_reaching_dataset(tmp_path / "ds", episodes=2, length=8, image_size=64)
    output = tmp_path / "out" / "preview.mp4"
    preview.main(["--tvp", str(tmp_path / "tvp"), "--dataset", str(data), "--episode", "1", "--frame", "2",
                  "--output", str(output), "--steps", "2", "--guidance", "2.0"])
    frames = iio.imread(output, plugin="pyav")
    assert frames.shape == (4, 2 * 64, 2 * 64, 3)  # 4 predicted frames; rows = 2 views; truth | prediction
    gif = iio.imread(output.with_suffix(".gif"), index=None)
    assert gif.shape[0] == 4 and gif.shape[1:3] == (128, 128)
    # The left half is the ground truth clip (codec loss aside): the first frame is the condition.
    from vpp_core.data.dataset import VPPDataset

    truth = VPPDataset(data).load_episode(1).frames["static"][2]
    assert np.abs(gif[0, :64, :64, :3].astype(int) - truth.astype(int)).mean() < 4.0
