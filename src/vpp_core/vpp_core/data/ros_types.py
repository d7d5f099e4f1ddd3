"""ROS 2 message types without a ROS install: a ``rosbags`` typestore including ``vpp_msgs``.

``vpp_typestore()`` starts from rosbags' built-in ROS 2 Kilted store (std/sensor/geometry
messages; identical definitions to Jazzy for everything the project records) and registers every
``vpp_msgs`` message from its ``.msg`` text, so bags written here carry the same message
definitions and RIHS01 type hashes as bags recorded by ``ros2 bag record`` on a robot PC.

The ``.msg`` files are looked up (first hit wins) in

1. the ``msg_dir`` argument,
2. the ``VPP_MSGS_DIR`` environment variable,
3. the repository checkout this file lives in (``src/vpp_msgs/msg``),
4. ``share/vpp_msgs/msg`` under each prefix of ``AMENT_PREFIX_PATH`` (an installed workspace).

Only messages are registered: rosbag2 records topics, never services (and rosbags has no
``srv`` type names).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

__all__ = [
    "MSG_PACKAGE",
    "find_vpp_msgs_dir",
    "vpp_typestore",
    "ROS_DISTRO_STORE",
]

MSG_PACKAGE = "vpp_msgs"
#: The rosbags built-in store the project's types are added to.
ROS_DISTRO_STORE = Stores.ROS2_KILTED

_REPO_MSG_DIR = Path(__file__).resolve().parents[3] / MSG_PACKAGE / "msg"


def _candidate_dirs(msg_dir: Optional[Path | str]) -> list[Path]:
    candidates: list[Path] = []
    if msg_dir is not None:
        candidates.append(Path(msg_dir))
    env_dir = os.environ.get("VPP_MSGS_DIR")
    if env_dir:
        candidates.append(Path(env_dir))
    candidates.append(_REPO_MSG_DIR)
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / MSG_PACKAGE / "msg")
    return candidates


def find_vpp_msgs_dir(msg_dir: Optional[Path | str] = None) -> Path:
    """Directory holding ``vpp_msgs``' ``.msg`` files (see the module doc for the search order)."""
    candidates = _candidate_dirs(msg_dir)
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.msg")):
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no vpp_msgs .msg files found; searched: {searched}")


def _types_from_dir(msg_dir: Path) -> dict:
    types: dict = {}
    for path in sorted(msg_dir.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(encoding="utf-8"), f"{MSG_PACKAGE}/msg/{path.stem}"))
    return types


@lru_cache(maxsize=8)
def _cached_typestore(msg_dir: Path) -> Typestore:
    store = get_typestore(ROS_DISTRO_STORE)
    store.register(_types_from_dir(msg_dir))
    return store


def vpp_typestore(msg_dir: Optional[Path | str] = None) -> Typestore:
    """A rosbags typestore with ROS 2 standard messages and every ``vpp_msgs`` type registered.

    The store is built once per message directory and shared (rosbags typestores are read-only
    after registration, so sharing across threads is safe).
    """
    return _cached_typestore(find_vpp_msgs_dir(msg_dir).resolve())
