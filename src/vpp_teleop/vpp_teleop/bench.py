"""Headset-message-to-joint-command latency, through the teleop node and through the bare core.

    python -m vpp_teleop.bench [--samples 600] [--rate 90] [--config config/xhand.yaml]

Both paths start at the moment the (test) headset sends an update (its send time travels in the
message) and go through the real avp-stream client:

* node: fake headset -> gRPC -> the teleop node process (client, retargeting, chunk) -> DDS ->
  a subscriber here; latency = the subscriber's receive time - the send time of the update the
  chunk was built from (matched through /hand_tracking's arrival stamp = the chunk's stamp).
* core: fake headset -> gRPC -> the same TeleopRunner (client, worker thread, TeleopCore) in this
  process, no ROS; latency = the time the chunk exists - the send time. The baseline: what the
  node adds (message conversion, DDS) is the difference.

Prints p50/p99 of each and their ratio. Needs a free loopback address for port 12345.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import tempfile
import threading
import time

import numpy as np

from vpp_teleop.avp_client import AvpClientConfig
from vpp_teleop.runner import TeleopRunner
from vpp_teleop.fake_avp_server import FakeAvpServer, free_loopback_host
from vpp_teleop.teleop import TeleopConfig, TeleopCore

REPO = pathlib.Path(__file__).resolve().parents[3]
ROBOT_POSE = np.array([[1.0, 0, 0, 0.45], [0, -1.0, 0, 0.0], [0, 0, -1.0, 0.35], [0, 0, 0, 1.0]])


def _percentiles(values_s: list[float]) -> str:
    ms = np.asarray(values_s) * 1e3
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms (n={ms.size})"


def bench_core(samples: int, rate_hz: float) -> list[float]:
    """The same runner (client + worker + core) as the node, with in-process callbacks."""
    core = TeleopCore(TeleopConfig(stale_after_s=1.0))
    core.request_clutch(True)
    latencies: list[float] = []
    done = threading.Event()

    def on_output(sample, out):
        if out.chunk is not None and sample.source_s is not None:
            latencies.append(time.time() - sample.source_s)
        if len(latencies) >= samples + 20:
            done.set()

    host = free_loopback_host()
    with FakeAvpServer(host, scenario="wrist", rate_hz=rate_hz):
        runner = TeleopRunner(core, AvpClientConfig(ip=host, connect_timeout_s=10.0, stale_after_s=1.0),
                              lambda: (ROBOT_POSE, 0.0), on_output).start()
        try:
            if not done.wait(120.0):
                raise RuntimeError(f"core path: only {len(latencies)} chunks")
        finally:
            runner.close()
    return latencies[20:]  # skip the warm-up


def bench_node(samples: int, rate_hz: float, config: str) -> list[float]:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from std_srvs.srv import SetBool
    from vpp_msgs.msg import ActionChunk, HandTracking

    from vpp_ros.graph import NodeSpec, node_command, stop_process
    from vpp_ros.qos import CHUNK_QOS, SENSOR_QOS
    from vpp_ros.time_conversion import stamp_to_seconds

    host = free_loopback_host()
    server = FakeAvpServer(host, scenario="wrist", rate_hz=rate_hz).start()
    spec = NodeSpec("teleop_node", "vpp_teleop", "teleop_node", "vpp_teleop.teleop_node",
                    {"avp_client.ip": host, "teleop.clutch.gesture": "off"})
    scratch = tempfile.TemporaryDirectory(prefix="teleop-bench-")  # the node's parameter overrides
    proc = subprocess.Popen(node_command(spec, config, scratch.name),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rclpy.init()
    node = rclpy.create_node("teleop_bench")
    source_by_arrival: dict[int, float] = {}
    chunk_receipts: list[tuple[int, float]] = []
    node.create_subscription(HandTracking, "/hand_tracking", lambda m: source_by_arrival.__setitem__(
        m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, stamp_to_seconds(m.source_stamp)), SENSOR_QOS)
    node.create_subscription(ActionChunk, "/action_chunk", lambda m: chunk_receipts.append(
        (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, time.time())), CHUNK_QOS)
    pose_pub = node.create_publisher(PoseStamped, "/ee_pose", SENSOR_QOS)

    def publish_pose():
        msg = PoseStamped()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = 0.45, 0.0, 0.35
        msg.pose.orientation.x, msg.pose.orientation.w = 1.0, 0.0
        pose_pub.publish(msg)

    node.create_timer(0.02, publish_pose)
    clutch = node.create_client(SetBool, "/teleop_node/clutch")

    def spin_until(predicate, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not predicate():
            rclpy.spin_once(node, timeout_sec=0.01)
        return predicate()

    try:
        if not clutch.wait_for_service(timeout_sec=90.0):
            raise RuntimeError("teleop node offers no ~/clutch service:\n" + stop_process(proc))
        engaged = False
        for _ in range(100):  # until the node has the robot pose (DDS discovery)
            future = clutch.call_async(SetBool.Request(data=True))
            spin_until(future.done, 30.0)
            if future.done() and future.result().success:
                engaged = True
                break
            spin_until(lambda: False, 0.2)
        if not engaged:
            raise RuntimeError("the teleop node never accepted the clutch: "
                               + (future.result().message if future.done() else "no answer"))
        ok = spin_until(lambda: len(chunk_receipts) >= samples + 20, 120.0)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        output = stop_process(proc)
        server.stop()
        scratch.cleanup()
    if not ok:
        raise RuntimeError(f"node path: only {len(chunk_receipts)} chunks; node output:\n{output}")
    latencies = [received - source_by_arrival[stamp] for stamp, received in chunk_receipts[20:]
                 if stamp in source_by_arrival]
    return latencies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--rate", type=float, default=90.0, help="headset updates per second")
    parser.add_argument("--config", default=str(REPO / "config" / "xhand.yaml"))
    args = parser.parse_args(argv)
    core = bench_core(args.samples, args.rate)
    print(f"core  (headset send -> chunk built, in process): {_percentiles(core)}")
    node = bench_node(args.samples, args.rate, args.config)
    print(f"node  (headset send -> ActionChunk received over DDS): {_percentiles(node)}")
    print(f"ratio node/core: p50 {np.percentile(node, 50) / np.percentile(core, 50):.2f}x, "
          f"p99 {np.percentile(node, 99) / np.percentile(core, 99):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
