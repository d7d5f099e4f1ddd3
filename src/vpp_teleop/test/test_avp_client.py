"""The real avp-stream client against a local gRPC peer speaking the Vision Pro protocol."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from vpp_core.action_space import XHAND_JOINT_NAMES
from vpp_teleop.avp_client import AvpClient, AvpClientConfig, ClientState, decode_source_stamp, encode_source_stamp
from vpp_teleop.fake_avp_server import RIGHT_WRIST_HOME, FakeAvpServer, free_loopback_host
from vpp_teleop.retargeting import HandRetargeter, RetargetingSettings

# Generous caps for waiting on events; nothing asserts how long anything took.
WAIT_S = 60.0


def wait_until(predicate, timeout=WAIT_S, poll=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


@pytest.fixture
def host():
    return free_loopback_host()


def test_source_stamp_round_trip():
    now = 1795240156.123456
    m30, m31, m32 = (np.float32(v) for v in encode_source_stamp(now))
    assert decode_source_stamp(float(m30), float(m31), float(m32), -7.0) == pytest.approx(now, abs=2e-6)
    assert decode_source_stamp(0.0, 0.0, 0.0, 1.0) is None  # a real headset's head matrix


def test_client_receives_scripted_curl_and_retargets_monotonically(host):
    """Fake headset -> real VisionProStreamer -> samples -> dex-retargeting: the fingers follow."""
    retargeter = HandRetargeter(RetargetingSettings())
    retargeter.alpha = 1.0  # compare raw optimizer output, not the filter's lag
    samples, targets = [], []
    done = threading.Event()

    def on_sample(sample):
        samples.append(sample)
        targets.append(retargeter.retarget(sample.right.joints))
        if len(samples) >= 140:
            done.set()

    # curl: open until 0.5 s, fist at 3.5 s (scenario time); speed 4 at 40 Hz -> 0.1 s per sample.
    with FakeAvpServer(host, scenario="curl", rate_hz=40.0, speed=4.0) as server:
        client = AvpClient(AvpClientConfig(ip=host, connect_timeout_s=10.0), on_sample=on_sample).start()
        try:
            assert done.wait(WAIT_S), f"only {len(samples)} samples arrived"
        finally:
            client.close()
    assert client._streamer.info_server is None  # the 8888 HTTP server was not started
    assert server.streams_started >= 1

    first = samples[0]
    assert [s.sequence for s in samples] == list(range(1, len(samples) + 1))
    assert all(s.right.valid and s.left.valid for s in samples)
    assert all(s.source_s is not None and s.arrival_s >= s.source_s - 1e-3 for s in samples)
    assert first.right.joints.shape == (27, 4, 4)
    # Y-up (headset) -> Z-up conversion done by the client lands the wrist where it was scripted.
    np.testing.assert_allclose(first.right.wrist[:3, 3], RIGHT_WRIST_HOME, atol=1e-5)

    targets = np.asarray(targets)
    flexion = [XHAND_JOINT_NAMES.index(n) for n in XHAND_JOINT_NAMES if n.endswith(("joint1", "joint2"))]
    assert len(flexion) == 8
    assert np.all(targets >= retargeter.lower - 1e-9) and np.all(targets <= retargeter.upper + 1e-9)
    # Monotone (within the optimizer's tolerance) while the scripted curl rises, open -> closed.
    steps = np.diff(targets[:, flexion], axis=0)
    assert steps.min() > -0.03, f"a flexion joint opened by {-steps.min():.3f} rad while the hand closed"
    proximal = [XHAND_JOINT_NAMES.index(n) for n in ("index_joint1", "mid_joint1", "ring_joint1", "pinky_joint1")]
    assert np.all(targets[0, proximal] < 0.1)
    assert np.all(targets[-1, proximal] > 1.5)
    assert targets[-1, flexion].sum() > targets[0, flexion].sum() + 8.0


def test_connect_timeout_reports_clearly_and_recovers(host, caplog):
    """No headset: a clear error after connect_timeout_s, retries, and data once one appears."""
    caplog.set_level(logging.INFO, logger="vpp_teleop.avp_client")
    states = []
    client = AvpClient(AvpClientConfig(ip=host, connect_timeout_s=0.5),
                       on_state=lambda state, reason: states.append(state)).start()
    server = None
    try:
        assert client.wait_for_state(ClientState.NO_DATA, WAIT_S)
        assert client.counters.timeouts >= 1
        assert client.latest() is None and not client.is_fresh()
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(f"no hand tracking from {host}:12345" in m and "Tracking Streamer app" in m for m in messages)
        server = FakeAvpServer(host, scenario="wrist", rate_hz=60.0).start()
        assert client.wait_for_first_sample(WAIT_S)
        assert client.wait_for_state(ClientState.STREAMING, WAIT_S)
    finally:
        client.close()
        if server is not None:
            server.stop()
    assert states[:2] == [ClientState.CONNECTING, ClientState.NO_DATA]


def test_stream_that_ends_is_restarted_and_staleness_detected(host):
    """The headset closing its stream ends avp-stream's thread: the client starts a new one."""
    with FakeAvpServer(host, scenario="wrist", rate_hz=60.0, duration_s=0.3) as server:
        client = AvpClient(AvpClientConfig(ip=host, connect_timeout_s=5.0, retry_backoff_s=0.1,
                                           stale_after_s=0.05)).start()
        try:
            assert wait_until(lambda: client.counters.stream_starts >= 3 and server.streams_started >= 3)
            assert client.counters.stream_ends >= 2
            assert ClientState.RECONNECTING in [state for state, _ in client.counters.history]
            sample = client.latest()
            assert sample is not None
            assert not client.is_fresh(sample, now_mono=sample.arrival_mono_s + 0.06)
        finally:
            client.close()
