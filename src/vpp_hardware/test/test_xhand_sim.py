"""The XArm + XHand executor in simulation: the real XArmAPI client drives the MuJoCo xArm6
through the loopback controller peer, the hand effector drives the simulated XHand.

One simulated world serves the module; each test runs the executor's control loop in a thread.
Waits poll the measured state with a generous deadline; assertions are on positions, never on
how long anything took.
"""

from __future__ import annotations

import logging
import re
import threading
import time

import numpy as np
import pytest

from vpp_core.action_space import XHAND_JOINT_NAMES, pose_distance, rotvec_to_matrix
from vpp_hardware.arms.xarm.xarm_arm import XArmArm, XArmConfig
from vpp_hardware.executor import ChunkExecutorConfig, ExecutorMode, SafetyLimits, TimedChunk, WatchdogConfig
from vpp_hardware.hands.hand import XHandJointLimits
from vpp_hardware.hands.mujoco_hand import MujocoXHand
from vpp_hardware.hands.xhand_executor import build_xhand_executor
from vpp_hardware.sim.configuration_sim import SimWorldConfig
from vpp_hardware.sim.xhand_world import XHandSimConfig, XHandSimWorld, default_xhand_cameras

WRIST_TOLERANCE_M = 0.003
WRIST_TOLERANCE_RAD = 0.02
HAND_TOLERANCE_RAD = 0.03
DEADLINE_S = 15.0  # only bounds a hung test; never asserted


@pytest.fixture(scope="module")
def world():
    cameras = default_xhand_cameras(width=64, height=64, fps=2.0)
    sim = XHandSimWorld(XHandSimConfig(world=SimWorldConfig(cameras=cameras)))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def arm(world):
    xarm = XArmArm(XArmConfig(host=world.host, forbid_uds=not world.uses_unix_sockets))
    xarm.connect()
    try:
        yield xarm
    finally:
        xarm.disconnect()


@pytest.fixture()
def stack(world, arm):
    hand = MujocoXHand(world)
    hand.connect()
    config = ChunkExecutorConfig(
        action_space="xhand", clock="monotonic", rate_hz=100.0,
        safety=SafetyLimits(workspace_min_m=(0.2, -0.4, 0.15), workspace_max_m=(0.7, 0.4, 0.7)),
        watchdog=WatchdogConfig(command_timeout_s=0.3, max_observation_age_s=1.0, state_timeout_s=0.5),
    )
    executor, effector = build_xhand_executor(config, arm, hand, XHandJointLimits())
    stop = threading.Event()
    ticks: list = []
    thread = threading.Thread(target=executor.run, args=(stop,), kwargs={"on_tick": ticks.append}, daemon=True)
    thread.start()
    try:
        yield executor, effector, hand, ticks
    finally:
        stop.set()
        thread.join(timeout=5)
        effector.close()
        executor.stop()
        if executor.mode is ExecutorMode.FAULT or arm.read_state().has_errors:
            arm.recover_errors()


def _chunk(executor, reference, wrist_delta, rotvec, hand_target, hand_start, horizon=10, dt=0.1, seq=1):
    weights = np.linspace(1.0 / horizon, 1.0, horizon)[:, None]
    actions = np.concatenate([weights * np.asarray(wrist_delta), weights * np.asarray(rotvec),
                              (1 - weights) * hand_start + weights * hand_target], axis=1)
    return TimedChunk(stamp_s=executor.now(), dt_s=dt, actions=actions, reference_pose=reference, seq=seq)


def _wait(predicate, deadline_s=DEADLINE_S, period=0.05):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def test_chunk_drives_wrist_and_all_hand_joints_to_targets(world, arm, stack):
    executor, effector, hand, _ = stack
    reference = arm.read_state().ee_pose
    hand_start = hand.read_positions()
    hand_target = np.array([0.9, 0.4, 0.6, 0.1, 1.0, 0.8, 1.1, 0.9, 1.2, 1.0, 1.3, 0.7])
    delta, rotvec = np.array([0.03, -0.02, -0.03]), np.array([0.0, 0.0, 0.15])
    result = executor.submit(_chunk(executor, reference, delta, rotvec, hand_target, hand_start))
    assert result.accepted, result.reason
    goal = np.eye(4)
    goal[:3, :3] = rotvec_to_matrix(rotvec) @ reference[:3, :3]
    goal[:3, 3] = reference[:3, 3] + delta

    def converged():
        translation, rotation = pose_distance(arm.read_state().ee_pose, goal)
        hand_error = np.abs(hand.read_positions() - hand_target).max()
        # All 10 steps executed too: with interpolation the wrist can come within tolerance while the
        # executor is still in the last slot but one.
        return (translation < WRIST_TOLERANCE_M and rotation < WRIST_TOLERANCE_RAD and hand_error < HAND_TOLERANCE_RAD
                and executor.counters.executed_steps >= 10)

    _wait(converged)
    translation, rotation = pose_distance(arm.read_state().ee_pose, goal)
    hand_errors = np.abs(hand.read_positions() - hand_target)
    print(f"wrist error {translation * 1e3:.2f} mm / {np.degrees(rotation):.2f} deg; hand joint errors [rad]: "
          + ", ".join(f"{n} {e:.4f}" for n, e in zip(XHAND_JOINT_NAMES, hand_errors)))
    assert translation < WRIST_TOLERANCE_M
    assert rotation < WRIST_TOLERANCE_RAD
    assert hand_errors.max() < HAND_TOLERANCE_RAD, dict(zip(XHAND_JOINT_NAMES, hand_errors))
    assert executor.counters.executed_steps >= 10


def test_out_of_limit_hand_targets_are_clamped_and_logged(world, arm, stack, caplog):
    executor, effector, hand, ticks = stack
    limits = XHandJointLimits()
    reference = arm.read_state().ee_pose
    hand_start = hand.read_positions()
    target = np.clip(hand_start, *limits.arrays())
    target[XHAND_JOINT_NAMES.index("index_joint1")] = 2.6       # limit 1.919
    target[XHAND_JOINT_NAMES.index("thumb_rota1")] = -1.2       # limit -0.698
    caplog.set_level(logging.WARNING)
    assert executor.submit(_chunk(executor, reference, np.zeros(3), np.zeros(3), target, hand_start)).accepted
    expected = np.clip(target, *limits.arrays())
    assert _wait(lambda: effector.last_command is not None and np.allclose(effector.last_command, expected))
    reasons = " ".join(t.reason for t in list(ticks))
    # Steps are interpolated at the control rate, so the clamped values vary; the joints are named.
    assert re.search(r"index_joint1 \d\.\d+ -> 1\.919", reasons), reasons[-300:]
    assert re.search(r"thumb_rota1 -\d\.\d+ -> -0\.698", reasons), reasons[-300:]
    _wait(lambda: np.abs(hand.read_positions() - expected).max() < HAND_TOLERANCE_RAD)
    assert np.abs(hand.read_positions() - expected).max() < HAND_TOLERANCE_RAD
    # Beyond the limits the simulated joint never went.
    assert hand.read_positions()[XHAND_JOINT_NAMES.index("index_joint1")] <= 1.919 + 0.02


def test_hand_effector_clamps_and_names_the_joint(world, caplog):
    """The effector's own clamp (defence behind the safety filter) logs the joint, rate-limited."""
    from vpp_hardware.hands.effector import HandEffector

    hand = MujocoXHand(world)
    hand.connect()
    effector = HandEffector(hand, XHandJointLimits(), log_period_s=60.0)
    try:
        caplog.set_level(logging.WARNING, logger="vpp_hardware.hands.effector")
        command = np.zeros(12)
        command[XHAND_JOINT_NAMES.index("pinky_joint2")] = 3.0
        for _ in range(5):
            effector.apply(command)
        lines = [r.getMessage() for r in caplog.records if "clamped" in r.getMessage()]
        assert len(lines) == 1 and "pinky_joint2=3.000 rad -> 1.919" in lines[0]
        assert effector.clamped_commands == 5
        assert effector.last_command[XHAND_JOINT_NAMES.index("pinky_joint2")] == pytest.approx(1.919)
    finally:
        effector.close()


def test_watchdog_holds_after_the_chunk_runs_out(world, arm, stack):
    executor, effector, hand, _ = stack
    reference = arm.read_state().ee_pose
    hand_start = hand.read_positions()
    chunk = _chunk(executor, reference, np.array([0.0, 0.02, 0.0]), np.zeros(3), hand_start, hand_start, horizon=3)
    assert executor.submit(chunk).accepted
    assert _wait(lambda: executor.mode is ExecutorMode.HOLDING and executor.counters.executed_steps >= 3)
    held = arm.read_state().ee_pose
    servo_before = len(world.peer.servo_log)
    time.sleep(0.5)
    translation, rotation = pose_distance(arm.read_state().ee_pose, held)
    assert executor.mode is ExecutorMode.HOLDING
    assert translation < 0.001 and rotation < 0.005
    # Holding streams the held target (servo mode needs a steady stream), it does not go silent.
    assert len(world.peer.servo_log) > servo_before


@pytest.mark.parametrize("bad", ["wrong_dim", "nan_wrist", "nan_hand"])
def test_bad_chunks_are_rejected_without_motion(world, arm, stack, bad):
    executor, effector, hand, _ = stack
    assert _wait(lambda: executor.mode in (ExecutorMode.HOLDING, ExecutorMode.STOPPED) or executor.counters.ticks > 5)
    before_pose = arm.read_state().ee_pose
    before_hand = hand.read_positions()
    last_hand_command = effector.last_command
    actions = np.zeros((10, 18))
    actions[:, 0] = 0.05
    actions[:, 6:] = 1.0
    if bad == "wrong_dim":
        actions = actions[:, :7]
    elif bad == "nan_wrist":
        actions[4, 1] = np.nan
    else:
        actions[7, 10] = np.nan
    chunk = TimedChunk(stamp_s=executor.now(), dt_s=0.1, actions=actions, reference_pose=before_pose, seq=99)
    result = executor.submit(chunk)
    assert not result.accepted
    assert ("shape" in result.reason) if bad == "wrong_dim" else ("non-finite" in result.reason)
    time.sleep(0.5)
    translation, rotation = pose_distance(arm.read_state().ee_pose, before_pose)
    assert translation < 0.001 and rotation < 0.005
    assert np.abs(hand.read_positions() - before_hand).max() < 0.01
    if last_hand_command is None:
        assert effector.last_command is None
    else:
        assert np.array_equal(effector.last_command, last_hand_command)
