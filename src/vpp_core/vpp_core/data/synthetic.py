"""Realistic synthetic demonstration bags (rosbag2, mcap or sqlite3) for tests and benchmarks.

``write_synthetic_bag`` writes what the recorder (C6) writes for one episode, with the topics
and conventions of contract C1:

- ``/static_camera/image_raw`` and ``/wrist_camera/image_raw`` (rgb8) at ``camera_hz`` with
  jittered capture stamps and a transport delay between capture stamp and log time;
- ``/joint_states`` at ``state_hz`` (Panda: 7 arm joints + two finger joints at half the gripper
  width; XArm+XHand: 7 arm joints, and the 12 hand joints in a second message with the same stamp);
- ``/ee_pose`` at ``state_hz``: the measured pose, lagging the command by ``TRACKING_LAG_S``;
- ``/commanded_pose`` and ``/commanded_effector`` at 50 Hz: a smooth target trajectory
  (:func:`commanded_targets`, the ground truth tests compare against);
- ``/action_chunk`` every 0.5 s and ``/task_language`` once at the start;
- ``custom_data``: ``vpp.instruction``, ``vpp.embodiment``, ``vpp.episode_name``, ``vpp.outcome``.

``faults`` injects problems the converter must report: ``missing_wrist_camera``,
``out_of_order_stamps`` (a static-camera stamp goes backwards), ``corrupt_message`` (a truncated
``/joint_states`` message), ``no_commanded_pose`` (recorded without our executor),
``no_instruction`` (no custom_data instruction and no ``/task_language``), ``camera_gap``
(0.5 s of wrist frames missing) and ``state_gap`` (0.4 s of ``/ee_pose`` and ``/joint_states``
missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from ..action_space import (XHAND_JOINT_NAMES, get_action_space, matrix_to_quat, pose_from_pos_rotvec,
                            pose_to_pos_quat, poses_to_actions, rotvec_to_matrix)
from .ros_types import vpp_typestore

__all__ = [
    "FAULTS",
    "COMMAND_HZ",
    "TRACKING_LAG_S",
    "START_NS",
    "PANDA_ARM_JOINTS",
    "PANDA_FINGER_JOINTS",
    "XARM_JOINTS",
    "PANDA_MAX_GRIPPER_WIDTH_M",
    "commanded_targets",
    "write_synthetic_bag",
]

FAULTS = ("missing_wrist_camera", "out_of_order_stamps", "corrupt_message", "no_commanded_pose",
          "no_instruction", "camera_gap", "state_gap")
#: The executors publish /commanded_pose and /commanded_effector at their state rate.
COMMAND_HZ = 50.0
#: The measured pose follows the commanded one with this delay [s].
TRACKING_LAG_S = 0.04
#: First stamp of every synthetic episode (ROS time, ns); recording starts here.
START_NS = 1_700_000_000_000_000_000
PANDA_ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
PANDA_FINGER_JOINTS = ("fr3_finger_joint1", "fr3_finger_joint2")
PANDA_MAX_GRIPPER_WIDTH_M = 0.08
XARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
_XHAND_LOW = np.array([0.0, -0.698, 0.0, -0.174] + [0.0] * 8)
_XHAND_HIGH = np.array([1.832, 1.57, 1.57, 0.174] + [1.919] * 8)
_BASE_FRAME = {"panda": "fr3_link0", "xhand": "link_base"}
_CAMERA_DELAY_S = (0.015, 0.025)
_STATE_DELAY_S = 0.001


def commanded_targets(embodiment: str, t: np.ndarray, seed: int = 0, seconds: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic demonstration's commanded targets at times ``t`` [s since the start].

    Returns ``(poses (N, 4, 4), effector (N, E))``: a smooth end-effector/wrist path of a few
    centimetres and ~0.3 rad in the base frame, and the gripper closing at mid-episode (Panda)
    or 12 hand joints flexing within their limits (XHand).
    """
    t = np.asarray(t, dtype=np.float64)
    phase = 0.7 * seed
    position = np.stack([0.45 + 0.06 * np.sin(0.9 * t + phase),
                         0.05 * np.sin(1.3 * t + 2 * phase),
                         0.30 + 0.04 * np.cos(1.1 * t + phase)], -1)
    rotvec = np.stack([0.15 * np.sin(0.8 * t + phase), 0.1 * np.sin(0.6 * t), 0.3 * np.sin(0.5 * t + phase)], -1)
    down = rotvec_to_matrix(np.array([np.pi, 0.0, 0.0]))  # tool pointing down
    poses = pose_from_pos_rotvec(position, rotvec)
    poses[..., :3, :3] = poses[..., :3, :3] @ down
    if embodiment == "panda":
        closing = np.clip((t - 0.45 * seconds) / 0.5, 0.0, 1.0)
        effector = (0.5 * (1.0 + np.cos(np.pi * closing)))[:, None]
    elif embodiment == "xhand":
        wave = 0.5 * (1.0 - np.cos(1.5 * t[:, None] + 0.3 * np.arange(12) + phase))
        effector = _XHAND_LOW + (0.2 + 0.6 * wave) * (_XHAND_HIGH - _XHAND_LOW)
    else:
        raise ValueError(f"unknown embodiment {embodiment!r}; expected 'panda' or 'xhand'")
    return poses, effector


def _render(view: str, pose: np.ndarray, effector: float, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A cheap camera-like image whose content follows the end-effector (so videos are not static)."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.uint8)
    if view == "static":
        image[..., 0] = 90 + 50 * (x / width)
        image[..., 1] = 110 + 40 * (y / height)
        image[..., 2] = 130
        cx = int((pose[0, 3] - 0.35) / 0.2 * width)
        cy = int((pose[1, 3] + 0.1) / 0.2 * height)
        half = max(2, int(width * (0.04 + 0.1 * (pose[2, 3] - 0.25))))
        image[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half] = (200, 40, 40)
    else:
        image[..., 0] = 60 + 60 * (y / height)
        image[..., 1] = 70
        image[..., 2] = 80 + 60 * (x / width)
        opening = int(effector * width * 0.3)
        image[int(height * 0.7):, max(width // 2 - opening - 6, 0):width // 2 - opening] = (220, 220, 220)
        image[int(height * 0.7):, width // 2 + opening:width // 2 + opening + 6] = (220, 220, 220)
        cy = int((0.35 - pose[2, 3]) / 0.2 * height + height / 2)
        image[max(cy - 5, 0):cy + 5, width // 3:width // 3 + 10] = (40, 40, 200)
    noise = rng.integers(0, 4, size=(height, width, 1), dtype=np.uint8)
    return image + noise


class _Messages:
    """Builds typed messages from the typestore (no ROS needed)."""

    def __init__(self) -> None:
        self.store = vpp_typestore()
        self.types = self.store.types

    def time(self, ns: int):
        return self.types["builtin_interfaces/msg/Time"](sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    def header(self, ns: int, frame_id: str):
        return self.types["std_msgs/msg/Header"](stamp=self.time(ns), frame_id=frame_id)

    def pose(self, matrix: np.ndarray):
        position, quat = pose_to_pos_quat(matrix)
        return self.types["geometry_msgs/msg/Pose"](
            position=self.types["geometry_msgs/msg/Point"](x=float(position[0]), y=float(position[1]), z=float(position[2])),
            orientation=self.types["geometry_msgs/msg/Quaternion"](x=float(quat[0]), y=float(quat[1]), z=float(quat[2]),
                                                                  w=float(quat[3])))

    def pose_stamped(self, ns: int, frame_id: str, matrix: np.ndarray):
        return self.types["geometry_msgs/msg/PoseStamped"](header=self.header(ns, frame_id), pose=self.pose(matrix))

    def joint_state(self, ns: int, names: Sequence[str], positions: np.ndarray):
        positions = np.asarray(positions, dtype=np.float64)
        return self.types["sensor_msgs/msg/JointState"](
            header=self.header(ns, ""), name=list(names), position=positions,
            velocity=np.zeros_like(positions), effort=np.zeros(0, dtype=np.float64))

    def image(self, ns: int, frame_id: str, pixels: np.ndarray):
        height, width = pixels.shape[:2]
        return self.types["sensor_msgs/msg/Image"](
            header=self.header(ns, frame_id), height=height, width=width, encoding="rgb8", is_bigendian=0,
            step=width * 3, data=np.ascontiguousarray(pixels).reshape(-1))

    def string(self, text: str):
        return self.types["std_msgs/msg/String"](data=text)


def write_synthetic_bag(
    path: Path | str,
    embodiment: str = "panda",
    storage: str = "mcap",
    seconds: float = 3.0,
    camera_hz: float = 30,
    state_hz: float = 100,
    image_size: tuple[int, int] = (96, 128),
    instruction: str = "pick up the red cube",
    seed: int = 0,
    faults: Iterable[str] = (),
) -> Path:
    """Write one synthetic demonstration episode as a rosbag2 directory at ``path``; returns ``path``.

    ``image_size`` is (height, width). The bag is fully determined by the arguments.
    """
    path = Path(path)
    faults = tuple(faults)
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {list(FAULTS)}")
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    space = get_action_space(embodiment)
    rng = np.random.default_rng(seed)
    build = _Messages()
    frame_id = _BASE_FRAME[embodiment]
    start = START_NS
    messages: list[tuple[str, int, object]] = []  # (topic, log time ns, message)

    def ns(seconds_from_start: float) -> int:
        return start + int(round(seconds_from_start * 1e9))

    def gap(t: float, name: str, begin: float, end: float) -> bool:
        return name in faults and begin * seconds <= t < end * seconds

    # Commanded targets (the executor's output) at 50 Hz.
    command_times = np.arange(0.0, seconds, 1.0 / COMMAND_HZ)
    command_poses, command_effector = commanded_targets(embodiment, command_times, seed, seconds)
    if "no_commanded_pose" not in faults:
        for t, pose, effector in zip(command_times, command_poses, command_effector):
            messages.append(("/commanded_pose", ns(t) + 200_000, build.pose_stamped(ns(t), frame_id, pose)))
            messages.append(("/commanded_effector", ns(t) + 200_000,
                             build.joint_state(ns(t), space.effector_names, effector)))

    # Measured state at state_hz, lagging the command.
    state_times = np.arange(0.0, seconds, 1.0 / state_hz)
    measured_poses, measured_effector = commanded_targets(
        embodiment, np.maximum(state_times - TRACKING_LAG_S, 0.0), seed, seconds)
    corrupt_index = len(state_times) // 2 if "corrupt_message" in faults else -1
    for i, (t, pose, effector) in enumerate(zip(state_times, measured_poses, measured_effector)):
        if gap(t, "state_gap", 0.40, 0.55):
            continue
        log = ns(t) + int(_STATE_DELAY_S * 1e9)
        messages.append(("/ee_pose", log, build.pose_stamped(ns(t), frame_id, pose)))
        arm = 0.3 * np.sin(0.7 * t + np.arange(7) * 0.5 + seed)
        if embodiment == "panda":
            half_width = effector[0] * PANDA_MAX_GRIPPER_WIDTH_M / 2.0
            joints = build.joint_state(ns(t), PANDA_ARM_JOINTS + PANDA_FINGER_JOINTS,
                                       np.concatenate([arm, [half_width, half_width]]))
            messages.append(("/joint_states", log, ("corrupt", joints) if i == corrupt_index else joints))
        else:
            joints = build.joint_state(ns(t), XARM_JOINTS, arm)
            messages.append(("/joint_states", log, ("corrupt", joints) if i == corrupt_index else joints))
            messages.append(("/joint_states", log + 100_000, build.joint_state(ns(t), XHAND_JOINT_NAMES, effector)))

    # Cameras: jittered capture stamps, delivered 15-25 ms later.
    views = ["static"] + ([] if "missing_wrist_camera" in faults else ["wrist"])
    camera_times = np.arange(0.02, seconds, 1.0 / camera_hz)
    for view in views:
        topic = f"/{view}_camera/image_raw"
        stamps = camera_times + rng.uniform(-0.002, 0.002, size=camera_times.shape)
        if view == "static" and "out_of_order_stamps" in faults:
            middle = len(stamps) // 2
            stamps[middle] = stamps[middle - 1] - 0.04
        poses, effector = commanded_targets(embodiment, np.maximum(stamps - TRACKING_LAG_S, 0.0), seed, seconds)
        for nominal, t, pose, eff in zip(camera_times, stamps, poses, effector):
            if view == "wrist" and gap(t, "camera_gap", 0.40, 0.40 + 0.5 / seconds):
                continue
            pixels = _render(view, pose, float(eff[0] if embodiment == "panda" else eff[4] / 1.919), image_size, rng)
            # Arrival (log) time follows the nominal capture time: a wrong stamp does not reorder the bag.
            log = ns(nominal) + int(rng.uniform(*_CAMERA_DELAY_S) * 1e9)
            messages.append((topic, log, build.image(ns(t), f"{view}_camera_optical_frame", pixels)))

    # Action chunks (what a policy or scripted expert sent) every 0.5 s.
    horizon, dt = 10, 0.1
    for t in np.arange(0.1, seconds, 0.5):
        reference = commanded_targets(embodiment, np.array([max(t - TRACKING_LAG_S, 0.0)]), seed, seconds)[0][0]
        targets, effector = commanded_targets(embodiment, t + dt * np.arange(horizon), seed, seconds)
        actions = poses_to_actions(reference, targets, effector, space)
        chunk = build.types["vpp_msgs/msg/ActionChunk"](
            header=build.header(ns(t), frame_id), sequence_id=int(round(t * 2)), embodiment=embodiment,
            action_space=space.name, dimension_names=list(space.dimension_names), dt=dt, horizon=horizon,
            action_dim=space.dim, data=actions.astype(np.float32).reshape(-1), reference_pose=build.pose(reference),
            planning_latency=0.05, instruction=instruction)
        messages.append(("/action_chunk", ns(t) + 50_000_000, chunk))

    if "no_instruction" not in faults:
        messages.append(("/task_language", start - 1_000_000, build.string(instruction)))

    types = {
        "/static_camera/image_raw": "sensor_msgs/msg/Image",
        "/wrist_camera/image_raw": "sensor_msgs/msg/Image",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/ee_pose": "geometry_msgs/msg/PoseStamped",
        "/commanded_pose": "geometry_msgs/msg/PoseStamped",
        "/commanded_effector": "sensor_msgs/msg/JointState",
        "/action_chunk": "vpp_msgs/msg/ActionChunk",
        "/task_language": "std_msgs/msg/String",
    }
    # Stable sort by log time (ties keep insertion order), as a recorder writes them.
    order = sorted(range(len(messages)), key=lambda i: messages[i][1])
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        if "no_instruction" not in faults:
            writer.set_custom_data("vpp.instruction", instruction)
        writer.set_custom_data("vpp.embodiment", embodiment)
        writer.set_custom_data("vpp.episode_name", path.name)
        writer.set_custom_data("vpp.outcome", "success")
        connections = {}
        for topic in sorted({m[0] for m in messages}):
            connections[topic] = writer.add_connection(topic, types[topic], typestore=build.store)
        for index in order:
            topic, log, message = messages[index]
            corrupt = isinstance(message, tuple)
            if corrupt:
                message = message[1]
            raw = bytes(build.store.serialize_cdr(message, types[topic]))
            if corrupt:
                raw = raw[: len(raw) // 2]
            writer.write(connections[topic], log, raw)
    return path
