"""PolicyEngine: denormalised plans, determinism, caching, timings and clear input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vpp_core.model.engine import PolicyEngine
from vpp_core.model.normalization import PercentileNormalizer
from vpp_core.model.presets import build_policy

torch.set_num_threads(1)


def _normalizers(action_dim: int, proprio_dim: int = 0) -> dict[str, PercentileNormalizer]:
    rng = np.random.default_rng(1)
    result = {"actions": PercentileNormalizer.fit(rng.uniform(-0.02, 0.03, size=(500, action_dim)))}
    if proprio_dim:
        result["proprio"] = PercentileNormalizer.fit(rng.uniform(-2.0, 2.0, size=(500, proprio_dim)))
    return result


def _observation(size: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {view: rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for view in ("static", "wrist")}


@pytest.fixture(scope="module")
def panda_engine() -> PolicyEngine:
    policy = build_policy("panda-tiny", seed=0)
    return PolicyEngine(policy, _normalizers(policy.action_dim), seed=0, profile=True)


@pytest.fixture(scope="module")
def xhand_engine() -> PolicyEngine:
    policy = build_policy("xhand-tiny", seed=0)
    return PolicyEngine(policy, _normalizers(policy.action_dim, policy.proprio_dim), seed=0)


def test_plan_returns_denormalised_chunk(panda_engine):
    actions = panda_engine.plan(_observation(), "pick up the red block")
    assert actions.shape == (10, 7) and actions.dtype == np.float64
    low, high = panda_engine.normalizers["actions"].low, panda_engine.normalizers["actions"].high
    assert np.all(actions >= low - 1e-12) and np.all(actions <= high + 1e-12)


def test_seeded_engines_repeat_the_same_plan_sequence():
    plans = []
    for _ in range(2):
        policy = build_policy("panda-tiny", seed=0)
        engine = PolicyEngine(policy, _normalizers(policy.action_dim), seed=11)
        plans.append([engine.plan(_observation(seed=k), "open the drawer") for k in range(2)])
    np.testing.assert_array_equal(plans[0][0], plans[1][0])
    np.testing.assert_array_equal(plans[0][1], plans[1][1])
    assert not np.array_equal(plans[0][0], plans[0][1])
    engine.reseed(11)
    np.testing.assert_array_equal(engine.plan(_observation(seed=0), "open the drawer"), plans[0][0])


def test_instruction_encoding_is_cached(panda_engine):
    panda_engine.plan(_observation(), "stack the cups")
    assert not panda_engine.last_text_cache_hit
    panda_engine.plan(_observation(), "  stack   the cups ")
    assert panda_engine.last_text_cache_hit


def test_profile_reports_every_stage(panda_engine):
    panda_engine.plan(_observation(), "push the button")
    timings = panda_engine.last_timings
    for stage in ("preprocess", "vae_encode", "unet", "video_former", "head_encode", "action_sampling", "total"):
        assert timings[stage] > 0, stage
    steps = [key for key in timings if key.startswith("dit_step_")]
    assert len(steps) == panda_engine.policy.config.action_head.sampling_steps


def test_float_tensor_images_match_uint8_images(panda_engine):
    observation = _observation(seed=3)
    as_tensors = {
        view: torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0 for view, image in observation.items()
    }
    panda_engine.reseed(4)
    expected = panda_engine.plan(observation, "turn the knob")
    panda_engine.reseed(4)
    np.testing.assert_allclose(panda_engine.plan(as_tensors, "turn the knob"), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda obs: obs.pop("wrist"), r"missing \['wrist'\]"),
        (lambda obs: obs.update(left=obs["static"]), r"unexpected \['left'\]"),
        (lambda obs: obs.update(static=np.zeros((96, 128, 3), np.uint8)), "is 96 x 128, the model expects 128 x 128"),
        (lambda obs: obs.update(static=np.zeros((128, 128, 4), np.uint8)), "H x W x 3.*RGBA"),
        (lambda obs: obs.update(static=np.zeros((128, 128), np.uint8)), "H x W x 3"),
        (lambda obs: obs.update(static=np.zeros((3, 128, 128), np.uint8)), "H x W x 3"),
        (lambda obs: obs.update(static=torch.zeros(128, 128, 3)), "3 x H x W"),
        (lambda obs: obs.update(static=torch.full((3, 128, 128), 255.0)), r"in \[-1, 1\]"),
        (lambda obs: obs.update(static=torch.full((3, 128, 128), float("nan"))), "NaN or Inf"),
        (lambda obs: obs.update(static=np.zeros((128, 128, 3), np.int32)), "dtype must be uint8"),
    ],
)
def test_bad_images_are_rejected(panda_engine, change, message):
    observation = _observation()
    change(observation)
    with pytest.raises((ValueError, TypeError), match=message):
        panda_engine.plan(observation, "pick up the red block")


@pytest.mark.parametrize("instruction", ["", "   \n\t"])
def test_empty_instruction_is_rejected(panda_engine, instruction):
    with pytest.raises(ValueError, match="instruction is empty"):
        panda_engine.plan(_observation(), instruction)


def test_non_string_instruction_is_rejected(panda_engine):
    with pytest.raises(TypeError, match="instruction must be a str"):
        panda_engine.plan(_observation(), ["pick"])


def test_proprio_is_validated(xhand_engine, panda_engine):
    observation = _observation()
    good = np.zeros(19)
    assert xhand_engine.plan(observation, "grasp the bottle", good).shape == (10, 18)
    bad = good.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf at indices \[4\]"):
        xhand_engine.plan(observation, "grasp the bottle", bad)
    with pytest.raises(ValueError, match=r"NaN or Inf at indices \[0\]"):
        xhand_engine.plan(observation, "grasp the bottle", np.r_[np.inf, good[1:]])
    with pytest.raises(ValueError, match=r"shape \(19,\)"):
        xhand_engine.plan(observation, "grasp the bottle", np.zeros(18))
    with pytest.raises(ValueError, match="needs a 19-d proprio"):
        xhand_engine.plan(observation, "grasp the bottle", None)
    with pytest.raises(ValueError, match="takes no proprio"):
        panda_engine.plan(observation, "grasp the bottle", good)


def test_resize_is_opt_in():
    policy = build_policy("panda-tiny", seed=0)
    engine = PolicyEngine(policy, _normalizers(policy.action_dim), resize_images=True)
    actions = engine.plan(_observation(size=160), "open the drawer")
    assert actions.shape == (10, 7) and np.isfinite(actions).all()


def test_bf16_on_cpu_runs_and_invalid_options_are_refused():
    policy = build_policy("panda-tiny", seed=0)
    normalizers = _normalizers(policy.action_dim)
    engine = PolicyEngine(policy, normalizers, dtype="bf16")
    assert engine.policy.tvp.unet.conv_in.weight.dtype == torch.bfloat16
    assert engine.policy.action_head.action_in.weight.dtype == torch.float32
    actions = engine.plan(_observation(), "open the drawer")
    assert actions.shape == (10, 7) and np.isfinite(actions).all()
    with pytest.raises(ValueError, match="fp16 is supported on CUDA only"):
        PolicyEngine(policy, normalizers, dtype="fp16")
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        PolicyEngine(policy, normalizers, cuda_graphs=True)
    with pytest.raises(ValueError, match="dtype must be one of"):
        PolicyEngine(policy, normalizers, dtype="int8")
    with pytest.raises(ValueError, match="'actions' with 7 dims"):
        PolicyEngine(policy, {"actions": _normalizers(6)["actions"]})


def test_samples_per_plan_averages_draws_and_narrows_their_spread():
    policy = build_policy("panda-tiny", seed=0)
    normalizers = _normalizers(policy.action_dim)
    observation = _observation(seed=3)
    spreads = {}
    for count in (1, 8):
        engine = PolicyEngine(policy, normalizers, seed=5, samples_per_plan=count)
        plans = np.stack([engine.plan(observation, "open the drawer") for _ in range(6)])
        assert plans.shape == (6, 10, 7) and np.isfinite(plans).all()
        spreads[count] = float(plans.std(axis=0).mean())
    # The mean of 8 independent draws spreads ~1/sqrt(8) as far as one draw does.
    assert spreads[8] < 0.6 * spreads[1], spreads
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="samples_per_plan"):
            PolicyEngine(policy, normalizers, samples_per_plan=bad)
