"""The simulation proof end to end, shortened: record -> dataset -> stage 1 -> stage 2 -> evaluate.

One demonstration per task through the real node graph (sim world, executor, recorder), the
project's converter, two training steps of each stage with the tiny configs, and one closed-loop
evaluation episode of the trained checkpoint through the policy node. It checks that every step
produces its files, not that the policy succeeds (two training steps cannot): the full run is
``make sim-proof`` (see vpp_sim.proof), kept out of CI.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("franky_sim")

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_sim_proof_pipeline_smoke(tmp_path):
    # The plumbing is under test, not the data: accept every demonstration whatever the frame
    # jitter of a loaded CI machine (the full run keeps config/sim_proof.yaml's tolerances).
    proof_config = yaml.safe_load((REPO / "config" / "sim_proof.yaml").read_text())
    proof_config["max_frame_gap_s"] = 10.0
    proof_config["convert_overrides"]["sync"].update(max_camera_skew_s=10.0, max_camera_gap_s=10.0)
    # Every demonstration starts beside its goal (the full run: a quarter of them), so that path
    # through the graph is exercised on every run.
    proof_config["near_goal_start_fraction"] = 1.0
    (tmp_path / "sim_proof.yaml").write_text(yaml.safe_dump(proof_config))
    out = tmp_path / "proof"
    cmd = [sys.executable, "-m", "vpp_sim.proof", "--output", str(out), "--episodes-per-task", "1",
           "--proof-config", str(tmp_path / "sim_proof.yaml"),
           "--eval-tasks", "touch_red", "--eval-episodes", "1", "--eval-time-limit", "3",
           "--train-config", "tiny",
           "--stage1-overrides", "run.max_steps=2", "run.checkpoint_every=2", "cache_latents=false",
           "--stage2-overrides", "run.max_steps=2", "run.checkpoint_every=2", "feature_cache.enabled=false",
           "init.proprio_dim=7"]  # as the CPU/GPU proof presets: the arm's joints as proprio
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted((out / "logs").glob("*.log"))) \
        if (out / "logs").exists() else ""
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{logs}"

    # Demonstrations: one bag per task, tagged with instruction and outcome.
    record = json.loads((out / "bags" / "record_summary.json").read_text())
    assert record["kept"] >= 1
    for name, entry in record["tasks"].items():
        for episode in entry["episodes"]:
            if episode["kept"]:
                meta = (out / "bags" / episode["bag"] / "metadata.yaml").read_text()
                assert "vpp.instruction" in meta and "vpp.outcome: success" in meta
                assert episode["start"] == "near_goal" and "vpp.start: near_goal" in meta
    # Dataset (C3) from the bags.
    info = json.loads((out / "dataset" / "meta" / "info.json").read_text())
    assert info["embodiment"] == "panda" and info["episodes"] >= 1 and info["image_size"] == 128
    assert (out / "dataset" / "videos" / "static" / "episode_000000.mp4").is_file()
    assert info["proprio_names"] == [f"fr3_joint{i}" for i in range(1, 8)]
    # Both training stages and a loadable checkpoint; the policy node takes the proprio joints
    # from it (config/panda.yaml names none).
    assert (out / "stage1" / "tvp").is_dir()
    assert (out / "stage2" / "checkpoint" / "model.safetensors").is_file()
    checkpoint_config = json.loads((out / "stage2" / "checkpoint" / "config.json").read_text())
    assert checkpoint_config["policy"]["action_head"]["proprio_dim"] == 7
    assert checkpoint_config["metadata"]["proprio_names"] == info["proprio_names"]
    # Closed-loop evaluation through the policy node.
    results = json.loads((out / "eval_seen" / "results.json").read_text())
    task = results["tasks"]["touch_red"]
    assert task["episodes_run"] == 1 and 0.0 <= task["success_rate"] <= 1.0
    assert task["episodes"][0]["status"] in ("success", "failed") and task["episodes"][0]["chunks"] >= 1
    assert task["planning_latency"]["count"] >= 1
    assert (out / "eval_seen" / task["episodes"][0]["video"]).stat().st_size > 1000
    assert (out / "eval_seen" / "results.md").is_file()
    # The same with another task's instruction: scored on the original task, and on whether the
    # policy did what the given instruction said.
    swapped = json.loads((out / "eval_swapped" / "results.json").read_text())
    episode = swapped["tasks"]["touch_red"]["episodes"][0]
    assert swapped["swap_instructions"] and episode["given_instruction"] != "touch the red cube"
    assert isinstance(episode["given_instruction_done"], bool)
    assert 0.0 <= swapped["given_instruction_done_rate"] <= 1.0
    assert "did what the swapped instruction said" in (out / "eval_swapped" / "results.md").read_text()
    proof = json.loads((out / "proof.json").read_text())
    assert set(proof["steps"]) >= {"record", "convert", "stage1", "stage2", "evaluate", "evaluate_swapped"}
    assert "Traceback" not in logs


@pytest.mark.slow
def test_recording_restarts_the_graph_when_the_arm_cannot_be_homed(tmp_path):
    # A home pose nobody can reach to within 1 um: every homing fails, so the recorder restarts
    # the simulated graph once and then gives up with a message, recording nothing from there.
    proof_config = yaml.safe_load((REPO / "config" / "sim_proof.yaml").read_text())
    proof_config.update(home_tolerance_m=1e-6, home_timeout_s=2.0)
    (tmp_path / "sim_proof.yaml").write_text(yaml.safe_dump(proof_config))
    out = tmp_path / "bags"
    cmd = [sys.executable, "-m", "vpp_sim.record", "--tasks", "touch_red", "--episodes-per-task", "1",
           "--output", str(out), "--proof-config", str(tmp_path / "sim_proof.yaml"), "--max-restarts", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "restarting the simulated graph (1/1)" in result.stdout, result.stdout + result.stderr
    assert "cannot be homed" in result.stderr, result.stderr[-3000:]
    assert (out / "logs" / "restart_1").is_dir()  # the second graph's node logs
    assert not [p for p in out.glob("episode_*")]  # nothing recorded from a pose that was not home
