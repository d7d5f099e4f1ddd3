"""Video Former: shapes, config round trip, token layout and attention structure (tiny sizes)."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vpp_core.model.video_former import VideoFormer, VideoFormerConfig

torch.set_num_threads(1)


def tiny_config(**overrides) -> VideoFormerConfig:
    values = dict(
        in_channels=12,
        num_views=2,
        num_frames=3,
        tokens_per_frame=4 * 4,
        dim=32,
        proj_hidden=48,
        queries_per_frame=5,
        depth=2,
        heads=2,
        head_dim=16,
    )
    values.update(overrides)
    return VideoFormerConfig(**values)


def features_for(cfg: VideoFormerConfig, batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.num_views, cfg.num_frames, cfg.in_channels, height, width, generator=gen)


@pytest.mark.parametrize(
    "batch, views, frames, height, width, channels",
    [(1, 1, 1, 2, 2, 8), (2, 2, 4, 4, 4, 12), (3, 3, 2, 2, 5, 6), (2, 2, 16, 4, 4, 16)],
)
def test_output_shape(batch, views, frames, height, width, channels):
    cfg = tiny_config(in_channels=channels, num_views=views, num_frames=frames, tokens_per_frame=height * width)
    model = VideoFormer(cfg)
    out = model(features_for(cfg, batch, height, width))
    assert out.shape == (batch, frames * cfg.queries_per_frame, cfg.dim)
    assert cfg.num_output_tokens == frames * cfg.queries_per_frame
    assert torch.isfinite(out).all()


def test_full_size_defaults_match_the_paper():
    cfg = VideoFormerConfig(in_channels=1280, num_views=2)
    assert (cfg.num_frames, cfg.tokens_per_frame, cfg.dim, cfg.proj_hidden) == (16, 256, 384, 768)
    assert (cfg.queries_per_frame, cfg.depth, cfg.heads, cfg.head_dim, cfg.ffn_mult) == (14, 6, 8, 64, 4)
    assert cfg.num_output_tokens == 224


def test_config_round_trip_and_validation():
    cfg = tiny_config(dropout=0.1)
    restored = VideoFormerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    with pytest.raises(ValueError, match="unknown"):
        VideoFormerConfig.from_dict({**cfg.to_dict(), "extra": 1})
    with pytest.raises(ValueError):
        tiny_config(depth=0)
    with pytest.raises(ValueError):
        tiny_config(dropout=1.0)


def test_rejects_mismatched_input():
    cfg = tiny_config()
    model = VideoFormer(cfg)
    with pytest.raises(ValueError):
        model(torch.zeros(1, cfg.num_views, cfg.num_frames, cfg.in_channels, 16))  # 5-D
    with pytest.raises(ValueError):
        model(torch.zeros(1, cfg.num_views + 1, cfg.num_frames, cfg.in_channels, 4, 4))
    with pytest.raises(ValueError):
        model(torch.zeros(1, cfg.num_views, cfg.num_frames, cfg.in_channels, 3, 4))


def test_batch_elements_do_not_mix():
    cfg = tiny_config()
    model = VideoFormer(cfg).eval()
    features = features_for(cfg, 3, 4, 4)
    changed = features.clone()
    changed[1] += torch.randn_like(changed[1])
    out, out_changed = model(features), model(changed)
    torch.testing.assert_close(out[0], out_changed[0])
    torch.testing.assert_close(out[2], out_changed[2])
    assert not torch.allclose(out[1], out_changed[1])


def test_spatial_attention_is_per_frame_and_tokens_are_frame_major():
    # With the temporal attention's output projection zeroed, nothing moves information between
    # frames, so perturbing frame 1 must change exactly output tokens [Q, 2Q) — the frame-major
    # layout the action head relies on.
    cfg = tiny_config(num_frames=3, depth=2)
    model = VideoFormer(cfg).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.temporal_attn.to_out.weight.zero_()
            layer.temporal_attn.to_out.bias.zero_()
    features = features_for(cfg, 1, 4, 4)
    changed = features.clone()
    changed[:, 1, 1] += 1.0  # view 1, frame 1: a non-first view must reach its frame's queries
    delta = (model(changed) - model(features)).abs().amax(dim=-1)[0]
    q = cfg.queries_per_frame
    assert (delta[q : 2 * q] > 1e-4).all()
    assert delta[:q].max() == 0 and delta[2 * q :].max() == 0


def test_temporal_attention_mixes_frames():
    cfg = tiny_config(num_frames=3, depth=1)
    model = VideoFormer(cfg).eval()
    features = features_for(cfg, 1, 4, 4)
    changed = features.clone()
    changed[:, :, 2] += 1.0
    delta = (model(changed) - model(features)).abs().amax(dim=-1)[0]
    assert (delta[: cfg.queries_per_frame] > 1e-5).all()


def test_spatial_position_embedding_makes_token_order_matter():
    cfg = tiny_config()
    model = VideoFormer(cfg).eval()
    features = features_for(cfg, 1, 4, 4)
    transposed = features.transpose(-1, -2).contiguous()
    assert not torch.allclose(model(features), model(transposed))


def test_every_parameter_gets_a_gradient():
    cfg = tiny_config()
    model = VideoFormer(cfg)
    model(features_for(cfg, 2, 4, 4)).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_flop_counter_works_under_no_grad():
    cfg = tiny_config()
    model = VideoFormer(cfg)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(features_for(cfg, 1, 4, 4))
    assert counter.get_total_flops() > 0
