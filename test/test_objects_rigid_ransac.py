"""objects/rigid_ransac.py: 3D-3D RANSAC over Kabsch."""
import numpy as np
from scipy.spatial.transform import Rotation

from pose_ros.objects.rigid_ransac import _distinct_triples, rigid_ransac


def test_triples_are_distinct_and_every_index_equally_likely():
    idx = _distinct_triples(np.random.default_rng(0), 7, 70_000)
    assert idx.shape == (70_000, 3) and idx.min() == 0 and idx.max() == 6
    assert np.all((idx[:, 0] != idx[:, 1]) & (idx[:, 0] != idx[:, 2]) & (idx[:, 1] != idx[:, 2]))
    share = np.bincount(idx.ravel(), minlength=7) / idx.size
    assert np.allclose(share, 1 / 7, atol=0.005)
    assert len({tuple(sorted(r)) for r in idx[:5000]}) == 35          # all C(7, 3) triples occur
    assert {tuple(sorted(r)) for r in _distinct_triples(np.random.default_rng(0), 3, 50)} == {(0, 1, 2)}


def test_recovers_a_pose_through_forty_percent_outliers():
    rng = np.random.default_rng(3)
    X = rng.uniform(-0.05, 0.05, (200, 3))
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(0.9 * np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2])).as_matrix()
    T[:3, 3] = [0.05, -0.02, 0.7]
    P = X @ T[:3, :3].T + T[:3, 3] + rng.normal(0, 0.001, X.shape)
    out = rng.random(200) < 0.4
    P[out] = rng.uniform(-0.1, 0.1, (out.sum(), 3)) + [0, 0, 0.7]
    res = rigid_ransac(X, P, threshold_m=0.005, rng=np.random.default_rng(0))
    assert res.ok
    assert np.linalg.norm(res.T_cam_obj[:3, 3] - T[:3, 3]) < 0.002
    assert np.degrees(np.arccos(np.clip((np.trace(res.T_cam_obj[:3, :3].T @ T[:3, :3]) - 1) / 2, -1, 1))) < 1.0
    assert len(set(res.inliers) & set(np.nonzero(~out)[0])) >= 0.9 * (~out).sum()
    assert len(set(res.inliers) & set(np.nonzero(out)[0])) <= 3     # an outlier can land near the surface


def test_too_few_or_degenerate_correspondences_are_refused():
    X = np.zeros((5, 3))
    assert not rigid_ransac(X[:2], X[:2], 0.01).ok
    res = rigid_ransac(X, X, 0.01, min_inliers=3)
    assert not res.ok and res.reason == "degenerate_correspondences"
