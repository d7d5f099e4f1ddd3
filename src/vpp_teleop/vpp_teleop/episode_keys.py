"""Episode control from a terminal: one key per action, calling the recorder's episode service.

    python -m vpp_teleop.episode_keys [--service /recorder/episode]
        s  start an episode (asks for the instruction; Enter reuses the last one)
        e  end the episode and keep it
        d  discard the episode (deletes its bag)
        c  engage/release the teleop clutch (/teleop_node/clutch), q  quit

Or one action, for scripts: ``--start "pick up the red cube"``, ``--stop``, ``--discard``.
Works with both recorders (``ros2 bag record`` per episode, or the fallback recorder): both
offer ``~/episode`` (vpp_msgs/srv/RecordEpisode).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Optional

__all__ = ["main"]


@contextlib.contextmanager
def _raw_terminal():
    """Single key presses without Enter (POSIX terminals); a no-op elsewhere."""
    try:
        import termios
        import tty
    except ImportError:
        yield
        return
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Start / keep / discard demonstration episodes.")
    parser.add_argument("--service", default="/recorder/episode", help="RecordEpisode service")
    parser.add_argument("--clutch-service", default="/teleop_node/clutch", help="teleop clutch (SetBool)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--start", metavar="INSTRUCTION", help="start an episode and exit")
    action.add_argument("--stop", action="store_true", help="stop (keep) the episode and exit")
    action.add_argument("--discard", action="store_true", help="discard the episode and exit")
    parser.add_argument("--timeout", type=float, default=30.0, help="wait this long for the service [s]")
    args, ros_args = parser.parse_known_args(argv)

    import rclpy
    from std_srvs.srv import SetBool
    from vpp_msgs.srv import RecordEpisode

    rclpy.init(args=ros_args or None)
    node = rclpy.create_node("episode_keys")
    client = node.create_client(RecordEpisode, args.service)
    clutch = node.create_client(SetBool, args.clutch_service)

    def call(service_client, request) -> Optional[object]:
        if not service_client.wait_for_service(timeout_sec=args.timeout):
            print(f"no service {service_client.srv_name}: is the recorder / teleop graph running?")
            return None
        future = service_client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            print(f"{service_client.srv_name} did not answer within {args.timeout} s")
            return None
        return future.result()

    def episode(command: int, instruction: str = "") -> bool:
        response = call(client, RecordEpisode.Request(command=command, instruction=instruction))
        if response is None:
            return False
        print(("OK: " if response.success else "REFUSED: ") + response.message)
        return bool(response.success)

    try:
        if args.start is not None:
            return 0 if episode(RecordEpisode.Request.START, args.start) else 1
        if args.stop:
            return 0 if episode(RecordEpisode.Request.STOP) else 1
        if args.discard:
            return 0 if episode(RecordEpisode.Request.DISCARD) else 1
        print(__doc__.split("\n\n")[1])
        last_instruction, engaged = "", False
        while True:
            with _raw_terminal():
                key = sys.stdin.read(1)
            if key in ("", "q"):
                return 0
            if key == "s":
                text = input(f"instruction [{last_instruction}]: ").strip() or last_instruction
                if not text:
                    print("an episode needs an instruction")
                    continue
                if episode(RecordEpisode.Request.START, text):
                    last_instruction = text
            elif key == "e":
                episode(RecordEpisode.Request.STOP)
            elif key == "d":
                episode(RecordEpisode.Request.DISCARD)
            elif key == "c":
                response = call(clutch, SetBool.Request(data=not engaged))
                if response is not None:
                    print(("OK: " if response.success else "REFUSED: ") + response.message)
                    engaged = (not engaged) if response.success else engaged
    except KeyboardInterrupt:
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
