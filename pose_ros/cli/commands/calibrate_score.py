"""`pose-ros calibrate-score`: fit the model file's decision thresholds: object pixels, then pose score.

First the background logit offset (``objects.background_offset``): the smallest one at which at most
``--photo-share`` of the pixels of the object-free training photos (``synth.photo_bank``'s training
split; the held-out split is reported, and stays for ``pose-ros eval-photos``) are labelled an object.
Then the pose score, with that offset in place:
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
    p.add_argument("--photo-share", type=float, default=0.005, metavar="P",
                   help="most share of object-free training-photo pixels labelled an object (sets the background offset)")
    p.add_argument("--photos", type=int, default=200, help="object-free training photos to set the offset on")
    p.add_argument("--background-offset", type=float, default=None, metavar="B",
                   help="use this background offset instead of choosing one (0: plain argmax)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="report only; do not write the model file")
    p.set_defaults(func=run)


def _calibration_scene_config(loaded):
    """The model's training scenes at the camera's own resolution; its photos must be here."""
    from pose_ros.objects.training_data import scene_config_of_model

    cfg = scene_config_of_model(loaded)
    missing = [d for d in cfg.photo_dirs if not Path(d).is_dir()]
    if missing:
        raise ValueError(f"the training photos {missing} are not here; calibrate where they are")
    return cfg


def _background_offset(est, cfg, args: argparse.Namespace) -> tuple[float, dict]:
    """The offset (chosen on training photos unless given) and its object-pixel shares on both splits."""
    from pose_ros.objects.background_offset import choose_background_offset, labelled_share, object_margin
    from pose_ros.objects.false_positive_monitor import network_seg_logits, object_free_camera, object_free_frames

    if not cfg.photo_dirs:
        offset = float(args.background_offset or 0.0)
        print(f"the model records no training photos to measure on: background offset {offset:.2f} (as given)")
        return offset, {"offset": offset, "target_share": None}
    cam = object_free_camera(cfg.camera_K, cfg.camera_size)
    margins = {}
    for split, count in (("train", args.photos), ("heldout", 60)):
        frames = object_free_frames(list(cfg.photo_dirs), cam.K, cam.width, cam.height, count, seed=args.seed,
                                    split=split)
        margins[split] = [object_margin(s) for s in network_seg_logits(est.net, frames, est.device)]
    if args.background_offset is not None:
        offset = float(args.background_offset)
    else:
        offset = choose_background_offset(margins["train"], args.photo_share)
    report = {"offset": offset, "target_share": None if args.background_offset is not None else args.photo_share}
    for split, m in margins.items():
        report[split] = {"photos": len(m), "share_argmax": labelled_share(m, 0.0), "share": labelled_share(m, offset)}
        print(f"object-free {split} photos ({len(m)}): {100 * report[split]['share_argmax']:.2f}% of pixels an object "
              f"by plain argmax, {100 * report[split]['share']:.2f}% with background offset {offset:.2f}")
    return offset, report


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from pose_ros.objects.estimator import PoseEstimator
    from pose_ros.objects.model_file import ModelFileError, store_in_model_file
    from pose_ros.objects.score_calibration import (collect_calibration_samples, fit_score_calibration,
                                                    threshold_table)

    bad = [f"--photo-share must be in [0, 1), got {args.photo_share}"] if not 0.0 <= args.photo_share < 1.0 else []
    bad += [f"--photos must be >= 1, got {args.photos}"] if args.photos < 1 else []
    bad += [f"--background-offset must be >= 0, got {args.background_offset}"] \
        if args.background_offset is not None and args.background_offset < 0 else []
    if bad:
        print("error: " + "; ".join(bad), file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        est = PoseEstimator(args.model, meshes=args.meshes or args.bop_models, score_threshold=0.0,
                            use_score_calibration=False)
        est.collect_features = True
        cfg = _calibration_scene_config(est.loaded)
        offset, offset_report = _background_offset(est, cfg, args)
        est.background_offset = offset
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
    report["background_offset"] = offset_report
    calib.fitted_on = report
    if not args.dry_run:
        store_in_model_file(args.model, "background_logit_offset", offset)
        store_in_model_file(args.model, "score_calibration", calib.to_dict())
        print(f"stored in {args.model}")
    return 0
