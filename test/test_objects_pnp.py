"""RANSAC keypoint voting and PnP: known answers with noise and outliers, rejection of bad cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose_ros.core.camera import PinholeCamera
from pose_ros.objects.pnp import PnpConfig, perturb_pose, solve_pnp
from pose_ros.objects.voting import split_instances, vote_keypoints


def _field(kp_uv, pts, rng, noise=0.05, outlier_frac=0.3):
    v = kp_uv[None] - pts[:, None]
    v /= np.linalg.norm(v, axis=2, keepdims=True)
    v = v + rng.normal(0, noise, v.shape)
    out = rng.random(len(pts)) < outlier_frac
    v[out] = rng.normal(0, 1, (out.sum(),) + v.shape[1:])
    return v


def test_voting_recovers_keypoints_inside_and_outside_the_mask():
    rng = np.random.default_rng(0)
    kp = np.array([[40.3, 30.7], [100.0, 80.0], [-10.0, 50.0], [55.0, 10.0]])   # inside, far out, left out, above
    gy, gx = np.mgrid[20:50, 30:70]
    pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(float)
    res = vote_keypoints(pts, _field(kp, pts, rng), rng=rng)
    assert res.valid.all()
    err = np.linalg.norm(res.keypoints_uv - kp, axis=1)
    assert err[0] < 0.5 and err[3] < 1.5
    assert err[1] < 4.0 and err[2] < 3.0                     # far keypoints: small relative error
    # ~30% outliers: the inlier ratio sees them
    assert 0.55 < res.inlier_ratio.mean() < 0.8
    # uncertainty grows with distance from the mask (lines intersect at shallow angles)
    tr = np.trace(res.covariance, axis1=1, axis2=2)
    assert tr[1] > tr[0] and tr[2] > tr[0]


def test_voting_degenerate_inputs():
    rng = np.random.default_rng(1)
    r = vote_keypoints(np.zeros((1, 2)), np.ones((1, 3, 2)), rng=rng)
    assert not r.valid.any() and r.num_pixels == 1
    # all vectors parallel: no intersection
    pts = np.stack([np.arange(30.0), np.zeros(30)], 1)
    r = vote_keypoints(pts, np.tile([[0.0, 1.0]], (30, 1, 1)), rng=rng)
    assert not r.valid.any()
    with pytest.raises(ValueError, match="vectors must be"):
        vote_keypoints(pts, np.ones((5, 3, 2)))


def test_split_instances_separates_touching_instances_of_one_class():
    h, w = 40, 80
    cls = np.zeros((h, w), int)
    cls[10:30, 10:40] = 1
    cls[10:30, 40:70] = 1          # same class, touching: one connected component
    cls[0:5, 0:5] = 2
    votes = np.zeros((h, w, 2))
    votes[..., 0] = np.where(np.arange(w)[None, :] < 40, 25.0, 55.0)
    votes[..., 1] = 20.0
    votes += np.random.default_rng(0).normal(0, 1.0, votes.shape)
    inst = split_instances(cls, votes, min_pixels=10)
    c1 = [m for c, m in inst if c == 1]
    assert len(c1) == 2
    cols = sorted(int(np.median(np.nonzero(m)[1])) for m in c1)
    assert abs(cols[0] - 25) <= 2 and abs(cols[1] - 55) <= 2
    assert all(m.sum() == 600 for m in c1)
    assert [c for c, _ in inst].count(2) == 1


CAM = PinholeCamera(np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]]), 640, 480)


def _scene(seed=2, z=0.7):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-0.06, 0.06, (9, 3))
    X[-1] = 0.0
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = [0.04, -0.03, z]
    uv = CAM.project(X @ T[:3, :3].T + T[:3, 3])
    return X, T, uv, rng


def test_pnp_recovers_pose_with_noise_and_outliers():
    X, T, uv, rng = _scene()
    uvn = uv + rng.normal(0, 0.5, uv.shape)
    uvn[2] += [60, -40]                      # gross outlier
    cov = np.tile(np.eye(2) * 0.25, (9, 1, 1))
    r = solve_pnp(X, uvn, CAM, cov, object_diameter_m=0.2)
    assert r.ok, r.reason
    assert 2 not in r.inliers and len(r.inliers) == 8
    assert np.linalg.norm(r.T_cam_obj[:3, 3] - T[:3, 3]) < 0.01
    ang = np.linalg.norm(Rotation.from_matrix(r.T_cam_obj[:3, :3] @ T[:3, :3].T).as_rotvec())
    assert np.rad2deg(ang) < 2.0
    assert r.reprojection_error_px < 1.5
    # Covariance: symmetric positive definite; depth is the least certain translation axis.
    assert r.covariance.shape == (6, 6) and np.allclose(r.covariance, r.covariance.T)
    assert np.all(np.linalg.eigvalsh(r.covariance) > 0)
    sd = np.sqrt(np.diag(r.covariance))
    assert sd[2] > sd[0] and sd[2] > sd[1]


def test_pnp_weighting_downweights_blurry_keypoints():
    X, T, uv, rng = _scene(seed=4)
    uvn = uv + rng.normal(0, 0.3, uv.shape)
    uvn[0] += [4.0, 4.0]                     # biased but within the RANSAC threshold
    cov = np.tile(np.eye(2) * 0.1, (9, 1, 1))
    cov_w = cov.copy()
    cov_w[0] = np.eye(2) * 25.0               # ...and the voting said it was blurry
    cfg = PnpConfig(ransac_reprojection_px=8.0)
    r_w = solve_pnp(X, uvn, CAM, cov_w, config=cfg)
    r_u = solve_pnp(X, uvn, CAM, cov, config=cfg)
    e_w = np.linalg.norm(r_w.T_cam_obj[:3, 3] - T[:3, 3])
    e_u = np.linalg.norm(r_u.T_cam_obj[:3, 3] - T[:3, 3])
    assert e_w < e_u


def test_pnp_rejects_degenerate_cases():
    X, T, uv, _ = _scene()
    # too few usable keypoints
    valid = np.zeros(9, bool)
    valid[:3] = True
    r = solve_pnp(X, uv, CAM, valid=valid)
    assert not r.ok and r.reason.startswith("too_few_keypoints")
    # all keypoints blurry
    r = solve_pnp(X, uv, CAM, np.tile(np.eye(2) * 1e4, (9, 1, 1)))
    assert not r.ok and "too_few_keypoints" in r.reason
    # object behind the camera: mirror the pose through the camera centre
    Tb = T.copy()
    Tb[:3, 3] *= -1
    from pose_ros.objects.pnp import check_plausible
    assert check_plausible(Tb, CAM, X, 0.2, PnpConfig()).startswith("behind_camera")
    # implausible distance: an object 20 m away
    Tf = T.copy()
    Tf[:3, 3] = [0, 0, 20.0]
    assert check_plausible(Tf, CAM, X, 0.2, PnpConfig()).startswith("implausible_distance")
    # far out of view
    To = T.copy()
    To[:3, 3] = [5.0, 0, 1.0]
    assert check_plausible(To, CAM, X, 0.2, PnpConfig()).startswith("out_of_view")
    # random garbage 2D points: RANSAC finds no consistent pose (or a rejected one)
    rng = np.random.default_rng(9)
    r = solve_pnp(X, rng.uniform(0, 640, (9, 2)), CAM, object_diameter_m=0.2)
    assert not r.ok
    with pytest.raises(ValueError, match="keypoints_m must be"):
        solve_pnp(X[:, :2], uv, CAM)


def test_perturb_pose_is_left_multiplicative():
    T = np.eye(4)
    T[:3, 3] = [0.1, 0.2, 0.5]
    p = np.array([0.01, 0, 0, 0, 0, np.pi / 2])
    Tp = perturb_pose(T, p)
    assert np.allclose(Tp[:3, 3], [0.11, 0.2, 0.5])
    assert np.allclose(Tp[:3, :3] @ [1, 0, 0], [0, 1, 0])


def test_covariance_helpers_fuse_and_ros_layout():
    from pose_ros.objects.covariance import (covariance_is_valid, fuse_icp_covariance, icp_covariance, pose_std,
                                             to_ros_covariance)

    X, T, uv, rng = _scene(seed=5)
    r = solve_pnp(X, uv + rng.normal(0, 0.5, uv.shape), CAM, np.tile(np.eye(2) * 0.25, (9, 1, 1)))
    assert r.ok and covariance_is_valid(r.covariance)
    fused = fuse_icp_covariance(r.covariance, 0.002, 0.2)
    assert covariance_is_valid(fused)
    # fusing independent evidence never increases any variance, and beats each source alone
    assert np.all(np.diag(fused) <= np.diag(r.covariance) + 1e-15)
    assert np.all(np.diag(fused) <= np.diag(icp_covariance(0.002, 0.2)) + 1e-15)
    t_sd, r_sd = pose_std(icp_covariance(0.002, 0.2))
    assert np.allclose(t_sd, np.sqrt(3) * 0.002) and np.allclose(r_sd, np.sqrt(3) * 0.002 / 0.1)
    ros = to_ros_covariance(fused)
    assert len(ros) == 36 and np.allclose(np.reshape(ros, (6, 6)), fused)
    bad = to_ros_covariance(np.full((6, 6), np.nan))
    assert np.allclose(np.diag(np.reshape(bad, (6, 6))), -1.0)
    assert not covariance_is_valid(-np.eye(6))


def test_depth_parts_two_boxes_one_behind_the_other_but_not_one_object_over_a_depth_jump():
    """Rendered: a box standing behind another and sticking out above it, on a 4-px map grid. With
    centre votes blurred towards their mean (as the network's are) the vote clustering keeps them as
    one instance; with depth they part along the depth jump into the two boxes. A depth jump whose
    two sides vote for one centre (a mug's handle in front of its body) is no reason to split."""
    from pathlib import Path

    from pose_ros.core.object_model import load_object_dir
    from pose_ros.objects.voting import split_by_depth
    from pose_ros.synth.renderer import RgbdRenderer

    models = {m.name: m for m in load_object_dir(Path(__file__).resolve().parents[1] / "meshes")}
    cam = PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)
    st = 4

    def pose(rv, t):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec(rv).as_matrix()
        T[:3, 3] = t
        return T

    def on_grid(objects, blur):
        r = RgbdRenderer(cam).render(objects, rng=np.random.default_rng(0))
        inst, depth = r.instance_mask[st // 2::st, st // 2::st], r.depth_m[st // 2::st, st // 2::st]
        votes = np.zeros(inst.shape + (2,))
        for k, (m, T) in enumerate(objects):
            votes[inst == k] = cam.project((T[:3, :3] @ m.bbox_center_m + T[:3, 3])[None])[0] / st
        sel = inst >= 0
        votes[sel] = (1 - blur) * votes[sel] + blur * votes[sel].mean(0)
        votes += np.random.default_rng(1).normal(0, 0.7, votes.shape)
        return inst, np.where(sel, 1, 0), votes, depth

    box = models["box"]
    inst, cls, votes, depth = on_grid([(box, pose([0.3, 0.4, 0.1], [0.0, 0.03, 0.55])),
                                       (box, pose([1.2, 0.3, 0.2], [0.01, -0.04, 0.7]))], blur=0.7)
    assert len(split_instances(cls, votes, min_pixels=10)) == 1          # votes alone: one instance
    parts = [m for _, m in split_instances(cls, votes, min_pixels=10, depth_m=depth)]
    assert len(parts) == 2
    for k in (0, 1):                                                     # each part is one box
        best = max(parts, key=lambda m: (m & (inst == k)).sum())
        assert (best & (inst == k)).sum() >= 0.9 * (inst == k).sum()
        assert (best & (inst == k)).sum() >= 0.9 * best.sum()

    # the same depth jump with every pixel voting for one centre (one object's parts): kept whole
    inst, cls, votes, depth = on_grid([(box, pose([0.3, 0.4, 0.1], [0.0, 0.03, 0.55])),
                                       (box, pose([1.2, 0.3, 0.2], [0.01, -0.04, 0.7]))], blur=1.0)
    assert len(split_instances(cls, votes, min_pixels=10, depth_m=depth)) == 1
    assert len(split_by_depth(cls > 0, depth, votes, min_vote_sep_px=0.0)) == 2   # the jump is there
