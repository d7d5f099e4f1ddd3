"""VPPPolicy: config consistency, frozen TVP, stage-2 loss paths, and overfitting a few demos."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vpp_core.model.policy import VPPPolicy, VPPPolicyConfig
from vpp_core.model.presets import PRESET_NAMES, build_policy, preset_config

torch.set_num_threads(1)

INSTRUCTIONS = ["pick up the red block", "open the drawer", "push the button", "close the drawer"]


def micro_config(preset: str = "panda-tiny") -> VPPPolicyConfig:
    """The tiny preset shrunk further (64 px images, 4 predicted frames) so training steps are fast."""
    base = preset_config(preset)
    tvp = dataclasses.replace(base.tvp, image_size=64, num_frames=4)
    former = dataclasses.replace(base.video_former, num_frames=4, tokens_per_frame=tvp.feature_size**2)
    head = dataclasses.replace(base.action_head, num_vision_tokens=former.num_output_tokens)
    return VPPPolicyConfig(tvp=tvp, video_former=former, action_head=head, view_names=base.view_names)


def demo_actions(count: int, horizon: int, action_dim: int) -> torch.Tensor:
    """Distinct smooth normalised action chunks in [-0.8, 0.8], one per demonstration."""
    time = torch.linspace(0.0, 1.0, horizon)
    return torch.stack(
        [torch.stack([0.8 * torch.sin(3.0 * time + demo + dim) for dim in range(action_dim)], dim=-1) for demo in range(count)]
    )


@pytest.fixture(scope="module")
def micro_policy() -> VPPPolicy:
    torch.manual_seed(0)
    return VPPPolicy(micro_config())


def _images(policy: VPPPolicy, count: int, seed: int = 0) -> torch.Tensor:
    size = policy.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, len(policy.view_names), 3, size, size, generator=generator) * 2 - 1


def test_presets_build_consistent_configs():
    expectations = {"panda": (7, 0, 2560), "xhand": (18, 19, 1280)}
    for name in PRESET_NAMES:
        config = preset_config(name)
        action_dim, proprio_dim, channels = expectations[name.split("-")[0]]
        assert config.action_head.action_dim == action_dim
        assert config.action_head.horizon == 10
        assert config.action_head.proprio_dim == proprio_dim
        assert config.view_names == ("static", "wrist")
        if not name.endswith("-tiny"):
            assert config.tvp.unet["sample_size"] == 96
            assert config.tvp.image_size == 256 and config.tvp.num_frames == 16
            assert config.tvp.feature_channels == channels and config.tvp.feature_size == 16
            assert config.video_former.num_output_tokens == 224
        assert VPPPolicyConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


def test_inconsistent_config_names_every_mismatch():
    config = preset_config("panda-tiny")
    bad_head = dataclasses.replace(config.action_head, lang_dim=7, dim=32)
    with pytest.raises(ValueError) as error:
        VPPPolicyConfig(tvp=config.tvp, video_former=config.video_former, action_head=bad_head)
    assert "lang_dim" in str(error.value) and "action_head.dim" in str(error.value)
    with pytest.raises(ValueError, match="unique"):
        VPPPolicyConfig(config.tvp, config.video_former, config.action_head, view_names=("static", "static"))


def test_frozen_tvp_gets_no_gradients_and_stays_in_eval(micro_policy):
    policy = micro_policy
    policy.train()
    assert not policy.tvp.training and policy.video_former.training and policy.action_head.training
    trainable = {id(p) for p in policy.trainable_parameters()}
    assert trainable and not any(id(p) in trainable for p in policy.tvp.parameters())
    policy.zero_grad(set_to_none=True)
    batch = {
        "images": _images(policy, 2),
        "instructions": INSTRUCTIONS[:2],
        "actions": demo_actions(2, policy.horizon, policy.action_dim),
    }
    loss = policy.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in policy.tvp.parameters())
    assert policy.video_former.input_proj[0].weight.grad is not None
    assert policy.action_head.lang_proj[0].weight.grad is not None
    policy.zero_grad(set_to_none=True)
    policy.eval()


def test_precomputed_features_give_the_same_loss(micro_policy):
    policy = micro_policy.eval()
    images = _images(policy, 2, seed=1)
    actions = demo_actions(2, policy.horizon, policy.action_dim)
    with torch.no_grad():
        text = policy.encode_text(INSTRUCTIONS[:2])
        features = policy.predictive_features(images, text)
        from_images = policy.compute_loss(
            {"images": images, "text": text, "actions": actions}, generator=torch.Generator().manual_seed(3)
        )
        from_features = policy.compute_loss(
            {"features": features, "lang_emb": text.pooled, "actions": actions}, generator=torch.Generator().manual_seed(3)
        )
    torch.testing.assert_close(from_features, from_images)


def test_batch_without_observation_is_rejected(micro_policy):
    with pytest.raises(KeyError, match="images"):
        micro_policy.compute_loss({"actions": torch.zeros(1, micro_policy.horizon, micro_policy.action_dim)})


def test_proprio_policy_plans_and_requires_proprio():
    torch.manual_seed(0)
    policy = VPPPolicy(micro_config("xhand-tiny")).eval()
    images = _images(policy, 2, seed=2)
    text = policy.encode_text(INSTRUCTIONS[:2])
    proprio = torch.zeros(2, policy.proprio_dim)
    plan = policy.plan(images, text, proprio, generator=torch.Generator().manual_seed(0))
    assert plan.shape == (2, 10, 18) and torch.isfinite(plan).all()
    again = policy.plan(images, text, proprio, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plan, again)
    with pytest.raises(ValueError, match="proprio"):
        policy.plan(images, text, None)


def test_tiny_preset_plans_full_shape():
    policy = build_policy("panda-tiny").eval()
    images = _images(policy, 1, seed=3)
    plan = policy.plan(images, policy.encode_text(["push the button"]), generator=torch.Generator().manual_seed(0))
    assert plan.shape == (1, 10, 7) and torch.isfinite(plan).all()


def test_tiny_policy_overfits_a_few_demonstrations():
    """Stage-2 training (TVP frozen, its features precomputed) memorises 4 demonstrations.

    Success: the seeded evaluation loss falls by at least 10x, and every sampled chunk (the real
    sampler, from sigma 80) is closer to its own demo than to any other, with mean |error| < 0.1
    and max |error| < 0.5 in normalised units (the demos differ from each other by up to 1.6).

    What takes long to learn here is using the context at high noise levels (at low noise the
    noisy chunk alone identifies the demo). Until session 3 this passed only for init seed 1:
    the four instructions' CLIP embeddings were nearly identical (cosine ~0.98) and training
    sigmas centred on 0.5. With the language standardised as stage 2 does and the wider training
    sigma distribution, init seeds 0, 1, 2 and 3 all pass (checked once; the test runs seed 1).
    """
    torch.manual_seed(1)
    policy = VPPPolicy(micro_config())
    demos = len(INSTRUCTIONS)
    actions = demo_actions(demos, policy.horizon, policy.action_dim)
    with torch.no_grad():
        text = policy.encode_text(INSTRUCTIONS)
        features = policy.predictive_features(_images(policy, demos, seed=4), text)
    # As stage 2 does: standardise the language by the training instructions.
    policy.action_head.set_language_statistics(text.pooled)
    batch = {"features": features, "lang_emb": text.pooled, "actions": actions}

    # Evaluated on 8 fixed noise draws per demo, so the 10x criterion is not at the mercy of one draw.
    evaluation_batch = {key: value.repeat(8, *([1] * (value.ndim - 1))) for key, value in batch.items()}

    def evaluation_loss() -> float:
        policy.eval()
        with torch.no_grad():
            losses = [policy.compute_loss(evaluation_batch, torch.Generator().manual_seed(100 + k)).item() for k in range(4)]
        return sum(losses) / len(losses)

    initial = evaluation_loss()
    steps = 1200
    parameters = list(policy.trainable_parameters())
    optimizer = torch.optim.AdamW(parameters, lr=2e-3, weight_decay=0.0, foreach=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(1)
    policy.train()
    for _ in range(steps):
        loss = policy.compute_loss(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
    final = evaluation_loss()
    assert initial / final >= 10.0, f"loss only fell from {initial:.4f} to {final:.4f}"

    with torch.no_grad():
        context = policy.context_from_features(features, text.pooled)
        sampled = policy.action_head.sample(context, generator=torch.Generator().manual_seed(0))
    distances = (sampled[:, None] - actions[None]).abs().mean(dim=(2, 3))  # [sample, demo]
    assert torch.equal(distances.argmin(dim=1), torch.arange(demos)), distances
    errors = (sampled - actions).abs()
    assert errors.mean() < 0.1 and errors.max() < 0.5, (errors.mean(), errors.max())
