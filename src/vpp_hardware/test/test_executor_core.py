"""Pure-logic tests of the executor core: scheduler, safety filter, watchdog, configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vpp_core.action_space import pose_from_pos_rotvec, pose_distance, rotvec_to_matrix
from vpp_hardware.executor import (
    ChunkExecutorConfig,
    ChunkScheduler,
    SafetyFilter,
    SafetyLimits,
    SafetyVerdict,
    TimedChunk,
    Watchdog,
    WatchdogConfig,
)

REFERENCE = pose_from_pos_rotvec(np.array([0.5, 0.0, 0.4]), np.array([np.pi, 0.0, 0.0]))


def make_chunk(stamp: float, seq: int, horizon: int = 10, dt: float = 0.1, value: float = 0.0) -> TimedChunk:
    actions = np.zeros((horizon, 7))
    actions[:, 0] = value + np.arange(horizon)  # distinct per step, easy to read back
    return TimedChunk(stamp_s=stamp, dt_s=dt, actions=actions, reference_pose=REFERENCE, seq=seq)


# ---------------------------------------------------------------------------- scheduler

def test_steps_run_at_stamp_plus_index_times_dt_plus_offset():
    scheduler = ChunkScheduler(latency_offset_s=0.05, interpolate=False)
    chunk = make_chunk(stamp=10.0, seq=1)
    assert scheduler.submit(chunk, now=10.0).accepted
    assert scheduler.target_at(10.04) is None  # before step 0 is due
    assert scheduler.target_at(10.05).step.index == 0
    assert scheduler.target_at(10.349).step.index == 2
    assert scheduler.target_at(10.35).step.index == 3
    assert scheduler.target_at(11.049).step.index == 9
    assert scheduler.target_at(11.05) is None  # last slot over
    assert scheduler.exhausted


def test_interpolation_fraction_within_a_slot():
    scheduler = ChunkScheduler(interpolate=True)
    scheduler.submit(make_chunk(stamp=0.0, seq=1), now=0.0)
    target = scheduler.target_at(0.225)
    assert target.step.index == 2 and target.step.next_index == 3
    assert target.step.fraction == pytest.approx(0.25)
    last = scheduler.target_at(0.95)
    assert last.step.index == 9 and last.step.fraction == 0.0


def test_late_chunk_drops_past_steps_and_counts_them():
    scheduler = ChunkScheduler(interpolate=False)
    decision = scheduler.submit(make_chunk(stamp=0.0, seq=1), now=0.35)
    assert decision.accepted and decision.dropped_steps == 3 and decision.first_live_step == 3
    assert scheduler.counters.dropped_late_steps == 3
    assert scheduler.target_at(0.35).step.index == 3


def test_chunk_with_every_step_in_the_past_is_rejected():
    scheduler = ChunkScheduler()
    decision = scheduler.submit(make_chunk(stamp=0.0, seq=1, horizon=4), now=0.5)
    assert not decision.accepted and "late" in decision.reason
    assert scheduler.counters.rejected_late_chunks == 1
    assert scheduler.counters.dropped_late_steps == 4
    assert scheduler.target_at(0.5) is None


def test_newer_chunk_replaces_the_rest_of_the_older_one():
    scheduler = ChunkScheduler(interpolate=False)
    old, new = make_chunk(0.0, 1, value=0.0), make_chunk(0.3, 2, value=100.0)
    scheduler.submit(old, now=0.0)
    assert scheduler.target_at(0.25).step.chunk is old
    assert scheduler.submit(new, now=0.31).accepted
    target = scheduler.target_at(0.31)
    assert target.step.chunk is new and target.step.index == 0 and target.blend_from is None
    # old had steps 3..9 left when new took over at t=0.3
    assert scheduler.counters.superseded_steps == 7


def test_older_chunk_keeps_running_until_the_newer_one_is_due():
    scheduler = ChunkScheduler(latency_offset_s=0.2, interpolate=False)
    old, new = make_chunk(0.0, 1), make_chunk(0.1, 2)
    scheduler.submit(old, now=0.2)
    scheduler.submit(new, now=0.21)
    assert scheduler.target_at(0.25).step.chunk is old  # new's step 0 is due at 0.3
    assert scheduler.target_at(0.30).step.chunk is new


def test_out_of_order_and_duplicate_chunks_are_rejected():
    scheduler = ChunkScheduler()
    assert scheduler.submit(make_chunk(1.0, 5), now=1.0).accepted
    older = scheduler.submit(make_chunk(0.9, 6), now=1.0)
    duplicate = scheduler.submit(make_chunk(1.0, 5), now=1.0)
    same_stamp_newer_seq = scheduler.submit(make_chunk(1.0, 6), now=1.0)
    assert not older.accepted and "not newer" in older.reason
    assert not duplicate.accepted
    assert same_stamp_newer_seq.accepted
    assert scheduler.counters.rejected_out_of_order == 2


def test_blending_weights_rise_linearly_over_k_steps():
    scheduler = ChunkScheduler(blend_steps=3, interpolate=False)
    old, new = make_chunk(0.0, 1), make_chunk(0.2, 2)
    scheduler.submit(old, now=0.0)
    scheduler.target_at(0.1)
    scheduler.submit(new, now=0.2)
    weights, old_indices = [], []
    for now in (0.2, 0.3, 0.4, 0.5, 0.6):
        target = scheduler.target_at(now + 1e-6)
        assert target.step.chunk is new
        weights.append(target.new_weight)
        old_indices.append(None if target.blend_from is None else target.blend_from.index)
    assert weights == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert old_indices == [2, 3, 4, None, None]  # old plan at the same instants


def test_blending_from_an_exhausted_chunk_uses_its_final_step():
    scheduler = ChunkScheduler(blend_steps=2, interpolate=False)
    old = make_chunk(0.0, 1, horizon=3)
    scheduler.submit(old, now=0.0)
    scheduler.submit(make_chunk(1.0, 2), now=1.0)
    target = scheduler.target_at(1.0)
    assert target.blend_from.chunk is old and target.blend_from.index == 2


def test_skipped_steps_are_counted_when_ticks_are_slow():
    scheduler = ChunkScheduler(interpolate=False)
    scheduler.submit(make_chunk(0.0, 1), now=0.0)
    scheduler.target_at(0.0)
    scheduler.target_at(0.35)  # steps 1 and 2 never commanded
    assert scheduler.counters.skipped_steps == 2


def test_lookup_has_no_side_effects():
    scheduler = ChunkScheduler(blend_steps=2)
    scheduler.submit(make_chunk(0.0, 1), now=0.0)
    scheduler.lookup(5.0)
    assert not scheduler.exhausted
    assert scheduler.target_at(0.1) is not None


def test_chunk_arrays_are_private_copies():
    actions = np.zeros((2, 7))
    chunk = TimedChunk(0.0, 0.1, actions, REFERENCE, 1)
    actions[0, 0] = 99.0
    assert chunk.actions[0, 0] == 0.0
    with pytest.raises(ValueError):
        chunk.actions[0, 0] = 1.0


# ---------------------------------------------------------------------------- safety

LIMITS = SafetyLimits(
    workspace_min_m=(0.3, -0.3, 0.1),
    workspace_max_m=(0.7, 0.3, 0.6),
    max_step_translation_m=0.01,
    max_step_rotation_rad=0.05,
    max_translation_speed_mps=0.5,
    max_rotation_speed_radps=2.0,
)


def safety_filter(**overrides) -> SafetyFilter:
    limits = SafetyLimits(**{**LIMITS.__dict__, **overrides})
    return SafetyFilter(limits, effector_bounds=((0.0, 1.0),))


def shifted(pose: np.ndarray, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> np.ndarray:
    moved = pose.copy()
    moved[:3, 3] += (dx, dy, dz)
    return moved


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pose_effector_or_velocity_is_rejected(bad):
    check = safety_filter().check
    pose = REFERENCE.copy()
    pose[1, 3] = bad
    assert check(pose, np.array([1.0]), REFERENCE, 0.01).verdict is SafetyVerdict.REJECTED
    decision = check(REFERENCE, np.array([bad]), REFERENCE, 0.01)
    assert decision.verdict is SafetyVerdict.REJECTED and "not finite" in decision.reason
    velocity = np.zeros(6)
    velocity[4] = bad
    assert check(REFERENCE, np.array([1.0]), REFERENCE, 0.01, velocity).verdict is SafetyVerdict.REJECTED


def test_non_rigid_pose_is_rejected():
    pose = REFERENCE.copy()
    pose[:3, :3] *= 1.1
    decision = safety_filter().check(pose, np.array([1.0]), REFERENCE, 0.01)
    assert decision.verdict is SafetyVerdict.REJECTED and "orthonormal" in decision.reason


def test_target_outside_workspace_is_rejected_not_clamped():
    previous = shifted(REFERENCE, dz=0.19)  # z = 0.59, inside
    target = shifted(REFERENCE, dz=0.205)  # z = 0.605, 5 mm over the top, a small step
    decision = safety_filter().check(target, np.array([1.0]), previous, 0.01)
    assert decision.verdict is SafetyVerdict.REJECTED
    assert decision.pose is None
    assert "z=0.605" in decision.reason and "outside workspace" in decision.reason


def test_target_within_the_clamp_margin_is_projected_onto_the_workspace():
    check = safety_filter(workspace_clamp_margin_m=0.02).check
    previous = shifted(REFERENCE, dz=-0.295)  # z = 0.105, 5 mm above the floor
    target = shifted(REFERENCE, dx=0.003, dz=-0.305)  # z = 0.095, 5 mm under the floor
    velocity = np.array([0.1, 0.0, -0.1, 0.0, 0.0, 0.0])
    decision = check(target, np.array([1.0]), previous, 0.1, velocity)
    assert decision.verdict is SafetyVerdict.LIMITED
    assert "clamped onto the workspace" in decision.reason and "z 0.095 -> 0.100" in decision.reason
    assert decision.pose[:3, 3] == pytest.approx([0.503, 0.0, 0.1])
    assert np.array_equal(decision.pose[:3, :3], target[:3, :3])
    # Along the floor the plan's speed is kept; into it, it is not.
    assert decision.velocity[0] == pytest.approx(0.1) and decision.velocity[2] == 0.0
    assert target[2, 3] == pytest.approx(0.095)  # the caller's array is not modified


def test_target_beyond_the_clamp_margin_is_still_rejected():
    check = safety_filter(workspace_clamp_margin_m=0.02).check
    decision = check(shifted(REFERENCE, dz=-0.325), np.array([1.0]), shifted(REFERENCE, dz=-0.29), 0.1)
    assert decision.verdict is SafetyVerdict.REJECTED and decision.pose is None
    assert "z=0.075" in decision.reason and "20 mm clamp margin" in decision.reason
    # Without a margin (the default) 5 mm under the floor is already refused.
    decision = safety_filter().check(shifted(REFERENCE, dz=-0.305), np.array([1.0]), shifted(REFERENCE, dz=-0.29), 0.1)
    assert decision.verdict is SafetyVerdict.REJECTED


def test_large_translation_step_is_limited_along_its_direction():
    target = shifted(REFERENCE, dx=0.03, dy=0.04)  # 5 cm away
    decision = safety_filter().check(target, np.array([1.0]), REFERENCE, 1.0)
    assert decision.verdict is SafetyVerdict.LIMITED and "translation step" in decision.reason
    step = decision.pose[:3, 3] - REFERENCE[:3, 3]
    assert np.linalg.norm(step) == pytest.approx(0.01)
    assert np.allclose(step / np.linalg.norm(step), [0.6, 0.8, 0.0])


def test_speed_limit_bounds_the_step_for_short_ticks():
    target = shifted(REFERENCE, dx=0.008)
    decision = safety_filter().check(target, np.array([1.0]), REFERENCE, 0.01)  # 0.5 m/s * 10 ms = 5 mm
    assert decision.verdict is SafetyVerdict.LIMITED
    assert pose_distance(decision.pose, REFERENCE)[0] == pytest.approx(0.005)


def test_large_rotation_step_is_limited_about_the_same_axis():
    target = REFERENCE.copy()
    target[:3, :3] = rotvec_to_matrix(np.array([0.0, 0.0, 0.3])) @ REFERENCE[:3, :3]
    decision = safety_filter().check(target, np.array([1.0]), REFERENCE, 1.0)
    assert decision.verdict is SafetyVerdict.LIMITED and "rotation step" in decision.reason
    expected = rotvec_to_matrix(np.array([0.0, 0.0, 0.05])) @ REFERENCE[:3, :3]
    assert np.allclose(decision.pose[:3, :3], expected)
    assert np.allclose(decision.pose[:3, 3], REFERENCE[:3, 3])


def test_reject_policy_refuses_large_steps():
    decision = safety_filter(step_limit_policy="reject").check(
        shifted(REFERENCE, dx=0.05), np.array([1.0]), REFERENCE, 1.0)
    assert decision.verdict is SafetyVerdict.REJECTED


def test_small_step_passes_unchanged_and_effector_is_clamped():
    target = shifted(REFERENCE, dx=0.002)
    velocity = np.array([5.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    decision = safety_filter().check(target, np.array([1.3]), REFERENCE, 0.01, velocity)
    assert decision.allowed
    assert np.array_equal(decision.pose, target)
    assert decision.effector.tolist() == [1.0]
    assert decision.velocity[0] == pytest.approx(0.5)  # feed-forward capped at the speed limit


def test_limited_step_zeroes_the_feedforward():
    velocity = np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
    decision = safety_filter().check(shifted(REFERENCE, dx=0.05), np.array([0.0]), REFERENCE, 1.0, velocity)
    assert decision.verdict is SafetyVerdict.LIMITED
    assert np.all(decision.velocity == 0.0)


def test_wrong_effector_width_is_rejected():
    decision = safety_filter().check(REFERENCE, np.array([0.5, 0.5]), REFERENCE, 0.01)
    assert decision.verdict is SafetyVerdict.REJECTED and "effector" in decision.reason


def test_limits_validate_themselves():
    with pytest.raises(ValueError, match="empty workspace"):
        SafetyLimits(workspace_min_m=(0.5, 0.0, 0.0), workspace_max_m=(0.4, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        SafetyLimits(max_step_translation_m=math.nan)
    with pytest.raises(ValueError, match="step_limit_policy"):
        SafetyLimits(step_limit_policy="clip")
    for bad in (-0.01, 0.5, math.nan):
        with pytest.raises(ValueError, match="workspace_clamp_margin_m"):
            SafetyLimits(workspace_clamp_margin_m=bad)


# ---------------------------------------------------------------------------- watchdog

def test_command_timeout_expires_without_feeding():
    watchdog = Watchdog(WatchdogConfig(command_timeout_s=0.2))
    assert watchdog.command_expired(0.0)  # never fed: hold
    watchdog.reset(1.0)
    assert not watchdog.command_expired(1.19)
    assert watchdog.command_expired(1.2)
    watchdog.feed(1.3)
    assert not watchdog.command_expired(1.4)
    assert watchdog.time_since_command(1.4) == pytest.approx(0.1)


def test_stale_and_future_observations_are_flagged():
    watchdog = Watchdog(WatchdogConfig(max_observation_age_s=0.5))
    assert watchdog.observation_age_violation(9.8, 10.0) is None
    assert "old" in watchdog.observation_age_violation(9.4, 10.0)
    assert "future" in watchdog.observation_age_violation(11.0, 10.0)


def test_arm_state_stuck_is_detected_on_the_host_clock():
    watchdog = Watchdog(WatchdogConfig(state_timeout_s=0.1))
    watchdog.observe_state(5.000, monotonic_now=100.00)
    watchdog.observe_state(5.001, monotonic_now=100.05)
    assert not watchdog.state_stale(100.10)
    watchdog.observe_state(5.001, monotonic_now=100.12)  # arm time did not move
    assert watchdog.state_stale(100.15)


# ---------------------------------------------------------------------------- configuration

def test_config_from_yaml_dict_round_trip():
    data = {
        "action_space": "xhand",
        "rate_hz": 50,
        "blend_steps": 2,
        "safety": {
            "workspace_min_m": [0.1, -0.5, 0.0],
            "effector_bounds": [[0.0, 1.832]] + [[0.0, 1.919]] * 11,
        },
        "watchdog": {"command_timeout_s": 0.3},
    }
    config = ChunkExecutorConfig.from_dict(data)
    assert config.rate_hz == 50.0 and isinstance(config.rate_hz, float)
    assert config.safety.workspace_min_m == (0.1, -0.5, 0.0)
    assert config.safety.effector_bounds[0] == (0.0, 1.832)
    assert config.watchdog.command_timeout_s == 0.3
    assert ChunkExecutorConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rate": 10}, "unknown keys"),
        ({"safety": {"workspace_min": [0, 0, 0]}}, "unknown keys"),
        ({"action_space": "ur5"}, "unknown action space"),
        ({"clock": "ros"}, "clock"),
        ({"rate_hz": "fast"}, "number"),
        ({"safety": {"workspace_min_m": [0, 0]}}, "3 values"),
    ],
)
def test_config_rejects_bad_values(data, message):
    with pytest.raises((ValueError, KeyError), match=message):
        ChunkExecutorConfig.from_dict(data)
