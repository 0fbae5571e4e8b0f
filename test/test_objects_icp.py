"""ICP refinement on real YCB-Video RGB-D frames, and its behaviour on unusable depth."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import bad_icp_input, load_ycbv


@pytest.fixture(scope="module")
def ycbv():
    return load_ycbv()


def _first_frames(frames):
    """Frame 1 of each of the 3 ordinary scenes (13 objects, several occluded)."""
    return [f for f in frames if f.im_id == 1 and f.scene.startswith("data/")]


def test_icp_from_perturbed_starts_moves_towards_gt(ycbv):
    from pose_ros.eval.pose_metrics import add_s_error
    from pose_ros.eval.ycbv_refine_bench import perturb_pose
    from pose_ros.objects.icp import refine_pose_icp

    frames, models = ycbv
    rng = np.random.default_rng(7)
    better, total, applied_good = 0, 0, 0
    for f in _first_frames(frames):
        for g in f.gt:
            m = models[g.obj_id]
            for tr, rd in ((0.01, 5.0), (0.02, 10.0)):
                T0 = perturb_pose(g.T_cam_obj, tr, rd, rng)
                for mask in (g.mask_visib, None):
                    res = refine_pose_icp(m, T0, f.depth_m, f.camera, mask=mask)
                    e0 = add_s_error(m, T0, g.T_cam_obj)
                    e1 = add_s_error(m, res.T_cam_obj, g.T_cam_obj)
                    total += 1
                    better += e1 < 0.7 * e0
                    applied_good += res.applied and e1 < 0.1 * m.diameter_m
                    assert np.all(np.isfinite(res.T_cam_obj))
                    if not res.applied:
                        assert res.reason and np.allclose(res.T_cam_obj, T0)
    assert total >= 40
    # Measured with these seeds: 50/52 cases reduce the error by >30% and end applied within
    # 0.1 d; the failures are the thin marker (few depth pixels) and occluded objects.
    assert better / total >= 0.85, f"only {better}/{total} refinements reduced the error"
    assert applied_good / total >= 0.85


def test_icp_result_fields_and_correction_magnitudes(ycbv):
    from pose_ros.eval.ycbv_refine_bench import perturb_pose
    from pose_ros.objects.icp import IcpResult, refine_pose_icp

    frames, models = ycbv
    f = _first_frames(frames)[0]
    g = f.gt[0]
    T0 = perturb_pose(g.T_cam_obj, 0.015, 8.0, np.random.default_rng(1))
    res = refine_pose_icp(models[g.obj_id], T0, f.depth_m, f.camera, mask=g.mask_visib)
    assert isinstance(res, IcpResult) and res.applied and res.reason == ""
    assert 0.5 < res.fitness <= 1.0 and 0 < res.inlier_rmse_m < 0.005
    # The correction undoes most of the applied perturbation.
    assert 0.008 < res.correction_translation_m < 0.03
    assert math.radians(3) < res.correction_rotation_rad < math.radians(14)
    assert res.iterations > 0 and res.num_scene_points >= 50 and res.num_model_points >= 20


@pytest.mark.parametrize("case", ["zeros", "nan", "wrong_shape", "empty_mask", "int_depth", "far_away",
                                  "instance_mask"])
def test_bad_depth_returns_initial_pose_with_reason(ycbv, case):
    from pose_ros.objects.icp import refine_pose_icp

    frames, models = ycbv
    f = _first_frames(frames)[0]
    g = f.gt[0]
    m = models[g.obj_id]
    depth, mask, T0 = bad_icp_input(case, f, g, None)
    res = refine_pose_icp(m, T0, depth, f.camera, mask=mask)
    assert not res.applied
    assert res.reason, "a rejected refinement must say why"
    np.testing.assert_array_equal(res.T_cam_obj, T0)


def test_object_out_of_view_real_frame(ycbv):
    """special_data/0003 frame 138 has the mug (obj 14) annotated outside the image."""
    from pose_ros.objects.icp import refine_pose_icp

    frames, models = ycbv
    f = next(fr for fr in frames if fr.im_id == 138)
    g = next(gg for gg in f.gt if gg.obj_id == 14)
    res = refine_pose_icp(models[14], g.T_cam_obj, f.depth_m, f.camera)
    assert not res.applied and "not in view" in res.reason
    res = refine_pose_icp(models[14], g.T_cam_obj, f.depth_m, f.camera, mask=g.mask_visib)
    assert not res.applied and res.reason


def test_partial_nan_depth_still_refines(ycbv):
    """Sprinkle NaNs and flying-pixel outliers into the real depth: ICP must still converge."""
    from pose_ros.eval.pose_metrics import add_s_error
    from pose_ros.eval.ycbv_refine_bench import perturb_pose
    from pose_ros.objects.icp import refine_pose_icp

    frames, models = ycbv
    f = _first_frames(frames)[1]
    g = f.gt[1]
    m = models[g.obj_id]
    rng = np.random.default_rng(3)
    depth = f.depth_m.copy()
    holes = rng.random(depth.shape) < 0.3
    depth[holes] = np.nan
    spikes = rng.random(depth.shape) < 0.05
    depth[spikes] = rng.uniform(0.2, 2.0, int(spikes.sum())).astype(np.float32)
    T0 = perturb_pose(g.T_cam_obj, 0.015, 8.0, rng)
    res = refine_pose_icp(m, T0, depth, f.camera, mask=g.mask_visib)
    assert res.applied, res.reason
    assert add_s_error(m, res.T_cam_obj, g.T_cam_obj) < 0.5 * add_s_error(m, T0, g.T_cam_obj)


def test_large_correction_is_rejected(ycbv):
    from pose_ros.objects.icp import IcpConfig, refine_pose_icp

    frames, models = ycbv
    f = _first_frames(frames)[0]
    g = f.gt[0]
    T0 = g.T_cam_obj.copy()
    T0[:3, 3] += [0.012, 0.0, 0.0]
    cfg = IcpConfig(max_translation_correction_m=0.002)
    res = refine_pose_icp(models[g.obj_id], T0, f.depth_m, f.camera, mask=g.mask_visib, config=cfg)
    assert not res.applied and "translation correction" in res.reason
    np.testing.assert_array_equal(res.T_cam_obj, T0)
    assert res.T_refined_cam_obj is not None and res.correction_translation_m > 0.002


def test_config_and_pose_validation():
    from pose_ros.objects.icp import IcpConfig, refine_pose_icp

    with pytest.raises(ValueError, match="equal"):
        IcpConfig(max_correspondence_m=(0.02, 0.01), voxel_m=(0.0,), max_iterations=(5, 5))
    with pytest.raises(ValueError, match="max_correspondence_m"):
        IcpConfig(max_correspondence_m=(0.0,), voxel_m=(0.0,), max_iterations=(5,))
    with pytest.raises(ValueError, match="4x4"):
        refine_pose_icp(None, np.eye(3), np.zeros((4, 4)), None)


def test_visibility_culls_back_faces_and_hidden_surfaces(ycbv):
    from pose_ros.objects.visibility import visible_model_points, visible_point_mask

    frames, models = ycbv
    f = _first_frames(frames)[0]
    # Two parallel square sheets facing the camera, 5 cm apart: back-face culling keeps both,
    # only the z-buffer can hide the rear one.
    g = np.linspace(-0.04, 0.04, 30)
    sheet = np.array([[x, y, 0.0] for x in g for y in g])
    pts = np.vstack([sheet + [0, 0, 0.6], sheet + [0, 0, 0.65]])
    nrm = np.tile([0.0, 0.0, -1.0], (len(pts), 1))
    keep = visible_point_mask(pts, nrm, f.camera)
    assert keep[: len(sheet)].all() and not keep[len(sheet):].any()
    # Real model at its GT pose: fewer than ~2/3 of the surface is visible, all facing the camera.
    gt = f.gt[0]
    m = models[gt.obj_id]
    vis = visible_model_points(m, gt.T_cam_obj, f.camera)
    frac = vis.index.size / len(m.points_m)
    assert 0.2 < frac < 0.65
    assert np.all(np.einsum("ij,ij->i", vis.normals_cam, vis.points_cam_m) < 0)
