"""The teleop loop without ROS: headset client -> one worker thread -> core -> callbacks.

avp-stream delivers each update on its gRPC thread; anything slow there backs the stream up
(gRPC buffers, latency grows without bound). So that thread only stamps the sample and appends
it to a queue. One worker takes everything queued, builds a chunk from the newest sample only
(older ones are superseded: their chunk would be replaced within one headset period anyway) and
then hands all of them to ``on_tracking`` (every update is still published/recorded). The node
(:mod:`vpp_teleop.teleop_node`) and the benchmark's in-process baseline both run this.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable, Optional

import numpy as np

from vpp_teleop.avp_client import AvpClient, AvpClientConfig, ClientState, TrackingSample
from vpp_teleop.teleop import TeleopCore, TeleopOutput

__all__ = ["TeleopRunner"]

_LOG = logging.getLogger("vpp_teleop.runner")


class TeleopRunner:
    """Runs :class:`TeleopCore` on the samples of an :class:`AvpClient`.

    Args:
        core: the mapping.
        client_config: the headset connection.
        robot_pose: returns ``(pose 4x4 or None, age_s)`` of the robot's newest measured pose.
        on_output: called with ``(sample, output)`` for every processed sample (chunk or hold).
        on_tracking: called with the list of samples taken from the queue (arrival order).
        max_queue: samples kept when the worker falls behind (the oldest are dropped and counted).
    """

    def __init__(self, core: TeleopCore, client_config: AvpClientConfig,
                 robot_pose: Callable[[], tuple[Optional[np.ndarray], float]],
                 on_output: Callable[[TrackingSample, TeleopOutput], None],
                 on_tracking: Optional[Callable[[list[TrackingSample]], None]] = None,
                 max_queue: int = 256, logger=None) -> None:
        self.core = core
        self.log = logger or _LOG
        self._robot_pose = robot_pose
        self._on_output = on_output
        self._on_tracking = on_tracking
        self._queue: collections.deque[TrackingSample] = collections.deque(maxlen=max_queue)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.samples_superseded = 0
        self.samples_overflowed = 0
        self.worker_errors = 0
        self.client = AvpClient(client_config, on_sample=self._on_sample, on_state=self._on_state, logger=logger)
        self._worker = threading.Thread(target=self._work, name="teleop-worker", daemon=True)

    def start(self) -> "TeleopRunner":
        self._worker.start()
        self.client.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.client.close()
        self._worker.join(timeout=2.0)

    # avp-stream's gRPC thread: nothing slow here.
    def _on_sample(self, sample: TrackingSample) -> None:
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self.samples_overflowed += 1
            self._queue.append(sample)
        self._wake.set()

    def _on_state(self, state: ClientState, reason: str) -> None:
        if state in (ClientState.NO_DATA, ClientState.RECONNECTING, ClientState.STALE):
            self.core.note_gap()

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(0.2):
                if self.client.state == ClientState.STALE:
                    self.core.note_gap()
                continue
            with self._lock:
                self._wake.clear()
                pending = list(self._queue)
                self._queue.clear()
            if not pending:
                continue
            self.samples_superseded += len(pending) - 1
            newest = pending[-1]
            # Clutch gestures must not be missed when samples are skipped: feed the pinch of the
            # skipped ones to the clutch first (cheap), then map the newest.
            for sample in pending[:-1]:
                self.core.observe_clutch(sample)
            try:
                pose, age = self._robot_pose()
                out = self.core.process(newest, pose, age, now_mono=time.monotonic())
                self._on_output(newest, out)
            except Exception as exc:  # bad input never crashes the loop (nor moves the robot)
                self.worker_errors += 1
                self.log.error(f"teleop step failed, holding: {type(exc).__name__}: {exc}")
            if self._on_tracking is not None:
                try:
                    self._on_tracking(pending)
                except Exception as exc:
                    self.worker_errors += 1
                    self.log.error(f"publishing hand tracking failed: {type(exc).__name__}: {exc}")
