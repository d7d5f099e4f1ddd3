"""The XArm + XHand graph: same description for xhand.launch.py and the non-launch runner."""

from __future__ import annotations

import ast
import pathlib

import yaml

from vpp_ros.graph import GraphArgs, build_graph, default_config_path
from vpp_ros.params import dataclass_from_parameters, load_node_parameters

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_real_xhand_graph_has_cameras_policy_and_the_xhand_executor():
    specs = build_graph(GraphArgs(robot="xhand", robot_ip="192.168.1.200", checkpoint="/ckpt",
                                  static_camera_serial="111", wrist_camera_serial="222"))
    by_name = {s.name: s for s in specs}
    assert set(by_name) == {"static_camera", "wrist_camera", "xhand_executor", "policy_node"}
    assert by_name["xhand_executor"].executable == "xhand_executor_node"
    assert by_name["xhand_executor"].parameters == {"robot_ip": "192.168.1.200"}
    assert by_name["policy_node"].parameters == {"checkpoint": "/ckpt"}


def test_sim_xhand_graph_uses_the_xarm_xhand_world_and_its_simulated_hand():
    by_name = {s.name: s for s in build_graph(GraphArgs(robot="xhand", use_sim=True))}
    assert set(by_name) == {"sim_world", "xhand_executor", "policy_node"}
    assert by_name["sim_world"].module == "vpp_hardware.nodes.xhand_sim_world_node"
    assert by_name["xhand_executor"].parameters == {"robot_ip": "127.0.0.1", "arm.forbid_uds": False,
                                                    "hand_backend": "sim"}
    # The Panda's sim graph is unchanged.
    panda = {s.name: s for s in build_graph(GraphArgs(robot="panda", use_sim=True))}
    assert panda["sim_world"].module == "vpp_hardware.nodes.sim_world_node"


def test_every_xhand_node_has_a_yaml_section_and_an_entry_point():
    config = default_config_path("xhand")
    data = yaml.safe_load(config.read_text())
    setup_text = {p: (REPO / "src" / p / "setup.py").read_text() for p in ("vpp_hardware", "vpp_policy_node")}
    for use_sim in (True, False):
        for spec in build_graph(GraphArgs(robot="xhand", use_sim=use_sim)):
            assert spec.name in data, f"config/xhand.yaml has no section for {spec.name}"
            assert load_node_parameters(config, spec.name), spec.name
            assert f"{spec.executable} = {spec.module}:main" in setup_text[spec.package]


def test_xhand_yaml_fills_every_config_dataclass_without_unknown_keys():
    from vpp_core.action_space import XHAND_JOINT_NAMES, get_action_space
    from vpp_hardware.arms.xarm.xarm_arm import XArmConfig
    from vpp_hardware.executor.executor import ChunkExecutorConfig
    from vpp_hardware.hands.hand import XHandJointLimits
    from vpp_hardware.hands.xhand_sdk import XHandSDKConfig
    from vpp_hardware.nodes.xhand_executor_node import XHandExecutorNodeConfig
    from vpp_hardware.nodes.xhand_sim_world_node import XHandSimWorldNodeConfig
    from vpp_policy_node.planning import PolicyNodeConfig

    config = default_config_path("xhand")
    executor = load_node_parameters(config, "xhand_executor")
    exec_cfg = dataclass_from_parameters(ChunkExecutorConfig, executor, prefix="executor.")
    assert exec_cfg.action_space == "xhand" and exec_cfg.safety.effector_bounds == ()
    arm = dataclass_from_parameters(XArmConfig, executor, prefix="arm.")
    assert arm.forbid_uds and arm.dof == 7
    dataclass_from_parameters(XHandSDKConfig, {k: v for k, v in executor.items()
                                               if not k.startswith("hand.joint_limits.")}, prefix="hand.")
    limits = dataclass_from_parameters(XHandJointLimits, executor, prefix="hand.joint_limits.")
    assert limits.as_bounds() == XHandJointLimits().as_bounds()
    node = dataclass_from_parameters(XHandExecutorNodeConfig, {k: v for k, v in executor.items()
                                                               if "." not in k and k != "use_sim_time"})
    assert len(node.arm_joint_names) == arm.dof
    def own(node_name):
        return {k: v for k, v in load_node_parameters(config, node_name).items() if k != "use_sim_time"}

    dataclass_from_parameters(XHandSimWorldNodeConfig, own("sim_world"))
    policy = dataclass_from_parameters(PolicyNodeConfig, own("policy_node"))
    assert policy.embodiment == "xhand"
    assert len(policy.fallback_action_low) == get_action_space("xhand").dim
    # The proprio vector: the executor's arm joints, then the 12 hand joints by name.
    assert tuple(policy.proprio_joint_names) == tuple(node.arm_joint_names) + XHAND_JOINT_NAMES
    assert policy.executor_hold_service == "/xhand_executor/hold"


def test_xhand_launch_file_is_a_thin_wrapper_over_the_graph():
    tree = ast.parse((REPO / "launch" / "xhand.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") ==
             "robot_launch_description"]
    assert len(calls) == 1 and calls[0].args[0].value == "xhand"
