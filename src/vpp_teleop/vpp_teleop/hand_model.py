"""A kinematic human hand that produces Vision Pro style skeletons (27 joints) for scripted motion.

Used by the test/demo gRPC server (:mod:`vpp_teleop.fake_avp_server`). It is not a model of the
visionOS conventions beyond what the teleop pipeline relies on: the joint order (wrist 0,
thumb 1-4, index 5-9, middle 10-14, ring 15-19, little 20-24, forearm 25-26), joints expressed
relative to the wrist, metres. The wrist-local frame here is x toward the fingers, y toward the
thumb (right hand; mirrored for the left), z out of the back of the hand; the teleop pipeline
estimates the hand frame from the keypoints themselves, so it does not depend on this choice.

``curl`` in [0, 1] bends the four fingers (0 = flat, 1 = fist) and swings the thumb across the
palm; ``pinch`` in [0, 1] brings the thumb tip onto the index tip (the clutch gesture).
"""

from __future__ import annotations

import numpy as np

__all__ = ["hand_skeleton", "NUM_JOINTS"]

NUM_JOINTS = 27

# (y offset of the knuckle, metacarpal, proximal, intermediate, distal lengths) [m]
_FINGERS = {
    "index": (0.022, 0.085, 0.042, 0.025, 0.022),
    "middle": (0.000, 0.088, 0.046, 0.028, 0.024),
    "ring": (-0.018, 0.082, 0.043, 0.027, 0.023),
    "little": (-0.035, 0.075, 0.034, 0.020, 0.021),
}
_FINGER_START = {"index": 5, "middle": 10, "ring": 15, "little": 20}
# Flexion of MCP, PIP, DIP at curl = 1 [rad]
_MAX_FLEX = (1.35, 1.55, 1.0)
_THUMB_KNUCKLE = np.array([0.028, 0.022, -0.012])
_THUMB_OPEN_DIR = np.array([0.55, 0.78, -0.25])
_THUMB_LENGTHS = (0.045, 0.032, 0.028)


def _frame(direction: np.ndarray, position: np.ndarray) -> np.ndarray:
    """A joint transform whose x axis points along ``direction`` (y kept close to +y)."""
    x = direction / np.linalg.norm(direction)
    up = np.array([0.0, 1.0, 0.0]) if abs(x[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
    z = np.cross(x, up)
    z /= np.linalg.norm(z)
    y = np.cross(z, x)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, y, z], axis=1)
    out[:3, 3] = position
    return out


def _finger(y_offset: float, lengths: tuple[float, ...], curl: float) -> list[np.ndarray]:
    meta, prox, inter, dist = lengths
    base = np.array([0.012, 0.5 * y_offset, 0.0])
    knuckle = np.array([meta, y_offset, 0.0])
    joints = [_frame(knuckle - base, base)]
    position, angle = knuckle.copy(), 0.0
    for length, max_flex in zip((prox, inter, dist), _MAX_FLEX):
        angle += curl * max_flex
        direction = np.array([np.cos(angle), 0.0, -np.sin(angle)])
        joints.append(_frame(direction, position))
        position = position + length * direction
    joints.append(_frame(np.array([np.cos(angle), 0.0, -np.sin(angle)]), position))
    return joints  # metacarpal, knuckle, intermediate base, intermediate tip, tip


def _thumb(curl: float, pinch: float, index_tip: np.ndarray) -> list[np.ndarray]:
    open_dir = _THUMB_OPEN_DIR / np.linalg.norm(_THUMB_OPEN_DIR)
    total = sum(_THUMB_LENGTHS)
    open_tip = _THUMB_KNUCKLE + total * open_dir
    # Fist: the tip rests over the middle finger's middle phalanx, below the palm.
    closed_tip = np.array([0.105, -0.005, -0.045])
    tip = (1.0 - curl) * open_tip + curl * closed_tip
    tip = (1.0 - pinch) * tip + pinch * (index_tip + np.array([0.0, 0.0, -0.004]))
    chord = tip - _THUMB_KNUCKLE
    # A slight bulge toward the back/outside of the hand keeps the chain thumb-like.
    bulge = np.array([0.0, 0.012, 0.01]) * (1.0 - 0.5 * pinch)
    fractions = np.cumsum((0.0,) + _THUMB_LENGTHS) / total
    points = [_THUMB_KNUCKLE + f * chord + 4.0 * f * (1.0 - f) * bulge for f in fractions]
    joints = []
    for i, point in enumerate(points):
        direction = points[min(i + 1, 3)] - points[min(i, 2)]
        joints.append(_frame(direction, point))
    return joints  # knuckle, intermediate base, intermediate tip, tip


def hand_skeleton(curl: float = 0.0, pinch: float = 0.0, side: str = "right") -> np.ndarray:
    """``(27, 4, 4)`` wrist-relative joint transforms of a hand with the given curl and pinch."""
    curl = float(np.clip(curl, 0.0, 1.0))
    pinch = float(np.clip(pinch, 0.0, 1.0))
    joints = [None] * NUM_JOINTS
    joints[0] = np.eye(4)
    index_curl = max(curl, 0.35 * pinch)
    for name, (y_offset, *lengths) in _FINGERS.items():
        finger_curl = index_curl if name == "index" else curl
        for k, transform in enumerate(_finger(y_offset, tuple(lengths), finger_curl)):
            joints[_FINGER_START[name] + k] = transform
    for k, transform in enumerate(_thumb(curl, pinch, joints[9][:3, 3])):
        joints[1 + k] = transform
    joints[25] = _frame(np.array([1.0, 0.0, 0.0]), np.array([-0.01, 0.0, 0.0]))  # forearm wrist
    joints[26] = _frame(np.array([1.0, 0.0, 0.0]), np.array([-0.25, 0.0, 0.0]))  # forearm arm
    out = np.stack(joints)
    if side == "left":
        mirror = np.diag([1.0, -1.0, 1.0, 1.0])
        out = mirror @ out @ mirror
    elif side != "right":
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return out
