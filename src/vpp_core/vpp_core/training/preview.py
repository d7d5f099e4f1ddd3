"""Look at the TVP's predictions: predicted video next to the ground truth, as mp4 and gif.

    python -m vpp_core.training.preview --tvp runs/stage1/tvp --dataset data/panda \\
        --episode 0 [--frame 0] [--instruction "..."] --output preview.mp4 [--steps 25 --guidance 1.0]

``--tvp`` is a stage-1 TVP directory (or a stage-2 policy checkpoint: its TVP is used). From the
episode's frame ``--frame`` (default: the first) and the instruction (default: the episode's),
the TVP samples ``num_frames`` frames per view with its multi-step sampler
(``TextGuidedVideoPredictor.predict_video``: ``--steps`` denoiser calls, classifier-free
guidance ``--guidance`` against empty language). Each output frame shows, per view (rows),
ground truth (left) | prediction (right), ground truth taken at the stride the TVP was trained
with (``--stride``, default 1). Writes ``--output`` (.mp4) and the same name with .gif.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..image import resize_pixels, uint8_to_pixels
from .datasets import clip_frame_indices
from .tvp_io import is_tvp_dir, load_tvp, read_tvp_document

__all__ = ["preview_frames", "write_preview", "main"]

LOG = logging.getLogger("vpp_core.training.preview")


@torch.no_grad()
def preview_frames(
    tvp: torch.nn.Module,
    episode: object,
    views: Sequence[str],
    frame: int = 0,
    instruction: Optional[str] = None,
    steps: Optional[int] = None,
    guidance: float = 1.0,
    stride: int = 1,
    seed: int = 0,
    fps_id: Optional[int] = None,
) -> np.ndarray:
    """Side-by-side frames uint8 [T, V * S, 2 * S, 3]: per view, ground truth | prediction."""
    cfg = tvp.config
    size = cfg.image_size
    length = len(episode.frames[views[0]])
    if not 0 <= frame < length:
        raise ValueError(f"frame {frame} is outside the episode (0..{length - 1})")
    text = instruction if instruction is not None else episode.instruction
    indices = clip_frame_indices(frame, length, cfg.num_frames, stride)
    truth = []
    condition = []
    for view in views:
        pixels = resize_pixels(uint8_to_pixels(torch.from_numpy(np.ascontiguousarray(episode.frames[view][indices]))), size)
        truth.append(pixels)
        condition.append(pixels[0])
    images = torch.stack(condition)[None].to(tvp.device)
    encoded = tvp.encode_text([text])
    generator = torch.Generator("cpu").manual_seed(seed)
    video = tvp.predict_video(images, encoded.hidden_states, steps=steps, generator=generator, guidance_scale=guidance, fps_id=fps_id)
    predicted = video[0].cpu()  # [V, T, 3, S, S]
    rows = [torch.cat([truth[v], predicted[v]], dim=-1) for v in range(len(views))]  # [T, 3, S, 2S]
    grid = torch.cat(rows, dim=-2)  # [T, 3, V*S, 2S]
    return ((grid.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_preview(frames: np.ndarray, output: Path, fps: float = 4.0) -> tuple[Path, Path]:
    """Write ``frames`` [T, H, W, 3] uint8 to ``output`` (.mp4, H.264 yuv420p) and a .gif beside it."""
    import imageio.v2 as imageio

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    mp4 = output if output.suffix == ".mp4" else output.with_suffix(".mp4")
    gif = mp4.with_suffix(".gif")
    height, width = frames.shape[1:3]
    # yuv420p (plays everywhere) needs even sides; pad by replicating the edge when odd.
    padded = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    with imageio.get_writer(mp4, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1, quality=8) as writer:
        for image in padded:
            writer.append_data(image)
    imageio.mimsave(gif, list(frames), duration=1000.0 / fps, loop=0)
    return mp4, gif


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Write the TVP's predicted video next to the ground truth (mp4 + gif)")
    parser.add_argument("--tvp", required=True, help="stage-1 TVP directory (or a policy checkpoint directory)")
    parser.add_argument("--dataset", required=True, help="vpp-dataset directory")
    parser.add_argument("--episode", type=int, default=0)
    parser.add_argument("--frame", type=int, default=0, help="condition frame index within the episode")
    parser.add_argument("--instruction", default=None, help="default: the episode's instruction")
    parser.add_argument("--output", required=True, help="output .mp4 (a .gif is written beside it)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the TVP's video_sampling_steps)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--stride", type=int, default=1, help="ground-truth frame stride (as data.frame_stride in training)")
    parser.add_argument("--fps-id", type=int, default=None, help="SVD fps id (default: the one stage 1 trained with, else the TVP's)")
    parser.add_argument("--fps", type=float, default=4.0, help="playback frame rate of the written video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from ..data.dataset import VPPDataset

    tvp = load_tvp(args.tvp).to(args.device).eval()
    fps_id = args.fps_id
    if fps_id is None and is_tvp_dir(args.tvp):
        # The fps id stage 1 trained the video loss with (the reference: 7), when recorded.
        fps_id = read_tvp_document(args.tvp).get("metadata", {}).get("train_fps_id")
    dataset = VPPDataset(args.dataset)
    episode = dataset.load_episode(args.episode)
    views = [view for view in dataset.info.views]
    frames = preview_frames(
        tvp, episode, views, args.frame, args.instruction, args.steps, args.guidance, args.stride, args.seed, fps_id
    )
    mp4, gif = write_preview(frames, Path(args.output), args.fps)
    LOG.info("wrote %s and %s (%d frames; rows %s; left ground truth, right prediction)", mp4, gif, len(frames), views)
    print(mp4)
    print(gif)


if __name__ == "__main__":
    main()
