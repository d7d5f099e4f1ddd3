"""Teleop core: clutch, wrist mapping, holding on lost/stale tracking (real avp-stream client)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vpp_core.action_space import actions_to_poses, get_action_space, pose_from_pos_quat, rotvec_to_matrix
from vpp_teleop.avp_client import AvpClient, AvpClientConfig, HandPose, TrackingSample
from vpp_teleop.fake_avp_server import FakeAvpServer, free_loopback_host
from vpp_teleop.hand_model import hand_skeleton
from vpp_teleop.teleop import TeleopConfig, TeleopCore
from vpp_teleop.wrist_mapping import Clutch, ClutchConfig, WristMapper, WristMappingConfig

WAIT_S = 60.0
ROBOT_POSE = pose_from_pos_quat(np.array([0.45, 0.0, 0.35]), np.array([1.0, 0.0, 0.0, 0.0]))


def _pose(position, rotvec=(0.0, 0.0, 0.0)):
    out = np.eye(4)
    out[:3, :3] = rotvec_to_matrix(np.asarray(rotvec, dtype=np.float64))
    out[:3, 3] = position
    return out


def _sample(seq, wrist, curl=0.3, left_pinch=0.0, right_valid=True, arrival_mono=None):
    now = time.monotonic() if arrival_mono is None else arrival_mono
    right = HandPose(right_valid, wrist, hand_skeleton(curl, 0.0, "right"), 0.1)
    left_joints = hand_skeleton(0.0, left_pinch, "left")
    pinch = float(np.linalg.norm(left_joints[4, :3, 3] - left_joints[9, :3, 3]))
    left = HandPose(True, _pose([0.45, 0.25, 1.0]), left_joints, pinch)
    return TrackingSample(seq, time.time(), now, None, right, left, np.eye(4))


# ---------------------------------------------------------------- pure mapping

def test_clutch_toggle_with_hysteresis_and_service():
    clutch = Clutch(ClutchConfig(gesture="toggle", pinch_engage_m=0.02, pinch_release_m=0.04))
    assert clutch.update(0.10) is None
    assert clutch.update(0.01).engaged          # pinch starts: engage
    assert clutch.update(0.03) is None          # inside the hysteresis band: still the same pinch
    assert clutch.update(0.015) is None
    assert clutch.update(0.05) is None          # pinch ends, no change
    event = clutch.update(0.01)                  # second pinch: release
    assert event is not None and not event.engaged
    clutch.request(True, "service")
    event = clutch.update(None)
    assert event.engaged and event.reason == "service"
    hold = Clutch(ClutchConfig(gesture="hold"))
    assert hold.update(0.01).engaged and not hold.update(0.05).engaged
    hold.update(0.01)
    assert not hold.update(None).engaged         # dead-man: losing the clutch hand releases


def test_wrist_mapping_scale_rotation_workspace():
    cfg = WristMappingConfig(translation_scale=0.5, smoothing_alpha=1.0,
                             operator_to_base=(0, -1, 0, 1, 0, 0, 0, 0, 1),  # operator faces robot's +y
                             workspace_min_m=(0.2, -0.3, 0.1), workspace_max_m=(0.7, 0.3, 0.6))
    mapper = WristMapper(cfg)
    operator_ref = _pose([0.4, -0.1, 1.0])
    mapper.engage(operator_ref, ROBOT_POSE)
    target = mapper.update(_pose([0.5, -0.1, 1.0]))           # operator +10 cm along headset x
    np.testing.assert_allclose(target[:3, 3], ROBOT_POSE[:3, 3] + [0.0, 0.05, 0.0], atol=1e-9)
    target = mapper.update(_pose([0.4, -0.1, 1.0], (0.0, 0.0, 0.3)))  # yaw 0.3 about the vertical
    expected = rotvec_to_matrix(np.array([0.0, 0.0, 0.3])) @ ROBOT_POSE[:3, :3]
    np.testing.assert_allclose(target[:3, :3], expected, atol=1e-9)
    target = mapper.update(_pose([3.0, -0.1, 1.0]))           # far away: clamped to the box
    assert mapper.clamped and np.all(target[:3, 3] <= np.array(cfg.workspace_max_m) + 1e-12)
    smooth = WristMapper(WristMappingConfig(smoothing_alpha=0.25))
    smooth.engage(operator_ref, ROBOT_POSE)
    first = smooth.update(_pose([0.5, -0.1, 1.0]))
    np.testing.assert_allclose(first[:3, 3] - ROBOT_POSE[:3, 3], [0.025, 0.0, 0.0], atol=1e-9)


def test_core_holds_on_stale_sample_and_missing_robot_pose():
    core = TeleopCore(TeleopConfig(), frame_id="xarm_base")
    core.request_clutch(True)
    wrist = _pose([0.45, -0.15, 1.0])
    out = core.process(_sample(1, wrist), ROBOT_POSE, 0.0)
    assert out.chunk is not None and core.engaged
    late = _sample(2, wrist, arrival_mono=time.monotonic() - 1.0)
    assert core.process(late, ROBOT_POSE, 0.0).chunk is None
    out = core.process(_sample(3, wrist), None, 0.0)
    assert out.chunk is None and out.hold_reason.startswith("robot pose unusable")
    out = core.process(_sample(4, wrist), ROBOT_POSE, 5.0)
    assert out.chunk is None
    assert core.process(_sample(5, wrist), ROBOT_POSE, 0.0).chunk is not None


def test_core_refuses_to_engage_without_tracking():
    core = TeleopCore(TeleopConfig())
    core.request_clutch(True)
    out = core.process(_sample(1, _pose([0.45, -0.15, 1.0]), right_valid=False), ROBOT_POSE, 0.0)
    assert out.chunk is None and not core.engaged
    assert out.clutch_event is not None and "engage refused" in out.clutch_event.reason


def test_chunk_is_what_the_executor_expects():
    cfg = TeleopConfig(chunk_horizon=3, chunk_dt_s=0.05)
    core = TeleopCore(cfg, frame_id="xarm_base")
    core.request_clutch(True)
    ref = _pose([0.45, -0.15, 1.0])
    core.process(_sample(1, ref), ROBOT_POSE, 0.0)
    out = core.process(_sample(2, _pose([0.47, -0.15, 1.0])), ROBOT_POSE, 0.0)
    chunk = out.chunk
    space = get_action_space("xhand")
    assert chunk.actions.shape == (3, space.dim) and chunk.embodiment == "xhand" and chunk.dt == 0.05
    assert np.all(np.isfinite(chunk.actions))
    poses = actions_to_poses(ROBOT_POSE, chunk.actions.astype(np.float64), action_space=space)[0]
    np.testing.assert_allclose(poses[:, :3, 3], np.repeat(out.target_pose[None, :3, 3], 3, 0), atol=1e-6)
    np.testing.assert_allclose(chunk.actions[:, 6:], np.repeat(out.effector[None], 3, 0).astype(np.float32))
    assert chunk.sequence_id == 2 and chunk.frame_id == "xarm_base"


# ---------------------------------------------------------------- through the real client

def _run_scenario(scenario, n_samples, core, **server_kwargs):
    outputs, samples = [], []
    done = threading.Event()

    def on_sample(sample):
        samples.append(sample)
        outputs.append(core.process(sample, ROBOT_POSE, 0.0))
        if len(samples) >= n_samples:
            done.set()

    host = free_loopback_host()
    with FakeAvpServer(host, scenario=scenario, **server_kwargs):
        client = AvpClient(AvpClientConfig(ip=host, connect_timeout_s=10.0, stale_after_s=1.0),
                           on_sample=on_sample).start()
        try:
            assert done.wait(WAIT_S), f"only {len(samples)} samples"
        finally:
            client.close()
    return samples[:n_samples], outputs[:n_samples]


def test_lost_tracking_holds_and_resumes_without_a_jump():
    core = TeleopCore(TeleopConfig(stale_after_s=1.0))
    core.request_clutch(True)
    # lost: right hand untracked for scenario time 2.0-3.0 s; 20 Hz x speed 4 -> 0.2 s per sample.
    samples, outputs = _run_scenario("lost", 25, core, rate_hz=20.0, speed=4.0)
    valid = np.array([s.right.valid for s in samples])
    assert valid[0] and (~valid).sum() >= 3 and valid[-1], valid
    for sample, out in zip(samples, outputs):
        if not sample.right.valid:
            assert out.chunk is None and "not tracked" in out.hold_reason
        else:
            assert out.chunk is not None
    # The first chunk after the gap starts from the robot's pose (smoothing restarted), not from
    # where the operator's hand went meanwhile.
    after = int(np.argmax(~valid)) + int((~valid).sum())
    gap_out = outputs[after]
    step = np.linalg.norm(gap_out.target_pose[:3, 3] - ROBOT_POSE[:3, 3])
    full = np.linalg.norm(core.wrist.raw_target(samples[after].right.wrist)[:3, 3] - ROBOT_POSE[:3, 3])
    assert step <= core.config.wrist.smoothing_alpha * full + 1e-9


def test_clutch_engages_and_releases_by_pinch():
    core = TeleopCore(TeleopConfig(stale_after_s=1.0))
    # clutch: left pinch at 1.0-1.4 s and 4.0-4.4 s; wrist moves +x at 5 cm/s. 0.1 s per sample.
    samples, outputs = _run_scenario("clutch", 55, core, rate_hz=20.0, speed=2.0)
    events = [(i, o.clutch_event) for i, o in enumerate(outputs) if o.clutch_event is not None]
    assert [e.engaged for _, e in events] == [True, False], events
    engaged_from, released_at = events[0][0], events[1][0]
    assert all(o.chunk is None for o in outputs[:engaged_from])
    assert all(o.chunk is not None for o in outputs[engaged_from:released_at])
    assert all(o.chunk is None for o in outputs[released_at:])
    # While engaged the target moved +x with the operator's wrist (scale 1), starting at the robot.
    targets = np.array([o.target_pose[:3, 3] for o in outputs[engaged_from:released_at]])
    assert targets[0][0] == pytest.approx(ROBOT_POSE[0, 3], abs=0.01)
    assert targets[-1][0] > targets[0][0] + 0.05
    np.testing.assert_allclose(targets[:, 1:], np.repeat(ROBOT_POSE[None, 1:3, 3], len(targets), 0), atol=1e-6)


def test_panda_path_maps_the_pinch_to_the_gripper():
    core = TeleopCore(TeleopConfig(embodiment="panda"), frame_id="fr3_link0")
    core.request_clutch(True)
    wrist = _pose([0.45, -0.15, 1.0])
    open_hand = core.process(_sample(1, wrist), ROBOT_POSE, 0.0)
    assert open_hand.chunk.actions.shape == (3, 7) and open_hand.chunk.embodiment == "panda"
    assert open_hand.effector[0] == pytest.approx(1.0)  # pinch 0.1 m: fully open
    pinched = TrackingSample(2, time.time(), time.monotonic(), None,
                             HandPose(True, wrist, hand_skeleton(0.3), 0.01), _sample(2, wrist).left, np.eye(4))
    assert core.process(pinched, ROBOT_POSE, 0.0).effector[0] == pytest.approx(0.0)
