"""Video Former: compresses multi-view predictive video features into a fixed set of tokens.

Input: TVP up-block features for every view and predicted frame, ``[B, V, T, C, h, w]``.
Output: ``T * Q`` tokens of width ``dim`` (full size 16 x 14 = 224 tokens of 384), which condition
the diffusion action head.

Each of the ``depth`` layers runs, pre-norm with residuals:
1. spatial cross-attention: frame t's Q queries attend over frame t's h*w tokens of *all* views
   plus the Q queries themselves (Perceiver-resampler style, so queries can also exchange
   information within a frame);
2. temporal self-attention: for each query index, the T queries of that index attend across
   frames;
3. a GELU feed-forward network (hidden = ffn_mult * dim).

Attention uses ``heads * head_dim`` inner width (full size 8 x 64 = 512, the paper's "latent dim").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VideoFormerConfig",
    "VideoFormer",
    "MultiHeadAttention",
    "FeedForward",
    "config_from_dict",
]


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys so stale checkpoints fail loudly."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}")
    return cls(**dict(data))


@dataclass
class VideoFormerConfig:
    """Shape-defining hyper-parameters of the Video Former (defaults: full size from the paper).

    ``in_channels`` is the channel count of the TVP feature map (e.g. 1280 or 2560),
    ``tokens_per_frame`` its h * w (e.g. 16 * 16 = 256).
    """

    in_channels: int
    num_views: int
    num_frames: int = 16
    tokens_per_frame: int = 256
    dim: int = 384
    proj_hidden: int = 768
    queries_per_frame: int = 14
    depth: int = 6
    heads: int = 8
    head_dim: int = 64
    ffn_mult: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "in_channels",
            "num_views",
            "num_frames",
            "tokens_per_frame",
            "dim",
            "proj_hidden",
            "queries_per_frame",
            "depth",
            "heads",
            "head_dim",
            "ffn_mult",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"VideoFormerConfig.{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VideoFormerConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_output_tokens(self) -> int:
        """Tokens produced per sample: num_frames * queries_per_frame."""
        return self.num_frames * self.queries_per_frame

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VideoFormerConfig":
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        return config_from_dict(cls, data)


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention on ``scaled_dot_product_attention``.

    ``forward(x, context=None)``: queries from ``x`` [B, L, dim], keys/values from ``context``
    [B, S, context_dim] (``x`` itself when None). ``project_kv`` exposes the key/value projection
    so a caller can compute it once for a context that is reused many times.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: Optional[int] = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim if context_dim is not None else dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def _split_heads(self, tensor: Tensor) -> Tensor:
        batch, length, _ = tensor.shape
        return tensor.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def project_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values for ``context``, each [B, heads, S, head_dim]."""
        keys, values = self.to_kv(context).chunk(2, dim=-1)
        return self._split_heads(keys), self._split_heads(values)

    def forward(
        self,
        x: Tensor,
        context: Optional[Tensor] = None,
        kv: Optional[tuple[Tensor, Tensor]] = None,
        attn_mask: Optional[Tensor] = None,
    ) -> Tensor:
        if kv is None:
            kv = self.project_kv(x if context is None else context)
        keys, values = kv
        queries = self._split_heads(self.to_q(x))
        out = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        batch, _, length, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim))


class FeedForward(nn.Module):
    """Linear -> GELU -> (dropout) -> Linear."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _VideoFormerLayer(nn.Module):
    """Spatial cross-attention, temporal self-attention and FFN, each pre-norm with a residual."""

    def __init__(self, config: VideoFormerConfig) -> None:
        super().__init__()
        dim = config.dim
        self.media_norm = nn.LayerNorm(dim)
        self.spatial_query_norm = nn.LayerNorm(dim)
        self.spatial_attn = MultiHeadAttention(dim, config.heads, config.head_dim, dropout=config.dropout)
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attn = MultiHeadAttention(dim, config.heads, config.head_dim, dropout=config.dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, config.ffn_mult * dim, config.dropout)
        self.residual_dropout = nn.Dropout(config.dropout)

    def forward(self, queries: Tensor, media: Tensor) -> Tensor:
        """queries [B, T, Q, dim], media [B, T, S, dim] (S = views * tokens_per_frame)."""
        batch, frames, num_queries, dim = queries.shape
        per_frame_queries = queries.reshape(batch * frames, num_queries, dim)
        per_frame_media = media.reshape(batch * frames, media.shape[2], dim)

        normed_queries = self.spatial_query_norm(per_frame_queries)
        keys_values = torch.cat([self.media_norm(per_frame_media), normed_queries], dim=1)
        per_frame_queries = per_frame_queries + self.residual_dropout(
            self.spatial_attn(normed_queries, keys_values)
        )

        # Temporal attention is bidirectional: all T predicted frames come out of one TVP pass at
        # once, so no frame's features are "from the future" relative to the decision being made.
        per_index = (
            per_frame_queries.view(batch, frames, num_queries, dim)
            .transpose(1, 2)
            .reshape(batch * num_queries, frames, dim)
        )
        per_index = per_index + self.residual_dropout(self.temporal_attn(self.temporal_norm(per_index)))
        per_index = per_index + self.residual_dropout(self.ffn(self.ffn_norm(per_index)))
        return per_index.view(batch, num_queries, frames, dim).transpose(1, 2)


class VideoFormer(nn.Module):
    """Aggregates ``[B, V, T, C, h, w]`` predictive features into ``[B, T * Q, dim]`` tokens."""

    def __init__(self, config: VideoFormerConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.input_proj = nn.Sequential(
            nn.Linear(config.in_channels, config.proj_hidden),
            nn.GELU(),
            nn.Linear(config.proj_hidden, dim),
        )
        self.frame_pos = nn.Parameter(torch.zeros(config.num_frames, dim))
        self.view_pos = nn.Parameter(torch.zeros(config.num_views, dim))
        # Per-location embedding within a frame (an addition to the paper's per-frame embedding):
        # without it the spatial cross-attention is blind to *where* in the image a feature lies,
        # except for what the UNet's zero padding leaks. It costs tokens_per_frame * dim params.
        self.spatial_pos = nn.Parameter(torch.zeros(config.tokens_per_frame, dim))
        self.latent_queries = nn.Parameter(torch.zeros(config.num_frames, config.queries_per_frame, dim))
        # Feature standardisation: (features - mean) / std, mean per element, std per (frame,
        # channel); identity until ``set_feature_statistics`` (stage-2 training sets it from the
        # training set's features).
        # Why: the TVP's one-step features at sigma 700 are dominated by a component that is the
        # same for every observation (the UNet sees the same fixed noise; only the conditioning
        # latents and the text differ), e.g. for a random tiny TVP the across-observation std is
        # ~0.4 of the features' RMS. With small-init projections the Video Former's output then
        # starts nearly input-independent, and early training drives it to fully
        # input-independent tokens (the action head fits the mean first). Standardising per
        # frame and channel fixed that in the tiny overfit experiment for every init seed tried.
        #
        # The mean is per ELEMENT [views, frames, channels, h*w], not per (frame, channel): the
        # shared component is a fixed spatial pattern (same noise at every location), so a
        # per-(frame, channel) mean leaves it in place. Measured on the toy reaching set with the
        # stage-1 tiny TVP: across-observation std 0.03 vs total std 0.41 of the features, so
        # after per-(frame, channel) standardisation ~93% of the Video Former's input was still
        # the same for every observation; its tokens collapsed to input-independent (across-
        # sample / total token std 0.0003 after 1000 steps) and the policy ignored the images
        # (denoiser error identical with the right or a shuffled context; sampled chunks worse
        # than the mean chunk). With the per-element mean removed, the tokens stay input-dependent
        # and the denoiser uses the context (see test_training_feature_norm.py).
        self.register_buffer(
            "feature_mean", torch.zeros(config.num_views, config.num_frames, config.in_channels, config.tokens_per_frame)
        )
        self.register_buffer("feature_std", torch.ones(config.num_frames, config.in_channels))
        self.layers = nn.ModuleList(_VideoFormerLayer(config) for _ in range(config.depth))
        self.output_norm = nn.LayerNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal (std 0.02) embeddings and linear weights, zero biases."""
        for param in (self.frame_pos, self.view_pos, self.spatial_pos, self.latent_queries):
            nn.init.trunc_normal_(param, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @torch.no_grad()
    def set_feature_statistics(self, mean: Tensor, std: Tensor, min_std: float = 1e-6) -> None:
        """Set the standardisation ``(features - mean) / std``.

        ``mean``: per element, [num_views, num_frames, in_channels, h, w] (or with h*w flattened),
        or per (frame, channel) [num_frames, in_channels], broadcast over views and locations.
        ``std``: per (frame, channel) [num_frames, in_channels].
        """
        cfg = self.config
        per_channel = (cfg.num_frames, cfg.in_channels)
        per_element = tuple(self.feature_mean.shape)
        mean = torch.as_tensor(mean, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32)
        if tuple(mean.shape) == per_channel:
            mean = mean.view(1, *per_channel, 1).expand(per_element)
        elif mean.ndim == 5 and tuple(mean.shape[:3]) == per_element[:3] and mean.shape[3] * mean.shape[4] == per_element[3]:
            mean = mean.flatten(3)
        if tuple(mean.shape) != per_element or tuple(std.shape) != per_channel:
            raise ValueError(
                f"feature statistics must be mean {per_element} (or {per_channel}) and std {per_channel}, "
                f"got {tuple(mean.shape)} and {tuple(std.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std < 0).any():
            raise ValueError("feature statistics must be finite with std >= 0")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(min_std))

    def _check_input(self, features: Tensor) -> None:
        cfg = self.config
        if features.ndim != 6:
            raise ValueError(f"features must be [B, V, T, C, h, w], got shape {tuple(features.shape)}")
        _, views, frames, channels, height, width = features.shape
        expected = (cfg.num_views, cfg.num_frames, cfg.in_channels, cfg.tokens_per_frame)
        if (views, frames, channels, height * width) != expected:
            raise ValueError(
                f"features shape {tuple(features.shape)} does not match config "
                f"(views={cfg.num_views}, frames={cfg.num_frames}, channels={cfg.in_channels}, "
                f"h*w={cfg.tokens_per_frame})"
            )

    def standardize(self, features: Tensor) -> Tensor:
        """``(features - feature_mean) / feature_std``, computed in float32, returned in the parameters' dtype.

        Float32 because the frame-dependent part of the features is a small variation on a large
        shared pattern (|mean| up to ~80 against an across-frame std of 0.01-0.16 for a trained
        tiny TVP): subtracting in bfloat16 (spacing 0.5 near 64) would erase it.
        """
        _, views, frames, channels, height, width = features.shape
        param_dtype = self.latent_queries.dtype
        mean = self.feature_mean.view(1, views, frames, channels, height, width).float()
        std = self.feature_std.view(1, 1, frames, channels, 1, 1).float()
        return ((features.float() - mean) / std).to(param_dtype)

    def forward(self, features: Tensor) -> Tensor:
        """features [B, V, T, C, h, w] -> tokens [B, T * Q, dim]."""
        self._check_input(features)
        batch, views, frames, channels, height, width = features.shape
        tokens_per_frame = height * width
        param_dtype = self.latent_queries.dtype
        # [B, V, T, C, h, w] -> [B, T, V, h*w, C]: tokens are grouped by frame, the unit of the
        # spatial attention, with all views of that frame side by side.
        features = self.standardize(features)
        tokens = features.flatten(4).permute(0, 2, 1, 4, 3)
        media = self.input_proj(tokens)
        media = (
            media
            + self.frame_pos.view(1, frames, 1, 1, -1)
            + self.view_pos.view(1, 1, views, 1, -1)
            + self.spatial_pos.view(1, 1, 1, tokens_per_frame, -1)
        )
        media = media.reshape(batch, frames, views * tokens_per_frame, self.config.dim)

        # repeat (a copy), not expand (a view): a view of a parameter made under no_grad carries
        # requires_grad without a grad_fn, which breaks module hooks such as FlopCounterMode's.
        queries = self.latent_queries.unsqueeze(0).repeat(batch, 1, 1, 1)
        for layer in self.layers:
            queries = layer(queries, media)
        return self.output_norm(queries.reshape(batch, frames * self.config.queries_per_frame, self.config.dim))
