"""RealSense capture through real librealsense (software_device): pixels, intrinsics, align, filters, reconnect."""
from __future__ import annotations

import time

import numpy as np
import pytest

try:  # load rclpy's Fast DDS before the copy bundled in pyrealsense2 (see test_realsense_node.py)
    import rclpy  # noqa: F401
except ImportError:
    pass
rs = pytest.importorskip("pyrealsense2")

from pose_ros.core.camera import PinholeCamera  # noqa: E402
from pose_ros.sensors.realsense_device import (  # noqa: E402
    CameraSupervisor, CaptureSettings, DeviceNotFoundError, FilterSettings, RealSenseCapture, StampMapper,
    StreamConfigError, StreamRequest, distortion_model_name, extrinsics_to_T, find_device, intrinsics_to_camera,
    list_devices, open_playback)
from pose_ros.sensors.registration import register_depth  # noqa: E402
from pose_ros.sensors.software_device import SoftwareRealSense  # noqa: E402

COLOR_CAM = PinholeCamera(np.array([[180.0, 0, 99.5], [0, 181.0, 74.0], [0, 0, 1]]), 200, 150)
DEPTH_CAM = PinholeCamera(np.array([[140.0, 0, 80.0], [0, 140.0, 60.5], [0, 0, 1]]), 160, 120)


def _T(t, rot_deg_y: float = 0.0) -> np.ndarray:
    a = np.deg2rad(rot_deg_y)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = t
    return T


def _settings(**kw) -> CaptureSettings:
    base = dict(color=StreamRequest(COLOR_CAM.width, COLOR_CAM.height, 30),
                depth=StreamRequest(DEPTH_CAM.width, DEPTH_CAM.height, 30), frame_timeout_s=0.5)
    base.update(kw)
    return CaptureSettings(**base)


def _frame_content(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame n: a deterministic random colour image and depth whose values encode n."""
    rng = np.random.default_rng(n)
    rgb = rng.integers(0, 256, (COLOR_CAM.height, COLOR_CAM.width, 3), dtype=np.uint8)
    depth = rng.integers(400, 3000, (DEPTH_CAM.height, DEPTH_CAM.width), dtype=np.uint16)
    depth[:5, :5] = 0  # invalid pixels must survive as 0
    return rgb, depth


def _read_n(cap: RealSenseCapture, sw: SoftwareRealSense, n: int, make=_frame_content):
    frames = []
    for _ in range(n + 3):
        sw.push(*make(sw.frame_number))
        f = cap.read(0.5)
        if f is not None:
            frames.append(f)
        if len(frames) == n:
            break
    return frames


def test_capture_delivers_exact_pixels_intrinsics_and_extrinsic_unaligned():
    T = _T((0.015, -0.002, 0.001), rot_deg_y=1.0)
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM, T, depth_scale_m=0.001)
    with RealSenseCapture(sw.device, _settings(align_depth=False)) as cap:
        frames = _read_n(cap, sw, 4)
    assert len(frames) == 4
    for f in frames:
        rgb, depth = _frame_content(f.frame_number)
        np.testing.assert_array_equal(f.color_rgb, rgb)
        np.testing.assert_array_equal(f.depth_raw, depth)
        assert f.depth_raw.dtype == np.uint16 and f.color_rgb.dtype == np.uint8
        assert f.depth_scale_m == pytest.approx(0.001)
        np.testing.assert_allclose(f.color_camera.K, COLOR_CAM.K, atol=1e-4)
        np.testing.assert_allclose(f.depth_camera.K, DEPTH_CAM.K, atol=1e-4)
        assert f.color_camera.distortion_model == "plumb_bob" and not f.aligned
        np.testing.assert_allclose(f.T_color_depth, T, atol=1e-6)
        assert f.timestamp_domain == "hardware_clock"
        assert f.timestamp_ms == pytest.approx(f.frame_number * 1000.0 / 30)
    assert [f.frame_number for f in frames] == sorted(f.frame_number for f in frames)


def test_rs_align_puts_a_fronto_parallel_plane_on_the_predicted_colour_pixels():
    # Depth camera 15 cm left of colour (x_color = x_depth - 0.15); plane at z = 1.2 m.
    T = _T((-0.15, 0.0, 0.0))
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM, T)
    plane = np.full((DEPTH_CAM.height, DEPTH_CAM.width), 1200, np.uint16)
    with RealSenseCapture(sw.device, _settings(align_depth=True)) as cap:
        frames = _read_n(cap, sw, 2, make=lambda n: (np.zeros((150, 200, 3), np.uint8), plane))
    f = frames[-1]
    assert f.aligned and f.depth_raw.shape == (COLOR_CAM.height, COLOR_CAM.width)
    np.testing.assert_allclose(f.depth_camera.K, COLOR_CAM.K, atol=1e-4)
    u = np.arange(COLOR_CAM.width)
    u_depth = DEPTH_CAM.fx * ((u - COLOR_CAM.cx) / COLOR_CAM.fx + 0.15 / 1.2) + DEPTH_CAM.cx
    inside = (u_depth > 1) & (u_depth < DEPTH_CAM.width - 2)
    outside = (u_depth < -2) | (u_depth > DEPTH_CAM.width + 1)
    assert inside.sum() > 100 and outside.sum() > 10
    rows = slice(20, 130)
    assert np.all(f.depth_raw[rows][:, inside] == 1200)
    assert np.all(f.depth_raw[rows][:, outside] == 0)


def test_rs_align_and_our_registration_on_a_tilted_plane():
    """Both put the plane on the same colour pixels; they differ in which z they store.

    librealsense's align copies the depth camera's z into the colour pixel; ``register_depth``
    stores z in the colour camera (what back-projection with the colour K needs). With a rotated
    and z-shifted depth camera the two differ by centimetres, so each is checked against its own
    analytic expectation: the ray of each colour pixel intersected with the plane.
    """
    T = _T((0.025, 0.004, -0.003), rot_deg_y=2.0)
    n_d, d_d = np.array([0.25, 0.1, 1.0]) / np.linalg.norm([0.25, 0.1, 1.0]), 1.1
    us, vs = np.meshgrid(np.arange(DEPTH_CAM.width), np.arange(DEPTH_CAM.height))
    rays = np.stack([(us - DEPTH_CAM.cx) / DEPTH_CAM.fx, (vs - DEPTH_CAM.cy) / DEPTH_CAM.fy, np.ones(us.shape)], -1)
    depth_mm = np.rint(1000 * d_d / (rays @ n_d)).astype(np.uint16)
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM, T)
    with RealSenseCapture(sw.device, _settings(align_depth=True)) as cap:
        f = _read_n(cap, sw, 2, make=lambda n: (np.zeros((150, 200, 3), np.uint8), depth_mm))[-1]
    ours = register_depth(depth_mm.astype(np.float32) / 1000, DEPTH_CAM, COLOR_CAM, T)
    # Analytic: plane in the colour frame, ray per colour pixel.
    R, t = T[:3, :3], T[:3, 3]
    n_c = R @ n_d
    d_c = d_d + n_c @ t
    uc, vc = np.meshgrid(np.arange(COLOR_CAM.width), np.arange(COLOR_CAM.height))
    rays_c = np.stack([(uc - COLOR_CAM.cx) / COLOR_CAM.fx, (vc - COLOR_CAM.cy) / COLOR_CAM.fy, np.ones(uc.shape)], -1)
    P_c = rays_c * (d_c / (rays_c @ n_c))[..., None]
    z_color_mm = 1000 * P_c[..., 2]
    z_depth_mm = 1000 * ((P_c - t) @ R)[..., 2]  # the same point in the depth camera
    both = (f.depth_raw > 0) & (ours > 0)
    assert both.mean() > 0.6
    err_rs = np.abs(f.depth_raw[both] - z_depth_mm[both])
    err_ours = np.abs(ours[both] * 1000 - z_color_mm[both])
    assert np.median(err_rs) < 2.0 and np.percentile(err_rs, 99) < 8.0, np.median(err_rs)
    assert np.median(err_ours) < 2.0 and np.percentile(err_ours, 99) < 8.0, np.median(err_ours)
    assert np.median(np.abs(z_color_mm - z_depth_mm)[both]) > 5.0  # the two conventions really differ here


def test_unsupported_profile_names_supported_ones():
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    with pytest.raises(StreamConfigError, match=r"supported .*200x150@30 rgb8"):
        RealSenseCapture(sw.device, _settings(color=StreamRequest(1280, 720, 30)))
    with pytest.raises(StreamConfigError, match=r"160x120@30 z16"):
        RealSenseCapture(sw.device, _settings(depth=StreamRequest(160, 120, 90)))
    with pytest.raises(StreamConfigError, match="non-negative"):
        StreamRequest(-1, 480, 30)
    with pytest.raises(StreamConfigError, match="decimation_magnitude"):
        FilterSettings(decimation_magnitude=1)


def test_default_profile_request_zero_picks_an_available_profile():
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    cap = RealSenseCapture(sw.device, _settings(color=StreamRequest(0, 0, 0), depth=StreamRequest(0, 0, 0)))
    assert (cap.color_camera.width, cap.color_camera.height) == (200, 150)


def test_no_device_error_lists_found_devices():
    found = list_devices()
    with pytest.raises(DeviceNotFoundError, match="found: ") as exc:
        find_device("000000000000")
    if not found:
        assert "none" in str(exc.value)
    else:
        assert found[0].serial in str(exc.value)
    with pytest.raises(DeviceNotFoundError, match="does not exist"):
        open_playback("/nonexistent/recording.bag")


def test_distortion_and_extrinsics_conversions():
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = 640, 480, 600.0, 601.0, 320.5, 240.5
    intr.coeffs = [0.1, -0.05, 0.001, 0.002, 0.01]
    for model in (rs.distortion.brown_conrady, rs.distortion.inverse_brown_conrady,
                  rs.distortion.modified_brown_conrady):
        intr.model = model
        cam = intrinsics_to_camera(intr)
        assert cam.distortion_model == "plumb_bob"
        np.testing.assert_allclose(cam.dist_coeffs, [0.1, -0.05, 0.001, 0.002, 0.01], rtol=1e-6)
        np.testing.assert_allclose(cam.K, [[600, 0, 320.5], [0, 601, 240.5], [0, 0, 1]])
    intr.model = rs.distortion.kannala_brandt4
    cam = intrinsics_to_camera(intr)
    assert cam.distortion_model == "equidistant" and cam.dist_coeffs.size == 4
    assert distortion_model_name(rs.distortion.none) == "plumb_bob"
    with pytest.raises(StreamConfigError, match="no ROS CameraInfo equivalent"):
        distortion_model_name(rs.distortion.ftheta)
    # librealsense stores rotation column-major: a 90 deg yaw must come back as the same matrix.
    ext = rs.extrinsics()
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    ext.rotation = list(R.T.ravel())
    ext.translation = [0.01, 0.02, 0.03]
    T = extrinsics_to_T(ext)
    np.testing.assert_allclose(T[:3, :3], R)
    np.testing.assert_allclose(T[:3, 3], [0.01, 0.02, 0.03])


def test_filters_run_in_the_chain():
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    depth = np.full((DEPTH_CAM.height, DEPTH_CAM.width), 1500, np.uint16)
    depth[50:54, 70:74] = 0  # a small hole
    make = lambda n: (np.zeros((150, 200, 3), np.uint8), depth)  # noqa: E731
    filters = FilterSettings(decimation=True, decimation_magnitude=2)
    with RealSenseCapture(sw.device, _settings(align_depth=False, filters=filters)) as cap:
        f = _read_n(cap, sw, 1, make=make)[0]
    assert f.depth_raw.shape == (60, 80) and f.depth_camera.width == 80
    filters = FilterSettings(spatial=True, temporal=True, hole_filling=True, hole_filling_mode=1)
    with RealSenseCapture(sw.device, _settings(align_depth=False, filters=filters)) as cap:
        f = _read_n(cap, sw, 2, make=make)[-1]
    assert f.depth_raw.shape == depth.shape
    assert np.all(f.depth_raw[50:54, 70:74] > 0), "hole filling must fill the hole"
    assert abs(int(np.median(f.depth_raw)) - 1500) <= 5


def test_stamp_mapper_domains():
    m = StampMapper()
    now = 1_700_000_000_000_000_000
    assert m(now / 1e6, "global_time", now + 1000) == now  # host clock: used as is (exposure time)
    s0 = m(5000.0, "hardware_clock", now)
    s1 = m(5033.3, "hardware_clock", now + 40_000_000)
    assert s0 == now and s1 - s0 == 33_300_000  # device spacing kept, anchored at first frame
    s2 = m(10.0, "hardware_clock", now + 10_000_000_000)  # device clock reset: re-anchor
    assert s2 == now + 10_000_000_000 and m.reanchors == 1
    playback = StampMapper(trust_host_domains=False)
    assert playback(1000.0, "system_time", now) == now  # old recorded times shifted to now


def test_supervisor_retries_until_device_appears_then_reconnects_after_loss(caplog):
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    calls = {"n": 0}

    def open_capture():
        calls["n"] += 1
        if calls["n"] <= 2:  # first two attempts: no device plugged in (the real error type)
            find_device("000000000000")
        return RealSenseCapture(sw.device, _settings(align_depth=False)).start()

    got = []

    def on_frame(frame):
        got.append(frame.frame_number)
        if len(got) == 3:
            raise RuntimeError("consumer failure must not kill the capture thread")

    sup = CameraSupervisor(open_capture, on_frame, retry_period_s=0.1, max_timeouts=2, read_timeout_s=0.2)
    sw.start_stream(_frame_content, rate_hz=30)
    sup.start()
    try:
        deadline = time.monotonic() + 10
        while len(got) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(got) >= 10, sup.stats
        assert sup.stats.open_failures == 2
        absent = [r.getMessage() for r in caplog.records if "000000000000" in r.getMessage()]
        assert len(absent) == 1, "a repeating failure is logged once (then every 30 s)"
        assert "found:" in absent[0] and "retrying every 0.1 s" in absent[0]
        assert sup.stats.callback_errors == 1
        sw.paused.set()  # device stalls / unplugged
        deadline = time.monotonic() + 10
        while sup.stats.opens < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sup.stats.read_timeouts >= 2 and sup.stats.opens >= 2 and sup.stats.reconnects >= 1
        n_before = len(got)
        sw.paused.clear()
        deadline = time.monotonic() + 10
        while len(got) < n_before + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(got) >= n_before + 5, "frames must flow again after the reconnect"
    finally:
        sup.stop()
        sw.stop_stream()
