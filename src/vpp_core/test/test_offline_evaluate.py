"""The offline evaluator (python -m vpp_core.training.evaluate): errors of planned against recorded
chunks, the mean-chunk baseline, episode selection and swapped instructions, on a converted data
set and a stage-2 checkpoint trained here (random tiny TVP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vpp_core.data.convert import convert, load_config as load_convert_config
from vpp_core.data.dataset import VPPDataset
from vpp_core.data.synthetic import write_synthetic_bag
from vpp_core.training.config import Stage2Config, load_config
from vpp_core.training.evaluate import SWAP_TO_NEXT, evaluate_offline, main, swapped_instruction
from vpp_core.training.stage2 import train_stage2

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[3]
INSTRUCTIONS = ["pick up the red cube", "open the drawer", "push the blue cube"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("offline_eval")
    bags = [
        write_synthetic_bag(root / "bags" / f"demo{i}", embodiment="panda", seconds=2.0, image_size=(48, 64),
                            instruction=INSTRUCTIONS[i], seed=i)
        for i in range(3)
    ]
    summary = convert(bags, root / "ds", "panda", load_convert_config(fps=10.0, horizon=10, image_size=64), progress=False)
    assert not summary.rejected, summary.rejected
    config = load_config(
        Stage2Config, REPO / "config" / "train" / "tiny_stage2.yaml",
        [f"data.root={root / 'ds'}", f"run.output_dir={root / 's2'}", "init.random_tvp=true", "init.tvp_dir=",
         "run.progress_bar=false", "run.tensorboard=false", "run.max_steps=2", f"feature_cache.directory={root / 'cache'}"],
    )
    return train_stage2(config).output, root / "ds"


def test_swapped_instruction_is_the_given_text_or_the_next_of_the_data_sets():
    assert swapped_instruction("b", ["c", "a", "b", "a"], SWAP_TO_NEXT) == "c"
    assert swapped_instruction("c", ["c", "a", "b"], SWAP_TO_NEXT) == "a"
    assert swapped_instruction("a", ["a", "a"], SWAP_TO_NEXT) is None
    assert swapped_instruction("a", ["a", "b"], "open the drawer") == "open the drawer"
    assert swapped_instruction("open the drawer", ["a"], "open the drawer") is None
    assert swapped_instruction("a", ["a", "b"], None) is None


def test_errors_are_measured_against_the_recording_and_the_mean_chunk(trained):
    checkpoint, dataset_root = trained
    result = evaluate_offline(str(checkpoint), str(dataset_root), frames_per_episode=3, episodes=2,
                              swap_instruction=SWAP_TO_NEXT)
    dataset = VPPDataset(dataset_root)
    # Two episodes spread over three: the first and the last, three frames each.
    assert result["episodes"] == 2 and result["samples"] == 6
    episodes = [dataset.load_episode(i, load_frames=False) for i in range(3)]
    mean_chunk = np.concatenate([e.actions for e in episodes]).mean(axis=0)
    truths = [e.actions[f] for e in (episodes[0], episodes[2])
              for f in np.unique(np.linspace(0, e.length - 1, 3).round().astype(int))]
    baseline = np.stack([np.abs(mean_chunk - t) for t in truths])
    assert result["mean_chunk_baseline_mae"] == pytest.approx(float(baseline.mean()))
    np.testing.assert_allclose(result["mean_chunk_baseline_last_step_per_dim"], baseline[:, -1].mean(axis=0), atol=1e-6)
    assert len(result["mae_per_dim"]) == len(result["mae_last_step_per_dim"]) == 7
    assert np.isfinite(result["mae"]) and result["mae"] > 0
    # Another instruction changes the plan of a policy whose action head reads language.
    assert result["swap_change"] > 0 and np.isfinite(result["swapped_mae"])
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate_offline(str(checkpoint), str(dataset_root), episodes=0)


def test_command_line_prints_the_result_as_json(trained, capsys):
    checkpoint, dataset_root = trained
    main(["--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--frames-per-episode", "2",
          "--episodes", "1", "--swap-instructions", "--samples-per-plan", "2"])
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 2 and result["episodes"] == 1 and "swap_change" in result
