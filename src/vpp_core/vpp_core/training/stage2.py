"""Stage 2 of VPP: train the Video Former + diffusion action head on the frozen TVP's features.

    python -m vpp_core.training.stage2 --config config/train/panda_stage2.yaml [key.sub=value ...]
    accelerate launch --num_processes 8 --mixed_precision bf16 -m vpp_core.training.stage2 --config ...

The TVP from stage 1 (``init.tvp_dir``) is frozen (reference setting). Its one-step predictive
features are a deterministic function of (images, instruction) because the TVP uses a fixed
feature noise (see ``VPPPolicy.compute_loss``), so they can be computed once and cached on disk
(``feature_cache.enabled``): the cache is keyed by a hash of the TVP's weights and settings, the
data set's metadata and file listing, the views and the episode selection, and is rebuilt when
any of them changes. Augmentation and a feature cache exclude each other.

Trained: Video Former, action head (including the proprio projection; see action_head.py on why
it is trained), with AdamW (reference lr 1e-4, betas 0.9/0.9, wd 0.05), warm-up + decay, EMA.
Output: ``<run.output_dir>/checkpoint/``, a VPP policy checkpoint (``checkpoint.save_checkpoint``:
EMA weights, the data set's action/proprio normalisers) that ``PolicyEngine.from_checkpoint``
loads directly; resumable training checkpoints under ``<run.output_dir>/checkpoints/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..model.action_head import DiffusionActionHead
from ..model.checkpoint import save_checkpoint
from ..model.policy import VPPPolicy
from ..model.presets import policy_config_for_tvp
from ..model.video_former import VideoFormer
from .config import Stage2Config, load_config, save_config
from .datasets import ObservationDataset
from .loop import (
    TrainResult,
    TrainLoop,
    collate,
    configure_logging,
    make_accelerator,
)
from .stage1 import TextCache, _reset_accelerate_state, initial_tvp, parse_args
from .tvp_io import tvp_fingerprint

__all__ = ["Stage2Module", "FeatureCache", "build_stage2_policy", "train_stage2", "main"]

LOG = logging.getLogger("vpp_core.training.stage2")


class Stage2Module(nn.Module):
    """The trained part of the policy (Video Former + action head) as one module for DDP.

    Shares its sub-modules with the ``VPPPolicy`` it came from, so training it trains the policy.
    """

    def __init__(self, video_former: VideoFormer, action_head: DiffusionActionHead) -> None:
        super().__init__()
        self.video_former = video_former
        self.action_head = action_head

    def forward(
        self,
        features: Tensor,
        lang_emb: Tensor,
        actions: Tensor,
        proprio: Optional[Tensor],
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        # The same computation as VPPPolicy.compute_loss with precomputed features.
        context = self.action_head.encode(lang_emb, self.video_former(features), proprio)
        return self.action_head.loss(actions, context, generator)


def build_stage2_policy(config: Stage2Config) -> VPPPolicy:
    """The preset's Video Former + action head (fresh, seeded) around the stage-1 TVP."""
    init = config.init
    tvp = initial_tvp(init, allow_random=init.random_tvp)
    policy_config = policy_config_for_tvp(init.preset, tvp.config,
                                          None if init.proprio_dim == -1 else int(init.proprio_dim))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init.seed)
        return VPPPolicy(policy_config, tvp=tvp)


def _dataset_fingerprint(root: Path) -> str:
    """Hash of the data set's metadata files and the names and sizes of its data / video files."""
    digest = hashlib.sha256()
    for name in ("info.json", "episodes.jsonl", "stats.json"):
        path = root / "meta" / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"-")
    for path in sorted(list((root / "data").glob("*")) + list((root / "videos").glob("*/*"))):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()


class FeatureCache:
    """Predictive features of every training frame in one ``.npy`` memory map.

    ``<directory>/<key>/features.npy`` [N, V, T, C, h, w] (N = frames of the selected episodes,
    in the data set's flat frame order) holds each frame's features MINUS ``reference.npy``
    (float32, the mean features of the first batch), and ``meta.json`` (key parts, shape, dtype;
    written last: its presence marks a complete cache).

    Why the offset: a trained TVP's one-step features are a large pattern shared by every frame
    plus a small frame-dependent part (sim proof, stage-1 tiny TVP: element |mean| median 11.5,
    up to ~80, against an across-frame std of 0.01-0.16). Stored as float16 directly, the spacing
    of float16 near 64 (0.0625) is wider than that spread, and ~1/3 of the channels lost most of
    their signal; stage 2 then learned to ignore the observation. The residuals are small, so
    float16 keeps them to ~1e-3 relative.
    """

    def __init__(self, directory: Path, key: str, key_parts: dict[str, Any]) -> None:
        self.root = Path(directory) / key
        self.key = key
        self.key_parts = key_parts
        self.array: Optional[np.ndarray] = None
        self.reference: Optional[Tensor] = None  # float32 [V, T, C, h, w], on the last lookup's device
        self._writer: Optional[np.ndarray] = None

    @property
    def complete(self) -> bool:
        return (self.root / "meta.json").is_file()

    def open(self) -> None:
        self.array = np.load(self.root / "features.npy", mmap_mode="r")
        self.reference = torch.from_numpy(np.load(self.root / "reference.npy"))

    @torch.no_grad()
    def build(self, dataset: ObservationDataset, policy: VPPPolicy, texts: TextCache, batch_size: int, dtype: str, device: torch.device, autocast: Any) -> None:
        count = len(dataset)
        for start in range(0, count, batch_size):
            items = [dataset[i] for i in range(start, min(count, start + batch_size))]
            batch = collate(items)
            hidden, _ = texts(batch["instruction"])
            with autocast():
                features = policy.tvp.features(batch["images"].to(device), hidden.to(device))
            self.write(start, features.float().cpu().numpy(), count, dtype)
            if start // batch_size % 20 == 0:
                LOG.info("feature cache: %d / %d frames", start + len(items), count)
        self.finish()

    def write(self, start: int, values: np.ndarray, count: int, dtype: str) -> None:
        """Store float32 features [n, V, T, C, h, w] of frames start..start+n (of ``count``)."""
        if self._writer is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self.reference = torch.from_numpy(values.mean(axis=0).astype(np.float32))
            np.save(self.root / "reference.npy", self.reference.numpy())
            self._writer = np.lib.format.open_memmap(
                self.root / "features.npy", mode="w+", dtype=dtype, shape=(count, *values.shape[1:])
            )
        self._writer[start : start + len(values)] = (values - self.reference.numpy()).astype(self._writer.dtype)

    def finish(self) -> None:
        """Flush and mark the cache complete (``meta.json``)."""
        assert self._writer is not None, "nothing was written"
        self._writer.flush()
        meta = {"key": self.key, "parts": self.key_parts, "frames": len(self._writer), "dtype": str(self._writer.dtype)}
        self._writer = None
        (self.root / "meta.json").write_text(json.dumps(meta, indent=2))

    def lookup(self, flat: Sequence[int], device: torch.device) -> Tensor:
        assert self.array is not None and self.reference is not None
        indices = np.asarray([int(i) for i in flat])
        # The residuals travel in their stored dtype; the reference moves to the device once.
        residuals = torch.from_numpy(np.ascontiguousarray(self.array[indices])).to(device=device)
        self.reference = self.reference.to(device)
        return residuals.float() + self.reference


@torch.no_grad()
def feature_statistics(
    observations: ObservationDataset,
    cache: Optional[FeatureCache],
    policy: VPPPolicy,
    texts: TextCache,
    config: Stage2Config,
    device: torch.device,
    autocast: Any,
) -> tuple[Tensor, Tensor]:
    """Per-element mean [V, T, C, h, w] of the TVP features over frames, and the std [T, C] of
    what is left after subtracting it, over frames, views and locations (float64 sums).

    Per element, not per (frame, channel): the features share a fixed spatial pattern across all
    observations (see VideoFormer.set_feature_statistics), which only a per-element mean removes.

    From the cache when there is one, else by running the TVP over up to
    ``feature_stats_frames`` frames spread evenly over the training set (no augmentation).
    """
    count = len(observations)
    chosen = np.unique(np.linspace(0, count - 1, min(count, max(1, config.feature_stats_frames))).round().astype(np.int64))
    total = None
    total_sq = None
    samples = 0
    batch_size = config.run.batch_size
    plain = None
    if cache is None:
        plain = observations.with_images()
    for start in range(0, len(chosen), batch_size):
        indices = chosen[start : start + batch_size]
        if cache is not None:
            features = cache.lookup(indices, device)
        else:
            batch = collate([plain[int(i)] for i in indices])
            hidden, _ = texts(batch["instruction"])
            with autocast():
                features = policy.tvp.features(batch["images"].to(device), hidden.to(device))
        values = features.double()  # [n, V, T, C, h, w]
        part = values.sum(dim=0)  # [V, T, C, h, w]
        part_sq = values.square().sum(dim=(0, 1, 4, 5))  # [T, C]
        total = part if total is None else total + part
        total_sq = part_sq if total_sq is None else total_sq + part_sq
        samples += values.shape[0]
    assert total is not None and total_sq is not None
    mean = total / samples
    # E[(x - mean_elem)^2] over frames, views, locations = E[x^2] - mean over (V, h, w) of mean_elem^2.
    per_channel = samples * mean.shape[0] * mean.shape[-2] * mean.shape[-1]
    variance = (total_sq / per_channel - mean.square().mean(dim=(0, 3, 4))).clamp_min(0.0)
    return mean.float().cpu(), variance.sqrt().float().cpu()


def train_stage2(config: Stage2Config) -> TrainResult:
    """Run stage 2 as configured; returns the policy checkpoint directory written at the end (+ losses)."""
    from ..data.dataset import VPPDataset

    configure_logging()
    run = config.run
    if run.torch_threads > 0:
        torch.set_num_threads(run.torch_threads)
    output_dir = Path(run.output_dir)
    accelerator = make_accelerator(run, output_dir)
    try:
        if accelerator.is_main_process:
            save_config(config, output_dir)
        policy = build_stage2_policy(config)
        dataset = VPPDataset(config.data.root)
        normalizers = dataset.normalizers()
        info = dataset.info
        if normalizers["actions"].dim != policy.action_dim or info.action_horizon != policy.horizon:
            raise ValueError(
                f"data set chunks are {info.action_horizon} x {normalizers['actions'].dim}, the policy's "
                f"{policy.horizon} x {policy.action_dim} (preset {config.init.preset})"
            )
        if tuple(config.data.views) != tuple(policy.view_names):
            raise ValueError(f"data.views {list(config.data.views)} must equal the policy's views {list(policy.view_names)}")
        use_proprio = policy.proprio_dim > 0
        if use_proprio and info.proprio_dim != policy.proprio_dim:
            raise ValueError(
                f"the policy takes a {policy.proprio_dim}-d proprio vector but data set {config.data.root} has "
                + (f"{info.proprio_dim}-d proprio ({', '.join(info.proprio_names)})" if info.proprio_dim else "none")
                + f": set init.proprio_dim={info.proprio_dim}, or convert the bags with "
                f"embodiments.{info.embodiment}.proprio set to match"
            )
        cache_cfg = config.feature_cache
        if cache_cfg.enabled and config.data.augment.enabled:
            raise ValueError("feature_cache.enabled needs data.augment.enabled=false")
        if cache_cfg.dtype not in ("float16", "float32"):
            raise ValueError("feature_cache.dtype must be float16 or float32")
        observations = ObservationDataset(
            dataset,
            image_size=policy.image_size,
            views=config.data.views,
            normalizers=normalizers,
            use_proprio=use_proprio,
            exclude_episodes=config.data.exclude_episodes,
            augment=config.data.augment,
            episode_cache=config.data.episode_cache,
            load_images=not cache_cfg.enabled,
            frame_step=config.data.sample_every,
        )
        device = accelerator.device
        policy.tvp.to(device)
        policy.tvp.eval()
        texts = TextCache(policy.tvp)

        cache: Optional[FeatureCache] = None
        if cache_cfg.enabled:
            parts = {
                "tvp": tvp_fingerprint(policy.tvp),
                "dataset": _dataset_fingerprint(Path(config.data.root)),
                "views": list(config.data.views),
                "exclude_episodes": sorted(int(e) for e in config.data.exclude_episodes),
                "dtype": cache_cfg.dtype,
                "layout": "residuals-from-first-batch-mean",
            }
            if config.data.sample_every != 1:
                # Only when set, so that caches built before the option existed stay valid.
                parts["sample_every"] = int(config.data.sample_every)
            key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
            directory = Path(cache_cfg.directory) if cache_cfg.directory else output_dir / "feature_cache"
            cache = FeatureCache(directory, key, parts)
            if not cache.complete:
                if accelerator.is_main_process:
                    LOG.info("stage 2: building the feature cache %s (%d frames)", cache.root, len(observations))
                    cache.build(observations.with_images(), policy, texts, run.batch_size, cache_cfg.dtype, device,
                                accelerator.autocast)
                accelerator.wait_for_everyone()
            elif accelerator.is_main_process:
                LOG.info("stage 2: feature cache hit %s", cache.root)
            cache.open()

        if config.normalize_features:
            mean, std = feature_statistics(observations, cache, policy, texts, config, device, accelerator.autocast)
            policy.video_former.set_feature_statistics(mean, std)
            if accelerator.is_main_process:
                LOG.info(
                    "stage 2: feature standardisation from %d frames: |mean| %.3g (median over elements), std %.3g (median over frame x channel)",
                    min(len(observations), config.feature_stats_frames), mean.abs().median().item(), std.median().item(),
                )

        if config.normalize_language:
            instructions = sorted({dataset.episodes[i].instruction for i in observations.index.episodes})
            _, pooled = texts(instructions)
            policy.action_head.set_language_statistics(pooled)
            if accelerator.is_main_process:
                LOG.info(
                    "stage 2: language standardisation from %d distinct instructions (spread %.3g)",
                    len(instructions), policy.action_head.language_scale.item(),
                )

        def loss_fn(model: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> Tensor:
            with torch.no_grad():
                hidden, pooled = texts(batch["instruction"])
                if cache is not None:
                    features = cache.lookup(batch["flat"], device)
                else:
                    features = policy.tvp.features(batch["images"].to(device), hidden.to(device))
            proprio = batch["proprio"].to(device) if use_proprio else None
            return model(features, pooled.to(device), batch["actions"].to(device), proprio, generator)

        loop = TrainLoop.for_module(
            accelerator=accelerator,
            module=Stage2Module(policy.video_former, policy.action_head),
            dataset=observations,
            run=run,
            optim=config.optim,
            ema_config=config.ema,
            num_workers=config.data.num_workers,
            output_dir=output_dir,
            loss_fn=loss_fn,
            name="stage2",
        )
        losses = loop.run_to_end()
        checkpoint_dir = output_dir / "checkpoint"
        if accelerator.is_main_process:
            loop.trained_module()  # the EMA weights into the policy's Video Former and head
            metadata = {
                "stage": 2,
                "preset": config.init.preset,
                "steps": loop.step,
                "dataset": str(Path(config.data.root).resolve()),
                "embodiment": info.embodiment,
                "action_space": info.action_space,
                "fps": info.fps,
                "tvp_dir": config.init.tvp_dir,
                "ema": loop.ema is not None,
                # What the policy node reads the proprio vector from (joint names, in order).
                "proprio_names": list(info.proprio_names) if use_proprio else [],
            }
            policy.to("cpu")
            save_checkpoint(policy, checkpoint_dir, normalizers, metadata)
            LOG.info("stage 2 done: policy checkpoint written to %s", checkpoint_dir)
        accelerator.wait_for_everyone()
        return TrainResult(output=checkpoint_dir, losses=losses, step=loop.step)
    finally:
        accelerator.end_training()
        _reset_accelerate_state()


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv, "VPP stage 2: train the Video Former and action head on frozen TVP features")
    config = load_config(Stage2Config, args.config, args.overrides)
    train_stage2(config)


if __name__ == "__main__":
    main()
