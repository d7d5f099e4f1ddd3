"""A local peer speaking the Vision Pro's hand tracking protocol, streaming a scripted hand motion.

It implements ``handtracking.HandTrackingService/StreamHandUpdates`` with the protobuf modules
shipped in ``avp_stream.grpc_msg`` (the same ones the real client uses), so the unmodified
``avp_stream.VisionProStreamer`` connects to it exactly as to a headset. The client always dials
port 12345; give each server its own loopback address (``127.0.0.x``) to run several at once.

Motion is a function of the sample index (``t = k / rate_hz``), so every run streams the same
sequence whatever the machine's load; messages are paced to ``rate_hz`` in wall time and carry
their send time (see :mod:`vpp_teleop.avp_client`).

Scenarios (right hand drives the robot, left-hand pinch is the clutch gesture):

* ``curl``: right wrist still, fingers curl from open (t < 0.5 s) to a fist (t = 3.5 s), then stay.
* ``wrist``: fingers half open, right wrist on a 5 cm circle (period 4 s) in the horizontal plane.
* ``clutch``: left pinch at 1.0-1.4 s (engage), wrist moves +x at 5 cm/s, left pinch at
  4.0-4.4 s (release), wrist keeps moving.
* ``lost``: as ``wrist``, but the right hand is not tracked (zero matrices) for 2.0-3.0 s.
* ``demo``: wrist circle and the fingers opening and closing (period 3 s), no pinch (engage with
  the node's ``~/clutch`` service or ``episode_keys``' ``c``), forever.

CLI (for demos with the teleop node): ``python -m vpp_teleop.fake_avp_server --scenario curl
[--host 127.0.0.1] [--rate 90] [--duration 0]``; the node then uses ``avp_client.ip:=127.0.0.1``.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vpp_teleop.avp_client import AVP_PORT, SOURCE_STAMP_FLAG, encode_source_stamp
from vpp_teleop.hand_model import hand_skeleton

__all__ = ["SCENARIOS", "HandScript", "scenario_state", "FakeAvpServer", "free_loopback_host", "main"]

_LOG = logging.getLogger("vpp_teleop.fake_avp_server")

SCENARIOS = ("curl", "wrist", "clutch", "lost", "demo")

# The client converts Y-up (headset) to Z-up with this matrix (avp_stream.streamer.YUP2ZUP).
_YUP2ZUP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
_ZUP2YUP = np.linalg.inv(_YUP2ZUP)

RIGHT_WRIST_HOME = np.array([0.45, -0.15, 1.0])
LEFT_WRIST_HOME = np.array([0.45, 0.25, 1.0])
HEAD_HOME = np.array([0.0, 0.0, 1.6])


@dataclass(frozen=True)
class HandScript:
    """What the scripted operator does at one instant (Z-up headset world, metres)."""

    right_wrist: np.ndarray
    right_curl: float
    right_valid: bool
    left_wrist: np.ndarray
    left_pinch: float
    left_valid: bool = True


def _pose(position: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = position
    return out


def _ramp(t: float, start: float, end: float) -> float:
    return float(np.clip((t - start) / (end - start), 0.0, 1.0))


def _pulse(t: float, start: float, end: float) -> float:
    return 1.0 if start <= t < end else 0.0


def scenario_state(name: str, t: float) -> HandScript:
    """The scripted hands of scenario ``name`` at ``t`` seconds after the stream started."""
    right, left = RIGHT_WRIST_HOME.copy(), LEFT_WRIST_HOME.copy()
    curl, pinch, right_valid = 0.0, 0.0, True
    circle = 0.05 * np.array([math.cos(2 * math.pi * t / 4.0) - 1.0, math.sin(2 * math.pi * t / 4.0), 0.0])
    if name == "curl":
        curl = _ramp(t, 0.5, 3.5)
    elif name == "wrist":
        curl, right = 0.5, right + circle
    elif name == "clutch":
        curl = 0.3
        right = right + np.array([0.05 * t, 0.0, 0.0])
        pinch = max(_pulse(t, 1.0, 1.4), _pulse(t, 4.0, 4.4))
    elif name == "lost":
        curl, right = 0.5, right + circle
        right_valid = not (2.0 <= t < 3.0)
    elif name == "demo":
        right = right + circle
        curl = 0.5 - 0.5 * math.cos(2 * math.pi * t / 3.0)
    else:
        raise ValueError(f"unknown scenario {name!r}; known: {SCENARIOS}")
    return HandScript(_pose(right), curl, right_valid, _pose(left), pinch)


def _fill_matrix(message, matrix: np.ndarray) -> None:
    for r in range(4):
        for c in range(4):
            setattr(message, f"m{r}{c}", float(matrix[r, c]))


def _fill_hand(hand_msg, wrist_zup: np.ndarray, skeleton: np.ndarray, valid: bool) -> None:
    if valid:
        _fill_matrix(hand_msg.wristMatrix, _ZUP2YUP @ wrist_zup)
        for joint in skeleton:
            _fill_matrix(hand_msg.skeleton.jointMatrices.add(), joint)
    else:
        # An untracked hand: zero transforms (the client still parses them; the teleop
        # pipeline sees a non-rigid wrist and marks the hand invalid).
        _fill_matrix(hand_msg.wristMatrix, np.zeros((4, 4)))
        for _ in range(skeleton.shape[0]):
            _fill_matrix(hand_msg.skeleton.jointMatrices.add(), np.zeros((4, 4)))


def build_update(pb2, script: HandScript, send_time_s: Optional[float]):
    """A ``HandUpdate`` protobuf message for ``script`` (with the send time when given)."""
    update = pb2.HandUpdate()
    _fill_hand(update.right_hand, script.right_wrist, hand_skeleton(script.right_curl, 0.0, "right"), script.right_valid)
    _fill_hand(update.left_hand, script.left_wrist, hand_skeleton(0.0, script.left_pinch, "left"), script.left_valid)
    head = _ZUP2YUP @ _pose(HEAD_HOME)
    _fill_matrix(update.Head, head)
    if send_time_s is not None:
        update.Head.m30, update.Head.m31, update.Head.m32 = encode_source_stamp(send_time_s)
        update.Head.m33 = SOURCE_STAMP_FLAG
    return update


class FakeAvpServer:
    """gRPC ``HandTrackingService`` on ``host:port`` streaming ``scenario`` at ``rate_hz``.

    ``duration_s`` > 0 ends each stream after that long (the client's stream then ends);
    0 streams until stopped. ``stall`` = (start_s, length_s) stops sending (without closing the
    stream) for a while, to exercise staleness. ``speed`` > 1 plays the scenario faster (scenario
    time = wall time x speed; messages still go out at ``rate_hz``), to keep tests short.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = AVP_PORT, scenario: str = "curl",
                 rate_hz: float = 90.0, duration_s: float = 0.0,
                 stall: Optional[tuple[float, float]] = None, max_streams: int = 0,
                 speed: float = 1.0) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {SCENARIOS}")
        if not rate_hz > 0:
            raise ValueError("rate_hz must be > 0")
        self.host, self.port, self.scenario = host, int(port), scenario
        self.rate_hz, self.duration_s, self.stall = float(rate_hz), float(duration_s), stall
        self.max_streams = int(max_streams)
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.speed = float(speed)
        self.streams_started = 0
        self.messages_sent = 0
        self.last_request = None
        self.sent_log: list[tuple[int, float]] = []  # (stream-local index, send time)
        self._stop = threading.Event()
        self._server = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "FakeAvpServer":
        import grpc
        from avp_stream.grpc_msg import handtracking_pb2, handtracking_pb2_grpc

        server_self = self

        class Servicer(handtracking_pb2_grpc.HandTrackingServiceServicer):
            def StreamHandUpdates(self, request, context):
                yield from server_self._stream(handtracking_pb2, request, context)

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handtracking_pb2_grpc.add_HandTrackingServiceServicer_to_server(Servicer(), self._server)
        bound = self._server.add_insecure_port(self.address)
        if bound == 0:
            raise OSError(f"cannot listen on {self.address} (in use?)")
        self._server.start()
        _LOG.info(f"fake Vision Pro on {self.address}: scenario {self.scenario!r} at {self.rate_hz:.0f} Hz")
        return self

    def stop(self, grace: float = 0.5) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def __enter__(self) -> "FakeAvpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _stream(self, pb2, request, context):
        with self._lock:
            self.streams_started += 1
            self.last_request = request
            stream_number = self.streams_started
        if self.max_streams and stream_number > self.max_streams:
            return
        start = time.monotonic()
        k = 0
        stalled_for = 0.0
        while not self._stop.is_set() and context.is_active():
            t = k / self.rate_hz
            if self.duration_s > 0 and t * self.speed >= self.duration_s:
                return
            if self.stall is not None and self.stall[0] <= t and stalled_for == 0.0:
                stalled_for = self.stall[1]
                if self._stop.wait(stalled_for):
                    return
                start += stalled_for
            delay = start + t - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            send_time = time.time()
            update = build_update(pb2, scenario_state(self.scenario, t * self.speed), send_time)
            with self._lock:
                self.messages_sent += 1
                self.sent_log.append((k, send_time))
            yield update
            k += 1


def free_loopback_host(port: int = AVP_PORT, first: int = 40, last: int = 250) -> str:
    """A loopback address (127.0.0.x) where ``port`` is free: one fake headset per test."""
    import random
    import socket

    candidates = list(range(first, last + 1))
    random.shuffle(candidates)
    for x in candidates:
        host = f"127.0.0.{x}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return host
    raise OSError(f"no free 127.0.0.x:{port} for x in {first}..{last}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Stream a scripted hand motion as a Vision Pro would.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (the client dials port 12345)")
    parser.add_argument("--port", type=int, default=AVP_PORT)
    parser.add_argument("--scenario", default="demo", choices=SCENARIOS)
    parser.add_argument("--rate", type=float, default=90.0, help="updates per second")
    parser.add_argument("--duration", type=float, default=0.0, help="end each stream after this long [s]; 0: never")
    parser.add_argument("--speed", type=float, default=1.0, help="play the scenario this many times faster")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[fake_avp_server] %(message)s")
    server = FakeAvpServer(args.host, args.port, args.scenario, args.rate, args.duration,
                           speed=args.speed).start()
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    server.stop()
    print(f"[fake_avp_server] sent {server.messages_sent} updates in {server.streams_started} streams")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
