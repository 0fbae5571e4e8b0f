"""Depth-driven pose search for one detected instance: rotation hypotheses -> fast scoring -> ICP.

Why: PnP needs good 2D keypoints; when the network's keypoint votes are poor (an under-trained
model, heavy occlusion, blur) PnP fails or lands far from the truth, outside ICP's basin. The
network's *segmentation* is far easier to learn and with depth it pins down where the object is.
This search keeps that information: for a fixed near-uniform set of rotations (two offset
icosahedral groups, 120 rotations: a random rotation lies a median 26 deg, at most 41 deg, from
the nearest; for a mostly planar model
such as a box, plus the rotations that put its faces on the dominant directions of the depth's
normals, which are within a few degrees of the truth), the translation is set so
that the camera-facing model points' centroid lands on the masked scene points' centroid, each
hypothesis is scored in one vectorised pass (depth agreement vs. free-space violation and mask
coverage of projected model points), the best few get a coarse ICP, are re-scored (by a
render-and-compare check when given, which also extends the search while nothing passes it), and
the best one or two get the full ICP. For free-form models (no plane- or axis-aligned hypotheses)
an extending search also ranks every grid hypothesis after a short batched ICP (``batch_icp``), where
it converged rather than where it started. The caller keeps
whichever of PnP+ICP and search+ICP scores better, so a good network is never overridden.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from scipy.spatial.transform import Rotation

from pose_ros.core.camera import PinholeCamera

__all__ = ["DepthSearchConfig", "depth_pose_search", "rotation_grid"]


@dataclass
class DepthSearchConfig:
    num_model_points: int = 250       # model points used to score a hypothesis
    top_k: int = 3                    # hypotheses refined by coarse ICP
    top_k_verified: int = 8           # ... when a render-and-compare ``verify`` ranks them instead
    final_k: int = 1                  # of those, refined by the full ICP and returned
    kp_weight: float = 1.5            # weight of the voted-keypoint agreement in the hypothesis score
    colour_weight: float = 1.5        # weight of the model-colour vs image correlation (textured models)
    coverage_weight: float = 1.0      # weight of the fraction of the mask the projected model covers
    #                                   (measured on the demo test set: 88.0% ADD(-S) with, 87.5% without)
    tolerance_m: float = 0.01         # depth agreement band
    min_scene_points: int = 40
    icp_max_translation_m: float = 0.06
    icp_max_rotation_rad: float = 0.7
    # Coarse-ICP budget. Cheaper settings measured on the 50-scene demo test set with the fine-tuned
    # demo model (ADD(-S) % / AR; these defaults: 75.0 / 70.8): 400 points 73.9 / 71.0 (12% less
    # depth-search time), 300 points 73.9 / 71.3 (and a texture flip lost in
    # test_depth_search_with_colour_and_verification_recovers_full_pose), 10 iterations 73.4 / 70.0
    # and no faster, top_k_verified 6: 69.0 / 65.5. None kept: ADD(-S) must not drop.
    coarse_iterations: int = 15       # per coarse ICP level (cap)
    coarse_model_points: int = 600    # visible model points per coarse ICP level (cap)
    coarse_prealign: bool = True      # centroid pre-alignment start in the coarse ICP
    # Adaptive extension (with ``verify`` only): while the best verified candidate's render-and-compare
    # evidence is below ``extend_below`` (a correct, unoccluded pose scores ~2.3-2.9 of 3), the next
    # ``top_k_verified`` grid hypotheses are refined and verified too, up to ``max_verified``.
    extend_below: float = 2.0
    max_verified: int = 24
    # Plane-aligned hypotheses (models whose surface is mostly a few planes, e.g. a box): rotations
    # that put a model face normal on the mask's dominant depth-normal direction (and a second face on
    # the second direction when one is seen) join the grid; the grid's ~25 deg spacing leaves a flat
    # face's cheap score too low to rank the true basin among the refined ones.
    plane_hypotheses: bool = True
    plane_model_area: float = 0.6     # the model qualifies when its planar faces cover this area fraction
    plane_spin_deg: float = 15.0      # with one face direction seen: turns about it
    # For mostly planar models, each hypothesis's translation leaves out the model points that could
    # not be seen (outside the image, behind an occluder), iteratively (``_unhidden_translation``).
    unhidden_translation: bool = True
    # Axis-aligned hypotheses (models turning about one axis: a declared continuous symmetry, or
    # near-symmetric twins that are all turns about one axis, e.g. a mug): rotations that put the
    # model axis on the axis read off the instance's depth normals (a curved side's normals are
    # perpendicular to it; seen end-on, the flat end's normal is it), turned every ``axis_spin_deg``.
    axis_hypotheses: bool = True
    axis_spin_deg: float = 30.0
    axis_max_eig: float = 0.1         # normal scatter: smallest eigenvalue (fraction) at most this ...
    axis_min_mid_eig: float = 0.2     # ... and the middle one at least this (else seen end-on: no axis)
    axis_refined: int = 2             # best-scoring axis-aligned hypotheses refined first when the search extends
    # Batched pre-refinement (``batch_icp``): every grid hypothesis also joins the ranking after
    # ``batch_icp_iterations`` point-to-plane steps per distance level on ``batch_icp_points`` model
    # points, so a hypothesis ~30 deg from the truth is scored where ICP takes it, not where it starts.
    # Near-duplicates (several converge to one pose) are dropped from the ranking. 0 iterations = off.
    batch_icp_iterations: int = 3
    batch_icp_points: int = 100
    batch_icp_max_dist_m: tuple[float, ...] = (0.03, 0.02, 0.015, 0.01)
    batch_icp_scene_points: int = 2000  # scene points (pixel stride) the batch ICP pairs with
    duplicate_deg: float = 10.0       # ranked hypotheses this close in rotation ...
    duplicate_m: float = 0.01         # ... and translation to a better one are dropped


@lru_cache(maxsize=1)
def rotation_grid() -> np.ndarray:
    """(120,3,3): the icosahedral group and a copy rotated by half its cell (deterministic)."""
    g = Rotation.create_group("I")
    off = Rotation.from_rotvec(np.array([0.31, 0.19, 0.27]))
    return np.concatenate([g.as_matrix(), (off * g).as_matrix()], 0)


def _pixels(pc: np.ndarray, camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, inside) of camera-frame points ``pc`` (...,3): nearest pixel, clipped into the image
    for lookups, and whether it lies in the image (z clamped at 1 mm; callers test z themselves)."""
    z = np.maximum(pc[..., 2], 1e-3)
    u = np.rint(camera.fx * pc[..., 0] / z + camera.cx).astype(np.int64)
    v = np.rint(camera.fy * pc[..., 1] / z + camera.cy).astype(np.int64)
    inside = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    return np.clip(u, 0, camera.width - 1), np.clip(v, 0, camera.height - 1), inside


def _score_hypotheses(R: np.ndarray, t: np.ndarray, pts: np.ndarray, nrm: np.ndarray, depth: np.ndarray,
                      mask: np.ndarray, camera: PinholeCamera, tol: float,
                      colour: tuple[np.ndarray, np.ndarray] | None = None, colour_weight: float = 0.0,
                      coverage_weight: float = 0.0) -> np.ndarray:
    """(H,) score per hypothesis: (agree - free_space - outside_mask) / facing points.

    ``colour`` = (model point colours (N,3), image (H,W,3) float) adds ``colour_weight`` times the
    colour correlation over the points that agree with depth (``_colour_correlation``).
    """
    pc = np.einsum("hij,nj->hni", R, pts) + t[:, None, :]            # (H,N,3)
    nc = np.einsum("hij,nj->hni", R, nrm)
    facing = (np.einsum("hni,hni->hn", nc, -pc) > 0) & (pc[..., 2] > 1e-3)
    uu, vv, inside = _pixels(pc, camera)
    d = depth[vv, uu]
    valid = facing & inside & (d > 0)
    r = d - pc[..., 2]
    agree = valid & (np.abs(r) <= tol)
    free = valid & (r > tol)
    outside = facing & (~inside | ~mask[vv, uu]) & ~(valid & (r < -tol))
    n = np.maximum(facing.sum(1), 1)
    score = (agree.sum(1) - free.sum(1) - 0.5 * outside.sum(1)) / n
    if colour is not None and colour_weight > 0:
        cols, img = colour
        score = score + colour_weight * _colour_correlation(cols, img[vv, uu], agree & mask[vv, uu])
    if coverage_weight > 0:
        score = score + coverage_weight * _mask_coverage(uu, vv, facing & inside, mask)
    return score


def _mask_stride(mask: np.ndarray, max_points: float) -> int:
    """Pixel stride that leaves about ``max_points`` of the mask's pixels (1: all of them)."""
    return max(1, int(np.sqrt(mask.sum() / max(max_points, 1))))


def _near_side(z: np.ndarray, diameter_m: float) -> np.ndarray:
    """Which of a mask's depths ``z`` are not the far tail (table or background leaking into a
    ragged mask): at most one quarter diameter beyond the 80th percentile."""
    return z <= np.percentile(z, 80) + 0.25 * diameter_m


def _batch_refined(R: np.ndarray, t: np.ndarray, pts: np.ndarray, nrm: np.ndarray, depth: np.ndarray,
                   mask: np.ndarray, camera: PinholeCamera, model: Any, cfg: DepthSearchConfig
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The hypotheses after the batched point-to-plane ICP against the instance's depth (``batch_icp``)."""
    from pose_ros.objects.batch_icp import batch_point_to_plane_icp
    from pose_ros.objects.icp_scene import organized_points_normals

    sp, sn = organized_points_normals(depth, camera, mask, stride=_mask_stride(mask, cfg.batch_icp_scene_points))
    if len(sp) < cfg.min_scene_points:
        return R, t
    near = _near_side(sp[:, 2], model.diameter_m)       # as the scene centroid
    k = cfg.batch_icp_points
    return batch_point_to_plane_icp(R, t, pts[:k], nrm[:k], sp[near], sn[near], cfg.batch_icp_max_dist_m,
                                    cfg.batch_icp_iterations)


def _without_duplicates(ranked: np.ndarray, R: np.ndarray, t: np.ndarray, max_deg: float, max_m: float,
                        keep: int, taken: np.ndarray | None = None) -> np.ndarray:
    """The first ``keep`` of ``ranked`` with no pose within ``max_deg`` and ``max_m`` of a better one
    or of one already ``taken``.

    Why: after the batch ICP several grid rotations land in one basin; refining and verifying each
    copy would spend the shortlist on one pose."""
    cos_max = np.cos(np.radians(max_deg))
    seen = [int(h) for h in (taken if taken is not None else [])]
    out: list[int] = []
    for h in ranked:
        if len(out) >= keep:
            break
        if seen:
            k = np.asarray(seen)
            cos = (np.einsum("kij,ij->k", R[k], R[h]) - 1.0) / 2.0
            if np.any((cos > cos_max) & (np.linalg.norm(t[k] - t[h], axis=1) < max_m)):
                continue
        out.append(int(h))
        seen.append(int(h))
    return np.asarray(out, dtype=np.int64)


def _unhidden_translation(pr: np.ndarray, w: np.ndarray, t: np.ndarray, c_scene: np.ndarray, depth: np.ndarray,
                          mask: np.ndarray, camera: PinholeCamera, tol: float, iterations: int = 3,
                          min_points: int = 10) -> np.ndarray:
    """(H,3) translations putting the centroid of the facing model points (``pr`` (H,N,3) rotated,
    weights ``w`` (H,N)) that could be seen on the scene centroid: points projecting outside the
    image or behind a nearer surface off the mask (an occluder) are left out, iteratively. Why: the
    mask of a cut-off or occluded object holds only its seen part; matching the whole visible
    side's centroid to it puts the hypothesis centimetres off (89 mm for a box 39% visible)."""
    t = t.copy()
    for _ in range(iterations):
        pc = pr + t[:, None, :]
        uu, vv, inside = _pixels(pc, camera)
        inside &= pc[..., 2] > 1e-3
        d = depth[vv, uu]
        hidden = ~mask[vv, uu] & (d > 0) & (d < pc[..., 2] - tol)
        wi = w * (inside & ~hidden)
        ok = (wi > 0).sum(1) >= min_points
        c_in = (pr * wi[..., None]).sum(1) / np.maximum(wi.sum(1), 1e-9)[:, None]
        t[ok] = c_scene[None, :] - c_in[ok]
    return t


def _mask_coverage(u: np.ndarray, v: np.ndarray, sel: np.ndarray, mask: np.ndarray, cells: int = 80) -> np.ndarray:
    """(H,) fraction of the mask's coarse cells that some projected model point (H,N) of ``sel`` falls in.

    The depth/mask terms only ask whether the model's points are consistent with the scene, so a
    hypothesis showing a smaller silhouette than the object (a mug seen end-on inside the mask of a
    mug lying sideways) scores as well as the right one; this term asks whether the model explains
    the whole mask. Cells (~``cells`` over the mask) make a few hundred sparse points enough.
    """
    area = int(mask.sum())
    if area == 0:
        return np.zeros(len(u))
    c = max(2, int(np.sqrt(area / cells)))
    gh, gw = -(-mask.shape[0] // c), -(-mask.shape[1] // c)
    mcell = np.zeros((gh, gw), bool)
    mv, mu = np.nonzero(mask)
    mcell[mv // c, mu // c] = True
    hit = np.zeros((len(u), gh * gw), bool)
    hh, nn = np.nonzero(sel)
    hit[hh, (v[hh, nn] // c) * gw + u[hh, nn] // c] = True
    m = mcell.ravel()
    return (hit & m).sum(1) / max(int(m.sum()), 1)


def _colour_correlation(cols: np.ndarray, obs: np.ndarray, sel: np.ndarray, min_points: int = 15,
                        min_std: float = 0.03) -> np.ndarray:
    """(H,) per-hypothesis correlation of model colours (N,3) with observed colours (H,N,3) on ``sel``.

    Same statistic as ``appearance.AppearanceScorer`` (channel Pearson correlations weighted by the
    model colour spread), on the sampled model points instead of a render: cheap enough for every
    hypothesis of the grid. 0 (no evidence) where too few points are selected.
    """
    w = sel.astype(np.float64)[..., None]                              # (H,N,1)
    n = np.maximum(w.sum(1), 1.0)                                      # (H,1)
    a = np.broadcast_to(cols[None].astype(np.float64), obs.shape)
    ma = (w * a).sum(1) / n
    mb = (w * obs).sum(1) / n
    da, db = a - ma[:, None], obs - mb[:, None]
    va = (w * da * da).sum(1) / n
    vb = (w * db * db).sum(1) / n
    cov = (w * da * db).sum(1) / n
    sa = np.sqrt(va)
    r = cov / np.maximum(sa * np.sqrt(vb), 1e-6)
    wt = np.where(sa >= min_std, sa, 0.0)
    out = (wt * r).sum(1) / np.maximum(wt.sum(1), 1e-9)
    out[(n[:, 0] < min_points) | (wt.sum(1) <= 0)] = 0.0
    return out


def _keypoint_agreement(R: np.ndarray, t: np.ndarray, keypoints_m: np.ndarray, kp_uv: np.ndarray,
                        kp_sigma_px: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """(H,) mean over the 2D evidence points (crop correspondences or voted keypoints) of exp(-d^2 / 2 sigma^2)."""
    pc = np.einsum("hij,kj->hki", R, keypoints_m) + t[:, None, :]
    z = np.maximum(pc[..., 2], 1e-3)
    uv = np.stack([camera.fx * pc[..., 0] / z + camera.cx, camera.fy * pc[..., 1] / z + camera.cy], -1)
    d2 = ((uv - kp_uv[None]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / kp_sigma_px[None] ** 2).mean(1)


_MODEL_PLANES: dict[int, tuple[Any, np.ndarray | None]] = {}


def _normal_clusters(normals: np.ndarray, weights: np.ndarray, min_frac: float, max_deg: float = 10.0,
                     max_clusters: int = 8, max_candidates: int = 600,
                     max_support: int | None = None) -> list[tuple[np.ndarray, float]]:
    """Greedy dominant directions of unit ``normals`` (weighted): [(mean direction, weight fraction)].

    With ``max_support``, a direction's support is counted on that many normals drawn in proportion to
    their weight (a scanned mesh's 10,000-50,000 faces cost 0.3-2.6 s counted in full, once per model,
    paid by the first search for it); the re-centring and the fractions use every normal.
    """
    cos_t = np.cos(np.radians(max_deg))
    total = float(weights.sum())
    left = np.ones(len(normals), bool)
    out: list[tuple[np.ndarray, float]] = []
    if total <= 0:
        return out
    rng = np.random.default_rng(0)
    sample = None
    if max_support is not None and len(normals) > max_support:
        sample = rng.choice(len(normals), max_support, replace=True, p=weights / total)
    for _ in range(max_clusters):
        idx = np.flatnonzero(left)
        if len(idx) == 0:
            break
        if sample is None:
            cand = idx if len(idx) <= max_candidates else rng.choice(idx, max_candidates, replace=False)
            support = (normals[cand] @ normals[idx].T > cos_t) @ weights[idx]
        else:
            pool = sample[left[sample]]
            if len(pool) == 0:
                break
            cand = pool if len(pool) <= max_candidates else rng.choice(pool, max_candidates, replace=False)
            support = (normals[cand] @ normals[pool].T > cos_t).sum(1)
        c = normals[cand[int(np.argmax(support))]]
        for _ in range(2):                                    # re-centre on the inliers' mean
            inl = idx[normals[idx] @ c > cos_t]
            m = (normals[inl] * weights[inl, None]).sum(0)
            c = m / max(np.linalg.norm(m), 1e-12)
        inl = idx[normals[idx] @ c > cos_t]
        frac = float(weights[inl].sum()) / total
        if frac < min_frac:
            break
        out.append((c, frac))
        left[inl] = False
    return out


def _model_planes(model: Any, min_area: float) -> np.ndarray | None:
    """(K,3) model-frame normals of the mesh's planar faces when they cover ``min_area`` of its area."""
    mesh = getattr(model, "mesh", None)
    if mesh is None:
        return None
    key = (id(mesh), round(float(min_area), 4))
    hit = _MODEL_PLANES.get(key)
    if hit is not None and hit[0] is mesh:
        return hit[1]
    fn = np.asarray(mesh.face_normals, np.float64)
    area = np.asarray(mesh.area_faces, np.float64)
    cl = _normal_clusters(fn, area, min_frac=0.03, max_clusters=12, max_deg=5.0, max_candidates=2000, max_support=5000)
    out = np.array([c for c, _ in cl]) if cl and sum(f for _, f in cl) >= min_area else None
    _MODEL_PLANES[key] = (mesh, out)
    return out


def _plane_rotations(model_n: np.ndarray, scene_n: list[np.ndarray], spin_deg: float,
                     pair_tol_deg: float = 15.0) -> np.ndarray:
    """(M,3,3) rotations putting a model face normal on ``scene_n[0]`` (and, with a second scene
    direction, another face whose angle to the first matches on ``scene_n[1]``; else turned about
    ``scene_n[0]`` every ``spin_deg``)."""
    n1 = scene_n[0]
    out = []
    for i, m1 in enumerate(model_n):
        if len(scene_n) >= 2:
            n2 = scene_n[1]
            a_s = np.arccos(np.clip(n1 @ n2, -1, 1))
            for j, m2 in enumerate(model_n):
                if j != i and abs(np.arccos(np.clip(m1 @ m2, -1, 1)) - a_s) <= np.radians(pair_tol_deg):
                    R, _ = Rotation.align_vectors(np.stack([n1, n2]), np.stack([m1, m2]), weights=[100.0, 1.0])
                    out.append(R.as_matrix())
        else:
            R1, _ = Rotation.align_vectors(n1[None], m1[None])
            for a in np.arange(0.0, 360.0, spin_deg):
                out.append((Rotation.from_rotvec(np.radians(a) * n1) * R1).as_matrix())
    return np.asarray(out).reshape(-1, 3, 3)


def _scene_plane_rotations(model: Any, depth_m: np.ndarray, mask: np.ndarray, camera: PinholeCamera,
                           cfg: "DepthSearchConfig") -> np.ndarray | None:
    """Plane-aligned rotation hypotheses for a mostly planar model (see ``DepthSearchConfig``)."""
    from pose_ros.objects.icp_scene import organized_points_normals

    model_n = _model_planes(model, cfg.plane_model_area)
    if model_n is None:
        return None
    _, nrm = organized_points_normals(depth_m, camera, mask, stride=_mask_stride(mask, 3000), normal_step=2)
    if len(nrm) < cfg.min_scene_points:
        return None
    cl = _normal_clusters(nrm, np.ones(len(nrm)), min_frac=0.1, max_deg=12.0, max_clusters=3)
    if not cl:
        return None
    scene_n = [c for c, _ in cl]
    if len(scene_n) >= 2 and abs(scene_n[0] @ scene_n[1]) > np.cos(np.radians(45.0)):
        scene_n = scene_n[:1]                               # not two faces of one solid
    return _plane_rotations(model_n, scene_n[:2], cfg.plane_spin_deg)


def model_turn_axis(model: Any, twins: list[np.ndarray] | None = None,
                    max_deg: float = 5.0) -> tuple[np.ndarray, bool] | None:
    """(model-frame unit axis, continuous) the model turns about, or None: a declared continuous
    symmetry's axis, else the common axis of the near-symmetric ``twins`` that are not half turns,
    when there are at least two and all share it (within ``max_deg``): the mug's turns about its
    axis (its half-turn flips, upside down, are about other axes). A box's twins are all half
    turns: none."""
    cont = getattr(getattr(model, "symmetry", None), "continuous", None)
    if cont:
        a = np.asarray(cont[0][0], np.float64)
        return a / np.linalg.norm(a), True
    if not twins:
        return None
    rv = np.array([Rotation.from_matrix(np.asarray(S)[:3, :3]).as_rotvec() for S in twins])
    ang = np.linalg.norm(rv, axis=1)
    turns = rv[(ang > 1e-6) & (ang < np.radians(170.0))]
    if len(turns) < 2:
        return None
    ax = turns / np.linalg.norm(turns, axis=1, keepdims=True)
    if np.any(np.abs(ax @ ax[0]) < np.cos(np.radians(max_deg))):
        return None
    return ax[0], False


def _axis_rotations(model_axis: np.ndarray, scene_axes: list[np.ndarray], spin_deg: float) -> np.ndarray:
    """(M,3,3) rotations putting ``model_axis`` on each scene axis (both senses), turned about it
    every ``spin_deg`` (360: not turned, for a continuous symmetry)."""
    out = []
    for a in scene_axes:
        for sense in (1.0, -1.0):
            n = sense * a
            R1, _ = Rotation.align_vectors(n[None], model_axis[None])
            for ang in np.arange(0.0, 360.0, spin_deg):
                out.append((Rotation.from_rotvec(np.radians(ang) * n) * R1).as_matrix())
    return np.asarray(out).reshape(-1, 3, 3)


def _scene_axis_rotations(model_axis: tuple[np.ndarray, bool], depth_m: np.ndarray, mask: np.ndarray, camera: PinholeCamera,
                          cfg: "DepthSearchConfig") -> np.ndarray | None:
    """Axis-aligned rotation hypotheses (see ``DepthSearchConfig``). Two scene axes are tried: the
    direction the instance's normals are most perpendicular to (the side of a cylinder-like body:
    within ~3 deg for the demo mug seen from the side) and the one they are most parallel to (its
    flat end seen nearly end-on)."""
    from pose_ros.objects.icp_scene import organized_points_normals

    _, nrm = organized_points_normals(depth_m, camera, mask, stride=_mask_stride(mask, 3000), normal_step=3)
    if len(nrm) < cfg.min_scene_points:
        return None
    lam, vecs = np.linalg.eigh(nrm.T @ nrm / len(nrm))
    if lam[0] > cfg.axis_max_eig or lam[1] < cfg.axis_min_mid_eig:
        return None                 # not a curved side seen across: the axis is not determined
    axis, continuous = model_axis
    return _axis_rotations(axis, [vecs[:, 0]], 360.0 if continuous else cfg.axis_spin_deg)


def depth_pose_search(model: Any, mask: np.ndarray, depth_m: np.ndarray, camera: PinholeCamera,
                      icp_config: Any, config: DepthSearchConfig | None = None,
                      extra_rotations: list[np.ndarray] | None = None,
                      keypoints: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                      rgb: np.ndarray | None = None,
                      verify: Callable[[np.ndarray], float] | None = None,
                      icp_scene: Any | None = None,
                      twins: list[np.ndarray] | None = None) -> list[tuple[np.ndarray, Any]]:
    """ICP-refined candidate poses (best first) as [(T_init, IcpResult)]; [] without enough depth.

    ``extra_rotations`` (e.g. the PnP rotation) join the grid as hypotheses. ``keypoints`` =
    (model points (K,3), image points (K,2), sigma px (K,)): the network's 2D evidence (the crop
    stage's correspondences, or the first stage's voted keypoints) added to the hypothesis score
    (weight ``kp_weight``): depth alone cannot tell texture-defined flips apart (a box turned 180
    deg), these can, even when too coarse for a pose of their own. Collapsed/uninformative ones
    score all hypotheses alike and change nothing.
    ``rgb`` (H,W,3 uint8) adds the correlation of the model's colours with the image
    (``colour_weight``) for textured models, the other evidence that tells such flips apart.
    ``verify(T_cam_obj) -> score`` (a render-and-compare check, higher is better) ranks the
    coarse-ICP candidates instead of the point-sample score, and more of them are refined
    (``top_k_verified``): the render (silhouette, texture) tells apart hypotheses the cheap score
    misranks. (Verifying the grid before ICP as well was measured: slower and no more accurate.)
    While no verified candidate reaches ``extend_below`` the next hypotheses of the ranking are
    refined and verified too, up to ``max_verified``: the cheap score often ranks the true basin
    below the first few, and the render-and-compare check tells when that happened.
    ``icp_scene`` (``icp.prepare_icp_scene(depth_m, camera, mask, icp_config)``, e.g. shared with
    the caller's own ICP of the instance) is the scene side of every ICP here; one is prepared
    when not given: all hypotheses of the instance are refined against the same depth and mask.
    ``twins`` (the model's near-symmetries, ``near_symmetry.near_symmetries``) tell whether the
    model turns about one axis (``model_turn_axis``), which adds the axis-aligned hypotheses.
    """
    from pose_ros.objects.appearance import point_colours
    from pose_ros.objects.icp import prepare_icp_scene, refine_pose_icp

    cfg = config or DepthSearchConfig()
    scene, _ = camera.depth_to_points(depth_m, mask)
    if len(scene) < cfg.min_scene_points:
        return []
    scene = scene[_near_side(scene[:, 2], model.diameter_m)]       # a robust centroid
    c_scene = np.median(scene, axis=0)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(model.points_m), size=min(cfg.num_model_points, len(model.points_m)), replace=False)
    pts, nrm = model.points_m[idx], model.normals[idx]
    colour = None
    if rgb is not None and cfg.colour_weight > 0:
        cols = point_colours(model)
        if cols is not None:
            colour = (cols[idx], np.asarray(rgb, np.float32) / 255.0)
    Rs = rotation_grid()
    if extra_rotations:
        Rs = np.concatenate([Rs, np.asarray(extra_rotations).reshape(-1, 3, 3)], 0)
    n_base = len(Rs)
    if cfg.plane_hypotheses:
        Rp = _scene_plane_rotations(model, np.asarray(depth_m), mask, camera, cfg)
        if Rp is not None and len(Rp):
            Rs = np.concatenate([Rs, Rp], 0)
    n_plane = len(Rs)
    axis = model_turn_axis(model, twins) if cfg.axis_hypotheses or cfg.batch_icp_iterations > 0 else None
    if cfg.axis_hypotheses:
        Ra = None if axis is None else _scene_axis_rotations(axis, np.asarray(depth_m), mask, camera, cfg)
        if Ra is not None and len(Ra):
            Rs = np.concatenate([Rs, Ra], 0)
    # Camera-facing points under each rotation (viewed from the scene centroid's direction).
    view = -c_scene / np.linalg.norm(c_scene)
    nc = np.einsum("hij,nj->hni", Rs, nrm)
    facing = np.einsum("hni,i->hn", nc, view) > 0
    pr = np.einsum("hij,nj->hni", Rs, pts)
    w = facing.astype(np.float64)
    # Plane- and axis-aligned rotations are (nearly) exact: their facing points are weighted by how many pixels
    # they cover (the cosine to the view), as the scene centroid is, so the translation is exact too.
    # (For the grid, ~25 deg off anyway, this weighting was measured worse: mug 92.4 -> 83.3%.)
    w[n_base:] = np.maximum(np.einsum("hni,i->hn", nc[n_base:], view), 0.0)
    c_vis = (pr * w[..., None]).sum(1) / np.maximum(w.sum(1), 1e-9)[:, None]
    t = c_scene[None, :] - c_vis
    planar = _model_planes(model, cfg.plane_model_area) is not None
    if cfg.unhidden_translation and planar:
        t = _unhidden_translation(pr, w, t, c_scene, np.asarray(depth_m), mask, camera, cfg.tolerance_m)
    def cheap_score(R: np.ndarray, tr: np.ndarray) -> np.ndarray:
        sc = _score_hypotheses(R, tr, pts, nrm, np.asarray(depth_m), mask, camera, cfg.tolerance_m,
                               colour, cfg.colour_weight, cfg.coverage_weight)
        if keypoints is not None and len(keypoints[0]):
            sc = sc + cfg.kp_weight * _keypoint_agreement(R, tr, *keypoints, camera)
        return sc

    scores = cheap_score(Rs, t)
    ranked = np.argsort(-scores)
    # The best axis-aligned hypotheses are refined, whatever their cheap score, when the extension
    # starts (nothing verified looks right yet): a curved side's visible centroid lies 2-3 cm behind
    # the scene's, beyond the score's 1 cm band, so near-exact rotations rank low; ICP closes that
    # gap, and their turn about the axis is the twin check's business. Not before: where the grid's
    # first hypotheses already look right, an axis-aligned one only adds a well-fitted twin for the
    # check to tell apart (the mug's print repeats, and the check can prefer the wrong turn). The
    # other axis-aligned ones are dropped: they would only crowd the grid's ranking with near-twins.
    axis_first = ranked[ranked >= n_plane][:cfg.axis_refined] if verify is not None else ranked[:0]
    ranked = ranked[ranked < n_plane]
    order = ranked[:min(cfg.top_k_verified, cfg.max_verified) if verify is not None else cfg.top_k]
    icp_cfg = replace(icp_config, max_translation_correction_m=max(icp_config.max_translation_correction_m,
                                                                  cfg.icp_max_translation_m),
                      max_rotation_correction_rad=max(icp_config.max_rotation_correction_rad, cfg.icp_max_rotation_rad))
    scene_icp = icp_scene if icp_scene is not None else prepare_icp_scene(depth_m, camera, mask, icp_cfg)
    # Coarse ICP (first levels only) for every shortlisted hypothesis, full ICP for the best ones.
    n_coarse = max(1, len(icp_cfg.max_correspondence_m) - 1)
    coarse_cfg = replace(icp_cfg, max_correspondence_m=tuple(icp_cfg.max_correspondence_m[:n_coarse]),
                         voxel_m=tuple(max(v, 0.004) for v in icp_cfg.voxel_m[:n_coarse]),
                         max_iterations=tuple(min(i, cfg.coarse_iterations) for i in icp_cfg.max_iterations[:n_coarse]),
                         max_model_points=min(icp_cfg.max_model_points, cfg.coarse_model_points),
                         centroid_prealign=icp_cfg.centroid_prealign and cfg.coarse_prealign)
    coarse: list[tuple[np.ndarray, np.ndarray]] = []
    verified: list[float] = []

    def refine_coarse(hyps: np.ndarray) -> None:
        for h in hyps:
            T0 = np.eye(4)
            T0[:3, :3] = Rs[h]
            T0[:3, 3] = t[h]
            res = refine_pose_icp(model, T0, depth_m, camera, mask=mask, config=coarse_cfg, scene=scene_icp)
            if res.applied:
                coarse.append((T0, res.T_cam_obj))
                if verify is not None:
                    verified.append(float(verify(res.T_cam_obj)))

    refine_coarse(order)
    if verify is not None:
        def extend() -> bool:
            return not verified or max(verified) < cfg.extend_below

        if len(axis_first) and extend():
            refine_coarse(axis_first)
        rest = ranked[len(order):]
        if extend() and cfg.batch_icp_iterations > 0 and axis is None and not planar:
            # The grid's next hypotheses compete with every grid hypothesis after the batched ICP,
            # scored where it converged; only now, so a search the first shortlist settles pays nothing.
            # Only for free-form models: a model turning about one axis (the mug) or a mostly planar
            # one (the box) has its near-exact axis- or plane-aligned hypotheses already, and the
            # batch-refined ones only added well-fitted wrong turns (demo test set mug 93.9 -> 87.9%,
            # box 92.9 -> 91.1% with them).
            Rb, tb = _batch_refined(Rs[:n_base], t[:n_base], pts, nrm, np.asarray(depth_m), mask, camera, model, cfg)
            sb = cheap_score(Rb, tb)
            first_b = len(Rs)
            Rs, t = np.concatenate([Rs, Rb], 0), np.concatenate([t, tb], 0)
            cand = np.concatenate([rest, first_b + np.arange(len(Rb))])
            cand_scores = np.concatenate([scores[rest], sb])
            rest = _without_duplicates(cand[np.argsort(-cand_scores, kind="stable")], Rs, t, cfg.duplicate_deg,
                                       cfg.duplicate_m, cfg.max_verified - len(order), taken=order)
        done = 0
        last = min(cfg.max_verified - len(order), len(rest))
        while done < last and extend():
            refine_coarse(rest[done:min(done + cfg.top_k_verified, last)])
            done += cfg.top_k_verified
    if not coarse:
        return []
    Rc = np.array([T[:3, :3] for _, T in coarse])
    tc = np.array([T[:3, 3] for _, T in coarse])
    if verify is not None:
        sc = np.array(verified)
    else:
        sc = cheap_score(Rc, tc)
    out = []
    for i in np.argsort(-sc):              # best first; one the full ICP rejects gives way to the next
        res = refine_pose_icp(model, coarse[i][1], depth_m, camera, mask=mask, config=icp_config,
                              scene=scene_icp)
        if res.applied:
            out.append((coarse[i][0], res))
            if len(out) >= cfg.final_k:
                break
    return out
