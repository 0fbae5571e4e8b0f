"""Depth refinement of an object pose: coarse-to-fine robust point-to-plane ICP (Open3D).

Why this shape:
- Source = the model points *visible* at the current pose (self-occlusion removed, see
  ``visibility.py``), target = scene points cropped from the depth image. Matching the visible
  side only avoids the half-thickness bias of whole-model ICP.
- Point-to-plane converges in far fewer iterations than point-to-point on the locally planar
  surfaces of household objects; the scene normals come from the *organised* depth image (cross
  product of neighbouring pixels), which is much faster than KD-tree normal estimation.
- A Tukey kernel and per-level correspondence gates make it robust to clutter, occluders and
  depth outliers; the coarse-to-fine schedule widens the basin of convergence.
- The scene side (mask dilation, normals, voxel targets) lives in ``icp_scene.IcpScene``; a
  caller refining several poses of one instance prepares it once and passes it to each call.
- Bad depth (empty, NaN, out of view, too few points) never raises: the initial pose comes back
  with ``applied=False`` and a ``reason``, so a node can publish the PnP pose and count the drop.
  So do implausibly large corrections (ICP sliding onto a neighbour or the table).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from pose_ros.objects.icp_scene import IcpScene, organized_points_normals, prepare_icp_scene
from pose_ros.objects.scoring import depth_agreement
from pose_ros.objects.visibility import visible_model_points

__all__ = ["IcpConfig", "IcpResult", "IcpScene", "refine_pose_icp", "prepare_icp_scene", "organized_points_normals"]


@dataclass
class IcpConfig:
    """Coarse-to-fine ICP schedule and acceptance limits (metres, radians).

    The three tuples are per level and must have equal length. ``voxel_m`` 0 means the level
    uses the (already stride-subsampled) scene points as they are.
    """

    max_correspondence_m: tuple[float, ...] = (0.02, 0.01, 0.005)   # coarse-to-fine
    voxel_m: tuple[float, ...] = (0.004, 0.002, 0.0)               # 0 = no downsampling
    max_iterations: tuple[int, ...] = (30, 20, 15)
    min_scene_points: int = 50
    robust_kernel_m: float = 0.01        # Tukey scale for outlier robustness (capped per level)
    max_translation_correction_m: float = 0.05    # larger corrections are rejected -> fallback
    max_rotation_correction_rad: float = 0.5
    # --- extensions beyond the minimal contract (all have safe defaults) ---
    min_fitness: float = 0.2             # final fraction of visible model points with a match
    mask_dilate_px: int = 4              # grow a given mask (segmentation edges are ragged)
    max_scene_points: int = 6000         # subsample the crop with a pixel stride above this
    min_model_points: int = 20           # visible model points needed at the initial pose
    max_model_points: int = 600          # visible model points used per ICP level (speed)
    depth_discontinuity_m: float = 0.01  # neighbour depth jump that invalidates a normal
    convergence_rel: float = 1e-4        # stop a level when fitness and rmse change less than this
    centroid_prealign: bool = True       # with a mask: first shift the model so the visible-point and
                                         # masked-scene centroids agree (widens the basin to ~5 cm)

    def __post_init__(self) -> None:
        n = len(self.max_correspondence_m)
        if n == 0 or len(self.voxel_m) != n or len(self.max_iterations) != n:
            raise ValueError(
                "IcpConfig: max_correspondence_m, voxel_m and max_iterations must be non-empty and of equal "
                f"length (one entry per level); got {len(self.max_correspondence_m)}, {len(self.voxel_m)}, "
                f"{len(self.max_iterations)}")
        if any(not (d > 0) for d in self.max_correspondence_m):
            raise ValueError(f"IcpConfig.max_correspondence_m must be > 0; got {self.max_correspondence_m}")
        if any(v < 0 for v in self.voxel_m):
            raise ValueError(f"IcpConfig.voxel_m must be >= 0 (0 = no downsampling); got {self.voxel_m}")
        if any(int(i) < 1 for i in self.max_iterations):
            raise ValueError(f"IcpConfig.max_iterations must be >= 1; got {self.max_iterations}")
        if not self.robust_kernel_m > 0:
            raise ValueError(f"IcpConfig.robust_kernel_m must be > 0; got {self.robust_kernel_m}")


@dataclass
class IcpResult:
    """Outcome of one refinement. ``T_cam_obj`` is the refined pose when ``applied``, else the
    initial pose unchanged; ``reason`` says why it was not applied ("" when applied)."""

    T_cam_obj: np.ndarray
    applied: bool
    fitness: float                    # fraction of visible model points matched at the finest level
    inlier_rmse_m: float              # RMS point-to-point distance of those matches (inf if none)
    iterations: int                   # levels*iterations actually run (upper bound reported by Open3D)
    correction_translation_m: float   # |t_refined - t_init|
    correction_rotation_rad: float    # geodesic angle between R_refined and R_init
    reason: str
    num_scene_points: int = 0
    num_model_points: int = 0
    time_s: float = 0.0
    T_refined_cam_obj: np.ndarray | None = field(default=None, repr=False)  # ICP output even if rejected


def _check_pose(T) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T_init_cam_obj must be a finite 4x4 transform; got shape {np.shape(T)} "
                         "(convert (R, t) with core.transforms.make_T)")
    return T


def _rot_angle(R_a: np.ndarray, R_b: np.ndarray) -> float:
    c = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(math.acos(min(1.0, max(-1.0, c))))


def _cap_points(points: np.ndarray, max_points: int) -> np.ndarray:
    """Evenly strided subset of at most ``max_points`` rows (model samples are already uniform)."""
    if max_points <= 0 or points.shape[0] <= max_points:
        return points
    step = int(math.ceil(points.shape[0] / max_points))
    return points[::step]


def _icp_level(source_pts: np.ndarray, target, level: tuple[float, float, int], config: IcpConfig,
               T_start: np.ndarray):
    """One ICP level from ``T_start``: returns (T_cam_obj, Open3D result) or (None, None)."""
    import open3d as o3d

    max_corr, _, max_it = level
    source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_cap_points(source_pts, config.max_model_points)))
    kernel = o3d.pipelines.registration.TukeyLoss(k=min(config.robust_kernel_m, max_corr))
    est = o3d.pipelines.registration.TransformationEstimationPointToPlane(kernel)
    crit = o3d.pipelines.registration.ICPConvergenceCriteria(relative_fitness=config.convergence_rel,
                                                             relative_rmse=config.convergence_rel,
                                                             max_iteration=int(max_it))
    reg = o3d.pipelines.registration.registration_icp(source, target, max_corr, np.eye(4), est, crit)
    dT = np.asarray(reg.transformation)
    if not np.all(np.isfinite(dT)):
        return None, None
    return dT @ T_start, reg


_SYM_ROTATIONS: dict[int, tuple[object, np.ndarray]] = {}


def _symmetry_rotations(sym) -> np.ndarray:
    """(S,3,3) rotations of ``sym.transforms(72)``, cached per symmetry object (building the
    continuous steps cost ~1 ms, paid by every ICP call before)."""
    hit = _SYM_ROTATIONS.get(id(sym))
    if hit is None or hit[0] is not sym:                 # ids of collected objects get reused
        if len(_SYM_ROTATIONS) >= 256:
            _SYM_ROTATIONS.clear()
        hit = (sym, np.array([S[:3, :3] for S in sym.transforms(continuous_steps=72)]))
        _SYM_ROTATIONS[id(sym)] = hit
    return hit[1]


def _symmetric_rotation_correction(model, T_a: np.ndarray, T_b: np.ndarray) -> float:
    """Rotation between two poses modulo the model's symmetries (a can spinning about its axis
    is not a correction depth can see, so it must not trip the rejection limit)."""
    sym = getattr(model, "symmetry", None)
    R_a = T_a[:3, :3]
    if sym is None or not getattr(sym, "is_symmetric", False):
        return _rot_angle(R_a, T_b[:3, :3])
    # trace(R_a^T R_b S) for every S at once; the smallest angle has the largest trace.
    M = R_a.T @ T_b[:3, :3]
    tr = np.einsum("ij,sji->s", M, _symmetry_rotations(sym))
    return float(math.acos(min(1.0, max(-1.0, (float(tr.max()) - 1.0) / 2.0))))


def _fail(T_init: np.ndarray, reason: str, t0: float, **kw) -> IcpResult:
    return IcpResult(T_cam_obj=T_init.copy(), applied=False, fitness=kw.pop("fitness", 0.0),
                     inlier_rmse_m=kw.pop("inlier_rmse_m", float("inf")), iterations=kw.pop("iterations", 0),
                     correction_translation_m=kw.pop("correction_translation_m", 0.0),
                     correction_rotation_rad=kw.pop("correction_rotation_rad", 0.0), reason=reason,
                     time_s=time.perf_counter() - t0, **kw)


def refine_pose_icp(model, T_init_cam_obj, depth_m, camera, mask: np.ndarray | None = None,
                    config: IcpConfig = IcpConfig(), scene: IcpScene | None = None) -> IcpResult:
    """Refine ``T_init_cam_obj`` against ``depth_m`` (H,W metres, 0/NaN invalid).

    ``model`` is an ``ObjectModel`` (uses ``points_m``, ``normals``, ``diameter_m``); ``mask``
    (H,W bool) restricts the scene to the detected instance. Raises ``ValueError`` only for a
    malformed initial pose (or a ``scene`` prepared from other arrays); every problem with the
    depth or mask returns the initial pose with ``applied=False`` and a ``reason``.
    ``scene`` = ``prepare_icp_scene(depth_m, camera, mask, config)`` shares the scene work
    between several poses refined against the same depth and mask (same result, faster).
    """
    t0 = time.perf_counter()
    T_init = _check_pose(T_init_cam_obj)
    if scene is None:
        scene = prepare_icp_scene(depth_m, camera, mask, config)
    elif not scene.matches(depth_m, mask, camera, config):
        raise ValueError("scene was prepared from other depth/mask arrays, another camera or other scene settings "
                         "(mask_dilate_px, depth_discontinuity_m, max_scene_points); prepare one with "
                         "prepare_icp_scene(depth_m, camera, mask, config) for these")
    if scene.reason:
        return _fail(T_init, scene.reason, t0)
    depth, mask = scene.depth, scene.mask

    vis = visible_model_points(model, T_init, camera)
    if vis.index.size < config.min_model_points:
        return _fail(T_init, f"object not in view at the initial pose ({vis.index.size} visible model points)", t0,
                     num_model_points=int(vis.index.size))
    z_vis = vis.points_cam_m[:, 2]
    # Depth gate: scene points far in front of / behind the model at the initial pose cannot be
    # this object (occluders, table, background); the gate is the coarse correspondence distance
    # plus the model's own depth extent.
    gate = config.max_correspondence_m[0] + config.max_translation_correction_m
    crop, n_roi = scene.crop(model, T_init, float(z_vis.min()) - gate, float(z_vis.max()) + gate,
                             float(z_vis.mean()), config)
    if n_roi < config.min_scene_points:
        return _fail(T_init, f"too few valid depth points near the object ({n_roi} < {config.min_scene_points})",
                     t0, num_model_points=int(vis.index.size), num_scene_points=n_roi)
    scene_pts = crop.points
    if scene_pts.shape[0] < config.min_scene_points:
        return _fail(T_init, f"too few scene points with valid normals ({scene_pts.shape[0]})", t0,
                     num_model_points=int(vis.index.size), num_scene_points=int(scene_pts.shape[0]))

    starts = [(T_init, vis)]
    if mask is not None and config.centroid_prealign:
        # Second candidate start, translation only: the masked scene is (mostly) this object, so
        # matching centroids removes most of a large translation error before nearest neighbours
        # are used. Under occlusion the centroids are biased, so it only competes with the
        # initial pose: whichever fits better after the coarse level wins.
        shift = crop.centroid - vis.points_cam_m.mean(axis=0)
        if config.max_correspondence_m[-1] < np.linalg.norm(shift) <= config.max_translation_correction_m:
            T_shift = T_init.copy()
            T_shift[:3, 3] += shift
            vis_s = visible_model_points(model, T_shift, camera)
            if vis_s.index.size >= config.min_model_points:
                starts.append((T_shift, vis_s))
    levels = list(zip(config.max_correspondence_m, config.voxel_m, config.max_iterations))
    targets = [crop.target(v) for v in config.voxel_m]
    iters = 0
    best = None
    for T_start, vis_start in starts:
        T_cur, reg = _icp_level(vis_start.points_cam_m, targets[0], levels[0], config, T_start)
        iters += int(levels[0][2])
        if T_cur is None:
            continue
        # Candidates are ranked by depth agreement (free-space violations count against), not
        # by ICP fitness: a model slid over the visible part of an occluded object fits more
        # points but sees through the background where it should be solid.
        score = depth_agreement(model, T_cur, depth, camera, mask, config.max_correspondence_m[0]).score \
            if len(starts) > 1 else 1.0
        if best is None or score > best[2] + 1e-3:
            best = (T_cur, reg, score)
    if best is None:
        return _fail(T_init, "ICP diverged (non-finite transform)", t0, iterations=iters)
    T_cur, reg, _ = best
    src_n = vis.index.size
    for level in range(1, len(levels)):
        vis = visible_model_points(model, T_cur, camera)
        if vis.index.size < config.min_model_points:
            return _fail(T_init, "model left the view during ICP", t0, iterations=iters,
                         num_scene_points=int(scene_pts.shape[0]), num_model_points=int(vis.index.size))
        src_n = vis.index.size
        T_next, reg = _icp_level(vis.points_cam_m, targets[level], levels[level], config, T_cur)
        iters += int(levels[level][2])
        if T_next is None:
            return _fail(T_init, "ICP diverged (non-finite transform)", t0, iterations=iters)
        T_cur = T_next

    # Statistics of the last iterate of the finest level (one step behind T_cur, which is
    # converged by then); recomputing them would cost another KD-tree build.
    fitness = float(reg.fitness)
    rmse = float(reg.inlier_rmse) if reg.fitness > 0 else float("inf")
    dt = float(np.linalg.norm(T_cur[:3, 3] - T_init[:3, 3]))
    dr = _symmetric_rotation_correction(model, T_init, T_cur)
    stats = dict(fitness=fitness, inlier_rmse_m=rmse, iterations=iters, correction_translation_m=dt,
                 correction_rotation_rad=dr, num_scene_points=int(scene_pts.shape[0]),
                 num_model_points=int(src_n), T_refined_cam_obj=T_cur)
    if dt > config.max_translation_correction_m:
        return _fail(T_init, f"translation correction {dt * 1000:.1f} mm exceeds "
                             f"{config.max_translation_correction_m * 1000:.1f} mm", t0, **stats)
    if dr > config.max_rotation_correction_rad:
        return _fail(T_init, f"rotation correction {math.degrees(dr):.1f} deg exceeds "
                             f"{math.degrees(config.max_rotation_correction_rad):.1f} deg", t0, **stats)
    if fitness < config.min_fitness:
        return _fail(T_init, f"fitness {fitness:.2f} below {config.min_fitness:.2f} (depth does not support the pose)",
                     t0, **stats)
    return IcpResult(T_cam_obj=T_cur, applied=True, reason="", time_s=time.perf_counter() - t0, **stats)
