from setuptools import find_packages, setup

package_name = "vpp_hardware"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    # Robot descriptions written by the project (URDF/MJCF), resolved next to the modules.
    package_data={"vpp_hardware.description": ["xhand/*.urdf", "xhand/*.xml"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="VPP ROS 2 developers",
    maintainer_email="dev@vpp-ros2.local",
    description="Camera, arm and hand drivers (real and simulated) and the action-chunk executors.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "camera_node = vpp_hardware.nodes.camera_node:main",
            "sim_world_node = vpp_hardware.nodes.sim_world_node:main",
            "franka_executor_node = vpp_hardware.nodes.franka_executor_node:main",
            "xhand_executor_node = vpp_hardware.nodes.xhand_executor_node:main",
            "xhand_sim_world_node = vpp_hardware.nodes.xhand_sim_world_node:main",
        ],
    },
)
