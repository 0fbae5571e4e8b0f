"""`pose-ros eval-coco`: OKS AP of the human keypoint backend on COCO person keypoints."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval-coco",
        help="COCO keypoint OKS AP of the MediaPipe backend on ground-truth person crops",
        description="Runs the keypoint backend on every labelled ground-truth person box (enlarged "
                    "by --margin per side), maps BlazePose-33 to COCO-17 and scores with pycocotools "
                    "COCOeval (oracle boxes: measures keypoints, not detection).")
    p.add_argument("--ann", required=True, type=Path, help="person_keypoints_*.json")
    p.add_argument("--images", required=True, type=Path, help="folder with the annotation's images")
    p.add_argument("--out", type=Path, default=None,
                   help="write <stem>_results.json, _metrics.json and _per_keypoint.png here")
    p.add_argument("--margin", type=float, default=0.25, help="crop margin per side, fraction of box size")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--min-detection-confidence", type=float, default=0.5)
    p.add_argument("--hands", action="store_true",
                   help="also run the hand keypoint backend at each found body's wrists: share of visible annotated "
                        "wrists with a hand found, and the hand model's wrist vs the annotated wrist (COCO has no "
                        "other hand keypoints)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pose_ros.eval.coco_keypoints import (CocoDataError, evaluate_backend, format_report, load_coco,
                                              write_outputs)
    from pose_ros.human.keypoint_backend import MediaPipePoseBackend

    if not 0.0 <= args.margin <= 2.0:
        raise SystemExit(f"--margin {args.margin} must lie in [0, 2]")
    try:
        coco = load_coco(args.ann)
        with MediaPipePoseBackend(static_image_mode=True,
                                  min_detection_confidence=args.min_detection_confidence) as backend:
            report = evaluate_backend(coco, args.images, backend, margin=args.margin, limit=args.limit,
                                      progress=not args.no_progress)
    except CocoDataError as exc:
        print(f"error: {exc}")
        return 2
    stem = args.ann.stem
    print(format_report(report, f"{stem} (margin {args.margin})"))
    if args.hands:
        from pose_ros.eval.coco_hands import evaluate_hand_wrists, format_hand_report
        from pose_ros.human.hand_keypoints import MediaPipeHandBackend

        with MediaPipePoseBackend(static_image_mode=True, min_detection_confidence=args.min_detection_confidence) \
                as body, MediaPipeHandBackend(static_image_mode=True) as hands:
            hand_report = evaluate_hand_wrists(coco, args.images, body, hands, margin=args.margin, limit=args.limit)
        print(format_hand_report(hand_report, f"{stem} (margin {args.margin})"))
    if args.out is not None:
        for path in write_outputs(report, args.out, stem):
            print(f"wrote {path}")
    return 0
