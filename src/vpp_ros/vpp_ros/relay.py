"""Relay any topic to another name (ROS 2 from PyPI has no topic_tools).

    python -m vpp_ros.relay --type vpp_msgs/msg/ActionChunk --input /a --output /b [--count N]

Used to check that messages survive DDS between two processes, and handy for renaming camera
topics to what a policy expects.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def import_message_type(type_name: str):
    """'pkg/msg/Name' (or 'pkg/Name') -> the generated Python class, with a clear error."""
    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type must look like 'pkg/msg/Name', got {type_name!r}")
    package, kind, name = parts
    try:
        module = importlib.import_module(f"{package}.{kind}")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import message type {type_name!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--type", required=True, help="message type, e.g. std_msgs/msg/String")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--count", type=int, default=0, help="exit after relaying this many (0 = forever)")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy, HistoryPolicy

    msg_type = import_message_type(args.type)
    rclpy.init()
    node = rclpy.create_node("vpp_relay")
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=50,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    pub = node.create_publisher(msg_type, args.output, qos)
    relayed = 0

    def on_message(msg) -> None:
        nonlocal relayed
        pub.publish(msg)
        relayed += 1

    node.create_subscription(msg_type, args.input, on_message, qos)
    node.get_logger().info(f"relaying {args.type} {args.input} -> {args.output}")
    try:
        while rclpy.ok() and (args.count <= 0 or relayed < args.count):
            rclpy.spin_once(node, timeout_sec=0.1)
        # Give late-joining subscribers time to receive the last messages (transient local).
        if args.count > 0:
            end = node.get_clock().now().nanoseconds + 2_000_000_000
            while rclpy.ok() and node.get_clock().now().nanoseconds < end:
                rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
