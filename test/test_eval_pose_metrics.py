"""BOP pose metrics on hand-checkable cases, aggregation/report/plot, and the results CSV."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import shared_data_path


@pytest.fixture(scope="module")
def can():
    """YCB-V master chef can: BOP lists a 180 deg discrete symmetry about z."""
    from pose_ros.core.object_model import load_bop_models

    root = shared_data_path("ycbv_real", "models_bop_ycbv")
    return load_bop_models(root, obj_ids=[1], num_points=1000)[0]


@pytest.fixture(scope="module")
def camera():
    from pose_ros.core.camera import PinholeCamera

    K = np.array([[1066.778, 0, 312.9869], [0, 1067.487, 241.3109], [0, 0, 1.0]])
    return PinholeCamera(K, 640, 480)


def _T(R=np.eye(3), t=(0.0, 0.0, 0.7)):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _rot_x(deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def test_identity_pose_has_zero_error(can, camera):
    from pose_ros.eval.pose_metrics import add_error, adds_error, mspd_error, mssd_error, symmetry_transforms

    T = _T(_rot_x(30))
    syms = symmetry_transforms(can)
    assert add_error(can.points_m, T, T) == 0.0
    assert adds_error(can.points_m, T, T) == 0.0
    assert mssd_error(can.points_m, T, T, syms) == 0.0
    assert mspd_error(can.points_m, T, T, camera, syms) == 0.0


def test_known_translation_offset(can, camera):
    from pose_ros.eval.pose_metrics import add_error, adds_error, mssd_error

    T_gt = _T(_rot_x(30))
    T_est = T_gt.copy()
    T_est[:3, 3] += [0.012, -0.005, 0.0]   # |offset| = 13 mm
    assert add_error(can.points_m, T_est, T_gt) == pytest.approx(0.013, abs=1e-12)
    assert mssd_error(can.points_m, T_est, T_gt) == pytest.approx(0.013, abs=1e-12)
    assert adds_error(can.points_m, T_est, T_gt) <= 0.013 + 1e-12


def test_mspd_of_a_planar_shift_is_focal_times_offset(camera):
    from pose_ros.eval.pose_metrics import mspd_error

    g = np.linspace(-0.05, 0.05, 11)
    pts = np.array([[x, y, 0.0] for x in g for y in g])   # square in the z=0 plane
    T_gt = _T(t=(0.0, 0.0, 1.0))
    T_est = _T(t=(0.004, 0.0, 1.0))
    assert mspd_error(pts, T_est, T_gt, camera) == pytest.approx(camera.fx * 0.004, rel=1e-9)


def test_symmetric_rotation_mssd_zero_add_large(can, camera):
    from pose_ros.eval.pose_metrics import add_error, add_s_error, mspd_error, mssd_error, symmetry_transforms

    assert can.is_symmetric
    S = can.symmetry.discrete[0]
    T_gt = _T(_rot_x(40), (0.05, -0.02, 0.8))
    T_est = T_gt @ S     # indistinguishable pose
    syms = symmetry_transforms(can)
    assert mssd_error(can.points_m, T_est, T_gt, syms) < 1e-9
    assert mspd_error(can.points_m, T_est, T_gt, camera, syms) < 1e-6
    assert add_error(can.points_m, T_est, T_gt) > 0.05            # ADD sees a 180 deg flip
    assert add_s_error(can, T_est, T_gt) < 0.006                  # nearest-neighbour: sample spacing only
    # Without the symmetry list MSSD is large too.
    assert mssd_error(can.points_m, T_est, T_gt) > 0.09


def test_vsd_real_render(can, camera):
    from pose_ros.eval.pose_metrics import VSD_TAUS_REL, render_model_depth, vsd_errors

    T_gt = _T(_rot_x(60), (0.0, 0.0, 0.7))
    d_gt = render_model_depth(can, T_gt, camera)
    assert (d_gt > 0).sum() > 5000
    taus = VSD_TAUS_REL * can.diameter_m
    np.testing.assert_allclose(vsd_errors(d_gt, d_gt, d_gt, camera, taus), 0.0)
    T_far = T_gt.copy()
    T_far[:3, 3] += [0.0, 0.0, 0.03]  # 3 cm deeper: overlap stays, depth differs by ~3 cm
    d_far = render_model_depth(can, T_far, camera)
    e = vsd_errors(d_gt, d_far, d_gt, camera, taus)
    assert np.all(np.diff(e) <= 1e-12)               # larger tolerance, smaller error
    assert e[0] > 0.9                                # tau 8.6 mm < 3 cm: almost every pixel wrong
    assert e[-1] < 0.3                               # tau 86 mm > 3 cm: only the non-overlap
    T_out = T_gt.copy()
    T_out[:3, 3] += [2.0, 0.0, 0.0]                   # off the image
    np.testing.assert_allclose(vsd_errors(d_gt, render_model_depth(can, T_out, camera), d_gt, camera, taus), 1.0)
    # Occluder in front of the GT object: those pixels are invisible, not errors.
    d_test = d_gt.copy()
    d_test[: camera.height // 2 + 20] = np.where(d_gt[: camera.height // 2 + 20] > 0, 0.3, 0.0)
    np.testing.assert_allclose(vsd_errors(d_test, d_gt, d_gt, camera, taus), 0.0)


def test_evaluate_poses_report_and_plot(can, camera, tmp_path):
    import cv2

    from pose_ros.eval.pose_metrics import PoseRecord, evaluate_poses, format_report, plot_recall_curves

    T_gt = _T(_rot_x(60), (0.0, 0.0, 0.7))
    from pose_ros.eval.pose_metrics import render_model_depth

    depth = render_model_depth(can, T_gt, camera)
    T_small = T_gt.copy()
    T_small[:3, 3] += [0.002, 0.0, 0.0]
    T_big = T_gt.copy()
    T_big[:3, 3] += [0.06, 0.0, 0.0]
    recs = [PoseRecord(1, can, T_gt, T_gt.copy(), camera, depth),
            PoseRecord(1, can, T_gt, T_small, camera, depth),
            PoseRecord(1, can, T_gt, T_big, camera, depth),
            PoseRecord(1, can, T_gt, None, camera, depth)]
    rep = evaluate_poses(recs)
    o = rep.overall
    assert o["n"] == 4
    assert o["ADD(-S)"] == pytest.approx(0.5)           # exact and 2 mm pass, 6 cm and missing fail
    for k in ("AR_MSSD", "AR_MSPD", "AR_VSD", "AR"):
        assert 0.25 < o[k] <= 0.75, (k, o[k])
    assert o["AR"] == pytest.approx((o["AR_VSD"] + o["AR_MSSD"] + o["AR_MSPD"]) / 3)
    text = format_report(rep, "unit")
    assert "all" in text and "AR_VSD" in text
    png = plot_recall_curves(rep, tmp_path / "curves.png")
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100
    assert set(rep.to_dict()["overall"]) >= {"AR", "ADD(-S)"}


def test_metric_input_errors(can):
    from pose_ros.eval.pose_metrics import PoseMetricError, add_error, evaluate_poses

    with pytest.raises(PoseMetricError, match="4x4"):
        add_error(can.points_m, np.eye(3), np.eye(4))
    with pytest.raises(PoseMetricError, match="N,3"):
        add_error(np.zeros((0, 3)), np.eye(4), np.eye(4))
    with pytest.raises(ValueError, match="at least one"):
        evaluate_poses([])


def test_bop_results_csv_round_trip(tmp_path):
    from pose_ros.eval.bop_results import BopEstimate, BopResultsError, read_bop_results, write_bop_results

    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    ests = []
    for i in range(5):
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=i).as_matrix()
        T[:3, 3] = rng.uniform(-0.3, 0.3, 3) + [0, 0, 0.8]
        ests.append(BopEstimate(scene_id=48 + i // 3, im_id=i + 1, obj_id=i % 3 + 1, score=0.1 * i, T_cam_obj=T,
                                time_s=0.05))
    path = write_bop_results(tmp_path / "res" / "method_ycbv-test.csv", ests)
    lines = path.read_text().splitlines()
    assert lines[0] == "scene_id,im_id,obj_id,score,R,t,time"
    # t is written in millimetres, R row-major, space separated
    t_mm = [float(v) for v in lines[1].split(",")[5].split()]
    np.testing.assert_allclose(t_mm, ests[0].T_cam_obj[:3, 3] * 1000.0)
    back = read_bop_results(path)
    assert len(back) == 5
    for a, b in zip(ests, back):
        assert (a.scene_id, a.im_id, a.obj_id) == (b.scene_id, b.im_id, b.obj_id)
        assert a.score == b.score and a.time_s == b.time_s
        np.testing.assert_array_almost_equal(a.T_cam_obj, b.T_cam_obj, decimal=12)
    bad = tmp_path / "bad.csv"
    bad.write_text("scene_id,im_id,obj_id,score,R,t,time\n1,1,1,0.5,1 0 0 0 1 0 0 0,0 0 1,-1\n")
    with pytest.raises(BopResultsError, match="bad.csv:2"):
        read_bop_results(bad)
    with pytest.raises(BopResultsError, match="finite"):
        write_bop_results(tmp_path / "x.csv", [BopEstimate(1, 1, 1, 1.0, np.full((4, 4), np.nan))])
