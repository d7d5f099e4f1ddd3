"""A loopback xArm controller: speaks enough of the xArm TCP protocol for the real ``XArmAPI``.

No simulator or fake controller ships with ``xarm-python-sdk``. This peer implements the
controller side of what the project's driver uses, read from the installed SDK
(``xarm/core/comm/socket_port.py``, ``xarm/core/wrapper/uxbus_cmd*.py``, ``xarm/x3/base.py``,
``xarm/core/config/x_config.py``), so the unmodified client runs against it:

* **Transport.** The client opens the control socket (port 502) and then a report socket
  (30003 for ``report_type='real'``). On Linux, when ``/tmp/xarmcontroller_uds_<port>`` exists,
  it connects to that Unix socket instead, whatever the IP (unless ``forbid_uds=True``): the
  peer serves there by default, so no root is needed for port 502. One machine has one such
  path, so the peer takes an exclusive ``flock`` on ``<path>.lock`` first (a second peer waits)
  and removes stale socket files. With ``host`` set it serves TCP on that address instead
  (binding 502 needs root or CAP_NET_BIND_SERVICE).
* **Frames.** Request ``tid u16 | prot u16 | len u16 | reg u8 | params`` (len = 1 + params),
  reply ``tid | prot | len | reg | status u8 | data`` (len = 2 + data); header big-endian,
  floats little-endian float32; the reply echoes the request's protocol id (2 for the version
  handshake, 3 afterwards). Status bits: 0x10 not ready, 0x08 invalid, 0x40 error, 0x20 warning.
* **Registers.** get_version 1, motion_enable 11, set_state 12, get_state 13, get_cmdnum 14,
  get_err_warn_code 15, clean_error 16, clean_warn 17, set_mode 19, servo joint 29, servo
  Cartesian 30, get_position 41, get_servo_angle 42. Anything else is answered with status 0
  and a zero payload and logged once, so an unexpected SDK call shows up in the log.
* **Report.** The 'real' report: ``u32 BE length (87)``, state | mode << 4, cmdnum u16,
  7 joint angles, 6 pose values (mm, rad), 7 torques, at ``report_rate_hz``.

Behaviour modelled: motion enable, modes, states (servo commands are obeyed only with motion
enabled, mode 1 and no error), error injection (:meth:`XArmLoopbackPeer.inject_error`) and
``clean_error``; the motion itself is the backend's (:class:`XArmBackend`): instantaneous
kinematics for tests, the MuJoCo arm for simulation. Every servo command received is recorded
(``servo_log``) so tests can check what arrived.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

import numpy as np

from vpp_hardware.arms.xarm.kinematics import IKError, XArmModel, XARM7, pose_to_xarm, xarm_to_pose

__all__ = ["XArmBackend", "KinematicXArmBackend", "XArmLoopbackPeer", "ServoCommand",
           "CONTROL_PORT", "REPORT_REAL_PORT", "uds_path"]

logger = logging.getLogger(__name__)

CONTROL_PORT = 502
REPORT_REAL_PORT = 30003

REG_GET_VERSION = 1
REG_GET_ROBOT_SN = 2
REG_MOTION_EN = 11
REG_SET_STATE = 12
REG_GET_STATE = 13
REG_GET_CMDNUM = 14
REG_GET_ERROR = 15
REG_CLEAN_ERR = 16
REG_CLEAN_WAR = 17
REG_SET_MODE = 19
REG_SERVO_J = 29
REG_SERVO_CART = 30
REG_GET_TCP_POSE = 41
REG_GET_JOINT_POS = 42

STATUS_WARNING = 0x20
STATUS_ERROR = 0x40
STATUS_NOT_READY = 0x10

#: Controller error code the peer raises when a Cartesian servo target has no IK solution.
ERROR_NO_IK_SOLUTION = 24

STATE_MOVING = 1
STATE_READY = 2
STATE_STOPPED = 4


def uds_path(port: int) -> str:
    """The Unix-socket path the SDK client tries before TCP for ``port``."""
    return f"/tmp/xarmcontroller_uds_{port}"


class XArmBackend(ABC):
    """What the controller peer moves: joint positions and the Cartesian flange pose."""

    model: XArmModel

    @abstractmethod
    def joint_positions(self) -> np.ndarray:
        """Measured joint angles [rad]."""

    def joint_torques(self) -> np.ndarray:
        return np.zeros(self.model.dof)

    @abstractmethod
    def command_joints(self, q: np.ndarray) -> None:
        """Set the servo joint target [rad] (within limits; checked by the peer)."""

    def hold(self) -> None:
        """Stop at the measured position (motion disabled, error, mode change)."""
        self.command_joints(self.joint_positions())


class KinematicXArmBackend(XArmBackend):
    """Joints jump to each servo target (no dynamics): for protocol and driver tests."""

    def __init__(self, model: XArmModel = XARM7, initial_joints=(0.0, -0.247, 0.0, 0.909, 0.0, 1.156, 0.0)):
        self.model = model
        self._q = np.asarray(initial_joints, dtype=float).copy()
        self._lock = threading.Lock()

    def joint_positions(self) -> np.ndarray:
        with self._lock:
            return self._q.copy()

    def command_joints(self, q: np.ndarray) -> None:
        with self._lock:
            self._q = np.asarray(q, dtype=float).copy()


@dataclass(frozen=True)
class ServoCommand:
    """One servo command as received: register, the float parameters, receipt time."""

    register: int
    values: tuple[float, ...]
    received_monotonic_s: float


class XArmLoopbackPeer:
    """The controller peer (see the module docstring). Use as a context manager.

    Args:
        backend: what moves.
        host: serve TCP on this address (ports 502 / 30003; needs root). None: Unix sockets.
        report_rate_hz: rate of the 'real' report.
        lock_timeout_s: how long to wait for another peer on this machine to release the
            Unix-socket paths.
        version: the version string the controller reports (``axis,type,robotSN,boxSN,vX.Y.Z``);
            default: the backend's joint count, firmware 2.5.0.
    """

    def __init__(self, backend: XArmBackend | None = None, host: str | None = None,
                 report_rate_hz: float = 100.0, lock_timeout_s: float = 120.0,
                 version: str | None = None) -> None:
        self.backend = backend if backend is not None else KinematicXArmBackend()
        self.host = host
        self.report_period_s = 1.0 / report_rate_hz
        self.lock_timeout_s = lock_timeout_s
        dof = self.backend.model.dof
        self.version = version if version is not None else f"{dof},{dof},XF0000LB,AC0000LB,v2.5.0"
        self.servo_log: deque[ServoCommand] = deque(maxlen=10000)
        self.requests_by_register: dict[int, int] = {}
        self._state_lock = threading.RLock()
        self.motion_enabled = False
        self.mode = 0
        self.state = STATE_STOPPED
        self.error_code = 0
        self.warn_code = 0
        self._last_servo_s = 0.0
        self._stop = threading.Event()
        self._listeners: list[socket.socket] = []
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock_file = None
        self._paths: list[str] = []
        self._unknown_logged: set[int] = set()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "XArmLoopbackPeer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def client_address(self) -> str:
        """The address to give ``XArmAPI`` (any IPv4 address works with the Unix sockets)."""
        return self.host or "127.0.0.1"

    @property
    def uses_unix_sockets(self) -> bool:
        return self.host is None

    def start(self) -> None:
        if self.host is None:
            self._acquire_uds_lock()
        try:
            for port, handler in ((CONTROL_PORT, self._serve_control), (REPORT_REAL_PORT, self._serve_report)):
                listener = self._listen(port)
                self._listeners.append(listener)
                thread = threading.Thread(target=self._accept_loop, args=(listener, handler),
                                          name=f"xarm-peer-{port}", daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.stop()
            raise
        logger.info("xArm loopback controller serving on %s",
                    self.host or ", ".join(self._paths))

    def stop(self) -> None:
        self._stop.set()
        for sock in self._listeners + self._connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._listeners.clear()
        self._connections.clear()
        self._threads.clear()
        for path in self._paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._paths.clear()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _acquire_uds_lock(self) -> None:
        lock_path = uds_path(CONTROL_PORT) + ".lock"
        self._lock_file = open(lock_path, "a+")
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock_file.close()
                    self._lock_file = None
                    raise TimeoutError(
                        f"another xArm loopback peer holds {lock_path} (one per machine when serving "
                        "Unix sockets); stop it or give this peer a host address") from None
                time.sleep(0.05)

    def _listen(self, port: int) -> socket.socket:
        if self.host is not None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, port))
        else:
            path = uds_path(port)
            # We hold the lock, so a socket file left here belongs to no running peer: stale.
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            self._paths.append(path)
        listener.listen(4)
        listener.settimeout(0.2)
        return listener

    def _accept_loop(self, listener: socket.socket, handler) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            # The SDK sets socket.setdefaulttimeout(1) process-wide; a peer in the same process
            # must not inherit it on accepted sockets.
            connection.settimeout(None)
            self._connections.append(connection)
            thread = threading.Thread(target=handler, args=(connection,), name="xarm-peer-conn", daemon=True)
            thread.start()
            self._threads.append(thread)

    # ------------------------------------------------------------------ fault injection
    def inject_error(self, code: int) -> None:
        """Raise a controller error (as a collision or limit would): the arm stops."""
        with self._state_lock:
            self.error_code = int(code)
            self.state = STATE_STOPPED
            self.backend.hold()

    # ------------------------------------------------------------------ control socket
    def _serve_control(self, connection: socket.socket) -> None:
        buffer = b""
        try:
            while not self._stop.is_set():
                data = connection.recv(4096)
                if not data:
                    return
                buffer += data
                while len(buffer) >= 6:
                    length = struct.unpack(">H", buffer[4:6])[0]
                    if len(buffer) < 6 + length:
                        break
                    frame, buffer = buffer[:6 + length], buffer[6 + length:]
                    reply = self._handle_frame(frame)
                    if reply is not None:
                        connection.sendall(reply)
        except OSError:
            return
        finally:
            connection.close()

    def _handle_frame(self, frame: bytes) -> bytes | None:
        transaction, protocol, _length = struct.unpack(">HHH", frame[:6])
        register = frame[6]
        params = frame[7:]
        self.requests_by_register[register] = self.requests_by_register.get(register, 0) + 1
        with self._state_lock:
            data = self._dispatch(register, params)
            status = self._status_byte()
        payload = bytes([register, status]) + data
        return struct.pack(">HHH", transaction, protocol, len(payload)) + payload

    def _status_byte(self) -> int:
        status = 0
        if self.error_code:
            status |= STATUS_ERROR
        if self.warn_code:
            status |= STATUS_WARNING
        if self.error_code or not self.motion_enabled or self.state == STATE_STOPPED:
            status |= STATUS_NOT_READY
        return status

    @staticmethod
    def _floats(params: bytes, count: int) -> tuple[float, ...]:
        return struct.unpack(f"<{count}f", params[:4 * count])

    def _dispatch(self, register: int, params: bytes) -> bytes:
        if register == REG_GET_VERSION:
            return self.version.encode("ascii").ljust(40, b"\0")[:40]
        if register == REG_GET_ROBOT_SN:
            return self.version.split(",")[2].encode("ascii").ljust(40, b"\0")[:40]
        if register == REG_MOTION_EN:
            enable = bool(params[1]) if len(params) >= 2 else False
            self.motion_enabled = enable
            if not enable:
                self.state = STATE_STOPPED
                self.backend.hold()
            return b""
        if register == REG_SET_STATE:
            wanted = params[0] if params else 0
            if wanted == 0 and self.motion_enabled and not self.error_code:
                self.state = STATE_READY
            elif wanted in (3, 4):
                self.state = STATE_STOPPED
                self.backend.hold()
            return b""
        if register == REG_GET_STATE:
            return bytes([self._reported_state()])
        if register == REG_GET_CMDNUM:
            return struct.pack(">H", 0)
        if register == REG_GET_ERROR:
            return bytes([self.error_code & 0xFF, self.warn_code & 0xFF])
        if register == REG_CLEAN_ERR:
            if self.error_code:
                logger.info("clean_error: error %d cleared", self.error_code)
            self.error_code = 0
            self.motion_enabled = False  # the real controller needs motion_enable + set_state again
            self.state = STATE_STOPPED
            return b""
        if register == REG_CLEAN_WAR:
            self.warn_code = 0
            return b""
        if register == REG_SET_MODE:
            self.mode = params[0] if params else 0
            # A mode change takes effect with the next set_state(0).
            self.state = STATE_STOPPED
            self.backend.hold()
            return b""
        if register == REG_SERVO_J:
            values = self._floats(params, 10)
            self.servo_log.append(ServoCommand(register, values, time.monotonic()))
            if self._servo_allowed():
                q = np.asarray(values[:self.backend.model.dof])
                if np.any(q < self.backend.model.lower) or np.any(q > self.backend.model.upper):
                    self.inject_error(23)  # joint angle limit
                else:
                    self.backend.command_joints(q)
                    self._last_servo_s = time.monotonic()
            return b""
        if register == REG_SERVO_CART:
            values = self._floats(params, 9)
            self.servo_log.append(ServoCommand(register, values, time.monotonic()))
            if self._servo_allowed():
                target = xarm_to_pose(values[:6])
                try:
                    q = self.backend.model.ik(target, self.backend.joint_positions())
                except IKError as error:
                    logger.warning("servo_cartesian target %s: %s", np.round(values[:6], 3), error)
                    self.inject_error(ERROR_NO_IK_SOLUTION)
                else:
                    self.backend.command_joints(q)
                    self._last_servo_s = time.monotonic()
            return b""
        if register == REG_GET_TCP_POSE:
            return struct.pack("<6f", *self._tcp_pose())
        if register == REG_GET_JOINT_POS:
            return struct.pack("<7f", *self._joints7())
        if register not in self._unknown_logged:
            self._unknown_logged.add(register)
            logger.info("xArm register %d not modelled; answered with zeros", register)
        return bytes(64)

    def _servo_allowed(self) -> bool:
        return self.motion_enabled and self.mode == 1 and not self.error_code and self.state != STATE_STOPPED

    def _reported_state(self) -> int:
        if self.error_code or self.state == STATE_STOPPED:
            return STATE_STOPPED
        return STATE_MOVING if time.monotonic() - self._last_servo_s < 0.1 else STATE_READY

    def _joints7(self) -> list[float]:
        q = list(self.backend.joint_positions())
        return (q + [0.0] * 7)[:7]

    def _tcp_pose(self) -> list[float]:
        return pose_to_xarm(self.backend.model.fk(self.backend.joint_positions()))

    # ------------------------------------------------------------------ report socket
    def _report_packet(self) -> bytes:
        with self._state_lock:
            state = self._reported_state()
            mode = self.mode
        torques = (list(self.backend.joint_torques()) + [0.0] * 7)[:7]
        body = bytes([(state & 0x0F) | ((mode & 0x0F) << 4)]) + struct.pack(">H", 0)
        body += struct.pack("<7f", *self._joints7()) + struct.pack("<6f", *self._tcp_pose())
        body += struct.pack("<7f", *torques)
        return struct.pack(">I", 4 + len(body)) + body

    def _serve_report(self, connection: socket.socket) -> None:
        next_due = time.monotonic()
        try:
            while not self._stop.is_set():
                connection.sendall(self._report_packet())
                next_due += self.report_period_s
                delay = next_due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_due = time.monotonic()
        except OSError:
            return
        finally:
            connection.close()
