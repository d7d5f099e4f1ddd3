"""The real, unmodified ``XArmAPI`` (xarm-python-sdk) against the project's loopback controller.

The peer implements the controller side of the SDK's TCP protocol (served on the SDK's Unix
sockets, no root needed); its backend moves the joints instantly, so these tests check the
protocol and the driver, not dynamics (see test_xhand_sim.py for the simulated arm).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

xarm_wrapper = pytest.importorskip("xarm.wrapper")

from vpp_core.action_space import rotvec_to_matrix  # noqa: E402
from vpp_hardware.arms.arm import ArmError  # noqa: E402
from vpp_hardware.arms.xarm.kinematics import XARM6, XARM7, pose_to_xarm, xarm_to_pose  # noqa: E402
from vpp_hardware.arms.xarm.loopback_peer import (  # noqa: E402
    REG_SERVO_CART,
    REG_SERVO_J,
    KinematicXArmBackend,
    XArmLoopbackPeer,
)
from vpp_hardware.arms.xarm.xarm_arm import XArmArm, XArmConfig  # noqa: E402

FLOAT32 = 1e-4  # values cross the wire as float32


@pytest.fixture()
def peer():
    with XArmLoopbackPeer(KinematicXArmBackend()) as controller:
        yield controller


def _wait(predicate, deadline_s=10.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not predicate():
        time.sleep(0.01)
    return predicate()


def test_kinematics_matches_the_published_home_pose():
    pose = pose_to_xarm(XARM6.fk(np.zeros(6)))
    assert pose[:3] == pytest.approx([207.0, 0.0, 112.0], abs=0.01)  # xArm6 manual, all joints zero
    assert abs(abs(pose[3]) - math.pi) < 1e-6 and pose[4:] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert pose_to_xarm(XARM7.fk(np.zeros(7)))[:3] == pytest.approx([206.0, 0.0, 120.5], abs=0.01)  # xArm7
    for model, q in ((XARM6, np.array([0.3, -0.4, -0.8, 0.2, 1.1, -0.3])),
                     (XARM7, np.array([0.3, -0.2, 0.1, 0.9, 0.2, 1.1, -0.3]))):
        target = model.fk(q)
        assert np.abs(model.fk(model.ik(target, q + 0.05)) - target).max() < 1e-4
    assert np.abs(xarm_to_pose(pose_to_xarm(target)) - target).max() < 1e-12


def test_real_xarmapi_connects_and_servo_commands_arrive(peer):
    api = xarm_wrapper.XArmAPI(peer.client_address, is_radian=True, report_type="real")
    try:
        assert api.connected
        assert api.version_number == (2, 5, 0)
        assert api.motion_enable(enable=True) == 0
        assert api.set_mode(1) == 0
        assert api.set_state(0) == 0
        assert _wait(lambda: api.mode == 1 and api.state not in (4, 5))

        code, position = api.get_position()
        assert code == 0
        expected = pose_to_xarm(XARM7.fk(KinematicXArmBackend().joint_positions()))
        assert position == pytest.approx(expected, abs=1e-3)

        target = list(position)
        target[0] += 12.5
        target[2] -= 7.25
        target[5] += 0.1
        started = time.perf_counter()
        assert api.set_servo_cartesian(target) == 0
        round_trip = time.perf_counter() - started
        command = peer.servo_log[-1]
        assert command.register == REG_SERVO_CART
        assert command.values[:6] == pytest.approx(target, abs=FLOAT32)
        code, readback = api.get_position()
        # roll = +-pi are the same orientation: compare as poses.
        assert code == 0 and np.abs(xarm_to_pose(readback) - xarm_to_pose(target)).max() < 1e-4

        joints = [0.1, -0.2, 0.05, 0.9, 0.0, 1.0, 0.2]
        assert api.set_servo_angle_j(joints) == 0
        command = peer.servo_log[-1]
        assert command.register == REG_SERVO_J
        assert command.values[:7] == pytest.approx(joints, abs=FLOAT32)
        code, angles = api.get_servo_angle()
        assert code == 0 and angles[:7] == pytest.approx(joints, abs=FLOAT32)
        print(f"XArmAPI servo round trip over the loopback peer: {round_trip * 1e3:.3f} ms")
    finally:
        api.disconnect()


def test_driver_streams_targets_and_reads_state(peer):
    arm = XArmArm(XArmConfig(host=peer.client_address, forbid_uds=False))
    arm.connect()
    try:
        state = arm.read_state()
        assert state.in_control and not state.has_errors
        assert state.joint_positions == pytest.approx(KinematicXArmBackend().joint_positions(), abs=1e-5)
        target = state.ee_pose.copy()
        target[:3, 3] += [0.02, -0.01, 0.015]
        target[:3, :3] = rotvec_to_matrix(np.array([0.0, 0.05, 0.1])) @ target[:3, :3]
        round_trips = []
        for _ in range(50):
            started = time.perf_counter()
            arm.stream_target(target)
            round_trips.append(time.perf_counter() - started)
        assert peer.servo_log[-1].values[:6] == pytest.approx(pose_to_xarm(target), abs=FLOAT32)
        assert _wait(lambda: np.abs(arm.read_state().ee_pose - target).max() < 1e-4)
        assert np.abs(arm.read_state().ee_pose - target).max() < 1e-4
        print(f"XArmArm.stream_target round trip p50 {np.percentile(round_trips, 50) * 1e3:.3f} ms, "
              f"max {max(round_trips) * 1e3:.3f} ms")
    finally:
        arm.disconnect()


def test_driver_refuses_bad_targets_without_sending(peer):
    arm = XArmArm(XArmConfig(host=peer.client_address, forbid_uds=False))
    arm.connect()
    try:
        sent = len(peer.servo_log)
        bad = arm.read_state().ee_pose.copy()
        bad[0, 3] = np.nan
        with pytest.raises(ArmError):
            arm.stream_target(bad)
        with pytest.raises(ArmError, match="joint 4"):
            arm.stream_joint_target(np.array([0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0]))
        assert len(peer.servo_log) == sent
    finally:
        arm.disconnect()


def test_controller_error_and_clean_error_recovery(peer):
    arm = XArmArm(XArmConfig(host=peer.client_address, forbid_uds=False))
    arm.connect()
    try:
        target = arm.read_state().ee_pose
        peer.inject_error(31)  # e.g. a collision: the controller stops the arm
        assert _wait(lambda: arm.read_state().has_errors)
        assert not arm.read_state().in_control
        with pytest.raises(ArmError, match="controller error 31"):
            arm.stream_target(target)
        assert arm.recover_errors()
        assert peer.error_code == 0
        assert _wait(lambda: not arm.read_state().has_errors and arm.read_state().in_control)
        arm.stream_target(target)
    finally:
        arm.disconnect()


def test_unreachable_cartesian_target_raises_a_controller_error(peer):
    arm = XArmArm(XArmConfig(host=peer.client_address, forbid_uds=False))
    arm.connect()
    try:
        far = arm.read_state().ee_pose.copy()
        far[:3, 3] = [2.0, 0.0, 0.3]  # beyond the xArm6's 0.7 m reach
        with pytest.raises(ArmError, match="controller error 24"):  # no IK solution: the controller faults
            arm.stream_target(far)
        assert _wait(lambda: arm.read_state().has_errors)
        assert arm.recover_errors()
    finally:
        arm.disconnect()
