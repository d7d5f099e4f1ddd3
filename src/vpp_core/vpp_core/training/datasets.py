"""torch Datasets over a vpp-dataset (``vpp_core.data.dataset.VPPDataset``) for both VPP stages.

Stage 1 (``ClipDataset``): one item per (episode, frame t, view): the frame at t is the
condition, the clip is the ``num_frames`` frames t, t + s, ..., t + (num_frames - 1) s
(s = ``frame_stride``), the last frame repeated past the episode end (so the end of an episode,
where the robot comes to rest, is predicted as rest), plus the episode's instruction.

Stage 2 (``ObservationDataset``): one item per (episode, frame t): every view's image at t, the
proprio vector at t (normalised), the action chunk planned at t (normalised to [-1, 1] with the
data set's percentile normaliser, exactly what the engine un-normalises), and the instruction.

Images are uint8 in the data set and become float [-1, 1] (``vpp_core.image.uint8_to_pixels``,
the engine's scaling); a data set stored at another resolution than the model's is resized with
the engine's resize (``vpp_core.image.resize_pixels``). Light augmentation (random shift,
brightness / contrast) is optional and draws from a per-item seed, so it is reproducible in any
DataLoader worker. Items are requested as ``(index, seed)`` pairs (see ``loop.StepBatchSampler``)
or as plain indices (no augmentation randomness needed then).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..image import resize_pixels, uint8_to_pixels
from .config import AugmentConfig

__all__ = ["EpisodeStore", "ClipDataset", "ObservationDataset", "augment_pixels", "clip_frame_indices"]

ItemKey = Union[int, tuple[int, int]]


def clip_frame_indices(start: int, length: int, num_frames: int, stride: int) -> np.ndarray:
    """Frame indices t, t + s, ..., clamped to the episode's last frame."""
    return np.minimum(start + stride * np.arange(num_frames), length - 1).astype(np.int64)


class EpisodeStore:
    """Loads episodes from a ``VPPDataset`` and keeps the last ``capacity`` decoded in memory.

    Without frames (training from cached features or latents) every episode is kept: its parquet
    part is a few kB, and re-reading it at each draw cost ~2 ms per item, ~18 % of a CPU stage-2
    step (session 11 profile, 300 episodes, batch 32, 64 kept: most draws missed).
    """

    def __init__(self, dataset: Any, capacity: int = 64, load_frames: bool = True) -> None:
        self.dataset = dataset
        self.capacity = max(1, int(capacity)) if load_frames else max(1, int(capacity), len(dataset.episodes))
        self.load_frames = load_frames
        self._cache: "OrderedDict[int, Any]" = OrderedDict()

    def __getitem__(self, index: int) -> Any:
        episode = self._cache.get(index)
        if episode is not None:
            self._cache.move_to_end(index)
            return episode
        episode = self.dataset.load_episode(index, load_frames=self.load_frames)
        self._cache[index] = episode
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return episode

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers start with an empty cache of their own.
        return {"dataset": self.dataset, "capacity": self.capacity, "load_frames": self.load_frames, "_cache": OrderedDict()}


def augment_pixels(pixels: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """The same random shift and brightness/contrast for every image of ``pixels`` [N, 3, S, S]."""
    if not config.enabled:
        return pixels
    out = pixels
    if config.shift_pixels > 0:
        pad = int(config.shift_pixels)
        size = pixels.shape[-1]
        padded = F.pad(out, (pad, pad, pad, pad), mode="replicate")
        dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
        out = padded[..., dy : dy + size, dx : dx + size]
    if config.contrast > 0 or config.brightness > 0:
        draws = torch.rand(2, generator=generator)
        gain = 1.0 + config.contrast * (2.0 * float(draws[0]) - 1.0)
        offset = config.brightness * (2.0 * float(draws[1]) - 1.0)
        mean = out.mean(dim=(-3, -2, -1), keepdim=True)
        out = ((out - mean) * gain + mean + offset).clamp(-1.0, 1.0)
    return out.contiguous()


def _split_key(key: ItemKey) -> tuple[int, int]:
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), int(key)


class _EpisodeIndex:
    """Flat index over the frames of the selected episodes: frames 0, k, 2k, ... of each (k = ``every``)."""

    def __init__(self, dataset: Any, exclude: Sequence[int], every: int = 1) -> None:
        if int(every) < 1:
            raise ValueError(f"a frame step must be >= 1, got {every}")
        self.every = int(every)
        excluded = {int(e) for e in exclude}
        self.episodes = [i for i in range(len(dataset.episodes)) if i not in excluded]
        if not self.episodes:
            raise ValueError("no episodes left for training (all excluded?)")
        self.lengths = [int(dataset.episodes[i].length) for i in self.episodes]
        indexed = [-(-length // self.every) for length in self.lengths]
        self.offsets = np.concatenate([[0], np.cumsum(indexed)]).astype(np.int64)

    @property
    def num_frames(self) -> int:
        """How many frames the index covers (all of them when ``every`` is 1)."""
        return int(self.offsets[-1])

    def locate(self, flat: int) -> tuple[int, int]:
        """Flat frame index -> (episode index in the data set, frame t)."""
        if not 0 <= flat < self.num_frames:
            raise IndexError(flat)
        position = int(np.searchsorted(self.offsets, flat, side="right") - 1)
        return self.episodes[position], (flat - int(self.offsets[position])) * self.every


class _ImageSource:
    def __init__(self, dataset: Any, image_size: int, views: Sequence[str], cache: int, load_frames: bool = True) -> None:
        self.dataset = dataset
        self.store = EpisodeStore(dataset, cache, load_frames)
        self.image_size = int(image_size)
        self.views = tuple(views)
        available = tuple(dataset.info.views)
        missing = [v for v in self.views if v not in available]
        if missing:
            raise ValueError(f"views {missing} are not in the data set (it has {list(available)})")

    def pixels(self, episode: Any, view: str, frames: np.ndarray) -> Tensor:
        images = torch.from_numpy(np.ascontiguousarray(episode.frames[view][frames]))
        return resize_pixels(uint8_to_pixels(images), self.image_size)


class ClipDataset(Dataset):
    """Stage-1 items: {"condition" [3,S,S], "clip" [T,3,S,S], "instruction", "episode", "view", "frames" [T]}.

    With ``load_images=False`` only the indices are returned (for training from cached latents).
    """

    def __init__(
        self,
        dataset: Any,
        image_size: int,
        num_frames: int,
        views: Sequence[str],
        frame_stride: int = 1,
        exclude_episodes: Sequence[int] = (),
        augment: Optional[AugmentConfig] = None,
        episode_cache: int = 64,
        load_images: bool = True,
    ) -> None:
        if frame_stride < 1:
            raise ValueError("frame_stride must be >= 1")
        self.source = _ImageSource(dataset, image_size, views, episode_cache)
        self.index = _EpisodeIndex(dataset, exclude_episodes)
        self.num_frames = int(num_frames)
        self.frame_stride = int(frame_stride)
        self.augment = augment or AugmentConfig()
        self.load_images = load_images
        self.instructions = [dataset.episodes[i].instruction for i in range(len(dataset.episodes))]

    @property
    def views(self) -> tuple[str, ...]:
        return self.source.views

    def __len__(self) -> int:
        return self.index.num_frames * len(self.views)

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, seed = _split_key(key)
        flat, view_index = divmod(index, len(self.views))
        episode_index, start = self.index.locate(flat)
        length = self.index.lengths[self.index.episodes.index(episode_index)]
        frames = clip_frame_indices(start, length, self.num_frames, self.frame_stride)
        item: dict[str, Any] = {
            "instruction": self.instructions[episode_index],
            "episode": episode_index,
            "view": view_index,
            "frames": torch.from_numpy(frames),
        }
        if self.load_images:
            episode = self.source.store[episode_index]
            pixels = self.source.pixels(episode, self.views[view_index], frames)
            pixels = augment_pixels(pixels, self.augment, torch.Generator().manual_seed(seed))
            # frames[0] == start: the condition is the clip's own first frame.
            item["condition"] = pixels[0].clone()
            item["clip"] = pixels
        return item


class ObservationDataset(Dataset):
    """Stage-2 items: {"images" [V,3,S,S], "actions" [H,A] normalised, "proprio" [P] normalised
    (when the policy uses proprio), "instruction", "episode", "frame", "flat"}.

    ``normalizers`` are the data set's (``VPPDataset.normalizers()``); with ``load_images=False``
    the images are left out (training from cached features, looked up by "flat"). With
    ``frame_step`` k only frames 0, k, 2k, ... of each episode are items (each with its full
    action chunk).
    """

    def __init__(
        self,
        dataset: Any,
        image_size: int,
        views: Sequence[str],
        normalizers: dict[str, Any],
        use_proprio: bool,
        exclude_episodes: Sequence[int] = (),
        augment: Optional[AugmentConfig] = None,
        episode_cache: int = 64,
        load_images: bool = True,
        frame_step: int = 1,
    ) -> None:
        # Without images (cached features) only the parquet part of an episode is read.
        self.source = _ImageSource(dataset, image_size, views, episode_cache, load_frames=load_images)
        self.index = _EpisodeIndex(dataset, exclude_episodes, frame_step)
        self.normalizers = normalizers
        self.use_proprio = use_proprio
        if use_proprio and "proprio" not in normalizers:
            raise ValueError("the policy uses proprio but the data set has no proprio statistics")
        self.augment = augment or AugmentConfig()
        self.load_images = load_images
        self.instructions = [dataset.episodes[i].instruction for i in range(len(dataset.episodes))]
        self._exclude_episodes = tuple(exclude_episodes)
        self._episode_cache = episode_cache

    def with_images(self) -> "ObservationDataset":
        """The same items (same flat indices) with images and without augmentation: what the TVP's
        features are computed from, for the feature cache and the feature statistics."""
        return ObservationDataset(
            self.source.dataset, self.source.image_size, self.views, self.normalizers, self.use_proprio,
            self._exclude_episodes, None, self._episode_cache, load_images=True, frame_step=self.index.every,
        )

    @property
    def views(self) -> tuple[str, ...]:
        return self.source.views

    def __len__(self) -> int:
        return self.index.num_frames

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        flat, seed = _split_key(key)
        episode_index, frame = self.index.locate(flat)
        episode = self.source.store[episode_index]
        actions = np.asarray(episode.actions[frame], dtype=np.float64)
        item: dict[str, Any] = {
            "instruction": self.instructions[episode_index],
            "episode": episode_index,
            "frame": frame,
            "flat": flat,
            "actions": torch.as_tensor(self.normalizers["actions"].normalize(actions), dtype=torch.float32),
        }
        if self.use_proprio:
            if episode.proprio is None:
                raise ValueError(f"episode {episode_index} has no proprio but the policy needs it")
            proprio = np.asarray(episode.proprio[frame], dtype=np.float64)
            item["proprio"] = torch.as_tensor(self.normalizers["proprio"].normalize(proprio), dtype=torch.float32)
        if self.load_images:
            generator = torch.Generator().manual_seed(seed)
            frames = np.array([frame])
            item["images"] = torch.cat(
                [augment_pixels(self.source.pixels(episode, view, frames), self.augment, generator) for view in self.views]
            )
        return item
