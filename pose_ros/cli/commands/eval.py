"""`pose-ros eval`: run the object pose estimator on a BOP split and report BOP metrics.

Reports ADD, ADD-S, ADD(-S) < 0.1 d, AR_MSSD, AR_MSPD, AR_VSD and AR per object and overall,
with ICP and without it (the same detections; "without" uses the PnP pose before ICP, and
instances that only the depth-driven search found count as misses there), writes
BOP results CSVs, a JSON summary and recall-curve plots. ``--make-testset N`` first renders a
synthetic test split (unseen scenes, seed disjoint from training) into the split folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pose_ros.eval.detection_matching import count_false_positives, match_estimates
from pose_ros.eval.operating_points import DEFAULT_THRESHOLDS, OperatingPoints, describe_operating_points

__all__ = ["count_false_positives", "match_estimates", "evaluate_split", "comparison_table", "format_table"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate the object pose estimator on a BOP split (ADD(-S), AR)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("split_dir", type=Path, help="BOP split folder (scene folders 000000/...)")
    p.add_argument("--model", type=Path, required=True, help="model file from `pose-ros train`")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--meshes", type=Path, help="meshes/ folder (object.yaml per object)")
    src.add_argument("--bop-models", type=Path, help="BOP models folder (mm PLY + models_info.json)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <split_dir>/eval_<model name>)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--min-visib", type=float, default=0.1, help="evaluate GT instances at least this visible (BOP: 0.1)")
    p.add_argument("--no-vsd", action="store_true", help="skip VSD (slowest metric)")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="poses scoring below are not published (default: the node's score_threshold)")
    p.add_argument("--overlays", type=int, default=0, metavar="K",
                   help="write every K-th frame with the published poses (colour) and the ground truth (white) "
                        "drawn on it to <out>/overlays/")
    p.add_argument("--no-score-calibration", action="store_true",
                   help="score with the uncalibrated depth score even when the model file has a calibration (ablation)")
    p.add_argument("--no-objectness", action="store_true",
                   help="no depth objectness (gate and proposals), for ablation")
    p.add_argument("--depth-proposals", type=float, default=None, metavar="P",
                   help="also propose new instances where depth says something stands out and the network gives "
                        "the objects together probability > P (off by default)")
    p.add_argument("--background-offset", type=float, default=None, metavar="B",
                   help="margin over the background logit that object pixels need where depth does not show "
                        "something standing out (default: the model file's, chosen by `pose-ros calibrate-score`; "
                        "0 = plain argmax)")
    p.add_argument("--layout", choices=("auto", "bop", "ycbv-raw"), default="auto",
                   help="dataset layout; auto = raw YCB-Video (*-meta.mat, the models_ycbv frame) where present, else BOP")
    p.add_argument("--ppf-baseline", action="store_true",
                   help="also run OpenCV's point-pair-feature detector + its ICP on the whole depth image of every "
                        "frame, for each object present (the training-free baseline), in the same table")
    p.add_argument("--no-appearance", action="store_true",
                   help="no render-and-compare check (geometry-only hypothesis ranking), for ablation")
    p.add_argument("--no-crop-stage", action="store_true",
                   help="PnP on the first stage's voted keypoints even when the model has a crop stage (ablation)")
    p.add_argument("--class-hypotheses", type=int, default=2, metavar="N",
                   help="classes tried per found object (1: the network's class split, as before)")
    p.add_argument("--min-class-share", type=float, default=0.2, metavar="P",
                   help="a class is tried when its mean probability over the object reaches P")
    p.add_argument("--no-depth-search", action="store_true",
                   help="no depth-search fallback: PnP + ICP + check only (ablation)")
    p.add_argument("--search-hypotheses", type=int, default=None, metavar="N",
                   help="most depth-search hypotheses per instance (default: DepthSearchConfig's; 8 = the fast search)")
    p.add_argument("--make-testset", type=int, default=None, metavar="N",
                   help="first render N synthetic test frames into split_dir (if it has none)")
    p.add_argument("--seed", type=int, default=2_000_003, help="test-set seed (disjoint from training seeds)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def evaluate_split(split_dir: Path, model_path: Path, meshes: Any, max_frames: int | None = None,
                   min_visib: float = 0.1, vsd: bool = True, score_threshold: float = 0.2,
                   progress: bool = True, appearance_check: bool = True,
                   search_hypotheses: int | None = None, layout: str = "auto",
                   ppf_baseline: bool = False, depth_objectness: bool = True,
                   depth_proposals: float | None = None, score_calibration: bool = True,
                   overlays_every: int = 0, overlays_dir: Path | None = None, crop_stage: bool = True,
                   depth_search: bool = True, class_hypotheses: int = 2,
                   min_class_share: float = 0.2, background_offset: float | None = None) -> dict[str, Any]:
    """Run the estimator on every frame; returns reports (with/without ICP), estimates, timings and
    false positives per frame (published poses that are not a correct pose of an object in view)."""
    import numpy as np
    from tqdm import tqdm

    from pose_ros.eval.bop_io import iter_dataset_frames
    from pose_ros.eval.bop_results import BopEstimate
    from pose_ros.eval.pose_metrics import PoseRecord, add_error, adds_error, evaluate_poses
    from pose_ros.objects.depth_objectness import ObjectnessConfig
    from pose_ros.objects.depth_search import DepthSearchConfig
    from pose_ros.objects.estimator import PoseEstimator

    est = PoseEstimator(model_path, meshes=meshes, use_icp=True, score_threshold=score_threshold,
                        appearance_check=appearance_check, depth_objectness=depth_objectness,
                        objectness_config=ObjectnessConfig(fg_prob_on_objectness=depth_proposals),
                        use_score_calibration=score_calibration, use_correspondence_stage=crop_stage,
                        depth_search=depth_search, class_hypotheses=class_hypotheses,
                        min_class_share=min_class_share, background_offset=background_offset,
                        depth_search_config=None if search_hypotheses is None
                        else DepthSearchConfig(max_verified=search_hypotheses))
    models = {int(m.obj_id): m for m in est.models.values()}
    if not models:
        raise ValueError("no meshes matched the model's objects; pass --meshes or --bop-models")
    recs: dict[str, list] = {"icp": [], "no_icp": []}
    bop: dict[str, list] = {"icp": [], "no_icp": []}
    add_rows: dict[str, list] = {"icp": [], "no_icp": []}
    times: list[dict[str, float]] = []
    fp_counts: dict[str, list[tuple[int, int]]] = {"icp": [], "no_icp": []}
    points = OperatingPoints([score_threshold] + [t for t in DEFAULT_THRESHOLDS if t > score_threshold], models)
    ppf = _PpfRunner(models) if ppf_baseline else None
    visib = _Visibility(models)
    frames = iter_dataset_frames(split_dir, layout)
    n = 0
    for f in tqdm(frames, desc="eval", unit="frame", disable=not progress):
        if max_frames is not None and n >= max_frames:
            break
        n += 1
        visib.fill(f)
        t0 = time.perf_counter()
        results = est.estimate(f.rgb, f.depth_m, f.camera)
        dt = time.perf_counter() - t0
        times.append(dict(est.last_timing_ms))
        gt = [g for g in f.gt if g.obj_id in models and (g.visib_fract is None or g.visib_fract >= min_visib)]
        if overlays_every > 0 and overlays_dir is not None and (n - 1) % overlays_every == 0:
            _write_overlay(overlays_dir / f"{f.scene_id:06d}_{f.im_id:06d}.png", f, results, est, models)
        if ppf is not None:
            ppf.frame(f, gt, vsd)
        all_gt = [g for g in f.gt if g.obj_id in models]
        for mode, use_icp in (("icp", True), ("no_icp", False)):
            fp_counts[mode].append(count_false_positives(all_gt, results, models, use_icp))
        points.add_frame(gt, all_gt, results)
        for mode, use_icp in (("icp", True), ("no_icp", False)):
            for r in results:
                if not use_icp and r.T_pnp_cam_obj is None:
                    continue
                bop[mode].append(BopEstimate(f.scene_id, f.im_id, r.obj_id, r.score,
                                             r.T_cam_obj if use_icp else r.T_pnp_cam_obj, dt))
            matched = match_estimates(gt, results, use_icp)
            for g, r in zip(gt, matched):
                T = None if r is None else (r.T_cam_obj if use_icp else r.T_pnp_cam_obj)
                m = models[int(g.obj_id)]
                recs[mode].append(PoseRecord(int(g.obj_id), m, g.T_cam_obj, T, f.camera,
                                             f.depth_m if vsd else None, f.scene_id, f.im_id,
                                             r.score if r is not None else 0.0))
                if T is None:
                    add_rows[mode].append((int(g.obj_id), np.inf, np.inf, m.diameter_m))
                else:
                    add_rows[mode].append((int(g.obj_id), add_error(m.points_m, T, g.T_cam_obj),
                                           adds_error(m.points_m, T, g.T_cam_obj), m.diameter_m))
    if n == 0:
        raise ValueError(f"no frames found in {split_dir}; is it a BOP split folder (scene dirs 000000/ ...)?")
    out: dict[str, Any] = {"frames": n, "drops": dict(est.drops), "stages": dict(est.stage_counts),
                           "crop_stage": est.correspondence is not None, "bop": bop, "records": recs,
                           "false_positives": {m: {"per_frame": float(np.mean([a + b for a, b in c])),
                                                   "absent_object_per_frame": float(np.mean([a for a, _ in c])),
                                                   "wrong_pose_per_frame": float(np.mean([b for _, b in c]))}
                                               for m, c in fp_counts.items()},
                           "operating_points": points.report()}
    if ppf is not None and ppf.records:
        out["ppf"] = ppf.report(vsd)
    for mode in ("icp", "no_icp"):
        if not recs[mode]:
            raise ValueError(f"no ground-truth instances of the model's objects in {split_dir}")
        rep = evaluate_poses(recs[mode], vsd=vsd)
        rows = add_rows[mode]
        for oid in list(rep.per_object) + ["all"]:
            sel = [r for r in rows if oid == "all" or r[0] == oid]
            tgt = rep.overall if oid == "all" else rep.per_object[oid]
            tgt["ADD"] = float(np.mean([r[1] < 0.1 * r[3] for r in sel]))
            tgt["ADD-S"] = float(np.mean([r[2] < 0.1 * r[3] for r in sel]))
        out[mode] = rep
    keys = sorted({k for t in times for k in t})
    out["timing_ms"] = {k: float(np.mean([t.get(k, 0.0) for t in times])) for k in keys}
    out["models"] = models
    return out


def _write_overlay(path: Path, frame: Any, results: list[Any], est: Any, models: dict[int, Any]) -> None:
    import cv2

    from pose_ros.objects.pose_overlay import draw_poses

    by_name = {est.objects[c - 1].name: m for c, m in est.models.items()}
    img = draw_poses(frame.rgb, frame.camera, results, by_name, {n: (1.0, 0.85, 0.1) for n in by_name},
                     ground_truth=[(models[g.obj_id], g.T_cam_obj) for g in frame.gt if g.obj_id in models])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


class _Visibility:
    """Fills a GT instance's visible fraction where the dataset gives only its visible mask (raw
    YCB-Video): pixels of the visible mask / pixels of the model rendered alone at the GT pose, as
    BOP defines it."""

    def __init__(self, models: dict[int, Any]) -> None:
        self.models = models

    def fill(self, frame: Any) -> None:
        from pose_ros.eval.pose_metrics import render_model_depth

        for g in frame.gt:
            if g.visib_fract is not None or g.mask_visib is None or g.obj_id not in self.models:
                continue
            alone = render_model_depth(self.models[g.obj_id], g.T_cam_obj, frame.camera) > 0
            n = int(alone.sum())
            g.visib_fract = float(np.count_nonzero(g.mask_visib & alone) / n) if n else 0.0


class _PpfRunner:
    """The training-free baseline on the same frames: OpenCV's PPF detector + its ICP on the whole
    depth image (no mask), for each object in view (it is told which objects are there, which
    favours it: it cannot publish an absent object), best hypothesis only."""

    def __init__(self, models: dict[int, Any]) -> None:
        self.models = models
        self._det: dict[int, Any] = {}
        self.records: list[Any] = []
        self.times_ms: list[float] = []
        self.wrong = 0
        self.frames = 0

    def frame(self, f: Any, gt: list[Any], vsd: bool) -> None:
        from pose_ros.core.transforms import make_T, orthonormalize
        from pose_ros.eval.pose_metrics import PoseRecord, add_s_error
        from pose_ros.objects.ppf_baseline import PpfBaseline, PpfConfig

        self.frames += 1
        for g in gt:
            oid = int(g.obj_id)
            if oid not in self._det:
                self._det[oid] = PpfBaseline(self.models[oid], PpfConfig(icp="opencv", num_hypotheses=1))
            t0 = time.perf_counter()
            hyps = self._det[oid].estimate_hypotheses(f.depth_m, f.camera, None)
            self.times_ms.append((time.perf_counter() - t0) * 1e3)
            T = make_T(orthonormalize(hyps[0].T_cam_obj[:3, :3]), hyps[0].T_cam_obj[:3, 3]) if hyps else None
            m = self.models[oid]
            self.records.append(PoseRecord(oid, m, g.T_cam_obj, T, f.camera, f.depth_m if vsd else None,
                                           f.scene_id, f.im_id, hyps[0].score if hyps else 0.0))
            if T is not None and not add_s_error(m, T, g.T_cam_obj) < 0.1 * m.diameter_m:
                self.wrong += 1

    def report(self, vsd: bool) -> dict[str, Any]:
        from pose_ros.eval.pose_metrics import evaluate_poses

        rep = evaluate_poses(self.records, vsd=vsd)
        return {"report": rep, "ms_per_object": float(np.mean(self.times_ms)) if self.times_ms else float("nan"),
                "false_positives_per_frame": self.wrong / max(1, self.frames)}


def format_table(rep: Any, models: dict[int, Any], title: str) -> str:
    cols = ["n", "ADD", "ADD-S", "ADD(-S)", "AR_MSSD", "AR_MSPD", "AR_VSD", "AR"]
    present = [c for c in cols if c in rep.overall]
    lines = [title, f"{'object':<14}" + "".join(f"{c:>9}" for c in present)]

    def row(name: str, s: dict) -> str:
        return f"{name:<14}" + "".join(f"{s[c]:9d}" if c == "n" else (f"{100 * s[c]:9.1f}" if c in s else f"{'-':>9}")
                                       for c in present)

    for oid, s in rep.per_object.items():
        lines.append(row(f"{oid}:{models[oid].name}"[:14], s))
    lines.append(row("all", rep.overall))
    return "\n".join(lines)


def comparison_table(res: dict[str, Any]) -> str:
    """One line per method: ADD(-S), AR, false positives per frame, time (the README's table)."""
    rows = [("ours: network -> PnP -> ICP -> check", res["icp"].overall, res["false_positives"]["icp"]["per_frame"],
             res["timing_ms"].get("total", float("nan"))),
            ("ours: PnP pose only (no ICP)", res["no_icp"].overall, res["false_positives"]["no_icp"]["per_frame"],
             float("nan"))]
    if "ppf" in res:
        p = res["ppf"]
        rows.append(("PPF (OpenCV) + ICP, whole scene, told which objects", p["report"].overall,
                     p["false_positives_per_frame"], p["ms_per_object"] * len(p["report"].errors) / max(1, res["frames"])))
    lines = [f"{'method':<52}{'ADD(-S)':>9}{'AR':>7}{'FP/frame':>10}{'ms/frame':>10}"]
    for name, o, fp, ms in rows:
        ar = f"{o['AR']:.3f}" if "AR" in o else "-"
        lines.append(f"{name:<52}{100 * o['ADD(-S)']:8.1f}%{ar:>7}{fp:10.2f}{ms:10.0f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from pose_ros.eval.bop_results import write_bop_results
    from pose_ros.eval.pose_metrics import plot_recall_curves
    from pose_ros.objects.estimator import describe_stage_counts, load_meshes_for_model
    from pose_ros.objects.model_file import ModelFileError, load_model_file

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        loaded = load_model_file(args.model)
        meshes: Any = args.meshes or args.bop_models
        if meshes is None:
            print("error: pass --meshes or --bop-models (the meshes the model was trained on)", file=sys.stderr)
            return 2
        if args.make_testset and not any(args.split_dir.glob("*/scene_gt.json")):
            from pose_ros.objects.training_data import render_bop_testset

            models = load_meshes_for_model(meshes, [o.obj_id for o in loaded.objects])
            render_bop_testset(models, args.split_dir, args.make_testset, seed=args.seed)
        res = evaluate_split(args.split_dir, args.model, meshes, args.max_frames, args.min_visib,
                             vsd=not args.no_vsd, score_threshold=args.score_threshold,
                             appearance_check=not args.no_appearance, search_hypotheses=args.search_hypotheses,
                             layout=args.layout, ppf_baseline=args.ppf_baseline,
                             depth_objectness=not args.no_objectness, depth_proposals=args.depth_proposals,
                             score_calibration=not args.no_score_calibration, overlays_every=args.overlays,
                             crop_stage=not args.no_crop_stage, depth_search=not args.no_depth_search,
                             class_hypotheses=args.class_hypotheses, min_class_share=args.min_class_share,
                             background_offset=args.background_offset,
                             overlays_dir=(args.out or (args.split_dir / f"eval_{args.model.stem}")) / "overlays")
    except (ModelFileError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or (args.split_dir / f"eval_{args.model.stem}")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"split": str(args.split_dir), "model": str(args.model), "frames": res["frames"],
                               "timing_ms_mean": res["timing_ms"], "drops": res["drops"], "stages": res["stages"]}
    for mode, label in (("icp", "with ICP"), ("no_icp", "without ICP (PnP only)")):
        rep = res[mode]
        print(format_table(rep, res["models"], f"== {label}: {res['frames']} frames, recall in % =="))
        write_bop_results(out / f"results_{mode}.csv", res["bop"][mode])
        plot_recall_curves(rep, out / f"recall_{mode}.png", title=f"{args.model.stem} {label}")
        summary[mode] = {"overall": rep.overall, "per_object": {str(k): v for k, v in rep.per_object.items()}}
    t = res["timing_ms"]
    fp = res["false_positives"]
    summary["false_positives"] = fp
    print(f"false positives per frame at score >= {args.score_threshold}: {fp['icp']['per_frame']:.2f} "
          f"(object not in view {fp['icp']['absent_object_per_frame']:.2f}, wrong pose of an object in view "
          f"{fp['icp']['wrong_pose_per_frame']:.2f}); PnP only: {fp['no_icp']['per_frame']:.2f}")
    summary["operating_points"] = res["operating_points"]
    print("with ICP, score >= threshold: ADD(-S) / false positives per frame: "
          + describe_operating_points(res["operating_points"]))
    print(comparison_table(res))
    if "ppf" in res:
        summary["ppf"] = {"overall": res["ppf"]["report"].overall, "ms_per_object": res["ppf"]["ms_per_object"],
                          "false_positives_per_frame": res["ppf"]["false_positives_per_frame"]}
    print("mean time per frame [ms]: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    print(f"drops: {res['drops']}")
    print(describe_stage_counts(res["stages"]))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}/summary.json, results_*.csv (BOP format), recall_*.png")
    return 0
