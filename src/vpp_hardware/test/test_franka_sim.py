"""The chunk executor driving the real franky driver against a franky-sim server (libfranka protocol).

One in-process franky-sim server (``realtime=False``) serves the whole module; every test builds
its own executor on the shared connection. All waits are in robot time (the executor clock).
"""

from __future__ import annotations

import pathlib
import threading
import time

import numpy as np
import pytest
import yaml

pytest.importorskip("franky")
pytest.importorskip("franky_sim")

from vpp_core.action_space import pose_distance, rotvec_to_matrix  # noqa: E402
from vpp_hardware.arms.franka.franky_arm import (  # noqa: E402
    FrankyArm,
    FrankyArmConfig,
    FrankyGripper,
    FrankyGripperConfig,
)
from vpp_hardware.arms.franka.sim_server import FrankySimServer  # noqa: E402
from vpp_hardware.executor import (  # noqa: E402
    BinaryGripperEffector,
    ChunkExecutor,
    ChunkExecutorConfig,
    ExecutorMode,
    TimedChunk,
)

RATE_HZ = 100.0
PANDA_YAML = pathlib.Path(__file__).resolve().parents[3] / "config" / "panda.yaml"


@pytest.fixture(scope="module")
def sim_server():
    server = FrankySimServer(mode="inprocess", realtime=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.is_running


@pytest.fixture(scope="module")
def arm(sim_server):
    franka = FrankyArm(FrankyArmConfig.franky_sim(sim_server.hostname))
    franka.connect()
    try:
        yield franka
    finally:
        franka.disconnect()


@pytest.fixture(scope="module")
def gripper(sim_server):
    hand = FrankyGripper(FrankyGripperConfig(host=sim_server.hostname))
    hand.connect()
    try:
        yield hand
    finally:
        hand.disconnect()


def make_executor(arm, effector=None, **overrides) -> ChunkExecutor:
    config = ChunkExecutorConfig.from_dict({"rate_hz": RATE_HZ, **overrides})
    executor = ChunkExecutor(config, arm, effector)
    executor.start()
    return executor


def tick_for(executor: ChunkExecutor, robot_seconds: float) -> None:
    """Drive the executor from this thread for ``robot_seconds`` of robot time."""
    end = executor.now() + robot_seconds
    while executor.tick().time_s < end:
        time.sleep(1.0 / RATE_HZ)


def tick_until(executor: ChunkExecutor, done, timeout_robot_s: float) -> bool:
    """Keep the control loop going (as a running node would) until ``done()`` or the timeout."""
    end = executor.now() + timeout_robot_s
    while not done():
        if executor.tick().time_s > end:
            return False
        time.sleep(1.0 / RATE_HZ)
    return True


def target_after(reference: np.ndarray, action: np.ndarray) -> np.ndarray:
    target = reference.copy()
    target[:3, 3] += action[:3]
    target[:3, :3] = rotvec_to_matrix(action[3:6]) @ reference[:3, :3]
    return target


def straight_chunk(executor, arm, translation, rotation_z=0.0, horizon=10, dt=0.1, gripper=1.0, seq=1):
    reference = arm.read_state().ee_pose
    progress = np.linspace(1.0 / horizon, 1.0, horizon)[:, None]
    actions = np.zeros((horizon, 7))
    actions[:, :3] = progress * np.asarray(translation)
    actions[:, 5] = progress[:, 0] * rotation_z
    actions[:, 6] = gripper
    return TimedChunk(executor.now(), dt, actions, reference, seq), target_after(reference, actions[-1])


def test_chunk_of_deltas_reaches_the_expected_pose_and_watchdog_holds(arm):
    executor = make_executor(arm)
    stop = threading.Event()
    stats = {}
    # The control loop runs in its own thread and chunks arrive from another, as under ROS.
    loop = threading.Thread(target=lambda: stats.setdefault("loop", executor.run(stop)))
    loop.start()
    try:
        chunk, expected = straight_chunk(executor, arm, [0.05, -0.03, -0.04], rotation_z=0.15)
        result = executor.submit(chunk)
        assert result.accepted, result.reason
        while executor.now() < chunk.stamp_s + 0.5:
            time.sleep(0.01)
        assert arm.is_moving()  # mid-chunk
        end = chunk.stamp_s + chunk.horizon * chunk.dt_s + 0.5
        while executor.now() < end:
            time.sleep(0.02)
        distance, angle = pose_distance(arm.read_state().ee_pose, expected)
        assert distance < 0.005, f"final position error {distance * 1e3:.1f} mm"
        assert np.degrees(angle) < 1.0
        status = executor.status()
        assert status.counters.executed_steps == chunk.horizon
        assert status.mode is ExecutorMode.HOLDING  # watchdog timed out after the chunk

        # No more chunks: the pose must stay put.
        held = arm.read_state().ee_pose
        hold_start = executor.now()
        while executor.now() < hold_start + 1.0:
            time.sleep(0.02)
        drift, _ = pose_distance(arm.read_state().ee_pose, held)
        assert drift < 0.002, f"drift while holding {drift * 1e3:.2f} mm"
        assert not arm.is_moving()
        assert executor.status().mode is ExecutorMode.HOLDING
    finally:
        stop.set()
        loop.join()
    assert stats["loop"].ticks > 0


def test_out_of_workspace_and_nan_chunks_are_rejected_without_motion(arm):
    executor = make_executor(arm)
    start_pose = arm.read_state().ee_pose

    nan_chunk, _ = straight_chunk(executor, arm, [0.02, 0.0, 0.0], seq=1)
    actions = nan_chunk.actions.copy()
    actions[3, 2] = np.nan
    result = executor.submit(TimedChunk(nan_chunk.stamp_s, 0.1, actions, nan_chunk.reference_pose, 1))
    assert not result.accepted and "non-finite" in result.reason

    inf_gripper = actions.copy()
    inf_gripper[3, 2], inf_gripper[0, 6] = 0.0, np.inf
    result = executor.submit(TimedChunk(nan_chunk.stamp_s, 0.1, inf_gripper, nan_chunk.reference_pose, 2))
    assert not result.accepted and "gripper" in result.reason

    leaving, _ = straight_chunk(executor, arm, [0.0, 0.0, -0.6], seq=3)  # through the table
    result = executor.submit(leaving)
    assert not result.accepted and "outside workspace" in result.reason

    wrong_width, _ = straight_chunk(executor, arm, [0.01, 0.0, 0.0], seq=4)
    result = executor.submit(TimedChunk(wrong_width.stamp_s, 0.1, wrong_width.actions[:, :6],
                                        wrong_width.reference_pose, 4))
    assert not result.accepted and "shape" in result.reason

    far_reference = start_pose.copy()
    far_reference[:3, 3] += [0.3, 0.0, 0.0]
    result = executor.submit(TimedChunk(executor.now(), 0.1, np.zeros((5, 7)), far_reference, 5))
    assert not result.accepted and "reference pose" in result.reason

    stale, _ = straight_chunk(executor, arm, [0.01, 0.0, 0.0], seq=6)
    result = executor.submit(TimedChunk(stale.stamp_s - 5.0, 0.1, stale.actions, stale.reference_pose, 6))
    assert not result.accepted and "old" in result.reason

    tick_for(executor, 0.5)
    moved, turned = pose_distance(arm.read_state().ee_pose, start_pose)
    assert moved < 0.001 and turned < 0.005
    assert executor.status().counters.rejected_chunks == 6
    assert executor.status().counters.executed_steps == 0


def test_step_outside_workspace_is_rejected_at_tick_time_and_the_arm_holds(arm):
    # With whole-chunk checking off, the per-tick safety filter is the last line of defence.
    executor = make_executor(arm, reject_chunks_leaving_workspace=False)
    start_pose = arm.read_state().ee_pose
    reference = start_pose
    actions = np.zeros((5, 7))
    actions[:, 2] = 0.5  # 50 cm up: above the workspace from the first step
    actions[:, 6] = 1.0
    assert executor.submit(TimedChunk(executor.now(), 0.1, actions, reference, 1)).accepted
    tick_for(executor, 0.4)
    status = executor.status()
    assert status.counters.rejected_steps > 0
    assert status.mode is ExecutorMode.HOLDING and "outside workspace" in status.reason
    moved, _ = pose_distance(arm.read_state().ee_pose, start_pose)
    assert moved < 0.001


def test_chunk_grazing_the_floor_stops_on_it_and_one_beyond_the_margin_is_refused(arm):
    start = arm.read_state().ee_pose
    floor = float(start[2, 3]) - 0.03
    executor = make_executor(arm, safety={"workspace_min_m": [0.1, -0.6, floor], "workspace_max_m": [0.9, 0.6, 0.9],
                                          "workspace_clamp_margin_m": 0.02})
    deep, _ = straight_chunk(executor, arm, [0.0, 0.0, -0.055], seq=1)  # 2.5 cm through the floor
    result = executor.submit(deep)
    assert not result.accepted and "clamp margin" in result.reason

    grazing, _ = straight_chunk(executor, arm, [0.02, 0.0, -0.04], seq=2)  # 1 cm through the floor
    assert executor.submit(grazing).accepted
    tick_until(executor, lambda: executor.status().counters.executed_steps >= grazing.horizon, 3.0)
    tick_for(executor, 0.5)
    final = arm.read_state().ee_pose[:3, 3]
    assert final[2] == pytest.approx(floor, abs=0.004)  # on the floor, not through it
    assert final[0] - start[0, 3] == pytest.approx(0.02, abs=0.004)  # the rest of the plan is kept
    assert executor.status().counters.limited_steps > 0


def test_gripper_closes_and_opens_through_chunk_commands(arm, gripper):
    effector = BinaryGripperEffector(gripper)
    executor = make_executor(arm, effector)

    close_chunk, _ = straight_chunk(executor, arm, [0.0, 0.0, 0.0], horizon=3, gripper=0.0, seq=1)
    assert executor.submit(close_chunk).accepted
    assert tick_until(executor, lambda: effector.pending is not None and effector.pending.done(), 5.0)
    assert gripper.width < 0.01

    open_chunk, _ = straight_chunk(executor, arm, [0.0, 0.0, 0.0], horizon=3, gripper=1.0, seq=2)
    assert executor.submit(open_chunk).accepted
    assert tick_until(executor, lambda: effector.commands_sent == 2 and effector.pending.done(), 5.0)
    assert effector.pending.succeeded()
    assert gripper.width > gripper.max_width - 0.005


def test_executor_recovers_when_the_controller_stops(arm):
    executor = make_executor(arm)
    arm.stop_tracking()  # the controller goes away under the executor, as after a reflex
    tick_for(executor, 0.05)
    status = executor.status()
    assert status.counters.faults >= 1 and status.counters.recoveries == 1
    assert arm.read_state().in_control
    chunk, expected = straight_chunk(executor, arm, [0.0, 0.02, 0.0], horizon=5, seq=1)
    assert executor.submit(chunk).accepted
    tick_for(executor, 1.0)
    distance, _ = pose_distance(arm.read_state().ee_pose, expected)
    assert distance < 0.005


def test_subprocess_server_serves_the_same_driver():
    with FrankySimServer(mode="subprocess", realtime=True, hostnames=[f"127.0.0.{i}" for i in range(20, 40)]) as server:
        assert server.is_running
        franka = FrankyArm(FrankyArmConfig.franky_sim(server.hostname))
        franka.connect()
        try:
            state = franka.read_state()
            assert state.in_control and state.ee_pose.shape == (4, 4)
            assert 0.3 < state.ee_pose[0, 3] < 0.7
        finally:
            franka.disconnect()
    assert not server.is_running


def test_blended_replacement_moves_smoothly_between_plans(arm):
    # Generous step limits so what is measured is the blending, not the safety limiter.
    executor = make_executor(arm, blend_steps=3,
                             safety={"max_step_translation_m": 0.1, "max_translation_speed_mps": 50.0})
    reference = arm.read_state().ee_pose
    plan_a = np.zeros((10, 7))
    plan_a[:, 1], plan_a[:, 6] = 0.02, 1.0
    plan_b = plan_a.copy()
    plan_b[:, 1] = -0.02
    assert executor.submit(TimedChunk(executor.now(), 0.1, plan_a, reference, 1)).accepted
    tick_for(executor, 0.2)
    switch = executor.now()
    assert executor.submit(TimedChunk(switch, 0.1, plan_b, reference, 2)).accepted
    commanded_y, blend_weights = [], []
    while True:
        result = executor.tick()
        if result.commanded:
            commanded_y.append(result.target_pose[1, 3] - reference[1, 3])
            blend_weights.append(min(1.0, ((result.time_s - switch) / 0.1 + 1.0) / 4.0))
        if result.time_s > switch + 0.6:
            break
        time.sleep(1.0 / RATE_HZ)
    # Blended targets mix the two plans in pose space with weights rising from 1/4 to 1.
    expected_y = 0.02 + np.asarray(blend_weights) * (-0.04)
    assert np.allclose(commanded_y, expected_y, atol=1e-9)
    assert blend_weights[0] < 1.0
    jumps = np.abs(np.diff(commanded_y))
    assert jumps.max() < 0.012  # the unblended switch would be a single 40 mm jump
    assert commanded_y[-1] == pytest.approx(-0.02, abs=1e-9)


def test_hand_action_space_requires_configured_joint_limits():
    unconnected = FrankyArm(FrankyArmConfig())
    with pytest.raises(ValueError, match="effector_bounds"):
        ChunkExecutor(ChunkExecutorConfig(action_space="xhand"), unconnected)


def test_franky_arm_config_from_yaml_dict():
    config = FrankyArmConfig.from_dict({
        "host": "172.16.0.2",
        "translational_stiffness": 1500,
        "friction_coulomb_nm": [0.5] * 7,
    })
    assert config.translational_stiffness == 1500.0
    assert config.friction_coulomb_nm == (0.5,) * 7
    assert not config.ignore_realtime
    assert FrankyArmConfig.franky_sim().ignore_realtime
    with pytest.raises(ValueError, match="unknown keys"):
        FrankyArmConfig.from_dict({"stiffness": 1.0})


@pytest.mark.parametrize("stiffness", [10.0, 0.0])
def test_nullspace_posture_task_pulls_the_elbow_back_without_moving_the_hand(stiffness):
    posture = np.array([0.0, 0.3, 0.0, -1.8, 0.0, 2.1, 0.785])
    elbow_out = posture + np.array([0.4, 0.0, -0.4, 0.0, 0.0, 0.0, 0.0])
    with FrankySimServer(mode="inprocess", realtime=False, initial_joint_positions=tuple(elbow_out)) as server:
        arm = FrankyArm(FrankyArmConfig.franky_sim(server.hostname, nullspace_stiffness_nm_per_rad=stiffness,
                                                   nullspace_posture_rad=tuple(posture)))
        arm.connect()
        try:
            executor = make_executor(arm)  # no chunk: the executor holds the hand where it is
            start = arm.read_state()
            tick_for(executor, 3.0)
            end = arm.read_state()
        finally:
            arm.disconnect()
    # Joints 1 and 3 swing the elbow about the shoulder-wrist line (the 7-DoF arm's nullspace).
    elbow_error = lambda state: float(np.abs(state.joint_positions[[0, 2]] - posture[[0, 2]]).sum())
    hand_moved_m = float(np.linalg.norm(end.ee_pose[:3, 3] - start.ee_pose[:3, 3]))
    assert hand_moved_m < 0.005
    if stiffness > 0:
        assert elbow_error(end) < 0.5 * elbow_error(start)
    else:  # a plain Cartesian impedance law leaves the elbow where it was
        assert elbow_error(end) > 0.8 * elbow_error(start)


def test_franky_arm_config_refuses_malformed_posture_and_joint_limits():
    with pytest.raises(ValueError, match="nullspace_posture_rad"):
        FrankyArmConfig(nullspace_posture_rad=(0.0,) * 6)
    with pytest.raises(ValueError, match="nullspace_stiffness"):
        FrankyArmConfig(nullspace_stiffness_nm_per_rad=-1.0)
    with pytest.raises(ValueError, match="joint_limits_lower_rad"):
        FrankyArmConfig(joint_limits_lower_rad=(-1.0,) * 7)  # upper missing
    with pytest.raises(ValueError, match="lower < upper"):
        FrankyArmConfig(joint_limits_lower_rad=(1.0,) * 7, joint_limits_upper_rad=(-1.0,) * 7)
    FrankyArmConfig(joint_limits_lower_rad=(-1.0,) * 7, joint_limits_upper_rad=(1.0,) * 7)


#: Joints of the simulated FR3 at the end of a push (hand 2 cm above the table at x 0.5 m, wrist
#: bent: joint 6 at 2.81 rad), logged in a recording where the arm then flailed.
LOW_REACH_JOINTS_RAD = (-0.19, 0.5, 0.1, -2.31, 0.06, 2.81, 0.62)


@pytest.mark.parametrize("error_m", [(0.0, 0.05, 0.0), (0.0, -0.08, 0.03)])
def test_a_pose_error_at_a_low_reach_settles_instead_of_flailing(error_m):
    """With config/panda.yaml's arm settings, a 5-9 cm pose error (what a cube letting go of the
    pushing hand leaves) is pulled back and settles. Without the error clip the simulated arm
    swung up to 80 cm away and never settled from the same start."""
    arm_settings = yaml.safe_load(PANDA_YAML.read_text())["franka_executor"]["ros__parameters"]["arm"]
    assert arm_settings.get("translational_error_clip_m"), "panda.yaml no longer clips the pose error"
    with FrankySimServer(mode="inprocess", realtime=False, initial_joint_positions=LOW_REACH_JOINTS_RAD) as server:
        arm = FrankyArm(FrankyArmConfig.from_dict({**arm_settings, "host": server.hostname, "ignore_realtime": True}))
        arm.connect()
        try:
            start = arm.read_state()
            target = start.ee_pose.copy()
            target[:3, 3] += np.asarray(error_m)
            worst_m, joints = 0.0, []
            while True:  # a fixed target streamed every control cycle, as a holding executor does
                arm.stream_target(target)
                state = arm.read_state()
                if state.time_s - start.time_s > 4.0:
                    break
                worst_m = max(worst_m, float(np.linalg.norm(state.ee_pose[:3, 3] - target[:3, 3])))
                joints.append(state.joint_positions)
        finally:
            arm.disconnect()
    error = float(np.linalg.norm(error_m))
    assert worst_m < error + 0.01, f"the hand went {worst_m * 100:.1f} cm from a target {error * 100:.1f} cm away"
    assert float(np.linalg.norm(state.ee_pose[:3, 3] - target[:3, 3])) < 0.005
    last_second = np.asarray(joints[-int(len(joints) / 4):])
    assert np.ptp(last_second, axis=0).max() < 0.01  # at rest, not oscillating
