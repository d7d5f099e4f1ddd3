#!/usr/bin/env bash
# Runs a command inside the project environment: the built workspace (which also puts the venv
# first on PATH) and loopback-only DDS discovery.
set -eo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$REPO_ROOT/ros2_ws/install/setup.bash" ]; then
  echo "ros2_ws is not built: run 'make setup' first" >&2
  exit 1
fi
# shellcheck disable=SC1091
source "$REPO_ROOT/ros2_ws/install/setup.bash"
export MUJOCO_GL="${MUJOCO_GL:-osmesa}"
cd "$REPO_ROOT"
exec "$@"
