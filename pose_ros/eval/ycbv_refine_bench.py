"""Real YCB-Video refinement benchmark: our ICP from perturbed GT poses vs OpenCV's PPF matcher.

Why this benchmark: the synthetic numbers say nothing about real sensor noise (Xtion depth holes,
edge flying pixels, occlusion). Here every GT object of the real frames in
``../shared/data/ycbv_real`` is perturbed by fixed translation/rotation magnitudes in seeded random
directions and refined; the PPF baseline (global, needs no initial pose) runs on the same
objects with the same masks. Scene points for both methods come from the GT *visible* mask,
read from the dataset's ``-label.png`` (label value = BOP obj_id for YCB-V).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from pose_ros.core.camera import PinholeCamera

log = logging.getLogger(__name__)

__all__ = ["YcbvGt", "YcbvFrame", "iter_ycbv_frames", "perturb_pose", "RefineCase", "run_refine_bench",
           "summarize", "format_summary", "plot_summary", "DEFAULT_TRANSLATIONS_M", "DEFAULT_ROTATIONS_DEG"]

DEFAULT_TRANSLATIONS_M = (0.01, 0.02, 0.04)
DEFAULT_ROTATIONS_DEG = (5.0, 10.0, 20.0)


class YcbvDataError(ValueError):
    """The YCB-V folder is missing files or has an unexpected layout; the message says which."""


@dataclass
class YcbvGt:
    obj_id: int
    T_cam_obj: np.ndarray      # 4x4, metres
    mask_visib: np.ndarray     # (H,W) bool from the label png


@dataclass
class YcbvFrame:
    scene: str
    im_id: int
    depth_m: np.ndarray
    camera: PinholeCamera
    gt: list[YcbvGt] = field(default_factory=list)


def _scene_dirs(data_dir: Path) -> list[Path]:
    dirs = sorted(p.parent for p in data_dir.glob("*/*/scene_gt_bop.json"))
    dirs += sorted(p.parent for p in data_dir.glob("*/scene_gt_bop.json"))
    return sorted(set(dirs))


def iter_ycbv_frames(data_dir: str | Path) -> Iterator[YcbvFrame]:
    """Frames of ``ycbv_real`` (``data/NNNN`` and ``special_data/NNNN``) with BOP GT (metres)
    and visible masks from ``XXXXXX-label.png``; depth = raw * depth_scale mm."""
    import cv2

    data_dir = Path(data_dir)
    scenes = _scene_dirs(data_dir)
    if not scenes:
        raise YcbvDataError(f"no */scene_gt_bop.json under {data_dir}; pass the ycbv_real folder "
                            "(e.g. ../shared/data/ycbv_real)")
    for sd in scenes:
        gt_all = json.loads((sd / "scene_gt_bop.json").read_text())
        cams = json.loads((sd / "scene_camera_bop.json").read_text())
        for key in sorted(gt_all, key=int):
            im = int(key)
            dpath = sd / f"{im:06d}-depth.png"
            lpath = sd / f"{im:06d}-label.png"
            raw = cv2.imread(str(dpath), cv2.IMREAD_UNCHANGED)
            label = cv2.imread(str(lpath), cv2.IMREAD_UNCHANGED)
            if raw is None or label is None:
                raise YcbvDataError(f"cannot read {dpath} or {lpath}")
            cam = cams[key]
            H, W = raw.shape
            camera = PinholeCamera(np.asarray(cam["cam_K"], float).reshape(3, 3), W, H)
            depth_m = raw.astype(np.float32) * np.float32(float(cam["depth_scale"]) * 1e-3)
            gts = []
            for g in gt_all[key]:
                T = np.eye(4)
                T[:3, :3] = np.asarray(g["cam_R_m2c"], float).reshape(3, 3)
                T[:3, 3] = np.asarray(g["cam_t_m2c"], float) * 1e-3
                gts.append(YcbvGt(int(g["obj_id"]), T, label == int(g["obj_id"])))
            yield YcbvFrame(f"{sd.parent.name}/{sd.name}", im, depth_m, camera, gts)


def perturb_pose(T_cam_obj: np.ndarray, translation_m: float, rotation_deg: float,
                 rng: np.random.Generator) -> np.ndarray:
    """GT pose moved by exactly ``translation_m`` in a random camera-frame direction and rotated
    by exactly ``rotation_deg`` about a random axis through the object origin."""
    from scipy.spatial.transform import Rotation

    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    a = rng.normal(size=3)
    a /= np.linalg.norm(a)
    T = np.asarray(T_cam_obj, float).copy()
    T[:3, :3] = Rotation.from_rotvec(a * math.radians(rotation_deg)).as_matrix() @ T[:3, :3]
    T[:3, 3] = T[:3, 3] + d * translation_m
    return T


# ----------------------------------------------------------------------------- benchmark
@dataclass
class RefineCase:
    """One refinement/estimation of one GT instance."""

    method: str                 # "start" (perturbed, unrefined) | "icp" | "ppf" | "ppf+icp"
    scene: str
    im_id: int
    obj_id: int
    t_pert_m: float             # perturbation magnitude (nan for global methods)
    r_pert_deg: float
    add_s_m: float              # ADD(-S) error of the final pose (inf when no estimate)
    diameter_m: float
    te_m: float                 # translation error
    re_deg: float               # rotation error, minimised over the object's symmetries
    time_s: float               # per object; PPF excludes the one-off training
    applied: bool = True        # ICP accepted its correction / PPF returned a pose
    cpu_s: float = float("nan")       # process CPU time of the same work (robust to a loaded machine)
    agreement: float = float("nan")   # depth agreement (with mask) at the final pose
    fitness: float = float("nan")     # ICP fitness (icp only)

    @property
    def success(self) -> bool:
        return self.add_s_m < 0.1 * self.diameter_m

    @property
    def success_strict(self) -> bool:
        return self.te_m < 0.02 and self.re_deg < 5.0


def _errors(model, T_est: np.ndarray | None, T_gt: np.ndarray) -> tuple[float, float, float]:
    from pose_ros.eval.pose_metrics import add_s_error, symmetry_transforms

    if T_est is None:
        return math.inf, math.inf, math.inf
    adds = add_s_error(model, T_est, T_gt)
    te = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))
    re = math.inf
    for S in symmetry_transforms(model):
        R_gt = T_gt[:3, :3] @ S[:3, :3]
        c = (np.trace(T_est[:3, :3].T @ R_gt) - 1.0) / 2.0
        re = min(re, math.degrees(math.acos(min(1.0, max(-1.0, c)))))
    return adds, te, re


def run_refine_bench(data_dir: str | Path, translations_m=DEFAULT_TRANSLATIONS_M,
                     rotations_deg=DEFAULT_ROTATIONS_DEG, directions: int = 3, seed: int = 0,
                     icp_config=None, run_ppf: bool = True, ppf_config=None, max_frames: int | None = None,
                     progress: bool = True, calibration_levels: tuple = (), icp_mask: str = "gt") -> list[RefineCase]:
    """Run every method on every GT instance with a non-empty visible mask.

    ICP: each (translation, rotation) pair of the full grid, ``directions`` seeded random
    directions each, GT visible mask given. PPF: once per instance (it is global), same mask,
    top hypothesis refined by OpenCV's ICP ("ppf") and, separately, by our ICP ("ppf+icp").
    ``calibration_levels`` ((t_m, r_deg), ...) add larger perturbations as method "icp_cal"
    (reported separately; they supply the failures that ``calibrate_score_weights`` needs).
    ``icp_mask`` "gt" gives ICP the GT visible mask; "none" makes it crop the depth with the
    model's silhouette at the perturbed pose (what a pipeline without segmentation does). The
    agreement used for scoring/calibration always uses the GT mask.
    """
    if icp_mask not in ("gt", "none"):
        raise ValueError(f"icp_mask must be 'gt' or 'none'; got {icp_mask!r}")
    from tqdm import tqdm

    from pose_ros.core.object_model import load_bop_models
    from pose_ros.objects.icp import IcpConfig, refine_pose_icp
    from pose_ros.objects.ppf_baseline import PpfBaseline, PpfConfig
    from pose_ros.objects.scoring import mask_depth_agreement

    data_dir = Path(data_dir)
    frames = list(iter_ycbv_frames(data_dir))
    if max_frames is not None:
        frames = frames[: int(max_frames)]
    ids = sorted({g.obj_id for f in frames for g in f.gt})
    models = {m.obj_id: m for m in load_bop_models(data_dir / "models_bop_ycbv", obj_ids=ids)}
    icp_config = icp_config or IcpConfig()
    ppf_config = ppf_config or PpfConfig(icp="none", num_hypotheses=1)
    rng = np.random.default_rng(seed)
    rng_cal = np.random.default_rng(seed + 1_000_003)
    ppf_models: dict[int, PpfBaseline] = {}
    cases: list[RefineCase] = []
    inst = [(f, g) for f in frames for g in f.gt if g.mask_visib.any()]
    skipped = sum(1 for f in frames for g in f.gt if not g.mask_visib.any())
    if skipped:
        log.info("skipping %d GT instances with an empty visible mask (outside the image)", skipped)
    bar = tqdm(inst, desc="bench-refine", unit="obj", disable=not progress)
    for f, g in bar:
        m = models[g.obj_id]
        bar.set_postfix_str(f"{f.scene} im {f.im_id} obj {g.obj_id}")
        grid = [(tr, rd, "icp", rng) for tr in translations_m for rd in rotations_deg]
        # Separate stream: adding calibration levels must not change the main results.
        grid += [(tr, rd, "icp_cal", rng_cal) for tr, rd in calibration_levels]
        for tr, rd, icp_name, gen in grid:
            for _ in range(int(directions)):
                T0 = perturb_pose(g.T_cam_obj, tr, rd, gen)
                if icp_name == "icp":
                    adds, te, re = _errors(m, T0, g.T_cam_obj)
                    ag0 = mask_depth_agreement(m, T0, f.depth_m, f.camera, mask=g.mask_visib)
                    cases.append(RefineCase("start", f.scene, f.im_id, g.obj_id, tr, rd, adds, m.diameter_m, te, re,
                                            0.0, False, cpu_s=0.0, agreement=ag0))
                c0 = time.process_time()
                res = refine_pose_icp(m, T0, f.depth_m, f.camera, mask=g.mask_visib if icp_mask == "gt" else None,
                                      config=icp_config)
                cpu = time.process_time() - c0
                adds, te, re = _errors(m, res.T_cam_obj, g.T_cam_obj)
                ag = mask_depth_agreement(m, res.T_cam_obj, f.depth_m, f.camera, mask=g.mask_visib)
                cases.append(RefineCase(icp_name, f.scene, f.im_id, g.obj_id, tr, rd, adds, m.diameter_m, te, re,
                                        res.time_s, res.applied, cpu_s=cpu, agreement=ag, fitness=res.fitness))
        if not run_ppf:
            continue
        if g.obj_id not in ppf_models:
            ppf_models[g.obj_id] = PpfBaseline(m, ppf_config)
            log.info("PPF trained obj %d in %.2f s", g.obj_id, ppf_models[g.obj_id].train_time_s)
        ppf = ppf_models[g.obj_id]
        t0, c0 = time.perf_counter(), time.process_time()
        hyps, scene = ppf.match(f.depth_m, f.camera, mask=g.mask_visib)
        t_match, c_match = time.perf_counter() - t0, time.process_time() - c0
        for name in ("ppf", "ppf+icp"):
            hs = [type(h)(h.T_cam_obj.copy(), h.score, h.votes, h.residual) for h in hyps[:1]]
            t1, c1 = time.perf_counter(), time.process_time()
            if hs and name == "ppf":
                ppf.refine_opencv(hs, scene)
            elif hs:
                ppf.refine_ours(hs, f.depth_m, f.camera, mask=g.mask_visib)
            dt = t_match + time.perf_counter() - t1
            dc = c_match + time.process_time() - c1
            T = hs[0].T_cam_obj if hs else None
            adds, te, re = _errors(m, T, g.T_cam_obj)
            ag = mask_depth_agreement(m, T, f.depth_m, f.camera, mask=g.mask_visib) if T is not None else 0.0
            cases.append(RefineCase(name, f.scene, f.im_id, g.obj_id, math.nan, math.nan, adds, m.diameter_m, te, re,
                                    dt, bool(hs), cpu_s=dc, agreement=ag))
    return cases


def summarize(cases: list[RefineCase]) -> list[dict]:
    """Rows per method and perturbation level (and an 'all' row per method)."""
    rows = []

    def row(method: str, level: str, cs: list[RefineCase]) -> dict:
        te = np.array([c.te_m for c in cs])
        re = np.array([c.re_deg for c in cs])
        ts = np.array([c.time_s for c in cs])
        cpu = np.array([c.cpu_s for c in cs])
        return {"method": method, "level": level, "n": len(cs),
                "success_add_s": float(np.mean([c.success for c in cs])),
                "success_2cm_5deg": float(np.mean([c.success_strict for c in cs])),
                "te_median_mm": float(np.median(te) * 1000), "re_median_deg": float(np.median(re)),
                "te_mean_mm": float(np.mean(np.minimum(te, 1.0)) * 1000),
                "time_median_ms": float(np.median(ts) * 1000), "time_mean_ms": float(np.mean(ts) * 1000),
                "cpu_median_ms": float(np.nanmedian(cpu) * 1000) if np.isfinite(cpu).any() else float("nan"),
                "applied": float(np.mean([c.applied for c in cs]))}

    for method in ("start", "icp", "icp_cal", "ppf", "ppf+icp"):
        cs = [c for c in cases if c.method == method]
        if not cs:
            continue
        if method in ("start", "icp", "icp_cal"):
            levels = sorted({(c.t_pert_m, c.r_pert_deg) for c in cs})
            for tr, rd in levels:
                sub = [c for c in cs if c.t_pert_m == tr and c.r_pert_deg == rd]
                rows.append(row(method, f"{tr * 100:.0f}cm/{rd:.0f}deg", sub))
        rows.append(row(method, "all", cs))
    return rows


def format_summary(rows: list[dict]) -> str:
    head = (f"{'method':<8} {'perturbation':<13} {'n':>5} {'ADD(-S)<0.1d':>12} {'2cm&5deg':>9} "
            f"{'te med mm':>9} {'re med deg':>10} {'wall med ms':>11} {'cpu med ms':>10} {'applied':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<8} {r['level']:<13} {r['n']:>5} {100 * r['success_add_s']:>11.1f}% "
                     f"{100 * r['success_2cm_5deg']:>8.1f}% {r['te_median_mm']:>9.1f} {r['re_median_deg']:>10.2f} "
                     f"{r['time_median_ms']:>11.1f} {r['cpu_median_ms']:>10.1f} {100 * r['applied']:>6.0f}%")
    return "\n".join(lines)


def plot_summary(cases: list[RefineCase], rows: list[dict], path: str | Path) -> Path:
    """PNG: success per perturbation level (ICP vs start, PPF as lines) and the ADD(-S)/d CDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    icp_rows = [r for r in rows if r["method"] == "icp" and r["level"] != "all"]
    start_rows = [r for r in rows if r["method"] == "start" and r["level"] != "all"]
    x = np.arange(len(icp_rows))
    ax.bar(x - 0.2, [r["success_add_s"] for r in start_rows], 0.4, label="start (perturbed)", color="0.7")
    ax.bar(x + 0.2, [r["success_add_s"] for r in icp_rows], 0.4, label="our ICP", color="tab:blue")
    for r, col in ((next((r for r in rows if r["method"] == "ppf" and r["level"] == "all"), None), "tab:red"),
                   (next((r for r in rows if r["method"] == "ppf+icp" and r["level"] == "all"), None), "tab:orange")):
        if r is not None:
            ax.axhline(r["success_add_s"], color=col, ls="--", label=f"{r['method']} (global, no init)")
    ax.set_xticks(x, [r["level"] for r in icp_rows], rotation=45, ha="right")
    ax.set_ylabel("success: ADD(-S) < 0.1 d")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax = axes[1]
    grid = np.linspace(0, 0.5, 101)
    for method, col in (("start", "0.6"), ("icp", "tab:blue"), ("ppf", "tab:red"), ("ppf+icp", "tab:orange")):
        e = np.array([c.add_s_m / c.diameter_m for c in cases if c.method == method])
        if e.size:
            ax.plot(grid, [(e < g).mean() for g in grid], color=col, label=method)
    ax.axvline(0.1, color="k", lw=0.8, ls=":")
    ax.set_xlabel("ADD(-S) / diameter")
    ax.set_ylabel("fraction below")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle("YCB-Video real frames: refinement from perturbed GT vs PPF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibrate_score_weights(cases: list[RefineCase]):
    """Fit the logistic ``ScoreWeights`` (bias, w_agree, w_fit) on ICP outputs, label = success.

    Features are those a pipeline has for the pose it publishes: depth agreement at the final
    pose, and the ICP fitness when ICP was applied (else the mean fitness, as ``pose_score``
    does for a missing term). ``w_pnp`` is not identifiable here (no PnP in this benchmark) and
    keeps its default. Returns (weights, stats) with log-loss, Brier score and reliability bins.
    """
    from scipy.optimize import minimize

    from pose_ros.objects.scoring import DEFAULT_WEIGHTS, ScoreWeights

    cs = [c for c in cases if c.method in ("icp", "icp_cal") and np.isfinite(c.agreement)]
    if len(cs) < 20:
        raise ValueError(f"need at least 20 ICP cases to calibrate; got {len(cs)}")
    fits = [c.fitness for c in cs if c.applied and np.isfinite(c.fitness)]
    fit_mean = float(np.mean(fits)) if fits else 0.5
    X = np.array([[1.0, c.agreement, c.fitness if (c.applied and np.isfinite(c.fitness)) else fit_mean]
                  for c in cs])
    y = np.array([float(c.success) for c in cs])

    def nll(w):
        z = X @ w
        return float(np.mean(np.logaddexp(0.0, z) - y * z)) + 1e-4 * float(w[1:] @ w[1:])

    w = minimize(nll, np.zeros(3), method="BFGS").x
    p = 1.0 / (1.0 + np.exp(-(X @ w)))
    bins = np.linspace(0, 1, 6)
    rel = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (p >= lo) & (p < hi if hi < 1 else p <= hi)
        if sel.any():
            rel.append({"p_range": [float(lo), float(hi)], "n": int(sel.sum()), "mean_p": float(p[sel].mean()),
                        "observed": float(y[sel].mean())})
    stats = {"n": len(cs), "positives": int(y.sum()), "log_loss": nll(w), "brier": float(np.mean((p - y) ** 2)),
             "reliability": rel}
    weights = ScoreWeights(bias=float(w[0]), w_agree=float(w[1]), w_fit=float(w[2]), w_pnp=DEFAULT_WEIGHTS.w_pnp,
                           fit_mean=fit_mean)
    return weights, stats
