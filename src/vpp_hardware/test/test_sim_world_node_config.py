"""The simulated world node's static-camera view parameters (used by the simulation proof's scene)."""

from __future__ import annotations

import math

import pytest

from vpp_hardware.cameras.mujoco.configuration_mujoco import default_static_camera
from vpp_hardware.nodes.sim_world_node import SimWorldNodeConfig


def test_unset_view_parameters_keep_the_default_static_camera():
    config = SimWorldNodeConfig()
    assert config.static_camera_overrides() == {}
    assert default_static_camera(**config.static_camera_overrides()) == default_static_camera()


def test_view_parameters_move_the_static_camera():
    config = SimWorldNodeConfig(static_camera_position_m=[0.95, 0.0, 0.7],
                                static_camera_look_at_m=[0.5, 0.0, 0.02], static_camera_fovy_deg=48.0)
    camera = default_static_camera(width=128, height=128, **config.static_camera_overrides())
    assert camera.position == (0.95, 0.0, 0.7) and camera.look_at == (0.5, 0.0, 0.02)
    assert math.isclose(camera.fovy_deg, 48.0) and camera.width == 128


@pytest.mark.parametrize("field, value", [("static_camera_position_m", [1.0, 0.0]),
                                          ("static_camera_look_at_m", [0.5, 0.0, 0.0, 1.0])])
def test_a_view_vector_without_three_values_is_rejected(field, value):
    with pytest.raises(ValueError, match="3 values"):
        SimWorldNodeConfig(**{field: value}).static_camera_overrides()


def test_an_impossible_field_of_view_is_rejected_by_the_camera_config():
    with pytest.raises(ValueError, match="fovy_deg"):
        default_static_camera(**SimWorldNodeConfig(static_camera_fovy_deg=200.0).static_camera_overrides())
