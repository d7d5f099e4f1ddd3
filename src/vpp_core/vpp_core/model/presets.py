"""Named VPP policy configurations per embodiment, full size and tiny (CPU tests / benchmarks).

| preset       | views          | action chunk | proprio | TVP features                        |
|--------------|----------------|--------------|---------|-------------------------------------|
| panda        | static + wrist | 10 x 7       | none    | up_blocks[0] (x2) + [1]: 2560 x 16x16 |
| xhand        | static + wrist | 10 x 18      | 19-d    | up_blocks[1]: 1280 x 16x16          |
| *-tiny       | same           | same         | same    | tiny random UNet, 128 px images     |

Full size is the paper's model: SVD's UNet (``sample_size=96`` set explicitly), SVD's temporal VAE,
clip-vit-base-patch32's text tower, 256 x 256 images, 16 predicted frames, Video Former 6 layers
of width 384 with 16 x 14 queries, action head 384 wide with 4 + 4 blocks and 10 sampling steps.
Panda uses the reference CALVIN feature choice (two up blocks), XHand the reference xhand/xbot
choice (one up block); Panda actions are delta end-effector pose (6) + gripper (1), XHand actions
delta xyz (3) + delta rotation (3) + 12 absolute hand joints.

Tiny presets keep every code path (two views, 16 frames, two feature blocks for panda, proprio for
xhand, text widened 32 -> 64 by tiling as in the full model's 512 -> 1024) but with a UNet of
block widths (32, 32, 64, 64), one layer per block and cross-attention width 64, a 4-level VAE of
width 32 (still 8x down-sampling), a 2-layer CLIP text tower of width 32, 128 x 128 images and a
2-layer Video Former / action head of width 64.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .action_head import ActionHeadConfig
from .policy import VPPPolicy, VPPPolicyConfig
from .tvp import TextGuidedVideoPredictor, TVPConfig, clip_text_config, svd_unet_config, svd_vae_config
from .video_former import VideoFormerConfig

__all__ = [
    "PRESET_NAMES",
    "PRESET_DESCRIPTIONS",
    "preset_config",
    "policy_config_for_tvp",
    "build_policy",
    "build_policy_with_pretrained_tvp",
]

_EMBODIMENTS: dict[str, dict[str, Any]] = {
    "panda": dict(
        action_dim=7,
        horizon=10,
        proprio_dim=0,
        feature_blocks=(0, 1),
        description="Franka Panda: static + wrist cameras, 10 x 7 delta-EE-pose + gripper chunks, no proprio",
    ),
    "xhand": dict(
        action_dim=18,
        horizon=10,
        proprio_dim=19,
        feature_blocks=(1,),
        description="XArm + 12-DoF XHand: static + wrist cameras, 10 x 18 chunks (delta xyz, delta rot, 12 hand joints), 19-d proprio",
    ),
}

PRESET_NAMES: tuple[str, ...] = ("panda", "panda-tiny", "xhand", "xhand-tiny")
PRESET_DESCRIPTIONS: dict[str, str] = {
    name: _EMBODIMENTS[name.split("-")[0]]["description"] + (" (tiny random model for CPU tests)" if name.endswith("-tiny") else "")
    for name in PRESET_NAMES
}
VIEW_NAMES: tuple[str, ...] = ("static", "wrist")


def _full_tvp(feature_blocks: tuple[int, ...]) -> TVPConfig:
    return TVPConfig(
        unet=svd_unet_config(),
        vae=svd_vae_config(),
        text_encoder=clip_text_config(),
        image_size=256,
        num_frames=16,
        feature_blocks=feature_blocks,
    )


def _tiny_tvp(feature_blocks: tuple[int, ...]) -> TVPConfig:
    image_size = 128
    return TVPConfig(
        unet=svd_unet_config(
            sample_size=image_size // 8,
            block_out_channels=[32, 32, 64, 64],
            num_attention_heads=[2, 2, 4, 4],
            layers_per_block=1,
            cross_attention_dim=64,
            addition_time_embed_dim=32,
            projection_class_embeddings_input_dim=96,
            num_frames=16,
        ),
        vae=svd_vae_config(block_out_channels=[32, 32, 32, 32], layers_per_block=1, sample_size=image_size),
        text_encoder=clip_text_config(
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=32,
        ),
        image_size=image_size,
        num_frames=16,
        feature_blocks=feature_blocks,
    )


def preset_config(name: str) -> VPPPolicyConfig:
    """The ``VPPPolicyConfig`` of a named preset (see ``PRESET_NAMES``)."""
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    embodiment = _EMBODIMENTS[name.split("-")[0]]
    tiny = name.endswith("-tiny")
    tvp = (_tiny_tvp if tiny else _full_tvp)(embodiment["feature_blocks"])
    return _assemble(tvp, embodiment, tiny)


def _assemble(tvp: TVPConfig, embodiment: dict[str, Any], tiny: bool) -> VPPPolicyConfig:
    if tiny:
        former = VideoFormerConfig(
            in_channels=tvp.feature_channels,
            num_views=len(VIEW_NAMES),
            num_frames=tvp.num_frames,
            tokens_per_frame=tvp.feature_size**2,
            dim=64,
            proj_hidden=128,
            queries_per_frame=4,
            depth=2,
            heads=4,
            head_dim=16,
        )
        head = ActionHeadConfig(
            action_dim=embodiment["action_dim"],
            horizon=embodiment["horizon"],
            dim=64,
            heads=4,
            encoder_depth=2,
            decoder_depth=2,
            lang_dim=tvp.text_embed_dim,
            lang_hidden=128,
            proprio_dim=embodiment["proprio_dim"],
            num_vision_tokens=former.num_output_tokens,
        )
    else:
        former = VideoFormerConfig(
            in_channels=tvp.feature_channels,
            num_views=len(VIEW_NAMES),
            num_frames=tvp.num_frames,
            tokens_per_frame=tvp.feature_size**2,
        )
        head = ActionHeadConfig(
            action_dim=embodiment["action_dim"],
            horizon=embodiment["horizon"],
            lang_dim=tvp.text_embed_dim,
            proprio_dim=embodiment["proprio_dim"],
            num_vision_tokens=former.num_output_tokens,
        )
    return VPPPolicyConfig(tvp=tvp, video_former=former, action_head=head, view_names=VIEW_NAMES, freeze_tvp=True)


def policy_config_for_tvp(name: str, tvp: TVPConfig, proprio_dim: Optional[int] = None) -> VPPPolicyConfig:
    """Preset ``name``'s Video Former and action head, sized for the features of ``tvp``.

    Used by stage-2 training around a fine-tuned TVP loaded from disk (whose settings, e.g. image
    size, may differ from the preset's own TVP). ``proprio_dim`` (None: the preset's) sets the
    width of the action head's proprio token, 0 for none: a Panda policy can take the arm's joint
    positions although the preset, like the reference, has none.
    """
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    embodiment = _EMBODIMENTS[name.split("-")[0]]
    if proprio_dim is not None:
        if not isinstance(proprio_dim, int) or proprio_dim < 0:
            raise ValueError(f"proprio_dim must be an int >= 0 (or None for the preset's), got {proprio_dim!r}")
        embodiment = {**embodiment, "proprio_dim": proprio_dim}
    return _assemble(tvp, embodiment, name.endswith("-tiny"))


def build_policy(name: str, seed: Optional[int] = 0) -> VPPPolicy:
    """A randomly initialised policy of preset ``name`` (seeded for reproducible tests)."""
    config = preset_config(name)
    if seed is None:
        return VPPPolicy(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VPPPolicy(config)


def build_policy_with_pretrained_tvp(
    name: str,
    video_model_dir: str,
    text_encoder_dir: str,
    vae_dir: Optional[str] = None,
    seed: Optional[int] = 0,
) -> VPPPolicy:
    """Preset ``name``'s Video Former and action head (fresh) around a released TVP loaded from disk.

    The TVP keeps the preset's feature settings (blocks, image size, frames); the Video Former is
    sized from the loaded UNet's real feature channels.
    """
    preset = preset_config(name)
    settings = {
        key: value
        for key, value in preset.tvp.to_dict().items()
        if key not in ("unet", "vae", "text_encoder")
    }
    tvp = TextGuidedVideoPredictor.from_pretrained(video_model_dir, text_encoder_dir, vae_dir=vae_dir, **settings)
    config = _assemble(tvp.config, _EMBODIMENTS[name.split("-")[0]], name.endswith("-tiny"))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return VPPPolicy(config, tvp=tvp)
