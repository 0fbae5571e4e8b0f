"""`pose-ros eval-tracking`: tracking accuracy offline on the demo camera's moving stream."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval-tracking", help="tracker accuracy offline on the synthetic camera's moving scene",
        description="Replays the synthetic camera's stream (same seeds as the node's `seed` parameter) at a "
                    "fixed rate through the pose tracker as the object_pose node runs it, and reports "
                    "ADD(-S) < 0.1 d of visible ground truth, split by frames that ran detection and frames "
                    "that were tracked. Deterministic: compare tracker settings frame for frame.")
    p.add_argument("--model", type=Path, default=None, help="model file (default: models/demo_objects.pt)")
    p.add_argument("--meshes", type=Path, default=None, help="meshes/ folder (default: the demo meshes)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--rate", type=float, default=6.0, help="frames per second of scene time")
    p.add_argument("--min-visible", type=float, default=0.3, help="GT instances at least this visible count")
    p.add_argument("--twin-check-every", type=int, default=3, help="tracker twin check period (0 = off)")
    p.add_argument("--redetect-every", type=int, default=15)
    p.add_argument("--no-motion-prediction", action="store_true",
                   help="start tracking ICP from the last pose, not from the pose moved at the track's velocity")
    p.add_argument("--detect-latency", type=int, default=None, metavar="FRAMES",
                   help="detection aside from tracking as the node runs it (a detector process): its results "
                        "arrive this many frames after the frame they were detected on (0 = the next frame) and "
                        "are moved onto the newest frame by ICP (a job for k of the n classes: ceil(FRAMES * k / n)); "
                        "default: detect in line")
    p.add_argument("--lost-search-jobs", type=int, default=None, metavar="N",
                   help="with --detect-latency: a lost track's class is looked for alone until found or N "
                        "detections missed it (0 = off: only full detections; default: the tracker's)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from tqdm import tqdm

    from pose_ros.eval.appearance_latency import describe_appearances, summarise_appearances
    from pose_ros.eval.tracking_eval import evaluate_tracking
    from pose_ros.objects.estimator import PoseEstimator
    from pose_ros.objects.tracking import TrackingConfig
    from pose_ros.resources import meshes_dir, resolve

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        extra = {} if args.lost_search_jobs is None else {"lost_search_jobs": args.lost_search_jobs}
        cfg = TrackingConfig(redetect_every=args.redetect_every, twin_check_every=args.twin_check_every,
                             predict_motion=not args.no_motion_prediction, **extra)
        model = args.model or resolve("models/demo_objects.pt")
        est = PoseEstimator(model, meshes=args.meshes or meshes_dir(), threads=args.threads)
        total = correct = missing = 0
        appearances = []
        print(f"{'seed':>4} {'visible GT':>10} {'ADD(-S)':>8} {'missing':>7}  detect ok/wrong  track ok/wrong  counters")
        for seed in args.seeds:
            with tqdm(total=args.frames, desc=f"seed {seed}", unit="frame", leave=False) as bar:
                r = evaluate_tracking(est, cfg, seed, args.frames, args.rate, args.min_visible,
                                      progress=lambda _i: bar.update(1), detect_latency_frames=args.detect_latency)
            d, t = r.by_source["detect"], r.by_source["track"]
            print(f"{seed:>4} {r.visible_gt:>10} {100 * r.recall:>7.1f}% {r.missing:>7}  {d['ok']:>6}/{d['wrong']:<8} "
                  f"{t['ok']:>5}/{t['wrong']:<8} {r.counters}")
            total += r.visible_gt
            correct += r.correct
            missing += r.missing
            appearances += r.appearances
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"all: {100 * correct / max(total, 1):.1f}% ADD(-S) of {total} visible GT instances "
          f"({missing} missing, {total - correct - missing} wrong; "
          f"twin check every {args.twin_check_every}, re-detect every {args.redetect_every}, motion prediction "
          f"{'off' if args.no_motion_prediction else 'on'}, detection "
          + ("in line)" if args.detect_latency is None else f"aside, results {args.detect_latency} frames late, "
                                                              f"lost classes looked for alone {cfg.lost_search_jobs}x)"))
    print(f"{describe_appearances(summarise_appearances(appearances))} (scene time, at {args.rate:g} frames/s)")
    return 0
