"""Depth-agreement scoring on real YCB-Video frames and the confidence combination."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import load_ycbv, shared_data_path


@pytest.fixture(scope="module")
def ycbv():
    return load_ycbv(lambda f: f.im_id in (1, 3))


def _wrong_poses(T_gt, rng):
    from pose_ros.eval.ycbv_refine_bench import perturb_pose

    yield perturb_pose(T_gt, 0.03, 0.0, rng)      # 3 cm off
    yield perturb_pose(T_gt, 0.0, 45.0, rng)      # 45 deg off
    T = T_gt.copy()
    T[:3, 3] *= 1.15                              # 15% further along the viewing ray
    yield T


def test_correct_pose_scores_clearly_higher_than_wrong(ycbv):
    from pose_ros.objects.scoring import mask_depth_agreement

    frames, models = ycbv
    rng = np.random.default_rng(0)
    wins, total, correct_scores = 0, 0, []
    for f in frames:
        for g in f.gt:
            if not g.mask_visib.any():
                continue  # annotated but outside the image
            m = models[g.obj_id]
            for mask in (None, g.mask_visib):
                s_ok = mask_depth_agreement(m, g.T_cam_obj, f.depth_m, f.camera, mask=mask)
                correct_scores.append(s_ok)
                for T_bad in _wrong_poses(g.T_cam_obj, rng):
                    s_bad = mask_depth_agreement(m, T_bad, f.depth_m, f.camera, mask=mask)
                    assert 0.0 <= s_bad <= 1.0
                    total += 1
                    wins += s_ok > s_bad + 0.15
    assert total > 100
    # Measured: 155/156 comparisons (median correct-pose agreement 0.90).
    assert wins / total >= 0.93, f"correct pose clearly better in only {wins}/{total} comparisons"
    assert np.median(correct_scores) > 0.6


def test_agreement_is_zero_without_evidence(ycbv):
    from pose_ros.objects.scoring import depth_agreement, mask_depth_agreement

    frames, models = ycbv
    f = frames[0]
    g = f.gt[0]
    m = models[g.obj_id]
    assert mask_depth_agreement(m, g.T_cam_obj, np.zeros_like(f.depth_m), f.camera) == 0.0
    T_behind = g.T_cam_obj.copy()
    T_behind[:3, 3] = [0.0, 0.0, -1.0]
    assert mask_depth_agreement(m, T_behind, f.depth_m, f.camera) == 0.0
    counts = depth_agreement(m, g.T_cam_obj, f.depth_m, f.camera)
    assert counts.visible > 100 and counts.agree > counts.free_space
    with pytest.raises(ValueError, match="shape"):
        mask_depth_agreement(m, g.T_cam_obj, f.depth_m[:10], f.camera)


def test_pose_score_monotonic_and_validated():
    from pose_ros.objects.scoring import pose_score

    lo = pose_score(0.2, 0.3, 0.4)
    hi = pose_score(0.9, 0.9, 0.9)
    assert 0.0 <= lo < hi <= 1.0
    assert pose_score(0.9, 0.9, 0.9) > pose_score(0.5, 0.9, 0.9)
    assert pose_score(0.9, 0.5, 0.9) <= pose_score(0.9, 0.9, 0.9)
    assert pose_score(0.9, 0.9, 0.3) < pose_score(0.9, 0.9, 0.9)
    # calibrated on real YCB-V: a well-supported pose is confident, an unsupported one is not
    assert pose_score(0.95) > 0.95 and pose_score(0.1) < 0.1
    assert 0.0 < pose_score(0.8) < 1.0   # optional terms may be missing
    for bad in (1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match="agreement"):
            pose_score(bad)
    with pytest.raises(ValueError, match="pnp_inlier_ratio"):
        pose_score(0.5, 0.5, 2.0)


def test_bench_harness_and_score_calibration_on_real_frames(tmp_path):
    """Small run of the YCB-V refinement benchmark: table, plot, and a logistic calibration
    whose probabilities separate successes from failures."""
    import cv2

    from pose_ros.eval.ycbv_refine_bench import (calibrate_score_weights, format_summary, plot_summary,
                                                 run_refine_bench, summarize)
    from pose_ros.objects.scoring import pose_score

    root = shared_data_path("ycbv_real")
    cases = run_refine_bench(root, translations_m=(0.01,), rotations_deg=(5.0,), directions=3, run_ppf=False,
                             max_frames=2, progress=False, calibration_levels=((0.1, 90.0),))
    methods = {c.method for c in cases}
    assert methods == {"start", "icp", "icp_cal"}
    rows = summarize(cases)
    icp_all = next(r for r in rows if r["method"] == "icp" and r["level"] == "all")
    assert icp_all["n"] == 2 * 3 * 3 and icp_all["success_add_s"] >= 0.8
    assert "icp" in format_summary(rows)
    img = cv2.imread(str(plot_summary(cases, rows, tmp_path / "b.png")))
    assert img is not None
    w, stats = calibrate_score_weights(cases)
    assert stats["n"] == 36 and 0 < stats["positives"] < 36
    ok = [pose_score(c.agreement, weights=w) for c in cases if c.method.startswith("icp") and c.success]
    bad = [pose_score(c.agreement, weights=w) for c in cases if c.method.startswith("icp") and not c.success]
    assert np.mean(ok) > np.mean(bad) + 0.5
