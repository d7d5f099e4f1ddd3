"""C2: the rosbags typestore knows vpp_msgs with the same type hashes rosidl generated."""

import json
from pathlib import Path

import numpy as np
import pytest

from vpp_core.data.ros_types import find_vpp_msgs_dir, vpp_typestore

REPO = Path(__file__).resolve().parents[3]
MSG_NAMES = sorted(p.stem for p in (REPO / "src" / "vpp_msgs" / "msg").glob("*.msg"))


def test_every_vpp_msg_is_registered_next_to_standard_types():
    store = vpp_typestore()
    for name in MSG_NAMES:
        assert f"vpp_msgs/msg/{name}" in store.fielddefs
    for standard in ("sensor_msgs/msg/Image", "sensor_msgs/msg/JointState", "geometry_msgs/msg/PoseStamped",
                     "std_msgs/msg/String"):
        assert standard in store.fielddefs


@pytest.mark.parametrize("name", MSG_NAMES)
def test_type_hash_matches_rosidl(name):
    """The hash written into bags equals the one rosidl computed at build time (when built)."""
    generated = REPO / "ros2_ws" / "install" / "vpp_msgs" / "share" / "vpp_msgs" / "msg" / f"{name}.json"
    if not generated.exists():
        pytest.skip("vpp_msgs not built (run scripts/setup.sh)")
    hashes = {h["type_name"]: h["hash_string"] for h in json.loads(generated.read_text())["type_hashes"]}
    assert vpp_typestore().hash_rihs01(f"vpp_msgs/msg/{name}") == hashes[f"vpp_msgs/msg/{name}"]


def test_action_chunk_cdr_round_trip():
    store = vpp_typestore()
    ActionChunk = store.types["vpp_msgs/msg/ActionChunk"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    Pose = store.types["geometry_msgs/msg/Pose"]
    Point = store.types["geometry_msgs/msg/Point"]
    Quaternion = store.types["geometry_msgs/msg/Quaternion"]
    message = ActionChunk(
        header=Header(stamp=Time(sec=3, nanosec=5), frame_id="fr3_link0"), sequence_id=7, embodiment="panda",
        action_space="panda", dimension_names=["a"] * 7, dt=0.1, horizon=1, action_dim=7,
        data=np.arange(7, dtype=np.float32), reference_pose=Pose(position=Point(x=1.0, y=0.0, z=0.5),
        orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)), planning_latency=0.2, instruction="pick")
    raw = store.serialize_cdr(message, "vpp_msgs/msg/ActionChunk")
    back = store.deserialize_cdr(raw, "vpp_msgs/msg/ActionChunk")
    assert back.instruction == "pick" and back.header.stamp.nanosec == 5
    np.testing.assert_array_equal(back.data, np.arange(7, dtype=np.float32))


def test_missing_message_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    assert find_vpp_msgs_dir(tmp_path) != tmp_path  # empty dir skipped, repo copy found
    with pytest.raises(FileNotFoundError, match="no vpp_msgs .msg files"):
        import vpp_core.data.ros_types as ros_types
        monkeypatch.setattr(ros_types, "_REPO_MSG_DIR", tmp_path / "nothing")
        monkeypatch.delenv("VPP_MSGS_DIR", raising=False)
        find_vpp_msgs_dir(tmp_path)
