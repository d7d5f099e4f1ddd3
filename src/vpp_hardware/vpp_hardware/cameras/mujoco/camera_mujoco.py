"""A camera of the simulated world, behind the same interface as a real camera.

The world's render thread draws every camera on its own schedule and publishes frames into one
:class:`~vpp_hardware.cameras.camera.FrameSlot` per camera; a ``MujocoCamera`` reads from that
slot. Opening one therefore costs nothing and several readers of one camera share its renders.
"""

from __future__ import annotations

import math

from vpp_hardware.cameras.camera import Camera, CameraError, CameraIntrinsics
from vpp_hardware.cameras.mujoco.configuration_mujoco import MujocoCameraConfig
from vpp_hardware.sim.sim_world import SimWorld

__all__ = ["MujocoCamera"]


class MujocoCamera(Camera):
    """Frames of one camera of a :class:`~vpp_hardware.sim.SimWorld`.

    Args:
        world: the simulated world that renders the camera.
        camera: the camera's name in ``world.config.cameras``, or its config (which must then
            match the world's camera of that name).
    """

    config: MujocoCameraConfig

    def __init__(self, world: SimWorld, camera: str | MujocoCameraConfig) -> None:
        name = camera if isinstance(camera, str) else camera.name
        try:
            world_config = world.camera_config(name)
        except KeyError as error:
            raise CameraError(str(error)) from None
        if isinstance(camera, MujocoCameraConfig) and camera != world_config:
            raise CameraError(
                f"camera config {name!r} differs from the one the world renders: {world_config}"
            )
        super().__init__(world_config, frame_slot=world.frame_slot(name))
        self._world = world
        self._connected = False

    @property
    def world(self) -> SimWorld:
        return self._world

    @property
    def is_connected(self) -> bool:
        return self._connected and self._world.is_running

    def connect(self) -> None:
        """Start reading; the world must be running.

        Raises:
            CameraError: the world is not running.
        """
        if not self._world.is_running:
            raise CameraError(f"simulated world is not running; cannot open camera {self.name!r}")
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    def intrinsics(self) -> CameraIntrinsics:
        """Ideal pinhole from the configured vertical field of view (square pixels, centred)."""
        config = self.config
        focal = 0.5 * config.height / math.tan(math.radians(config.fovy_deg) / 2.0)
        return CameraIntrinsics(
            width=config.width, height=config.height, fx=focal, fy=focal,
            cx=(config.width - 1) / 2.0, cy=(config.height - 1) / 2.0,
        )
