"""Episode recorder: an explicit list of topics -> one rosbag2 per episode (demonstrations).

    python -m vpp_ros.recorder --ros-args --params-file config/panda.yaml      (or entry point `recorder`)
    ros2 service call /recorder/episode vpp_msgs/srv/RecordEpisode "{command: 0, instruction: 'touch the red cube'}"
    ros2 service call /recorder/episode vpp_msgs/srv/RecordEpisode "{command: 1}"      # STOP: keep
    ros2 service call /recorder/episode vpp_msgs/srv/RecordEpisode "{command: 2}"      # DISCARD: delete

Messages are received serialized (raw CDR, never deserialized) and written with ``rosbags``
(mcap by default, sqlite3 on request) using the project's typestore
(:func:`vpp_core.data.ros_types.vpp_typestore`), so the bags are what ``ros2 bag play`` reads and
what ``python -m vpp_core.data.convert`` turns into a dataset. Each message's bag time stamp is
its receive time (like ``ros2 bag record``); the header stamps inside stay untouched.

Threads: subscription callbacks only put ``(topic, time, bytes)`` on a bounded queue; one writer
thread owns the open bag. A full queue drops the message and counts it per topic (reported on
STOP and in the bag's ``custom_data``). STOP and shutdown drain the queue before the bag is
closed, so nothing received is lost; SIGINT during an episode closes the bag properly with
``vpp.outcome: interrupted``.

Subscriptions adapt to the publishers' QoS like ``ros2 bag record``: reliable only when every
publisher is reliable (images and robot state are best effort, chunks and instructions reliable),
transient-local only when every publisher is. The message type of a topic comes from the YAML
(``/topic:pkg/msg/Type``) or, when not given, from the graph once a publisher appears.

Episode metadata (``metadata.yaml`` ``custom_data``): ``vpp.instruction``, ``vpp.embodiment``,
``vpp.episode_name``, ``vpp.outcome`` (``kept`` / ``interrupted``, or what the caller sets
later with :func:`update_custom_data`), ``vpp.message_counts`` and ``vpp.dropped`` (JSON).
"""

from __future__ import annotations

import datetime
import json
import pathlib
import queue
import shutil
import sys
import threading
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["RecorderConfig", "BagWriterThread", "parse_topic_entry", "update_custom_data", "read_custom_data", "main"]

STORAGES = ("mcap", "sqlite3")


@dataclass
class RecorderConfig:
    """Parameters of the recorder node (``recorder:`` section of config/<robot>.yaml)."""

    #: Topics to record, each ``/name`` or ``/name:pkg/msg/Type`` (type given: subscribed at start).
    topics: tuple[str, ...] = ()
    #: Bag storage: mcap or sqlite3.
    storage: str = "mcap"
    #: Folder the episode bags are written into (created if missing).
    output_dir: str = "data/bags"
    #: Robot the demonstrations are for (vpp.embodiment in the bag metadata).
    embodiment: str = "panda"
    #: Episode folder names: <prefix>_<UTC time>_<counter>.
    episode_prefix: str = "episode"
    #: Most messages waiting for the writer thread; beyond this, messages are dropped and counted.
    max_queue_messages: int = 2000
    #: Subscription queue depth (history) per topic.
    subscription_depth: int = 100
    #: How often the graph is checked for publishers of topics not yet subscribed [s].
    discovery_period_s: float = 0.5
    #: Period of ~/status (std_msgs/String, JSON: recording, episode, received, dropped) [s].
    status_period_s: float = 0.5


def parse_topic_entry(entry: str) -> tuple[str, Optional[str]]:
    """``'/a/b:pkg/msg/T'`` -> ``('/a/b', 'pkg/msg/T')``; ``'/a/b'`` -> ``('/a/b', None)``."""
    text = entry.strip()
    if not text:
        raise ValueError("empty topic entry")
    name, sep, msgtype = text.partition(":")
    name, msgtype = name.strip(), msgtype.strip()
    if not name.startswith("/") or " " in name:
        raise ValueError(f"topic must be an absolute name like /camera/image_raw, got {name!r}")
    if sep:
        parts = msgtype.split("/")
        if len(parts) == 2:
            parts = [parts[0], "msg", parts[1]]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"message type must look like pkg/msg/Name, got {msgtype!r} for {name}")
        return name, "/".join(parts)
    return name, None


def _metadata_path(bag: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(bag) / "metadata.yaml"


def read_custom_data(bag: str | pathlib.Path) -> dict[str, str]:
    """``custom_data`` of a rosbag2 folder's metadata.yaml ({} when none)."""
    import yaml

    data = yaml.safe_load(_metadata_path(pathlib.Path(bag)).read_text()) or {}
    return dict((data.get("rosbag2_bagfile_information") or {}).get("custom_data") or {})


def update_custom_data(bag: str | pathlib.Path, values: dict[str, Any]) -> None:
    """Add/replace keys in a closed bag's ``custom_data`` (values become strings; atomic rewrite)."""
    import yaml

    path = _metadata_path(pathlib.Path(bag))
    data = yaml.safe_load(path.read_text()) or {}
    info = data.setdefault("rosbag2_bagfile_information", {})
    custom = dict(info.get("custom_data") or {})
    custom.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in values.items()})
    info["custom_data"] = custom
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=False))
    tmp.replace(path)


class _Episode:
    """One open bag (owned by the writer thread once opened)."""

    def __init__(self, path: pathlib.Path, storage: str, custom_data: dict[str, str], typestore) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.path = path
        self.writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self.writer.open()
        for key, value in custom_data.items():
            self.writer.set_custom_data(key, value)
        self.typestore = typestore
        self.connections: dict[tuple[str, str], Any] = {}
        self.counts: dict[str, int] = {}
        self.write_errors: dict[str, str] = {}

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        key = (topic, msgtype)
        conn = self.connections.get(key)
        if conn is None:
            conn = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
            self.connections[key] = conn
        self.writer.write(conn, stamp_ns, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1


class BagWriterThread:
    """Writes queued raw messages into the open episode bag on its own thread.

    ``start_episode`` / ``finish_episode`` are called from the ROS thread; ``put`` from
    subscription callbacks (never blocks). All bag I/O happens on the writer thread.
    """

    _CALL = object()

    def __init__(self, typestore, storage: str = "mcap", max_queue: int = 2000, logger=None) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.typestore = typestore
        self.storage = storage
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(max_queue)))
        self.log = logger
        self._lock = threading.Lock()
        self._episode: Optional[_Episode] = None
        self._accepting = False
        self.dropped: dict[str, int] = {}
        self.error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    @property
    def recording(self) -> bool:
        return self._accepting

    @property
    def episode_path(self) -> Optional[pathlib.Path]:
        episode = self._episode
        return episode.path if episode is not None else None

    def start_episode(self, path: pathlib.Path, custom_data: dict[str, str], timeout_s: float = 30.0) -> None:
        """Open a new bag at ``path`` (must not exist) on the writer thread; raises on failure."""
        with self._lock:
            if self._episode is not None:
                raise RuntimeError(f"an episode is already being recorded ({self._episode.path.name})")
            self._call(self._open_episode, timeout_s, path, custom_data)
            self.dropped = {}
            self.error = None
            self._accepting = True

    def _call(self, fn, timeout_s: float, *args):
        """Run ``fn(*args)`` on the writer thread after everything queued so far; return its result.

        Storage handles (sqlite3 connections) belong to the thread that opened them, so opening,
        writing and closing all happen there.
        """
        done = threading.Event()
        result: dict[str, Any] = {}
        self.queue.put((self._CALL, fn, args, done, result))  # blocks at most until a slot frees
        if not done.wait(timeout_s):
            raise TimeoutError(f"the bag writer did not answer in {timeout_s:.0f} s")
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def _open_episode(self, path: pathlib.Path, custom_data: dict[str, str]) -> None:
        self._episode = _Episode(path, self.storage, custom_data, self.typestore)

    def put(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> bool:
        """Queue one message if recording; False (and counted) when the queue is full."""
        if not self._accepting:
            return False
        try:
            self.queue.put_nowait((topic, msgtype, stamp_ns, data))
            return True
        except queue.Full:
            self.dropped[topic] = self.dropped.get(topic, 0) + 1
            return False

    def finish_episode(self, keep: bool, extra_custom_data: Optional[dict[str, str]] = None,
                       timeout_s: float = 60.0) -> tuple[Optional[pathlib.Path], dict[str, int], dict[str, int]]:
        """Stop accepting, write everything queued, close (keep) or delete the bag.

        Returns (bag path or None when discarded/none open, message counts, drops).
        """
        with self._lock:
            episode = self._episode
            self._accepting = False
            if episode is None:
                return None, {}, {}
        return self._call(self._close_episode, timeout_s, episode, keep, extra_custom_data)

    def _close_episode(self, episode: _Episode, keep: bool, extra: Optional[dict[str, str]]):
        counts, dropped = dict(episode.counts), dict(self.dropped)
        self._episode = None
        if keep:
            writer = episode.writer
            writer.set_custom_data("vpp.message_counts", json.dumps(counts, sort_keys=True))
            writer.set_custom_data("vpp.dropped", json.dumps(dropped, sort_keys=True))
            for key, value in (extra or {}).items():
                writer.set_custom_data(key, value)
            writer.close()
            return episode.path, counts, dropped
        try:
            episode.writer.close()
        except Exception:  # noqa: BLE001 - the bag is deleted anyway
            pass
        shutil.rmtree(episode.path, ignore_errors=True)
        return None, counts, dropped

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if item[0] is self._CALL:
                _tag, fn, args, done, result = item
                try:
                    result["value"] = fn(*args)
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    result["error"] = exc
                done.set()
                continue
            topic, msgtype, stamp_ns, data = item
            episode = self._episode
            if episode is None:
                continue
            try:
                episode.write(topic, msgtype, stamp_ns, data)
            except Exception as exc:  # noqa: BLE001 - one bad topic must not stop the recording
                if topic not in episode.write_errors:
                    episode.write_errors[topic] = f"{type(exc).__name__}: {exc}"
                    self.error = f"cannot write {topic} ({msgtype}): {exc}"
                    if self.log is not None:
                        self.log.error(self.error)
                self.dropped[topic] = self.dropped.get(topic, 0) + 1

    def close(self) -> None:
        """Stop the writer thread (call after finish_episode)."""
        self.queue.put(None)
        self._thread.join(timeout=10.0)


def _main_node():
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from vpp_msgs.srv import RecordEpisode

    from vpp_ros.params import declare_dataclass_parameters
    from vpp_ros.relay import import_message_type as get_message

    class RecorderNode(Node):
        def __init__(self) -> None:
            super().__init__("recorder")
            self.cfg: RecorderConfig = declare_dataclass_parameters(self, RecorderConfig)
            cfg = self.cfg
            log = self.get_logger()
            if cfg.storage not in STORAGES:
                raise ValueError(f"storage must be one of {STORAGES}, got {cfg.storage!r}")
            if not cfg.topics:
                raise ValueError("no topics to record: set recorder.topics in the parameter file")
            self.wanted: dict[str, Optional[str]] = dict(parse_topic_entry(e) for e in cfg.topics)
            from vpp_core.data.ros_types import vpp_typestore

            self.typestore = vpp_typestore()
            for topic, msgtype in self.wanted.items():
                if msgtype is not None and msgtype not in self.typestore.types:
                    raise ValueError(f"{topic}: type {msgtype} is not in the typestore (not a standard or vpp_msgs type)")
            self.output_dir = pathlib.Path(cfg.output_dir).expanduser()
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.bag_writer = BagWriterThread(self.typestore, cfg.storage, cfg.max_queue_messages, logger=log)
            self.subs: dict[str, Any] = {}
            self.sub_types: dict[str, str] = {}
            self.sub_qos: dict[str, tuple] = {}
            self.received: dict[str, int] = {}
            self.counter = 0
            self.instruction = ""
            self._get_message = get_message
            self._qos_classes = (QoSProfile, HistoryPolicy, ReliabilityPolicy, DurabilityPolicy)
            self.create_service(RecordEpisode, "~/episode", self._on_episode)
            from std_msgs.msg import String

            from vpp_ros.qos import STATUS_QOS

            self._String = String
            self.status_pub = self.create_publisher(String, "~/status", STATUS_QOS)
            self.create_timer(cfg.status_period_s, self._publish_status)
            self.RecordEpisode = RecordEpisode
            self._discover()
            self.create_timer(cfg.discovery_period_s, self._discover)
            log.info(f"recording {len(self.wanted)} topics into {self.output_dir} ({cfg.storage}); "
                     f"call {self.get_fully_qualified_name()}/episode to START/STOP/DISCARD")

        # ---------------------------------------------------------------- subscriptions
        def _qos_for(self, topic: str) -> tuple[Any, tuple]:
            QoSProfile, HistoryPolicy, ReliabilityPolicy, DurabilityPolicy = self._qos_classes
            infos = self.get_publishers_info_by_topic(topic)
            reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            latched = bool(infos) and all(
                i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
            key = (reliable, latched)
            profile = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=self.cfg.subscription_depth,
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            return profile, key

        def _discover(self) -> None:
            graph_types = None
            for topic, configured in self.wanted.items():
                msgtype = configured
                if msgtype is None:
                    if graph_types is None:
                        graph_types = dict(self.get_topic_names_and_types())
                    types = graph_types.get(topic) or []
                    if not types:
                        continue
                    msgtype = types[0]
                has_publishers = self.count_publishers(topic) > 0
                if topic in self.subs:
                    # Re-subscribe when a publisher appears that the current QoS cannot hear
                    # (e.g. subscribed reliable, now a best-effort publisher joined).
                    if has_publishers:
                        _profile, key = self._qos_for(topic)
                        if key != self.sub_qos[topic] and not self.bag_writer.recording:
                            self.destroy_subscription(self.subs.pop(topic))
                        else:
                            continue
                    else:
                        continue
                if configured is None and not has_publishers:
                    continue
                try:
                    msg_class = self._get_message(msgtype)
                except ValueError as exc:
                    self.get_logger().error(f"{topic}: cannot load message type {msgtype}: {exc}",
                                            throttle_duration_sec=30.0)
                    continue
                if msgtype not in self.typestore.types:
                    self.get_logger().error(f"{topic}: type {msgtype} is not in the typestore; not recorded",
                                            throttle_duration_sec=30.0)
                    continue
                profile, key = self._qos_for(topic)
                self.subs[topic] = self.create_subscription(
                    msg_class, topic, lambda data, info, t=topic, m=msgtype: self._on_message(t, m, data, info),
                    profile, raw=True)
                self.sub_types[topic], self.sub_qos[topic] = msgtype, key
                self.get_logger().info(f"subscribed {topic} ({msgtype}, "
                                       f"{'reliable' if key[0] else 'best effort'}"
                                       f"{', transient local' if key[1] else ''})")

        def _on_message(self, topic: str, msgtype: str, data: bytes, info) -> None:
            stamp = int(info.get("received_timestamp", 0)) if isinstance(info, dict) else \
                int(getattr(info, "received_timestamp", 0) or 0)
            if stamp <= 0:
                stamp = self.get_clock().now().nanoseconds
            self.received[topic] = self.received.get(topic, 0) + 1
            self.bag_writer.put(topic, msgtype, stamp, bytes(data))

        def _publish_status(self) -> None:
            path = self.bag_writer.episode_path
            status = {"recording": self.bag_writer.recording, "episode": path.name if path else "",
                      "instruction": self.instruction if path else "", "subscribed": sorted(self.subs),
                      "received": dict(sorted(self.received.items())), "queued": self.bag_writer.queue.qsize(),
                      "dropped": dict(self.bag_writer.dropped), "error": self.bag_writer.error or ""}
            self.status_pub.publish(self._String(data=json.dumps(status)))

        # ---------------------------------------------------------------- service
        def _on_episode(self, request, response):
            R = self.RecordEpisode.Request
            log = self.get_logger()
            try:
                if request.command == R.START:
                    instruction = request.instruction.strip()
                    if not instruction:
                        raise ValueError("START needs the instruction the episode demonstrates")
                    if self.bag_writer.recording:
                        raise RuntimeError(f"already recording {self.bag_writer.episode_path.name}; STOP or "
                                           "DISCARD it first")
                    self.counter += 1
                    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
                    name = f"{self.cfg.episode_prefix}_{stamp}_{self.counter:04d}"
                    while (self.output_dir / name).exists():
                        self.counter += 1
                        name = f"{self.cfg.episode_prefix}_{stamp}_{self.counter:04d}"
                    self.bag_writer.start_episode(self.output_dir / name, {
                        "vpp.instruction": instruction, "vpp.embodiment": self.cfg.embodiment,
                        "vpp.episode_name": name})
                    self.instruction = instruction
                    missing = [t for t in self.wanted if t not in self.subs]
                    response.success, response.episode_name = True, name
                    response.message = f"recording {name}: {instruction!r}" + (
                        f" (no publisher yet on {', '.join(missing)})" if missing else "")
                    log.info(response.message)
                elif request.command in (R.STOP, R.DISCARD):
                    keep = request.command == R.STOP
                    path = self.bag_writer.episode_path
                    if path is None:
                        raise RuntimeError("not recording: START an episode first")
                    bag, counts, dropped = self.bag_writer.finish_episode(keep, {"vpp.outcome": "kept"})
                    response.success, response.episode_name = True, path.name
                    summary = ", ".join(f"{t.rsplit('/', 1)[-1] if t.count('/') == 1 else t} {n}"
                                        for t, n in sorted(counts.items()))
                    response.message = (f"{'kept' if keep else 'discarded'} {path.name}: {sum(counts.values())} "
                                        f"messages ({summary})")
                    if dropped:
                        response.message += f"; DROPPED {dropped}"
                    if self.bag_writer.error:
                        response.message += f"; write error: {self.bag_writer.error}"
                    (log.warning if dropped else log.info)(response.message)
                else:
                    raise ValueError(f"unknown command {request.command} (0 START, 1 STOP, 2 DISCARD)")
            except (ValueError, RuntimeError, OSError, TimeoutError) as exc:
                response.success = False
                response.message = f"{type(exc).__name__}: {exc}"
                log.error(f"episode command {request.command} refused: {response.message}")
            except Exception as exc:  # noqa: BLE001 - a bad request must never kill the recorder
                response.success = False
                response.message = f"{type(exc).__name__}: {exc}"
                log.error(f"episode command {request.command} failed: {response.message}")
            return response

        def destroy_node(self) -> bool:
            writer = getattr(self, "bag_writer", None)
            if writer is not None:
                path = writer.episode_path
                if path is not None:
                    bag, counts, _dropped = writer.finish_episode(True, {"vpp.outcome": "interrupted"})
                    print(f"[recorder] shutdown during an episode: closed {bag} "
                          f"({sum(counts.values())} messages, outcome 'interrupted')", flush=True)
                writer.close()
            return super().destroy_node()

    return RecorderNode()


def main(argv: Optional[list[str]] = None) -> int:
    from vpp_ros.node_main import run_node

    def RecorderNode():  # noqa: N802 - named for run_node's error message
        return _main_node()

    return run_node(RecorderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
