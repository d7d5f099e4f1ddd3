"""ROS time stamps <-> float seconds. Float seconds are what the pure-Python core uses."""

from __future__ import annotations

import math


def stamp_to_seconds(stamp) -> float:
    """``builtin_interfaces/Time`` -> seconds (float)."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def seconds_to_stamp(seconds: float):
    """Seconds (float, >= 0) -> ``builtin_interfaces/Time``."""
    from builtin_interfaces.msg import Time

    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a stamp must be a finite, non-negative time in seconds, got {seconds}")
    total_ns = int(round(seconds * 1e9))
    return Time(sec=total_ns // 1_000_000_000, nanosec=total_ns % 1_000_000_000)
