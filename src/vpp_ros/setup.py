from setuptools import find_packages, setup

package_name = "vpp_ros"

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
    description="Shared ROS 2 glue: message conversions, QoS profiles, parameter loading, graph runner.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vpp_graph = vpp_ros.graph:main",
            "vpp_relay = vpp_ros.relay:main",
            "recorder = vpp_ros.recorder:main",
        ],
    },
)
