"""The one way every node of the project starts, spins and stops."""

from __future__ import annotations

import sys
from typing import Callable, Optional


def run_node(make_node: Callable[[], "object"], argv: Optional[list[str]] = None) -> int:
    """Init rclpy, build the node, spin until Ctrl-C / shutdown, clean up; returns the exit code.

    A node that cannot start (a camera or robot not found, a bad parameter) exits with code 1 and
    one readable line instead of a traceback.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    code = 0
    try:
        node = make_node()
        # Single-threaded on purpose: callbacks only queue work (inference and control have
        # their own threads), and rclpy's MultiThreadedExecutor was measured delaying
        # subscriptions by up to ~2 s here.
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (RuntimeError, ValueError, OSError) as exc:
        if node is not None:
            raise
        print(f"[{getattr(make_node, '__name__', 'node')}] cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
