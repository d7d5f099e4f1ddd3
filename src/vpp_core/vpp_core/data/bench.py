"""Conversion throughput on synthetic bags: prints figures, asserts nothing.

    python -m vpp_core.data.bench [--episodes 4 --seconds 10 --camera-size 480 640 --image-size 256
                                   --storage mcap --workers 1 --embodiment panda]

Writes ``--episodes`` synthetic demonstrations (two cameras at 30 Hz, state at 100 Hz; not timed),
converts them with the converter's defaults from config/data/convert.yaml plus the options given,
and prints dataset frames/s, camera frames/s read, and the split between reading + aligning +
resizing (per bag) and encoding + writing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from .convert import convert, load_config
from .synthetic import write_synthetic_bag


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--camera-size", type=int, nargs=2, default=(480, 640), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--embodiment", choices=("panda", "xhand"), default="panda")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vpp-data-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        for index in range(args.episodes):
            write_synthetic_bag(root / "bags" / f"episode_{index:03d}", embodiment=args.embodiment, storage=args.storage,
                                seconds=args.seconds, image_size=tuple(args.camera_size), seed=index)
        written = time.perf_counter() - started
        config = load_config(image_size=args.image_size, workers=args.workers)
        cpu_started = time.process_time()
        summary = convert([root / "bags"], root / "dataset", args.embodiment, config, progress=False)
        cpu = time.process_time() - cpu_started
        seconds = summary.seconds
        print(f"input: {args.episodes} x {args.seconds:g} s bags ({args.storage}), cameras {args.camera_size[1]}x"
              f"{args.camera_size[0]} @ 30 Hz, {_size_mb(root / 'bags'):.1f} MB (written in {written:.1f} s, not timed)")
        print(f"output: {summary.dataset_episodes} episodes, {summary.frames} frames at {config.fps:g} fps, "
              f"{config.image_size} px, {_size_mb(root / 'dataset'):.2f} MB; rejected {len(summary.rejected)}")
        print(f"conversion: {seconds:.2f} s wall, {cpu:.2f} s CPU (this process), workers {config.workers}: "
              f"{summary.frames / seconds:.1f} dataset frames/s, {summary.camera_frames / seconds:.1f} camera frames/s read")


if __name__ == "__main__":
    main()
