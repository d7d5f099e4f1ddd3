"""Cameras rendered from the MuJoCo simulated world (:mod:`vpp_hardware.sim`)."""

from vpp_hardware.cameras.mujoco.configuration_mujoco import (
    MujocoCameraConfig,
    default_static_camera,
    default_wrist_camera,
)

__all__ = ["MujocoCamera", "MujocoCameraConfig", "default_static_camera", "default_wrist_camera"]


def __getattr__(name: str):
    # MujocoCamera pulls in the simulator (mujoco, franky-sim); load it only when asked for, so
    # the configuration can be imported on machines without them.
    if name == "MujocoCamera":
        from vpp_hardware.cameras.mujoco.camera_mujoco import MujocoCamera

        return MujocoCamera
    raise AttributeError(name)
