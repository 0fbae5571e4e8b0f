"""RgbdRenderer against analytic geometry: planes, spheres, boxes, occlusion, projection."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.object_model import load_object_dir
from pose_ros.core.transforms import make_T, R_from_axis_angle, invert_T, transform_points
from pose_ros.synth.renderer import RenderInputError, RgbdRenderer, SceneMesh, TablePlane

REPO = Path(__file__).resolve().parents[1]
# Deliberately off-centre principal point and fx != fy so K is really honoured.
CAM = PinholeCamera(np.array([[600.0, 0, 300.5], [0, 620.0, 250.25], [0, 0, 1]]), 640, 480)
GREY = np.zeros((480, 640, 3), np.uint8)


@pytest.fixture(scope="module")
def renderer() -> RgbdRenderer:
    return RgbdRenderer(CAM)


@pytest.fixture(scope="module")
def demo_models():
    return {m.name: m for m in load_object_dir(REPO / "meshes")}


def _rays() -> np.ndarray:
    """(H,W,3) z=1 camera rays through pixel centres, independent of the renderer's grid."""
    vv, uu = np.mgrid[0:480, 0:640].astype(np.float64)
    return np.stack([(uu - CAM.cx) / CAM.fx, (vv - CAM.cy) / CAM.fy, np.ones_like(uu)], axis=-1)


def test_plane_depth_matches_analytic(renderer):
    # A 3 m square plane tilted 35 deg about a skew axis, 1.2 m in front: depth is z, not ray length.
    R = R_from_axis_angle(np.array([1.0, 0.4, 0.0]), np.deg2rad(35))
    T = make_T(R, [0.05, -0.03, 1.2])
    plane = trimesh.Trimesh([[-1.5, -1.5, 0], [1.5, -1.5, 0], [1.5, 1.5, 0], [-1.5, 1.5, 0]], [[0, 1, 2], [0, 2, 3]])
    res = renderer.render([(SceneMesh("plane", plane), T)], background=GREY)
    n, p0 = R[:, 2], T[:3, 3]
    z_true = (n @ p0) / (_rays() @ n)
    hit = res.depth_m > 0
    assert hit.mean() > 0.99  # plane fills the view
    err = np.abs(res.depth_m[hit] - z_true[hit])
    assert err.max() < 1e-4, f"plane depth error {err.max() * 1000:.3f} mm"
    # Corner pixels (far from the principal point) explicitly.
    for v, u in [(0, 0), (0, 639), (479, 0), (479, 639), (17, 600)]:
        assert abs(res.depth_m[v, u] - z_true[v, u]) < 1e-4
    # Normals are the plane normal, facing the camera.
    nc = res.normals_cam[hit]
    assert np.allclose(nc, -n if n @ p0 > 0 else n, atol=1e-4)


def test_sphere_depth_matches_analytic(renderer):
    r, c = 0.08, np.array([0.07, -0.05, 0.6])
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=r)
    res = renderer.render([(SceneMesh("sphere", sphere), make_T(np.eye(3), c))], background=GREY)
    d = _rays()
    a = (d * d).sum(-1)
    b = -2 * d @ c
    disc = b * b - 4 * a * (c @ c - r * r)
    inside = disc > 0
    t_true = np.where(inside, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0)
    hit = res.depth_m > 0
    # Off the silhouette (where facets cannot matter) hits agree exactly and depth is sub-mm.
    miss_dist = np.sqrt(np.maximum(c @ c - (d @ c) ** 2 / a, 0))  # ray's closest approach to the centre
    core = miss_dist < 0.85 * r
    assert core.sum() > 5000
    assert hit[core].all()
    err = np.abs(res.depth_m[core] - t_true[core])
    assert err.max() < 5e-4 and err.mean() < 1e-4, f"sphere depth max {err.max() * 1000:.3f} mm"
    assert abs(int(hit.sum()) - int(inside.sum())) < 0.01 * inside.sum()
    # Sphere normals point from the centre to the surface point (towards the camera).
    pts = d[core] * res.depth_m[core][:, None]
    n_true = (pts - c) / np.linalg.norm(pts - c, axis=1, keepdims=True)
    assert np.mean(np.einsum("ij,ij->i", res.normals_cam[core], n_true)) > 0.999


def _box_analytic(T: np.ndarray, ext: np.ndarray) -> np.ndarray:
    """Slab-method ray/box intersection: z-depth per pixel, 0 = miss."""
    Ti = invert_T(T)
    d = _rays().reshape(-1, 3) @ Ti[:3, :3].T
    o = Ti[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-ext / 2 - o) / d
        t2 = (ext / 2 - o) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tmax >= tmin) & (tmin > 0)
    return np.where(hit, tmin, 0).reshape(480, 640)


def test_box_depth_and_silhouette_match_analytic(renderer):
    ext = np.array([0.2, 0.12, 0.08])
    T = make_T(R_from_axis_angle(np.array([0.3, 1.0, 0.5]), 0.9), [-0.1, 0.08, 0.75])
    res = renderer.render([(SceneMesh("box", trimesh.creation.box(extents=ext)), T)], background=GREY)
    z_true = _box_analytic(T, ext)
    both = (res.depth_m > 0) & (z_true > 0)
    disagree = (res.depth_m > 0) != (z_true > 0)
    assert (z_true > 0).sum() > 3000
    assert disagree.sum() <= 0.002 * (z_true > 0).sum()
    assert np.abs(res.depth_m[both] - z_true[both]).max() < 1e-4
    assert np.array_equal(res.instance_mask == 0, res.depth_m > 0)


def test_model_points_project_inside_instance_mask(renderer, demo_models):
    box = demo_models["box"]
    T = make_T(R_from_axis_angle(np.array([1.0, -0.5, 0.2]), 2.2), [0.04, 0.02, 0.55])
    res = renderer.render([(box, T)], background=GREY)
    pts = transform_points(T, box.points_m)
    nrm = box.normals @ T[:3, :3].T
    front = np.einsum("ij,ij->i", nrm, pts) < -0.05 * np.linalg.norm(pts, axis=1)  # convex: front == visible
    uv = np.rint(CAM.project(pts[front])).astype(int)
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < 640) & (uv[:, 1] >= 0) & (uv[:, 1] < 480)
    assert ok.all() and front.sum() > 300
    inside = res.instance_mask[uv[:, 1], uv[:, 0]] == 0
    assert inside.mean() >= 0.99, f"only {inside.mean():.3f} of visible model points fall in the mask"
    # And the rendered depth at those pixels is the point's own depth (pixel-centre convention).
    dz = np.abs(res.depth_m[uv[:, 1], uv[:, 0]] - pts[front][:, 2])
    assert np.median(dz) < 1e-3 and np.percentile(dz, 95) < 3e-3


def test_mutual_occlusion(renderer, demo_models):
    bottle, box = demo_models["bottle"], demo_models["box"]
    R_up = R_from_axis_angle(np.array([1.0, 0, 0]), np.pi / 2)  # model +z -> image up (-y)
    T_bottle = make_T(R_up, [0.0, 0.1, 0.8])
    T_box = make_T(R_up, [0.06, 0.05, 0.55])  # nearer, covers the bottle's right half
    both = renderer.render([(bottle, T_bottle), (box, T_box)], background=GREY)
    alone_bottle = renderer.render([(bottle, T_bottle)], background=GREY)
    alone_box = renderer.render([(box, T_box)], background=GREY)
    n_bottle_alone = int((alone_bottle.instance_mask == 0).sum())
    assert both.alone_px[0] == n_bottle_alone
    assert 0.05 < both.visible_fraction[0] < 0.9
    assert both.visible_fraction[0] == pytest.approx((both.instance_mask == 0).sum() / n_bottle_alone)
    assert both.visible_fraction[1] == pytest.approx(1.0)
    overlap = (alone_bottle.depth_m > 0) & (alone_box.depth_m > 0)
    assert overlap.sum() > 500
    assert np.all(both.instance_mask[overlap] == 1)  # the nearer object wins
    assert np.allclose(both.depth_m[overlap], alone_box.depth_m[overlap])
    # Order of the list does not change who is in front.
    swapped = renderer.render([(box, T_box), (bottle, T_bottle)], background=GREY)
    assert np.all(swapped.instance_mask[overlap] == 0)
    assert swapped.visible_fraction[1] == pytest.approx(both.visible_fraction[0])


def test_colours_shading_and_background(renderer, demo_models):
    white = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 2, 1], [0, 3, 2]],
                            vertex_colors=np.tile([255, 255, 255, 255], (4, 1)))
    T = make_T(np.eye(3), [0, 0, 1.0])
    light = np.array([0.0, 0.0, -1.0])  # straight from the camera: cos = 1
    res = renderer.render([(SceneMesh("w", white), T)], background=GREY, light_dir_cam=light, ambient=0.3)
    assert np.all(res.rgb[res.depth_m > 0] == 255)
    tilted_light = np.array([0.0, np.sin(np.deg2rad(60)), -np.cos(np.deg2rad(60))])
    res = renderer.render([(SceneMesh("w", white), T)], background=GREY, light_dir_cam=tilted_light, ambient=0.3)
    expect = 255 * (0.3 + 0.7 * 0.5)
    assert np.abs(res.rgb[res.depth_m > 0].astype(float) - expect).max() <= 1.0
    # Vertex colours survive: the bottle's red cap renders red, background pixels are the background.
    bg = np.full((480, 640, 3), 7, np.uint8)
    bottle = demo_models["bottle"]
    res = renderer.render([(bottle, make_T(R_from_axis_angle(np.array([1.0, 0, 0]), np.pi / 2), [0, 0.1, 0.5]))],
                          background=bg, light_dir_cam=np.array([0, 0, -1.0]))
    assert np.all(res.rgb[res.instance_mask == -1] == 7)
    top = np.argwhere(res.instance_mask == 0)[:, 0].min()
    cap = res.rgb[top + 2][res.instance_mask[top + 2] == 0].astype(int)
    assert (cap[:, 0] > cap[:, 1] + 60).all()


def test_table_plane_analytic_and_occluded_by_objects(renderer, demo_models):
    T_cam_table = make_T(R_from_axis_angle(np.array([1.0, 0, 0]), -2.2), [0.0, 0.05, 0.9])
    table = TablePlane(T_cam_table, (3.0, 3.0))
    mug = demo_models["mug"]
    res = renderer.render([(mug, T_cam_table)], background=GREY, table=table)
    n, p0 = T_cam_table[:3, 2], T_cam_table[:3, 3]
    z_true = (n @ p0) / (_rays() @ n)
    tab = (res.depth_m > 0) & (res.instance_mask == -1)
    assert tab.mean() > 0.5
    assert np.abs(res.depth_m[tab] - z_true[tab]).max() < 1e-4
    obj = res.instance_mask == 0
    assert obj.sum() > 1000 and np.all(res.depth_m[obj] <= z_true[obj] + 1e-6)


def test_bad_input_and_out_of_view(renderer, demo_models):
    mug = demo_models["mug"]
    with pytest.raises(RenderInputError, match="background"):
        renderer.render([(mug, make_T(np.eye(3), [0, 0, 0.5]))], background=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(RenderInputError, match="orthonormal"):
        renderer.render([(mug, np.diag([2.0, 1, 1, 1]))], background=GREY)
    with pytest.raises(RenderInputError, match=r"\.mesh"):
        renderer.render([("not a model", np.eye(4))], background=GREY)
    behind = renderer.render([(mug, make_T(np.eye(3), [0, 0, -0.5])), (mug, make_T(np.eye(3), [5.0, 0, 0.5]))],
                             background=GREY)
    assert np.all(behind.visible_fraction == 0) and np.all(behind.instance_mask == -1)
    assert np.all(behind.depth_m == 0)
    empty = renderer.render([], background=GREY)
    assert empty.visible_fraction.shape == (0,) and np.all(empty.rgb == 0)


def test_lens_distortion_is_honoured(demo_models):
    """With a distorted camera the render agrees with PinholeCamera.project (which distorts)."""
    cam = PinholeCamera(CAM.K, 640, 480, dist_coeffs=np.array([-0.25, 0.08, 0.001, -0.001, 0.0]))
    box = demo_models["box"]
    T = make_T(R_from_axis_angle(np.array([1.0, 0.3, 0.0]), 2.0), [0.17, 0.12, 0.5])  # off-centre: strong distortion
    res = RgbdRenderer(cam).render([(box, T)], background=GREY)
    pts = transform_points(T, box.points_m)
    nrm = box.normals @ T[:3, :3].T
    front = np.einsum("ij,ij->i", nrm, pts) < -0.05 * np.linalg.norm(pts, axis=1)
    uv_d = np.rint(cam.project(pts[front])).astype(int)
    uv_p = np.rint(CAM.project(pts[front])).astype(int)
    assert np.median(np.linalg.norm(uv_d - uv_p, axis=1)) > 5  # distortion really moves the points
    assert (res.instance_mask[uv_d[:, 1], uv_d[:, 0]] == 0).mean() >= 0.99
