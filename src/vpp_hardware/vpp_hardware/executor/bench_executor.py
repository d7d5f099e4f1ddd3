"""Benchmark: command period and jitter of the chunk executor streaming to franky-sim.

Runs, in one process and one session:

1. a plain loop that only sleeps, paced exactly like :meth:`ChunkExecutor.run` (absolute
   deadlines, ``Event.wait``), at the same rate, while the simulator is already running: the
   floor set by this machine's scheduler under the same load;
2. the executor driving :class:`FrankyArm` against a franky-sim server while a feeder thread
   submits 10 Hz chunks tracing a circle, as a policy node would.

It prints the command period (time between consecutive tick starts) p50 / p99 / max, the
jitter (standard deviation, and p99 of |period - nominal|), the time spent inside ``tick`` and
the executor / sleep-loop ratios. Usage::

    python -m vpp_hardware.executor.bench_executor [--rate-hz 100] [--seconds 5] [--server subprocess]
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from vpp_core.action_space import poses_to_actions
from vpp_hardware.arms.franka.franky_arm import FrankyArm, FrankyArmConfig
from vpp_hardware.arms.franka.sim_server import FrankySimServer
from vpp_hardware.executor.chunk_schedule import TimedChunk
from vpp_hardware.executor.executor import ChunkExecutor, ChunkExecutorConfig


@dataclass
class PeriodSummary:
    p50_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    p99_abs_error_ms: float
    count: int

    @classmethod
    def of(cls, periods_s: np.ndarray, nominal_s: float) -> "PeriodSummary":
        periods_ms = np.asarray(periods_s) * 1e3
        return cls(
            p50_ms=float(np.percentile(periods_ms, 50)),
            p99_ms=float(np.percentile(periods_ms, 99)),
            max_ms=float(periods_ms.max()),
            std_ms=float(periods_ms.std()),
            p99_abs_error_ms=float(np.percentile(np.abs(periods_ms - nominal_s * 1e3), 99)),
            count=int(periods_ms.size),
        )


def sleep_loop_periods(rate_hz: float, seconds: float) -> np.ndarray:
    """Periods of an empty loop paced like ``ChunkExecutor.run``."""
    period = 1.0 / rate_hz
    stop = threading.Event()
    periods = []
    deadline = time.monotonic()
    previous = None
    end = deadline + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        if previous is not None:
            periods.append(start - previous)
        previous = start
        deadline += period
        delay = deadline - time.monotonic()
        if delay > 0.0:
            stop.wait(delay)
        elif delay < -period:
            deadline = time.monotonic()
    return np.asarray(periods)


def circle_feeder(executor: ChunkExecutor, stop: threading.Event, center: np.ndarray,
                  radius_m: float, revolution_s: float, horizon: int, dt_s: float, counts: dict) -> None:
    """Submit a chunk every ``dt_s`` (wall) whose steps trace a circle in the y-z plane."""
    seq = 0
    start_time = executor.now()
    while not stop.is_set():
        status = executor.status()
        reference = status.measured_pose
        if reference is not None:
            now = executor.now()
            times = now + dt_s * np.arange(horizon) - start_time
            phase = 2.0 * np.pi * times / revolution_s
            targets = np.repeat(center[None], horizon, axis=0)
            targets[:, 1, 3] += radius_m * np.sin(phase)
            targets[:, 2, 3] += radius_m * (1.0 - np.cos(phase))
            actions = poses_to_actions(reference, targets, np.ones(horizon), "panda")
            seq += 1
            result = executor.submit(TimedChunk(now, dt_s, actions, reference, seq))
            counts["accepted" if result.accepted else "rejected"] += 1
        stop.wait(dt_s)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Chunk executor command-period benchmark against franky-sim.")
    parser.add_argument("--rate-hz", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each of the two runs")
    parser.add_argument("--server", choices=["subprocess", "inprocess"], default="subprocess",
                        help="subprocess keeps the simulator's 1 kHz Python loop off this interpreter's GIL")
    parser.add_argument("--realtime", type=float, default=1.0,
                        help="simulator speed: 1 = real time, 0 = as fast as possible")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    nominal = 1.0 / args.rate_hz

    realtime: bool | float = bool(args.realtime) if args.realtime in (0.0, 1.0) else args.realtime
    with FrankySimServer(mode=args.server, realtime=realtime) as server:
        arm = FrankyArm(FrankyArmConfig.franky_sim(server.hostname))
        arm.connect()
        try:
            # Same load as the executor run (simulator up, controller streaming), minus the executor.
            baseline = PeriodSummary.of(sleep_loop_periods(args.rate_hz, args.seconds), nominal)
            executor = ChunkExecutor(ChunkExecutorConfig(rate_hz=args.rate_hz), arm)
            executor.start()
            center = arm.read_state().ee_pose
            stop = threading.Event()
            counts = {"accepted": 0, "rejected": 0}
            feeder = threading.Thread(
                target=circle_feeder,
                args=(executor, stop, center, 0.03, 4.0, 16, 0.1, counts),
                daemon=True,
            )
            timer = threading.Timer(args.seconds, stop.set)
            feeder.start()
            timer.start()
            robot_start = executor.now()
            wall_start = time.monotonic()
            stats = executor.run(stop)
            robot_elapsed = executor.now() - robot_start
            wall_elapsed = time.monotonic() - wall_start
            feeder.join()
            timer.cancel()
            status = executor.status()
        finally:
            arm.disconnect()

    measured = PeriodSummary.of(stats.periods_s, nominal)
    durations_ms = stats.tick_durations_s * 1e3
    print(f"rate {args.rate_hz:.0f} Hz (nominal period {nominal * 1e3:.2f} ms), {args.seconds:.1f} s per run, "
          f"franky-sim {args.server}, realtime={args.realtime:g} "
          f"(robot/wall time ratio {robot_elapsed / wall_elapsed:.2f})")
    header = f"{'':26s}{'p50 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}{'std ms':>9s}{'p99|err| ms':>13s}{'n':>7s}"
    print(header)
    for name, summary in (("sleep loop", baseline), ("executor -> franky-sim", measured)):
        print(f"{name:26s}{summary.p50_ms:9.3f}{summary.p99_ms:9.3f}{summary.max_ms:9.3f}"
              f"{summary.std_ms:9.3f}{summary.p99_abs_error_ms:13.3f}{summary.count:7d}")
    print(f"{'ratio executor/sleep':26s}{measured.p50_ms / baseline.p50_ms:9.2f}"
          f"{measured.p99_ms / baseline.p99_ms:9.2f}{measured.max_ms / baseline.max_ms:9.2f}"
          f"{measured.std_ms / max(baseline.std_ms, 1e-9):9.2f}"
          f"{measured.p99_abs_error_ms / max(baseline.p99_abs_error_ms, 1e-9):13.2f}")
    print(f"tick duration: p50 {np.percentile(durations_ms, 50):.3f} ms, p99 {np.percentile(durations_ms, 99):.3f} ms, "
          f"max {durations_ms.max():.3f} ms; overruns {stats.overruns}/{stats.ticks}")
    counters = status.counters
    print(f"chunks accepted {counts['accepted']}, rejected {counts['rejected']}; steps executed "
          f"{counters.executed_steps}, limited {counters.limited_steps}, rejected {counters.rejected_steps}; "
          f"faults {counters.faults}; final mode {status.mode.value}")


if __name__ == "__main__":
    main()
