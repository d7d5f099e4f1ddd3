"""Closed-loop evaluation of a trained policy through the real node graph.

    python -m vpp_sim.evaluate --checkpoint models/sim_panda --tasks all --episodes-per-task 10 \
        --output outputs/eval [--swap-instructions] [--seed 0]

Starts sim world (franky-sim + cameras), Franka executor and the policy node with the
checkpoint, from config/panda.yaml (+ config/sim_proof.yaml's simulation overrides). Per
episode: the policy is idle (empty instruction), the arm is homed through the executor, the
cubes are reset to a held-out layout (seeds ``seed + eval_seed_offset`` on, never used for
recording), the instruction goes out on /task_language and the policy acts until the task's
success check (simulator object poses + measured EE pose) passes or its time limit runs out.

``--swap-instructions`` gives every episode another task's instruction and still scores the
ORIGINAL task: a policy that follows language succeeds less.

Writes ``results.json`` (per task: success rate, episodes with reason and timing; planning
latency percentiles from the policy's chunks), ``results.md`` and ``videos/<task>_<i>.mp4``
(static | wrist camera).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Optional

import numpy as np

from vpp_sim.session import (SimClient, SimGraph, frames_to_video, jittered_home, load_proof_config,
                             percentiles_ms, start_session)
from vpp_sim.tasks import TASKS, TaskMonitor, TaskStatus, resolve_tasks, task_for_instruction


def swapped_instruction(task_name: str, episode: int) -> str:
    """Another task's instruction, cycling through the others."""
    others = [t for t in TASKS.values() if t.name != task_name]
    return others[episode % len(others)].instruction


def evaluate(args: argparse.Namespace) -> dict:
    import rclpy

    proof = load_proof_config(args.proof_config or None)
    tasks = resolve_tasks(args.tasks)
    if args.time_limit:
        tasks = [dataclasses.replace(t, time_limit_s=float(args.time_limit)) for t in tasks]
    out = pathlib.Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = str(pathlib.Path(args.checkpoint).resolve())
    seed = args.seed + proof.eval_seed_offset
    rng = np.random.default_rng(seed)
    max_video_frames = int(max(t.time_limit_s for t in tasks) * 12) + 50

    def start_graph(restart: int) -> tuple[SimGraph, SimClient]:
        graph, client = start_session(out, restart, proof, seed, "evaluate", args.startup_timeout,
                                      dict(checkpoint=checkpoint, panda_config=args.config),
                                      dict(record_images=not args.no_video, max_video_frames=max_video_frames),
                                      need_policy=True, note=f" with {checkpoint}")
        client.say("")  # the policy idles until an episode gives it an instruction
        return graph, client

    rclpy.init()
    graph: Optional[SimGraph] = None
    client: Optional[SimClient] = None
    restarts = 0
    results: dict = {"checkpoint": checkpoint, "swap_instructions": bool(args.swap_instructions),
                     "episodes_per_task": args.episodes_per_task, "seed": args.seed, "layout_seed": seed,
                     "tasks": {}}
    started = time.monotonic()
    try:
        graph, client = start_graph(0)
        for task in tasks:
            results["tasks"][task.name] = {"instruction": task.instruction, "episodes": []}
        for i in range(args.episodes_per_task):
            for task in tasks:  # interleaved: an interrupted run still covers every task
                episode = _evaluate_episode(client, task, i, proof, rng, out, args)
                if episode["status"] == "aborted" and restarts < args.max_restarts:
                    # The arm ended where the executor may not move it from (outside its workspace
                    # after a collision in the simulator, or faulted): start a fresh simulated
                    # graph and run this episode again instead of aborting every later one.
                    restarts += 1
                    print(f"[evaluate] {task.name} #{i}: {episode['reason']}; restarting the simulated graph "
                          f"({restarts}/{args.max_restarts}) and running the episode again", flush=True)
                    client.close()
                    client = None
                    graph.stop()
                    graph, client = start_graph(restarts)
                    episode = _evaluate_episode(client, task, i, proof, rng, out, args)
                results["tasks"][task.name]["episodes"].append(episode)
                print(f"[evaluate] {task.name} #{i}: {episode['status']} ({episode['reason']}) "
                      f"given {episode['given_instruction']!r}", flush=True)
    finally:
        if client is not None:
            try:
                client.say("")
                client.spin_for(0.3)
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
            client.close()
        rclpy.try_shutdown()
        if graph is not None:
            graph.stop()
    results["restarts"] = restarts
    results["elapsed_s"] = time.monotonic() - started
    all_latency = []
    for name, entry in results["tasks"].items():
        episodes = [e for e in entry["episodes"] if e["status"] != "aborted"]
        entry["aborted"] = len(entry["episodes"]) - len(episodes)
        successes = sum(e["status"] == TaskStatus.SUCCESS for e in episodes)
        latencies = [v for e in episodes for v in e.pop("_planning_latencies", [])]
        all_latency += latencies
        if results["swap_instructions"]:
            entry["given_instruction_done"] = sum(bool(e.get("given_instruction_done")) for e in episodes)
        entry.update({"episodes_run": len(episodes), "successes": successes,
                      "success_rate": successes / len(episodes) if episodes else None,
                      "planning_latency": percentiles_ms(latencies)})
    results["planning_latency"] = percentiles_ms(all_latency)
    rates = [e["success_rate"] for e in results["tasks"].values() if e["success_rate"] is not None]
    results["mean_success_rate"] = float(np.mean(rates)) if rates else None
    if results["swap_instructions"]:
        run = sum(e["episodes_run"] for e in results["tasks"].values())
        done = sum(e["given_instruction_done"] for e in results["tasks"].values())
        results["given_instruction_done_rate"] = done / run if run else None
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print((out / "results.md").read_text(), flush=True)
    return results


def _evaluate_episode(client: SimClient, task, index: int, proof, rng, out: pathlib.Path, args) -> dict:
    cfg = proof.expert
    client.say("")  # policy idle while the scene is prepared
    client.spin_for(0.2)
    home = jittered_home(proof, rng)
    given = swapped_instruction(task.name, index) if args.swap_instructions else task.instruction
    if not client.home(home, cfg, proof.home_tolerance_m, proof.home_timeout_s):
        # A previous episode can leave the arm in a pose the Cartesian home move cannot undo
        # (seen once: folded back over its base). Starting from there would score the policy on
        # a scene it never saw: not counted, reported as aborted.
        away = float(np.linalg.norm(client.ee[1] - home)) if client.ee is not None else float("nan")
        reason = f"arm not back home within {proof.home_timeout_s:.0f} s ({away * 100:.0f} cm away)"
        print(f"[evaluate] {task.name} #{index}: aborted: {reason}", flush=True)
        return {"episode": index, "status": "aborted", "reason": reason, "given_instruction": given,
                "given_instruction_done": None, "duration_s": 0.0, "time_to_success_s": None, "chunks": 0,
                "min_target_distance_m": None, "layout": {}, "video": None, "_planning_latencies": []}
    layout, _resets = client.reset_world(task.layout_ok, proof.max_layout_attempts)
    client.spin_for(0.3)
    monitor = TaskMonitor(task)
    # With a swapped instruction, also check whether the policy did what it was told (touched the
    # cube it was told to touch): the surest sign that it reads the instruction.
    given_task = task_for_instruction(given)
    given_monitor = TaskMonitor(given_task) if given_task is not None and given_task.name != task.name else None
    client.take_frames()
    first_chunk = len(client.policy_chunks)
    client.say(given)
    t0 = time.monotonic()
    end = t0 + task.time_limit_s + 1.0
    aborted = ""
    while (monitor.status == TaskStatus.RUNNING and time.monotonic() < end
           and not (given_monitor is not None and given_monitor.status == TaskStatus.SUCCESS)):
        client.spin_for(0.05)
        client.check_graph()
        if client.executor_faulted():
            # Not the policy's doing (the simulator stalled): not counted, reported as aborted.
            aborted = f"executor fault: {client.executor_status.reason}"
            break
        if client.ee is not None and client.objects is not None:
            monitor.update(client.now(), client.ee[1], client.objects[1])
            if given_monitor is not None:
                given_monitor.update(client.now(), client.ee[1], client.objects[1])
    if monitor.status == TaskStatus.SUCCESS:
        client.spin_for(0.5)  # a little after the touch in the video
    client.say("")
    duration = time.monotonic() - t0
    chunks = [c for c in client.policy_chunks[first_chunk:] if c["instruction"] == given]
    video = None
    if not args.no_video:
        tag = "swap_" if args.swap_instructions else ""
        video = frames_to_video(client.take_frames(), out / "videos" / f"{tag}{task.name}_{index:02d}.mp4",
                                tuple(proof.video_views))
        video = str(pathlib.Path(video).relative_to(out)) if video else None
    status = monitor.status if monitor.status != TaskStatus.RUNNING else TaskStatus.FAILED
    if aborted:
        status = "aborted"
    return {"episode": index, "status": status,
            "reason": aborted or monitor.reason or "no success before the time limit",
            "given_instruction": given,
            "given_instruction_done": (given_monitor.status == TaskStatus.SUCCESS) if given_monitor else None,
            "duration_s": round(duration, 2),
            "time_to_success_s": monitor.summary()["duration_s"], "chunks": len(chunks),
            "min_target_distance_m": monitor.summary()["min_target_distance_m"],
            "layout": {k: [round(float(x), 4) for x in v] for k, v in layout.items()},
            "video": video, "_planning_latencies": [c["planning_latency"] for c in chunks]}


def markdown(results: dict) -> str:
    title = "instructions SWAPPED (scored on the original task)" if results["swap_instructions"] else "seen tasks"
    lines = [f"# Closed-loop evaluation: {title}", "",
             f"checkpoint `{results['checkpoint']}`, {results['episodes_per_task']} episodes per task, "
             f"held-out layout seed {results['layout_seed']}", "",
             "| task | instruction | success | planning p50 / p90 |", "|---|---|---|---|"]
    swapped = results["swap_instructions"]
    if swapped:
        lines[-2:] = ["| task | instruction | success | did what the swapped instruction said | planning p50 / p90 |",
                      "|---|---|---|---|---|"]
    for name, entry in results["tasks"].items():
        lat = entry.get("planning_latency") or {}
        rate = entry.get("success_rate")
        lines.append(f"| {name} | {entry['instruction']} | {entry['successes']}/{entry['episodes_run']}"
                     f" ({(rate or 0) * 100:.0f}%)"
                     + (f", {entry['aborted']} aborted (not counted; reasons in results.json)" if entry.get("aborted") else "") + " | "
                     + (f"{entry['given_instruction_done']}/{entry['episodes_run']} | " if swapped else "")
                     + (f"{lat['p50_ms']:.0f} / {lat['p90_ms']:.0f} ms" if lat else "n/a") + " |")
    lat = results.get("planning_latency") or {}
    mean = results.get("mean_success_rate")
    followed = results.get("given_instruction_done_rate")
    lines += ["", f"mean success {(mean or 0) * 100:.0f}%; "
              + (f"did what the swapped instruction said in {followed * 100:.0f}% of the episodes; " if followed is not None else "")
              + "planning latency over all chunks: "
              + (f"p50 {lat['p50_ms']:.0f} ms, p90 {lat['p90_ms']:.0f} ms, max {lat['max_ms']:.0f} ms ({lat['count']} chunks)"
                 if lat else "n/a") + f"; wall time {results['elapsed_s']:.0f} s"
              + (f"; simulated graph restarted {results['restarts']} time(s) after aborted episodes"
                 if results.get("restarts") else ""), ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (stage 2 output)")
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--episodes-per-task", type=int, default=10)
    parser.add_argument("--output", default="outputs/eval")
    parser.add_argument("--swap-instructions", action="store_true",
                        help="give each episode another task's instruction; score the original task")
    parser.add_argument("--seed", type=int, default=0, help="added to eval_seed_offset for the layouts")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--time-limit", type=float, default=0.0, help="override every task's time limit [s]")
    parser.add_argument("--config", default="", help="node parameters (default config/panda.yaml)")
    parser.add_argument("--proof-config", default="", help="default config/sim_proof.yaml")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--max-restarts", type=int, default=10,
                        help="fresh simulated graphs started when an episode is aborted (arm not home, executor fault)")
    args = parser.parse_args(argv)
    if not pathlib.Path(args.checkpoint).is_dir():
        parser.error(f"checkpoint directory {args.checkpoint} does not exist")
    evaluate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
