"""Depth-to-colour registration: analytic scenes with known answers, then real RealSense frames."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import shared_data_path
from pose_ros.core.camera import PinholeCamera
from pose_ros.sensors.registration import RegistrationError, depth_units_to_m, register_depth


def _cam(fx: float, fy: float, cx: float, cy: float, w: int, h: int, **kw) -> PinholeCamera:
    return PinholeCamera(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), w, h, **kw)


def _T(t=(0.0, 0.0, 0.0), R=None) -> np.ndarray:
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = R
    T[:3, 3] = t
    return T


DEPTH_CAM = _cam(200.0, 200.0, 79.5, 59.5, 160, 120)
COLOR_CAM = _cam(260.0, 262.0, 101.0, 77.0, 200, 150)


def test_fronto_parallel_plane_lands_on_known_pixels():
    # Plane z = 1 m in the depth camera; colour camera 5 cm to the right of it (x_color = x_depth - 0.05).
    depth_m = np.full((DEPTH_CAM.height, DEPTH_CAM.width), 1.0, np.float32)
    T_color_depth = _T((-0.05, 0.0, 0.0))
    reg = register_depth(depth_m, DEPTH_CAM, COLOR_CAM, T_color_depth)
    assert reg.shape == (COLOR_CAM.height, COLOR_CAM.width) and reg.dtype == np.float32
    # Colour pixel u sees x_color = (u - cx)/fx at z=1, i.e. depth-camera x = x_color + 0.05.
    u = np.arange(COLOR_CAM.width)
    u_depth = DEPTH_CAM.fx * ((u - COLOR_CAM.cx) / COLOR_CAM.fx + 0.05) + DEPTH_CAM.cx
    v = np.arange(COLOR_CAM.height)
    v_depth = DEPTH_CAM.fy * (v - COLOR_CAM.cy) / COLOR_CAM.fy + DEPTH_CAM.cy
    inside_u = (u_depth > 0.5) & (u_depth < DEPTH_CAM.width - 1.5)
    outside_u = (u_depth < -1.5) | (u_depth > DEPTH_CAM.width + 0.5)
    inside_v = (v_depth > 0.5) & (v_depth < DEPTH_CAM.height - 1.5)
    assert outside_u.any() and inside_u.any()
    np.testing.assert_allclose(reg[np.ix_(inside_v, inside_u)], 1.0, atol=1e-6)
    assert np.all(reg[:, outside_u] == 0)


def test_tilted_plane_matches_analytic_depth_with_rotation():
    # Plane n.x = d in the colour frame; depth camera rotated 3 deg about y and shifted.
    a = np.deg2rad(3.0)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    T_color_depth = _T((0.03, -0.01, 0.005), R)
    n_c = np.array([0.2, -0.1, 1.0])
    n_c /= np.linalg.norm(n_c)
    d_c = 0.9
    # Depth image: intersect each depth-camera ray with the plane expressed in the depth frame.
    n_d = R.T @ n_c
    d_d = d_c - n_c @ T_color_depth[:3, 3]
    us, vs = np.meshgrid(np.arange(DEPTH_CAM.width), np.arange(DEPTH_CAM.height))
    rays = np.stack([(us - DEPTH_CAM.cx) / DEPTH_CAM.fx, (vs - DEPTH_CAM.cy) / DEPTH_CAM.fy, np.ones(us.shape)], -1)
    depth_m = (d_d / (rays @ n_d)).astype(np.float32)
    reg = register_depth(depth_m, DEPTH_CAM, COLOR_CAM, T_color_depth)
    uc, vc = np.meshgrid(np.arange(COLOR_CAM.width), np.arange(COLOR_CAM.height))
    rays_c = np.stack([(uc - COLOR_CAM.cx) / COLOR_CAM.fx, (vc - COLOR_CAM.cy) / COLOR_CAM.fy, np.ones(uc.shape)], -1)
    expected = d_c / (rays_c @ n_c)
    valid = reg > 0
    assert valid.mean() > 0.5
    err = np.abs(reg[valid] - expected[valid])
    assert np.median(err) < 1e-3 and err.max() < 5e-3


def test_nearest_surface_wins_and_occlusion_shadow_stays_a_hole():
    depth_m = np.full((DEPTH_CAM.height, DEPTH_CAM.width), 2.0, np.float32)
    depth_m[40:80, 60:100] = 1.0          # a 1 m square in front of a 2 m wall
    T_color_depth = _T((-0.10, 0.0, 0.0))  # 10 cm baseline: big parallax between 1 m and 2 m
    reg = register_depth(depth_m, DEPTH_CAM, COLOR_CAM, T_color_depth)
    # Where the square lands in colour: project its interior depth pixels.
    vs, us = np.mgrid[42:78, 62:98]
    pts = DEPTH_CAM.backproject(np.stack([us.ravel(), vs.ravel()], 1).astype(float), np.ones(us.size))
    uv = np.rint(COLOR_CAM.project(pts + T_color_depth[:3, 3])).astype(int)
    assert np.all(reg[uv[:, 1], uv[:, 0]] == pytest.approx(1.0))
    # Colour sits 10 cm to the right: the square shifts left more than the wall, so the wall just
    # right of the square is seen by colour but hidden from depth: a hole, never 2 m or 1 m.
    row = int(np.median(uv[:, 1]))
    corner = DEPTH_CAM.backproject(np.array([[99.5, 60.0]]), np.array([1.0])) + T_color_depth[:3, 3]
    right = int(np.ceil(COLOR_CAM.project(corner)[0, 0]))  # the square's right edge in colour
    shadow_width = COLOR_CAM.fx * 0.10 * (1 / 1.0 - 1 / 2.0)  # parallax difference in pixels
    assert shadow_width > 8
    shadow = reg[row, right + 1:int(right + shadow_width - 1)]
    assert shadow.size > 4 and np.all(shadow == 0), shadow
    assert reg[row, int(right + shadow_width + 3)] == pytest.approx(2.0)


def test_upsampling_leaves_no_pinholes_and_source_holes_stay_holes():
    lo = _cam(50.0, 50.0, 39.5, 29.5, 80, 60)
    hi = lo.scaled(4.0)
    depth_m = np.full((60, 80), 1.5, np.float32)
    depth_m[20:30, 30:40] = 0.0       # a hole
    depth_m[5, 5] = np.nan            # NaN is invalid too
    reg = register_depth(depth_m, lo, hi, np.eye(4))
    reg_centre_only = register_depth(depth_m, lo, hi, np.eye(4), splat=False)
    interior = np.ones_like(reg, bool)
    interior[:2], interior[-2:], interior[:, :2], interior[:, -2:] = False, False, False, False
    hole = np.zeros_like(reg, bool)
    hole[80:120, 120:160] = True
    nan_px = np.zeros_like(reg, bool)
    nan_px[20:24, 20:24] = True
    keep = interior & ~hole & ~nan_px
    assert np.all(reg[keep] == pytest.approx(1.5))
    assert np.all(reg[82:118, 122:158] == 0) and np.all(reg[21:23, 21:23] == 0)
    assert (reg_centre_only[keep] == 0).mean() > 0.8  # centre-only warping would be mostly pinholes


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth_m=np.ones((10, 10), np.float32)), "does not match depth_camera"),
    (dict(depth_m=np.full((120, 160), 900, np.uint16)), "raw sensor units"),
    (dict(T_color_depth=np.eye(3)), "4x4"),
    (dict(T_color_depth=np.diag([1.0, 2.0, 1.0, 1.0])), "orthonormal"),
    (dict(T_color_depth=_T((15.0, 0.0, 0.0))), "millimetres"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = dict(depth_m=np.ones((120, 160), np.float32), depth_camera=DEPTH_CAM, color_camera=COLOR_CAM,
                T_color_depth=np.eye(4))
    args.update(kwargs)
    with pytest.raises(RegistrationError, match=match):
        register_depth(**args)
    with pytest.raises(RegistrationError, match="depth_scale_m"):
        depth_units_to_m(np.ones((2, 2), np.uint16), 0.0)


# ----------------------------------------------------------------------------- real RealSense frames
def _opencv_yaml(path) -> dict:
    text = path.read_text().replace("%YAML:1.2", "").replace("!!opencv-matrix", "")
    return yaml.safe_load(text)


def _matrix(node: dict) -> np.ndarray:
    return np.asarray(node["data"], float).reshape(node["rows"], node["cols"])


def _m3t_camera(path) -> tuple[PinholeCamera, np.ndarray]:
    y = _opencv_yaml(path)
    i = y["intrinsics"]
    return _cam(i["f_u"], i["f_v"], i["pp_x"], i["pp_y"], i["width"], i["height"]), _matrix(y["camera2world_pose"])


@pytest.fixture(scope="module")
def m3t():
    import cv2

    root = shared_data_path("realsense_m3t")
    seq = root / "_sequence"
    color_cam, T_world_color = _m3t_camera(seq / "color_camera.yaml")
    depth_cam, T_world_depth = _m3t_camera(seq / "depth_camera.yaml")
    depth_scale = float(_opencv_yaml(seq / "depth_camera.yaml")["depth_scale"])
    rows = (root / "refiner_test" / "triangle_pose.txt").read_text().strip().splitlines()[2:]
    T_world_body = np.array([[float(x) for x in r.replace(",", " ").split()] for r in rows])
    T_body_geom = _matrix(_opencv_yaml(root / "_body" / "triangle.yaml")["geometry2body_pose"])
    return dict(
        color_cam=color_cam, depth_cam=depth_cam, T_color_depth=np.linalg.inv(T_world_color) @ T_world_depth,
        bgr=cv2.imread(str(seq / "color_camera_image_200.png")),
        depth_m=depth_units_to_m(cv2.imread(str(seq / "depth_camera_image_200.png"), cv2.IMREAD_UNCHANGED), depth_scale),
        T_color_mesh=np.linalg.inv(T_world_color) @ T_world_body @ T_body_geom,
        mesh_path=root / "_body" / "triangle.obj")


def _render_depth(mesh_path, T_cam_mesh: np.ndarray, cam: PinholeCamera) -> np.ndarray:
    import open3d as o3d
    import trimesh

    mesh = trimesh.load(str(mesh_path), force="mesh")
    v = mesh.vertices @ T_cam_mesh[:3, :3].T + T_cam_mesh[:3, 3]
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    us, vs = np.meshgrid(np.arange(cam.width), np.arange(cam.height))
    dirs = np.stack([(us - cam.cx) / cam.fx, (vs - cam.cy) / cam.fy, np.ones(us.shape)], -1)  # z = 1: t is depth
    rays = np.concatenate([np.zeros_like(dirs), dirs], -1).astype(np.float32)
    t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    return np.where(np.isfinite(t), t, 0.0).astype(np.float32)


def test_real_realsense_triangle_depth_lands_on_its_colour_pixels(m3t):
    """The green triangle (visible part = reference silhouette AND green pixels) gets its own depth.

    The tracker pose is not independent ground truth but agrees with the depth to millimetres,
    while a bottle 23 cm nearer occludes part of the triangle and the table lies behind it: a
    wrong extrinsic paints bottle or table depth onto the triangle's colour pixels.
    """
    import cv2

    rendered = _render_depth(m3t["mesh_path"], m3t["T_color_mesh"], m3t["color_cam"])
    hsv = cv2.cvtColor(m3t["bgr"], cv2.COLOR_BGR2HSV)
    green = (hsv[..., 0] > 35) & (hsv[..., 0] < 85) & (hsv[..., 1] > 80) & (hsv[..., 2] > 60)
    visible = (rendered > 0) & green
    assert visible.sum() > 800, "triangle silhouette and green pixels should overlap (pose/intrinsics parsing)"

    def score(T):
        reg = register_depth(m3t["depth_m"], m3t["depth_cam"], m3t["color_cam"], T)
        ok = visible & (reg > 0)
        diff = reg[ok] - rendered[ok]
        return ok.sum(), np.median(np.abs(diff)), (np.abs(diff) < 0.01).mean(), (diff < -0.1).mean()

    n, mad, within, bottle = score(m3t["T_color_depth"])
    assert n >= 50, f"too few registered depth pixels on the triangle ({n})"
    # A few pixels at the bottle/triangle boundary carry bottle depth (edge blur of the stereo depth).
    assert mad < 0.008 and within > 0.6 and bottle < 0.15, (n, mad, within, bottle)
    # Negative controls: treating the cameras as one (identity) or inverting the extrinsic.
    for wrong in (np.eye(4), np.linalg.inv(m3t["T_color_depth"])):
        n_w, mad_w, within_w, _ = score(wrong)
        assert mad_w > 0.05 and within_w < 0.2, (n_w, mad_w, within_w)


def test_real_realsense_bottle_depth_edge_matches_colour_edge(m3t):
    """Near-depth pixels coincide best with the orange bottle's colour mask at the true extrinsic."""
    import cv2

    hsv = cv2.cvtColor(m3t["bgr"], cv2.COLOR_BGR2HSV)
    orange = (hsv[..., 0] >= 8) & (hsv[..., 0] <= 22) & (hsv[..., 1] > 150) & (hsv[..., 2] > 120)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(orange.astype(np.uint8))
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    bottle = labels == k
    x, y, w, h = stats[k, :4]
    roi = np.zeros_like(bottle)
    roi[max(0, y - 20):y + h + 20, max(0, x - 40):x + w + 40] = True
    ious = {}
    for dx in (-0.015, -0.005, 0.0, 0.005, 0.015):
        T = m3t["T_color_depth"].copy()
        T[0, 3] += dx
        reg = register_depth(m3t["depth_m"], m3t["depth_cam"], m3t["color_cam"], T)
        valid = roi & (reg > 0)
        near = valid & (reg < 0.5)
        ious[dx] = (near & bottle).sum() / ((near | bottle) & valid).sum()
    assert max(ious, key=ious.get) == 0.0, ious
    assert ious[0.0] > ious[0.015] + 0.1 and ious[0.0] > ious[-0.015] + 0.05, ious
