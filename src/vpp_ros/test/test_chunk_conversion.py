"""ActionChunk <-> numpy: round trip and clear rejections."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vpp_msgs.msg")

from vpp_core.action_space import get_action_space  # noqa: E402
from vpp_ros.chunk_conversion import (  # noqa: E402
    ChunkData,
    ChunkValidationError,
    Pose,
    chunk_to_msg,
    msg_to_chunk,
)


def _chunk(embodiment: str = "panda", horizon: int = 10, **overrides) -> ChunkData:
    dim = get_action_space(embodiment).dim
    rng = np.random.default_rng(0)
    fields = dict(
        actions=rng.uniform(-0.01, 0.01, size=(horizon, dim)).astype(np.float32),
        embodiment=embodiment,
        action_space=embodiment,
        dt=0.1,
        stamp=1234.5678,
        sequence_id=7,
        frame_id="fr3_link0",
        reference_pose=Pose((0.3, 0.0, 0.5), (1.0, 0.0, 0.0, 0.0)),
        planning_latency=0.031,
        instruction="open the drawer",
    )
    fields.update(overrides)
    return ChunkData(**fields)


@pytest.mark.parametrize("embodiment", ["panda", "xhand"])
def test_round_trip_keeps_every_field(embodiment):
    chunk = _chunk(embodiment)
    msg = chunk_to_msg(chunk)
    assert msg.horizon == 10 and msg.action_dim == get_action_space(embodiment).dim
    assert list(msg.dimension_names) == list(get_action_space(embodiment).dimension_names)
    back = msg_to_chunk(msg, expected_embodiment=embodiment)
    np.testing.assert_array_equal(back.actions, chunk.actions)
    assert back.stamp == pytest.approx(chunk.stamp, abs=1e-9)
    assert (back.sequence_id, back.frame_id, back.instruction) == (7, "fr3_link0", "open the drawer")
    assert back.reference_pose == chunk.reference_pose
    assert back.dt == pytest.approx(0.1)


def test_wrong_dimension_is_rejected_with_expected_layout():
    chunk = _chunk(actions=np.zeros((10, 6), dtype=np.float32))
    with pytest.raises(ChunkValidationError, match=r"action_dim is 6 but 'panda' has 7 dimensions"):
        chunk_to_msg(chunk)


def test_one_dimensional_actions_are_rejected():
    with pytest.raises(ChunkValidationError, match="must be 2-D"):
        chunk_to_msg(_chunk(actions=np.zeros(7, dtype=np.float32)))


def test_nan_is_rejected_naming_step_and_dimension():
    actions = np.zeros((10, 7), dtype=np.float32)
    actions[3, 6] = np.nan
    with pytest.raises(ChunkValidationError, match=r"non-finite value nan at step 3, dimension 'gripper'"):
        chunk_to_msg(_chunk(actions=actions))


def test_inf_in_a_received_message_is_rejected():
    msg = chunk_to_msg(_chunk())
    data = np.asarray(msg.data).copy()
    data[12] = np.inf
    msg.data = data.tolist()
    with pytest.raises(ChunkValidationError, match="non-finite value inf at step 1"):
        msg_to_chunk(msg)


def test_data_length_must_match_horizon_times_dim():
    msg = chunk_to_msg(_chunk())
    msg.data = list(msg.data)[:-1]
    with pytest.raises(ChunkValidationError, match="data holds 69 values but horizon x action_dim = 10 x 7"):
        msg_to_chunk(msg)


def test_unknown_and_unexpected_embodiments_are_rejected():
    msg = chunk_to_msg(_chunk())
    msg.embodiment = "ur5"
    with pytest.raises(ChunkValidationError, match="unknown embodiment 'ur5'"):
        msg_to_chunk(msg)
    msg = chunk_to_msg(_chunk("xhand"))
    with pytest.raises(ChunkValidationError, match="chunk is for embodiment 'xhand', this executor drives 'panda'"):
        msg_to_chunk(msg, expected_embodiment="panda")


def test_bad_dt_and_reference_pose_are_rejected():
    with pytest.raises(ChunkValidationError, match="dt must be a positive"):
        chunk_to_msg(_chunk(dt=0.0))
    with pytest.raises(ChunkValidationError, match="not unit length"):
        chunk_to_msg(_chunk(reference_pose=Pose((0, 0, 0), (0, 0, 0, 0))))
    msg = chunk_to_msg(_chunk())
    msg.reference_pose.position.x = float("nan")
    with pytest.raises(ChunkValidationError, match="reference pose has non-finite"):
        msg_to_chunk(msg)


def test_mismatched_dimension_names_are_rejected():
    msg = chunk_to_msg(_chunk())
    names = list(msg.dimension_names)
    names[0], names[1] = names[1], names[0]
    msg.dimension_names = names
    with pytest.raises(ChunkValidationError, match="dimension names"):
        msg_to_chunk(msg)
