from setuptools import find_packages, setup

package_name = "vpp_teleop"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="VPP ROS 2 developers",
    maintainer_email="dev@vpp-ros2.local",
    description="Apple Vision Pro teleoperation of the XArm + XHand and demonstration recording.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "teleop_node = vpp_teleop.teleop_node:main",
            "fake_avp_server = vpp_teleop.fake_avp_server:main",
            "episode_keys = vpp_teleop.episode_keys:main",
            "bag_episodes = vpp_teleop.bag_episodes:main",
            "teleop_graph = vpp_teleop.teleop_graph:main",
        ],
    },
)
