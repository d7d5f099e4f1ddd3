"""Apple Vision Pro hand tracking through the real ``avp-stream`` client, made robot-safe.

``avp_stream.VisionProStreamer`` (PyPI ``avp-stream``) dials the headset app's gRPC service
``handtracking.HandTrackingService/StreamHandUpdates`` on ``<ip>:12345`` (the port is fixed in
the client), converts the wrist and head matrices from the headset's Y-up world to Z-up, and keeps
the newest update in ``streamer.latest``. Used as is, it does three things a robot node cannot
accept, so :class:`AvpClient` runs it through a small subclass:

* its constructor blocks, with no timeout, until the first message arrives (it polls
  ``latest`` forever, printing a warning every 10 s). The subclass starts the client's own
  stream thread and returns at once; :class:`AvpClient` waits for the first message with
  ``connect_timeout_s``, logs a clear error naming the address and what to check, keeps waiting,
  and starts a new stream thread with exponential backoff whenever the client's thread gives up
  (the client retries 10 times itself, then its thread ends; a stream the headset closes also
  ends it).
* it opens an HTTP info server on ``0.0.0.0:8888`` (only used to hand its WebRTC video address
  to the headset app). Not needed for hand tracking: the subclass skips it unless
  ``info_server`` is set, so nodes and tests never collide on, or expose, that port.
* it installs process-wide SIGINT/SIGTERM handlers (raising KeyboardInterrupt) when imported and
  records every sample in memory by default. :func:`import_avp_stream` restores the previous
  handlers after the import (rclpy owns them in a node) and the client runs with
  ``record=False``.

Every processed update becomes a :class:`TrackingSample` with its arrival time (taken in the
client's gRPC thread when the message arrives, before any processing), the source time when the
sender carries one (see :data:`SOURCE_STAMP_FLAG`), and per-hand validity. Samples go to the
``on_sample`` callback from the client's stream thread, in arrival order, one per message.

The headset's own update has no timestamp field. The project's test server
(:mod:`vpp_teleop.fake_avp_server`) puts its send time in the head matrix's bottom row, which the
client ignores (it forces ``[0, 0, 0, 1]``): ``m30`` = whole seconds // 65536, ``m31`` = whole
seconds % 65536, ``m32`` = microseconds, ``m33`` = :data:`SOURCE_STAMP_FLAG`. All three are exact
in float32. Real headset messages carry ``m33 = 1`` and get no source time.

No ROS import here.
"""

from __future__ import annotations

import enum
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

__all__ = [
    "AVP_PORT",
    "SOURCE_STAMP_FLAG",
    "AvpClient",
    "AvpClientConfig",
    "ClientState",
    "HandPose",
    "TrackingSample",
    "encode_source_stamp",
    "decode_source_stamp",
    "import_avp_stream",
]

_LOG = logging.getLogger("vpp_teleop.avp_client")

#: The port ``avp_stream`` dials (hard-coded in ``VisionProStreamer.stream``).
AVP_PORT = 12345
#: Value of the head matrix's ``m33`` marking a sender time in ``m30..m32``.
SOURCE_STAMP_FLAG = -7.0
#: Methods of ``VisionProStreamer`` the subclass relies on; checked at start-up so an avp-stream
#: release that renames them fails loudly instead of silently blocking.
_REQUIRED_METHODS = ("stream", "_start_hand_tracking", "_start_info_server", "_process_hand_update", "cleanup")


def import_avp_stream():
    """Import ``avp_stream.streamer`` without letting it take over SIGINT/SIGTERM.

    The module registers handlers that raise KeyboardInterrupt from any signal, at import time;
    the previous handlers (rclpy's in a node, Python's default otherwise) are put back.
    """
    saved = {}
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        from avp_stream import streamer as avp_streamer
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
    missing = [name for name in _REQUIRED_METHODS if not hasattr(avp_streamer.VisionProStreamer, name)]
    if missing:
        raise RuntimeError(f"avp_stream.VisionProStreamer lacks {missing}: this avp-stream release "
                           f"is not supported by vpp_teleop (tested with 2.51)")
    return avp_streamer


def encode_source_stamp(time_s: float) -> tuple[float, float, float]:
    """``(m30, m31, m32)`` carrying ``time_s`` (unix seconds, microsecond resolution) in float32."""
    total_us = int(round(time_s * 1e6))
    seconds, micros = divmod(total_us, 1_000_000)
    return float(seconds // 65536), float(seconds % 65536), float(micros)


def decode_source_stamp(m30: float, m31: float, m32: float, m33: float) -> Optional[float]:
    """Unix time carried by a head matrix's bottom row, or None when it carries none."""
    if m33 != SOURCE_STAMP_FLAG or not all(math.isfinite(v) for v in (m30, m31, m32)):
        return None
    return (int(m30) * 65536 + int(m31)) + int(m32) * 1e-6


def _raw_matrix(message) -> np.ndarray:
    return np.array([[message.m00, message.m01, message.m02, message.m03],
                     [message.m10, message.m11, message.m12, message.m13],
                     [message.m20, message.m21, message.m22, message.m23]], dtype=np.float64)


def _raw_hand_valid(hand) -> bool:
    """A hand the headset tracks: a rigid wrist transform and a full skeleton, all finite."""
    wrist = _raw_matrix(hand.wristMatrix)
    if not np.isfinite(wrist).all():
        return False
    rotation = wrist[:, :3]
    if abs(np.linalg.det(rotation) - 1.0) > 0.05 or not np.allclose(rotation @ rotation.T, np.eye(3), atol=0.05):
        return False
    joints = hand.skeleton.jointMatrices
    if len(joints) < 25:
        return False
    return all(np.isfinite(_raw_matrix(j)).all() for j in joints[:25])


@dataclass(frozen=True)
class HandPose:
    """One hand of one update, as the avp-stream client delivers it.

    Attributes:
        valid: the headset tracks this hand (rigid wrist transform, full finite skeleton).
        wrist: ``(4, 4)`` wrist pose in the headset world frame, Z up (the client's conversion).
        joints: ``(N, 4, 4)`` skeleton joints relative to the wrist, N = 27 (25 from older apps).
        pinch_distance: thumb tip to index tip [m].
    """

    valid: bool
    wrist: np.ndarray
    joints: np.ndarray
    pinch_distance: float


@dataclass(frozen=True)
class TrackingSample:
    """One headset update.

    Attributes:
        sequence: updates received since this client started (1 = first).
        arrival_s: unix time the message arrived in the client's gRPC thread.
        arrival_mono_s: the same instant on ``time.monotonic()`` (for staleness and latency).
        source_s: the sender's unix time when the message carries one, else None.
        right, left: the two hands.
        head: ``(4, 4)`` head pose, Z up.
    """

    sequence: int
    arrival_s: float
    arrival_mono_s: float
    source_s: Optional[float]
    right: HandPose
    left: HandPose
    head: np.ndarray

    def hand(self, side: str) -> HandPose:
        if side not in ("right", "left"):
            raise ValueError(f"hand side must be 'right' or 'left', got {side!r}")
        return self.right if side == "right" else self.left


class ClientState(enum.Enum):
    STOPPED = "stopped"
    CONNECTING = "connecting"        # stream thread running, no message yet (within the timeout)
    NO_DATA = "no_data"              # connect_timeout_s passed without any message
    STREAMING = "streaming"          # messages newer than stale_after_s
    STALE = "stale"                  # connected before, nothing for stale_after_s
    RECONNECTING = "reconnecting"    # the client's stream thread ended; backing off


@dataclass
class AvpClientConfig:
    """Connection to the headset (the ``avp_client.`` parameters of the teleop node)."""

    #: Vision Pro address (the IP the Tracking Streamer app shows). The port is always 12345.
    ip: str = ""
    #: Report NO_DATA (with a clear error) when no update arrived this long after (re)connecting [s].
    connect_timeout_s: float = 5.0
    #: First wait before restarting a stream that ended; doubles up to retry_max_backoff_s [s].
    retry_backoff_s: float = 0.5
    retry_max_backoff_s: float = 8.0
    #: An update older than this makes the stream STALE (the robot then holds) [s].
    stale_after_s: float = 0.15
    #: Start avp-stream's HTTP info server on 0.0.0.0:8888 (only its WebRTC video needs it).
    info_server: bool = False
    #: avp-stream's own verbose console output.
    verbose: bool = False

    def validate(self) -> None:
        if not self.ip:
            raise ValueError("avp_client.ip is empty: set the Vision Pro's address (shown in its app)")
        for name in ("connect_timeout_s", "retry_backoff_s", "retry_max_backoff_s", "stale_after_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"avp_client.{name} must be > 0, got {value}")


@dataclass
class ClientCounters:
    samples: int = 0
    stream_starts: int = 0
    stream_ends: int = 0
    timeouts: int = 0
    processing_failures: int = 0
    right_invalid: int = 0
    last_error: str = ""
    history: list = field(default_factory=list)  # state transitions (state, monotonic time)


class AvpClient:
    """Background connection to a Vision Pro through ``avp_stream.VisionProStreamer``.

    ``on_sample`` (optional) is called from the client's gRPC thread for every update; keep it
    short (queue the work). ``on_state`` is called on every state change. ``latest()`` returns the
    newest sample, ``state`` the connection state (STALE is computed at call time).
    """

    def __init__(self, config: AvpClientConfig,
                 on_sample: Optional[Callable[[TrackingSample], None]] = None,
                 on_state: Optional[Callable[[ClientState, str], None]] = None,
                 logger: Optional[logging.Logger] = None) -> None:
        config.validate()
        self.config = config
        self.log = logger or _LOG
        self._on_sample = on_sample
        self._on_state = on_state
        self.counters = ClientCounters()
        self._lock = threading.Lock()
        self._latest: Optional[TrackingSample] = None
        self._first_sample = threading.Event()
        self._stop = threading.Event()
        self._state = ClientState.STOPPED
        self._state_changed = threading.Condition()
        self._streamer = None
        self._supervisor: Optional[threading.Thread] = None
        self._stream_generation = 0

    # ------------------------------------------------------------------ public API

    @property
    def address(self) -> str:
        return f"{self.config.ip}:{AVP_PORT}"

    def start(self) -> "AvpClient":
        if self._supervisor is not None:
            raise RuntimeError("AvpClient already started")
        avp_streamer = import_avp_stream()
        self._streamer = _make_streamer(avp_streamer, self)
        self._supervisor = threading.Thread(target=self._supervise, name="avp-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def close(self) -> None:
        """Stop delivering samples. avp-stream offers no way to cancel its gRPC stream: its daemon
        thread ends when the headset (or test server) closes the stream or the process exits."""
        self._stop.set()
        self._set_state(ClientState.STOPPED, "closed")
        if self._supervisor is not None:
            self._supervisor.join(timeout=5.0)
        if self._streamer is not None:
            try:
                self._streamer.cleanup()
            except Exception as exc:  # cleanup only prints in avp-stream; never let it raise here
                self.log.warning(f"avp-stream cleanup failed: {exc}")

    def latest(self) -> Optional[TrackingSample]:
        with self._lock:
            return self._latest

    @property
    def state(self) -> ClientState:
        with self._lock:
            state, latest = self._state, self._latest
        if state == ClientState.STREAMING and latest is not None:
            if time.monotonic() - latest.arrival_mono_s > self.config.stale_after_s:
                return ClientState.STALE
        return state

    def is_fresh(self, sample: Optional[TrackingSample] = None, now_mono: Optional[float] = None) -> bool:
        """True when ``sample`` (default: the newest) arrived within ``stale_after_s``."""
        sample = sample if sample is not None else self.latest()
        if sample is None:
            return False
        now_mono = time.monotonic() if now_mono is None else now_mono
        return now_mono - sample.arrival_mono_s <= self.config.stale_after_s

    def wait_for_state(self, states: set[ClientState] | ClientState, timeout: float) -> bool:
        """Block until the (stored) state is one of ``states``; False on timeout."""
        wanted = {states} if isinstance(states, ClientState) else set(states)
        deadline = time.monotonic() + timeout
        with self._state_changed:
            while self._state not in wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state_changed.wait(remaining)
        return True

    def wait_for_first_sample(self, timeout: float) -> bool:
        return self._first_sample.wait(timeout)

    # ------------------------------------------------------------------ internals

    def _set_state(self, state: ClientState, reason: str) -> None:
        with self._state_changed:
            with self._lock:
                if self._state == state:
                    return
                self._state = state
                self.counters.history.append((state, time.monotonic()))
            self._state_changed.notify_all()
        if self._on_state is not None:
            try:
                self._on_state(state, reason)
            except Exception as exc:
                self.log.error(f"state callback failed: {type(exc).__name__}: {exc}")

    def _start_stream_thread(self) -> threading.Thread:
        self._stream_generation += 1
        self.counters.stream_starts += 1
        thread = threading.Thread(target=self._run_stream, name=f"avp-stream-{self._stream_generation}", daemon=True)
        thread.start()
        return thread

    def _run_stream(self) -> None:
        try:
            self._streamer.stream()  # avp-stream's own loop: 10 connect attempts with backoff
        except Exception as exc:
            self.counters.last_error = f"{type(exc).__name__}: {exc}"
            self.log.error(f"avp-stream stream thread failed: {self.counters.last_error}")

    def _supervise(self) -> None:
        cfg = self.config
        backoff = cfg.retry_backoff_s
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            self._set_state(ClientState.CONNECTING, f"connecting to {self.address} (attempt {attempt})")
            self.log.info(f"connecting to the Vision Pro at {self.address} (attempt {attempt})")
            started_samples = self.counters.samples
            thread = self._start_stream_thread()
            waited = 0.0
            while thread.is_alive() and not self._stop.is_set():
                thread.join(timeout=min(cfg.connect_timeout_s, 0.5))
                if self.counters.samples > started_samples:
                    backoff = cfg.retry_backoff_s  # a working stream resets the backoff
                    continue
                waited += min(cfg.connect_timeout_s, 0.5)
                if waited >= cfg.connect_timeout_s:
                    self.counters.timeouts += 1
                    message = (f"no hand tracking from {self.address} after {waited:.1f} s (attempt {attempt}): "
                               "is the Tracking Streamer app running and started on the headset, is the IP "
                               "right, are both on the same network, is TCP port 12345 reachable? "
                               "still trying; the robot holds meanwhile")
                    self.log.error(message)
                    self._set_state(ClientState.NO_DATA, message)
                    waited = 0.0
            if self._stop.is_set():
                break
            self.counters.stream_ends += 1
            reason = (f"stream from {self.address} ended (avp-stream gave up or the headset closed it); "
                      f"reconnecting in {backoff:.1f} s")
            self.log.warning(reason)
            self._set_state(ClientState.RECONNECTING, reason)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2.0, cfg.retry_max_backoff_s)

    def _handle_update(self, streamer, hand_update, arrival_s: float, arrival_mono: float, before) -> None:
        """Called by the subclass after avp-stream processed one update."""
        if self._stop.is_set():
            return
        latest = streamer.latest
        if latest is None or latest is before:
            # avp-stream could not process it (it logs why) or it was a benchmark/marker message.
            self.counters.processing_failures += 1
            return
        try:
            head = hand_update.Head
            source_s = decode_source_stamp(head.m30, head.m31, head.m32, head.m33)
            right = HandPose(
                valid=_raw_hand_valid(hand_update.right_hand),
                wrist=np.array(latest["right_wrist"][0], dtype=np.float64),
                joints=np.array(latest["right_arm"], dtype=np.float64),
                pinch_distance=float(latest["right_pinch_distance"]),
            )
            left = HandPose(
                valid=_raw_hand_valid(hand_update.left_hand),
                wrist=np.array(latest["left_wrist"][0], dtype=np.float64),
                joints=np.array(latest["left_arm"], dtype=np.float64),
                pinch_distance=float(latest["left_pinch_distance"]),
            )
            head_pose = np.array(latest["head"][0], dtype=np.float64)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            self.counters.processing_failures += 1
            self.log.warning(f"dropped a malformed hand update: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            self.counters.samples += 1
            if not right.valid:
                self.counters.right_invalid += 1
            sample = TrackingSample(self.counters.samples, arrival_s, arrival_mono, source_s, right, left, head_pose)
            self._latest = sample
            first = self.counters.samples == 1
        if first:
            self.log.info(f"hand tracking is flowing from {self.address}")
            self._first_sample.set()
        if self._state != ClientState.STREAMING:
            self._set_state(ClientState.STREAMING, f"receiving hand tracking from {self.address}")
        if self._on_sample is not None:
            try:
                self._on_sample(sample)
            except Exception as exc:  # a consumer bug must not kill avp-stream's thread
                self.log.error(f"sample callback failed: {type(exc).__name__}: {exc}")


def _make_streamer(avp_streamer, client: AvpClient):
    """An instance of the subclass of ``VisionProStreamer`` that reports to ``client``."""

    class _TeleopStreamer(avp_streamer.VisionProStreamer):
        def _start_hand_tracking(self):
            # The client's version starts self.stream in a thread and then polls forever for the
            # first message; AvpClient starts (and restarts) the stream thread itself.
            pass

        def _start_info_server(self, port=8888):
            if client.config.info_server:
                super()._start_info_server(port)

        def _process_hand_update(self, hand_update, source="grpc"):
            arrival_s, arrival_mono = time.time(), time.monotonic()
            before = self.latest
            super()._process_hand_update(hand_update, source)
            client._handle_update(self, hand_update, arrival_s, arrival_mono, before)

    return _TeleopStreamer(ip=client.config.ip, record=False, verbose=client.config.verbose)
