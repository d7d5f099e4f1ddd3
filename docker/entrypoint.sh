#!/usr/bin/env bash
set -e
source /opt/ros/jazzy/setup.bash
source /opt/vpp/src/ros2_ws/install/setup.bash
exec "$@"
