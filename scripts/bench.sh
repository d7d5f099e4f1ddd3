#!/usr/bin/env bash
# Prints the project's benchmarks (figures, not pass/fail). Each compares against a baseline
# measured in the same run where one exists.
set -eo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run() { echo; echo "=== $*"; bash "$REPO_ROOT/scripts/with_env.sh" "$@"; }
run python -m vpp_core.model.bench --preset panda-tiny --device cpu --iters 10
run python -m vpp_hardware.executor.bench_executor
run python -m vpp_hardware.sim.bench_camera --seconds 8 --with-robot
run python -m vpp_ros.sim_demo --duration 20 --output outputs/bench_sim_demo
run python -m vpp_core.data.bench --episodes 2 --seconds 10
run python -m vpp_teleop.bench --samples 600
