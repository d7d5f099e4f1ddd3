"""Assembles the XArm + XHand executor from its parts (pure Python; the ROS node wraps it).

The hand joint limits are configured once (``hand.joint_limits`` in ``config/xhand.yaml``, by
joint name); the executor's safety filter gets them as its effector bounds from here, so
``executor.safety.effector_bounds`` must stay empty in the YAML.
"""

from __future__ import annotations

import dataclasses

from vpp_hardware.arms.arm import Arm
from vpp_hardware.executor.executor import ChunkExecutor, ChunkExecutorConfig
from vpp_hardware.hands.effector import HandEffector
from vpp_hardware.hands.hand import Hand, XHandJointLimits

__all__ = ["build_xhand_executor"]


def build_xhand_executor(config: ChunkExecutorConfig, arm: Arm, hand: Hand | None, limits: XHandJointLimits,
                         clamp_log_period_s: float = 1.0, clock=None) -> tuple[ChunkExecutor, HandEffector | None]:
    """A :class:`ChunkExecutor` for the ``xhand`` action space with a :class:`HandEffector`
    (``hand=None``: arm only; hand targets are still validated and clamped by the safety filter)."""
    if config.action_space != "xhand":
        raise ValueError(f"the XHand executor needs action_space 'xhand', got {config.action_space!r}")
    if config.safety.effector_bounds and tuple(map(tuple, config.safety.effector_bounds)) != limits.as_bounds():
        raise ValueError("executor.safety.effector_bounds must be left empty for the XHand: the hand joint "
                         "limits come from hand.joint_limits (one source)")
    config = dataclasses.replace(config, safety=dataclasses.replace(config.safety, effector_bounds=limits.as_bounds()))
    effector = HandEffector(hand, limits, log_period_s=clamp_log_period_s) if hand is not None else None
    return ChunkExecutor(config, arm, effector=effector, clock=clock), effector
