"""The XHand executor node over DDS with the simulated XArm + XHand world node.

Both nodes run as their own processes with config/xhand.yaml and the graph's sim overrides,
exactly as ``python -m vpp_ros.graph --robot xhand --use-sim`` starts them (the executor's
XArmAPI reaches the simulated controller through the SDK's Unix sockets). The test publishes
18-d ActionChunk messages and watches /joint_states, /ee_pose, /commanded_pose,
/commanded_effector and the executor's status.
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
from sensor_msgs.msg import JointState  # noqa: E402
from vpp_msgs.msg import ActionChunk, ExecutorStatus  # noqa: E402

from vpp_core.action_space import XHAND_JOINT_NAMES  # noqa: E402
from vpp_ros.chunk_conversion import ChunkData, Pose, chunk_to_msg  # noqa: E402
from vpp_ros.graph import GraphArgs, build_graph, node_command, stop_process  # noqa: E402
from vpp_ros.qos import CHUNK_QOS, SENSOR_QOS, STATUS_QOS  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    specs = {s.name: s for s in build_graph(GraphArgs(robot="xhand", use_sim=True))}
    params = tmp_path_factory.mktemp("params")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    config = str(REPO / "config" / "xhand.yaml")
    sim = specs["sim_world"]
    sim = type(sim)(sim.name, sim.package, sim.executable, sim.module,
                    {**sim.parameters, "image_width": 64, "image_height": 64, "fps": 2.0})
    procs = {}
    for spec in (sim, specs["xhand_executor"]):
        procs[spec.name] = subprocess.Popen(node_command(spec, config, params), stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True, env=env)
    yield procs
    for name in ("xhand_executor", "sim_world"):
        output = stop_process(procs[name])
        print(f"----- {name}\n" + "\n".join(line for line in output.splitlines() if "[SDK]" not in line))


class _Rig:
    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("xhand_executor_test_rig")
        self.pub = self.node.create_publisher(ActionChunk, "/action_chunk", CHUNK_QOS)
        self.pose = None
        self.joints: JointState | None = None
        self.commanded_pose: PoseStamped | None = None
        self.commanded_effector: JointState | None = None
        self.status: ExecutorStatus | None = None
        self.node.create_subscription(PoseStamped, "/ee_pose", self._on_pose, SENSOR_QOS)
        self.node.create_subscription(JointState, "/joint_states", lambda m: setattr(self, "joints", m), SENSOR_QOS)
        self.node.create_subscription(PoseStamped, "/commanded_pose",
                                      lambda m: setattr(self, "commanded_pose", m), SENSOR_QOS)
        self.node.create_subscription(JointState, "/commanded_effector",
                                      lambda m: setattr(self, "commanded_effector", m), SENSOR_QOS)
        self.node.create_subscription(ExecutorStatus, "/xhand_executor/status",
                                      lambda m: setattr(self, "status", m), STATUS_QOS)
        self.seq = 0

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        self.pose = (np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))

    def spin(self, seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def hand(self) -> np.ndarray:
        index = {n: i for i, n in enumerate(self.joints.name)}
        return np.array([self.joints.position[index[n]] for n in XHAND_JOINT_NAMES])

    def chunk(self, actions: np.ndarray) -> ActionChunk:
        self.seq += 1
        position, quat = self.pose
        return chunk_to_msg(ChunkData(
            actions=actions.astype(np.float32), embodiment="xhand", action_space="xhand", dt=0.1,
            stamp=self.node.get_clock().now().nanoseconds * 1e-9, sequence_id=self.seq, frame_id="link_base",
            reference_pose=Pose(tuple(position), tuple(quat))))

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture(scope="module")
def rig(processes):
    r = _Rig()
    ready = lambda: r.pose is not None and r.status is not None and r.joints is not None and len(r.joints.name) == 19  # noqa: E731
    r.spin(120, until=lambda: ready() or any(p.poll() is not None for p in processes.values()))
    assert all(p.poll() is None for p in processes.values()), "a node exited during start-up"
    assert ready(), "no pose/status/19 joint states within 120 s"
    r.spin(60, until=lambda: r.pub.get_subscription_count() > 0)
    r.spin(1.0)
    yield r
    r.close()


def _ramp(delta_xyz, hand_target, steps=10) -> np.ndarray:
    actions = np.zeros((steps, 18))
    weights = np.linspace(1.0 / steps, 1.0, steps)[:, None]
    actions[:, :3] = weights * np.asarray(delta_xyz)
    actions[:, 6:] = hand_target
    return actions


def test_joint_states_name_the_arm_and_all_12_hand_joints(rig):
    assert list(rig.joints.name) == [f"joint{i}" for i in range(1, 8)] + list(XHAND_JOINT_NAMES)


def test_chunk_moves_wrist_and_hand_and_commanded_topics_report_it(rig):
    start, _ = rig.pose
    delta = np.array([0.03, 0.02, -0.02])
    hand_target = np.array([0.8, 0.3, 0.5, 0.0, 1.0, 0.7, 1.0, 0.7, 1.0, 0.7, 1.0, 0.7])
    hand_target_out = hand_target.copy()
    hand_target_out[XHAND_JOINT_NAMES.index("index_joint1")] = 2.5  # beyond the 1.919 limit: clamped
    rig.pub.publish(rig.chunk(_ramp(delta, hand_target_out)))
    expected_hand = hand_target.copy()
    expected_hand[XHAND_JOINT_NAMES.index("index_joint1")] = 1.919

    def commanded_error():
        if rig.commanded_pose is None:
            return np.inf
        p = rig.commanded_pose.pose.position
        return np.linalg.norm(np.array([p.x, p.y, p.z]) - (start + delta))

    def reached():
        # /commanded_pose arrives at the state rate: under load the last one received may still be
        # an interpolated step short of the final target, so wait for it too.
        return (np.linalg.norm(rig.pose[0] - (start + delta)) < 0.003
                and np.abs(rig.hand() - expected_hand).max() < 0.03
                and commanded_error() < 0.002)

    rig.spin(15.0, until=reached)
    error = np.linalg.norm(rig.pose[0] - (start + delta))
    assert error < 0.003, f"wrist {error * 1e3:.1f} mm from target"
    assert np.abs(rig.hand() - expected_hand).max() < 0.03, rig.hand() - expected_hand
    assert list(rig.commanded_effector.name) == list(XHAND_JOINT_NAMES)
    assert np.allclose(rig.commanded_effector.position, expected_hand, atol=1e-6)
    assert commanded_error() < 0.002
    assert rig.status.steps_executed >= 5


@pytest.mark.parametrize("bad", ["nan", "wrong_dim", "wrong_embodiment"])
def test_bad_chunks_are_rejected_without_motion(rig, bad):
    rig.spin(0.5)
    start, _ = rig.pose
    hand_before = rig.hand()
    rejected_before = rig.status.chunks_rejected
    msg = rig.chunk(_ramp(np.array([0.03, 0.0, 0.0]), np.full(12, 0.2)))
    data = np.asarray(msg.data, dtype=np.float32).reshape(10, 18)
    if bad == "nan":
        data[3, 9] = np.nan
        msg.data = data.ravel().tolist()
    elif bad == "wrong_dim":
        msg.action_dim = 17
        msg.data = data[:, :17].ravel().tolist()
    else:
        msg.embodiment = "panda"
    rig.pub.publish(msg)
    rig.spin(2.0, until=lambda: rig.status.chunks_rejected > rejected_before)
    rig.spin(0.5)
    assert rig.status.chunks_rejected == rejected_before + 1
    assert np.linalg.norm(rig.pose[0] - start) < 0.001
    assert np.abs(rig.hand() - hand_before).max() < 0.01
