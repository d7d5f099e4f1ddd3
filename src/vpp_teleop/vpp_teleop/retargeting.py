"""Vision Pro hand skeleton -> 12 XHand joint targets, through dex-retargeting.

The optimizer and its configuration are dex-retargeting's (``RetargetingConfig`` /
``SeqRetargeting``); the project supplies the configuration file
(``config/teleop/xhand_right_retargeting.yaml``: a ``retargeting:`` section in dex-retargeting's
format pointing to the project's XHand URDF, and a ``vpp:`` section with the operator-to-hand
rotation per hand and the low-pass filter), the keypoint conversion (:mod:`.keypoints`), the
filter (reset when tracking is lost, so a re-acquired hand does not drag the old pose along), and
the clamp to the robot's configured joint limits. Output order is
:data:`vpp_core.action_space.XHAND_JOINT_NAMES`; joints are mapped by name.

No ROS import here.
"""

from __future__ import annotations

import importlib.util
import pathlib
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import yaml

from vpp_core.action_space import XHAND_JOINT_NAMES
from vpp_teleop.keypoints import keypoints_in_hand_frame

__all__ = ["HandRetargeter", "RetargetingSettings", "resolve_path", "REPO_ROOT", "DEFAULT_RETARGETING_CONFIG"]

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
DEFAULT_RETARGETING_CONFIG = "config/teleop/xhand_right_retargeting.yaml"
_WARM_UP_ITERATIONS = 10


def resolve_path(path: str, base: Optional[pathlib.Path] = None) -> pathlib.Path:
    """``python://pkg/rel/path`` (a file inside an importable package), absolute, or relative to
    ``base`` (default: the repository root, then the installed ``vpp_bringup`` share directory)."""
    if path.startswith("python://"):
        package, _, relative = path[len("python://"):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"{path}: Python package {package!r} not found")
        candidate = pathlib.Path(list(spec.submodule_search_locations)[0]) / relative
        if not candidate.exists():
            raise FileNotFoundError(f"{path}: {candidate} does not exist")
        return candidate
    candidate = pathlib.Path(path)
    if candidate.is_absolute():
        if not candidate.exists():
            raise FileNotFoundError(f"{candidate} does not exist")
        return candidate
    bases = [base] if base is not None else [REPO_ROOT]
    if base is None:
        try:
            from ament_index_python.packages import get_package_share_directory
            bases.append(pathlib.Path(get_package_share_directory("vpp_bringup")))
        except Exception:  # no ament index (plain venv): the repository root is enough
            pass
    for root in bases:
        if (root / candidate).exists():
            return root / candidate
    raise FileNotFoundError(f"{path} not found under {[str(b) for b in bases]}")


def _float32_inside(values: np.ndarray, up: bool) -> np.ndarray:
    """The float32 values nearest to ``values`` on the inside of the range (as float64)."""
    as32 = values.astype(np.float32)
    if up:
        outside = as32.astype(np.float64) < values
        as32 = np.where(outside, np.nextafter(as32, np.float32(np.inf)), as32)
    else:
        outside = as32.astype(np.float64) > values
        as32 = np.where(outside, np.nextafter(as32, np.float32(-np.inf)), as32)
    return as32.astype(np.float64)


@dataclass
class RetargetingSettings:
    """Hand retargeting (the ``retargeting.`` parameters of the teleop node)."""

    #: Retargeting YAML (dex-retargeting's section + the project's); relative to the repository.
    config_file: str = DEFAULT_RETARGETING_CONFIG
    #: Which operator hand drives the XHand.
    hand: str = "right"
    #: Joint limits in XHAND_JOINT_NAMES order, flat [low0, high0, low1, high1, ...] [rad];
    #: empty: the URDF's. The teleop node fills them from the executor's section of the robot YAML.
    joint_limits: tuple[float, ...] = ()


def _build_without_leaking_temp_files(config):
    """``config.build()`` with its scratch files removed afterwards.

    dex-retargeting's ``build`` rewrites the URDF into a fresh ``tempfile.mkdtemp`` folder and never
    deletes it (one leaked folder per retargeter: a teleop PC restarted daily fills /tmp). The
    rewritten file is only read while pinocchio loads the model, so a scratch directory that is
    removed after ``build`` returns is enough.
    """
    with tempfile.TemporaryDirectory(prefix="vpp_retargeting-") as scratch:
        previous = tempfile.tempdir
        tempfile.tempdir = scratch
        try:
            return config.build()
        finally:
            tempfile.tempdir = previous


class HandRetargeter:
    """Skeleton in, 12 clamped, filtered XHand joint targets out."""

    def __init__(self, settings: RetargetingSettings) -> None:
        from dex_retargeting.retargeting_config import RetargetingConfig

        if settings.hand not in ("right", "left"):
            raise ValueError(f"retargeting.hand must be 'right' or 'left', got {settings.hand!r}")
        self.settings = settings
        self.config_path = resolve_path(settings.config_file)
        document = yaml.safe_load(self.config_path.read_text())
        if not isinstance(document, dict) or "retargeting" not in document:
            raise ValueError(f"{self.config_path}: no 'retargeting' section")
        dex_cfg = dict(document["retargeting"])
        project = document.get("vpp", {}) or {}
        dex_cfg["urdf_path"] = str(resolve_path(str(dex_cfg["urdf_path"]), base=self.config_path.parent)
                                   if not str(dex_cfg["urdf_path"]).startswith("python://")
                                   else resolve_path(str(dex_cfg["urdf_path"])))
        self.urdf_path = dex_cfg["urdf_path"]
        self.retargeting_type = str(dex_cfg.get("type", "")).lower()
        self.indices = np.asarray(dex_cfg.get("target_link_human_indices"), dtype=int) if \
            dex_cfg.get("target_link_human_indices") is not None else None
        self._seq = _build_without_leaking_temp_files(RetargetingConfig.from_dict(dex_cfg))
        names = list(self._seq.optimizer.robot.dof_joint_names)
        missing = [n for n in XHAND_JOINT_NAMES if n not in names]
        if missing:
            raise ValueError(f"{self.urdf_path}: joints {missing} missing (has {names})")
        self._order = np.array([names.index(n) for n in XHAND_JOINT_NAMES])

        matrix = (project.get("operator_to_hand") or {}).get(settings.hand)
        if matrix is None:
            raise ValueError(f"{self.config_path}: vpp.operator_to_hand.{settings.hand} missing")
        self.operator_to_hand = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
        if not np.allclose(self.operator_to_hand @ self.operator_to_hand.T, np.eye(3), atol=1e-6):
            raise ValueError(f"{self.config_path}: vpp.operator_to_hand.{settings.hand} is not orthogonal")
        self.alpha = float(project.get("low_pass_alpha", 1.0))
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"{self.config_path}: vpp.low_pass_alpha must be in (0, 1], got {self.alpha}")

        urdf_limits = np.asarray(self._seq.optimizer.robot.joint_limits, dtype=np.float64)[self._order]
        self.lower, self.upper = urdf_limits[:, 0].copy(), urdf_limits[:, 1].copy()
        if settings.joint_limits:
            limits = np.asarray(settings.joint_limits, dtype=np.float64)
            if limits.shape != (2 * len(XHAND_JOINT_NAMES),) or not np.isfinite(limits).all():
                raise ValueError(f"retargeting.joint_limits needs {2 * len(XHAND_JOINT_NAMES)} finite values "
                                 f"(low, high per joint), got {limits.shape[0]}")
            limits = limits.reshape(-1, 2)
            if (limits[:, 0] > limits[:, 1]).any():
                raise ValueError("retargeting.joint_limits: a low limit above its high limit")
            self.lower = np.maximum(self.lower, limits[:, 0])
            self.upper = np.minimum(self.upper, limits[:, 1])
        # Chunks carry float32: keep the limits representable, so a target at a limit does not
        # round to just outside it (the executor would clamp it and log every time).
        self.lower = _float32_inside(self.lower, up=True)
        self.upper = _float32_inside(self.upper, up=False)
        self._filtered: Optional[np.ndarray] = None

    @property
    def joint_names(self) -> tuple[str, ...]:
        return XHAND_JOINT_NAMES

    def reset(self) -> None:
        """Forget the filter state (tracking lost: the next hand starts fresh)."""
        self._filtered = None

    def reference_value(self, keypoints: np.ndarray) -> np.ndarray:
        """The optimizer's input for MediaPipe-ordered keypoints in the hand frame."""
        if self.retargeting_type == "vector":
            return keypoints[self.indices[1], :] - keypoints[self.indices[0], :]
        if self.retargeting_type == "position":
            return keypoints[self.indices, :]
        # DexPilot: its own pairs, all 21 keypoints' wrist-to-tip layout from MediaPipe order.
        optimizer = self._seq.optimizer
        origin, task = optimizer.target_link_human_indices
        return keypoints[task, :] - keypoints[origin, :]

    def keypoints(self, joints: np.ndarray) -> np.ndarray:
        return keypoints_in_hand_frame(joints, self.operator_to_hand, self.settings.hand)

    def retarget(self, joints: np.ndarray) -> np.ndarray:
        """Vision Pro joints ``(27 or 25, 4, 4)`` -> ``(12,)`` targets [rad], XHAND_JOINT_NAMES order.

        Raises :class:`vpp_teleop.keypoints.InvalidHandError` for an unusable skeleton and
        ``RuntimeError`` when the optimizer returns non-finite values.
        """
        keypoints = self.keypoints(joints)
        reference = self.reference_value(keypoints)
        # The optimizer is local and warm-started from its previous solution; after a reset its
        # first solution (started from mid-range) is not converged: iterate on the same input.
        for _ in range(_WARM_UP_ITERATIONS if self._filtered is None else 1):
            qpos = np.asarray(self._seq.retarget(reference), dtype=np.float64)[self._order]
        if not np.isfinite(qpos).all():
            self._seq.last_qpos = np.clip(np.zeros_like(self._seq.last_qpos), *self._seq.joint_limits.T)
            raise RuntimeError("retargeting produced non-finite joint values")
        qpos = np.clip(qpos, self.lower, self.upper)
        if self._filtered is None:
            self._filtered = qpos
        else:
            self._filtered = self._filtered + self.alpha * (qpos - self._filtered)
        return self._filtered.copy()


def curl_sequence(retargeter: HandRetargeter, curls: Sequence[float]) -> np.ndarray:
    """Targets for the scripted hand at each curl (a helper for tests and tuning)."""
    from vpp_teleop.hand_model import hand_skeleton

    return np.stack([retargeter.retarget(hand_skeleton(c, 0.0, retargeter.settings.hand)) for c in curls])
