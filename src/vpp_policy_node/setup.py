from setuptools import find_packages, setup

package_name = "vpp_policy_node"

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
    description="ROS 2 node running the Video Prediction Policy and publishing action chunks.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy_node = vpp_policy_node.policy_node:main",
        ],
    },
)
