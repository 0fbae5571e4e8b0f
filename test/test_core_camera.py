"""PinholeCamera: projection round trips, OpenCV distortion agreement, validation errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pose_ros.core.camera import CameraModelError, PinholeCamera

K_LMO = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def _points(rng: np.random.Generator, n: int = 500) -> np.ndarray:
    z = rng.uniform(0.3, 2.0, n)
    x = rng.uniform(-0.4, 0.4, n) * z
    y = rng.uniform(-0.3, 0.3, n) * z
    return np.stack([x, y, z], axis=1)


def test_project_backproject_round_trip_no_distortion():
    cam = PinholeCamera(K_LMO, 640, 480)
    pts = _points(np.random.default_rng(0))
    uv = cam.project(pts)
    back = cam.backproject(uv, pts[:, 2])
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # Principal point projects from the optical axis.
    np.testing.assert_allclose(cam.project(np.array([[0.0, 0.0, 1.0]]))[0], [cam.cx, cam.cy])


def test_points_behind_camera_are_nan():
    cam = PinholeCamera(K_LMO, 640, 480)
    uv = cam.project(np.array([[0.1, 0.0, -1.0], [0.0, 0.0, 0.0], [0.1, 0.1, 1.0]]))
    assert np.isnan(uv[:2]).all() and np.isfinite(uv[2]).all()


@pytest.mark.parametrize("dist", [
    [0.12, -0.25, 0.001, -0.0015, 0.08],
    [-0.3, 0.1, 0.0005, 0.0002, -0.02, 0.01, 0.002, -0.001],
])
def test_distortion_matches_opencv_and_round_trips(dist):
    model = "plumb_bob" if len(dist) == 5 else "rational_polynomial"
    cam = PinholeCamera(K_LMO, 640, 480, np.array(dist), model)
    assert cam.has_distortion
    pts = _points(np.random.default_rng(1))
    uv = cam.project(pts)
    ref, _ = cv2.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K_LMO, np.array(dist))
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-9)
    # Distortion actually moved pixels (otherwise the test would not test anything).
    assert np.abs(uv - PinholeCamera(K_LMO, 640, 480).project(pts)).max() > 1.0
    back = cam.backproject(uv, pts[:, 2])
    np.testing.assert_allclose(back, pts, atol=1e-6)


def test_equidistant_round_trip():
    cam = PinholeCamera(K_LMO, 640, 480, np.array([0.05, -0.01, 0.002, -0.0005]), "equidistant")
    pts = _points(np.random.default_rng(2))
    back = cam.backproject(cam.project(pts), pts[:, 2])
    np.testing.assert_allclose(back, pts, atol=1e-5)


def test_depth_to_points_skips_invalid_and_matches_backproject():
    cam = PinholeCamera(np.array([[60.0, 0, 31.5], [0, 61.0, 23.5], [0, 0, 1]]), 64, 48)
    rng = np.random.default_rng(3)
    depth_m = rng.uniform(0.5, 1.5, (48, 64)).astype(np.float32)
    depth_m[0, :] = 0.0
    depth_m[5, 5] = np.nan
    depth_m[6, 7] = np.inf
    depth_m[7, 8] = -1.0
    pts, uv = cam.depth_to_points(depth_m)
    assert pts.shape[0] == 48 * 64 - 64 - 3
    assert np.isfinite(pts).all() and (pts[:, 2] > 0).all()
    assert not ((uv[:, 1] == 0).any() or ((uv[:, 0] == 5) & (uv[:, 1] == 5)).any())
    np.testing.assert_allclose(pts, cam.backproject(uv.astype(float), depth_m[uv[:, 1], uv[:, 0]]), atol=1e-6)
    np.testing.assert_allclose(cam.project(pts), uv, atol=1e-4)
    mask = np.zeros((48, 64), bool)
    mask[10:20, 10:30] = True
    pts_m, uv_m = cam.depth_to_points(depth_m, mask=mask, stride=2)
    assert pts_m.shape[0] == 5 * 10
    assert mask[uv_m[:, 1], uv_m[:, 0]].all()
    with pytest.raises(ValueError, match="does not match camera size"):
        cam.depth_to_points(np.zeros((10, 10)))


def test_scaled_cropped_consistent_with_pixels():
    cam = PinholeCamera(K_LMO, 640, 480)
    pts = _points(np.random.default_rng(4), 50)
    uv = cam.project(pts)
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    np.testing.assert_allclose(half.project(pts), (uv + 0.5) * 0.5 - 0.5, atol=1e-9)
    crop = cam.cropped(100, 50, 200, 150)
    np.testing.assert_allclose(crop.project(pts), uv - [100, 50], atol=1e-9)
    # An object crop far from the principal point is legal (no sanity error on derived cameras).
    corner = cam.cropped(600, 440, 32, 32)
    np.testing.assert_allclose(corner.project(pts), uv - [600, 440], atol=1e-9)
    same = cam.with_size(320, 240)
    np.testing.assert_allclose(same.K, half.K)


def test_from_fov():
    cam = PinholeCamera.from_fov(640, 480, 90.0)
    np.testing.assert_allclose(cam.fx, 320.0)
    # A point at 45 degrees lands on the right image border.
    assert abs(cam.project(np.array([[1.0, 0.0, 1.0]]))[0, 0] - (cam.cx + 320.0)) < 1e-9


@pytest.mark.parametrize("K,w,h,match", [
    (np.full((3, 3), np.nan), 640, 480, "non-finite"),
    ([[0, 0, 320], [0, 500, 240], [0, 0, 1]], 640, 480, "focal lengths must be > 0"),
    ([[500, 0, 320], [0, -5, 240], [0, 0, 1]], 640, 480, "focal lengths must be > 0"),
    (np.eye(2), 640, 480, "3x3"),
    (K_LMO, 0, 480, "image size"),
    (K_LMO, 640, -1, "image size"),
    ([[500, 0, 3200], [0, 500, 240], [0, 0, 1]], 640, 480, "principal point"),
])
def test_invalid_intrinsics_raise_clear_errors(K, w, h, match):
    with pytest.raises(CameraModelError, match=match):
        PinholeCamera(np.asarray(K, dtype=float), w, h)


def test_invalid_distortion():
    with pytest.raises(ValueError, match="dist_coeffs"):
        PinholeCamera(K_LMO, 640, 480, np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="distortion_model"):
        PinholeCamera(K_LMO, 640, 480, np.zeros(5), "kannala")
    # ROS camera_info with an empty D is valid: no distortion.
    assert not PinholeCamera(K_LMO, 640, 480, np.array([])).has_distortion


# --------------------------------------------------------------------------- core.depth utilities
from pose_ros.core import depth as dp  # noqa: E402


def test_depth_validity_and_uint16_round_trip():
    depth_m = np.array([[0.0, np.nan, 1.2345], [np.inf, -1.0, 70.0]], np.float32)
    np.testing.assert_array_equal(dp.valid_depth_mask(depth_m), [[False, False, True], [False, False, True]])
    np.testing.assert_array_equal(dp.valid_depth_mask(depth_m, max_m=10.0), [[False, False, True], [False, False, False]])
    raw, dropped = dp.depth_raw_from_m(depth_m, 0.001)
    assert raw.dtype == np.uint16 and dropped == 1
    assert raw[0, 2] in (1234, 1235) and raw[1, 2] == 0 and raw[0, 0] == 0
    np.testing.assert_allclose(dp.depth_m_from_raw(raw, 0.001)[0, 2], 1.2345, atol=5e-4)
    assert dp.depth_m_from_raw(raw)[1, 2] == 0.0


def test_depth_sampling_on_plane_and_edges():
    # A tilted plane: z = 1 + 0.001 u; bilinear sampling reproduces it exactly at sub-pixels.
    vv, uu = np.mgrid[0:40, 0:50]
    depth_m = (1.0 + 0.001 * uu + 0.0005 * vv).astype(np.float64)
    uv = np.array([[10.25, 5.75], [0.0, 0.0], [49.0, 39.0], [60.0, 5.0], [np.nan, 1.0]])
    z = dp.sample_depth_bilinear(depth_m, uv)
    np.testing.assert_allclose(z[:3], 1.0 + 0.001 * uv[:3, 0] + 0.0005 * uv[:3, 1], atol=1e-12)
    assert np.isnan(z[3:]).all()
    # Invalid neighbour gets zero weight (no pull towards 0).
    holes = depth_m.copy()
    holes[5, 10] = 0.0
    assert abs(dp.sample_depth_bilinear(holes, np.array([[10.5, 5.5]]))[0] - 1.0135) < 0.002
    # Occlusion edge: returns a real surface, never a value in between.
    step = np.where(uu < 20, 0.5, 2.0)
    z_edge = dp.sample_depth_bilinear(step, np.array([[19.5, 10.0]]))[0]
    assert z_edge in (0.5, 2.0)
    np.testing.assert_allclose(dp.sample_depth_nearest(depth_m, uv[:1]), depth_m[6, 10])


def test_median_depth_in_window_ignores_holes():
    depth_m = np.full((30, 30), 0.8)
    depth_m[10:13, 10:13] = 0.0          # hole under the keypoint
    depth_m[14, 14] = 5.0                 # outlier
    med = dp.median_depth_in_window(depth_m, np.array([[11.0, 11.0], [0.0, 0.0], [100.0, 3.0]]), radius=3)
    np.testing.assert_allclose(med[:2], 0.8)
    assert np.isnan(med[2])
    assert np.isnan(dp.median_depth_in_window(depth_m, np.array([[11.0, 11.0]]), radius=1)[0])


def test_depth_to_points_with_distortion_matches_backproject():
    cam = PinholeCamera(np.array([[60.0, 0, 31.5], [0, 61.0, 23.5], [0, 0, 1]]), 64, 48,
                        np.array([0.1, -0.05, 0.001, 0.0005, 0.01]))
    depth_m = np.random.default_rng(7).uniform(0.5, 1.5, (48, 64))
    pts, uv = cam.depth_to_points(depth_m, stride=3)
    np.testing.assert_allclose(pts, cam.backproject(uv.astype(float), depth_m[uv[:, 1], uv[:, 0]]), atol=1e-12)
    np.testing.assert_allclose(cam.project(pts), uv, atol=1e-6)
