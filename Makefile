# The two commands of the README are `make sim` (main job, simulation) and `make test`.
# Both run the idempotent set-up first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help setup test sim bench clean sim-proof

help:
	@echo "make setup   install everything (venv, ROS 2, torch, ...) and build ros2_ws"
	@echo "make test    set up, then run every test"
	@echo "make sim     set up, then run the Panda stack in simulation and write a report"
	@echo "make bench   set up, then print the benchmarks (model, executor, cameras)"
	@echo "make sim-proof  set up, then record demos, train both stages and evaluate in simulation (long)"

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/run_tests.sh

sim: setup
	@bash scripts/with_env.sh python -m vpp_ros.sim_demo --output outputs/sim_demo $(SIM_ARGS)

bench: setup
	@bash scripts/bench.sh

clean:
	rm -rf ros2_ws/build ros2_ws/install ros2_ws/log

# The simulation proof (issue #8): record -> dataset -> stage 1 -> stage 2 -> closed-loop evaluation;
# each step is skipped when its output exists. Long (about an hour on 2 CPU cores): not part of `make test`.
sim-proof: setup
	@bash scripts/with_env.sh python -m vpp_sim.proof --output outputs/sim_proof $(SIM_PROOF_ARGS)
