"""The node graph of each robot stack, described once and started two ways.

``launch/<robot>.launch.py`` turns :func:`build_graph` into ``launch_ros`` nodes (robot PCs);
``python -m vpp_ros.graph`` starts the very same nodes as plain processes with the same YAML
parameter file (CI and developer machines have no ``launch`` package).

    python -m vpp_ros.graph --robot panda --use-sim            # simulation, Ctrl-C to stop
    python -m vpp_ros.graph --robot panda --robot-ip 172.16.0.2 --checkpoint models/panda
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Optional, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of the graph."""

    name: str
    package: str
    executable: str  # console script installed by the package (what launch_ros runs)
    module: str  # python module with main(), what the non-launch runner runs
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)  # on top of the YAML


@dataclasses.dataclass
class GraphArgs:
    """The launch arguments; names match ``ros2 launch vpp_bringup <robot>.launch.py ARG:=...``."""

    robot: str = "panda"
    config: str = ""  # YAML parameter file; default: config/<robot>.yaml
    use_sim: bool = False
    robot_ip: str = ""  # empty: keep the YAML's value
    checkpoint: str = ""  # empty: keep the YAML's value (empty there = tiny random policy)
    static_camera_serial: str = ""
    wrist_camera_serial: str = ""

    def resolved_config(self) -> str:
        if self.config:
            return self.config
        return str(default_config_path(self.robot))


#: Launch argument name -> (default, description). Used by the launch files and the CLI.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "use_sim": ("false", "true: franky-sim + simulated cameras on this machine; false: real hardware"),
    "robot_ip": ("", "robot controller address (Franka FCI / XArm); empty keeps config value"),
    "checkpoint": ("", "policy checkpoint directory; empty keeps config value (empty = tiny random)"),
    "static_camera_serial": ("", "RealSense serial of the static camera; empty keeps config value"),
    "wrist_camera_serial": ("", "RealSense serial of the wrist camera; empty keeps config value"),
    "config": ("", "parameter YAML; default: the package's config/<robot>.yaml"),
}

EXECUTORS = {"panda": "franka_executor", "xhand": "xhand_executor"}
#: The simulated world's node executable per robot (the node is always named ``sim_world``).
SIM_WORLDS = {"panda": "sim_world_node", "xhand": "xhand_sim_world_node"}
SIM_ROBOT_HOST = "127.0.0.1"


def free_sim_robot_host(ports: tuple[int, ...] = (1337, 1338), candidates: int = 16) -> str:
    """The first loopback address whose libfranka ports are free (another simulator may hold
    127.0.0.1's), so a simulated graph can start beside one that is already running."""
    import socket

    for i in range(1, candidates + 1):
        host = f"127.0.0.{i}"
        sockets = []
        try:
            for port in ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind((host, port))
            return host
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"libfranka ports {ports} are taken on 127.0.0.1-{candidates}: stop other simulators")


def default_config_path(robot: str) -> pathlib.Path:
    """config/<robot>.yaml: the source tree's when running from it, else the installed share."""
    source = REPO_ROOT / "config" / f"{robot}.yaml"
    if source.is_file():
        return source
    from ament_index_python.packages import get_package_share_directory

    return pathlib.Path(get_package_share_directory("vpp_bringup")) / "config" / f"{robot}.yaml"


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def build_graph(args: GraphArgs) -> list[NodeSpec]:
    """The nodes of ``args.robot``'s stack, with launch arguments turned into parameter overrides."""
    if args.robot not in EXECUTORS:
        raise ValueError(f"unknown robot {args.robot!r}; known: {sorted(EXECUTORS)}")
    executor = EXECUTORS[args.robot]
    nodes: list[NodeSpec] = []
    if args.use_sim:
        # One process owns the simulated world: franky-sim's robot server (libfranka protocol on
        # loopback) and the MuJoCo renderer of both cameras, publishing the same topics as the
        # real camera nodes.
        sim_params: dict[str, Any] = {}
        if args.robot_ip:
            sim_params["host"] = args.robot_ip
        if args.robot == "xhand":
            # MuJoCo xArm7 + XHand: the xArm is served over the xArm protocol on the SDK's Unix
            # sockets (any IP reaches it), the simulated hand over two topics.
            sim_params = {}
        sim_node = SIM_WORLDS[args.robot]
        nodes.append(NodeSpec("sim_world", "vpp_hardware", sim_node, f"vpp_hardware.nodes.{sim_node}", sim_params))
    else:
        for view, serial in (("static_camera", args.static_camera_serial), ("wrist_camera", args.wrist_camera_serial)):
            params: dict[str, Any] = {"serial": serial} if serial else {}
            nodes.append(NodeSpec(view, "vpp_hardware", "camera_node", "vpp_hardware.nodes.camera_node", params))
    exec_params: dict[str, Any] = {"robot_ip": args.robot_ip} if args.robot_ip else {}
    if args.use_sim and args.robot == "xhand":
        # The SDK reaches the simulated controller through /tmp/xarmcontroller_uds_* (forbidden
        # on the real robot); the hand is the simulated one.
        exec_params = {"robot_ip": args.robot_ip or SIM_ROBOT_HOST, "arm.forbid_uds": False, "hand_backend": "sim"}
    elif args.use_sim:
        # The simulated robot listens on loopback and the machine has no real-time kernel.
        exec_params = {"robot_ip": args.robot_ip or SIM_ROBOT_HOST, "arm.ignore_realtime": True}
    nodes.append(NodeSpec(executor, "vpp_hardware", f"{executor}_node",
                          f"vpp_hardware.nodes.{executor}_node", exec_params))
    policy_params: dict[str, Any] = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    nodes.append(NodeSpec("policy_node", "vpp_policy_node", "policy_node",
                          "vpp_policy_node.policy_node", policy_params))
    return nodes


def write_override_file(spec: NodeSpec, directory: str | pathlib.Path) -> Optional[str]:
    """A parameter file with ``spec.parameters`` under the node's own name, or None if empty.

    Overrides must be node-scoped: ROS gives a node's own section of a parameter file precedence
    over wildcard values, and ``-p name:=value`` is a wildcard value, so it would lose against
    the YAML's entry for the node.
    """
    if not spec.parameters:
        return None
    import yaml

    from vpp_ros.params import nest_parameters

    path = pathlib.Path(directory) / f"{spec.name}.overrides.yaml"
    path.write_text(yaml.safe_dump({spec.name: {"ros__parameters": nest_parameters(spec.parameters)}}))
    return str(path)


def ros_args_for(spec: NodeSpec, config: str, override_file: Optional[str] = None) -> list[str]:
    """``--ros-args`` for a node: its name, the YAML file, then its override file."""
    out = ["--ros-args", "-r", f"__node:={spec.name}", "--params-file", config]
    if override_file:
        out += ["--params-file", override_file]
    return out


def node_command(spec: NodeSpec, config: str, override_dir: str | pathlib.Path) -> list[str]:
    """The command line that runs ``spec`` as a plain process with ``config`` and its overrides."""
    override = write_override_file(spec, override_dir)
    return [sys.executable, "-m", spec.module, *ros_args_for(spec, config, override)]


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    """SIGTERM, then SIGKILL after ``timeout``; returns what is left of its piped output."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


class GraphProcesses:
    """Starts the graph's nodes as child processes and stops them together.

    Output of every node goes to ``log_dir/<node>.log`` when given, else to this process's
    stdout with a ``[node]`` prefix.
    """

    def __init__(self, args: GraphArgs, log_dir: str | pathlib.Path | None = None) -> None:
        self.args = args
        self.specs = build_graph(args)
        self.config = args.resolved_config()
        self.log_dir = pathlib.Path(log_dir) if log_dir else None
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("MUJOCO_GL", "osmesa")
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._override_dir: Optional[tempfile.TemporaryDirectory] = None

    def start(self) -> None:
        if not pathlib.Path(self.config).is_file():
            raise FileNotFoundError(f"parameter file {self.config} does not exist")
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._override_dir = tempfile.TemporaryDirectory(prefix="vpp-graph-")
        for spec in self.specs:
            cmd = node_command(spec, self.config, self._override_dir.name)
            if self.log_dir:
                out = open(self.log_dir / f"{spec.name}.log", "w")  # noqa: SIM115 - closed by the child
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)
                out.close()
            else:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True, text=True, bufsize=1)
                thread = threading.Thread(target=self._forward, args=(spec.name, proc), daemon=True)
                thread.start()
                self._threads.append(thread)
            self.procs[spec.name] = proc

    @staticmethod
    def _forward(name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()

    def dead(self) -> dict[str, int]:
        """Nodes that have exited, with their exit codes."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT every node (rclpy shuts down cleanly), then SIGKILL what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        for thread in self._threads:
            thread.join(timeout=2)
        if self._override_dir is not None:
            self._override_dir.cleanup()
            self._override_dir = None

    def __enter__(self) -> "GraphProcesses":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="panda", choices=sorted(EXECUTORS))
    for name, (default, help_text) in LAUNCH_ARGUMENTS.items():
        flag = "--" + name.replace("_", "-")
        if name == "use_sim":
            parser.add_argument(flag, nargs="?", const="true", default=default, help=help_text)
        else:
            parser.add_argument(flag, default=default, help=help_text)


def graph_args_from_namespace(ns: argparse.Namespace) -> GraphArgs:
    return GraphArgs(
        robot=ns.robot, config=ns.config, use_sim=parse_bool(ns.use_sim), robot_ip=ns.robot_ip,
        checkpoint=ns.checkpoint, static_camera_serial=ns.static_camera_serial,
        wrist_camera_serial=ns.wrist_camera_serial,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_graph_arguments(parser)
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    ns = parser.parse_args(argv)
    graph = GraphProcesses(graph_args_from_namespace(ns))
    print(f"starting {len(graph.specs)} nodes with {graph.config}: {', '.join(s.name for s in graph.specs)}")
    graph.start()
    start = time.monotonic()
    try:
        while not graph.dead():
            if ns.duration and time.monotonic() - start > ns.duration:
                break
            time.sleep(0.2)
        dead = graph.dead()
        if dead:
            print(f"node(s) exited: {dead}; stopping the graph", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        graph.stop()
    return 1 if any(code not in (0, -signal.SIGINT) for code in graph.dead().values()) else 0


if __name__ == "__main__":
    sys.exit(main())
