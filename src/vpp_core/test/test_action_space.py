"""Action-space definitions, SO(3) helpers and the poses <-> actions round trip."""

from __future__ import annotations

import numpy as np
import pytest

from vpp_core.action_space import (
    ACTION_SPACES,
    InvalidActionError,
    XHAND_JOINT_NAMES,
    actions_to_poses,
    get_action_space,
    interpolate_poses,
    is_valid_pose,
    matrix_to_quat,
    matrix_to_rotvec,
    pose_distance,
    pose_from_pos_quat,
    pose_from_pos_rotvec,
    pose_to_pos_quat,
    poses_to_actions,
    quat_to_matrix,
    quat_to_rotvec,
    rotvec_to_matrix,
    rotvec_to_quat,
)


def random_rotvecs(rng: np.random.Generator, count: int, near_pi: bool = False) -> np.ndarray:
    axes = rng.normal(size=(count, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    if near_pi:
        angles = np.pi - rng.uniform(0.0, 1e-6, size=count)
        angles[: count // 4] = np.pi  # exactly pi as well
    else:
        angles = rng.uniform(0.0, np.pi, size=count)
    return axes * angles[:, None]


def random_poses(rng: np.random.Generator, count: int, near_pi: bool = False) -> np.ndarray:
    return pose_from_pos_rotvec(rng.uniform(-1.0, 1.0, size=(count, 3)), random_rotvecs(rng, count, near_pi))


def test_registry_layout():
    panda = get_action_space("panda")
    assert panda.dim == 7
    assert panda.effector_names == ("gripper",)
    assert panda.effector_bounds == ((0.0, 1.0),)
    xhand = get_action_space("xhand")
    assert xhand.dim == 18
    assert xhand.effector_names == XHAND_JOINT_NAMES
    assert len(set(xhand.dimension_names)) == 18
    assert set(ACTION_SPACES) == {"panda", "xhand"}
    assert all(unit in {"m", "rad", "1"} for space in ACTION_SPACES.values() for unit in space.units)


def test_unknown_action_space_names_the_known_ones():
    with pytest.raises(KeyError, match="panda"):
        get_action_space("ur5")


def test_rotvec_matrix_round_trip_including_near_pi():
    rng = np.random.default_rng(0)
    for near_pi in (False, True):
        rotvecs = random_rotvecs(rng, 500, near_pi)
        matrices = rotvec_to_matrix(rotvecs)
        assert np.allclose(matrices @ np.swapaxes(matrices, 1, 2), np.eye(3), atol=1e-12)
        recovered = rotvec_to_matrix(matrix_to_rotvec(matrices))
        assert np.abs(recovered - matrices).max() < 1e-9


def test_quaternion_conversions_agree():
    rng = np.random.default_rng(1)
    rotvecs = np.concatenate([random_rotvecs(rng, 200), random_rotvecs(rng, 50, near_pi=True)])
    quats = rotvec_to_quat(rotvecs)
    assert np.allclose(np.linalg.norm(quats, axis=1), 1.0)
    assert np.abs(quat_to_matrix(quats) - rotvec_to_matrix(rotvecs)).max() < 1e-9
    assert np.abs(quat_to_matrix(matrix_to_quat(rotvec_to_matrix(rotvecs))) - rotvec_to_matrix(rotvecs)).max() < 1e-9
    assert np.abs(rotvec_to_matrix(quat_to_rotvec(quats)) - rotvec_to_matrix(rotvecs)).max() < 1e-9
    # q and -q are the same rotation.
    assert np.allclose(quat_to_matrix(-quats), quat_to_matrix(quats))


def test_small_angles_are_accurate():
    rotvec = np.array([1e-10, -2e-10, 3e-10])
    assert np.allclose(matrix_to_rotvec(rotvec_to_matrix(rotvec)), rotvec, atol=1e-18, rtol=1e-6)
    assert np.allclose(quat_to_rotvec(rotvec_to_quat(rotvec)), rotvec, atol=1e-18, rtol=1e-6)


def test_known_rotation_about_z():
    quarter_turn = rotvec_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    assert np.allclose(quarter_turn @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    assert np.allclose(matrix_to_quat(quarter_turn), [0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])


def test_pos_quat_conversion_round_trip():
    rng = np.random.default_rng(2)
    poses = random_poses(rng, 100)
    position, quat = pose_to_pos_quat(poses)
    assert np.abs(pose_from_pos_quat(position, quat) - poses).max() < 1e-12
    assert is_valid_pose(poses)


@pytest.mark.parametrize("space_name", ["panda", "xhand"])
@pytest.mark.parametrize("near_pi", [False, True])
def test_targets_to_actions_to_targets_round_trip(space_name, near_pi):
    rng = np.random.default_rng(3)
    space = get_action_space(space_name)
    for _ in range(20):
        reference = random_poses(rng, 1)[0]
        # Targets whose rotation relative to the reference is near pi exercise the log-map edge.
        relative = random_poses(rng, 16, near_pi=near_pi)
        targets = relative.copy()
        targets[:, :3, :3] = relative[:, :3, :3] @ reference[:3, :3]
        extra = rng.uniform(0.0, 1.0, size=(16, space.effector_dim))
        actions = poses_to_actions(reference, targets, extra, action_space=space)
        assert actions.shape == (16, space.dim)
        assert np.all(np.linalg.norm(actions[:, 3:6], axis=1) <= np.pi + 1e-9)
        poses, effector = actions_to_poses(reference, actions, action_space=space)
        assert np.abs(poses - targets).max() < 1e-9
        assert np.array_equal(effector, extra)


def test_delta_semantics_translation_in_base_frame_rotation_on_the_left():
    reference = pose_from_pos_rotvec(np.array([0.5, 0.0, 0.4]), np.array([np.pi, 0.0, 0.0]))
    action = np.array([[0.01, -0.02, 0.03, 0.0, 0.0, 0.1, 1.0]])
    (pose,), effector = actions_to_poses(reference, action, "panda")
    assert np.allclose(pose[:3, 3], [0.51, -0.02, 0.43])
    assert np.allclose(pose[:3, :3], rotvec_to_matrix(np.array([0.0, 0.0, 0.1])) @ reference[:3, :3])
    assert effector.tolist() == [[1.0]]


def test_single_effector_column_may_be_one_dimensional():
    reference = np.eye(4)
    targets = np.repeat(np.eye(4)[None], 3, axis=0)
    actions = poses_to_actions(reference, targets, np.array([1.0, 0.5, 0.0]), "panda")
    assert actions[:, 6].tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize(
    "actions, message",
    [
        (np.zeros((4, 6)), "shape"),
        (np.zeros((4,)), "shape"),
        (np.zeros((0, 7)), "empty"),
        (np.array([[0, 0, 0, 0, 0, 0, np.nan]]), "gripper"),
        (np.array([[0, 0, np.inf, 0, 0, 0, 1.0]]), "ee_dz"),
    ],
)
def test_malformed_actions_are_rejected(actions, message):
    with pytest.raises(InvalidActionError, match=message):
        actions_to_poses(np.eye(4), actions, "panda")


def test_malformed_reference_pose_is_rejected():
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(InvalidActionError, match="rigid"):
        actions_to_poses(bad, np.zeros((1, 7)), "panda")
    with pytest.raises(InvalidActionError, match="shape"):
        actions_to_poses(np.eye(3), np.zeros((1, 7)), "panda")


def test_interpolate_poses_endpoints_and_midpoint():
    start = pose_from_pos_rotvec(np.zeros(3), np.zeros(3))
    end = pose_from_pos_rotvec(np.array([0.2, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    assert np.allclose(interpolate_poses(start, end, 0.0), start)
    assert np.allclose(interpolate_poses(start, end, 1.0), end)
    middle = interpolate_poses(start, end, 0.5)
    translation, angle = pose_distance(start, middle)
    assert translation == pytest.approx(0.1)
    assert angle == pytest.approx(0.5)
