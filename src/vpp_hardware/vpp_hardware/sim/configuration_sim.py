"""Settings of the simulated tabletop world."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vpp_hardware.cameras.mujoco.configuration_mujoco import (
    MujocoCameraConfig,
    default_static_camera,
    default_wrist_camera,
)

__all__ = ["SimObjectConfig", "SimWorldConfig"]


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(kw_only=True)
class SimObjectConfig:
    """A free cube on the table.

    Attributes:
        name: body name, used in pose queries.
        rgba: colour, four values in [0, 1].
        half_size_m: half the edge length.
        mass_kg: mass of the cube.
    """

    name: str
    rgba: tuple[float, float, float, float]
    half_size_m: float = 0.025
    mass_kg: float = 0.1

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"object name must be alphanumeric/underscore, got {self.name!r}")
        if len(self.rgba) != 4 or not all(_finite(c) and 0.0 <= c <= 1.0 for c in self.rgba):
            raise ValueError(f"rgba must be four values in [0, 1], got {self.rgba!r}")
        if not _finite(self.half_size_m) or not 0.005 <= self.half_size_m <= 0.1:
            raise ValueError(f"half_size_m must be within [0.005, 0.1], got {self.half_size_m!r}")
        if not _finite(self.mass_kg) or self.mass_kg <= 0:
            raise ValueError(f"mass_kg must be positive, got {self.mass_kg!r}")


def _default_objects() -> tuple[SimObjectConfig, ...]:
    return (
        SimObjectConfig(name="red_cube", rgba=(0.85, 0.1, 0.1, 1.0)),
        SimObjectConfig(name="blue_cube", rgba=(0.1, 0.2, 0.85, 1.0)),
    )


def _default_cameras() -> tuple[MujocoCameraConfig, ...]:
    return (default_static_camera(), default_wrist_camera())


@dataclass(kw_only=True)
class SimWorldConfig:
    """The simulated tabletop: robot, table, objects, cameras and the franky-sim server.

    Positions are in the robot base frame (x forward, z up; the base sits on the table top).

    Attributes:
        host: loopback address the libfranka server binds (robot port 1337, gripper 1338).
        fallback_hosts: further addresses tried in order when ``host``'s ports are taken
            (several simulations on one machine).
        realtime: pace physics at 1 kHz against the host clock; False runs as fast as possible.
        command_wait_s: while a libfranka client runs a motion, each physics step waits up to
            this long for the client's command answering the previous state before it
            integrates (0: never wait, franky-sim's own behaviour). Why: a real Franka gets a
            fresh torque every 1 ms or stops with a reflex; franky-sim instead keeps applying
            the last torque, so a controller delayed by a busy CPU (a 2-core CI machine running
            the renderer, ROS nodes and a policy) leaves the arm integrating stale torques, and
            the impedance loop, effectively running with delay, went unstable (the arm thrashed
            and ended folded over its base). Waiting slows simulated time instead.
        table_height_m: table top height above the floor (the robot base is mounted on it).
        objects: the free cubes on the table.
        object_region_x_m, object_region_y_m: where reset() may place object centres.
        min_object_separation_m: minimum centre distance between objects after reset().
        cameras: rendered cameras; names must be unique.
        shadows: render shadows (several times the render cost on the CPU).
        multisamples: anti-aliasing samples of the offscreen buffer (0 = off; costly on CPU).
        seed: seed of the random sequence used by reset() calls that pass no seed.
        initial_joint_positions: robot start configuration; None uses franky-sim's default.
    """

    host: str = "127.0.0.1"
    fallback_hosts: tuple[str, ...] = ()
    realtime: bool = True
    command_wait_s: float = 0.05
    table_height_m: float = 0.75
    objects: tuple[SimObjectConfig, ...] = field(default_factory=_default_objects)
    object_region_x_m: tuple[float, float] = (0.35, 0.65)
    object_region_y_m: tuple[float, float] = (-0.25, 0.25)
    min_object_separation_m: float = 0.08
    cameras: tuple[MujocoCameraConfig, ...] = field(default_factory=_default_cameras)
    shadows: bool = False
    multisamples: int = 0
    seed: int = 0
    initial_joint_positions: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must be a non-empty address")
        if not _finite(self.command_wait_s) or not 0.0 <= self.command_wait_s <= 1.0:
            raise ValueError(f"command_wait_s must be within [0, 1], got {self.command_wait_s!r}")
        if not _finite(self.table_height_m) or not 0.0 <= self.table_height_m <= 2.0:
            raise ValueError(f"table_height_m must be within [0, 2], got {self.table_height_m!r}")
        for label, region in (("x", self.object_region_x_m), ("y", self.object_region_y_m)):
            if len(region) != 2 or not all(_finite(v) for v in region) or region[0] > region[1]:
                raise ValueError(f"object_region_{label}_m must be (low, high), got {region!r}")
        if not _finite(self.min_object_separation_m) or self.min_object_separation_m < 0:
            raise ValueError("min_object_separation_m must be >= 0")
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            raise ValueError(f"object names must be unique, got {names}")
        camera_names = [c.name for c in self.cameras]
        if len(set(camera_names)) != len(camera_names):
            raise ValueError(f"camera names must be unique, got {camera_names}")
        if isinstance(self.multisamples, bool) or not isinstance(self.multisamples, int) or not (
            0 <= self.multisamples <= 16
        ):
            raise ValueError(f"multisamples must be an int in [0, 16], got {self.multisamples!r}")
        if self.initial_joint_positions is not None and (
            len(self.initial_joint_positions) != 7
            or not all(_finite(q) for q in self.initial_joint_positions)
        ):
            raise ValueError("initial_joint_positions must be 7 finite joint angles")
