"""The teleoperation/recording graph: cameras, robot, teleop node, episode recorder.

Shared by ``launch/teleop_xhand.launch.py`` (robot PCs) and the non-launch runner here:

    python -m vpp_teleop.teleop_graph --use-sim --avp-ip 127.0.0.1 [--recorder fallback] [--bag-dir DIR]

It is the robot's graph (:func:`vpp_ros.graph.build_graph`: cameras or the simulated world, the
executor) without the policy node, plus the teleop node and a recorder:

* ``rosbag2``: one ``ros2 bag record`` per episode (:mod:`vpp_teleop.bag_episodes`, mcap, the
  explicit topic list, ``config/teleop/bag_qos_overrides.yaml``);
* ``fallback``: the project's recorder (:mod:`vpp_ros.recorder`: rclpy raw subscriptions ->
  ``rosbags`` writer), same bag format, for machines without rosbag2;
* ``auto`` (default): rosbag2 when the ``ros2`` CLI with rosbag2 is installed, else fallback;
* ``none``.

Both recorders read the robot YAML's ``recorder:`` section (topics, storage, output_dir, ...)
with ``/hand_tracking`` added to the topics, and offer ``/recorder/episode``
(vpp_msgs/srv/RecordEpisode), which ``python -m vpp_teleop.episode_keys`` drives.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

from vpp_ros.graph import (LAUNCH_ARGUMENTS, GraphArgs, GraphProcesses, NodeSpec, build_graph,
                           graph_args_from_namespace)
from vpp_ros.params import load_node_parameters

__all__ = ["TELEOP_LAUNCH_ARGUMENTS", "RECORDERS", "build_teleop_graph", "recorder_kind", "main"]

RECORDERS = ("auto", "rosbag2", "fallback", "none")
HAND_TRACKING_TOPIC = "/hand_tracking:vpp_msgs/msg/HandTracking"

#: Launch arguments of teleop_xhand.launch.py: the robot graph's (no checkpoint) + teleop's.
TELEOP_LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    **{k: v for k, v in LAUNCH_ARGUMENTS.items() if k != "checkpoint"},
    "avp_ip": ("", "Vision Pro address (its Tracking Streamer app shows it); empty keeps config value"),
    "recorder": ("auto", "auto (rosbag2 if installed, else fallback) | rosbag2 | fallback | none"),
    "bag_dir": ("", "folder for the episode bags; empty keeps config value (recorder.output_dir)"),
}


def recorder_kind(requested: str) -> str:
    if requested not in RECORDERS:
        raise ValueError(f"recorder must be one of {RECORDERS}, got {requested!r}")
    if requested != "auto":
        return requested
    from vpp_teleop.bag_episodes import rosbag2_available

    return "rosbag2" if rosbag2_available() else "fallback"


def build_teleop_graph(args: GraphArgs, avp_ip: str = "", recorder: str = "auto",
                       bag_dir: str = "") -> list[NodeSpec]:
    """Node specs of the teleop graph for ``args.robot`` (see the module docstring)."""
    specs = [spec for spec in build_graph(args) if spec.name != "policy_node"]
    teleop_params: dict[str, Any] = {"avp_client.ip": avp_ip} if avp_ip else {}
    specs.append(NodeSpec("teleop_node", "vpp_teleop", "teleop_node", "vpp_teleop.teleop_node", teleop_params))
    kind = recorder_kind(recorder)
    if kind == "none":
        return specs
    recorder_params = load_node_parameters(args.resolved_config(), "recorder")
    topics = list(recorder_params.get("topics") or [])
    if not topics:
        raise ValueError(f"{args.resolved_config()} has no recorder.topics: the recording needs an explicit list")
    params: dict[str, Any] = {}
    if not any(entry.split(":")[0] == HAND_TRACKING_TOPIC.split(":")[0] for entry in topics):
        params["topics"] = topics + [HAND_TRACKING_TOPIC]
    if bag_dir:
        params["output_dir"] = bag_dir
    if kind == "rosbag2":
        specs.append(NodeSpec("recorder", "vpp_teleop", "bag_episodes", "vpp_teleop.bag_episodes", params))
    else:
        specs.append(NodeSpec("recorder", "vpp_ros", "recorder", "vpp_ros.recorder", params))
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the teleoperation + recording graph without ros2 launch.")
    parser.add_argument("--robot", default="xhand", choices=("xhand", "panda"))
    for name, (default, help_text) in TELEOP_LAUNCH_ARGUMENTS.items():
        flag = "--" + name.replace("_", "-")
        if name == "use_sim":
            parser.add_argument(flag, nargs="?", const="true", default=default, help=help_text)
        else:
            parser.add_argument(flag, default=default, help=help_text)
    parser.add_argument("--log-dir", default="", help="write each node's output to <dir>/<node>.log")
    ns = parser.parse_args(argv)
    ns.checkpoint = ""
    args = graph_args_from_namespace(ns)
    graph = GraphProcesses(args, log_dir=ns.log_dir or None)
    graph.specs = build_teleop_graph(args, ns.avp_ip, ns.recorder, ns.bag_dir)
    print(f"[teleop_graph] nodes: {[s.name for s in graph.specs]}; episodes: "
          f"python -m vpp_teleop.episode_keys (or ros2 service call /recorder/episode ...)")
    graph.start()
    try:
        while not graph.dead():
            time.sleep(0.5)
        print(f"[teleop_graph] node(s) exited: {graph.dead()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        graph.stop()


if __name__ == "__main__":
    raise SystemExit(main())
