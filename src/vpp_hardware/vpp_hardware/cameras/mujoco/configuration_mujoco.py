"""Settings of a camera rendered from the MuJoCo simulated world."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vpp_hardware.cameras.camera import CameraConfig

__all__ = ["MujocoCameraConfig", "default_static_camera", "default_wrist_camera"]

Vector3 = tuple[float, float, float]


def _require_vector3(name: str, value: Vector3) -> None:
    if len(value) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        raise ValueError(f"{name} must be three finite numbers, got {value!r}")


@dataclass(kw_only=True)
class MujocoCameraConfig(CameraConfig):
    """A camera in the simulated world: image size, rate and where it is mounted.

    The camera sits at ``position`` and looks at ``look_at``, with ``up`` pointing towards the
    top of the image. Both points are in the frame of the mount: the robot base frame for a
    fixed camera (``mount="world"``), the hand frame for ``mount="hand"`` (the camera then moves
    with the robot, like a wrist camera).

    Attributes:
        mount: ``"world"`` (fixed) or ``"hand"`` (attached to the robot's hand).
        position: camera position in the mount frame, metres.
        look_at: point the optical axis passes through, in the mount frame.
        up: direction that appears upwards in the image, in the mount frame.
        fovy_deg: vertical field of view in degrees.
    """

    width: int = 256
    height: int = 256
    fps: float = 10.0
    mount: str = "world"
    position: Vector3 = (1.35, 0.4, 0.9)
    look_at: Vector3 = (0.38, 0.0, 0.28)
    up: Vector3 = (0.0, 0.0, 1.0)
    fovy_deg: float = 50.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mount not in ("world", "hand"):
            raise ValueError(f"mount must be 'world' or 'hand', got {self.mount!r}")
        _require_vector3("position", self.position)
        _require_vector3("look_at", self.look_at)
        _require_vector3("up", self.up)
        if math.dist(self.position, self.look_at) < 1e-6:
            raise ValueError("look_at must differ from position")
        if not math.isfinite(self.fovy_deg) or not 1.0 <= self.fovy_deg <= 170.0:
            raise ValueError(f"fovy_deg must be within [1, 170], got {self.fovy_deg!r}")


def default_static_camera(**overrides: object) -> MujocoCameraConfig:
    """A fixed camera in front of the table, seeing the robot and the workspace."""
    settings: dict[str, object] = dict(
        name="static", mount="world", position=(1.35, 0.4, 0.9), look_at=(0.38, 0.0, 0.28),
        up=(0.0, 0.0, 1.0), fovy_deg=50.0,
    )
    settings.update(overrides)
    return MujocoCameraConfig(**settings)  # type: ignore[arg-type]


def default_wrist_camera(**overrides: object) -> MujocoCameraConfig:
    """A camera on the hand, offset from the fingers and looking past them (fingers at the top)."""
    settings: dict[str, object] = dict(
        name="wrist", mount="hand", position=(0.07, 0.0, 0.0), look_at=(0.0, 0.0, 0.3),
        up=(-1.0, 0.0, 0.0), fovy_deg=70.0,
    )
    settings.update(overrides)
    return MujocoCameraConfig(**settings)  # type: ignore[arg-type]
