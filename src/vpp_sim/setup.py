from setuptools import find_packages, setup

package_name = "vpp_sim"

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
    description="Simulation proof: tasks, scripted expert, demonstration recording and closed-loop evaluation.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_record = vpp_sim.record:main",
            "sim_evaluate = vpp_sim.evaluate:main",
            "sim_proof = vpp_sim.proof:main",
        ],
    },
)
