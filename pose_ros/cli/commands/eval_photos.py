"""`pose-ros eval-photos`: what the full estimator reports on real photos that show none of the objects.

Every published pose on such a photo is a false positive. The photos are the held-out part of the
backgrounds folders (never trained on; ``synth.photo_bank``), seen through the model's training
camera, each on the depth of a flat surface at a random tilt and distance (photos have no depth;
``objects.false_positive_monitor``). Reports the share of pixels the network's plain argmax labels as
an object, the share the estimator does (with the model's background offset, ``objects.background_offset``,
and the depth proposals), the share that is still an object after the depth gate (instances
without an object's 3D extent are dropped; on these flat photos that is every instance unless the
gate fails, so the two figures separate what colour alone says from what the front end passes on),
and the poses published above the score threshold.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval-photos", help="false positives of the object estimator on object-free real photos",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--meshes", type=Path)
    src.add_argument("--bop-models", type=Path)
    p.add_argument("--photos", nargs="+", default=None, metavar="DIR",
                   help="photo folders (their held-out part is used); default: the model's training backgrounds")
    p.add_argument("--count", type=int, default=60, help="photos to check")
    p.add_argument("--score-threshold", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write a JSON summary here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pose_ros.objects.estimator import PoseEstimator
    from pose_ros.objects.false_positive_monitor import object_free_camera, object_free_frames
    from pose_ros.objects.model_file import ModelFileError
    from pose_ros.synth.photo_bank import default_photo_dirs

    try:
        est = PoseEstimator(args.model, meshes=args.meshes or args.bop_models, score_threshold=args.score_threshold)
        sc = est.loaded.raw.get("training", {}).get("scene_config", {}) or {}
        dirs = args.photos or list(sc.get("photo_dirs") or []) or [str(d) for d in default_photo_dirs()]
        if not dirs:
            raise ValueError("no photo folders: pass --photos DIR")
        cam = object_free_camera(sc.get("camera_K") or None, sc.get("camera_size"))
        frames = object_free_frames(dirs, cam.K, cam.width, cam.height, args.count, seed=args.seed)
    except (ModelFileError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from pose_ros.objects.background_offset import labelled_share, object_margin

    shares, gated, published, names, argmax = [], [], [], [], []
    for f in tqdm(frames, desc="object-free photos", unit="photo"):
        res = est.estimate(f.rgb, f.depth_m, cam)
        argmax.append(labelled_share([object_margin(est.last_seg_logits)], 0.0))
        cm = est.last_class_map
        shares.append(float((cm > 0).mean()) if cm is not None else 0.0)
        om = est.last_object_mask
        gated.append(float(om.mean()) if om is not None else 0.0)
        published.append(len(res))
        names += [f"{f.name}: {r.class_name} {r.score:.2f}" for r in res]
    summary = {"photos": len(frames), "folders": dirs, "score_threshold": args.score_threshold,
               "background_offset": est.background_offset, "object_pixel_share_argmax": float(np.mean(argmax)),
               "object_pixel_share": float(np.mean(shares)), "object_pixel_share_after_depth_gate": float(np.mean(gated)),
               "poses_per_photo": float(np.mean(published)),
               "photos_with_a_pose": int(sum(p > 0 for p in published)), "published": names}
    print(f"{len(frames)} held-out object-free photos: {100 * summary['object_pixel_share_argmax']:.2f}% of pixels "
          f"labelled as an object by the network's argmax, {100 * summary['object_pixel_share']:.2f}% with background "
          f"offset {est.background_offset:.2f}, {100 * summary['object_pixel_share_after_depth_gate']:.2f}% after the depth "
          f"gate; {sum(published)} poses published at score >= {args.score_threshold} "
          f"({summary['photos_with_a_pose']} photos)")
    for n in names[:20]:
        print("  " + n)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))
    return 0
