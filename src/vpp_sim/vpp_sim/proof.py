"""The whole simulation proof in one command: record -> dataset -> stage 1 -> stage 2 -> evaluate.

    python -m vpp_sim.proof [--output outputs/sim_proof] [--episodes-per-task 40] [--eval-episodes 10]
    make sim-proof

Steps (each a subprocess running the project's own command, each skipped when its output
already exists, so an interrupted run continues where it stopped):

1. ``python -m vpp_sim.record``          -> <output>/bags            (demonstrations, rosbag2)
2. ``python -m vpp_core.data.convert``   -> <output>/dataset         (C3 dataset)
3. ``python -m vpp_core.training.stage1``-> <output>/stage1          (TVP fine-tuning)
4. ``python -m vpp_core.training.stage2``-> <output>/stage2/checkpoint (policy checkpoint)
5. ``python -m vpp_sim.evaluate``        -> <output>/eval_seen, <output>/eval_swapped

Training configs: ``config/train/sim_panda_cpu_stage{1,2}.yaml`` on a CPU; with a GPU present the
``sim_panda_gpu_stage{1,2}.yaml`` pair when it exists (a larger preset, same code path).
Writes ``<output>/proof.json`` (timing of every step, the evaluation figures) and ``proof.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Optional

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


def _train_configs(prefix: str) -> tuple[pathlib.Path, pathlib.Path]:
    base = REPO_ROOT / "config" / "train"
    return base / f"{prefix}_stage1.yaml", base / f"{prefix}_stage2.yaml"


def default_train_prefix() -> str:
    try:
        import torch

        if torch.cuda.is_available() and all(p.is_file() for p in _train_configs("sim_panda_gpu")):
            return "sim_panda_gpu"
    except ImportError:
        pass
    return "sim_panda_cpu"


def _run_step(name: str, cmd: list[str], done: pathlib.Path, log_dir: pathlib.Path, timings: dict,
              nice: int) -> None:
    if done.exists():
        print(f"[proof] {name}: skipped ({done} exists)", flush=True)
        timings.setdefault(name, {"skipped": True})
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full = (["nice", "-n", str(nice)] if nice else []) + cmd
    print(f"[proof] {name}: {' '.join(cmd)}  (log {log_path})", flush=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.run(full, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    elapsed = time.monotonic() - started
    timings[name] = {"seconds": round(elapsed, 1), "command": " ".join(cmd), "returncode": proc.returncode}
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"step {name} failed (exit {proc.returncode}) after {elapsed:.0f} s; "
                           f"log {log_path}:\n{tail}")
    if not done.exists():
        raise RuntimeError(f"step {name} finished but {done} is missing; see {log_path}")
    print(f"[proof] {name}: done in {elapsed:.0f} s", flush=True)


def run_proof(args: argparse.Namespace) -> dict:
    out = pathlib.Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    logs = out / "logs"
    bags, dataset = out / "bags", out / "dataset"
    stage1, stage2 = out / "stage1", out / "stage2"
    checkpoint = stage2 / "checkpoint"
    prefix = args.train_config or default_train_prefix()
    cfg1, cfg2 = _train_configs(prefix)
    from vpp_sim.session import load_proof_config, write_convert_config

    convert_config = write_convert_config(load_proof_config(args.proof_config or None), out / "convert.yaml")
    pc = ["--proof-config", args.proof_config] if args.proof_config else []
    summary_path = out / "proof.json"
    summary: dict = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.setdefault("steps", {})
    timings = summary["steps"]

    def save() -> None:
        summary_path.write_text(json.dumps(summary, indent=2))

    summary.update({"output": str(out), "train_config": [str(cfg1), str(cfg2)],
                    "episodes_per_task": args.episodes_per_task, "eval_episodes": args.eval_episodes})
    steps = [
        ("record", [py, "-m", "vpp_sim.record", "--tasks", args.tasks, "--episodes-per-task",
                    str(args.episodes_per_task), "--output", str(bags), "--seed", str(args.seed), *pc],
         bags / "record_summary.json"),
        ("convert", [py, "-m", "vpp_core.data.convert", "--bags", str(bags), "--output", str(dataset),
                     "--embodiment", "panda", "--config", str(convert_config), "--no-progress",
                     *args.convert_args], dataset / "meta" / "info.json"),
        ("stage1", [py, "-m", "vpp_core.training.stage1", "--config", str(cfg1), f"data.root={dataset}",
                    f"run.output_dir={stage1}", *args.stage1_overrides], stage1 / "tvp"),
        ("stage2", [py, "-m", "vpp_core.training.stage2", "--config", str(cfg2), f"data.root={dataset}",
                    f"init.tvp_dir={stage1 / 'tvp'}", f"run.output_dir={stage2}", *args.stage2_overrides],
         checkpoint),
    ]
    eval_common = ["--checkpoint", str(checkpoint), "--tasks", args.eval_tasks or args.tasks, "--episodes-per-task",
                   str(args.eval_episodes), "--seed", str(args.seed), *pc] + (
        ["--time-limit", str(args.eval_time_limit)] if args.eval_time_limit else [])
    steps.append(("evaluate", [py, "-m", "vpp_sim.evaluate", *eval_common, "--output", str(out / "eval_seen")],
                  out / "eval_seen" / "results.json"))
    if not args.no_swap:
        steps.append(("evaluate_swapped", [py, "-m", "vpp_sim.evaluate", *eval_common, "--swap-instructions",
                                           "--output", str(out / "eval_swapped")],
                      out / "eval_swapped" / "results.json"))
    stop_after = args.stop_after
    try:
        for name, cmd, done in steps:
            _run_step(name, cmd, done, logs, timings, args.nice)
            save()
            if stop_after and name == stop_after:
                print(f"[proof] stopping after {name} as asked", flush=True)
                break
    finally:
        for name, path in (("seen", out / "eval_seen" / "results.json"),
                           ("swapped", out / "eval_swapped" / "results.json")):
            if path.exists():
                results = json.loads(path.read_text())
                summary[f"eval_{name}"] = {
                    "mean_success_rate": results.get("mean_success_rate"),
                    "given_instruction_done_rate": results.get("given_instruction_done_rate"),
                    "per_task": {k: v.get("success_rate") for k, v in results["tasks"].items()},
                    "planning_latency": results.get("planning_latency")}
        summary["train_minutes"] = round(sum(timings.get(s, {}).get("seconds", 0.0)
                                             for s in ("stage1", "stage2")) / 60.0, 1)
        save()
        (out / "proof.md").write_text(markdown(summary))
    return summary


def markdown(summary: dict) -> str:
    lines = ["# Simulation proof", "", "| step | time | command |", "|---|---|---|"]
    for name, t in summary.get("steps", {}).items():
        took = "skipped (output existed)" if t.get("skipped") else f"{t.get('seconds', 0) / 60:.1f} min"
        lines.append(f"| {name} | {took} | `{t.get('command', '')}` |")
    for name in ("seen", "swapped"):
        entry = summary.get(f"eval_{name}")
        if not entry:
            continue
        lines += ["", f"## Evaluation, {'instructions swapped' if name == 'swapped' else 'seen tasks'}", "",
                  "| task | success |", "|---|---|"]
        for task, rate in entry["per_task"].items():
            lines.append(f"| {task} | {'n/a' if rate is None else f'{rate * 100:.0f}%'} |")
        followed = entry.get("given_instruction_done_rate")
        if followed is not None:
            lines.append(f"\ndid what the swapped instruction said in {followed * 100:.0f}% of the episodes")
        lat = entry.get("planning_latency") or {}
        if lat:
            lines.append(f"\nplanning latency p50 {lat['p50_ms']:.0f} ms, p90 {lat['p90_ms']:.0f} ms")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/sim_proof")
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--episodes-per-task", type=int, default=40)
    parser.add_argument("--eval-episodes", type=int, default=10, help="evaluation episodes per task")
    parser.add_argument("--eval-tasks", default="", help="tasks evaluated (default: --tasks)")
    parser.add_argument("--eval-time-limit", type=float, default=0.0, help="override the tasks' time limit [s]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-config", default="",
                        help="config/train/<prefix>_stage{1,2}.yaml (default sim_panda_cpu, or sim_panda_gpu on a GPU)")
    parser.add_argument("--stage1-overrides", nargs="*", default=[], help="key=value for stage 1")
    parser.add_argument("--stage2-overrides", nargs="*", default=[], help="key=value for stage 2")
    parser.add_argument("--convert-args", nargs="*", default=[], help="extra arguments of the converter")
    parser.add_argument("--no-swap", action="store_true", help="skip the swapped-instruction evaluation")
    parser.add_argument("--stop-after", default="", choices=["", "record", "convert", "stage1", "stage2", "evaluate"])
    parser.add_argument("--proof-config", default="", help="default config/sim_proof.yaml")
    parser.add_argument("--nice", type=int, default=0, help="run the steps under nice -n N")
    args = parser.parse_args(argv)
    summary = run_proof(args)
    print((pathlib.Path(args.output) / "proof.md").read_text(), flush=True)
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
