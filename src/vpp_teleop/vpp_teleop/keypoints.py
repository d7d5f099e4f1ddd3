"""Vision Pro hand skeleton -> the 21 keypoints dex-retargeting expects, in the robot hand's frame.

Vision Pro (visionOS ARKit, via avp-stream): 27 joints relative to the wrist: 0 wrist, 1-4 thumb
(knuckle, intermediate base, intermediate tip, tip), 5-9 index (metacarpal, knuckle, intermediate
base, intermediate tip, tip), 10-14 middle, 15-19 ring, 20-24 little, 25-26 forearm (older apps
send 25). MediaPipe order (what dex-retargeting's configs index): 0 wrist, thumb 1-4, index 5-8
(MCP, PIP, DIP, tip), middle 9-12, ring 13-16, pinky 17-20. The remap drops the four finger
metacarpals and the forearm: :data:`AVP_TO_MEDIAPIPE`.

Frames. The operator frame is estimated from the keypoints themselves, so nothing depends on the
axis convention of the headset's wrist frame (only on the hand's side):

* x: from the wrist toward the middle finger's knuckle (MediaPipe 9);
* z: the palm normal, pointing out of the palm (from the index and pinky knuckles; the cross
  product's sign flips for the left hand);
* y = z x x: toward the little finger on a right hand, toward the thumb on a left hand.

``operator_to_hand`` (3x3, per hand, from the retargeting YAML) then rotates operator-frame
vectors into the robot hand's base frame (for the XHand URDF: fingers +z, palm faces +x, thumb
+y, so x_op -> +z, y_op -> -y, z_op -> +x).
"""

from __future__ import annotations

import numpy as np

__all__ = ["AVP_TO_MEDIAPIPE", "avp_to_mediapipe", "operator_frame", "keypoints_in_hand_frame",
           "InvalidHandError"]

#: Vision Pro joint index of each MediaPipe keypoint.
AVP_TO_MEDIAPIPE: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 24)

_MIN_SEGMENT_M = 1e-3


class InvalidHandError(ValueError):
    """The skeleton cannot be used (wrong shape, non-finite, degenerate palm)."""


def avp_to_mediapipe(joints: np.ndarray) -> np.ndarray:
    """``(N >= 25, 4, 4)`` wrist-relative joint transforms -> ``(21, 3)`` positions, wrist at 0."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[0] < 25 or joints.shape[1:] != (4, 4):
        raise InvalidHandError(f"expected (>=25, 4, 4) joint transforms, got {joints.shape}")
    points = joints[list(AVP_TO_MEDIAPIPE), :3, 3]
    if not np.isfinite(points).all():
        raise InvalidHandError("non-finite joint position")
    return points - points[0]


def operator_frame(keypoints: np.ndarray, side: str = "right") -> np.ndarray:
    """Rotation whose columns are the operator frame's axes, expressed in the keypoints' frame."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    kp = np.asarray(keypoints, dtype=np.float64)
    wrist, index_mcp, middle_mcp, pinky_mcp = kp[0], kp[5], kp[9], kp[17]
    forward = middle_mcp - wrist
    normal = np.cross(index_mcp - wrist, pinky_mcp - wrist)
    if side == "left":
        normal = -normal
    if np.linalg.norm(forward) < _MIN_SEGMENT_M or np.linalg.norm(normal) < _MIN_SEGMENT_M**2:
        raise InvalidHandError("degenerate palm (knuckles at the wrist): hand not tracked?")
    x = forward / np.linalg.norm(forward)
    z = normal - np.dot(normal, x) * x
    norm_z = np.linalg.norm(z)
    if norm_z < 1e-9:
        raise InvalidHandError("degenerate palm (knuckles in line with the wrist)")
    z /= norm_z
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def keypoints_in_hand_frame(joints: np.ndarray, operator_to_hand: np.ndarray, side: str = "right") -> np.ndarray:
    """Vision Pro joints -> ``(21, 3)`` MediaPipe-ordered keypoints in the robot hand's frame."""
    kp = avp_to_mediapipe(joints)
    frame = operator_frame(kp, side)
    return (kp @ frame) @ np.asarray(operator_to_hand, dtype=np.float64).T
