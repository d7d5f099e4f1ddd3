"""SimWorld against its real peers: franky-sim's libfranka server, a franky client, MuJoCo.

One world is started for the module (about a second) and shared by the tests.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("franky_sim")
franky = pytest.importorskip("franky")

from vpp_hardware.cameras.camera import CameraError, CameraNotConnectedError  # noqa: E402
from vpp_hardware.cameras.mujoco import MujocoCamera  # noqa: E402
from vpp_hardware.sim import SimWorld, SimWorldConfig  # noqa: E402
from vpp_hardware.sim.scene import look_at_xyaxes  # noqa: E402
from vpp_hardware.sim.sim_world import reset_seed  # noqa: E402

# 127.0.0.1 first (what the robot node uses by default); further loopback addresses only in
# case another simulation on this machine holds ports 1337/1338 there.
HOSTS = ("127.0.0.1",) + tuple(f"127.0.0.{i}" for i in range(71, 79))


@pytest.fixture(scope="module")
def world():
    world = SimWorld(SimWorldConfig(host=HOSTS[0], fallback_hosts=HOSTS[1:], seed=5))
    world.start()
    yield world
    world.stop()


def _cameras(world: SimWorld) -> dict[str, MujocoCamera]:
    cameras = {name: MujocoCamera(world, name) for name in world.camera_names}
    for camera in cameras.values():
        camera.connect()
    return cameras


def _frame_after(camera: MujocoCamera, host_time_s: float):
    """The first frame captured after ``host_time_s``."""
    while True:
        frame = camera.read(timeout_s=5.0)
        if frame.capture_time_s > host_time_s:
            return frame


def _changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 12))


def test_images_have_the_configured_shape_and_are_not_blank(world):
    cameras = _cameras(world)
    assert set(cameras) == {"static", "wrist"}
    for name, camera in cameras.items():
        frame = camera.read(timeout_s=5.0)
        assert frame.camera_name == name
        assert frame.image.shape == (256, 256, 3) and frame.image.dtype == np.uint8
        # Not blank: many distinct colours and real contrast.
        assert frame.image.std() > 20
        assert len(np.unique(frame.image.reshape(-1, 3), axis=0)) > 50


def test_static_camera_intrinsics_project_the_red_cube_onto_its_pixels(world):
    camera = _cameras(world)["static"]
    frame = _frame_after(camera, time.time())
    intrinsics = camera.intrinsics()
    assert (intrinsics.width, intrinsics.height) == (256, 256)
    config = world.camera_config("static")
    # Camera axes as built into the scene (MuJoCo cameras look along -z, +y up in the image).
    x_axis, y_axis = np.reshape(look_at_xyaxes(config.position, config.look_at, config.up), (2, 3))
    rotation = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=1)
    pose = world.object_pose("red_cube")  # robot base frame, like the camera config
    half = world.config.objects[0].half_size_m
    w, qx, qy, qz = pose.quaternion_wxyz
    cube_rotation = np.array([
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy)],
        [2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx)],
        [2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)],
    ])
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    corners = pose.position + (signs * half) @ cube_rotation.T
    in_camera = (corners - np.asarray(config.position)) @ rotation
    u = intrinsics.cx + intrinsics.fx * in_camera[:, 0] / -in_camera[:, 2]
    v = intrinsics.cy - intrinsics.fy * in_camera[:, 1] / -in_camera[:, 2]
    image = frame.image.astype(int)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    red = (r > 60) & (r > 2.5 * g) & (r > 2.5 * b)  # the cube's lit and shaded faces only
    # Look only near the projection (the robot has red parts of its own elsewhere).
    margin = 12
    window = np.zeros_like(red)
    window[max(int(v.min()) - margin, 0):int(v.max()) + margin,
           max(int(u.min()) - margin, 0):int(u.max()) + margin] = True
    rows, cols = np.nonzero(red & window)
    assert rows.size > 10, "red cube not visible in the static camera"
    # The red pixels fill the projected outline of the cube: same bounding box to ~1 pixel.
    np.testing.assert_allclose([cols.min(), cols.max(), rows.min(), rows.max()],
                               [u.min(), u.max(), v.min(), v.max()], atol=1.5)


def test_frames_are_stamped_in_sim_time_at_the_camera_rate(world):
    camera = _cameras(world)["wrist"]
    frames = [camera.read(timeout_s=5.0) for _ in range(4)]
    numbers = [f.frame_number for f in frames]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4
    period_s = 1.0 / world.camera_config("wrist").fps
    for earlier, later in zip(frames, frames[1:], strict=False):
        steps = later.frame_number - earlier.frame_number
        # Scheduled in simulated time: exactly one period per frame, to the 1 ms physics step.
        assert later.hardware_timestamp_s - earlier.hardware_timestamp_s == pytest.approx(
            steps * period_s, abs=1.5e-3)
        assert later.capture_time_s > earlier.capture_time_s
    assert frames[-1].capture_time_s <= time.time()


def test_franky_client_moves_the_hand_and_both_cameras_see_it(world):
    cameras = _cameras(world)
    robot = franky.Robot(world.host, realtime_config=franky.RealtimeConfig.Ignore)
    try:
        robot.relative_dynamics_factor = 0.2
        time.sleep(0.2)  # let the arm settle after connecting
        settled_s = time.time()
        before = {name: _frame_after(camera, settled_s) for name, camera in cameras.items()}
        hand_before = world.hand_pose().position
        ee_before = np.array(robot.current_cartesian_state.pose.end_effector_pose.translation)

        # 6 cm along the end-effector y axis, relative to the current pose.
        robot.move(franky.CartesianMotion(franky.Affine([0.0, 0.06, 0.0]),
                                          franky.ReferenceType.Relative))
        time.sleep(0.2)
        moved_s = time.time()
        after = {name: _frame_after(camera, moved_s) for name, camera in cameras.items()}
        hand_after = world.hand_pose().position
        ee_after = np.array(robot.current_cartesian_state.pose.end_effector_pose.translation)
    finally:
        del robot

    hand_motion = hand_after - hand_before
    assert np.linalg.norm(hand_motion) == pytest.approx(0.06, abs=0.01)
    # What the robot reports and what the world simulates agree.
    np.testing.assert_allclose(ee_after - ee_before, hand_motion, atol=0.005)
    # The wrist camera moved with the hand: most of its view shifted.
    assert _changed_fraction(before["wrist"].image, after["wrist"].image) > 0.05
    # The static camera did not move, so the change it sees is the robot (the cubes stay put).
    static_change = _changed_fraction(before["static"].image, after["static"].image)
    assert 0.001 < static_change < 0.5


def test_seeded_resets_reproduce_object_positions(world):
    first = world.reset(seed=11)
    settled_first = world.object_poses()
    other = world.reset(seed=12)
    again = world.reset(seed=11)
    assert set(first) == {"red_cube", "blue_cube"}
    for name in first:
        np.testing.assert_array_equal(first[name].position, again[name].position)
        np.testing.assert_array_equal(first[name].quaternion_wxyz, again[name].quaternion_wxyz)
        # The physics state took the sampled pose (the cube sits on the table).
        np.testing.assert_allclose(settled_first[name].position, first[name].position, atol=2e-3)
    assert not np.allclose(first["red_cube"].position, other["red_cube"].position)
    config = world.config
    for poses in (first, other):
        for pose in poses.values():
            assert config.object_region_x_m[0] <= pose.position[0] <= config.object_region_x_m[1]
            assert config.object_region_y_m[0] <= pose.position[1] <= config.object_region_y_m[1]
        red, blue = poses["red_cube"].position, poses["blue_cube"].position
        assert np.linalg.norm(red[:2] - blue[:2]) >= config.min_object_separation_m


def test_unseeded_resets_follow_the_world_seed():
    # Sampling only: two worlds with the same seed draw the same sequence, without starting.
    a = SimWorld(SimWorldConfig(seed=3))
    b = SimWorld(SimWorldConfig(seed=3))
    for _ in range(2):
        pa, pb = a._sample_object_poses(a._rng), b._sample_object_poses(b._rng)
        for name in pa:
            np.testing.assert_array_equal(pa[name].position, pb[name].position)


def test_neighbouring_world_seeds_draw_different_reset_layouts():
    # The simulation proof evaluates under layout seeds s, s + 1, ...: each must be a fresh sample
    # of layouts, not the previous seed's shifted by one reset.
    sampler = SimWorld(SimWorldConfig())

    def red_cube_positions(world_seed):
        return np.array([sampler._sample_object_poses(np.random.default_rng(reset_seed(world_seed, k)))["red_cube"].position
                         for k in range(30)])

    first, second = red_cube_positions(100000), red_cube_positions(100001)
    closest = np.linalg.norm(first[:, None, :2] - second[None, :, :2], axis=-1).min()
    assert closest > 1e-6
    np.testing.assert_array_equal(red_cube_positions(100000), first)
    with pytest.raises(ValueError, match=">= 0"):
        reset_seed(-1, 0)


def test_a_taken_host_fails_cleanly_or_falls_back(world):
    with pytest.raises(OSError):
        SimWorld(SimWorldConfig(host=world.host)).start()
    free_hosts = tuple(h for h in HOSTS if h != world.host)
    with SimWorld(SimWorldConfig(host=world.host, fallback_hosts=free_hosts)) as second:
        assert second.host != world.host
        assert second.is_running


def test_camera_errors_are_clear(world):
    with pytest.raises(CameraError, match="no camera"):
        MujocoCamera(world, "ceiling")
    stopped = SimWorld(SimWorldConfig(host=HOSTS[-1]))
    camera = MujocoCamera(stopped, "wrist")
    with pytest.raises(CameraError, match="not running"):
        camera.connect()
    with pytest.raises(CameraNotConnectedError):
        camera.read(timeout_s=0.1)


def test_config_rejects_bad_values():
    from vpp_hardware.cameras.mujoco import default_wrist_camera
    from vpp_hardware.sim import SimObjectConfig

    with pytest.raises(ValueError):
        SimWorldConfig(cameras=(default_wrist_camera(), default_wrist_camera()))
    with pytest.raises(ValueError):
        SimObjectConfig(name="cube", rgba=(1.0, 0.0, 0.0, 2.0))
    with pytest.raises(ValueError):
        default_wrist_camera(look_at=(0.07, 0.0, 0.0))
    with pytest.raises(ValueError):
        SimWorldConfig(initial_joint_positions=(0.0,) * 6)
    with pytest.raises(ValueError):
        SimWorldConfig(command_wait_s=-0.01)


_HOLDING_CLIENT = """
import sys, time
from vpp_hardware.arms.franka.franky_arm import FrankyArm, FrankyArmConfig
arm = FrankyArm(FrankyArmConfig.franky_sim(sys.argv[1]))
arm.connect()  # starts the 1 kHz impedance tracker, holding the measured pose
print("holding", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("command_wait_s", [0.05, 0.0])
def test_simulated_time_waits_for_a_stalled_arm_controller(command_wait_s):
    import signal
    import subprocess
    import sys

    world = SimWorld(SimWorldConfig(host=HOSTS[-1], fallback_hosts=HOSTS[1:-1], command_wait_s=command_wait_s,
                                    cameras=()))
    world.start()
    client = subprocess.Popen([sys.executable, "-c", _HOLDING_CLIENT, world.host], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "holding"
        time.sleep(0.3)

        def sim_time_over(wall_s: float) -> float:
            start = world.stats().sim_time_s
            time.sleep(wall_s)
            return world.stats().sim_time_s - start

        # Thresholds far apart: a loaded CI machine simulates well below real time.
        assert sim_time_over(0.5) > 0.05  # a controller answering every state: time runs
        hand_before = world.hand_pose().position
        client.send_signal(signal.SIGSTOP)  # the controller misses every 1 ms deadline
        try:
            stalled = sim_time_over(0.5)
        finally:
            client.send_signal(signal.SIGCONT)
        assert sim_time_over(0.5) > 0.05  # and runs again once it answers
        if command_wait_s > 0:
            # Each unanswered state held physics for command_wait_s: ~10 steps in 0.5 s.
            assert stalled < 0.03
            assert 1 <= world.stats().stale_command_steps < 30
            np.testing.assert_allclose(world.hand_pose().position, hand_before, atol=0.002)
        else:
            assert stalled > 0.05  # franky-sim's own behaviour: the arm integrates stale torques
            assert world.stats().stale_command_steps > 50
    finally:
        client.kill()
        client.wait()
        world.stop()
