"""Franka Panda stack: cameras (or simulation), VPP policy node, impedance chunk executor.

    ros2 launch vpp_bringup panda.launch.py robot_ip:=172.16.0.2 checkpoint:=/path/to/ckpt \
        static_camera_serial:=123 wrist_camera_serial:=456 use_sim:=false

The same graph without `ros2 launch`: python -m vpp_ros.graph --robot panda [--use-sim ...].
"""

from vpp_ros.launch_support import robot_launch_description


def generate_launch_description():
    return robot_launch_description("panda")
