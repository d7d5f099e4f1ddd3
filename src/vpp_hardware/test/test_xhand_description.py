"""The project's XHand description: generated files up to date, URDF and MJCF agree, names stable."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest

from vpp_core.action_space import XHAND_JOINT_NAMES
from vpp_hardware.description import description_path
from vpp_hardware.description.xhand import model
from vpp_hardware.hands.hand import XHandJointLimits

TIPS = ("thumb_tip", "index_tip", "mid_tip", "ring_tip", "pinky_tip")


def test_checked_in_files_match_the_generator():
    assert description_path("xhand/xhand_right.urdf").read_text() == model.urdf_text()
    assert description_path("xhand/xhand_right.xml").read_text() == model.mjcf_text()


def test_urdf_has_12_actuated_joints_with_the_configured_limits_and_stable_frames():
    root = ET.parse(description_path("xhand/xhand_right.urdf")).getroot()
    revolute = [j for j in root.iter("joint") if j.get("type") == "revolute"]
    assert tuple(j.get("name") for j in revolute) == XHAND_JOINT_NAMES
    defaults = XHandJointLimits()
    for joint in revolute:
        limit = joint.find("limit")
        assert (float(limit.get("lower")), float(limit.get("upper"))) == getattr(defaults, joint.get("name"))
    links = {link.get("name") for link in root.iter("link")}
    assert {"palm", *TIPS} <= links
    # Layout: thumb 3, index 3, middle 2, ring 2, little 2.
    counts = {f: sum(n.startswith(f) for n in XHAND_JOINT_NAMES) for f in ("thumb", "index", "mid", "ring", "pinky")}
    assert counts == {"thumb": 3, "index": 3, "mid": 2, "ring": 2, "pinky": 2}


def test_urdf_and_mjcf_fingertips_agree():
    pinocchio = pytest.importorskip("pinocchio")
    robot = pinocchio.buildModelFromUrdf(str(description_path("xhand/xhand_right.urdf")))
    data = robot.createData()
    mj = mujoco.MjModel.from_xml_path(str(description_path("xhand/xhand_right.xml")))
    mjd = mujoco.MjData(mj)
    rng = np.random.default_rng(0)
    low, high = XHandJointLimits().arrays()
    for _ in range(5):
        q = rng.uniform(low, high)
        # Both models list the joints in XHAND_JOINT_NAMES order.
        order = [robot.joints[robot.getJointId(n)].idx_q for n in XHAND_JOINT_NAMES]
        q_pin = np.zeros(robot.nq)
        q_pin[order] = q
        pinocchio.framesForwardKinematics(robot, data, q_pin)
        mjd.qpos[:] = q
        mujoco.mj_kinematics(mj, mjd)
        palm = mjd.body("palm").xpos
        for tip in TIPS:
            urdf_tip = data.oMf[robot.getFrameId(tip)].translation
            assert np.allclose(urdf_tip, mjd.site(tip).xpos - palm, atol=1e-6), tip
