"""xArm driver over ``xarm-python-sdk``: servo-mode (mode 1) streaming behind the :class:`Arm` API.

* ``connect``: ``XArmAPI(host, is_radian=True, report_type='real')``, ``clean_error``,
  ``motion_enable(True)``, ``set_mode(1)``, ``set_state(0)``; the arm then holds its pose.
* ``stream_target``: one ``set_servo_cartesian([x, y, z mm, roll, pitch, yaw rad])`` per control
  tick (the controller interpolates between servo targets and solves the joints itself);
  ``stream_joint_target`` does the same with ``set_servo_angle_j``. Both first check the
  configured joint / workspace limits and never send a target outside them.
* ``read_state``: the latest 100 Hz 'real' report (joint angles, flange pose, state), taken
  from the SDK's report callback, so reading never waits on the network. ``time_s`` is the
  host monotonic time the report arrived: when reports stop, it stops, and the executor's
  watchdog notices.
* ``recover_errors``: ``clean_error`` + ``clean_warn`` + enable + mode 1 + state 0, bounded by
  ``max_recovery_attempts``.

Unix sockets: the SDK connects to ``/tmp/xarmcontroller_uds_<port>`` instead of the robot when
that file exists (the loopback peer serves there). On a robot PC keep ``forbid_uds: true`` so a
stale file can never divert the connection.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from vpp_core.action_space import is_valid_pose
from vpp_core.config import dataclass_from_dict, dataclass_to_dict
from vpp_hardware.arms.arm import Arm, ArmError, ArmState
from vpp_hardware.arms.xarm.kinematics import pose_to_xarm, xarm_to_pose

__all__ = ["XArmConfig", "XArmArm"]

logger = logging.getLogger(__name__)

_STOPPED_STATES = (4, 5)


@dataclass
class XArmConfig:
    """Connection and servo settings of :class:`XArmArm` (YAML section ``arm``)."""

    host: str = "192.168.1.185"
    #: True on the robot PC: never let the SDK use a Unix socket in /tmp instead of the robot.
    forbid_uds: bool = True
    #: Number of arm joints reported (xArm5/6/7; the xhand policy's 19-d proprio assumes 7).
    dof: int = 7
    #: Joint limits checked before ``set_servo_angle_j`` [rad] (defaults: xArm7 manual).
    joint_lower_rad: tuple[float, ...] = (-6.283, -2.059, -6.283, -0.192, -6.283, -1.693, -6.283)
    joint_upper_rad: tuple[float, ...] = (6.283, 2.094, 6.283, 3.927, 6.283, 3.142, 6.283)
    #: Seconds to wait for the first report after connecting.
    first_report_timeout_s: float = 5.0
    max_recovery_attempts: int = 3
    recovery_retry_delay_s: float = 0.2

    def __post_init__(self) -> None:
        if len(self.joint_lower_rad) != self.dof or len(self.joint_upper_rad) != self.dof:
            raise ValueError(f"joint limits must have {self.dof} values each")
        if any(lo >= hi for lo, hi in zip(self.joint_lower_rad, self.joint_upper_rad)):
            raise ValueError("every joint_lower_rad must be below joint_upper_rad")

    @classmethod
    def from_dict(cls, data) -> "XArmConfig":
        return dataclass_from_dict(cls, data)

    def to_dict(self) -> dict:
        return dataclass_to_dict(self)


class XArmArm(Arm):
    """See the module docstring. ``api_factory`` builds the SDK client (default ``XArmAPI``)."""

    def __init__(self, config: XArmConfig | None = None, api_factory=None) -> None:
        self.config = config if config is not None else XArmConfig()
        self._api_factory = api_factory
        self._api = None
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._report: tuple[float, np.ndarray, np.ndarray] | None = None  # (time, joints, pose6)
        self._previous_report: tuple[float, np.ndarray] | None = None
        self._velocity = np.zeros(self.config.dof)
        self._last_commanded: np.ndarray | None = None
        self._recoveries = 0

    # ------------------------------------------------------------------ connection
    def _make_api(self):
        if self._api_factory is not None:
            return self._api_factory(self.config)
        try:
            from xarm.wrapper import XArmAPI
        except ImportError as error:  # pragma: no cover - xarm-python-sdk is a dependency
            raise ArmError("xarm-python-sdk is not installed (pip install xarm-python-sdk)") from error
        return XArmAPI(self.config.host, is_radian=True, report_type="real",
                       forbid_uds=self.config.forbid_uds, check_joint_limit=True)

    def connect(self) -> None:
        if self._api is not None:
            return
        try:
            api = self._make_api()
        except ArmError:
            raise
        except Exception as error:  # the SDK raises bare Exception on connection failures
            raise ArmError(f"cannot connect to xArm at {self.config.host}: {error}") from error
        if not api.connected:
            raise ArmError(f"cannot connect to xArm at {self.config.host}")
        self._api = api
        api.register_report_location_callback(self._on_report, report_cartesian=True, report_joints=True)
        try:
            self._enable_servo_mode()
            deadline = time.monotonic() + self.config.first_report_timeout_s
            # Wait for a report that shows servo mode (the reports, not the replies, carry mode/state).
            while self._report is None or api.mode != 1 or api.state in _STOPPED_STATES:
                if time.monotonic() > deadline:
                    raise ArmError(f"no state report in servo mode from the xArm within "
                                   f"{self.config.first_report_timeout_s} s (mode {api.mode}, state {api.state})")
                time.sleep(0.01)
            self.hold()
        except BaseException:
            self.disconnect()
            raise
        logger.info("xArm %s connected (version %s), servo mode", self.config.host, api.version)

    def _enable_servo_mode(self) -> None:
        api = self._api
        api.clean_error()
        api.clean_warn()
        for name, code in (("motion_enable", api.motion_enable(enable=True)), ("set_mode(1)", api.set_mode(1)),
                           ("set_state(0)", api.set_state(0))):
            if code != 0:
                raise ArmError(f"xArm {name} failed with code {code} (error {api.error_code})")

    def disconnect(self) -> None:
        api, self._api = self._api, None
        if api is None:
            return
        try:
            api.release_report_location_callback(self._on_report)
            api.set_state(4)
        finally:
            api.disconnect()
        self._report = None

    @property
    def is_connected(self) -> bool:
        return self._api is not None and bool(self._api.connected)

    @property
    def api(self):
        """The SDK client (for tools and tests)."""
        return self._api

    # ------------------------------------------------------------------ state
    def _on_report(self, item: dict) -> None:
        now = time.monotonic()
        joints = np.asarray(item["joints"], dtype=float)[: self.config.dof]
        pose = np.asarray(item["cartesian"], dtype=float)[:6]
        with self._report_lock:
            if self._report is not None:
                dt = now - self._report[0]
                if dt > 1e-4:
                    self._velocity = (joints - self._report[1]) / dt
            self._report = (now, joints, pose)

    def read_state(self) -> ArmState:
        api = self._api
        if api is None:
            raise ArmError("xArm not connected")
        if not api.connected:
            raise ArmError("xArm connection lost")
        with self._report_lock:
            report, velocity = self._report, self._velocity.copy()
        if report is None:
            raise ArmError("no xArm state report yet")
        time_s, joints, pose6 = report
        state = api.state
        stopped = state in _STOPPED_STATES
        error = bool(api.error_code) or stopped
        return ArmState(
            ee_pose=xarm_to_pose(pose6),
            joint_positions=joints.copy(),
            joint_velocities=velocity,
            time_s=time_s,
            in_control=api.mode == 1 and not stopped,
            has_errors=error,
        )

    # ------------------------------------------------------------------ commands
    def stream_target(self, pose: np.ndarray, velocity: np.ndarray | None = None) -> None:
        pose = np.asarray(pose, dtype=float)
        if pose.shape != (4, 4) or not is_valid_pose(pose, tolerance=1e-4):
            raise ArmError("xArm target must be a finite 4x4 rigid transform")
        api = self._require_api()
        with self._lock:
            code = api.set_servo_cartesian(pose_to_xarm(pose), is_radian=True)
        if code != 0:
            raise ArmError(f"set_servo_cartesian failed with code {code} (controller error {self._error_code(api)})")
        self._last_commanded = pose.copy()

    def stream_joint_target(self, joints: np.ndarray) -> None:
        """Servo to joint angles [rad] (checked against the configured joint limits)."""
        joints = np.asarray(joints, dtype=float).reshape(-1)
        if joints.shape != (self.config.dof,) or not np.all(np.isfinite(joints)):
            raise ArmError(f"joint target must be {self.config.dof} finite values")
        low, high = np.asarray(self.config.joint_lower_rad), np.asarray(self.config.joint_upper_rad)
        outside = np.flatnonzero((joints < low) | (joints > high))
        if outside.size:
            i = int(outside[0])
            raise ArmError(f"joint {i + 1} target {joints[i]:.3f} rad outside [{low[i]:.3f}, {high[i]:.3f}]")
        api = self._require_api()
        with self._lock:
            code = api.set_servo_angle_j(list(joints), is_radian=True)
        if code != 0:
            raise ArmError(f"set_servo_angle_j failed with code {code} (controller error {self._error_code(api)})")

    def hold(self) -> None:
        target = self._last_commanded
        if target is None:
            target = self.read_state().ee_pose
        self.stream_target(target)

    def recover_errors(self) -> bool:
        api = self._require_api()
        for attempt in range(1, self.config.max_recovery_attempts + 1):
            try:
                self._enable_servo_mode()
                code, (error, warn) = api.get_err_warn_code()
                if code == 0 and error == 0:
                    self._last_commanded = None
                    self._recoveries += 1
                    logger.info("xArm recovered (attempt %d)", attempt)
                    return True
                logger.warning("xArm still reports error %s after clean_error (attempt %d)", error, attempt)
            except ArmError as failure:
                logger.warning("xArm recovery attempt %d failed: %s", attempt, failure)
            time.sleep(self.config.recovery_retry_delay_s)
        return False

    @property
    def last_commanded_pose(self) -> np.ndarray | None:
        return None if self._last_commanded is None else self._last_commanded.copy()

    @staticmethod
    def _error_code(api) -> int | str:
        try:
            code, (error, _warn) = api.get_err_warn_code()
            return error if code == 0 else "unknown"
        except Exception:  # noqa: BLE001 - only for the message
            return "unknown"

    def _require_api(self):
        if self._api is None:
            raise ArmError("xArm not connected")
        return self._api

    @staticmethod
    def degrees(values) -> list[float]:
        return [math.degrees(v) for v in values]
