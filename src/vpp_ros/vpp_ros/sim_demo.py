"""The main job on an embedded default: the whole Panda stack in simulation, with a report.

    python -m vpp_ros.sim_demo [--instruction "push the red cube"] [--duration 20] [--checkpoint DIR]

Starts the real node graph (simulated world with franky-sim + MuJoCo cameras, policy node,
Franka executor) from ``config/panda.yaml``, waits until every node is up, publishes the
instruction on /task_language, runs for ``--duration`` seconds, sends the empty instruction
(stop and hold), and writes to ``--output``:

* ``report.json`` / ``report.md``: chunks planned, steps executed / dropped / limited, chunks
  rejected, planning latency and observation-to-chunk latency percentiles, final end-effector pose;
* ``static_camera.mp4``: what the static camera saw;
* ``logs/<node>.log``: every node's output.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import threading
import time
from typing import Any, Optional

import numpy as np

from vpp_ros.graph import EXECUTORS, GraphArgs, GraphProcesses, free_sim_robot_host


class _Monitor:
    """An rclpy node that watches the graph and speaks the instruction."""

    def __init__(self, max_video_frames: int, executor_status_topic: str = "/franka_executor/status") -> None:
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from vpp_msgs.msg import ActionChunk, ExecutorStatus, PolicyStatus

        from vpp_ros.qos import CHUNK_QOS, COMMAND_QOS, SENSOR_QOS, STATUS_QOS

        self.rclpy = rclpy
        self.node = rclpy.create_node("sim_demo")
        self.lock = threading.Lock()
        self.chunks: list[dict[str, Any]] = []
        self.executor_status: Optional[Any] = None
        self.policy_status: Optional[Any] = None
        self.ee_pose: Optional[tuple[list[float], list[float]]] = None
        self.frames: list[np.ndarray] = []
        self.frame_stamps: list[float] = []
        self.max_video_frames = max_video_frames
        self.record_video = False
        self.last_image_time = 0.0  # monotonic time of the newest static-camera image
        self.lang_pub = self.node.create_publisher(String, "/task_language", COMMAND_QOS)
        self.node.create_subscription(ActionChunk, "/action_chunk", self._on_chunk, CHUNK_QOS)
        self.node.create_subscription(ExecutorStatus, executor_status_topic, self._on_exec, STATUS_QOS)
        self.node.create_subscription(PolicyStatus, "/policy_node/status", self._on_policy, STATUS_QOS)
        self.node.create_subscription(PoseStamped, "/ee_pose", self._on_pose, SENSOR_QOS)
        self.node.create_subscription(Image, "/static_camera/image_raw", self._on_image, SENSOR_QOS)
        self.String = String

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_chunk(self, msg) -> None:
        from vpp_ros.time_conversion import stamp_to_seconds

        with self.lock:
            self.chunks.append({
                "seq": int(msg.sequence_id), "stamp": stamp_to_seconds(msg.header.stamp),
                "received": self.now(), "planning_latency": float(msg.planning_latency), "dt": float(msg.dt),
                "instruction": msg.instruction,
            })

    def _on_exec(self, msg) -> None:
        self.executor_status = msg

    def _on_policy(self, msg) -> None:
        self.policy_status = msg

    def _on_pose(self, msg) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        self.ee_pose = ([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])

    def _on_image(self, msg) -> None:
        from vpp_ros.image_conversion import image_msg_to_rgb
        from vpp_ros.time_conversion import stamp_to_seconds

        self.last_image_time = time.monotonic()
        if self.record_video and len(self.frames) < self.max_video_frames:
            self.frames.append(image_msg_to_rgb(msg))
            self.frame_stamps.append(stamp_to_seconds(msg.header.stamp))

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

    def say(self, text: str) -> None:
        self.lang_pub.publish(self.String(data=text))

    def close(self) -> None:
        self.node.destroy_node()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values) * 1e3
    return {"p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
            "p99_ms": float(np.percentile(arr, 99)), "max_ms": float(arr.max()), "count": int(arr.size)}


def _write_video(frames: list[np.ndarray], stamps: list[float], path: pathlib.Path) -> Optional[str]:
    if not frames:
        return None
    import imageio.v2 as imageio

    fps = 10.0
    if len(stamps) > 2:
        span = stamps[-1] - stamps[0]
        if span > 0:
            fps = max(1.0, min(60.0, (len(stamps) - 1) / span))
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=16) as writer:
        for frame in frames:
            writer.append_data(frame)
    return str(path)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    import rclpy

    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    robot = getattr(args, "robot", "panda")
    # The Panda sim serves libfranka on a free loopback address; the xArm sim serves the SDK's
    # Unix sockets, which any address reaches.
    robot_ip = free_sim_robot_host() if robot == "panda" else ""
    graph = GraphProcesses(GraphArgs(robot=robot, config=args.config, use_sim=True, checkpoint=args.checkpoint,
                                     robot_ip=robot_ip),
                           log_dir=out / "logs")
    print(f"[sim_demo] starting {', '.join(s.name for s in graph.specs)} (logs in {out / 'logs'})", flush=True)
    rclpy.init()
    monitor = _Monitor(max_video_frames=int(args.duration * 30) + 100,
                       executor_status_topic=f"/{EXECUTORS[robot]}/status")
    report: dict[str, Any] = {"robot": robot, "instruction": args.instruction, "duration_s": args.duration,
                              "checkpoint": args.checkpoint or "(none: tiny random policy)"}
    try:
        graph.start()
        deadline = time.monotonic() + args.startup_timeout
        while True:
            monitor.spin_for(0.2)
            dead = graph.dead()
            if dead:
                raise RuntimeError(f"node(s) exited during start-up: {dead}; see {out / 'logs'}")
            ready = (monitor.executor_status is not None and monitor.policy_status is not None
                     and monitor.ee_pose is not None and time.monotonic() - monitor.last_image_time < 1.0)
            if ready:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"graph not ready after {args.startup_timeout:.0f} s "
                                   f"(executor status: {monitor.executor_status is not None}, policy status: "
                                   f"{monitor.policy_status is not None}, EE pose: {monitor.ee_pose is not None}, "
                                   f"images: {monitor.last_image_time > 0}); see {out / 'logs'}")
        start_pose = monitor.ee_pose
        print(f"[sim_demo] graph ready; instruction: {args.instruction!r} for {args.duration:g} s", flush=True)
        monitor.record_video = True
        started = monitor.now()
        monitor.say(args.instruction)
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            monitor.spin_for(1.0)
            dead = graph.dead()
            if dead:
                raise RuntimeError(f"node(s) exited while running: {dead}; see {out / 'logs'}")
            s = monitor.executor_status
            print(f"[sim_demo] t={monitor.now() - started:5.1f} s  chunks={len(monitor.chunks):3d}  "
                  f"steps executed={s.steps_executed if s else 0}  dropped={s.steps_dropped_late if s else 0}",
                  flush=True)
        monitor.say("")
        monitor.spin_for(1.5)
        monitor.record_video = False

        status = monitor.executor_status
        chunks = [c for c in monitor.chunks if c["instruction"] == args.instruction]
        report.update({
            "chunks_planned": len(chunks),
            "steps_executed": int(status.steps_executed),
            "steps_dropped_late": int(status.steps_dropped_late),
            "steps_limited": int(status.steps_limited),
            "chunks_received_by_executor": int(status.chunks_received),
            "chunks_rejected": int(status.chunks_rejected),
            "last_rejection_reason": status.last_rejection_reason,
            "executor_state_at_end": int(status.state),
            "executor_reason_at_end": status.reason,
            "planning_latency": _percentiles([c["planning_latency"] for c in chunks]),
            "observation_to_chunk_latency": _percentiles([c["received"] - c["stamp"] for c in chunks]),
            # Steps are due at stamp + i*dt; the first one not yet past on arrival is the first
            # executed, so observation -> first executed action is that step's due time.
            "observation_to_first_action": _percentiles([
                math.ceil((c["received"] - c["stamp"]) / c["dt"]) * c["dt"] for c in chunks]),
            "start_ee_pose": {"position_m": start_pose[0], "quaternion_xyzw": start_pose[1]},
            "final_ee_pose": {"position_m": monitor.ee_pose[0], "quaternion_xyzw": monitor.ee_pose[1]},
            "ee_displacement_m": float(np.linalg.norm(np.subtract(monitor.ee_pose[0], start_pose[0]))),
            "video_frames": len(monitor.frames),
        })
        report["video"] = _write_video(monitor.frames, monitor.frame_stamps, out / "static_camera.mp4")
    finally:
        monitor.close()
        rclpy.try_shutdown()
        graph.stop()
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report


def _markdown(r: dict[str, Any]) -> str:
    def lat(key: str) -> str:
        p = r.get(key) or {}
        return f"p50 {p.get('p50_ms', float('nan')):.0f} ms, p90 {p.get('p90_ms', float('nan')):.0f} ms, " \
               f"p99 {p.get('p99_ms', float('nan')):.0f} ms" if p else "n/a"

    pos = r.get("final_ee_pose", {}).get("position_m", [float("nan")] * 3)
    rows = [
        ("instruction", repr(r["instruction"])), ("checkpoint", r["checkpoint"]),
        ("duration", f"{r['duration_s']:g} s"), ("chunks planned", r.get("chunks_planned")),
        ("steps executed", r.get("steps_executed")), ("steps dropped (late)", r.get("steps_dropped_late")),
        ("steps limited by safety", r.get("steps_limited")), ("chunks rejected", r.get("chunks_rejected")),
        ("planning latency", lat("planning_latency")),
        ("observation -> chunk latency", lat("observation_to_chunk_latency")),
        ("observation -> first executed action", lat("observation_to_first_action")),
        ("final EE position", "(" + ", ".join(f"{v:.4f}" for v in pos) + ") m"),
        ("EE displacement", f"{r.get('ee_displacement_m', float('nan')) * 1e3:.1f} mm"),
        ("video", r.get("video")),
    ]
    return "# Simulation run\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="panda", choices=sorted(EXECUTORS),
                        help="panda (franky-sim FR3) or xhand (MuJoCo xArm7 + XHand)")
    parser.add_argument("--config", default="", help="parameter YAML (default: config/<robot>.yaml)")
    parser.add_argument("--checkpoint", default="", help="policy checkpoint directory (default: tiny random)")
    parser.add_argument("--instruction", default="push the red cube to the left")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run the instruction")
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument("--output", default="outputs/sim_demo")
    args = parser.parse_args(argv)
    report = run_demo(args)
    print((pathlib.Path(args.output) / "report.md").read_text())
    ok = report.get("chunks_planned", 0) > 0 and report.get("steps_executed", 0) > 0
    if not ok:
        print("[sim_demo] FAILED: no chunk was planned or executed; see the logs", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
