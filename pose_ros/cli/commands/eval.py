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
    p.add_argument("--score-threshold", type=float, default=0.2)
    p.add_argument("--no-appearance", action="store_true",
                   help="no render-and-compare check (geometry-only hypothesis ranking), for ablation")
    p.add_argument("--search-hypotheses", type=int, default=None, metavar="N",
                   help="most depth-search hypotheses per instance (default: DepthSearchConfig's; 8 = the fast search)")
    p.add_argument("--make-testset", type=int, default=None, metavar="N",
                   help="first render N synthetic test frames into split_dir (if it has none)")
    p.add_argument("--seed", type=int, default=2_000_003, help="test-set seed (disjoint from training seeds)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def match_estimates(gt: list[Any], results: list[Any], use_icp: bool) -> list[Any]:
    """Greedy matching per obj_id: highest score first to the nearest unmatched GT (translation).

    Returns, per GT instance, the matched PoseResult or None.
    """
    import numpy as np

    out: list[Any] = [None] * len(gt)
    for r in sorted(results, key=lambda r: -r.score):
        T = r.T_cam_obj if use_icp else r.T_pnp_cam_obj
        if T is None:                     # no PnP pose (found by the depth search only)
            continue
        best, best_d = None, np.inf
        for i, g in enumerate(gt):
            if out[i] is not None or int(g.obj_id) != int(r.obj_id):
                continue
            d = float(np.linalg.norm(g.T_cam_obj[:3, 3] - T[:3, 3]))
            if d < best_d:
                best, best_d = i, d
        if best is not None:
            out[best] = r
    return out


def evaluate_split(split_dir: Path, model_path: Path, meshes: Any, max_frames: int | None = None,
                   min_visib: float = 0.1, vsd: bool = True, score_threshold: float = 0.2,
                   progress: bool = True, appearance_check: bool = True,
                   search_hypotheses: int | None = None) -> dict[str, Any]:
    """Run the estimator on every frame; returns reports (with/without ICP), estimates and timings."""
    import numpy as np
    from tqdm import tqdm

    from pose_ros.eval.bop_io import iter_bop_dataset
    from pose_ros.eval.bop_results import BopEstimate
    from pose_ros.eval.pose_metrics import PoseRecord, add_error, adds_error, evaluate_poses
    from pose_ros.objects.estimator import PoseEstimator

    from pose_ros.objects.depth_search import DepthSearchConfig

    est = PoseEstimator(model_path, meshes=meshes, use_icp=True, score_threshold=score_threshold,
                        appearance_check=appearance_check,
                        depth_search_config=None if search_hypotheses is None
                        else DepthSearchConfig(max_verified=search_hypotheses))
    models = {int(m.obj_id): m for m in est.models.values()}
    if not models:
        raise ValueError("no meshes matched the model's objects; pass --meshes or --bop-models")
    recs: dict[str, list] = {"icp": [], "no_icp": []}
    bop: dict[str, list] = {"icp": [], "no_icp": []}
    add_rows: dict[str, list] = {"icp": [], "no_icp": []}
    times: list[dict[str, float]] = []
    frames = iter_bop_dataset(split_dir)
    n = 0
    for f in tqdm(frames, desc="eval", unit="frame", disable=not progress):
        if max_frames is not None and n >= max_frames:
            break
        n += 1
        t0 = time.perf_counter()
        results = est.estimate(f.rgb, f.depth_m, f.camera)
        dt = time.perf_counter() - t0
        times.append(dict(est.last_timing_ms))
        gt = [g for g in f.gt if g.obj_id in models and (g.visib_fract is None or g.visib_fract >= min_visib)]
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
    out: dict[str, Any] = {"frames": n, "drops": dict(est.drops), "bop": bop, "records": recs}
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


def run(args: argparse.Namespace) -> int:
    import torch

    from pose_ros.eval.bop_results import write_bop_results
    from pose_ros.eval.pose_metrics import plot_recall_curves
    from pose_ros.objects.estimator import load_meshes_for_model
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
                             appearance_check=not args.no_appearance, search_hypotheses=args.search_hypotheses)
    except (ModelFileError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or (args.split_dir / f"eval_{args.model.stem}")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"split": str(args.split_dir), "model": str(args.model), "frames": res["frames"],
                               "timing_ms_mean": res["timing_ms"], "drops": res["drops"]}
    for mode, label in (("icp", "with ICP"), ("no_icp", "without ICP (PnP only)")):
        rep = res[mode]
        print(format_table(rep, res["models"], f"== {label}: {res['frames']} frames, recall in % =="))
        write_bop_results(out / f"results_{mode}.csv", res["bop"][mode])
        plot_recall_curves(rep, out / f"recall_{mode}.png", title=f"{args.model.stem} {label}")
        summary[mode] = {"overall": rep.overall, "per_object": {str(k): v for k, v in rep.per_object.items()}}
    t = res["timing_ms"]
    print("mean time per frame [ms]: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    print(f"drops: {res['drops']}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}/summary.json, results_*.csv (BOP format), recall_*.png")
    return 0
