"""Arm and gripper drivers behind one small interface (:mod:`vpp_hardware.arms.arm`).

One folder per robot family (``franka/`` ...). Importing this package does not import any
vendor library; drivers import theirs when their module is imported.
"""

from vpp_hardware.arms.arm import Arm, ArmError, ArmState, CommandHandle, Gripper

__all__ = ["Arm", "ArmError", "ArmState", "CommandHandle", "Gripper"]
