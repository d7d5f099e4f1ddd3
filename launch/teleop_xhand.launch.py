"""Vision Pro teleoperation of the XArm + XHand with demonstration recording.

    ros2 launch vpp_bringup teleop_xhand.launch.py avp_ip:=192.168.1.50 robot_ip:=192.168.1.185 \
        static_camera_serial:=123 wrist_camera_serial:=456 [use_sim:=true] [recorder:=auto] [bag_dir:=...]
    python -m vpp_teleop.episode_keys          # s: start (asks the instruction), e: stop+keep, d: discard

Cameras (or the simulated world), the XArm + XHand executor, the teleop node and an episode
recorder: one `ros2 bag record` per episode (mcap, the explicit topic list of config/xhand.yaml's
recorder section + /hand_tracking, config/teleop/bag_qos_overrides.yaml) when rosbag2 is
installed, else the project's fallback recorder writing the same format. The same graph without
`ros2 launch`: python -m vpp_teleop.teleop_graph --avp-ip ... [--use-sim].
"""

import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vpp_ros.graph import GraphArgs, parse_bool, write_override_file
from vpp_teleop.teleop_graph import TELEOP_LAUNCH_ARGUMENTS, build_teleop_graph


def generate_launch_description():
    def nodes(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in TELEOP_LAUNCH_ARGUMENTS}
        args = GraphArgs(robot="xhand", config=values["config"], use_sim=parse_bool(values["use_sim"]),
                         robot_ip=values["robot_ip"], static_camera_serial=values["static_camera_serial"],
                         wrist_camera_serial=values["wrist_camera_serial"])
        config = args.resolved_config()
        override_dir = tempfile.mkdtemp(prefix="vpp-teleop-launch-")
        out = []
        for spec in build_teleop_graph(args, values["avp_ip"], values["recorder"], values["bag_dir"]):
            override = write_override_file(spec, override_dir)
            out.append(Node(package=spec.package, executable=spec.executable, name=spec.name,
                            parameters=[config] + ([override] if override else []),
                            output="screen", emulate_tty=True))
        return out

    declared = [DeclareLaunchArgument(name, default_value=default, description=help_text)
                for name, (default, help_text) in TELEOP_LAUNCH_ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
