"""The graph description shared by panda.launch.py and the non-launch runner."""

from __future__ import annotations

import ast
import pathlib

import pytest
import yaml

from vpp_ros.graph import GraphArgs, build_graph, default_config_path, ros_args_for, write_override_file
from vpp_ros.params import load_node_parameters

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_real_robot_graph_has_cameras_policy_and_executor_with_launch_arguments():
    specs = build_graph(GraphArgs(robot="panda", use_sim=False, robot_ip="172.16.0.9", checkpoint="/ckpt",
                                  static_camera_serial="111", wrist_camera_serial="222"))
    by_name = {s.name: s for s in specs}
    assert set(by_name) == {"static_camera", "wrist_camera", "franka_executor", "policy_node"}
    assert by_name["static_camera"].parameters == {"serial": "111"}
    assert by_name["wrist_camera"].parameters == {"serial": "222"}
    assert by_name["franka_executor"].parameters == {"robot_ip": "172.16.0.9"}
    assert by_name["policy_node"].parameters == {"checkpoint": "/ckpt"}


def test_sim_graph_replaces_cameras_by_the_simulated_world_on_loopback():
    specs = build_graph(GraphArgs(robot="panda", use_sim=True))
    by_name = {s.name: s for s in specs}
    assert set(by_name) == {"sim_world", "franka_executor", "policy_node"}
    assert by_name["franka_executor"].parameters == {"robot_ip": "127.0.0.1", "arm.ignore_realtime": True}


def test_every_node_in_the_graph_has_a_section_in_the_yaml_and_an_entry_point():
    config = default_config_path("panda")
    data = yaml.safe_load(config.read_text())
    setup_text = {p: (REPO / "src" / p / "setup.py").read_text() for p in ("vpp_hardware", "vpp_policy_node")}
    for use_sim in (True, False):
        for spec in build_graph(GraphArgs(robot="panda", use_sim=use_sim)):
            assert spec.name in data, f"config/panda.yaml has no section for {spec.name}"
            assert load_node_parameters(config, spec.name), spec.name
            assert f"{spec.executable} = {spec.module}:main" in setup_text[spec.package]


def test_overrides_are_node_scoped_so_they_beat_the_yaml(tmp_path):
    spec = build_graph(GraphArgs(robot="panda", use_sim=True))[1]
    path = write_override_file(spec, tmp_path)
    assert yaml.safe_load(pathlib.Path(path).read_text()) == {
        "franka_executor": {"ros__parameters": {"robot_ip": "127.0.0.1", "arm": {"ignore_realtime": True}}}}
    assert ros_args_for(spec, "cfg.yaml", path)[-2:] == ["--params-file", path]


def test_launch_file_is_a_thin_wrapper_over_the_graph():
    tree = ast.parse((REPO / "launch" / "panda.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") ==
             "robot_launch_description"]
    assert len(calls) == 1 and calls[0].args[0].value == "panda"


def test_unknown_robot_is_refused():
    with pytest.raises(ValueError, match="unknown robot"):
        build_graph(GraphArgs(robot="ur5"))
