"""6DoF pose error functions and BOP-style recall/AR aggregation.

Implemented from the definitions in Hodan et al., "BOP: Benchmark for 6D Object Pose Estimation"
(ECCV 2018) and the BOP Challenge 2019/2020 evaluation (Hodan et al., ECCV-W 2020):

- ADD   = mean_x ||T_est x - T_gt x||                     (Hinterstoisser et al. 2012)
- ADD-S = mean_x min_y ||T_est x - T_gt y||               (nearest neighbour, symmetric objects)
- ADD(-S): ADD-S for objects with symmetries, else ADD; correct if < 0.1 * diameter.
- MSSD  = min_S max_x ||T_est x - T_gt S x||              (S over the object's symmetries)
- MSPD  = min_S max_x ||proj(T_est x) - proj(T_gt S x)||  (pixels)
- VSD   = fraction of pixels in V_est u V_gt that are not "in both with |D_est - D_gt| < tau",
          V = visible part of the rendered model (test depth not more than delta in front of
          it, or test depth missing); depths compared as distances along the ray.
- AR_MSSD: recall averaged over thresholds 0.05..0.5 * d; AR_MSPD: over 5..50 px * w/640
  (BOP scales by image width w relative to 640); AR_VSD: over tau 0.05..0.5 * d and
  thresholds 0.05..0.5, delta 15 mm. AR = mean(AR_VSD, AR_MSSD, AR_MSPD). A missing estimate
  counts as incorrect at every threshold.

Model points: ``ObjectModel.points_m`` (area-uniform surface samples) stand in for BOP's
resampled ``models_eval`` vertices; pass ``points_m=`` to use others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "add_error", "adds_error", "add_s_error", "mssd_error", "mspd_error", "vsd_errors", "render_model_depth",
    "MSSD_THRESHOLDS_REL", "MSPD_THRESHOLDS_PX", "VSD_TAUS_REL", "VSD_THRESHOLDS", "VSD_DELTA_M",
    "mspd_thresholds_px", "PoseRecord", "PoseErrors", "compute_errors", "EvalReport", "evaluate_poses",
    "format_report", "plot_recall_curves", "symmetry_transforms",
]

MSSD_THRESHOLDS_REL = np.arange(0.05, 0.501, 0.05)           # x diameter
MSPD_THRESHOLDS_PX = np.arange(5.0, 50.01, 5.0)              # x (image width / 640)
VSD_TAUS_REL = np.arange(0.05, 0.501, 0.05)                  # x diameter
VSD_THRESHOLDS = np.arange(0.05, 0.501, 0.05)
VSD_DELTA_M = 0.015
ADD_THRESHOLD_REL = 0.1


class PoseMetricError(ValueError):
    """Malformed input to a pose metric; the message names the argument and the fix."""


def _T(T, name: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise PoseMetricError(f"{name} must be a finite 4x4 transform; got shape {T.shape}")
    return T


def _pts(points_m) -> np.ndarray:
    p = np.asarray(points_m, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise PoseMetricError(f"points_m must be a non-empty (N,3) array; got shape {p.shape}")
    return p


def _apply(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ T[:3, :3].T + T[:3, 3]


def symmetry_transforms(model, continuous_steps: int = 72) -> list[np.ndarray]:
    """All symmetry transforms of ``model`` (identity first); [I] if it has none."""
    sym = getattr(model, "symmetry", None)
    if sym is None:
        return [np.eye(4)]
    return sym.transforms(continuous_steps=continuous_steps)


def add_error(points_m: np.ndarray, T_est: np.ndarray, T_gt: np.ndarray) -> float:
    """ADD in metres: mean distance between corresponding model points."""
    p = _pts(points_m)
    return float(np.linalg.norm(_apply(_T(T_est, "T_est"), p) - _apply(_T(T_gt, "T_gt"), p), axis=1).mean())


def adds_error(points_m: np.ndarray, T_est: np.ndarray, T_gt: np.ndarray) -> float:
    """ADD-S in metres: mean distance from each estimated point to the nearest GT point."""
    from scipy.spatial import cKDTree

    p = _pts(points_m)
    d, _ = cKDTree(_apply(_T(T_gt, "T_gt"), p)).query(_apply(_T(T_est, "T_est"), p), k=1)
    return float(d.mean())


def add_s_error(model, T_est: np.ndarray, T_gt: np.ndarray, points_m: np.ndarray | None = None) -> float:
    """ADD(-S): ADD-S when the model has symmetries, ADD otherwise (metres)."""
    p = model.points_m if points_m is None else points_m
    if getattr(model, "is_symmetric", False):
        return adds_error(p, T_est, T_gt)
    return add_error(p, T_est, T_gt)


def mssd_error(points_m: np.ndarray, T_est: np.ndarray, T_gt: np.ndarray,
               sym_transforms: Sequence[np.ndarray] = (np.eye(4),)) -> float:
    """MSSD in metres: min over symmetries of the max point distance."""
    p = _pts(points_m)
    pe = _apply(_T(T_est, "T_est"), p)
    T_gt = _T(T_gt, "T_gt")
    best = math.inf
    for S in sym_transforms:
        e = float(np.sqrt(((pe - _apply(T_gt @ np.asarray(S, float), p)) ** 2).sum(axis=1).max()))
        best = min(best, e)
    return best


def mspd_error(points_m: np.ndarray, T_est: np.ndarray, T_gt: np.ndarray, camera,
               sym_transforms: Sequence[np.ndarray] = (np.eye(4),)) -> float:
    """MSPD in pixels: min over symmetries of the max 2D distance of projected points.
    Points behind the camera (z <= 0) make the error infinite."""
    p = _pts(points_m)
    ue = camera.project(_apply(_T(T_est, "T_est"), p))
    if not np.all(np.isfinite(ue)):
        return math.inf
    T_gt = _T(T_gt, "T_gt")
    best = math.inf
    for S in sym_transforms:
        ug = camera.project(_apply(T_gt @ np.asarray(S, float), p))
        if not np.all(np.isfinite(ug)):
            continue
        best = min(best, float(np.sqrt(((ue - ug) ** 2).sum(axis=1).max())))
    return best


def mspd_thresholds_px(image_width: int) -> np.ndarray:
    """BOP MSPD thresholds 5..50 px scaled by image_width / 640."""
    return MSPD_THRESHOLDS_PX * (float(image_width) / 640.0)


_RENDERERS: dict[tuple, object] = {}


def render_model_depth(model, T_cam_obj: np.ndarray, camera) -> np.ndarray:
    """(H,W) z-depth in metres of the model alone at ``T_cam_obj`` (0 = no surface).

    Uses the project's ray-casting renderer (one cached renderer per camera).
    """
    from pose_ros.synth.renderer import RgbdRenderer

    key = (camera.width, camera.height, tuple(np.round(camera.K.ravel(), 6)), tuple(camera.dist_coeffs.ravel()))
    r = _RENDERERS.get(key)
    if r is None:
        if len(_RENDERERS) > 8:
            _RENDERERS.clear()
        r = RgbdRenderer(camera)
        _RENDERERS[key] = r
    bg = np.zeros((camera.height, camera.width, 3), np.uint8)
    return r.render([(model, _T(T_cam_obj, "T_cam_obj"))], background=bg).depth_m


def _z_to_distance(depth_m: np.ndarray, camera) -> np.ndarray:
    """z-depth image -> distance from the camera centre along each pixel ray (BOP compares
    distances so that the tolerance tau is isotropic)."""
    H, W = depth_m.shape
    vv, uu = np.mgrid[0:H, 0:W]
    y = (vv - camera.cy) / camera.fy
    x = (uu - camera.cx - camera.K[0, 1] * y) / camera.fx
    return depth_m * np.sqrt(x * x + y * y + 1.0)


def _visible(dist_test: np.ndarray, dist_model: np.ndarray, delta_m: float) -> np.ndarray:
    """Visible part of a rendered model: rendered there, and the test surface is not more than
    delta in front of it (or the test depth is missing; BOP 2019 convention)."""
    return (dist_model > 0) & ((dist_model - dist_test <= delta_m) | (dist_test <= 0))


def vsd_errors(depth_test_m: np.ndarray, depth_est_m: np.ndarray, depth_gt_m: np.ndarray, camera,
               taus_m: Sequence[float], delta_m: float = VSD_DELTA_M) -> np.ndarray:
    """VSD error for each tau (array, same length as ``taus_m``); inputs are z-depth images in
    metres (0 = invalid / no surface), e.g. from :func:`render_model_depth`."""
    shapes = {np.shape(depth_test_m), np.shape(depth_est_m), np.shape(depth_gt_m)}
    if len(shapes) != 1 or np.shape(depth_test_m) != (camera.height, camera.width):
        raise PoseMetricError(f"depth images must all be (H,W)=({camera.height},{camera.width}); got {shapes}")
    dt = np.nan_to_num(np.asarray(depth_test_m, np.float64), nan=0.0)
    dist_test = _z_to_distance(dt, camera)
    dist_est = _z_to_distance(np.asarray(depth_est_m, np.float64), camera)
    dist_gt = _z_to_distance(np.asarray(depth_gt_m, np.float64), camera)
    v_gt = _visible(dist_test, dist_gt, delta_m)
    v_est = _visible(dist_test, dist_est, delta_m)
    v_est |= v_gt & (dist_est > 0)   # BOP 2019: est. visibility includes GT-visible pixels it covers
    union = v_gt | v_est
    n = int(union.sum())
    taus = np.asarray(taus_m, np.float64)
    if n == 0:
        return np.ones(taus.shape)
    both = v_gt & v_est
    diff = np.abs(dist_est[both] - dist_gt[both])
    good = (diff[None, :] < taus[:, None]).sum(axis=1)
    return 1.0 - good / n


# ----------------------------------------------------------------------------- aggregation
@dataclass
class PoseRecord:
    """One GT instance and its estimate (``T_est`` None = no estimate: counts as a miss).

    ``depth_m`` (test depth) and ``camera`` enable VSD; ``camera`` alone enables MSPD.
    """

    obj_id: int
    model: object
    T_gt: np.ndarray
    T_est: np.ndarray | None
    camera: object | None = None
    depth_m: np.ndarray | None = None
    scene_id: int = 0
    im_id: int = 0
    score: float = 1.0


@dataclass
class PoseErrors:
    obj_id: int
    diameter_m: float
    add_s_m: float = math.inf
    mssd_m: float = math.inf
    mspd_px: float = math.inf
    vsd: np.ndarray | None = None     # per tau
    image_width: int = 640
    te_m: float = math.inf            # translation error
    re_deg: float = math.inf          # rotation error (no symmetry handling)


def compute_errors(rec: PoseRecord, vsd: bool = True) -> PoseErrors:
    """All errors for one record (inf / all-ones when the estimate is missing)."""
    m = rec.model
    diam = float(m.diameter_m)
    width = int(rec.camera.width) if rec.camera is not None else 640
    out = PoseErrors(rec.obj_id, diam, image_width=width)
    if rec.T_est is None:
        if vsd and rec.depth_m is not None and rec.camera is not None:
            out.vsd = np.ones(len(VSD_TAUS_REL))
        return out
    T_est, T_gt = _T(rec.T_est, "T_est"), _T(rec.T_gt, "T_gt")
    syms = symmetry_transforms(m)
    out.add_s_m = add_s_error(m, T_est, T_gt)
    out.mssd_m = mssd_error(m.points_m, T_est, T_gt, syms)
    out.te_m = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))
    c = (np.trace(T_est[:3, :3].T @ T_gt[:3, :3]) - 1.0) / 2.0
    out.re_deg = math.degrees(math.acos(min(1.0, max(-1.0, c))))
    if rec.camera is not None:
        out.mspd_px = mspd_error(m.points_m, T_est, T_gt, rec.camera, syms)
        if vsd and rec.depth_m is not None:
            d_est = render_model_depth(m, T_est, rec.camera)
            d_gt = render_model_depth(m, T_gt, rec.camera)
            out.vsd = vsd_errors(rec.depth_m, d_est, d_gt, rec.camera, VSD_TAUS_REL * diam)
    return out


def _recalls(errs: list[PoseErrors]) -> dict[str, np.ndarray]:
    """Per-threshold recall arrays for a group of instances."""
    n = len(errs)
    mssd = np.array([[e.mssd_m < t * e.diameter_m for t in MSSD_THRESHOLDS_REL] for e in errs], float)
    mspd = np.array([[e.mspd_px < t for t in mspd_thresholds_px(e.image_width)] for e in errs], float)
    adds = np.array([e.add_s_m < ADD_THRESHOLD_REL * e.diameter_m for e in errs], float)
    add_curve = np.array([[e.add_s_m < t * e.diameter_m for t in MSSD_THRESHOLDS_REL] for e in errs], float)
    out = {"mssd": mssd.mean(axis=0), "mspd": mspd.mean(axis=0), "add_s": np.array([adds.mean()]),
           "add_s_curve": add_curve.mean(axis=0), "n": np.array([n])}
    v = [e.vsd for e in errs if e.vsd is not None]
    if v and len(v) == n:
        V = np.stack(v)  # (n, taus)
        out["vsd"] = np.array([[(V[:, i] < th).mean() for th in VSD_THRESHOLDS] for i in range(V.shape[1])])
    return out


@dataclass
class EvalReport:
    """Recalls per object id and over all instances (BOP averages over instances)."""

    per_object: dict[int, dict[str, float]] = field(default_factory=dict)
    overall: dict[str, float] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)   # overall recall per threshold
    errors: list[PoseErrors] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"overall": self.overall, "per_object": {str(k): v for k, v in self.per_object.items()},
                "curves": {k: np.asarray(v).tolist() for k, v in self.curves.items()}}


def _summary(r: dict[str, np.ndarray]) -> dict[str, float]:
    s = {"n": int(r["n"][0]), "ADD(-S)": float(r["add_s"][0]), "AR_MSSD": float(r["mssd"].mean()),
         "AR_MSPD": float(r["mspd"].mean())}
    if "vsd" in r:
        s["AR_VSD"] = float(r["vsd"].mean())
        s["AR"] = (s["AR_VSD"] + s["AR_MSSD"] + s["AR_MSPD"]) / 3.0
    return s


def evaluate_poses(records: Sequence[PoseRecord], vsd: bool = True) -> EvalReport:
    """Errors for every record, recalls per object and overall (``AR`` only when VSD could be
    computed for every record, i.e. each has ``depth_m`` and ``camera``)."""
    if not records:
        raise PoseMetricError("evaluate_poses needs at least one PoseRecord")
    errs = [compute_errors(r, vsd=vsd) for r in records]
    rep = EvalReport(errors=errs)
    for oid in sorted({e.obj_id for e in errs}):
        rep.per_object[oid] = _summary(_recalls([e for e in errs if e.obj_id == oid]))
    allr = _recalls(errs)
    rep.overall = _summary(allr)
    rep.curves = {k: v for k, v in allr.items() if k in ("mssd", "mspd", "add_s_curve", "vsd")}
    return rep


def format_report(rep: EvalReport, title: str = "pose evaluation") -> str:
    """Plain-text table: one row per object and an 'all' row (recalls in %)."""
    cols = ["n", "ADD(-S)", "AR_MSSD", "AR_MSPD", "AR_VSD", "AR"]
    present = [c for c in cols if c in rep.overall]
    lines = [title, "obj   " + " ".join(f"{c:>8}" for c in present)]

    def row(name: str, s: dict[str, float]) -> str:
        vals = [f"{s[c]:8d}" if c == "n" else (f"{100 * s[c]:8.1f}" if c in s else f"{'-':>8}") for c in present]
        return f"{name:<5} " + " ".join(vals)

    for oid, s in rep.per_object.items():
        lines.append(row(str(oid), s))
    lines.append(row("all", rep.overall))
    return "\n".join(lines)


def plot_recall_curves(rep: EvalReport, path: str | Path, title: str = "recall vs threshold") -> Path:
    """PNG with overall recall curves: ADD(-S) and MSSD vs threshold/diameter, MSPD vs px,
    VSD vs error threshold (mean over tau)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 3 if "vsd" in rep.curves else 2
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6))
    ax = axes[0]
    ax.plot(MSSD_THRESHOLDS_REL, rep.curves["add_s_curve"], "o-", label="ADD(-S)")
    ax.plot(MSSD_THRESHOLDS_REL, rep.curves["mssd"], "s-", label="MSSD")
    ax.set_xlabel("threshold / diameter")
    ax.set_ylabel("recall")
    ax.legend()
    ax = axes[1]
    ax.plot(MSPD_THRESHOLDS_PX, rep.curves["mspd"], "o-", label="MSPD")
    ax.set_xlabel("threshold [px at 640 wide]")
    ax.legend()
    if n == 3:
        ax = axes[2]
        ax.plot(VSD_THRESHOLDS, rep.curves["vsd"].mean(axis=0), "o-", label="VSD (mean over tau)")
        ax.set_xlabel("VSD error threshold")
        ax.legend()
    for a in axes:
        a.set_ylim(0, 1.02)
        a.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
