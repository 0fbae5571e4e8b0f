"""`pose-ros eval-crops`: the crop correspondence stage alone, on annotated frames' true visible masks.

Separates the stage from the detector (``objects.crop_stage_eval``): for every annotated instance of
a known object it crops the true visible mask as a perfect detector would, and reports the share of
the stage's correspondences the true pose explains (within 0.1 d; the true pose moved 0.3 d aside as
the no-information reference), how often they alone pose the object before ICP (ADD(-S) < 0.1 d, 3D-3D
on the frame's depth), and how often asking for another object's class is refused. On real frames this
is the stage's transfer from its rendered training crops.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval-crops", help="the crop correspondence stage on annotated frames' true masks",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("split_dir", type=Path, help="BOP split or raw YCB-Video folder (frames with visible masks)")
    p.add_argument("--model", type=Path, required=True, help="model file with a crop stage")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--meshes", type=Path)
    src.add_argument("--bop-models", type=Path)
    p.add_argument("--layout", choices=("auto", "bop", "ycbv-raw"), default="auto")
    p.add_argument("--every", type=int, default=1, help="use every N-th frame")
    p.add_argument("--min-visible-px", type=int, default=300, help="instances with fewer visible pixels are skipped")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write a JSON summary here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import itertools

    import torch
    from tqdm import tqdm

    from pose_ros.eval.bop_io import BopFormatError, iter_dataset_frames
    from pose_ros.objects.correspondence_pose import stage_from_model
    from pose_ros.objects.crop_stage_eval import evaluate_crop_stage, summarise_crop_stage
    from pose_ros.objects.estimator import load_meshes_for_model
    from pose_ros.objects.model_file import ModelFileError, check_meshes, load_model_file

    try:
        if args.every < 1:
            raise ValueError(f"--every must be >= 1; got {args.every}")
        torch.set_num_threads(max(1, int(args.threads)))
        loaded = load_model_file(args.model)
        stage = stage_from_model(loaded)
        if stage is None:
            raise ValueError(f"{args.model} has no crop stage (pose-ros train-crops trains one)")
        models = load_meshes_for_model(args.meshes or args.bop_models, [o.obj_id for o in loaded.objects])
        by_class = check_meshes(loaded, models)
        models = [by_class[c] for c in range(1, len(loaded.objects) + 1)]
        frames = itertools.islice(iter_dataset_frames(args.split_dir, args.layout), 0, None, args.every)
        records = evaluate_crop_stage(stage, loaded.objects, models, tqdm(frames, desc="frames", unit="frame"),
                                      min_visible_px=args.min_visible_px)
    except (ModelFileError, BopFormatError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = summarise_crop_stage(records)
    name = {int(o.obj_id): o.name for o in loaded.objects}
    print(f"{'object':24s} {'n':>4s} {'agreement':>9s} {'moved 0.3d':>10s} {'posed':>6s} {'no pose':>7s} {'wrong cls refused':>17s}")
    rows = [(f"{i}:{name.get(i, '?')}", f) for i, f in summary["per_object"].items()] + [("all", summary["all"])]
    for label, f in rows:
        if not f.get("instances"):
            print(f"{label:24s}    0")
            continue
        print(f"{label:24s} {f['instances']:4d} {f['agreement_median']:9.2f} {f['agreement_shifted_median']:10.2f} "
              f"{100 * f['posed_before_icp']:5.1f}% {100 * f['no_pose_share']:6.1f}% {100 * f['wrong_class_refused']:16.1f}%")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"split": str(args.split_dir), "model": str(args.model), "every": args.every,
                                        **summary}, indent=1, default=float))
        print(f"wrote {args.out}")
    return 0
