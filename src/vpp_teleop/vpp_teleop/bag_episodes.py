"""Per-episode ``ros2 bag record`` behind the recorder's episode service (robot PCs with rosbag2).

    python -m vpp_teleop.bag_episodes --ros-args --params-file config/xhand.yaml -r __node:=recorder

``ros2 bag record`` (Jazzy and later) offers ``~/pause``, ``~/resume``, ``~/split_bagfile`` and
``~/snapshot`` services on a running recorder, but none that starts a new bag with its own
metadata or throws one away; and the instruction must be in each bag's ``custom_data`` (brief C1).
So this node runs one ``ros2 bag record`` process per episode, behind the same
``~/episode`` service (vpp_msgs/srv/RecordEpisode) as the fallback recorder
(:mod:`vpp_ros.recorder`), so the episode tools work with either:

* START: ``ros2 bag record -s mcap -o <output_dir>/<name> --qos-profile-overrides-path
  config/teleop/bag_qos_overrides.yaml --custom-data vpp.instruction=... vpp.embodiment=...
  vpp.episode_name=... --topics <the recorder's explicit list>``; answers once the process runs;
  the bag's first messages come ~0.5-1 s later (process start and discovery): start the episode,
  then demonstrate.
* STOP: SIGINT (rosbag2 closes the bag cleanly), then ``vpp.outcome: kept`` is added to
  metadata.yaml.
* DISCARD: SIGINT, then the bag folder is deleted.

Topics, storage, output_dir, embodiment and episode_prefix come from the ``recorder:`` section of
the robot YAML (the same values the fallback recorder uses); ``bag_qos_overrides`` is the QoS
override file (sensor-data QoS for cameras and robot state).
"""

from __future__ import annotations

import datetime
import pathlib
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["BagEpisodeConfig", "bag_record_command", "rosbag2_available", "main"]

DEFAULT_QOS_OVERRIDES = "config/teleop/bag_qos_overrides.yaml"


@dataclass
class BagEpisodeConfig:
    """Parameters (the ``recorder:`` section, plus ``bag_qos_overrides``)."""

    topics: tuple[str, ...] = field(default=(), metadata={"help": "topics to record (/name or /name:pkg/msg/Type)"})
    storage: str = field(default="mcap", metadata={"help": "rosbag2 storage plugin"})
    output_dir: str = field(default="data/bags", metadata={"help": "episode bags go here"})
    embodiment: str = field(default="xhand", metadata={"help": "vpp.embodiment in the metadata"})
    episode_prefix: str = field(default="episode", metadata={"help": "episode folder name prefix"})
    bag_qos_overrides: str = field(default=DEFAULT_QOS_OVERRIDES, metadata={"help": "rosbag2 QoS override YAML"})
    stop_timeout_s: float = field(default=15.0, metadata={"help": "wait this long for ros2 bag to close [s]"})


def rosbag2_available() -> bool:
    """True when the ``ros2`` CLI with its ``bag`` verb (rosbag2_py) is installed."""
    if shutil.which("ros2") is None:
        return False
    try:
        import rosbag2_py  # noqa: F401
    except ImportError:
        return False
    return True


def bag_record_command(config: BagEpisodeConfig, bag_path: str, custom_data: dict[str, str],
                       qos_overrides: Optional[str]) -> list[str]:
    """The ``ros2 bag record`` command line of one episode."""
    from vpp_ros.recorder import parse_topic_entry

    topics = [parse_topic_entry(entry)[0] for entry in config.topics]
    if not topics:
        raise ValueError("recorder.topics is empty: record an explicit topic list")
    command = ["ros2", "bag", "record", "-s", config.storage, "-o", bag_path]
    if qos_overrides:
        command += ["--qos-profile-overrides-path", qos_overrides]
    if custom_data:
        command += ["--custom-data", *(f"{key}={value}" for key, value in custom_data.items())]
    return command + ["--topics", *topics]


def main(argv: Optional[list[str]] = None) -> int:
    from rclpy.node import Node
    from vpp_msgs.srv import RecordEpisode

    from vpp_ros.node_main import run_node
    from vpp_ros.params import declare_dataclass_parameters
    from vpp_ros.recorder import update_custom_data
    from vpp_teleop.retargeting import resolve_path

    class BagEpisodeNode(Node):
        def __init__(self) -> None:
            super().__init__("recorder")
            self.cfg: BagEpisodeConfig = declare_dataclass_parameters(self, BagEpisodeConfig)
            if not rosbag2_available():
                raise RuntimeError("no `ros2 bag` here: use the fallback recorder (vpp_ros recorder)")
            self.qos = str(resolve_path(self.cfg.bag_qos_overrides)) if self.cfg.bag_qos_overrides else None
            self.proc: Optional[subprocess.Popen] = None
            self.bag: Optional[pathlib.Path] = None
            self.counter = 0
            self.create_service(RecordEpisode, "~/episode", self._on_episode)
            self.get_logger().info(f"ros2 bag record per episode into {self.cfg.output_dir} "
                                   f"({len(self.cfg.topics)} topics, {self.cfg.storage}, QoS overrides {self.qos})")

        def _close(self) -> int:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=self.cfg.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
            finally:
                self.proc = None

        def _on_episode(self, request, response):
            response.success, response.episode_name = False, self.bag.name if self.bag else ""
            if request.command == RecordEpisode.Request.START:
                if self.proc is not None:
                    response.message = f"already recording {self.bag.name}: STOP or DISCARD it first"
                    return response
                if not request.instruction.strip():
                    response.message = "START needs the instruction the episode demonstrates"
                    return response
                self.counter += 1
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
                self.bag = pathlib.Path(self.cfg.output_dir) / f"{self.cfg.episode_prefix}_{stamp}_{self.counter:03d}"
                self.bag.parent.mkdir(parents=True, exist_ok=True)
                custom = {"vpp.instruction": request.instruction.strip(), "vpp.embodiment": self.cfg.embodiment,
                          "vpp.episode_name": self.bag.name}
                self.proc = subprocess.Popen(bag_record_command(self.cfg, str(self.bag), custom, self.qos))
                response.success, response.episode_name = True, self.bag.name
                response.message = f"recording {self.bag.name}: {request.instruction.strip()!r}"
            elif request.command in (RecordEpisode.Request.STOP, RecordEpisode.Request.DISCARD):
                if self.proc is None:
                    response.message = "not recording"
                    return response
                code = self._close()
                if request.command == RecordEpisode.Request.STOP:
                    try:
                        update_custom_data(self.bag, {"vpp.outcome": "kept"})
                    except OSError as exc:
                        self.get_logger().error(f"could not mark {self.bag}: {exc}")
                    response.message = f"kept {self.bag} (ros2 bag exit code {code})"
                else:
                    shutil.rmtree(self.bag, ignore_errors=True)
                    response.message = f"discarded {self.bag.name}"
                response.success = True
            else:
                response.message = f"unknown command {request.command}"
            self.get_logger().info(response.message)
            return response

        def destroy_node(self) -> None:
            if self.proc is not None:
                self._close()
            super().destroy_node()

    return run_node(BagEpisodeNode, argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
