"""Record scripted demonstrations as rosbags through the real node graph.

    python -m vpp_sim.record --tasks all --episodes-per-task 12 --output data/sim_bags [--seed 0]

Starts sim world (franky-sim + cameras), Franka executor and recorder from config/panda.yaml
(+ config/sim_proof.yaml's simulation overrides). Per episode: home the arm through the executor,
reset the cubes (seeded: sim_world's ``seed`` parameter, one reset after another), for a
fraction of episodes (``near_goal_start_fraction`` / ``--near-goal-fraction``) move the arm,
unrecorded, to a start beside the task's goal (``vpp_sim.expert.near_goal_start``), START the
recorder with the instruction, publish it on /task_language, let the scripted expert drive the
executor with action chunks until the task's success check (from the simulator's object poses
and the measured EE pose) passes, then STOP (kept, ``vpp.outcome: success``) or DISCARD a
failure. Writes ``<output>/record_summary.json`` and node logs under ``<output>/logs``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import time
from typing import Optional

import numpy as np

from vpp_sim.expert import ScriptedExpert, near_goal_start
from vpp_sim.session import SimClient, SimGraph, jittered_home, load_proof_config, start_session
from vpp_sim.tasks import TaskMonitor, TaskStatus, resolve_tasks


def _progress(done: int, total: int, text: str) -> None:
    width = 24
    filled = int(width * done / max(total, 1))
    print(f"[record] [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text}", flush=True)


def record(args: argparse.Namespace) -> dict:
    import rclpy
    from vpp_ros.recorder import update_custom_data

    proof = load_proof_config(args.proof_config or None)
    tasks = resolve_tasks(args.tasks)
    out = pathlib.Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    def start_graph(restart: int) -> tuple[SimGraph, SimClient]:
        # The recorder of every graph writes into the same output folder.
        return start_session(out, restart, proof, args.seed, "record", args.startup_timeout,
                             dict(recorder_output=out, storage=args.storage, panda_config=args.config), {},
                             need_recorder=True)

    rclpy.init()
    graph: Optional[SimGraph] = None
    client: Optional[SimClient] = None
    summary: dict = {"tasks": {t.name: {"instruction": t.instruction, "kept": 0, "failed": 0, "episodes": []}
                               for t in tasks},
                     "seed": args.seed, "episodes_per_task": args.episodes_per_task, "output": str(out),
                     "restarts": 0}
    started = time.monotonic()
    try:
        graph, client = start_graph(0)
        total = len(tasks) * args.episodes_per_task
        kept_total = 0
        # Interleave tasks so an interrupted run still has every task.
        max_attempts = int(np.ceil(args.episodes_per_task * proof.max_attempts_factor))
        attempts = {t.name: 0 for t in tasks}
        while True:
            pending = [t for t in tasks if summary["tasks"][t.name]["kept"] < args.episodes_per_task
                       and attempts[t.name] < max_attempts]
            if not pending:
                break
            for task in pending:
                if not _home(client, proof, rng):
                    if summary["restarts"] >= args.max_restarts:
                        raise RuntimeError(f"the arm cannot be homed (EE at {np.round(client.ee[1], 3).tolist()}) "
                                           f"and the graph was restarted {args.max_restarts} times already; "
                                           f"see the node logs in {out / 'logs'}")
                    # The arm ended where Cartesian moves cannot bring it back (a collision or an
                    # unstable moment of the simulated arm): a demonstration from there would
                    # teach nothing. Start a fresh simulated graph instead.
                    summary["restarts"] += 1
                    print(f"[record] restarting the simulated graph ({summary['restarts']}/{args.max_restarts})",
                          flush=True)
                    client.close()
                    client = None
                    graph.stop()
                    graph, client = start_graph(summary["restarts"])
                    if not _home(client, proof, rng):
                        raise RuntimeError("the arm of a freshly started simulated graph cannot be homed; "
                                           f"see the node logs in {out / 'logs'}")
                attempts[task.name] += 1
                episode = _record_episode(client, task, proof, rng, out, update_custom_data, args)
                entry = summary["tasks"][task.name]
                entry["episodes"].append(episode)
                if episode["kept"]:
                    entry["kept"] += 1
                    kept_total += 1
                else:
                    entry["failed"] += 1
                _progress(kept_total, total, f"{task.name}: {episode['status']} ({episode['reason']}) "
                                             f"{episode.get('bag') or ''}")
    finally:
        if client is not None:
            client.close()
        rclpy.try_shutdown()
        if graph is not None:
            graph.stop()
    summary["elapsed_s"] = time.monotonic() - started
    summary["kept"] = sum(t["kept"] for t in summary["tasks"].values())
    (out / "record_summary.json").write_text(json.dumps(summary, indent=2))
    lines = [f"{name}: kept {t['kept']}, failed {t['failed']}" for name, t in summary["tasks"].items()]
    restarted = f" (simulated graph restarted {summary['restarts']} time(s))" if summary["restarts"] else ""
    print(f"[record] done in {summary['elapsed_s']:.0f} s{restarted}: " + "; ".join(lines), flush=True)
    return summary


def _home(client: SimClient, proof, rng) -> bool:
    """Home the arm to a jittered home pose; False (with a warning) when it does not get there."""
    home = jittered_home(proof, rng)
    if client.home(home, proof.expert, proof.home_tolerance_m, proof.home_timeout_s):
        return True
    print(f"[record] warning: homing did not reach {np.round(home, 3).tolist()} "
          f"(EE at {np.round(client.ee[1], 3).tolist()})", flush=True)
    return False


def _move_to_start(client: SimClient, position: np.ndarray, proof) -> bool:
    """Move (unrecorded) to ``position``: above it at a height clear of the cubes, then down."""
    above = np.array([position[0], position[1], max(position[2], 0.12)])
    for waypoint in (above, position):
        if not client.home(waypoint, proof.expert, proof.home_tolerance_m, proof.home_timeout_s):
            return False
    return True


def _record_episode(client: SimClient, task, proof, rng, out: pathlib.Path, update_custom_data, args) -> dict:
    """One demonstration from the homed arm: reset the cubes, record the expert, keep or discard."""
    cfg = proof.expert
    layout, resets = client.reset_world(task.layout_ok, proof.max_layout_attempts)
    expert = ScriptedExpert(task, cfg, rng)
    start_kind = "home"
    fraction = proof.near_goal_start_fraction if args.near_goal_fraction is None else args.near_goal_fraction
    # No draw at fraction 0: recordings made before near-goal starts existed replay seed for seed.
    if fraction > 0.0 and rng.uniform() < fraction:
        position = near_goal_start(expert, layout, rng, proof.near_goal_distance_m, proof.near_goal_height_m)
        if position is None:
            print("[record] no near-goal start clear of both cubes for this layout; starting at home", flush=True)
        elif _move_to_start(client, position, proof):
            start_kind = "near_goal"
        else:
            print(f"[record] warning: the arm did not reach the near-goal start {np.round(position, 3).tolist()} "
                  f"(EE at {np.round(client.ee[1], 3).tolist()}); recording from there", flush=True)
            start_kind = "near_goal_missed"
    client.spin_for(0.5)  # the (possibly lagging) cameras show the new layout before recording
    R = client.RecordEpisode.Request
    start = client.call(client.episode_client, R(command=R.START, instruction=task.instruction))
    if not start.success:
        raise RuntimeError(f"recorder refused START: {start.message}")
    client.say(task.instruction)
    monitor = TaskMonitor(task)
    success_at: list[Optional[float]] = [None]

    def observe() -> None:
        if client.ee is None or client.objects is None:
            return
        status = monitor.update(client.now(), client.ee[1], client.objects[1])
        if status == TaskStatus.SUCCESS and success_at[0] is None:
            success_at[0] = time.monotonic()

    def finished() -> bool:
        if monitor.status == TaskStatus.FAILED or client.executor_faulted():
            return True
        return success_at[0] is not None and time.monotonic() - success_at[0] >= proof.success_tail_s

    t0 = time.monotonic()
    client.drive(lambda ref: expert.plan(ref, client.objects[1]), finished, cfg,
                 task.time_limit_s + proof.success_tail_s + 2.0, f"[sim] expert: {task.instruction}", on_step=observe)
    duration = time.monotonic() - t0
    ok = monitor.status == TaskStatus.SUCCESS and not client.executor_faulted()
    if client.executor_faulted():
        monitor.status, monitor.reason = TaskStatus.FAILED, f"executor fault: {client.executor_status.reason}"
    status, reason = monitor.status, monitor.reason
    stop = client.call(client.episode_client, R(command=R.STOP if ok else R.DISCARD))
    if not stop.success:
        raise RuntimeError(f"recorder refused {'STOP' if ok else 'DISCARD'}: {stop.message}")
    bag = None
    if ok:
        bag = out / stop.episode_name
        from vpp_ros.recorder import read_custom_data

        recorded = read_custom_data(bag).get("vpp.instruction")
        if recorded != task.instruction:  # another client drove the recorder (same ROS domain?)
            raise RuntimeError(f"{bag} holds instruction {recorded!r}, expected {task.instruction!r}: is another "
                               "graph running on this ROS_DOMAIN_ID?")
        update_custom_data(bag, {
            "vpp.outcome": "success", "vpp.task": task.name, "vpp.source": "scripted expert (vpp_sim.expert)",
            "vpp.layout": {k: [round(float(x), 4) for x in v] for k, v in layout.items()},
            "vpp.start": start_kind,
        })
        gap = max_camera_gap_s(bag)
        if gap > proof.max_frame_gap_s:
            # The simulator rendered too few frames (an overloaded machine): the converter would
            # reject the episode, so it does not count; record another.
            shutil.rmtree(bag, ignore_errors=True)
            ok, bag = False, None
            status, reason = "discarded", f"camera frames {gap * 1e3:.0f} ms apart (max {proof.max_frame_gap_s * 1e3:.0f} ms)"
    return {"task": task.name, "kept": ok, "status": status, "reason": reason,
            "duration_s": round(duration, 2), "bag": bag.name if bag else None, "resets": resets, "start": start_kind,
            "recorder": stop.message}


def max_camera_gap_s(bag: pathlib.Path, topics: tuple[str, ...] = ("/static_camera/image_raw",
                                                                   "/wrist_camera/image_raw")) -> float:
    """Largest gap between consecutive frames (header stamps) of the cameras in a bag [s]."""
    from rosbags.rosbag2 import Reader

    from vpp_core.data.ros_types import vpp_typestore

    store = vpp_typestore()
    stamps: dict[str, list[float]] = {}
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic in topics]
        for conn, _t, raw in reader.messages(connections=connections):
            header = store.deserialize_cdr(raw, conn.msgtype).header
            stamps.setdefault(conn.topic, []).append(header.stamp.sec + header.stamp.nanosec * 1e-9)
    if set(stamps) != set(topics):
        return float("inf")
    return max(float(np.max(np.diff(sorted(v)))) if len(v) > 1 else float("inf") for v in stamps.values())


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="all", help="'all' or comma-separated task names")
    parser.add_argument("--episodes-per-task", type=int, default=14)
    parser.add_argument("--output", default="data/sim_bags")
    parser.add_argument("--seed", type=int, default=0, help="layouts, home poses and expert variations")
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    parser.add_argument("--config", default="", help="node parameters (default config/panda.yaml)")
    parser.add_argument("--proof-config", default="", help="default config/sim_proof.yaml")
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument("--near-goal-fraction", type=float, default=None,
                        help="fraction of episodes started beside the goal instead of at home "
                             "(default: near_goal_start_fraction of the proof config)")
    parser.add_argument("--max-restarts", type=int, default=10,
                        help="restarts of the simulated graph when the arm cannot be homed before giving up")
    args = parser.parse_args(argv)
    summary = record(args)
    return 0 if summary["kept"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
