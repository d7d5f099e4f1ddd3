"""XArm + XHand stack: cameras (or simulation), VPP policy node (xhand preset), 18-d chunk executor.

    ros2 launch vpp_bringup xhand.launch.py robot_ip:=192.168.1.185 checkpoint:=/path/to/ckpt \
        static_camera_serial:=123 wrist_camera_serial:=456 use_sim:=false

The same graph without `ros2 launch`: python -m vpp_ros.graph --robot xhand [--use-sim ...].
"""

from vpp_ros.launch_support import robot_launch_description


def generate_launch_description():
    return robot_launch_description("xhand")
