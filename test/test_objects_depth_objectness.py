"""Depth objectness (support plane + large planes) on rendered tabletops and real YCB-Video frames,
and the estimator's depth-driven class map (real renders, real model file, no mocks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.object_model import load_object_dir
from pose_ros.core.transforms import R_from_axis_angle, invert_T, look_at, make_T
from pose_ros.objects.depth_objectness import (DepthObjectness, ObjectnessConfig, analyse_depth_objectness,
                                               fit_plane_ransac)
from pose_ros.synth.renderer import RgbdRenderer, SceneMesh, TablePlane

from conftest import shared_data_path

REPO = Path(__file__).resolve().parents[1]
CAM = PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)
BLACK = np.zeros((480, 640, 3), np.uint8)


@pytest.fixture(scope="module")
def demo_models():
    return {m.name: m for m in load_object_dir(REPO / "meshes")}


@pytest.fixture(scope="module")
def renderer():
    return RgbdRenderer(CAM)


@pytest.fixture(scope="module")
def tabletop(demo_models, renderer):
    """Camera 50 cm above and 45 cm behind a table (world z up), mug, box and bottle standing on it,
    sensor depth noise. Returns (render, depth, T_cam_world, [(model, T_cam_obj)])."""
    from pose_ros.synth.noise import DepthNoiseModel

    T_cam_world = invert_T(look_at(np.array([0.0, -0.45, 0.5]), np.zeros(3), np.array([0.0, 0.0, 1.0])))

    def on_table(m, x, y, yaw):
        lift = -float(m.mesh.bounds[0, 2])          # bottom face on z = 0
        return T_cam_world @ make_T(R_from_axis_angle(np.array([0.0, 0.0, 1.0]), yaw), [x, y, lift])

    objs = [(demo_models["mug"], on_table(demo_models["mug"], -0.12, 0.0, 0.3)),
            (demo_models["box"], on_table(demo_models["box"], 0.10, 0.05, 1.0)),
            (demo_models["bottle"], on_table(demo_models["bottle"], 0.0, 0.15, 0.0))]
    rng = np.random.default_rng(7)
    res = renderer.render(objs, background=BLACK, table=TablePlane(T_cam_world, (2.0, 2.0)), rng=rng)
    depth = DepthNoiseModel().apply(res.depth_m, res.normals_cam, rng=rng, K=CAM.K)
    return res, depth, T_cam_world, objs


def test_support_plane_and_objectness_on_a_rendered_tabletop(tabletop):
    res, depth, T_cam_world, objs = tabletop
    d = analyse_depth_objectness(depth, CAM)
    assert d.has_support
    sup = d.planes[0]
    table_n = T_cam_world[:3, 2]                           # world up (table normal) in the camera frame
    table_offset = -float(table_n @ T_cam_world[:3, 3])    # camera's height above the table: 0.5 m
    # The normal points to the camera's side; the camera looks down on the table from above, so
    # that is the table's up normal (camera on the positive side: offset > 0).
    assert np.degrees(np.arccos(np.clip(sup.normal @ table_n, -1, 1))) < 2.0
    assert np.isclose(np.linalg.norm(sup.normal), 1.0)
    assert sup.offset > 0 and sup.offset == pytest.approx(table_offset, abs=0.01)
    assert sup.signed_distance(np.zeros((1, 3)))[0] > 0    # the camera itself is above the table
    assert sup.inlier_fraction > 0.5
    assert d.objectness.shape == depth.shape and d.objectness.dtype == bool
    assert not np.any(d.objectness & ~d.valid)             # objectness only where depth is valid
    table = (res.instance_mask == -1) & d.valid
    assert d.objectness[table].mean() < 0.05
    assert d.on_plane[table].mean() > 0.8
    for k, (m, _) in enumerate(objs):
        px = (res.instance_mask == k) & d.valid
        assert px.sum() > 2000
        assert d.objectness[px].mean() > 0.8, f"{m.name}: objectness {d.objectness[px].mean():.2f}"


def test_instance_gate_keeps_objects_and_drops_flat_and_oversized_regions(tabletop):
    res, depth, _, objs = tabletop
    d = analyse_depth_objectness(depth, CAM)
    for k, (m, _) in enumerate(objs):
        v = d.instance(res.instance_mask == k, depth, CAM, m.diameter_m)
        assert v.keep and v.reason == "", f"{m.name}: {v}"
        assert v.protruding_fraction > 0.8
        assert 0.3 * m.diameter_m < v.extent_m < 1.6 * m.diameter_m
    # A table-only patch of the mug's size (print on the table cloth, a poster): flat.
    mug_px = int((res.instance_mask == 0).sum())
    side = int(np.sqrt(mug_px))
    patch = np.zeros(depth.shape, bool)
    v0 = 480 - side - 5
    patch[v0:v0 + side, 20:20 + side] = True
    assert (res.instance_mask[patch] == -1).all(), "the patch must lie on the table only"
    assert (depth[patch] > 0).mean() > 0.9
    v = d.instance(patch, depth, CAM, objs[0][0].diameter_m)
    assert not v.keep and v.reason.startswith("flat")
    assert v.protruding_fraction < 0.05
    # A mask much larger than the object: the object's pixels standing out fine, but the diameter
    # 10x smaller than the region (a wall or shelf the network called a small object).
    box = res.instance_mask == 1
    v = d.instance(box, depth, CAM, objs[1][0].diameter_m / 10)
    assert not v.keep and "larger than the object" in v.reason
    assert v.protruding_fraction > 0.8
    # One mask spanning all three objects, judged as a mug: also too large.
    v = d.instance(res.instance_mask >= 0, depth, CAM, objs[0][0].diameter_m)
    assert not v.keep and "larger than the object" in v.reason


def test_fit_plane_ransac_recovers_a_noisy_plane_with_outliers():
    rng = np.random.default_rng(3)
    n_true = np.array([0.2, -0.8, -0.5])
    n_true /= np.linalg.norm(n_true)
    off_true = 0.7                                          # n.X + off = 0 on the plane; camera side > 0
    # In-plane basis and 1500 plane points in front of the camera; noise along the normal grows
    # with z^2 like a depth sensor's (1.5 mm at 1 m, a quarter of the inlier band).
    a = np.cross(n_true, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(n_true, a)
    c0 = -off_true * n_true
    st = rng.uniform(-0.3, 0.3, (1500, 2))
    plane_pts = c0 + st[:, :1] * a + st[:, 1:] * b
    plane_pts += rng.normal(0, 0.0015, (1500, 1)) * np.maximum(plane_pts[:, 2:], 0.3) ** 2 * n_true
    outliers = rng.uniform([-0.5, -0.5, 0.3], [0.5, 0.5, 1.2], (600, 3))
    pts = np.vstack([plane_pts, outliers])
    assert np.all(pts[:, 2] > 0.05)
    plane, inl = fit_plane_ransac(pts, 0.006, 150, np.random.default_rng(0))
    assert plane is not None
    ang = np.degrees(np.arccos(np.clip(plane.normal @ n_true, -1, 1)))
    assert ang < 2.0, f"normal off by {ang:.2f} deg"
    assert plane.offset > 0 and plane.offset == pytest.approx(off_true, abs=0.003)
    assert inl[:1500].mean() > 0.95                        # the plane points are inliers...
    assert inl[1500:].mean() < 0.1                         # ...the outliers mostly not
    assert plane.inlier_fraction == pytest.approx(inl.mean())
    # Only candidates may be inliers; too few candidates: no plane.
    cand = np.zeros(len(pts), bool)
    cand[:40] = True
    plane2, inl2 = fit_plane_ransac(pts, 0.006, 150, np.random.default_rng(0), candidates=cand)
    assert plane2 is None and not inl2.any()
    cand[:] = True
    cand[:1500:2] = False
    plane3, inl3 = fit_plane_ransac(pts, 0.006, 150, np.random.default_rng(0), candidates=cand)
    assert plane3 is not None and not inl3[~cand].any()


def test_no_valid_depth_gives_no_support_and_no_verdict():
    depth = np.zeros((480, 640), np.float32)
    depth[:5, :5] = 0.8                                       # a speck: fewer points than a fit needs
    nan_depth = np.full((480, 640), np.nan, np.float32)
    mask = np.zeros((480, 640), bool)
    mask[200:280, 300:380] = True
    for dep in (depth, nan_depth):
        d = analyse_depth_objectness(dep, CAM)
        assert isinstance(d, DepthObjectness) and not d.has_support and d.planes == []
        v = d.instance(mask, dep, CAM, 0.1)
        assert v.keep and v.reason == ""
        assert np.isnan(v.protruding_fraction) and np.isnan(v.extent_m)


@pytest.mark.parametrize("scene", ["ball_and_mug", "lying_bottle"])
def test_scene_without_large_planes_keeps_instances(demo_models, renderer, scene):
    # Objects held in the air, nothing behind them in depth range: no support plane. (A plane
    # slicing the fronts of the curved objects holds >12% of the points here; it has most points
    # behind it, so it is no support, and the objects are not "flat" on it.)
    up = R_from_axis_angle(np.array([1.0, 0, 0]), np.pi / 2)      # model z up in the image, side view
    if scene == "ball_and_mug":
        ball = SceneMesh("ball", trimesh.creation.icosphere(subdivisions=4, radius=0.07))
        objs = [(ball, make_T(np.eye(3), [-0.08, 0.0, 0.6]), 0.14),
                (demo_models["mug"], make_T(up, [0.1, 0.1, 0.55]), demo_models["mug"].diameter_m)]
    else:
        lying = R_from_axis_angle(np.array([0.0, 1.0, 0]), np.pi / 2)
        objs = [(demo_models["bottle"], make_T(lying, [-0.1, 0.0, 0.55]), demo_models["bottle"].diameter_m)]
    res = renderer.render([(m, T) for m, T, _ in objs], background=BLACK)
    d = analyse_depth_objectness(res.depth_m, CAM)
    assert d.valid.sum() > 5000
    assert not d.has_support, f"spurious support plane {d.planes[0]}"
    assert not d.objectness.any() and not d.on_plane.any()
    for k, (_, _, diameter) in enumerate(objs):
        v = d.instance(res.instance_mask == k, res.depth_m, CAM, diameter)
        assert v.keep and v.reason == "", v
        assert np.isnan(v.protruding_fraction) and np.isfinite(v.extent_m)
    # Without a support plane only the extent test speaks.
    v = d.instance(res.instance_mask >= 0, res.depth_m, CAM, 0.02)
    assert not v.keep and "larger than the object" in v.reason


def test_real_ycbv_frames_keep_every_object_and_little_background():
    from pose_ros.core.object_model import load_bop_models
    from pose_ros.eval.bop_io import iter_dataset_frames

    root = shared_data_path("ycbv_real")
    frames = [f for i, f in enumerate(iter_dataset_frames(root / "data", layout="ycbv-raw")) if i % 5 == 0]
    assert len(frames) >= 10
    ids = sorted({g.obj_id for f in frames for g in f.gt})
    diam = {m.obj_id: m.diameter_m for m in load_bop_models(root / "models_ycbv", obj_ids=ids, num_points=200)}
    kept, total, background, dropped = 0, 0, [], []
    for f in frames:
        d = analyse_depth_objectness(f.depth_m, f.camera)
        assert d.has_support, f"scene {f.scene_id} im {f.im_id}: no support plane found"
        objects = np.zeros(f.depth_m.shape, bool)
        for g in f.gt:
            assert g.mask_visib is not None
            objects |= g.mask_visib
            if g.mask_visib.sum() < 300:
                continue
            v = d.instance(g.mask_visib, f.depth_m, f.camera, diam[g.obj_id])
            total += 1
            kept += v.keep
            if not v.keep:
                dropped.append((f.scene_id, f.im_id, g.obj_id, v.reason))
        bg = d.valid & ~objects
        background.append(float(d.objectness[bg].mean()))
    assert total >= 40
    assert kept == total, f"gate dropped real objects: {dropped}"
    assert np.mean(background) < 0.15, f"background objectness {np.mean(background):.3f}"


# --------------------------------------------------------------------------- estimator class map
@pytest.fixture(scope="module")
def small_estimator(tmp_path_factory, demo_models):
    """A PoseEstimator over an untrained tiny network for the three demo objects (the class map
    only needs the class count and the config)."""
    from pose_ros.objects.estimator import PoseEstimator
    from pose_ros.objects.model_file import object_spec_from_model, save_model_file
    from pose_ros.objects.network import KeypointNet, NetworkConfig

    models = list(demo_models.values())
    net = KeypointNet(NetworkConfig(num_classes=len(models), input_width=64, input_height=48))
    path = save_model_file(tmp_path_factory.mktemp("cm") / "m.pt", net, [object_spec_from_model(m) for m in models])
    return PoseEstimator(path, meshes=None, use_icp=False, appearance_check=False,
                         objectness_config=ObjectnessConfig(fg_prob_on_objectness=0.3))


def _logits_from_probs(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, 1e-9, None)) + 1.7            # softmax is shift invariant


def test_class_map_without_objectness_is_argmax_over_enabled_classes(small_estimator):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2.0, (4, 12, 16))
    all_classes = small_estimator._class_map(logits, {1, 2, 3}, None)
    assert np.array_equal(all_classes, logits.argmax(0))
    some = small_estimator._class_map(logits, {1, 3}, None)
    expect = logits.argmax(0)
    expect[expect == 2] = 0                                # disabled class: background
    assert np.array_equal(some, expect)
    assert np.array_equal(small_estimator._class_map(logits, set(), None), np.zeros((12, 16), int))


def test_class_map_with_objectness_proposes_new_objects_where_depth_says_so(small_estimator):
    """Depth proposals: an unsure region standing out of the planes, away from anything the network
    found, becomes an object of the best (enabled) class; unsure pixels next to a found object do
    not grow it; too unsure pixels stay background."""
    H, W = 6, 14
    p = np.zeros((4, H, W))
    p[0] = 0.9
    p[1] = 0.05
    p[2] = 0.03
    p[3] = 0.02
    found = (slice(1, 4), slice(1, 4))            # the network says object 2 here
    p[:, found[0], found[1]] = np.array([0.2, 0.1, 0.6, 0.1])[:, None, None]
    touching = (slice(1, 4), slice(4, 6))         # unsure, right next to it
    p[:, touching[0], touching[1]] = np.array([0.55, 0.35, 0.05, 0.05])[:, None, None]
    alone = (slice(1, 4), slice(8, 11))           # unsure, on its own: best object 3
    p[:, alone[0], alone[1]] = np.array([0.6, 0.05, 0.05, 0.30])[:, None, None]
    weak = (slice(4, 6), slice(12, 14))           # objects together only 0.2: background
    p[:, weak[0], weak[1]] = np.array([0.8, 0.1, 0.05, 0.05])[:, None, None]
    logits = _logits_from_probs(p)
    obj = np.ones((H, W), bool)

    cm = small_estimator._class_map(logits, {1, 2, 3}, obj)
    assert (cm[found] == 2).all()
    assert (cm[touching] == 0).all()
    assert (cm[alone] == 3).all()
    assert (cm[weak] == 0).all()
    assert (small_estimator._class_map(logits, {1, 2, 3}, None)[alone] == 0).all()     # no depth: argmax
    # A disabled class neither wins nor counts: without class 3 the lone region has 0.10 left.
    assert (small_estimator._class_map(logits, {1, 2}, obj)[alone] == 0).all()
    # Objectness only where depth says so: the lone region without it stays background.
    obj_off = obj.copy()
    obj_off[alone] = False
    assert (small_estimator._class_map(logits, {1, 2, 3}, obj_off)[alone] == 0).all()
    assert np.array_equal(small_estimator._class_map(logits, {1, 2, 3}, None),
                          small_estimator._class_map(logits, {1, 2, 3}, np.zeros_like(obj)))
