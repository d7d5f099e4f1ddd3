"""A gripper owned by one worker thread, so no caller ever blocks on the device.

Why: libfranka's gripper connection is not thread-safe, and its state reads and commands can
block for a whole finger motion. The executor applies gripper actions inside its control tick and
the node publishes the finger width from another thread; both must return at once. The worker
serialises every device call, runs commands one at a time (a newer command replaces one that has
not started yet), and caches the state between commands.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from vpp_hardware.arms.arm import ArmError, CommandHandle, Gripper

logger = logging.getLogger(__name__)


class _WorkerHandle(CommandHandle):
    def __init__(self) -> None:
        self._event = threading.Event()
        self._ok = False

    def finish(self, ok: bool) -> None:
        self._ok = ok
        self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._event.wait(timeout_s)

    def succeeded(self) -> bool:
        self._event.wait()
        return self._ok


class GripperWorker(Gripper):
    """Wraps ``device`` (any :class:`Gripper`); see the module docstring."""

    def __init__(self, device: Gripper, poll_period_s: float = 0.1) -> None:
        self.device = device
        self.poll_period_s = poll_period_s
        self._cond = threading.Condition()
        self._pending: Optional[tuple[Callable[[], CommandHandle], _WorkerHandle]] = None
        self._width: Optional[float] = None
        self._max_width: Optional[float] = None
        self._grasped = False
        self._last_error: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.commands_run = 0
        self.commands_superseded = 0

    # ---------------------------------------------------------------- lifecycle
    def connect(self) -> None:
        if self._thread is not None:
            return
        self.device.connect()
        self._max_width = float(self.device.max_width)
        self._refresh_state()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gripper-worker", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        self.device.disconnect()

    # ---------------------------------------------------------------- cached state
    @property
    def width(self) -> float:
        if self._width is None:
            raise ArmError(f"no gripper reading yet ({self._last_error or 'not connected'})")
        return self._width

    @property
    def max_width(self) -> float:
        if self._max_width is None:
            raise ArmError("gripper not connected")
        return self._max_width

    @property
    def is_grasped(self) -> bool:
        return self._grasped

    @property
    def last_error(self) -> Optional[str]:
        return self._last_error

    # ---------------------------------------------------------------- commands
    def _submit(self, start: Callable[[], CommandHandle]) -> CommandHandle:
        handle = _WorkerHandle()
        with self._cond:
            if self._pending is not None:
                self._pending[1].finish(False)  # replaced before it started
                self.commands_superseded += 1
            self._pending = (start, handle)
            self._cond.notify_all()
        return handle

    def move_async(self, width: float) -> CommandHandle:
        return self._submit(lambda: self.device.move_async(width))

    def grasp_async(self) -> CommandHandle:
        return self._submit(self.device.grasp_async)

    def open_async(self) -> CommandHandle:
        return self._submit(self.device.open_async)

    def stop(self) -> None:
        # Drop what has not started; the running command ends at its own pace.
        with self._cond:
            if self._pending is not None:
                self._pending[1].finish(False)
                self._pending = None

    # ---------------------------------------------------------------- worker
    def _refresh_state(self) -> None:
        try:
            self._width = float(self.device.width)
            self._grasped = bool(self.device.is_grasped)
        except Exception as error:  # noqa: BLE001 - keep the last reading, report the problem
            self._last_error = str(error)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                if self._pending is None:
                    self._cond.wait(self.poll_period_s)
                job, self._pending = self._pending, None
            if job is not None:
                start, handle = job
                ok = False
                try:
                    ok = start().succeeded()
                except Exception as error:  # noqa: BLE001 - the worker must outlive any device failure
                    self._last_error = str(error)
                    logger.warning("gripper command failed: %s", error)
                self.commands_run += 1
                self._refresh_state()  # before finish(): a waiter then reads the final width
                handle.finish(ok)
            else:
                self._refresh_state()
