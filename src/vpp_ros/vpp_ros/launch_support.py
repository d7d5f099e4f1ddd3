"""Turns :func:`vpp_ros.graph.build_graph` into a ROS 2 launch description.

Imported only by the launch files (the ``launch`` packages exist on robot PCs, not in CI); all
decisions about which nodes run with which parameters live in :mod:`vpp_ros.graph`.
"""

from __future__ import annotations

import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vpp_ros.graph import LAUNCH_ARGUMENTS, GraphArgs, build_graph, parse_bool, write_override_file


def robot_launch_description(robot: str) -> LaunchDescription:
    def nodes(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
        args = GraphArgs(robot=robot, config=values["config"], use_sim=parse_bool(values["use_sim"]),
                         robot_ip=values["robot_ip"], checkpoint=values["checkpoint"],
                         static_camera_serial=values["static_camera_serial"],
                         wrist_camera_serial=values["wrist_camera_serial"])
        config = args.resolved_config()
        override_dir = tempfile.mkdtemp(prefix="vpp-launch-")
        nodes = []
        for spec in build_graph(args):
            override = write_override_file(spec, override_dir)
            nodes.append(Node(package=spec.package, executable=spec.executable, name=spec.name,
                              parameters=[config] + ([override] if override else []),
                              output="screen", emulate_tty=True))
        return nodes

    declared = [DeclareLaunchArgument(name, default_value=default, description=help_text)
                for name, (default, help_text) in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
