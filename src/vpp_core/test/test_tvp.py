"""TVP: offline tokenizer, text conditioning, one-step features (early exit == full forward), loading."""

from __future__ import annotations

import json

import pytest
import torch

from vpp_core.model.presets import preset_config
from vpp_core.model.tvp import (
    TextConditionWidener,
    TextGuidedVideoPredictor,
    TVPConfig,
    build_offline_clip_tokenizer,
    sincos_position_encoding,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return build_offline_clip_tokenizer()


@pytest.fixture(scope="module")
def tvp(tokenizer):
    torch.manual_seed(0)
    return TextGuidedVideoPredictor(preset_config("panda-tiny").tvp, tokenizer=tokenizer).eval()


def _images(batch: int, views: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, views, 3, size, size, generator=generator) * 2 - 1


def test_offline_tokenizer_reproduces_clip_token_ids(tokenizer):
    # Known CLIP (openai/clip-vit-base-patch32) ids: <start> a photo of a cat <end>.
    assert tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408
    # Upper case and extra whitespace are normalised away, as in CLIP.
    assert tokenizer("A  Photo of a CAT")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_tokenize_pads_and_truncates_to_twenty_tokens(tvp):
    long_text = " ".join(["block"] * 40)
    tokens = tvp.tokenize(["open the drawer", long_text])
    ids = tokens["input_ids"]
    assert ids.shape == (2, 20)
    assert ids[0, 0] == 49406 and ids[0, 4] == 49407 and (ids[0, 4:] == 49407).all()
    assert tokens["attention_mask"][0].tolist() == [1] * 5 + [0] * 15
    assert ids[1, -1] == 49407 and (tokens["attention_mask"][1] == 1).all()


def test_tokenize_rejects_single_string(tvp):
    with pytest.raises(TypeError, match="sequence of strings"):
        tvp.tokenize("open the drawer")


def test_widener_matches_reference_concatenation_and_handles_any_width():
    states = torch.randn(2, 20, 512)
    assert torch.equal(TextConditionWidener(512, 1024)(states), torch.cat([states, states], dim=-1))
    assert TextConditionWidener(512, 512)(states) is states
    widened = TextConditionWidener(512, 1280)(states)
    assert widened.shape == (2, 20, 1280)
    assert torch.equal(widened[..., 1024:], states[..., :256])
    with pytest.raises(ValueError, match="width 512"):
        TextConditionWidener(512, 1024)(torch.randn(2, 20, 256))


def test_encode_text_adds_position_code_and_widens(tvp):
    text = tvp.encode_text(["pick up the red block", "open the drawer"])
    cfg = tvp.config
    assert text.hidden_states.shape == (2, 20, cfg.cross_attention_dim)
    assert text.pooled.shape == (2, cfg.text_embed_dim)
    tokens = tvp.tokenize(["pick up the red block", "open the drawer"])
    raw = tvp.text_encoder(**tokens).last_hidden_state
    expected = raw + sincos_position_encoding(20, cfg.text_hidden_dim)
    torch.testing.assert_close(text.hidden_states[..., : cfg.text_hidden_dim], expected)
    torch.testing.assert_close(text.hidden_states[..., cfg.text_hidden_dim :], expected)


def test_feature_shapes_match_config(tvp):
    cfg = tvp.config
    with torch.no_grad():
        text = tvp.encode_text(["push the button"])
        features = tvp.features(_images(1, 2, cfg.image_size), text.hidden_states)
    assert features.shape == (1, 2, cfg.num_frames, cfg.feature_channels, cfg.feature_size, cfg.feature_size)
    assert torch.isfinite(features).all()


def test_early_exit_features_equal_full_forward_hooked_up_blocks(tvp):
    cfg = tvp.config
    images = _images(1, 2, cfg.image_size, seed=1)
    captured: dict[int, torch.Tensor] = {}
    handles = [
        block.register_forward_hook(lambda _m, _i, output, index=index: captured.__setitem__(index, output))
        for index, block in enumerate(tvp.unet.up_blocks)
    ]
    try:
        with torch.no_grad():
            text = tvp.encode_text(["stack the blocks"])
            inputs = tvp.prepare_feature_inputs(images, text.hidden_states)
            full = tvp.unet(inputs.sample, inputs.timestep, inputs.encoder_hidden_states, inputs.added_time_ids)
            features = tvp.features(images, text.hidden_states)
            truncated = tvp.run_up_blocks(inputs, last_block=cfg.feature_blocks[-1])
    finally:
        for handle in handles:
            handle.remove()
    assert full.sample.shape == (2, cfg.num_frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    assert len(truncated) == cfg.feature_blocks[-1] + 1
    for index, output in enumerate(truncated):
        torch.testing.assert_close(output, captured[index], rtol=0, atol=1e-5)
    # Reference aggregation: up_blocks[0] upsampled (nearest) to up_blocks[1]'s size, then concat.
    block0, block1 = captured[0], captured[1]
    upsampled = torch.nn.functional.interpolate(block0, scale_factor=block1.shape[-1] // block0.shape[-1])
    expected = torch.cat([upsampled, block1], dim=1).reshape(features.shape)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)


def test_features_are_deterministic_and_independent_of_batching(tvp):
    cfg = tvp.config
    images = _images(2, 2, cfg.image_size, seed=2)
    with torch.no_grad():
        text = tvp.encode_text(["open the drawer", "close the drawer"])
        both = tvp.features(images, text.hidden_states)
        again = tvp.features(images, text.hidden_states)
        second_alone = tvp.features(images[1:], text.hidden_states[1:])
        wrist_alone = tvp.features(images[:, 1:], text.hidden_states)
    assert torch.equal(both, again)
    torch.testing.assert_close(second_alone[0], both[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(wrist_alone[:, 0], both[:, 1], rtol=0, atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_seeded_feature_noise_is_reproducible(tvp):
    cfg = tvp.config
    images = _images(1, 2, cfg.image_size, seed=3)
    with torch.no_grad():
        text = tvp.encode_text(["wipe the table"])
        first = tvp.features(images, text.hidden_states, generator=torch.Generator().manual_seed(7))
        second = tvp.features(images, text.hidden_states, generator=torch.Generator().manual_seed(7))
        other = tvp.features(images, text.hidden_states, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_features_reject_wrong_image_shape(tvp):
    text = tvp.encode_text(["wipe the table"])
    with pytest.raises(ValueError, match=r"images must be \[B, V, 3, 128, 128\]"):
        tvp.features(torch.zeros(1, 2, 3, 64, 64), text.hidden_states)
    with pytest.raises(ValueError, match="images must be"):
        tvp.features(torch.zeros(1, 2, 4, 128, 128), text.hidden_states)


def test_predict_video_is_seeded_and_in_range(tvp):
    cfg = tvp.config
    images = _images(1, 1, cfg.image_size, seed=4)
    text = tvp.encode_text(["pour the water"])
    first = tvp.predict_video(images, text.hidden_states, steps=2, generator=torch.Generator().manual_seed(0))
    second = tvp.predict_video(images, text.hidden_states, steps=2, generator=torch.Generator().manual_seed(0))
    assert first.shape == (1, 1, cfg.num_frames, 3, cfg.image_size, cfg.image_size)
    assert torch.equal(first, second)
    assert first.min() >= -1 and first.max() <= 1


def test_denoiser_uses_svd_v_prediction_preconditioning(tvp):
    cfg = tvp.config
    shape = (1, cfg.num_frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    noisy = torch.randn(shape, generator=torch.Generator().manual_seed(5)) * 3.0
    condition = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    text = tvp.encode_text(["turn the knob"]).hidden_states
    sigma = torch.tensor([3.0])
    with torch.no_grad():
        denoised = tvp.denoise(noisy, sigma, condition, text)
        sample = torch.cat([noisy / (10.0**0.5), condition[:, None].expand(shape)], dim=2)
        raw = tvp.unet(sample, torch.log(sigma) / 4, text, tvp.added_time_ids(1)).sample
    torch.testing.assert_close(denoised, noisy / 10.0 - 3.0 / 10.0**0.5 * raw, rtol=1e-4, atol=1e-5)


def test_config_round_trips_through_json(tvp):
    data = json.loads(json.dumps(tvp.config.to_dict()))
    assert TVPConfig.from_dict(data).to_dict() == tvp.config.to_dict()
    with pytest.raises(ValueError, match="unknown TVPConfig keys"):
        TVPConfig.from_dict({**data, "bogus": 1})
    with pytest.raises(ValueError, match="feature_blocks"):
        TVPConfig.from_dict({**data, "feature_blocks": [1, 0]})


def test_from_pretrained_loads_diffusers_and_transformers_directories(tvp, tmp_path):
    pipeline_dir = tmp_path / "svd-robot"
    tvp.unet.save_pretrained(pipeline_dir / "unet")
    tvp.vae.save_pretrained(pipeline_dir / "vae")
    tvp.text_encoder.save_pretrained(tmp_path / "clip")
    tvp.tokenizer.save_pretrained(tmp_path / "clip")
    cfg = tvp.config
    loaded = TextGuidedVideoPredictor.from_pretrained(
        pipeline_dir, tmp_path / "clip", image_size=cfg.image_size, feature_blocks=cfg.feature_blocks
    ).eval()
    assert loaded.config.to_dict() == cfg.to_dict()
    images = _images(1, 2, cfg.image_size, seed=6)
    with torch.no_grad():
        expected = tvp.features(images, tvp.encode_text(["lift the lid"]).hidden_states)
        got = loaded.features(images, loaded.encode_text(["lift the lid"]).hidden_states)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # A bare UNet directory needs the VAE directory named explicitly.
    with pytest.raises(ValueError, match="vae_dir"):
        TextGuidedVideoPredictor.from_pretrained(pipeline_dir / "unet", tmp_path / "clip")
