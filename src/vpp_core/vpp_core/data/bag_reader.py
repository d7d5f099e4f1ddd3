"""Reading one demonstration bag (rosbag2, mcap or sqlite3) without a ROS install.

Two passes keep memory bounded for long episodes with full-resolution cameras:

1. :func:`read_bag` deserialises every message of the recorded topics once and keeps what is
   small: per camera only the capture stamps (and checks each frame's layout); joint positions
   per joint name; measured and commanded poses; commanded effector values; instructions. Any
   problem (missing topic, corrupt message, header stamps going backwards, unset stamps,
   non-finite values, unsupported image encoding) raises :class:`BagError` with a precise reason.
2. :func:`read_frames` decodes only the camera frames the time alignment picked and resizes each
   one straight away (the engine's resize, :func:`vpp_core.image.resize_square_uint8`).

Types: bags recorded by ``ros2 bag record`` / the project's recorder embed their message
definitions; bags without them are read with :func:`vpp_core.data.ros_types.vpp_typestore`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import yaml
from rosbags.highlevel import AnyReader

from ..action_space import is_valid_pose, pose_from_pos_quat
from ..image import resize_square_uint8
from .ros_types import vpp_typestore

__all__ = [
    "BagError",
    "BagTopics",
    "CameraStream",
    "Series",
    "BagContents",
    "is_bag_dir",
    "find_bags",
    "read_bag",
    "read_frames",
    "image_to_rgb",
]

log = logging.getLogger(__name__)

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class BagError(ValueError):
    """A bag cannot be converted; the message says why (it goes to rejected.jsonl)."""


@dataclass(frozen=True)
class BagTopics:
    """Topic names of contract C1 (configurable in config/data/convert.yaml)."""

    cameras: Mapping[str, str]  # view -> topic
    joint_states: str = "/joint_states"
    ee_pose: str = "/ee_pose"
    commanded_pose: str = "/commanded_pose"
    commanded_effector: str = "/commanded_effector"
    task_language: str = "/task_language"
    action_chunk: str = "/action_chunk"


@dataclass
class CameraStream:
    topic: str
    stamps_ns: np.ndarray  # (N,) capture stamps, strictly increasing after de-duplication
    indexes: np.ndarray    # (N,) position of each kept frame among the topic's messages
    duplicates: int        # frames dropped because their stamp equalled the previous one
    height: int
    width: int
    encoding: str


@dataclass
class Series:
    """A time series sampled at header stamps: ``values[i]`` at ``stamps_ns[i]``."""

    stamps_ns: np.ndarray
    values: np.ndarray
    duplicates: int = 0


@dataclass
class BagContents:
    path: Path
    storage: str
    custom_data: dict[str, str]
    cameras: dict[str, CameraStream]
    joints: dict[str, Series]                 # joint name -> (N,) positions
    ee_pose: Optional[Series]                 # (N, 4, 4)
    commanded_pose: Optional[Series]          # (N, 4, 4)
    commanded_effector: dict[str, Series]     # effector dimension name -> (N,) values
    task_language: list[tuple[int, str]]      # (log time ns, text)
    message_counts: dict[str, int]
    action_chunks: int = 0
    notes: list[str] = field(default_factory=list)


def is_bag_dir(path: Path) -> bool:
    return (path / "metadata.yaml").is_file()


def find_bags(inputs: Sequence[Path | str]) -> list[Path]:
    """Bag directories among ``inputs`` (bags themselves, or folders searched recursively), sorted."""
    bags: set[Path] = set()
    for item in map(Path, inputs):
        if not item.exists():
            raise FileNotFoundError(f"{item} does not exist")
        if is_bag_dir(item):
            bags.add(item.resolve())
        elif item.is_dir():
            bags.update(meta.parent.resolve() for meta in item.rglob("metadata.yaml"))
        else:
            raise ValueError(f"{item} is neither a rosbag2 directory (with metadata.yaml) nor a folder of them")
    return sorted(bags)


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _describe(stamp_ns: int, start_ns: int) -> str:
    return f"t={(stamp_ns - start_ns) / 1e9:.3f} s"


class _StreamCheck:
    """Collects header stamps of one stream and rejects unset or backwards stamps."""

    def __init__(self, topic: str, what: str) -> None:
        self.topic, self.what = topic, what
        self.stamps: list[int] = []
        self.duplicates = 0

    def accept(self, stamp: int, index: int, start_ns: int) -> bool:
        """True to keep the sample; False for an exact duplicate stamp; raises when it goes backwards."""
        if stamp <= 0:
            raise BagError(f"{self.topic}: message {index} has an unset header stamp (0); stamps must be capture times")
        if self.stamps and stamp <= self.stamps[-1]:
            if stamp == self.stamps[-1]:
                self.duplicates += 1
                return False
            raise BagError(
                f"out-of-order header stamps on {self.topic}{self.what}: message {index} is stamped "
                f"{_describe(stamp, start_ns)}, {(self.stamps[-1] - stamp) / 1e6:.1f} ms before the previous one "
                f"({_describe(self.stamps[-1], start_ns)}); a clock jumped or two publishers share the topic"
            )
        self.stamps.append(stamp)
        return True


def _pose_matrix(pose: Any, topic: str, index: int) -> np.ndarray:
    position = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    quat = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w], dtype=np.float64)
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))):
        raise BagError(f"{topic}: message {index} has a non-finite pose")
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > 1e-3:
        raise BagError(f"{topic}: message {index} has a non-unit orientation quaternion (norm {norm:.4f})")
    matrix = pose_from_pos_quat(position, quat)
    if not is_valid_pose(matrix):
        raise BagError(f"{topic}: message {index} is not a rigid transform")
    return matrix


def _check_image(message: Any, topic: str, index: int) -> tuple[int, int, str]:
    encoding = str(message.encoding)
    if encoding not in _CHANNELS:
        raise BagError(f"{topic}: image encoding {encoding!r} is not supported (use one of {sorted(_CHANNELS)})")
    height, width, step = int(message.height), int(message.width), int(message.step)
    if height < 1 or width < 1 or step < width * _CHANNELS[encoding] or len(message.data) < step * height:
        raise BagError(
            f"{topic}: message {index} is malformed ({width}x{height} {encoding}, step {step}, {len(message.data)} bytes)"
        )
    return height, width, encoding


def image_to_rgb(message: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> uint8 (H, W, 3) RGB."""
    encoding = str(message.encoding)
    channels = _CHANNELS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    data = np.frombuffer(bytes(message.data[: step * height]) if not isinstance(message.data, np.ndarray)
                         else message.data[: step * height], dtype=np.uint8)
    pixels = data.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr"):
        pixels = pixels[..., 2::-1]
    return np.ascontiguousarray(pixels[..., :3])


def _open_reader(path: Path) -> AnyReader:
    reader = AnyReader([path], default_typestore=vpp_typestore())
    try:
        reader.open()
    except Exception as error:  # rosbags raises several types for broken bags
        hint = ""
        if "magic" in str(error).lower():
            hint = " (the file looks truncated, e.g. the recording was killed: `mcap recover` can salvage it)"
        raise BagError(f"cannot open bag: {error}{hint}") from None
    return reader


def _messages(reader: AnyReader, connections: list) -> Iterator[tuple[Any, int, bytes]]:
    """``reader.messages`` with storage-level failures (truncated files) turned into :class:`BagError`."""
    iterator = reader.messages(connections=connections)
    count = 0
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            raise BagError(f"bag storage unreadable after {count} messages: {error}") from None
        count += 1
        yield item


def _bag_metadata(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((path / "metadata.yaml").read_text(encoding="utf-8"))
        return dict(data["rosbag2_bagfile_information"])
    except Exception as error:
        raise BagError(f"unreadable metadata.yaml: {error}") from None


def read_bag(path: Path | str, topics: BagTopics) -> BagContents:
    """Pass 1 over a bag (see the module doc). Raises :class:`BagError` for a bag that cannot be used."""
    path = Path(path)
    if not is_bag_dir(path):
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    reader = _open_reader(path)
    try:
        return _read_open_bag(path, reader, topics)
    finally:
        reader.close()


def _read_open_bag(path: Path, reader: AnyReader, topics: BagTopics) -> BagContents:
    info = _bag_metadata(path)
    custom = {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}
    storage = str(info.get("storage_identifier", "unknown"))
    start_ns = int(reader.start_time)
    by_topic = {c.topic: c for c in reader.connections}
    for view, topic in topics.cameras.items():
        if topic not in by_topic:
            raise BagError(f"missing camera topic {topic} (view '{view}'); the bag has {sorted(by_topic)}")
    for topic in (topics.joint_states, topics.ee_pose):
        if topic not in by_topic:
            raise BagError(f"missing topic {topic}; the bag has {sorted(by_topic)}")
    wanted = {topics.joint_states, topics.ee_pose, topics.commanded_pose, topics.commanded_effector,
              topics.task_language, topics.action_chunk, *topics.cameras.values()}
    view_of = {topic: view for view, topic in topics.cameras.items()}
    connections = [c for c in reader.connections if c.topic in wanted]
    expected_types = {topics.joint_states: "sensor_msgs/msg/JointState", topics.ee_pose: "geometry_msgs/msg/PoseStamped",
                      topics.commanded_pose: "geometry_msgs/msg/PoseStamped",
                      topics.commanded_effector: "sensor_msgs/msg/JointState", topics.task_language: "std_msgs/msg/String",
                      topics.action_chunk: "vpp_msgs/msg/ActionChunk",
                      **{t: "sensor_msgs/msg/Image" for t in topics.cameras.values()}}
    for connection in connections:
        if connection.msgtype != expected_types[connection.topic]:
            raise BagError(f"{connection.topic} has type {connection.msgtype}, expected {expected_types[connection.topic]}")

    counts: dict[str, int] = {}
    camera_checks = {view: _StreamCheck(topic, "") for view, topic in topics.cameras.items()}
    camera_indexes: dict[str, list[int]] = {view: [] for view in topics.cameras}
    camera_layout: dict[str, tuple[int, int, str]] = {}
    joint_checks: dict[str, _StreamCheck] = {}
    joint_values: dict[str, list[float]] = {}
    effector_checks: dict[str, _StreamCheck] = {}
    effector_values: dict[str, list[float]] = {}
    pose_checks = {topics.ee_pose: _StreamCheck(topics.ee_pose, ""), topics.commanded_pose: _StreamCheck(topics.commanded_pose, "")}
    pose_values: dict[str, list[np.ndarray]] = {topics.ee_pose: [], topics.commanded_pose: []}
    language: list[tuple[int, str]] = []
    chunks = 0

    for connection, log_ns, raw in _messages(reader, connections):
        topic = connection.topic
        index = counts.get(topic, 0)
        counts[topic] = index + 1
        try:
            message = reader.deserialize(raw, connection.msgtype)
        except Exception as error:
            raise BagError(
                f"corrupt message on {topic} (message {index}, log time {_describe(log_ns, start_ns)}): {error}"
            ) from None
        if topic in view_of:
            view = view_of[topic]
            layout = _check_image(message, topic, index)
            if view in camera_layout and camera_layout[view] != layout:
                raise BagError(f"{topic}: image size/encoding changed at message {index} ({camera_layout[view]} -> {layout})")
            camera_layout[view] = layout
            if camera_checks[view].accept(_stamp_ns(message.header), index, start_ns):
                camera_indexes[view].append(index)
        elif topic in (topics.ee_pose, topics.commanded_pose):
            matrix = _pose_matrix(message.pose, topic, index)
            if pose_checks[topic].accept(_stamp_ns(message.header), index, start_ns):
                pose_values[topic].append(matrix)
        elif topic in (topics.joint_states, topics.commanded_effector):
            names = list(message.name)
            positions = np.asarray(message.position, dtype=np.float64)
            if len(names) != len(positions):
                raise BagError(f"{topic}: message {index} has {len(names)} names but {len(positions)} positions")
            if not np.all(np.isfinite(positions)):
                bad = [n for n, v in zip(names, positions) if not np.isfinite(v)]
                raise BagError(f"{topic}: message {index} has non-finite positions for {bad}")
            checks, values = ((joint_checks, joint_values) if topic == topics.joint_states
                              else (effector_checks, effector_values))
            stamp = _stamp_ns(message.header)
            for name, value in zip(names, positions):
                check = checks.setdefault(name, _StreamCheck(topic, f" (joint {name!r})"))
                if check.accept(stamp, index, start_ns):
                    values.setdefault(name, []).append(float(value))
        elif topic == topics.task_language:
            language.append((int(log_ns), str(message.data)))
        elif topic == topics.action_chunk:
            chunks += 1

    cameras = {}
    for view, topic in topics.cameras.items():
        if not camera_indexes[view]:
            raise BagError(f"camera topic {topic} (view '{view}') has no messages")
        height, width, encoding = camera_layout[view]
        cameras[view] = CameraStream(topic, np.asarray(camera_checks[view].stamps, np.int64),
                                     np.asarray(camera_indexes[view], np.int64), camera_checks[view].duplicates,
                                     height, width, encoding)

    def series(check: _StreamCheck, values: Sequence[Any]) -> Series:
        return Series(np.asarray(check.stamps, np.int64), np.asarray(values, np.float64), check.duplicates)

    if not pose_values[topics.ee_pose]:
        raise BagError(f"{topics.ee_pose} has no messages")
    if not joint_values:
        raise BagError(f"{topics.joint_states} has no messages")
    return BagContents(
        path=path,
        storage=storage,
        custom_data=custom,
        cameras=cameras,
        joints={name: series(joint_checks[name], joint_values[name]) for name in joint_values},
        ee_pose=series(pose_checks[topics.ee_pose], pose_values[topics.ee_pose]),
        commanded_pose=(series(pose_checks[topics.commanded_pose], pose_values[topics.commanded_pose])
                        if pose_values[topics.commanded_pose] else None),
        commanded_effector={name: series(effector_checks[name], effector_values[name]) for name in effector_values},
        task_language=language,
        message_counts=counts,
        action_chunks=chunks,
    )


def read_frames(path: Path | str, topic: str, indexes: Sequence[int], size: int) -> np.ndarray:
    """Pass 2: frames number ``indexes`` (positions among ``topic``'s messages, any order, repeats
    allowed) as uint8 (len(indexes), size, size, 3), resized with the engine's resize."""
    path = Path(path)
    wanted = sorted(set(int(i) for i in indexes))
    decoded: dict[int, np.ndarray] = {}
    reader = _open_reader(path)
    try:
        connections = [c for c in reader.connections if c.topic == topic]
        position = -1
        cursor = 0
        for connection, log_ns, raw in _messages(reader, connections):
            position += 1
            if cursor >= len(wanted):
                break
            if position != wanted[cursor]:
                continue
            cursor += 1
            try:
                message = reader.deserialize(raw, connection.msgtype)
            except Exception as error:
                raise BagError(f"corrupt message on {topic} (message {position}): {error}") from None
            decoded[position] = resize_square_uint8(image_to_rgb(message), size)
    finally:
        reader.close()
    missing = [i for i in wanted if i not in decoded]
    if missing:
        raise BagError(f"{topic}: frames {missing[:5]} not found on the second read of the bag")
    return np.stack([decoded[int(i)] for i in indexes])
