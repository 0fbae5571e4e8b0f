"""Geometric near-symmetries of a mesh: rotations that (almost) map its surface onto itself.

Why: depth-based refinement (ICP, the depth-driven search) cannot tell apart poses that differ by
a near-symmetry of the *shape* (a printed box turned 180 deg, a mug turned about its axis when
the handle is hidden), although the object's texture can. These are the alternatives the
appearance check (``objects.appearance``) must compare. Declared symmetries are not enough: a
mug or a printed box is declared asymmetric (its texture breaks the symmetry), yet its shape is
nearly symmetric.

How: candidate rotations about the model's bounding-box and principal axes through the surface
centroid (every ``step_deg`` around each axis, plus 180 deg flips about the other two), each
snapped to the closest self-alignment by trimmed point-to-point ICP of the surface samples onto
themselves, kept when the exact distance to the mesh surface after snapping is below
``max_dist_frac`` of the diameter for ``inlier_percentile`` % of the surface (so a part that
breaks the symmetry, like a handle, may differ), and de-duplicated. Computed once per model (cached).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

__all__ = ["NearSymmetryConfig", "near_symmetries"]


@dataclass(frozen=True)
class NearSymmetryConfig:
    step_deg: float = 30.0             # candidate step about each axis
    max_dist_frac: float = 0.03        # accept: 80th-percentile NN distance after snapping / diameter
    inlier_percentile: float = 80.0    # the rest may differ (a handle, a spout): that part may be hidden
    min_angle_deg: float = 20.0        # closer to the identity (or to each other): ICP's basin covers it
    num_points: int = 400


_CACHE: dict[tuple[int, NearSymmetryConfig], tuple[Any, list[np.ndarray]]] = {}   # -> (mesh, result)


def _about(R: np.ndarray, c: np.ndarray) -> np.ndarray:
    """4x4 rotation R about the point c (model frame)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = c - R @ c
    return T


def _angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _snap(src: np.ndarray, tree: cKDTree, T0: np.ndarray, pct: float, iters: int = 12) -> np.ndarray:
    """Trimmed point-to-point ICP of surface samples onto the full sample set, from T0."""
    T = T0.copy()
    for _ in range(iters):
        p = src @ T[:3, :3].T + T[:3, 3]
        d, j = tree.query(p)
        keep = d <= np.percentile(d, pct)          # trim the parts that break the symmetry (a handle)
        a, b = p[keep], tree.data[j[keep]]
        ca, cb = a.mean(0), b.mean(0)
        U, _, Vt = np.linalg.svd((a - ca).T @ (b - cb))
        D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
        R = Vt.T @ D @ U.T
        step = np.eye(4)
        step[:3, :3] = R
        step[:3, 3] = cb - R @ ca
        T = step @ T
        if np.linalg.norm(step[:3, 3]) < 1e-6 and _angle_deg(R) < 1e-3:
            break
    return T


def _surface_distance(model: Any) -> Any:
    """Exact unsigned point-to-mesh distance (Open3D), since two samplings of one surface never coincide."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(model.mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(model.mesh.faces, np.uint32)))

    def dist(p: np.ndarray) -> np.ndarray:
        return scene.compute_distance(o3d.core.Tensor(p.astype(np.float32))).numpy()

    return dist


def near_symmetries(model: Any, config: NearSymmetryConfig = NearSymmetryConfig()) -> list[np.ndarray]:
    """Model-frame 4x4 transforms S (identity excluded) with T and T @ S hard to tell apart by shape.

    Empty for models with a declared continuous symmetry (their appearance cannot be told apart
    along the axis either, and the metrics already treat them as symmetric).
    """
    key = (id(model.mesh), config)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is model.mesh:        # ids of collected meshes get reused
        return [S.copy() for S in hit[1]]
    out: list[np.ndarray] = []
    if not model.symmetry.continuous:
        all_pts = np.asarray(model.points_m, np.float64)
        pick = np.arange(len(all_pts))
        if len(pick) > config.num_points:
            pick = np.random.default_rng(0).choice(len(pick), config.num_points, replace=False)
        pts = all_pts[pick]
        tree = cKDTree(all_pts)
        surface_dist = _surface_distance(model)
        c = pts.mean(0)
        _, vecs = np.linalg.eigh(np.cov((pts - c).T))
        frames = [np.eye(3)]
        if not np.all(np.abs(vecs).max(0) > 0.98):
            frames.append(vecs)                        # principal axes, unless they are the model axes
        cands: list[np.ndarray] = []
        for F in frames:
            for i in range(3):
                ax = F[:, i]
                for a in np.arange(config.step_deg, 360.0, config.step_deg):
                    cands.append(Rotation.from_rotvec(np.radians(a) * ax).as_matrix())
                for j in range(3):
                    if j != i:
                        for a in np.arange(0.0, 360.0, config.step_deg):
                            cands.append(Rotation.from_rotvec(np.pi * F[:, j]).as_matrix()
                                         @ Rotation.from_rotvec(np.radians(a) * ax).as_matrix())
        limit = config.max_dist_frac * float(model.diameter_m)
        for R in cands:
            T = _snap(pts, tree, _about(R, c), config.inlier_percentile)
            err = float(np.percentile(surface_dist(pts @ T[:3, :3].T + T[:3, 3]), config.inlier_percentile))
            if err > limit or _angle_deg(T[:3, :3]) < config.min_angle_deg:
                continue
            if any(_angle_deg(S[:3, :3].T @ T[:3, :3]) < config.min_angle_deg for S in out):
                continue
            out.append(T)
    _CACHE[key] = (model.mesh, out)
    return [S.copy() for S in out]
