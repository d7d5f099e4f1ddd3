"""Adds the tabletop (table, cubes, cameras) to franky-sim's MuJoCo scene description.

franky-sim's ``MujocoSimulator`` assembles its MJCF scene as an ElementTree and documents that
bodies, geoms and cameras may be added to ``sim.worldbody`` before the simulation starts; its
``add_robot`` copies the FR3 from ``franky_sim/assets/fr3.xml`` with a ``robot<i>_`` name prefix.
So the tabletop is added to that tree: the model franky-sim compiles, steps and serves over the
libfranka protocol is the full scene, with no second model to keep in sync.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from vpp_hardware.cameras.mujoco.configuration_mujoco import MujocoCameraConfig
from vpp_hardware.sim.configuration_sim import SimWorldConfig

__all__ = ["ROBOT_PREFIX", "build_tabletop", "look_at_xyaxes", "object_joint_name"]

ROBOT_PREFIX = "robot0_"
_TABLE_HALF_THICKNESS_M = 0.02
# Table top in the robot base frame: the base sits near its back edge.
_TABLE_X_RANGE_M = (-0.3, 1.0)
_TABLE_HALF_WIDTH_M = 0.7


def object_joint_name(object_name: str) -> str:
    """Name of the free joint of a simulated object."""
    return f"{object_name}_joint"


def look_at_xyaxes(
    position: Sequence[float], target: Sequence[float], up: Sequence[float]
) -> tuple[float, ...]:
    """MuJoCo ``xyaxes`` for a camera at ``position`` looking at ``target``.

    A MuJoCo camera looks along its -z axis with +y up in the image, so z points from the target
    to the camera, x = up x z and y = z x x.

    Raises:
        ValueError: ``up`` is parallel to the viewing direction.
    """
    position, target, up = (np.asarray(v, dtype=float) for v in (position, target, up))
    z_axis = position - target
    z_axis /= np.linalg.norm(z_axis)
    x_axis = np.cross(up, z_axis)
    norm = np.linalg.norm(x_axis)
    if norm < 1e-6:
        raise ValueError("camera 'up' must not be parallel to the viewing direction")
    x_axis /= norm
    y_axis = np.cross(z_axis, x_axis)
    return tuple(float(v) for v in (*x_axis, *y_axis))


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _find_body(root: ET.Element, name: str) -> ET.Element:
    for body in root.iter("body"):
        if body.get("name") == name:
            return body
    raise ValueError(f"body {name!r} not found in franky-sim's robot model")


def _add_camera(parent: ET.Element, camera: MujocoCameraConfig, offset: np.ndarray) -> None:
    position = np.asarray(camera.position, dtype=float) + offset
    look_at = np.asarray(camera.look_at, dtype=float) + offset
    ET.SubElement(
        parent,
        "camera",
        name=camera.name,
        mode="fixed",
        pos=_fmt(position),
        xyaxes=_fmt(look_at_xyaxes(position, look_at, camera.up)),
        fovy=f"{camera.fovy_deg:.6g}",
    )


def build_tabletop(scene: ET.Element, worldbody: ET.Element, config: SimWorldConfig,
                   hand_body: str = f"{ROBOT_PREFIX}hand") -> None:
    """Add table, objects, cameras and render settings to a franky-sim scene.

    Call after ``sim.add_robot(position=(0, 0, config.table_height_m))`` and before the
    simulation starts. Objects are placed at the middle of the object region; ``SimWorld.reset``
    moves them. ``hand_body`` is the body that carries ``mount="hand"`` cameras (another robot's
    scene, e.g. the XArm + XHand one, passes its own).
    """
    height = config.table_height_m
    base_offset = np.array([0.0, 0.0, height])

    assets = scene.find("asset")
    if assets is None:
        raise ValueError("franky-sim scene has no <asset> element")
    # A faint 10 cm checker instead of a flat colour: motion over the table then shows in the
    # images (as the texture of a real table top does).
    ET.SubElement(
        assets, "texture", name="table_top", type="2d", builtin="checker",
        rgb1="0.62 0.48 0.34", rgb2="0.52 0.40 0.28", width="256", height="256",
    )
    ET.SubElement(
        assets, "material", name="table_top", texture="table_top", texrepeat="5 5",
        texuniform="true", specular="0.1",
    )
    ET.SubElement(assets, "material", name="table_leg", rgba="0.3 0.3 0.32 1")

    x_low, x_high = _TABLE_X_RANGE_M
    ET.SubElement(
        worldbody,
        "geom",
        name="table_top",
        type="box",
        material="table_top",
        size=_fmt(((x_high - x_low) / 2, _TABLE_HALF_WIDTH_M, _TABLE_HALF_THICKNESS_M)),
        pos=_fmt(((x_high + x_low) / 2, 0.0, height - _TABLE_HALF_THICKNESS_M)),
    )
    leg_half_height = max(height - 2 * _TABLE_HALF_THICKNESS_M, 0.0) / 2
    if leg_half_height > 0:
        for index, (x, y) in enumerate(
            [(x_low + 0.05, -0.65), (x_low + 0.05, 0.65), (x_high - 0.05, -0.65),
             (x_high - 0.05, 0.65)]
        ):
            # Visual only: the table top carries the contacts.
            ET.SubElement(
                worldbody, "geom", name=f"table_leg{index}", type="box", material="table_leg",
                contype="0", conaffinity="0", size=_fmt((0.03, 0.03, leg_half_height)),
                pos=_fmt((x, y, leg_half_height)),
            )

    centre = (np.mean(config.object_region_x_m), np.mean(config.object_region_y_m))
    count = max(len(config.objects), 1)
    for index, obj in enumerate(config.objects):
        y = centre[1] + (index - (count - 1) / 2) * (obj.half_size_m * 4)
        body = ET.SubElement(
            worldbody, "body", name=obj.name,
            pos=_fmt((centre[0], y, height + obj.half_size_m)),
        )
        ET.SubElement(body, "freejoint", name=object_joint_name(obj.name))
        ET.SubElement(
            body, "geom", name=f"{obj.name}_geom", type="box",
            size=_fmt((obj.half_size_m,) * 3), rgba=_fmt(obj.rgba), mass=f"{obj.mass_kg:.6g}",
            friction="1 0.005 0.0001",
        )

    hand = _find_body(worldbody, hand_body)
    for camera in config.cameras:
        if camera.mount == "hand":
            _add_camera(hand, camera, np.zeros(3))
        else:
            _add_camera(worldbody, camera, base_offset)

    visual = scene.find("visual")
    if visual is None:
        visual = ET.SubElement(scene, "visual")
    quality = visual.find("quality")
    if quality is None:
        quality = ET.SubElement(visual, "quality")
    quality.set("offsamples", str(config.multisamples))
    quality.set("shadowsize", "2048" if config.shadows else "256")
    global_settings = visual.find("global")
    if global_settings is None:
        global_settings = ET.SubElement(visual, "global")
    global_settings.set("offwidth", str(max([640] + [c.width for c in config.cameras])))
    global_settings.set("offheight", str(max([480] + [c.height for c in config.cameras])))
