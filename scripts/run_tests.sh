#!/usr/bin/env bash
# Runs every test of the project (pytest over each package's test/ folder and tests/).
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k chunk`.
set -eo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A domain id of its own per run, so two test runs (or a running sim) never cross-talk.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}"
exec bash "$REPO_ROOT/scripts/with_env.sh" python -m pytest "$@"
