"""Tasks' success checks and the scripted expert's plans, without ROS or a simulator.

The expert is closed around a perfect point robot (the EE goes where the chunk says) and a
scripted cube that moves when the fingertip pushes it, so these tests check the geometry of the
plans and of the success checks; the real closed loop runs in test_sim_proof_smoke.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from vpp_core.action_space import actions_to_poses, get_action_space, pose_from_pos_quat
from vpp_sim.expert import DOWN_ROTATION, ExpertConfig, ScriptedExpert, home_chunk, near_goal_start, polyline_targets
from vpp_sim.tasks import CUBE_HALF_SIZE_M, TASKS, TaskMonitor, TaskStatus, get_task, resolve_tasks, task_for_instruction

H = CUBE_HALF_SIZE_M


def _pose(position) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = DOWN_ROTATION
    pose[:3, 3] = position
    return pose


def test_task_table_and_lookup():
    assert set(TASKS) == {"touch_red", "touch_blue", "push_red_left"}
    assert len({t.instruction for t in TASKS.values()}) == 3
    assert [t.name for t in resolve_tasks("all")] == list(TASKS)
    assert [t.name for t in resolve_tasks("touch_blue, push_red_left")] == ["touch_blue", "push_red_left"]
    assert task_for_instruction("  Touch the red cube ").name == "touch_red"
    assert task_for_instruction("dance") is None
    with pytest.raises(KeyError, match="unknown task"):
        get_task("fly")


def test_touch_success_and_distractor_failure():
    red, blue = np.array([0.5, 0.1, H]), np.array([0.5, -0.1, H])
    monitor = TaskMonitor(get_task("touch_red"))
    assert monitor.update(0.0, [0.45, 0.0, 0.25], {"red_cube": red, "blue_cube": blue}) == TaskStatus.RUNNING
    assert monitor.update(1.0, [0.5, 0.1, 2 * H + 0.05], {"red_cube": red, "blue_cube": blue}) == TaskStatus.RUNNING
    assert monitor.update(2.0, [0.5, 0.1, 2 * H + 0.01], {"red_cube": red, "blue_cube": blue}) == TaskStatus.SUCCESS
    assert monitor.summary()["duration_s"] == pytest.approx(2.0)

    # Touching the blue cube first fails "touch the red cube", whatever comes after.
    monitor = TaskMonitor(get_task("touch_red"))
    monitor.update(0.0, [0.45, 0.0, 0.25], {"red_cube": red, "blue_cube": blue})
    assert monitor.update(1.0, [0.5, -0.1, 2 * H + 0.01], {"red_cube": red, "blue_cube": blue}) == TaskStatus.FAILED
    assert "blue cube" in monitor.reason
    assert monitor.update(2.0, [0.5, 0.1, 2 * H], {"red_cube": red, "blue_cube": blue}) == TaskStatus.FAILED

    # Knocking the other cube away fails too; running out of time fails.
    monitor = TaskMonitor(get_task("touch_blue"))
    monitor.update(0.0, [0.45, 0.0, 0.25], {"red_cube": red, "blue_cube": blue})
    assert monitor.update(1.0, [0.45, 0.0, 0.25], {"red_cube": red + [0, 0.03, 0], "blue_cube": blue}) == TaskStatus.FAILED
    monitor = TaskMonitor(get_task("touch_blue"))
    monitor.update(0.0, [0.45, 0.0, 0.25], {"red_cube": red, "blue_cube": blue})
    assert monitor.update(16.0, [0.45, 0.0, 0.25], {"red_cube": red, "blue_cube": blue}) == TaskStatus.FAILED
    assert "time limit" in monitor.reason


def test_push_success_needs_motion_to_the_left():
    red, blue = np.array([0.5, 0.0, H]), np.array([0.6, -0.2, H])
    monitor = TaskMonitor(get_task("push_red_left"))
    monitor.update(0.0, [0.45, 0.0, 0.25], {"red_cube": red, "blue_cube": blue})
    assert monitor.update(1.0, [0.5, 0.0, 0.1], {"red_cube": red + [0, -0.08, 0], "blue_cube": blue}) == TaskStatus.RUNNING
    assert monitor.update(2.0, [0.5, 0.0, 0.1], {"red_cube": red + [0.08, 0, 0], "blue_cube": blue}) == TaskStatus.RUNNING
    assert monitor.update(3.0, [0.5, 0.0, 0.1], {"red_cube": red + [0, 0.06, 0], "blue_cube": blue}) == TaskStatus.SUCCESS


def test_push_layout_filter_keeps_the_corridor_free():
    task = get_task("push_red_left")
    red = np.array([0.5, 0.0, H])
    assert not task.layout_ok({"red_cube": red, "blue_cube": red + [0.0, 0.1, 0]})  # in the way
    assert not task.layout_ok({"red_cube": red, "blue_cube": red + [0.03, -0.09, 0]})  # where the finger goes down
    assert task.layout_ok({"red_cube": red, "blue_cube": red + [0.12, 0.05, 0]})
    assert get_task("touch_red").layout_ok({"red_cube": red, "blue_cube": red + [0.0, 0.1, 0]})


def test_polyline_targets_walk_at_constant_speed():
    out = polyline_targets(np.zeros(3), [np.array([0.1, 0, 0]), np.array([0.1, 0.1, 0])], 0.03, 10)
    np.testing.assert_allclose(out[0], [0, 0, 0])
    np.testing.assert_allclose(out[3], [0.09, 0, 0])
    np.testing.assert_allclose(out[4], [0.1, 0.02, 0], atol=1e-12)
    np.testing.assert_allclose(out[9], [0.1, 0.1, 0])  # stops at the end


def _simulate(task_name: str, red, blue, steps: int = 200, seed: int = 0, expert=None, start=(0.45, 0.0, 0.25)):
    """Closed loop of the expert around a perfect point robot; the fingertip shoves cubes it hits."""
    task = get_task(task_name)
    cfg = ExpertConfig()
    expert = expert or ScriptedExpert(task, cfg, np.random.default_rng(seed))
    objects = {"red_cube": np.array(red, float), "blue_cube": np.array(blue, float)}
    ee = np.array(start, dtype=float)
    monitor = TaskMonitor(task)
    space = get_action_space("panda")
    t = 0.0
    for _ in range(steps // cfg.replan_after_steps):
        chunk = expert.plan(_pose(ee), objects)
        assert chunk.shape == (cfg.horizon, 7) and chunk.dtype == np.float32
        space.validate_actions(chunk)
        poses, effector = actions_to_poses(_pose(ee), chunk)
        np.testing.assert_allclose(effector[:, 0], cfg.gripper)
        # Orientation stays "gripper down"; every step stays above the table and inside 1 m/s.
        np.testing.assert_allclose(poses[:, :3, :3], np.broadcast_to(DOWN_ROTATION, (cfg.horizon, 3, 3)), atol=1e-6)
        assert np.all(poses[:, 2, 3] > 0.015)
        assert np.all(np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1) <= cfg.speed_mps * 1.21 * cfg.dt + 1e-9)
        for k in range(1, cfg.replan_after_steps + 1):
            ee = poses[k, :3, 3].copy()
            t += cfg.dt
            cube = objects[task.target]
            # Crude contact: a low fingertip within the cube's footprint + finger half width shoves it along y.
            if ee[2] < 2 * H and abs(ee[0] - cube[0]) < H + 0.01 and 0 < cube[1] - ee[1] < H + 0.01:
                cube[1] = ee[1] + H + 0.01
            if monitor.update(t, ee, objects) != TaskStatus.RUNNING:
                return monitor
    return monitor


@pytest.mark.parametrize("task_name", ["touch_red", "touch_blue", "push_red_left"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expert_solves_each_task_in_an_ideal_loop(task_name, seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        red = [rng.uniform(0.35, 0.65), rng.uniform(-0.25, 0.25), H]
        blue = [rng.uniform(0.35, 0.65), rng.uniform(-0.25, 0.25), H]
        if np.linalg.norm(np.subtract(red, blue)[:2]) > 0.08 and get_task(task_name).layout_ok(
                {"red_cube": np.array(red), "blue_cube": np.array(blue)}):
            break
    monitor = _simulate(task_name, red, blue, seed=seed)
    assert monitor.status == TaskStatus.SUCCESS, monitor.summary()


def test_home_chunk_goes_up_before_moving_sideways():
    cfg = ExpertConfig()
    reference = _pose([0.5, 0.2, 0.06])
    poses, _ = actions_to_poses(reference, home_chunk(reference, [0.45, 0.0, 0.25], cfg))
    xy = poses[:, :2, 3]
    # Still above the cube's xy while rising.
    np.testing.assert_allclose(xy[:5], np.broadcast_to([0.5, 0.2], (5, 2)), atol=1e-9)
    assert np.all(np.diff(poses[:, 2, 3]) >= 0)
    assert pose_from_pos_quat(np.zeros(3), np.array([0, 0, 0, 1.0])).shape == (4, 4)


def test_proof_config_and_converter_settings(tmp_path):
    from vpp_core.data.convert import load_config
    from vpp_sim.session import deep_merge, load_proof_config, write_convert_config

    proof = load_proof_config()
    assert isinstance(proof.expert, ExpertConfig) and proof.expert.horizon == 10
    assert "franka_executor" in proof.node_overrides and "sim_world" in proof.node_overrides
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    # The merged converter file is a valid converter configuration (unknown keys would raise).
    config = load_config(write_convert_config(proof, tmp_path / "convert.yaml"))
    assert config.image_size == proof.convert_overrides["image_size"]
    assert config.sync.max_camera_skew_s == proof.convert_overrides["sync"]["max_camera_skew_s"]
    assert config.fps == 10.0 and config.horizon == proof.expert.horizon


def test_expert_descends_into_the_cube_before_it_is_exactly_above_it():
    cfg = ExpertConfig()
    cube = [0.5, 0.0, H]
    expert = ScriptedExpert(get_task("touch_red"), cfg, np.random.default_rng(0))
    expert.offset[:] = 0.0
    goal_z = 2 * H + cfg.touch_height_m
    # 3 cm beside the goal (outside the alignment tolerance), 4 cm above it.
    start = np.array([0.47, 0.0, goal_z + 0.04])
    poses, _ = actions_to_poses(_pose(start), expert.plan(_pose(start), {"red_cube": cube, "blue_cube": [0.5, 0.2, H]}))
    path = poses[:, :3, 3]
    assert np.all(np.diff(path[:, 2]) <= 1e-9) and path[-1, 2] < start[2] - 0.02  # down from the first step
    assert np.all(np.diff(path[:, 0]) >= -1e-9)  # while closing in on the cube
    # From far away it first reaches the cone's rim, cfg.pre_height_m-ish above the goal.
    far = np.array([0.3, 0.0, 0.25])
    rim = expert.waypoints(far, {"red_cube": cube, "blue_cube": [0.5, 0.2, H]})[0]
    assert rim[0] < 0.5 - 0.02 and rim[2] == pytest.approx(goal_z + expert.pre_height)


@pytest.mark.parametrize("task_name", ["touch_red", "touch_blue", "push_red_left"])
def test_near_goal_starts_are_off_the_goal_clear_of_the_cubes_and_solvable(task_name):
    task = get_task(task_name)
    rng = np.random.default_rng(3)
    distances, found = [], 0
    for _ in range(40):
        red = np.array([rng.uniform(0.35, 0.65), rng.uniform(-0.25, 0.25), H])
        blue = np.array([rng.uniform(0.35, 0.65), rng.uniform(-0.25, 0.25), H])
        objects = {"red_cube": red, "blue_cube": blue}
        if np.linalg.norm((red - blue)[:2]) < 0.08 or not task.layout_ok(objects):
            continue
        expert = ScriptedExpert(task, ExpertConfig(), rng)
        start = near_goal_start(expert, objects, rng, (0.03, 0.08), (0.005, 0.07))
        if start is None:
            continue
        found += 1
        goal, _ = expert.approach_goal(objects)
        target, other = objects[task.target], objects[task.distractor]
        offset = float(np.linalg.norm((start - goal)[:2]))
        assert 0.03 - 1e-9 <= offset <= 0.08 + 1e-9 and goal[2] + 0.005 - 1e-9 <= start[2] <= goal[2] + 0.07 + 1e-9
        distances.append(offset)
        # Not already a success, not inside or against a cube, not on the push's path.
        monitor = TaskMonitor(task)
        assert monitor.update(0.0, start, objects) == TaskStatus.RUNNING
        assert start[2] > 2 * H + 0.015 or np.linalg.norm((start - target)[:2]) >= 0.06
        assert np.linalg.norm((start - other)[:2]) >= 0.10
        if task.kind == "push":
            assert (start - target)[:2] @ np.asarray(task.push_direction) <= -0.03
        # The expert finishes the task from there.
        result = _simulate(task_name, red, blue, expert=expert, start=start)
        assert result.status == TaskStatus.SUCCESS, (start, result.summary())
    assert found >= 20
    assert max(distances) - min(distances) > 0.03  # spread over the range, not one fixed offset


def test_near_goal_start_gives_up_when_nothing_qualifies():
    task = get_task("touch_red")
    # The distractor sits on the goal: every candidate is within 10 cm of it.
    objects = {"red_cube": np.array([0.5, 0.0, H]), "blue_cube": np.array([0.5, 0.0, H])}
    expert = ScriptedExpert(task, ExpertConfig(), np.random.default_rng(0))
    assert near_goal_start(expert, objects, np.random.default_rng(0), (0.03, 0.08), (0.005, 0.07)) is None
