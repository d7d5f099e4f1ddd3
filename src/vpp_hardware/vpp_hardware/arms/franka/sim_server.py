"""Start and stop a franky-sim server: a MuJoCo FR3 that speaks libfranka's network protocol.

The "simulated Franka" is the real :class:`~vpp_hardware.arms.franka.franky_arm.FrankyArm`
connected to this server; nothing on the client side knows it is a simulator.

Two ways to run it:

* ``mode="inprocess"`` (tests): ``franky_sim.SimulationServer.run_async`` in a daemon thread of
  this process; starts in ~1 s and exposes the MuJoCo simulator (:attr:`FrankySimServer.simulator`).
  Its 1 kHz loop is Python and shares the GIL with the caller.
* ``mode="subprocess"`` (the sim graph, benchmarks): the same server in a child process started
  with ``python -m vpp_hardware.arms.franka.sim_server``, so it has its own interpreter.

The server binds TCP 1337 (robot) and 1338 (gripper) on the first free loopback address from
``hostnames`` (default 127.0.0.1, then 127.0.0.2, ...), so several servers can coexist; connect to
:attr:`FrankySimServer.hostname`.

``realtime``: True runs the simulator at wall-clock speed (1 ms of sim per 1 ms), a float is a
speed factor for the sleep, False runs as fast as the CPU allows (~2.6x real time on a free
core). Clients should schedule by robot time (``robot.state.time``) either way.

Scenes: ``scene_builder`` is called with the ``franky_sim`` ``MujocoSimulator`` after the robot
is added and before the model is compiled, to add tables, objects or cameras to ``sim.worldbody``.
Pass a callable (in-process only) or an import path ``"package.module:function"`` (both modes).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterable, Sequence

__all__ = ["FrankySimServer", "default_hostnames", "main"]

logger = logging.getLogger(__name__)

_READY_PREFIX = "FRANKY_SIM_READY "
SceneBuilder = Callable[[Any], None]


def default_hostnames() -> Iterable[str]:
    """127.0.0.1, 127.0.0.2, ... (every loopback address), in that order."""
    for x in range(256):
        for y in range(256):
            for z in range(1 if (x, y) == (0, 0) else 0, 256):
                if (x, y, z) != (255, 255, 255):
                    yield f"127.{x}.{y}.{z}"


def _load_scene_builder(spec: str | SceneBuilder | None) -> SceneBuilder | None:
    if spec is None or callable(spec):
        return spec
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"scene builder {spec!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module_name), function_name)


class FrankySimServer:
    """One simulated Franka (arm + hand) reachable over libfranka's protocol.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        mode: str = "inprocess",
        realtime: bool | float = True,
        hostnames: Sequence[str] | None = None,
        scene_builder: str | SceneBuilder | None = None,
        initial_joint_positions: Sequence[float] | None = None,
        startup_timeout_s: float = 60.0,
    ):
        if mode not in ("inprocess", "subprocess"):
            raise ValueError(f"mode must be 'inprocess' or 'subprocess', got {mode!r}")
        if mode == "subprocess" and scene_builder is not None and not isinstance(scene_builder, str):
            raise ValueError("a subprocess server needs the scene builder as an import path string")
        self.mode = mode
        self.realtime = realtime
        self.hostnames = list(hostnames) if hostnames is not None else None
        self.scene_builder = scene_builder
        self.initial_joint_positions = tuple(initial_joint_positions) if initial_joint_positions else None
        self.startup_timeout_s = startup_timeout_s
        self.hostname: str | None = None
        self._simulator: Any = None
        self._server: Any = None
        self._process: subprocess.Popen[str] | None = None

    # ------------------------------------------------------------------ public

    @property
    def simulator(self) -> Any:
        """The ``franky_sim`` MuJoCo simulator (in-process mode only); ``.model``/``.data`` after start."""
        if self.mode != "inprocess":
            raise RuntimeError("the simulator object lives in the child process in subprocess mode")
        return self._simulator

    @property
    def is_running(self) -> bool:
        if self.mode == "inprocess":
            return self._server is not None and bool(self._server.running)
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server and return the hostname it listens on."""
        if self.hostname is not None:
            return self.hostname
        if self.mode == "inprocess":
            self._start_inprocess()
        else:
            self._start_subprocess()
        logger.info("franky-sim (%s) listening on %s", self.mode, self.hostname)
        assert self.hostname is not None
        return self.hostname

    def stop(self) -> None:
        """Stop the server and release its ports. Safe to call twice."""
        if self.mode == "inprocess":
            self._stop_inprocess()
        else:
            self._stop_subprocess()
        self.hostname = None

    def __enter__(self) -> "FrankySimServer":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ in-process

    def _start_inprocess(self) -> None:
        import franky_sim
        from franky_sim.mujoco_simulator import MujocoSimulator

        simulator = MujocoSimulator()
        simulator.init()
        robot_kwargs: dict[str, Any] = {}
        if self.initial_joint_positions is not None:
            robot_kwargs["initial_q"] = [float(q) for q in self.initial_joint_positions]
        simulator.add_robot(**robot_kwargs)
        builder = _load_scene_builder(self.scene_builder)
        if builder is not None:
            builder(simulator)
        server = franky_sim.SimulationServer(
            simulator, hostname_candidates=self.hostnames or default_hostnames()
        )
        try:
            server.init()  # binds the ports, compiles the scene
        except BaseException:
            simulator.cleanup()
            raise
        server.run_async(realtime=self.realtime)
        self._simulator = simulator
        self._server = server
        self.hostname = server.robot_servers[0].hostname

    def _stop_inprocess(self) -> None:
        server, self._server = self._server, None
        simulator, self._simulator = self._simulator, None
        if server is not None:
            server.cleanup()  # joins the loop thread, closes the sockets
        if simulator is not None and not simulator.is_cleaned_up:
            simulator.cleanup()

    # ------------------------------------------------------------------ subprocess

    def _start_subprocess(self) -> None:
        command = [sys.executable, "-m", "vpp_hardware.arms.franka.sim_server",
                   "--realtime", _realtime_arg(self.realtime)]
        for hostname in self.hostnames or ():
            command += ["--hostname", hostname]
        if self.scene_builder is not None:
            command += ["--scene-builder", str(self.scene_builder)]
        if self.initial_joint_positions is not None:
            command += ["--initial-q", ",".join(str(q) for q in self.initial_joint_positions)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=None, text=True, env=dict(os.environ),
        )
        ready: list[str] = []
        reader = threading.Thread(target=_read_ready_line, args=(self._process, ready), daemon=True)
        reader.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not ready and time.monotonic() < deadline and self._process.poll() is None:
            time.sleep(0.02)
        if not ready:
            self._stop_subprocess()
            raise RuntimeError(f"franky-sim subprocess did not report ready within {self.startup_timeout_s} s")
        self.hostname = ready[0]

    def _stop_subprocess(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5.0)


def _realtime_arg(realtime: bool | float) -> str:
    if realtime is True:
        return "1"
    if realtime is False:
        return "0"
    return str(float(realtime))


def _parse_realtime(text: str) -> bool | float:
    value = float(text)
    if value == 0.0:
        return False
    if value == 1.0:
        return True
    return value


def _read_ready_line(process: subprocess.Popen[str], ready: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(_READY_PREFIX):
            ready.append(line[len(_READY_PREFIX):].strip())
            break
    # Keep draining so a chatty child never blocks on a full pipe.
    for _ in process.stdout:
        pass


def main(argv: Sequence[str] | None = None) -> None:
    """Run one simulated Franka until SIGINT/SIGTERM (``python -m vpp_hardware.arms.franka.sim_server``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realtime", default="1",
                        help="1 = real time, 0 = as fast as possible, other = speed factor for the sleep")
    parser.add_argument("--hostname", action="append", default=None,
                        help="loopback address(es) to try, in order (default 127.0.0.1, 127.0.0.2, ...)")
    parser.add_argument("--scene-builder", default=None, help="'package.module:function' adding scene objects")
    parser.add_argument("--initial-q", default=None, help="comma-separated initial joint positions [rad]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    server = FrankySimServer(
        mode="inprocess",
        realtime=_parse_realtime(args.realtime),
        hostnames=args.hostname,
        scene_builder=args.scene_builder,
        initial_joint_positions=[float(v) for v in args.initial_q.split(",")] if args.initial_q else None,
    )
    with server:
        print(f"{_READY_PREFIX}{server.hostname}", flush=True)
        while not stop.is_set() and server.is_running:
            stop.wait(0.2)


if __name__ == "__main__":
    main()
