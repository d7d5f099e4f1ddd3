"""The real XHand through the vendor SDK (``xhand_controller``), imported only when installed.

The SDK is not on PyPI (the PyPI package ``xhand`` is an empty placeholder). On the robot PC,
install the wheel that comes with the hand (vendor download / support; wheels exist for CPython
3.10 and 3.12) into the same environment, e.g. ``pip install xhand_controller-*-cp312-*.whl``,
give the user access to the serial port (``sudo usermod -aG dialout $USER``) and set
``hand.port`` in ``config/xhand.yaml`` (``/dev/ttyUSB0`` at 3 Mbaud, or an EtherCAT interface
name with ``hand.connection: ethercat``).

SDK use (from the vendor's examples): ``XHandControl()``, ``open_serial(port, baud)`` or
``open_ethercat(ifname)``, ``list_hands_id()``, ``send_command(hand_id, HandCommand_t)`` with
per-finger ``id, kp, ki, kd, position [rad], tor_max, mode`` (3 = position), and
``read_state(hand_id, force_update)``. Joint indices are the SDK's, which is the order of
:data:`vpp_core.action_space.XHAND_JOINT_NAMES`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from vpp_core.action_space import XHAND_JOINT_NAMES
from vpp_hardware.hands.hand import Hand, HandError

__all__ = ["XHandSDKConfig", "XHandSDKHand", "sdk_available"]

logger = logging.getLogger(__name__)

_POSITION_MODE = 3


def sdk_available() -> bool:
    try:
        import xhand_controller  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class XHandSDKConfig:
    """Vendor-SDK connection and per-joint servo gains (YAML section ``hand``)."""

    #: "serial" or "ethercat".
    connection: str = "serial"
    #: Serial device or EtherCAT interface name.
    port: str = "/dev/ttyUSB0"
    baud_rate: int = 3000000
    #: Hand id on the bus; -1: the first one ``list_hands_id()`` reports.
    hand_id: int = -1
    kp: int = 100
    ki: int = 0
    kd: int = 0
    #: Torque limit passed to the firmware (SDK units, mNm).
    tor_max: int = 300

    def __post_init__(self) -> None:
        if self.connection not in ("serial", "ethercat"):
            raise ValueError(f"connection must be 'serial' or 'ethercat', got {self.connection!r}")


class XHandSDKHand(Hand):
    def __init__(self, config: XHandSDKConfig | None = None) -> None:
        self.config = config if config is not None else XHandSDKConfig()
        self._device = None
        self._hand_id = 0
        self._command = None
        self._lock = threading.Lock()

    @property
    def joint_names(self) -> tuple[str, ...]:
        return XHAND_JOINT_NAMES

    @property
    def is_connected(self) -> bool:
        return self._device is not None

    def connect(self) -> None:
        try:
            import xhand_controller
        except ImportError as error:
            raise HandError(
                "the XHand vendor SDK (xhand_controller) is not installed: install the wheel shipped "
                "with the hand on the robot PC (see vpp_hardware/hands/xhand_sdk.py), or run with "
                "use_sim:=true") from error
        device = xhand_controller.XHandControl()
        cfg = self.config
        if cfg.connection == "serial":
            result = device.open_serial(cfg.port, cfg.baud_rate)
        else:
            result = device.open_ethercat(cfg.port)
        if not _ok(result):
            raise HandError(f"XHand: cannot open {cfg.connection} {cfg.port}: {_message(result)}")
        hand_ids = list(device.list_hands_id())
        if not hand_ids:
            device.close_device()
            raise HandError(f"XHand: no hand found on {cfg.port}")
        self._hand_id = hand_ids[0] if cfg.hand_id < 0 else cfg.hand_id
        if self._hand_id not in hand_ids:
            device.close_device()
            raise HandError(f"XHand: hand id {self._hand_id} not on the bus (found {hand_ids})")
        command = xhand_controller.HandCommand_t()
        for index in range(len(XHAND_JOINT_NAMES)):
            finger = command.finger_command[index]
            finger.id = index
            finger.kp, finger.ki, finger.kd = cfg.kp, cfg.ki, cfg.kd
            finger.tor_max = cfg.tor_max
            finger.mode = _POSITION_MODE
        self._device, self._command = device, command
        logger.info("XHand %d connected on %s", self._hand_id, cfg.port)

    def disconnect(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            device.close_device()

    def command_positions(self, positions: np.ndarray) -> None:
        positions = self._check_command(positions)
        if self._device is None:
            raise HandError("XHand not connected")
        with self._lock:
            for index, value in enumerate(positions):
                self._command.finger_command[index].position = float(value)
            result = self._device.send_command(self._hand_id, self._command)
        if not _ok(result):
            raise HandError(f"XHand send_command failed: {_message(result)}")

    def read_positions(self) -> np.ndarray:
        if self._device is None:
            raise HandError("XHand not connected")
        with self._lock:
            result, state = self._device.read_state(self._hand_id, False)
        if not _ok(result):
            raise HandError(f"XHand read_state failed: {_message(result)}")
        return np.array([state.finger_state[i].position for i in range(len(XHAND_JOINT_NAMES))], dtype=float)


def _ok(result) -> bool:
    # The SDK returns an error struct whose error_code is 0 on success.
    return getattr(result, "error_code", 0) == 0


def _message(result) -> str:
    return str(getattr(result, "error_message", result))
