"""xArm kinematics from published DH parameters (pure numpy; no SDK, no ROS).

Used by the loopback controller peer (which, like the real controller, takes Cartesian servo
targets and solves the joint angles itself) and by the simulated arm model, so the MuJoCo arm,
the peer's forward kinematics and its inverse kinematics all share one table.

Source of the numbers: UFACTORY's published kinematic parameters of the xArm6 and xArm7
(standard DH: ``T_i = Rz(theta_i + offset_i) Tz(d_i) Tx(a_i) Rx(alpha_i)``; d/a in mm in the
manual, metres here) and the joint ranges of the user manuals. With all joints at zero the
flange sits at (207, 0, 112) mm (xArm6) / (206, 0, 120.5) mm (xArm7) pointing down
(roll = 180 deg), as in the manuals; the tests check this.

Pose convention of the xArm controller: ``[x, y, z]`` in mm and ``[roll, pitch, yaw]`` with
``R = Rz(yaw) Ry(pitch) Rx(roll)``; :func:`pose_to_xarm` / :func:`xarm_to_pose` convert from/to
the project's 4x4 metre poses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DHJoint", "XArmModel", "XARM6", "XARM7", "MODELS", "pose_to_xarm", "xarm_to_pose", "IKError"]


class IKError(ValueError):
    """No joint solution within limits was found for a Cartesian target."""


@dataclass(frozen=True)
class DHJoint:
    d: float  # [m]
    a: float  # [m]
    alpha: float  # [rad]
    offset: float  # [rad]
    lower: float  # [rad]
    upper: float  # [rad]


def _dh(theta: float, joint: DHJoint) -> np.ndarray:
    ct, st = math.cos(theta + joint.offset), math.sin(theta + joint.offset)
    ca, sa = math.cos(joint.alpha), math.sin(joint.alpha)
    return np.array([
        [ct, -st * ca, st * sa, joint.a * ct],
        [st, ct * ca, -ct * sa, joint.a * st],
        [0.0, sa, ca, joint.d],
        [0.0, 0.0, 0.0, 1.0],
    ])


@dataclass(frozen=True)
class XArmModel:
    name: str
    joints: tuple[DHJoint, ...]

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints])

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints])

    def frames(self, q: np.ndarray) -> list[np.ndarray]:
        """Base->frame_i transforms for i = 0..dof (frame 0 = base, frame dof = flange)."""
        transform = np.eye(4)
        out = [transform]
        for angle, joint in zip(q, self.joints):
            transform = transform @ _dh(float(angle), joint)
            out.append(transform)
        return out

    def fk(self, q: np.ndarray) -> np.ndarray:
        """Flange pose (4x4, metres) in the base frame."""
        return self.frames(np.asarray(q, dtype=float))[-1]

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Geometric Jacobian (6 x dof): rows vx, vy, vz, wx, wy, wz in the base frame."""
        frames = self.frames(np.asarray(q, dtype=float))
        tip = frames[-1][:3, 3]
        columns = []
        for frame in frames[:-1]:
            axis = frame[:3, 2]
            columns.append(np.concatenate([np.cross(axis, tip - frame[:3, 3]), axis]))
        return np.stack(columns, axis=1)

    def ik(self, target: np.ndarray, seed: np.ndarray, tolerance_m: float = 1e-5,
           tolerance_rad: float = 1e-4, max_iterations: int = 100, damping: float = 1e-3) -> np.ndarray:
        """Joint angles reaching ``target`` (4x4) from ``seed`` (damped least squares).

        Raises:
            IKError: not converged within limits (target out of reach or a limit in the way).
        """
        q = np.clip(np.asarray(seed, dtype=float).copy(), self.lower, self.upper)
        for _ in range(max_iterations):
            current = self.fk(q)
            position_error = target[:3, 3] - current[:3, 3]
            rotation_error = _rotation_error(target[:3, :3] @ current[:3, :3].T)
            if np.linalg.norm(position_error) < tolerance_m and np.linalg.norm(rotation_error) < tolerance_rad:
                return q
            error = np.concatenate([position_error, rotation_error])
            jac = self.jacobian(q)
            step = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(6), error)
            norm = np.linalg.norm(step)
            if norm > 0.2:
                step *= 0.2 / norm
            q = np.clip(q + step, self.lower, self.upper)
        current = self.fk(q)
        raise IKError(
            f"no IK solution: position error {np.linalg.norm(target[:3, 3] - current[:3, 3]) * 1e3:.1f} mm, "
            f"rotation error {math.degrees(np.linalg.norm(_rotation_error(target[:3, :3] @ current[:3, :3].T))):.2f} deg")


def _rotation_error(rotation: np.ndarray) -> np.ndarray:
    """Rotation vector of ``rotation`` (3x3)."""
    cos_angle = max(-1.0, min(1.0, (np.trace(rotation) - 1.0) / 2.0))
    angle = math.acos(cos_angle)
    vector = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    if angle < 1e-9:
        return vector / 2.0
    if math.pi - angle < 1e-6:
        # Near 180 degrees: axis from the diagonal.
        axis = np.sqrt(np.maximum((np.diag(rotation) + 1.0) / 2.0, 0.0))
        axis *= np.sign(vector) + (vector == 0)
        return axis / np.linalg.norm(axis) * angle
    return vector * angle / (2.0 * math.sin(angle))


_DEG = math.pi / 180.0
_OFFSET = math.atan2(284.5, 53.5)  # shoulder-to-elbow link geometry: 53.5 mm x 284.5 mm

#: UFACTORY xArm6 (standard DH, metres).
XARM6 = XArmModel("xarm6", (
    DHJoint(0.267, 0.0, -math.pi / 2, 0.0, -2 * math.pi, 2 * math.pi),
    DHJoint(0.0, 0.28948866, 0.0, -_OFFSET, -118 * _DEG, 120 * _DEG),
    DHJoint(0.0, 0.0775, -math.pi / 2, _OFFSET, -225 * _DEG, 11 * _DEG),
    DHJoint(0.3425, 0.0, math.pi / 2, 0.0, -2 * math.pi, 2 * math.pi),
    DHJoint(0.0, 0.076, -math.pi / 2, 0.0, -97 * _DEG, 180 * _DEG),
    DHJoint(0.097, 0.0, 0.0, 0.0, -2 * math.pi, 2 * math.pi),
))


#: UFACTORY xArm7 (standard DH, metres; joint ranges of the xArm7 manual). The d/a/alpha values
#: equal UFACTORY's published standard D-H table for the xArm 7 (ufactory_docs, "Kinematic and
#: Dynamic Parameters of xArm 7": d 267/0/293/0/342.5/0/97 mm, a 0/0/52.5/77.5/0/76/0 mm).
XARM7 = XArmModel("xarm7", (
    DHJoint(0.267, 0.0, -math.pi / 2, 0.0, -2 * math.pi, 2 * math.pi),
    DHJoint(0.0, 0.0, math.pi / 2, 0.0, -118 * _DEG, 120 * _DEG),
    DHJoint(0.293, 0.0525, math.pi / 2, 0.0, -2 * math.pi, 2 * math.pi),
    DHJoint(0.0, 0.0775, math.pi / 2, 0.0, -11 * _DEG, 225 * _DEG),
    DHJoint(0.3425, 0.0, math.pi / 2, 0.0, -2 * math.pi, 2 * math.pi),
    DHJoint(0.0, 0.076, -math.pi / 2, 0.0, -97 * _DEG, 180 * _DEG),
    DHJoint(0.097, 0.0, 0.0, 0.0, -2 * math.pi, 2 * math.pi),
))

MODELS = {model.name: model for model in (XARM6, XARM7)}


def pose_to_xarm(pose: np.ndarray) -> list[float]:
    """4x4 pose (metres) -> ``[x, y, z mm, roll, pitch, yaw rad]`` (R = Rz Ry Rx)."""
    rotation = np.asarray(pose[:3, :3], dtype=float)
    pitch = math.asin(max(-1.0, min(1.0, -rotation[2, 0])))
    if abs(rotation[2, 0]) < 1.0 - 1e-9:
        roll = math.atan2(rotation[2, 1], rotation[2, 2])
        yaw = math.atan2(rotation[1, 0], rotation[0, 0])
    else:  # gimbal lock: put everything into roll
        roll, yaw = math.atan2(-rotation[1, 2], rotation[1, 1]), 0.0
    x, y, z = (float(v) * 1000.0 for v in pose[:3, 3])
    return [x, y, z, roll, pitch, yaw]


def xarm_to_pose(values) -> np.ndarray:
    """``[x, y, z mm, roll, pitch, yaw rad]`` -> 4x4 pose (metres)."""
    x, y, z, roll, pitch, yaw = (float(v) for v in values[:6])
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    pose = np.eye(4)
    pose[:3, :3] = np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])
    pose[:3, 3] = np.array([x, y, z]) / 1000.0
    return pose
