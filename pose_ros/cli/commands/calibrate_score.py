"""`pose-ros calibrate-score`: fit the model file's pose score on renders like its training data.

Renders ``--scenes`` scenes with the model's own training scene settings (its camera, real photo
backgrounds and photo-textured clutter, a seed never used for training) at the camera's full
resolution, runs the whole estimator, labels every output pose right or wrong (ADD(-S) < 0.1 d),
fits ``objects.score_calibration`` on three quarters of the scenes, reports it on the rest beside
the uncalibrated score, then refits on all and stores it in the model file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("calibrate-score", help="fit a model's pose score (probability of a right pose)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model file (updated in place)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--meshes", type=Path, help="meshes/ folder (object.yaml per object)")
    src.add_argument("--bop-models", type=Path, help="BOP models folder")
    p.add_argument("--scenes", type=int, default=80, help="rendered scenes (each gives several poses)")
    p.add_argument("--seed", type=int, default=3_000_017, help="render seed (disjoint from training)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="report only; do not write the model file")
    p.set_defaults(func=run)


def _full_resolution_scene_config(training: dict):
    """The model's training SceneConfig, at the camera's own resolution instead of the network's."""
    from pose_ros.objects.training_data import SceneConfig

    sc = dict(training.get("scene_config") or {})
    if not sc:
        raise ValueError("the model file records no training scene settings; retrain it with this version")
    for k in ("fx_range", "objects_range", "distractors_range", "distance_range_m", "camera_size", "photo_dirs"):
        if sc.get(k) is not None:
            sc[k] = tuple(sc[k])
    cfg = SceneConfig(**sc)
    if cfg.camera_K is not None:
        cfg.width, cfg.height = cfg.camera_size
    else:
        f = 640.0 / cfg.width
        cfg.fx_range = (cfg.fx_range[0] * f, cfg.fx_range[1] * f)
        cfg.width, cfg.height = 640, 480
    missing = [d for d in cfg.photo_dirs if not Path(d).is_dir()]
    if missing:
        raise ValueError(f"the training photos {missing} are not here; calibrate where they are")
    return cfg


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from pose_ros.objects.estimator import PoseEstimator
    from pose_ros.objects.model_file import ModelFileError, store_in_model_file
    from pose_ros.objects.score_calibration import (collect_calibration_samples, fit_score_calibration,
                                                    threshold_table)

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        est = PoseEstimator(args.model, meshes=args.meshes or args.bop_models, score_threshold=0.0,
                            use_score_calibration=False)
        est.collect_features = True
        cfg = _full_resolution_scene_config(est.loaded.raw.get("training", {}))
        models = [est.models[c] for c in range(1, len(est.objects) + 1)]
        X, y, idx, raw = collect_calibration_samples(est, models, cfg, args.scenes, args.seed)
        cut = int(np.ceil(0.75 * args.scenes))
        fit_part, test_part = idx < cut, idx >= cut
        held = fit_score_calibration(X[fit_part], y[fit_part])
        calib = fit_score_calibration(X, y)
    except (ModelFileError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cal_test = np.array([held.score(dict(zip(held.features, x))) for x in X[test_part]])
    print(f"{len(y)} poses from {args.scenes} scenes, {100 * y.mean():.1f}% right")
    print(f"held-out quarter ({int(test_part.sum())} poses): threshold, kept, precision, recall of right poses, wrong kept")
    report = {"scenes": int(args.scenes), "poses": int(len(y)), "right_share": float(y.mean()), "seed": int(args.seed)}
    for name, sc in (("uncalibrated", raw[test_part]), ("calibrated", cal_test)):
        rows = threshold_table(sc, y[test_part])
        report[f"held_out_{name}"] = rows
        for r in rows:
            print(f"  {name:<13} >= {r['threshold']:.1f}: {r['kept']:4d} kept, precision {100 * r['precision']:5.1f}%, "
                  f"recall {100 * r['recall']:5.1f}%, wrong kept {r['wrong_kept']}")
    print("weights (standardised features): " + ", ".join(f"{k} {w:+.2f}" for k, w in zip(calib.features, calib.weights)))
    calib.fitted_on = report
    if not args.dry_run:
        store_in_model_file(args.model, "score_calibration", calib.to_dict())
        print(f"stored in {args.model}")
    return 0
