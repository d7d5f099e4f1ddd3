"""The simulated world: franky-sim's FR3 on a table with cubes and rendered cameras.

Importing this package selects MuJoCo's OSMesa (CPU) OpenGL backend when no display and no
``MUJOCO_GL`` choice exist, because MuJoCo reads ``MUJOCO_GL`` once, at its own import. Set
``MUJOCO_GL=egl`` yourself on a machine with a GPU.
"""

import os
import sys
import warnings


def _select_offscreen_gl() -> None:
    if any(os.environ.get(v) for v in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")):
        return
    if "mujoco" in sys.modules:
        warnings.warn(
            "mujoco was imported before vpp_hardware.sim without MUJOCO_GL set; offscreen "
            "rendering may fail. Set MUJOCO_GL=osmesa (or egl) before importing mujoco.",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    os.environ["MUJOCO_GL"] = "osmesa"


_select_offscreen_gl()

from vpp_hardware.sim.configuration_sim import SimObjectConfig, SimWorldConfig  # noqa: E402
from vpp_hardware.sim.sim_world import ObjectPose, SimWorld, SimWorldStats  # noqa: E402

__all__ = ["ObjectPose", "SimObjectConfig", "SimWorld", "SimWorldConfig", "SimWorldStats"]
