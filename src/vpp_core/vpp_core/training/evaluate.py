"""Offline check of a trained policy on recorded episodes (no robot, no simulator).

    python -m vpp_core.training.evaluate --checkpoint runs/stage2/checkpoint --dataset data/eval \\
        [--frames-per-episode 6] [--episodes 30] [--samples-per-plan 1] \\
        [--swap-instruction "reach the blue cube" | --swap-instructions]

For frames spread over every episode (or over ``--episodes`` episodes spread over the data set),
the policy (through ``PolicyEngine``, exactly as deployed) plans a chunk from the recorded images
(+ proprio) and the episode's instruction; reported are the mean absolute error against the
recorded chunk in robot units (overall, per action dimension, and of the chunk's last step, where
the error of a relative-target chunk is largest) next to a baseline that always predicts the data
set's mean chunk. With a swapped instruction the same observations are also planned with another
one (``--swap-instruction TEXT``: that text; ``--swap-instructions``: the next of the data set's
own instructions): a policy that uses language must then move differently (``swap_change`` =
mean |a_swapped - a|) and further from the recording (``swapped_mae``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["SWAP_TO_NEXT", "evaluate_offline", "main", "swapped_instruction"]


SWAP_TO_NEXT = "<next instruction>"


def swapped_instruction(instruction: str, instructions: Sequence[str], swap: Optional[str]) -> Optional[str]:
    """The instruction to plan with instead of ``instruction``; None where there is none to swap to.

    ``swap`` is a fixed text, or ``SWAP_TO_NEXT``: the next of ``instructions`` (sorted, cyclic).
    """
    if not swap:
        return None
    if swap != SWAP_TO_NEXT:
        return swap if swap != instruction else None
    distinct = sorted(set(instructions))
    if len(distinct) < 2 or instruction not in distinct:
        return None
    return distinct[(distinct.index(instruction) + 1) % len(distinct)]


def evaluate_offline(
    checkpoint: str,
    dataset_root: str,
    frames_per_episode: int = 6,
    swap_instruction: Optional[str] = None,
    sampling_steps: Optional[int] = None,
    seed: int = 0,
    episodes: Optional[int] = None,
    samples_per_plan: int = 1,
) -> dict[str, Any]:
    """Errors of planned against recorded chunks (see the module docstring); ``swap_instruction``
    is a text or ``SWAP_TO_NEXT``; ``episodes`` evenly spread episodes (default: all)."""
    from ..data.dataset import VPPDataset
    from ..model.engine import PolicyEngine

    engine = PolicyEngine.from_checkpoint(
        checkpoint, seed=seed, resize_images=True, sampling_steps=sampling_steps, samples_per_plan=samples_per_plan
    )
    dataset = VPPDataset(dataset_root)
    count = len(dataset)
    if episodes is not None and episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    chosen = range(count) if episodes is None or episodes >= count else np.unique(np.linspace(0, count - 1, episodes).round().astype(int))
    instructions = [meta.instruction for meta in dataset.episodes]
    # The baseline's mean chunk is over the whole data set, as a policy trained on it would see.
    mean_chunk = np.concatenate([dataset.load_episode(i, load_frames=False).actions for i in range(count)]).mean(axis=0)
    errors, baseline_errors, swap_changes, swapped_errors = [], [], [], []
    for index in chosen:
        episode = dataset.load_episode(int(index), views=engine.policy.view_names)
        other_instruction = swapped_instruction(episode.instruction, instructions, swap_instruction)
        frames = np.unique(np.linspace(0, episode.length - 1, frames_per_episode).round().astype(int))
        for frame in frames:
            images = {view: episode.frames[view][frame] for view in engine.policy.view_names}
            proprio = episode.proprio[frame] if engine.policy.proprio_dim > 0 else None
            planned = engine.plan(images, episode.instruction, proprio)
            truth = episode.actions[frame]
            errors.append(np.abs(planned - truth))
            baseline_errors.append(np.abs(mean_chunk - truth))
            if other_instruction is not None:
                other = engine.plan(images, other_instruction, proprio)
                swap_changes.append(np.abs(other - planned))
                swapped_errors.append(np.abs(other - truth))
    error = np.stack(errors)
    baseline = np.stack(baseline_errors)
    result = {
        "samples": len(errors),
        "episodes": len(chosen),
        "mae": float(error.mean()),
        "mae_per_dim": error.mean(axis=(0, 1)).round(6).tolist(),
        "mae_last_step_per_dim": error[:, -1].mean(axis=0).round(6).tolist(),
        "mean_chunk_baseline_mae": float(baseline.mean()),
        "mean_chunk_baseline_per_dim": baseline.mean(axis=(0, 1)).round(6).tolist(),
        "mean_chunk_baseline_last_step_per_dim": baseline[:, -1].mean(axis=0).round(6).tolist(),
    }
    if swap_changes:
        result["swap_change"] = float(np.stack(swap_changes).mean())
        result["swapped_mae"] = float(np.stack(swapped_errors).mean())
    return result


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Offline action error of a policy checkpoint on a data set")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--frames-per-episode", type=int, default=6)
    parser.add_argument("--episodes", type=int, default=None, help="this many episodes, spread over the data set (default: all)")
    swap = parser.add_mutually_exclusive_group()
    swap.add_argument("--swap-instruction", default=None, help="also plan every frame with this instruction")
    swap.add_argument("--swap-instructions", action="store_true",
                      help="also plan every frame with the next of the data set's own instructions")
    parser.add_argument("--steps", type=int, default=None, help="action sampling steps (default: the checkpoint's)")
    parser.add_argument("--samples-per-plan", type=int, default=1, help="mean of this many chunks per plan")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    swap_to = SWAP_TO_NEXT if args.swap_instructions else args.swap_instruction
    result = evaluate_offline(args.checkpoint, args.dataset, args.frames_per_episode, swap_to, args.steps, args.seed,
                              args.episodes, args.samples_per_plan)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
