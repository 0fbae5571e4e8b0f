"""Pose from 3D-3D correspondences (model point <-> back-projected depth point): RANSAC over Kabsch.

Why beside PnP: with depth, each correspondence pins a point in metric space, so three of them give a
pose and the error is measured in metres rather than pixels: a coordinate off by a centimetre stays a
centimetre, while in PnP the same error becomes a large rotation for a small or distant object. The
RGB-only path keeps PnP. All hypotheses are solved in one batched SVD.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RigidRansacResult", "kabsch", "rigid_ransac"]


@dataclass
class RigidRansacResult:
    ok: bool
    reason: str
    T_cam_obj: np.ndarray | None = None
    inliers: np.ndarray | None = None           # indices into the correspondences
    rmse_m: float = float("inf")


def kabsch(X: np.ndarray, P: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Rigid T (4x4) minimising sum w |T X - P|^2 for (..., N, 3) point sets (batched)."""
    w = np.ones(X.shape[:-1]) if w is None else w
    ws = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
    cx = np.einsum("...n,...nk->...k", ws, X)
    cp = np.einsum("...n,...nk->...k", ws, P)
    H = np.einsum("...n,...ni,...nj->...ij", ws, X - cx[..., None, :], P - cp[..., None, :])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("...ij,...jk->...ik", Vt.swapaxes(-1, -2), U.swapaxes(-1, -2))))
    D = np.zeros(H.shape)
    D[..., 0, 0] = 1.0
    D[..., 1, 1] = 1.0
    D[..., 2, 2] = d
    R = Vt.swapaxes(-1, -2) @ D @ U.swapaxes(-1, -2)
    T = np.zeros(H.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = cp - np.einsum("...ij,...j->...i", R, cx)
    T[..., 3, 3] = 1.0
    return T


def _distinct_triples(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """(m, 3) indices, three distinct of ``n`` per row, uniform: drawn in one go (a Python loop of
    ``rng.choice`` took 2-5 ms per instance)."""
    i0 = rng.integers(n, size=m)
    i1 = rng.integers(n - 1, size=m)
    i1 += i1 >= i0
    lo, hi = np.minimum(i0, i1), np.maximum(i0, i1)
    i2 = rng.integers(n - 2, size=m)
    i2 += i2 >= lo
    i2 += i2 >= hi
    return np.stack([i0, i1, i2], 1)


def rigid_ransac(X_m: np.ndarray, P_m: np.ndarray, threshold_m: float, weights: np.ndarray | None = None,
                 hypotheses: int = 256, min_inliers: int = 8, rng: np.random.Generator | None = None,
                 ) -> RigidRansacResult:
    """Best rigid T with ``T X ~ P`` under outliers; refined on its inliers (weighted) twice."""
    X = np.asarray(X_m, np.float64)
    P = np.asarray(P_m, np.float64)
    n = len(X)
    if n < max(3, min_inliers):
        return RigidRansacResult(False, f"too_few_correspondences ({n})")
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    rng = rng or np.random.default_rng(0)
    idx = _distinct_triples(rng, n, hypotheses)
    Xs, Ps = X[idx], P[idx]
    # degenerate (near-collinear) samples: tiny triangle area in the model
    area = np.linalg.norm(np.cross(Xs[:, 1] - Xs[:, 0], Xs[:, 2] - Xs[:, 0]), axis=1)
    keep = area > 1e-6
    if not keep.any():
        return RigidRansacResult(False, "degenerate_correspondences")
    Ts = kabsch(Xs[keep], Ps[keep])
    d = np.matmul(X, Ts[:, :3, :3].transpose(0, 2, 1)) + (Ts[:, None, :3, 3] - P[None])    # (m, n, 3)
    score = (np.einsum("mni,mni->mn", d, d) < threshold_m ** 2).astype(np.float64) @ w
    T = Ts[int(np.argmax(score))]
    inl = np.zeros(n, bool)
    for _ in range(2):
        r = np.linalg.norm(X @ T[:3, :3].T + T[:3, 3] - P, axis=1)
        inl = r < threshold_m
        if inl.sum() < 3:
            break
        T = kabsch(X[inl], P[inl], w[inl])
    r = np.linalg.norm(X @ T[:3, :3].T + T[:3, 3] - P, axis=1)
    inl = r < threshold_m
    if inl.sum() < min_inliers:
        return RigidRansacResult(False, f"too_few_inliers ({int(inl.sum())} < {min_inliers})", T, np.nonzero(inl)[0])
    return RigidRansacResult(True, "ok", T, np.nonzero(inl)[0], float(np.sqrt(np.mean(r[inl] ** 2))))
