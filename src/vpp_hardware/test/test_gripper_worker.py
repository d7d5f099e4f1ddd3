"""GripperWorker over the real franky gripper client against franky-sim's simulated hand."""

from __future__ import annotations

import pytest

franky = pytest.importorskip("franky")

from vpp_hardware.arms.franka.franky_arm import FrankyGripper, FrankyGripperConfig  # noqa: E402
from vpp_hardware.arms.franka.sim_server import FrankySimServer  # noqa: E402
from vpp_hardware.arms.gripper_worker import GripperWorker  # noqa: E402
from vpp_ros.graph import free_sim_robot_host  # noqa: E402


@pytest.fixture(scope="module")
def gripper():
    with FrankySimServer(mode="subprocess", realtime=True, hostnames=[free_sim_robot_host()]) as server:
        worker = GripperWorker(FrankyGripper(FrankyGripperConfig(host=server.hostname)))
        worker.connect()
        yield worker
        worker.disconnect()


def test_state_is_cached_and_commands_complete(gripper):
    assert 0.05 < gripper.max_width < 0.1
    assert gripper.grasp_async().wait(20.0)
    assert gripper.width < 0.01
    assert gripper.open_async().succeeded()
    assert gripper.width > 0.9 * gripper.max_width


def test_a_newer_command_replaces_one_that_has_not_started(gripper):
    first = gripper.grasp_async()       # starts at once
    queued = gripper.grasp_async()      # waits behind the first ...
    latest = gripper.open_async()       # ... and is replaced by this one
    assert latest.wait(30.0) and first.done()
    assert queued.done() and not queued.succeeded()
    assert gripper.commands_superseded >= 1
    assert gripper.width > 0.9 * gripper.max_width
