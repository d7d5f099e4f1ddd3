"""Stage 1 of VPP: fine-tune the TVP (the video UNet) on robot clips with language.

    python -m vpp_core.training.stage1 --config config/train/panda_stage1.yaml [key.sub=value ...]
    accelerate launch --num_processes 8 --mixed_precision bf16 -m vpp_core.training.stage1 --config ...

Loss (reference TVP fine-tuning, ``shared/notes/vpp-reference.md``): the clip's VAE latents x0
(posterior mode x ``scaling_factor``) are noised with sigma ~ lognormal(0.7, 1.6) and denoised
by the UNet conditioned on the clip's first frame (``tvp.denoise``: SVD's v-prediction in EDM
form, sigma_data = 1); loss = mean((s^2 + 1) / s^2 * (D(x0 + s n) - x0)^2), i.e. EDM's
lambda(sigma) = 1 / c_out^2. 5 % of the samples get all-zero text states (language dropout,
for classifier-free guidance at preview time: ``predict_video(guidance_scale > 1)`` uses zeros as
the unconditional input). Only the UNet is trained (the reference freezes the VAE and CLIP).
``loss.feature_sigma_fraction`` > 0 (the from-scratch CPU presets) trains that fraction of the
samples at the feature forward's sigma and time ids instead, where a random UNet has never been.

Output: ``<run.output_dir>/tvp/`` (``tvp_io.save_tvp``: the EMA weights when EMA is on), which
stage 2 (``init.tvp_dir``) and the preview load; checkpoints for resuming under
``<run.output_dir>/checkpoints/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..model.edm import edm_loss_weight, randn, sample_lognormal_sigmas
from ..model.presets import preset_config
from ..model.tvp import TextGuidedVideoPredictor
from .config import InitConfig, Stage1Config, load_config, save_config
from .datasets import ClipDataset
from .loop import (
    TrainResult,
    TrainLoop,
    configure_logging,
    make_accelerator,
)
from .tvp_io import load_tvp, save_tvp

__all__ = ["LatentTable", "Stage1Module", "build_initial_tvp", "latent_std", "train_stage1", "main"]

LOG = logging.getLogger("vpp_core.training.stage1")


class Stage1Module(nn.Module):
    """Wraps the TVP so DDP / accelerate see one module whose forward is the denoiser.

    Only the UNet requires gradients; the VAE and text encoder are frozen (and in eval mode).
    """

    def __init__(self, tvp: TextGuidedVideoPredictor) -> None:
        super().__init__()
        self.tvp = tvp
        tvp.vae.requires_grad_(False)
        tvp.text_encoder.requires_grad_(False)
        tvp.unet.requires_grad_(True)

    def train(self, mode: bool = True) -> "Stage1Module":
        super().train(mode)
        self.tvp.vae.eval()
        self.tvp.text_encoder.eval()
        return self

    def forward(self, noisy: Tensor, sigma: Tensor, condition: Tensor, text_hidden: Tensor, time_ids: Tensor) -> Tensor:
        return self.tvp.denoise(noisy, sigma, condition, text_hidden, time_ids)


def build_initial_tvp(config: Stage1Config) -> TextGuidedVideoPredictor:
    """The TVP to fine-tune: loaded from ``init.tvp_dir`` or a random one of ``init.preset``."""
    return initial_tvp(config.init, allow_random=True)


def initial_tvp(init: InitConfig, allow_random: bool) -> TextGuidedVideoPredictor:
    """Load ``init.tvp_dir`` or build a random TVP of ``init.preset`` (seeded), with the overrides."""
    overrides = init.tvp_overrides()
    if init.tvp_dir:
        return load_tvp(init.tvp_dir, init.text_encoder_dir or None, init.vae_dir or None, **overrides)
    if not allow_random:
        raise ValueError("init.tvp_dir is required here (init.random_tvp=true builds a random TVP, for tests only)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init.seed)
        return TextGuidedVideoPredictor(dataclasses.replace(preset_config(init.preset).tvp, **overrides))


@torch.no_grad()
def vae_latents(tvp: TextGuidedVideoPredictor, pixels: Tensor, chunk: int = 32) -> Tensor:
    """Unscaled VAE posterior-mode latents [N, C, h, w] of pixels [N, 3, S, S] (fp32)."""
    vae = tvp.vae
    out = []
    for start in range(0, pixels.shape[0], chunk):
        part = pixels[start : start + chunk].to(device=vae.quant_conv.weight.device, dtype=vae.quant_conv.weight.dtype)
        out.append(vae.encode(part).latent_dist.mode().float())
    return torch.cat(out)


class LatentTable:
    """Every training frame's VAE latents, computed once (the VAE is frozen; the mode is deterministic)."""

    def __init__(self, dataset: ClipDataset, tvp: TextGuidedVideoPredictor, device: torch.device) -> None:
        self.latents: dict[tuple[int, int], Tensor] = {}
        source = dataset.source
        for episode_index in dataset.index.episodes:
            episode = source.store[episode_index]
            for view_index, view in enumerate(dataset.views):
                frames = torch.arange(len(episode.frames[view])).numpy()
                pixels = source.pixels(episode, view, frames)
                self.latents[(episode_index, view_index)] = vae_latents(tvp, pixels).to(device)

    def clips(self, episodes: Sequence[int], views: Sequence[int], frames: Tensor) -> Tensor:
        """[B, T, C, h, w] unscaled latents."""
        return torch.stack(
            [self.latents[(int(e), int(v))][f.to(self.latents[(int(e), int(v))].device)] for e, v, f in zip(episodes, views, frames)]
        )


@torch.no_grad()
def latent_std(latents: Optional[LatentTable], clips: ClipDataset, tvp: TextGuidedVideoPredictor, max_frames: int = 4096) -> float:
    """Std over all elements of the unscaled latents of (up to ``max_frames``) training frames."""
    if latents is not None:
        values = torch.cat([table.flatten(1) for table in latents.latents.values()])
    else:
        step = max(1, len(clips) // max(1, max_frames // clips.num_frames))
        pixels = torch.cat([clips[i]["clip"] for i in range(0, len(clips), step)])
        values = vae_latents(tvp, pixels)
    values = values[torch.linspace(0, values.shape[0] - 1, min(values.shape[0], max_frames)).long()]
    return float(values.float().std())


class TextCache:
    """Frozen CLIP encodings per instruction string (instructions repeat across a data set)."""

    def __init__(self, tvp: TextGuidedVideoPredictor) -> None:
        self.tvp = tvp
        self._cache: dict[str, tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def __call__(self, instructions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(hidden states [B, L, D], pooled [B, P]) in fp32."""
        missing = sorted({text for text in instructions if text not in self._cache})
        if missing:
            encoded = self.tvp.encode_text(missing)
            for i, text in enumerate(missing):
                self._cache[text] = (encoded.hidden_states[i].float(), encoded.pooled[i].float())
        hidden = torch.stack([self._cache[text][0] for text in instructions])
        pooled = torch.stack([self._cache[text][1] for text in instructions])
        return hidden, pooled


def video_loss(
    model: nn.Module,
    tvp: TextGuidedVideoPredictor,
    clean_latents: Tensor,
    condition: Tensor,
    text_hidden: Tensor,
    generator: torch.Generator,
    config: Stage1Config,
) -> Tensor:
    """EDM video loss (see the module docstring) for scaled clean latents [B, T, C, h, w]."""
    batch = clean_latents.shape[0]
    device = clean_latents.device
    loss_cfg = config.loss
    # Language dropout to zeros (reference: 5 %), the unconditional input of classifier-free guidance.
    dropped = torch.rand(batch, generator=generator) < loss_cfg.language_dropout
    text_hidden = torch.where(dropped.to(device).view(-1, 1, 1), torch.zeros_like(text_hidden), text_hidden)
    sigma = sample_lognormal_sigmas(batch, loss_cfg.sigma_mean, loss_cfg.sigma_std, generator=generator, device=device)
    dtype = tvp.unet.conv_in.weight.dtype
    time_ids = tvp.added_time_ids(batch, fps_id=loss_cfg.fps_id, dtype=dtype)
    if loss_cfg.feature_sigma_fraction > 0:
        # These samples see exactly what the one-step feature forward sees (noise level and time ids).
        in_feature_regime = (torch.rand(batch, generator=generator) < loss_cfg.feature_sigma_fraction).to(device)
        sigma = torch.where(in_feature_regime, torch.full_like(sigma, tvp.config.feature_sigma), sigma)
        feature_ids = tvp.added_time_ids(batch, dtype=dtype)
        time_ids = torch.where(in_feature_regime.view(-1, 1), feature_ids, time_ids)
    noise = randn(clean_latents.shape, generator, device, torch.float32)
    noisy = clean_latents + sigma.view(-1, 1, 1, 1, 1) * noise
    denoised = model(noisy, sigma, condition, text_hidden, time_ids)
    # lambda(sigma) = (s^2 + 1) / s^2 (sigma_data = 1, SVD's parameterisation; reference weighting)
    weight = edm_loss_weight(sigma, sigma_data=1.0)
    per_sample = (denoised.float() - clean_latents).pow(2).flatten(1).mean(dim=1)
    return (weight * per_sample).mean()


def train_stage1(config: Stage1Config) -> "TrainResult":
    """Run stage 1 as configured; returns the TVP directory written at the end (+ this run's losses)."""
    from ..data.dataset import VPPDataset

    configure_logging()
    if not 0.0 <= config.loss.feature_sigma_fraction <= 1.0:
        raise ValueError(f"loss.feature_sigma_fraction must be within [0, 1], got {config.loss.feature_sigma_fraction}")
    if config.data.sample_every != 1:
        raise ValueError(
            f"data.sample_every={config.data.sample_every} is a stage-2 setting (stage 1 cuts a clip at every frame); "
            "remove it here, or set data.frame_stride for the spacing of a clip's frames"
        )
    run = config.run
    if run.torch_threads > 0:
        torch.set_num_threads(run.torch_threads)
    output_dir = Path(run.output_dir)
    accelerator = make_accelerator(run, output_dir)
    try:
        if accelerator.is_main_process:
            save_config(config, output_dir)
        tvp = build_initial_tvp(config)
        tvp_cfg = tvp.config
        dataset = VPPDataset(config.data.root)
        augment = config.data.augment
        use_cache = config.cache_latents
        if use_cache and augment.enabled:
            raise ValueError("cache_latents needs data.augment.enabled=false (augmented frames change every step)")
        if use_cache and tvp_cfg.noise_aug_strength > 0:
            raise ValueError("cache_latents needs the TVP's noise_aug_strength = 0 (the condition is noised per step)")
        clips = ClipDataset(
            dataset,
            image_size=tvp_cfg.image_size,
            num_frames=tvp_cfg.num_frames,
            views=config.data.views,
            frame_stride=config.data.frame_stride,
            exclude_episodes=config.data.exclude_episodes,
            augment=augment,
            episode_cache=config.data.episode_cache,
            load_images=not use_cache,
        )
        if config.gradient_checkpointing:
            tvp.unet.enable_gradient_checkpointing()
        device = accelerator.device
        # On the training device before the latent table encodes every frame with the VAE.
        tvp.to(device)

        latents = LatentTable(clips, tvp, device) if use_cache else None
        if latents is not None and accelerator.is_main_process:
            LOG.info("stage 1: cached VAE latents of %d frames x %d views", clips.index.num_frames, len(clips.views))
        if config.calibrate_latent_scale and not config.init.tvp_dir:
            std = latent_std(latents, clips, tvp)
            tvp.set_latent_scaling(1.0 / std, scale_condition_latents=True)
            LOG.info("stage 1: VAE latent std %.4f -> scaling factor %.4f (conditioning latents scaled too)", std, 1.0 / std)
        texts = TextCache(tvp)
        scaling = float(tvp.vae.config.scaling_factor)
        latent_shape = (tvp_cfg.latent_channels, tvp_cfg.latent_size, tvp_cfg.latent_size)

        def loss_fn(model: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> Tensor:
            with torch.no_grad():
                if latents is not None:
                    raw = latents.clips(batch["episode"], batch["view"], batch["frames"])
                    condition = tvp.condition_from_latents(raw[:, 0])
                else:
                    clip = batch["clip"].to(device)
                    count, frames = clip.shape[:2]
                    raw = vae_latents(tvp, clip.flatten(0, 1)).view(count, frames, *latent_shape)
                    condition = tvp.encode_images(batch["condition"].to(device), generator).float()
                text_hidden, _ = texts(batch["instruction"])
            return video_loss(model, tvp, raw * scaling, condition, text_hidden, generator, config)

        loop = TrainLoop.for_module(
            accelerator=accelerator,
            module=Stage1Module(tvp),
            dataset=clips,
            run=run,
            optim=config.optim,
            ema_config=config.ema,
            num_workers=config.data.num_workers,
            output_dir=output_dir,
            loss_fn=loss_fn,
            name="stage1",
        )
        losses = loop.run_to_end()
        tvp_dir = output_dir / "tvp"
        if accelerator.is_main_process:
            unwrapped = loop.trained_module()
            metadata = {
                "stage": 1,
                "steps": loop.step,
                "dataset": str(Path(config.data.root).resolve()),
                "ema": loop.ema is not None,
                "init": config.init.tvp_dir or f"random {config.init.preset}",
                "train_fps_id": config.loss.fps_id,
                "frame_stride": config.data.frame_stride,
            }
            save_tvp(unwrapped.tvp, tvp_dir, metadata)
            LOG.info("stage 1 done: TVP written to %s", tvp_dir)
        accelerator.wait_for_everyone()
        return TrainResult(output=tvp_dir, losses=losses, step=loop.step)
    finally:
        accelerator.end_training()
        _reset_accelerate_state()


def _reset_accelerate_state() -> None:
    """Let a later run in the same process (tests) build a fresh Accelerator."""
    try:
        from accelerate.state import AcceleratorState, GradientState

        if AcceleratorState._shared_state and not torch.distributed.is_initialized():
            AcceleratorState._reset_state(True)
        GradientState._reset_state()
    except Exception:  # noqa: BLE001 - best effort; only matters for several runs per process
        pass


def parse_args(argv: Optional[Sequence[str]], description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML training config (config/train/...)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. run.max_steps=100")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv, "VPP stage 1: fine-tune the text-guided video predictor")
    config = load_config(Stage1Config, args.config, args.overrides)
    train_stage1(config)


if __name__ == "__main__":
    main()
