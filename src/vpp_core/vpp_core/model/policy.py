"""Video Prediction Policy: TVP predictive features -> Video Former -> diffusion action head.

Stage 2 of VPP trains the Video Former and the action head on top of a fine-tuned TVP, which is
frozen (``VPPPolicyConfig.freeze_tvp``, the reference's setting): no gradients, kept in eval mode
even when the policy is put in training mode, excluded from ``trainable_parameters``.

Per plan: the instruction is CLIP-encoded (callers cache this per instruction), every camera view
goes through ONE truncated UNet forward as one batch, the Video Former compresses the features to
T * Q tokens, the action head encodes [language, vision tokens, proprio] once and samples an action
chunk in its normalised space. Normalisation to and from robot units is the caller's job (see
``engine.PolicyEngine``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .action_head import ActionHeadConfig, DiffusionActionHead
from .tvp import TextConditioning, TextGuidedVideoPredictor, TVPConfig
from .video_former import VideoFormer, VideoFormerConfig

__all__ = ["VPPPolicyConfig", "VPPPolicy", "StageTimer"]

# A factory of context managers, one per named stage (``engine`` passes one that times stages).
StageTimer = Callable[[str], ContextManager[Any]]


def _no_timer(_: str) -> ContextManager[Any]:
    return nullcontext()


@dataclass
class VPPPolicyConfig:
    """The whole policy's architecture; consistency between the parts is checked on creation."""

    tvp: TVPConfig
    video_former: VideoFormerConfig
    action_head: ActionHeadConfig
    view_names: tuple[str, ...] = ("static", "wrist")
    freeze_tvp: bool = True

    def __post_init__(self) -> None:
        self.view_names = tuple(self.view_names)
        if not self.view_names or len(set(self.view_names)) != len(self.view_names):
            raise ValueError(f"view_names must be unique and non-empty, got {self.view_names}")
        for name in self.view_names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"view names must be non-empty strings, got {name!r}")
        tvp, former, head = self.tvp, self.video_former, self.action_head
        checks = [
            (former.num_views, len(self.view_names), "video_former.num_views vs number of view_names"),
            (former.num_frames, tvp.num_frames, "video_former.num_frames vs tvp.num_frames"),
            (former.in_channels, tvp.feature_channels, "video_former.in_channels vs TVP feature channels"),
            (former.tokens_per_frame, tvp.feature_size**2, "video_former.tokens_per_frame vs TVP feature h*w"),
            (head.num_vision_tokens, former.num_output_tokens, "action_head.num_vision_tokens vs Video Former output tokens"),
            (head.dim, former.dim, "action_head.dim vs video_former.dim"),
            (head.lang_dim, tvp.text_embed_dim, "action_head.lang_dim vs CLIP projection_dim"),
        ]
        mismatches = [f"{what}: {got} != {expected}" for got, expected, what in checks if got != expected]
        if mismatches:
            raise ValueError("inconsistent VPP policy config:\n  " + "\n  ".join(mismatches))

    def to_dict(self) -> dict[str, Any]:
        return {
            "tvp": self.tvp.to_dict(),
            "video_former": self.video_former.to_dict(),
            "action_head": self.action_head.to_dict(),
            "view_names": list(self.view_names),
            "freeze_tvp": self.freeze_tvp,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VPPPolicyConfig":
        unknown = sorted(set(data) - {"tvp", "video_former", "action_head", "view_names", "freeze_tvp"})
        if unknown:
            raise ValueError(f"unknown VPPPolicyConfig keys: {unknown}")
        return cls(
            tvp=TVPConfig.from_dict(data["tvp"]),
            video_former=VideoFormerConfig.from_dict(data["video_former"]),
            action_head=ActionHeadConfig.from_dict(data["action_head"]),
            view_names=tuple(data.get("view_names", ("static", "wrist"))),
            freeze_tvp=bool(data.get("freeze_tvp", True)),
        )


class VPPPolicy(nn.Module):
    """TVP (frozen in stage 2) + Video Former + diffusion action head."""

    def __init__(self, config: VPPPolicyConfig, tvp: Optional[TextGuidedVideoPredictor] = None) -> None:
        """Build from ``config`` (random init), or around an existing (e.g. released) ``tvp``."""
        super().__init__()
        if tvp is None:
            tvp = TextGuidedVideoPredictor(config.tvp)
        # The TVP's own config is what gets stored (when a loaded TVP is passed in, config.tvp is
        # replaced by it): it is normalised from the networks actually held, and the consistency
        # checks below then run against the real feature shapes.
        self.config = VPPPolicyConfig(
            tvp=tvp.config,
            video_former=config.video_former,
            action_head=config.action_head,
            view_names=config.view_names,
            freeze_tvp=config.freeze_tvp,
        )
        self.tvp = tvp
        self.video_former = VideoFormer(config.video_former)
        self.action_head = DiffusionActionHead(config.action_head)
        if config.freeze_tvp:
            self.tvp.requires_grad_(False)
            self.tvp.eval()

    # ------------------------------------------------------------------ properties
    @property
    def view_names(self) -> tuple[str, ...]:
        return self.config.view_names

    @property
    def action_dim(self) -> int:
        return self.config.action_head.action_dim

    @property
    def horizon(self) -> int:
        return self.config.action_head.horizon

    @property
    def proprio_dim(self) -> int:
        return self.config.action_head.proprio_dim

    @property
    def image_size(self) -> int:
        return self.config.tvp.image_size

    @property
    def device(self) -> torch.device:
        return self.action_head.action_in.weight.device

    def train(self, mode: bool = True) -> "VPPPolicy":
        """Like ``nn.Module.train``, but a frozen TVP stays in eval mode."""
        super().train(mode)
        if self.config.freeze_tvp:
            self.tvp.eval()
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the stage-2 optimiser should update (the TVP's only if not frozen)."""
        return (p for p in self.parameters() if p.requires_grad)

    def _tvp_grad_context(self) -> ContextManager[Any]:
        return torch.no_grad() if self.config.freeze_tvp else nullcontext()

    # ------------------------------------------------------------------ stages
    def encode_text(self, instructions: Sequence[str]) -> TextConditioning:
        """CLIP-encode instructions (no gradient when the TVP is frozen)."""
        with self._tvp_grad_context():
            return self.tvp.encode_text(instructions)

    def predictive_features(
        self, images: Tensor, text: TextConditioning, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """TVP one-step features [B, V, T, C, h, w] for images [B, V, 3, H, W] in [-1, 1]."""
        with self._tvp_grad_context():
            return self.tvp.features(images, text.hidden_states, generator)

    def context_from_features(
        self,
        features: Tensor,
        lang_emb: Tensor,
        proprio: Optional[Tensor] = None,
        stage_timer: StageTimer = _no_timer,
    ) -> Tensor:
        """Video Former + action-head encoder: the per-plan context [B, M, dim]."""
        with stage_timer("video_former"):
            tokens = self.video_former(features)
        with stage_timer("head_encode"):
            return self.action_head.encode(lang_emb, tokens, proprio)

    def observation_context(
        self,
        images: Tensor,
        text: TextConditioning,
        proprio: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
        stage_timer: StageTimer = _no_timer,
    ) -> Tensor:
        """Images [B, V, 3, H, W] in [-1, 1] + encoded text (+ normalised proprio) -> context.

        ``stage_timer(name)`` wraps each stage ("vae_encode", "unet", "video_former",
        "head_encode") so a caller can time them; by default it does nothing.
        """
        batch, views = int(images.shape[0]), int(images.shape[1])
        with self._tvp_grad_context():
            with stage_timer("vae_encode"):
                inputs = self.tvp.prepare_feature_inputs(images, text.hidden_states, generator)
            with stage_timer("unet"):
                outputs = self.tvp.run_up_blocks(inputs, last_block=self.config.tvp.feature_blocks[-1])
                features = self.tvp.aggregate_features(outputs, batch, views)
        return self.context_from_features(features, text.pooled, proprio, stage_timer)

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: Mapping[str, Any], generator: Optional[torch.Generator] = None) -> Tensor:
        """Stage-2 diffusion loss of one batch.

        Keys: ``actions`` [B, H, A] normalised to [-1, 1]; ``proprio`` [B, P] normalised (exactly
        when the policy has proprio); the observation as either ``images`` [B, V, 3, H, W] in
        [-1, 1] or ``features`` [B, V, T, C, h, w] (precomputed ``predictive_features``; valid
        while the TVP is frozen, because features are deterministic); the instruction as either
        ``instructions`` (list of B strings) or ``text`` (a ``TextConditioning``), or, with
        ``features``, just ``lang_emb`` [B, lang_dim].

        TVP features always use the fixed feature noise, as at rollout, so training sees exactly
        the features the deployed policy will see. ``generator`` seeds the action-head noise.
        """
        actions = batch["actions"]
        if not torch.is_tensor(actions):
            raise TypeError("batch['actions'] must be a tensor [B, H, A]")
        device = self.device
        actions = actions.to(device)
        proprio = batch.get("proprio")
        if proprio is not None:
            proprio = proprio.to(device)
        if "features" in batch:
            features = batch["features"].to(device)
            lang_emb = batch.get("lang_emb")
            if lang_emb is None:
                lang_emb = self._text_from_batch(batch).pooled
            context = self.context_from_features(features, lang_emb.to(device), proprio)
        elif "images" in batch:
            text = self._text_from_batch(batch)
            context = self.observation_context(batch["images"].to(device), text.to(device), proprio)
        else:
            raise KeyError("batch needs 'images' or precomputed 'features'")
        return self.action_head.loss(actions, context, generator)

    def _text_from_batch(self, batch: Mapping[str, Any]) -> TextConditioning:
        if "text" in batch:
            return batch["text"]
        if "instructions" in batch:
            return self.encode_text(batch["instructions"])
        raise KeyError("batch needs 'instructions' (list of str) or 'text' (TextConditioning)")

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def plan(
        self,
        images: Tensor,
        text: TextConditioning,
        proprio: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
        steps: Optional[int] = None,
    ) -> Tensor:
        """Sample normalised action chunks [B, H, A] for a batch of observations."""
        context = self.observation_context(images, text, proprio)
        return self.action_head.sample(context, generator=generator, steps=steps)
