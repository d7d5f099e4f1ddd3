"""Offline check of a trained policy on recorded episodes (no robot, no simulator).

    python -m vpp_core.training.evaluate --checkpoint runs/stage2/checkpoint --dataset data/eval \\
        [--frames-per-episode 6] [--swap-instruction "reach the blue cube"]

For frames spread over every episode, the policy (through ``PolicyEngine``, exactly as deployed)
plans a chunk from the recorded images (+ proprio) and the episode's instruction; reported are
the mean absolute error against the recorded chunk in robot units (overall and per action
dimension) next to a baseline that always predicts the data set's mean chunk. With
``--swap-instruction`` the same observations are also planned with another instruction: a
policy that uses language must then move differently (``swap_change`` = mean |a_swapped - a|).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["evaluate_offline", "main"]


def evaluate_offline(
    checkpoint: str,
    dataset_root: str,
    frames_per_episode: int = 6,
    swap_instruction: Optional[str] = None,
    sampling_steps: Optional[int] = None,
    seed: int = 0,
) -> dict[str, Any]:
    from ..data.dataset import VPPDataset
    from ..model.engine import PolicyEngine

    engine = PolicyEngine.from_checkpoint(checkpoint, seed=seed, resize_images=True, sampling_steps=sampling_steps)
    dataset = VPPDataset(dataset_root)
    errors, baseline_errors, swap_changes = [], [], []
    all_actions = []
    samples = []
    for index in range(len(dataset)):
        episode = dataset.load_episode(index)
        all_actions.append(episode.actions)
        frames = np.unique(np.linspace(0, episode.length - 1, frames_per_episode).round().astype(int))
        for frame in frames:
            samples.append((episode, int(frame)))
    mean_chunk = np.concatenate(all_actions).mean(axis=0)
    for episode, frame in samples:
        images = {view: episode.frames[view][frame] for view in engine.policy.view_names}
        proprio = episode.proprio[frame] if engine.policy.proprio_dim > 0 else None
        planned = engine.plan(images, episode.instruction, proprio)
        truth = episode.actions[frame]
        errors.append(np.abs(planned - truth))
        baseline_errors.append(np.abs(mean_chunk - truth))
        if swap_instruction and swap_instruction != episode.instruction:
            other = engine.plan(images, swap_instruction, proprio)
            swap_changes.append(np.abs(other - planned))
    error = np.stack(errors)
    baseline = np.stack(baseline_errors)
    result = {
        "samples": len(samples),
        "mae": float(error.mean()),
        "mae_per_dim": error.mean(axis=(0, 1)).round(6).tolist(),
        "mean_chunk_baseline_mae": float(baseline.mean()),
        "mean_chunk_baseline_per_dim": baseline.mean(axis=(0, 1)).round(6).tolist(),
    }
    if swap_changes:
        result["swap_change"] = float(np.stack(swap_changes).mean())
    return result


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Offline action error of a policy checkpoint on a data set")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--frames-per-episode", type=int, default=6)
    parser.add_argument("--swap-instruction", default=None)
    parser.add_argument("--steps", type=int, default=None, help="action sampling steps (default: the checkpoint's)")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_offline(args.checkpoint, args.dataset, args.frames_per_episode, args.swap_instruction, args.steps), indent=2))


if __name__ == "__main__":
    main()
