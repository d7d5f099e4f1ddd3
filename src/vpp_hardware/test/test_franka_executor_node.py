"""The Franka executor node over DDS against franky-sim (libfranka's protocol on loopback).

The node runs as its own process with config/panda.yaml, exactly as the graph starts it; the test
publishes vpp_msgs/ActionChunk messages and watches /ee_pose and the executor's status.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from vpp_msgs.msg import ActionChunk, ExecutorStatus  # noqa: E402

from vpp_hardware.arms.franka.sim_server import FrankySimServer  # noqa: E402
from vpp_ros.chunk_conversion import ChunkData, Pose, chunk_to_msg  # noqa: E402
from vpp_ros.graph import NodeSpec, free_sim_robot_host, node_command, stop_process  # noqa: E402
from vpp_ros.qos import CHUNK_QOS, SENSOR_QOS, STATUS_QOS  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def sim_robot():
    server = FrankySimServer(mode="subprocess", realtime=True, hostnames=[free_sim_robot_host()])
    host = server.start()
    yield host
    server.stop()


@pytest.fixture(scope="module")
def executor_process(sim_robot, tmp_path_factory):
    spec = NodeSpec("franka_executor", "vpp_hardware", "franka_executor_node",
                    "vpp_hardware.nodes.franka_executor_node",
                    {"robot_ip": sim_robot, "arm.ignore_realtime": True})
    proc = subprocess.Popen(node_command(spec, str(REPO / "config" / "panda.yaml"), tmp_path_factory.mktemp("params")),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    yield proc
    print(stop_process(proc))


class _Rig:
    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("executor_test_rig")
        self.pub = self.node.create_publisher(ActionChunk, "/action_chunk", CHUNK_QOS)
        self.pose: tuple[np.ndarray, np.ndarray] | None = None
        self.status: ExecutorStatus | None = None
        self.node.create_subscription(PoseStamped, "/ee_pose", self._on_pose, SENSOR_QOS)
        self.node.create_subscription(ExecutorStatus, "/franka_executor/status", self._on_status, STATUS_QOS)
        self.seq = 0

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        self.pose = (np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))

    def _on_status(self, msg: ExecutorStatus) -> None:
        self.status = msg

    def spin(self, seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def chunk(self, actions: np.ndarray, stamp: float | None = None) -> ActionChunk:
        """A valid chunk relative to the current pose (stamped now unless told otherwise)."""
        self.seq += 1
        position, quat = self.pose
        return chunk_to_msg(ChunkData(
            actions=actions.astype(np.float32), embodiment="panda", action_space="panda", dt=0.1,
            stamp=self.now() if stamp is None else stamp, sequence_id=self.seq, frame_id="fr3_link0",
            reference_pose=Pose(tuple(position), tuple(quat)),
        ))

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture(scope="module")
def rig(executor_process):
    r = _Rig()
    r.spin(90, until=lambda: (r.pose is not None and r.status is not None) or executor_process.poll() is not None)
    assert executor_process.poll() is None, "executor node exited during start-up"
    assert r.pose is not None and r.status is not None, "executor node published no pose/status within 90 s"
    r.spin(60, until=lambda: r.pub.get_subscription_count() > 0)
    r.spin(1.0)  # let discovery finish both ways, or the first chunk arrives stale
    yield r
    r.close()


def _ramp(delta_xyz, steps=10, gripper=1.0) -> np.ndarray:
    actions = np.zeros((steps, 7))
    actions[:, :3] = np.outer(np.linspace(1.0 / steps, 1.0, steps), delta_xyz)
    actions[:, 6] = gripper
    return actions


def test_chunk_moves_the_robot_to_the_commanded_pose(rig):
    start, _ = rig.pose
    delta = np.array([0.03, -0.02, -0.02])
    rig.pub.publish(rig.chunk(_ramp(delta)))
    rig.spin(3.0)
    error = np.linalg.norm(rig.pose[0] - (start + delta))
    assert error < 0.005, f"final position {rig.pose[0]} is {error * 1e3:.1f} mm from {start + delta}"
    assert rig.status.steps_executed >= 5


def test_watchdog_holds_the_pose_when_chunks_stop(rig):
    rig.spin(1.0)  # the previous chunk has long finished
    held, _ = rig.pose
    rig.spin(1.0)
    assert np.linalg.norm(rig.pose[0] - held) < 0.002
    assert rig.status.state == ExecutorStatus.STATE_HOLDING
    assert "no valid step" in rig.status.reason or "finished" in rig.status.reason


def test_late_chunk_drops_its_past_steps(rig):
    before = rig.status.steps_dropped_late
    start, _ = rig.pose
    delta = np.array([-0.02, 0.0, 0.0])
    rig.pub.publish(rig.chunk(_ramp(delta), stamp=rig.now() - 0.35))
    rig.spin(2.5)
    assert rig.status.steps_dropped_late - before >= 3, rig.status.last_rejection_reason
    # The remaining steps still lead to the chunk's final target.
    assert np.linalg.norm(rig.pose[0] - (start + delta)) < 0.005


@pytest.mark.parametrize("bad", ["nan", "inf", "outside_workspace", "wrong_dim", "wrong_embodiment"])
def test_bad_chunks_are_rejected_without_motion(rig, executor_process, bad):
    rig.spin(0.5)
    start, _ = rig.pose
    rejected_before = rig.status.chunks_rejected
    msg = rig.chunk(_ramp(np.array([0.02, 0.0, 0.0])))
    data = np.asarray(msg.data, dtype=np.float32).reshape(10, 7)
    if bad == "nan":
        data[4, 1] = np.nan
    elif bad == "inf":
        data[9, 6] = np.inf
    elif bad == "outside_workspace":
        data[:, 2] = -1.0  # 1 m below the reference: through the table
    elif bad == "wrong_dim":
        msg.action_dim = 6
    elif bad == "wrong_embodiment":
        msg.embodiment = "xhand"
    msg.data = data.reshape(-1).tolist()
    rig.pub.publish(msg)
    rig.spin(1.5)
    assert executor_process.poll() is None, "executor died on a bad chunk"
    assert rig.status.chunks_rejected == rejected_before + 1, rig.status.last_rejection_reason
    assert rig.status.last_rejection_reason
    assert np.linalg.norm(rig.pose[0] - start) < 0.001, "a rejected chunk moved the robot"
