"""A small language-conditioned reaching data set written through ``DatasetWriter``.

For training tests and for measuring whether stage 2 can learn at a given model size: a flat
table seen from above (static view) and from a camera riding on the end effector (wrist view),
a red and a blue cube at random places, an end-effector marker that moves in a straight line at
constant speed to the cube named by the instruction ("reach the red cube" / "reach the blue
cube") and stops there. Action chunks are panda-style 7-d (delta xyz relative to the pose at the
observation, zero rotation, gripper open), so solving it needs the image (where the cubes and the
effector are) AND the instruction (which cube).

    python -m vpp_core.training.toy_data --output /tmp/reach --episodes 40 --length 60 --image-size 64
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Union

import numpy as np

__all__ = ["TOY_INSTRUCTIONS", "render_views", "write_reaching_dataset"]

TOY_INSTRUCTIONS = ("reach the red cube", "reach the blue cube")
_COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}
_TABLE = (150, 140, 120)


def _paint_square(image: np.ndarray, centre_px: np.ndarray, half: float, colour: tuple[int, int, int]) -> None:
    size = image.shape[0]
    y0, y1 = int(round(centre_px[1] - half)), int(round(centre_px[1] + half))
    x0, x1 = int(round(centre_px[0] - half)), int(round(centre_px[0] + half))
    y0, y1, x0, x1 = max(y0, 0), min(y1, size), max(x0, 0), min(x1, size)
    if y1 > y0 and x1 > x0:
        image[y0:y1, x0:x1] = colour


def render_views(size: int, cubes: dict[str, np.ndarray], effector: np.ndarray) -> dict[str, np.ndarray]:
    """Static (whole table) and wrist (2x zoom centred on the effector) RGB uint8 images."""
    static = np.empty((size, size, 3), np.uint8)
    static[:] = _TABLE
    wrist = np.empty((size, size, 3), np.uint8)
    wrist[:] = (_TABLE[0] - 30, _TABLE[1] - 30, _TABLE[2] - 30)
    cube_half = 0.06 * size
    for name, position in cubes.items():
        _paint_square(static, position * size, cube_half, _COLOURS[name])
        _paint_square(wrist, (position - effector) * 2 * size + size / 2, 2 * cube_half, _COLOURS[name])
    _paint_square(static, effector * size, 0.035 * size, (250, 250, 250))
    _paint_square(wrist, np.array([size / 2, size / 2]), 0.03 * size, (250, 250, 250))
    return {"static": static, "wrist": wrist}


def write_reaching_dataset(
    root: Union[str, Path],
    episodes: int = 8,
    length: int = 30,
    image_size: int = 64,
    horizon: int = 10,
    speed: float = 0.025,
    seed: int = 0,
) -> Path:
    """Write the data set to ``root`` (overwriting an earlier one there); returns ``root``."""
    from ..data.dataset import DatasetInfo, DatasetWriter, Episode

    rng = np.random.default_rng(seed)
    info = DatasetInfo(
        embodiment="panda",
        action_space="panda",
        fps=10.0,
        action_horizon=horizon,
        image_size=image_size,
        state_names=[f"joint{i}" for i in range(1, 8)],
        action_names=["dx", "dy", "dz", "drx", "dry", "drz", "gripper"],
        views=["static", "wrist"],
        converter={"source": "vpp_core.training.toy_data", "seed": seed},
    )
    writer = DatasetWriter(root, info, overwrite=True)
    for index in range(episodes):
        cubes = {}
        while True:
            cubes = {name: rng.uniform(0.15, 0.85, size=2) for name in ("red", "blue")}
            if np.linalg.norm(cubes["red"] - cubes["blue"]) > 0.3:
                break
        target_name = ("red", "blue")[index % 2]
        instruction = f"reach the {target_name} cube"
        start = rng.uniform(0.1, 0.9, size=2)
        path = [start]
        for _ in range(length - 1):
            offset = cubes[target_name] - path[-1]
            distance = float(np.linalg.norm(offset))
            step = offset if distance <= speed else offset / distance * speed
            path.append(path[-1] + step)
        positions = np.stack(path)  # (T, 2) in table units [0, 1]
        frames = {"static": [], "wrist": []}
        for position in positions:
            views = render_views(image_size, cubes, position)
            for view in frames:
                frames[view].append(views[view])
        xyz = np.concatenate([positions, np.zeros((length, 1))], axis=1)
        future = np.minimum(np.arange(length)[:, None] + 1 + np.arange(horizon)[None, :], length - 1)
        actions = np.zeros((length, horizon, 7), np.float32)
        actions[..., :3] = xyz[future] - xyz[:, None, :]
        actions[..., 6] = 1.0
        ee_pose = np.concatenate([xyz, np.tile([0.0, 0.0, 0.0, 1.0], (length, 1))], axis=1)
        episode = Episode(
            frames={view: np.stack(images) for view, images in frames.items()},
            timestamps=np.arange(length) / info.fps,
            state=np.zeros((length, 7)),
            ee_pose=ee_pose,
            proprio=None,
            actions=actions,
            instruction=instruction,
        )
        writer.add_episode(episode, source=f"toy_{index:04d}", sync_report={})
    writer.finalize()
    return Path(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--length", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_reaching_dataset(args.output, args.episodes, args.length, args.image_size, seed=args.seed)
    print(args.output)


if __name__ == "__main__":
    main()
