"""The policy node's ROS-free core: instructions, observation freshness, planning timing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vpp_policy_node.planning import (
    ObservationBuffer,
    PlanningLoop,
    PolicyNodeConfig,
    check_instruction,
    resolve_proprio_joint_names,
)

PANDA_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))


def test_proprio_joints_come_from_the_checkpoint_unless_configured():
    assert resolve_proprio_joint_names((), 7, PANDA_JOINTS) == PANDA_JOINTS
    assert resolve_proprio_joint_names(PANDA_JOINTS, 7, PANDA_JOINTS) == PANDA_JOINTS
    assert resolve_proprio_joint_names(PANDA_JOINTS, 7) == PANDA_JOINTS  # an older checkpoint names none
    assert resolve_proprio_joint_names(PANDA_JOINTS, 0, ()) == ()  # no proprio token: nothing subscribed


@pytest.mark.parametrize("configured, checkpoint, message", [
    ((), (), "set proprio_joint_names"),
    (PANDA_JOINTS[:6], (), "lists 6 joints"),
    ((), PANDA_JOINTS[:6], "lists 6 joints"),
    (PANDA_JOINTS[::-1], PANDA_JOINTS, "differ from the joints the checkpoint was trained on"),
])
def test_proprio_joint_mismatches_are_explained(configured, checkpoint, message):
    with pytest.raises(ValueError, match=message):
        resolve_proprio_joint_names(configured, 7, checkpoint)


@pytest.mark.parametrize("text, kind", [
    ("open the drawer", "start"),
    ("  open   the\tdrawer \n", "start"),
    ("", "stop"),
    ("   ", "stop"),
    ("x" * 301, "reject"),
    ("open the \x00drawer", "reject"),
    ("open the \ufffd\ufffd drawer", "reject"),
    ("#$%^&*()_+1234567890", "reject"),
    (None, "reject"),
])
def test_instruction_decisions(text, kind):
    decision = check_instruction(text, max_chars=300)
    assert decision.kind == kind, decision
    if kind == "start":
        assert decision.text == "open the drawer"
    else:
        assert decision.reason


def _buffer_with(now: float, image_ages=(0.0, 0.0), pose_age=0.0) -> ObservationBuffer:
    buf = ObservationBuffer(("static", "wrist"))
    for view, age in zip(("static", "wrist"), image_ages):
        buf.add_frame(view, now - age, np.zeros((8, 8, 3), np.uint8))
    buf.add_pose(now - image_ages[0] - pose_age, np.array([0.3, 0, 0.5]), np.array([1.0, 0, 0, 0]))
    return buf


def test_snapshot_uses_oldest_view_stamp_and_nearest_pose():
    cfg = PolicyNodeConfig()
    obs, reason = _buffer_with(100.0, image_ages=(0.05, 0.01)).snapshot(100.0, cfg, need_proprio=False)
    assert reason == "" and obs is not None
    assert obs.stamp == pytest.approx(99.95)
    np.testing.assert_allclose(obs.reference_position, [0.3, 0, 0.5])


@pytest.mark.parametrize("ages, pose_age, expected", [
    ((0.9, 0.0), 0.0, "image from view 'static' is 0.90 s old"),
    ((0.0, 0.3), 0.0, "views are 0.300 s apart"),
    ((0.0, 0.0), 0.5, "nearest end-effector pose is 0.500 s"),
])
def test_snapshot_refuses_stale_or_inconsistent_observations(ages, pose_age, expected):
    obs, reason = _buffer_with(100.0, ages, pose_age).snapshot(100.0, PolicyNodeConfig(), need_proprio=False)
    assert obs is None and expected in reason


def test_snapshot_reports_missing_view_and_missing_proprio():
    buf = ObservationBuffer(("static", "wrist"))
    buf.add_frame("static", 10.0, np.zeros((4, 4, 3), np.uint8))
    assert "no image yet from view(s) ['wrist']" in buf.snapshot(10.0, PolicyNodeConfig(), False)[1]
    full = _buffer_with(10.0)
    assert "no joint state" in full.snapshot(10.0, PolicyNodeConfig(), need_proprio=True)[1]


def test_nan_pose_never_becomes_a_reference():
    buf = ObservationBuffer(("static", "wrist"))
    for view in ("static", "wrist"):
        buf.add_frame(view, 10.0, np.zeros((4, 4, 3), np.uint8))
    buf.add_pose(10.0, np.array([np.nan, 0, 0]), np.array([0, 0, 0, 1.0]))
    assert buf.snapshot(10.0, PolicyNodeConfig(), False)[1] == "no end-effector pose received yet"


class _RecordingPlanner:
    """Stands in for the inference engine (a test double: the loop's timing is what is tested
    here; the real engine is exercised by the node and model tests)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def plan(self, images, instruction, proprio):
        self.calls.append(time.monotonic())
        return np.zeros((10, 7), np.float32)


def test_loop_plans_ahead_only_while_an_instruction_is_active():
    cfg = PolicyNodeConfig(action_dt=0.02, replan_after_steps=5)
    buf = ObservationBuffer(cfg.view_names)
    stop_feed = threading.Event()

    def feed() -> None:  # a 50 Hz camera + robot
        while not stop_feed.is_set():
            now = time.monotonic()
            for view in cfg.view_names:
                buf.add_frame(view, now, np.zeros((4, 4, 3), np.uint8))
            buf.add_pose(now, np.zeros(3), np.array([0, 0, 0, 1.0]))
            time.sleep(0.02)

    planner = _RecordingPlanner()
    published = []
    loop = PlanningLoop(cfg, planner, buf, clock=time.monotonic, publish=published.append)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    loop.start()
    try:
        time.sleep(0.2)
        assert published == [], "planned without an instruction"
        loop.set_instruction("push the red block")
        deadline = time.monotonic() + 10
        while len(published) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(published) >= 4
        assert [p.sequence_id for p in published[:4]] == [1, 2, 3, 4]
        assert all(p.instruction == "push the red block" for p in published)
        # Re-plans are paced by replan_after_steps * dt from the observation stamp, not back to back.
        stamps = [p.observation.stamp for p in published[:4]]
        assert min(np.diff(stamps)) > 0.5 * cfg.replan_after_steps * cfg.action_dt
        loop.set_instruction(None)
        time.sleep(0.1)
        count = len(published)
        time.sleep(0.3)
        assert len(published) == count, "kept planning after the stop"
        assert loop.status.state == "idle"
    finally:
        loop.shutdown()
        stop_feed.set()
        feeder.join()


@pytest.mark.parametrize("nice, threads", [(-1, 0), (20, 0), (0, -1)])
def test_cpu_settings_are_validated(nice, threads):
    with pytest.raises(ValueError, match="process_nice"):
        PolicyNodeConfig(process_nice=nice, torch_threads=threads)


@pytest.mark.parametrize("count", [0, -2])
def test_samples_per_plan_is_validated(count):
    with pytest.raises(ValueError, match="samples_per_plan must be >= 1"):
        PolicyNodeConfig(samples_per_plan=count)
