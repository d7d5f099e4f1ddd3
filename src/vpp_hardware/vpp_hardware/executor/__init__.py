"""Embodiment-agnostic action-chunk execution (pure Python, no ROS).

* :mod:`.chunk_schedule`: when each step runs, which chunk wins (:class:`ChunkScheduler`).
* :mod:`.safety`: workspace / step / speed limits (:class:`SafetyFilter`).
* :mod:`.watchdog`: command timeout, stale observations, dead arm.
* :mod:`.effector`: gripper / hand commands.
* :mod:`.executor`: :class:`ChunkExecutor`, the control-loop object a ROS node wraps.
"""

from vpp_hardware.executor.chunk_schedule import (
    ChunkScheduler,
    ScheduleDecision,
    ScheduledTarget,
    StepRef,
    TimedChunk,
)
from vpp_hardware.executor.effector import BinaryGripperEffector, Effector, GripperEffectorConfig
from vpp_hardware.executor.executor import (
    ChunkExecutor,
    ChunkExecutorConfig,
    ExecutorCounters,
    ExecutorMode,
    ExecutorStatus,
    LoopStats,
    SubmitResult,
    TickResult,
)
from vpp_hardware.executor.safety import SafetyDecision, SafetyFilter, SafetyLimits, SafetyVerdict
from vpp_hardware.executor.watchdog import Watchdog, WatchdogConfig

__all__ = [
    "BinaryGripperEffector",
    "ChunkExecutor",
    "ChunkExecutorConfig",
    "ChunkScheduler",
    "Effector",
    "ExecutorCounters",
    "ExecutorMode",
    "ExecutorStatus",
    "GripperEffectorConfig",
    "LoopStats",
    "SafetyDecision",
    "SafetyFilter",
    "SafetyLimits",
    "SafetyVerdict",
    "ScheduleDecision",
    "ScheduledTarget",
    "StepRef",
    "SubmitResult",
    "TickResult",
    "TimedChunk",
    "Watchdog",
    "WatchdogConfig",
]
