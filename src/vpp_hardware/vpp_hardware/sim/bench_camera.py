"""Benchmark of the simulated cameras: render cost and achieved frame period.

    python -m vpp_hardware.sim.bench_camera [--seconds 10] [--fps 10] [--size 256]
                                            [--with-robot] [--shadows] [--fast]

Prints, per camera, the render time per frame and the frame period achieved on the host clock
(differences of ``capture_time_s``) and in simulation time, against the target ``1/fps``, plus
the simulation's real-time factor. ``--with-robot`` drives the arm back and forth through a franky
client meanwhile, so physics carries the load of a real control session.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from vpp_hardware.cameras.camera import CameraError
from vpp_hardware.cameras.mujoco import default_static_camera, default_wrist_camera
from vpp_hardware.cameras.mujoco.camera_mujoco import MujocoCamera
from vpp_hardware.sim import SimWorld, SimWorldConfig


def _collect(camera: MujocoCamera, stop: threading.Event, frames: list) -> None:
    while not stop.is_set():
        try:
            frames.append(camera.read(timeout_s=1.0))
        except CameraError:
            return


def _drive_robot(host: str, stop: threading.Event, errors: list) -> None:
    import franky

    robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
    robot.relative_dynamics_factor = 0.3
    direction = 1.0
    try:
        while not stop.is_set():
            robot.move(franky.CartesianMotion(franky.Affine([0.0, 0.08 * direction, 0.0]),
                                              franky.ReferenceType.Relative))
            direction = -direction
    except Exception as error:  # reported, the benchmark still prints its figures
        errors.append(error)
    finally:
        del robot


def _percentiles_ms(values: np.ndarray) -> str:
    if values.size == 0:
        return "n/a"
    p50, p99 = np.percentile(values * 1e3, [50, 99])
    return f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement duration")
    parser.add_argument("--fps", type=float, default=10.0, help="target frame rate per camera")
    parser.add_argument("--size", type=int, default=256, help="square image size in pixels")
    parser.add_argument("--with-robot", action="store_true", help="move the arm meanwhile")
    parser.add_argument("--shadows", action="store_true", help="render shadows")
    parser.add_argument("--fast", action="store_true", help="physics not paced to real time")
    parser.add_argument("--host", default="127.0.0.1", help="libfranka server address")
    args = parser.parse_args(argv)

    camera_settings = dict(width=args.size, height=args.size, fps=args.fps)
    config = SimWorldConfig(
        host=args.host,
        fallback_hosts=tuple(f"127.0.0.{i}" for i in range(81, 89)),
        realtime=not args.fast,
        shadows=args.shadows,
        cameras=(default_static_camera(**camera_settings), default_wrist_camera(**camera_settings)),
    )
    stop = threading.Event()
    frames: dict[str, list] = {}
    robot_errors: list = []
    with SimWorld(config) as world:
        threads = []
        if args.with_robot:
            threads.append(threading.Thread(target=_drive_robot,
                                            args=(world.host, stop, robot_errors)))
        for name in world.camera_names:
            camera = MujocoCamera(world, name)
            camera.connect()
            frames[name] = []
            threads.append(threading.Thread(target=_collect, args=(camera, stop, frames[name])))
        warmup_s = 1.0
        time.sleep(warmup_s)
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        stats = world.stats()
        for thread in threads:
            thread.join(timeout=30.0)

    target_ms = 1e3 / args.fps
    print(f"simulated cameras: {args.size}x{args.size} @ {args.fps:g} fps target "
          f"(period {target_ms:.1f} ms), shadows {'on' if args.shadows else 'off'}, "
          f"physics {'free-running' if args.fast else 'real time'}, "
          f"robot {'moving' if args.with_robot else 'idle'}, {args.seconds:g} s")
    print(f"simulation real-time factor: {stats.realtime_factor:.3f}")
    for name, received in frames.items():
        capture = np.array([f.capture_time_s for f in received])
        sim_time = np.array([f.hardware_timestamp_s for f in received])
        numbers = np.array([f.frame_number for f in received])
        gaps = int(np.sum(np.diff(numbers) - 1)) if numbers.size > 1 else 0
        print(f"[{name}] frames received {len(received)}, skipped by the renderer "
              f"{stats.frames_skipped[name]}, frame-number gaps {gaps}")
        print(f"[{name}] render time per frame:      p50 {stats.render_time_p50_ms[name]:7.2f} ms"
              f"  p99 {stats.render_time_p99_ms[name]:7.2f} ms")
        print(f"[{name}] frame period, host clock:   {_percentiles_ms(np.diff(capture))}"
              f"  (target {target_ms:.2f} ms)")
        print(f"[{name}] frame period, sim time:     {_percentiles_ms(np.diff(sim_time))}")
    if robot_errors:
        print(f"robot motion stopped early: {robot_errors[0]!r}")


if __name__ == "__main__":
    main()
