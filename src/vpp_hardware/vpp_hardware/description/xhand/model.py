"""The XHand (right) kinematic model: one table of numbers, written out as URDF and MJCF.

Run ``python -m vpp_hardware.description.xhand.model`` to regenerate ``xhand_right.urdf`` and
``xhand_right.xml`` next to this file (a test checks that the checked-in files match).

Sources of the numbers
----------------------
* Joint layout, joint origins, axes, limits, effort and velocity: the public XHand URDF
  (jefferzn2001/XhandControl, ``xhandurdf/xhand_right/urdf/xhand_right.urdf``, exported from the
  vendor's CAD), which agrees with the vendor SDK's joint index order
  (:data:`vpp_core.action_space.XHAND_JOINT_NAMES`). Only the numbers are used; link meshes are
  replaced by simple shapes sized from the joint offsets.
* Link masses: the same URDF's inertial masses (palm 0.54 kg, proximal phalanges 0.063 kg,
  distal 0.016 kg, ...). Inertias here are those of the simple shapes, not of the CAD.
* Joint limits are the URDF's; the executor clamps to the limits in ``config/xhand.yaml``
  (mapped by joint name), which may be tighter.

Frames: ``palm`` is the hand's base (the XArm flange mounts to it; fingers extend along +z, the
palm faces +x, the thumb is on +y). Fingertip frames: ``thumb_tip``, ``index_tip``, ``mid_tip``,
``ring_tip``, ``pinky_tip``. Joint names are exactly ``XHAND_JOINT_NAMES``. Keep these names
stable: teleoperation retargeting and the executor refer to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["JOINTS", "LINKS", "TIPS", "PALM", "urdf_text", "mjcf_hand_body", "mjcf_text", "write_files"]

PALM = "palm"


@dataclass(frozen=True)
class Joint:
    name: str
    parent: str
    child: str
    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float]
    axis: tuple[float, float, float]
    lower: float
    upper: float
    effort: float  # [N m]
    velocity: float  # [rad/s]


@dataclass(frozen=True)
class Capsule:
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius: float


@dataclass(frozen=True)
class Box:
    center: tuple[float, float, float]
    half_size: tuple[float, float, float]


@dataclass(frozen=True)
class Link:
    name: str
    mass: float
    shapes: tuple  # Capsule | Box


_PROXIMAL = (1.1, 8.63)
_DISTAL = (0.4, 14.38)
_FLEX = (0.0, 1.919)
_PROX_LEN = 0.0558
_DIST_LEN = 0.0422483
_FINGER_RADIUS = 0.0075

JOINTS: tuple[Joint, ...] = (
    Joint("thumb_bend", PALM, "thumb_bend_link", (0.0095, 0.0228, 0.0305), (0, 0, 0), (0, 0, -1),
          0.0, 1.832, *_PROXIMAL),
    Joint("thumb_rota1", "thumb_bend_link", "thumb_link1", (0.0083177, 0.028599, -0.00178),
          (0, 0.2618, -0.0407), (1, 0, 0), -0.698, 1.57, *_PROXIMAL),
    Joint("thumb_rota2", "thumb_link1", "thumb_link2", (0, 0.0553, 0), (0, 0, 0), (1, 0, 0),
          0.0, 1.57, *_DISTAL),
    Joint("index_bend", PALM, "index_bend_link", (0.0065, 0.0265, 0.0899), (0, 0, 0), (-1, 0, 0),
          -0.174, 0.174, *_DISTAL),
    Joint("index_joint1", "index_bend_link", "index_link1", (0, 0, 0.0178), (0, 0, 0), (0, 1, 0),
          *_FLEX, *_PROXIMAL),
    Joint("index_joint2", "index_link1", "index_link2", (0, 0, _PROX_LEN), (0, 0, 0), (0, 1, 0),
          *_FLEX, *_DISTAL),
    Joint("mid_joint1", PALM, "mid_link1", (0.0065, 0.004, 0.1082), (0, 0, 0), (0, 1, 0),
          *_FLEX, *_PROXIMAL),
    Joint("mid_joint2", "mid_link1", "mid_link2", (0, 0, _PROX_LEN), (0, 0, 0), (0, 1, 0),
          *_FLEX, *_DISTAL),
    Joint("ring_joint1", PALM, "ring_link1", (0.0065, -0.016, 0.1052), (0, 0, 0), (0, 1, 0),
          *_FLEX, *_PROXIMAL),
    Joint("ring_joint2", "ring_link1", "ring_link2", (0, 0, _PROX_LEN), (0, 0, 0), (0, 1, 0),
          *_FLEX, *_DISTAL),
    Joint("pinky_joint1", PALM, "pinky_link1", (0.0065, -0.036, 0.1022), (0, 0, 0), (0, 1, 0),
          *_FLEX, *_PROXIMAL),
    Joint("pinky_joint2", "pinky_link1", "pinky_link2", (0, 0, _PROX_LEN), (0, 0, 0), (0, 1, 0),
          *_FLEX, *_DISTAL),
)

#: Fixed fingertip frames: (tip link, parent link, offset in the parent).
TIPS: tuple[tuple[str, str, tuple[float, float, float]], ...] = (
    ("thumb_tip", "thumb_link2", (0, 0.0502276, 0)),
    ("index_tip", "index_link2", (0, 0, _DIST_LEN)),
    ("mid_tip", "mid_link2", (0, 0, _DIST_LEN)),
    ("ring_tip", "ring_link2", (0, 0, _DIST_LEN)),
    ("pinky_tip", "pinky_link2", (0, 0, _DIST_LEN)),
)


def _finger_links(finger: str, base_offset: float = 0.0) -> tuple[Link, ...]:
    r = _FINGER_RADIUS
    return (
        Link(f"{finger}_link1", 0.063, (Capsule((0, 0, r), (0, 0, _PROX_LEN - r), r),)),
        Link(f"{finger}_link2", 0.016, (Capsule((0, 0, r), (0, 0, _DIST_LEN - r), r * 0.9),)),
    )


LINKS: tuple[Link, ...] = (
    Link(PALM, 0.54, (Box((0.005, -0.005, 0.0475), (0.017, 0.043, 0.0475)),)),
    Link("thumb_bend_link", 0.0115, (Capsule((0.002, 0.006, 0), (0.006, 0.022, -0.001), 0.008),)),
    Link("thumb_link1", 0.132, (Capsule((0, 0.008, 0), (0, 0.0553 - 0.008, 0), 0.009),)),
    Link("thumb_link2", 0.035, (Capsule((0, 0.008, 0), (0, 0.0502 - 0.008, 0), 0.008),)),
    Link("index_bend_link", 0.069, (Capsule((0, 0, 0.004), (0, 0, 0.0178 - 0.002), 0.008),)),
    *_finger_links("index"),
    *_finger_links("mid"),
    *_finger_links("ring"),
    *_finger_links("pinky"),
)


# ------------------------------------------------------------------------------------------
# Geometry helpers
# ------------------------------------------------------------------------------------------

def _fmt(values) -> str:
    return " ".join(f"{float(v):.7g}" for v in values)


def _rpy_to_matrix(rpy) -> np.ndarray:
    roll, pitch, yaw = rpy
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _matrix_to_rpy(m: np.ndarray) -> tuple[float, float, float]:
    pitch = math.asin(max(-1.0, min(1.0, -m[2, 0])))
    if abs(m[2, 0]) < 1 - 1e-9:
        roll = math.atan2(m[2, 1], m[2, 2])
        yaw = math.atan2(m[1, 0], m[0, 0])
    else:
        roll, yaw = math.atan2(-m[1, 2], m[1, 1]), 0.0
    return roll, pitch, yaw


def _matrix_to_quat_wxyz(m: np.ndarray) -> tuple[float, float, float, float]:
    w = math.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    if w > 1e-6:
        return (w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w))
    # 180-degree rotations do not occur in this model.
    raise ValueError("rotation too close to 180 degrees")


def _z_to(direction: np.ndarray) -> np.ndarray:
    """A rotation matrix taking +z to ``direction`` (unit)."""
    z = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _link_com(link: Link) -> np.ndarray:
    centers = []
    for shape in link.shapes:
        if isinstance(shape, Box):
            centers.append(np.array(shape.center))
        else:
            centers.append((np.array(shape.start) + np.array(shape.end)) / 2)
    return np.mean(centers, axis=0)


def _link_inertia(link: Link) -> tuple[float, float, float]:
    """Diagonal inertia of the link's bounding shape about its centre (approximate)."""
    shape = link.shapes[0]
    m = link.mass
    if isinstance(shape, Box):
        a, b, c = (2 * h for h in shape.half_size)
        return (m * (b * b + c * c) / 12, m * (a * a + c * c) / 12, m * (a * a + b * b) / 12)
    length = float(np.linalg.norm(np.array(shape.end) - np.array(shape.start))) + 2 * shape.radius
    axial = m * shape.radius**2 / 2
    transverse = m * (3 * shape.radius**2 + length**2) / 12
    direction = np.abs(np.array(shape.end) - np.array(shape.start))
    inertia = [transverse] * 3
    inertia[int(np.argmax(direction))] = axial
    return tuple(inertia)


# ------------------------------------------------------------------------------------------
# URDF
# ------------------------------------------------------------------------------------------

def _urdf_link(link: Link, prefix: str) -> str:
    lines = [f'  <link name="{prefix}{link.name}">']
    com = _link_com(link)
    ixx, iyy, izz = _link_inertia(link)
    lines.append(f'    <inertial><origin xyz="{_fmt(com)}" rpy="0 0 0"/><mass value="{link.mass}"/>'
                 f'<inertia ixx="{ixx:.4g}" ixy="0" ixz="0" iyy="{iyy:.4g}" iyz="0" izz="{izz:.4g}"/></inertial>')
    for shape in link.shapes:
        if isinstance(shape, Box):
            origin = f'<origin xyz="{_fmt(shape.center)}" rpy="0 0 0"/>'
            geometry = f'<box size="{_fmt(2 * np.array(shape.half_size))}"/>'
        else:
            start, end = np.array(shape.start, float), np.array(shape.end, float)
            rpy = _matrix_to_rpy(_z_to(end - start))
            origin = f'<origin xyz="{_fmt((start + end) / 2)}" rpy="{_fmt(rpy)}"/>'
            geometry = (f'<cylinder radius="{shape.radius:.4g}" '
                        f'length="{float(np.linalg.norm(end - start)) + 2 * shape.radius:.5g}"/>')
        for tag in ("visual", "collision"):
            lines.append(f"    <{tag}>{origin}<geometry>{geometry}</geometry></{tag}>")
    lines.append("  </link>")
    return "\n".join(lines)


def urdf_text(prefix: str = "") -> str:
    """The hand as URDF (simple shapes, no meshes)."""
    out = ['<?xml version="1.0"?>',
           "<!-- Generated by vpp_hardware.description.xhand.model; do not edit by hand. -->",
           "<!-- XHand right hand, 12 actuated joints; numbers and sources: see model.py. -->",
           '<robot name="xhand_right">']
    for link in LINKS:
        out.append(_urdf_link(link, prefix))
    for joint in JOINTS:
        out.append(
            f'  <joint name="{prefix}{joint.name}" type="revolute">'
            f'<parent link="{prefix}{joint.parent}"/><child link="{prefix}{joint.child}"/>'
            f'<origin xyz="{_fmt(joint.xyz)}" rpy="{_fmt(joint.rpy)}"/><axis xyz="{_fmt(joint.axis)}"/>'
            f'<limit lower="{joint.lower}" upper="{joint.upper}" effort="{joint.effort}" '
            f'velocity="{joint.velocity}"/></joint>')
    for tip, parent, offset in TIPS:
        out.append(f'  <link name="{prefix}{tip}"/>')
        out.append(f'  <joint name="{prefix}{tip}_joint" type="fixed"><parent link="{prefix}{parent}"/>'
                   f'<child link="{prefix}{tip}"/><origin xyz="{_fmt(offset)}" rpy="0 0 0"/></joint>')
    out.append("</robot>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# MJCF
# ------------------------------------------------------------------------------------------

def _mjcf_geoms(link: Link, indent: str) -> list[str]:
    lines = []
    # Hand geoms: contype 2 / conaffinity 1 -> they touch the world (contype 1) but not each other.
    for shape in link.shapes:
        if isinstance(shape, Box):
            lines.append(f'{indent}<geom class="xhand" type="box" pos="{_fmt(shape.center)}" '
                         f'size="{_fmt(shape.half_size)}" mass="{link.mass}"/>')
        else:
            lines.append(f'{indent}<geom class="xhand" type="capsule" fromto="{_fmt(shape.start)} '
                         f'{_fmt(shape.end)}" size="{shape.radius:.4g}" mass="{link.mass}"/>')
    return lines


def mjcf_hand_body(prefix: str = "", indent: str = "    ", pos=(0, 0, 0), quat=(1, 0, 0, 0)) -> str:
    """The hand's body tree (``<body name=prefix+'palm'>``) for inclusion in a ``<worldbody>`` or
    under an arm's flange body. Needs :func:`mjcf_defaults` in the model's ``<default>``."""
    links = {link.name: link for link in LINKS}
    children: dict[str, list[Joint]] = {}
    for joint in JOINTS:
        children.setdefault(joint.parent, []).append(joint)
    tips: dict[str, list] = {}
    for tip, parent, offset in TIPS:
        tips.setdefault(parent, []).append((tip, offset))

    def body(name: str, depth: int, joint: Joint | None, body_pos, body_quat) -> list[str]:
        pad = indent + "  " * depth
        lines = [f'{pad}<body name="{prefix}{name}" pos="{_fmt(body_pos)}" quat="{_fmt(body_quat)}">']
        if joint is not None:
            lines.append(f'{pad}  <joint name="{prefix}{joint.name}" class="xhand" axis="{_fmt(joint.axis)}" '
                         f'range="{joint.lower} {joint.upper}" actuatorfrcrange="{-joint.effort} {joint.effort}"/>')
        lines += _mjcf_geoms(links[name], pad + "  ")
        for tip, offset in tips.get(name, []):
            lines.append(f'{pad}  <site name="{prefix}{tip}" pos="{_fmt(offset)}" size="0.004"/>')
        for child in children.get(name, []):
            quat_child = _matrix_to_quat_wxyz(_rpy_to_matrix(child.rpy))
            lines += body(child.child, depth + 1, child, child.xyz, quat_child)
        lines.append(f"{pad}</body>")
        return lines

    lines = body(PALM, 0, None, pos, quat)
    lines.insert(1, f'{indent}  <site name="{prefix}palm_site" pos="0 0 0" size="0.004"/>')
    return "\n".join(lines)


def mjcf_defaults() -> str:
    """``<default class="xhand">`` for the hand's joints and geoms."""
    return ('    <default class="xhand">\n'
            '      <joint damping="0.05" armature="0.001" limited="true"/>\n'
            '      <geom contype="2" conaffinity="1" friction="1.0 0.01 0.001" rgba="0.1 0.1 0.12 1"/>\n'
            '      <position kp="4" inheritrange="1"/>\n'
            '    </default>')


def mjcf_actuators(prefix: str = "", indent: str = "    ") -> str:
    """One position servo per hand joint, named like the joint, control range = joint range."""
    return "\n".join(
        f'{indent}<position name="{prefix}{joint.name}" class="xhand" joint="{prefix}{joint.name}" '
        f'forcerange="{-joint.effort} {joint.effort}"/>' for joint in JOINTS)


def mjcf_text() -> str:
    """The hand alone, fixed in the world (palm up), as a loadable MJCF model."""
    return "\n".join([
        "<!-- Generated by vpp_hardware.description.xhand.model; do not edit by hand. -->",
        '<mujoco model="xhand_right">',
        '  <compiler angle="radian" autolimits="true"/>',
        '  <option timestep="0.002" gravity="0 0 -9.81"/>',
        "  <default>",
        mjcf_defaults(),
        "  </default>",
        "  <worldbody>",
        mjcf_hand_body(indent="    ", pos=(0, 0, 0.1)),
        "  </worldbody>",
        "  <actuator>",
        mjcf_actuators(indent="    "),
        "  </actuator>",
        "</mujoco>",
    ]) + "\n"


def write_files(directory: Path | None = None) -> list[Path]:
    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent
    written = []
    for name, text in (("xhand_right.urdf", urdf_text()), ("xhand_right.xml", mjcf_text())):
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_files():
        print(f"wrote {path}")
