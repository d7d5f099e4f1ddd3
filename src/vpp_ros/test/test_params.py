"""config/*.yaml reaches the core's config dataclasses the same way through ROS and without it."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

import pytest

rclpy = pytest.importorskip("rclpy")

from vpp_hardware.arms.franka.franky_arm import FrankyArmConfig  # noqa: E402
from vpp_hardware.executor.executor import ChunkExecutorConfig  # noqa: E402
from vpp_policy_node.planning import PolicyNodeConfig  # noqa: E402
from vpp_ros.params import (  # noqa: E402
    dataclass_from_parameters,
    declare_dataclass_parameters,
    load_node_parameters,
)

CONFIG = pathlib.Path(__file__).resolve().parents[3] / "config" / "panda.yaml"


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(CONFIG)], context=context)
    yield context
    rclpy.try_shutdown(context=context)


def test_executor_parameters_from_yaml_through_ros(ros_context):
    node = rclpy.create_node("franka_executor", context=ros_context)
    try:
        via_ros = declare_dataclass_parameters(node, ChunkExecutorConfig, prefix="executor.")
        arm = declare_dataclass_parameters(node, FrankyArmConfig, prefix="arm.", skip=("host",))
        descriptor = node.describe_parameter("executor.safety.max_step_translation_m")
    finally:
        node.destroy_node()
    without_ros = dataclass_from_parameters(ChunkExecutorConfig, load_node_parameters(CONFIG, "franka_executor"),
                                            prefix="executor.")
    assert via_ros == without_ros
    assert via_ros.safety.workspace_min_m == (0.25, -0.45, 0.05)
    assert via_ros.watchdog.command_timeout_s == pytest.approx(0.3)
    assert via_ros.clock == "wall" and via_ros.blend_steps == 2
    assert arm.translational_stiffness == 2000.0 and arm.translational_error_clip_m == (0.03, 0.03, 0.03)
    # Descriptions come from the dataclasses' documentation, so `ros2 param describe` explains them.
    assert "control ticks" in descriptor.description


def test_policy_parameters_and_nan_defaults(ros_context):
    node = rclpy.create_node("policy_node", context=ros_context)
    try:
        cfg = declare_dataclass_parameters(node, PolicyNodeConfig)
    finally:
        node.destroy_node()
    assert cfg.view_names == ("static", "wrist")
    assert cfg.fallback_action_high[-1] == 1.0
    assert cfg.replan_after_steps == 5


@dataclass
class _Pairs:
    bounds: tuple[tuple[float, float], ...] = ()
    clip: tuple[float, float, float] | None = None
    limit: float | None = None
    name: str = field(default="x", metadata={"help": "a name"})


def test_pair_lists_and_optional_values_map_to_ros_types(ros_context):
    node = rclpy.create_node("pairs", context=ros_context, parameter_overrides=[
        rclpy.parameter.Parameter("bounds", value=[0.0, 1.0, -2.0, 2.0]),
        rclpy.parameter.Parameter("limit", value=3.5),
    ])
    try:
        cfg = declare_dataclass_parameters(node, _Pairs)
    finally:
        node.destroy_node()
    assert cfg.bounds == ((0.0, 1.0), (-2.0, 2.0))
    assert cfg.clip is None and cfg.limit == 3.5 and cfg.name == "x"


def test_unknown_yaml_keys_are_refused():
    with pytest.raises(KeyError, match="unknown parameters"):
        dataclass_from_parameters(ChunkExecutorConfig, {"executor.safety.max_stepp": 1.0}, prefix="executor.")
