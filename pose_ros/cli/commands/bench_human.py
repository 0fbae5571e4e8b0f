"""`pose-ros bench-human`: per-frame time of the human skeleton pipeline at a camera resolution."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-human",
        help="time MediaPipe keypoints and the full SkeletonEstimator per frame on real photos",
        description="Letterboxes each photo to --width x --height, pairs it with a flat depth image and "
                    "times (a) the backend alone in video mode (person tracked between frames, the "
                    "steady state on a live camera), (b) the backend in static mode (person detector on "
                    "every frame, the cost after a loss) and (c) SkeletonEstimator.process end to end; with "
                    "--hands also (d) the same with the operator's hands, interleaved frame by frame with (c) so "
                    "both see the same machine load.")
    p.add_argument("--images", required=True, type=Path, nargs="+",
                   help="folders of photos with people (jpg/png), or photo files")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames-per-image", type=int, default=20, help="consecutive frames per photo")
    p.add_argument("--max-images", type=int, default=4)
    p.add_argument("--hands", action="store_true", help="also time SkeletonEstimator.process with hand keypoints")
    p.add_argument("--hand-model-complexity", type=int, default=1, choices=(0, 1),
                   help="hand landmark model: 1 full (the node's default), 0 lite")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _letterbox(rgb, width: int, height: int):
    import cv2
    import numpy as np

    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    w, h = int(round(rgb.shape[1] * scale)), int(round(rgb.shape[0] * scale))
    out = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - w) // 2, (height - h) // 2
    out[y0:y0 + h, x0:x0 + w] = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return out


def run(args: argparse.Namespace) -> int:
    import contextlib
    import time

    import cv2
    import numpy as np
    from tqdm import tqdm

    from pose_ros.core.camera import PinholeCamera
    from pose_ros.human.hand_keypoints import MediaPipeHandBackend
    from pose_ros.human.keypoint_backend import MediaPipePoseBackend
    from pose_ros.human.skeleton_estimator import SkeletonEstimator

    paths = []
    for item in args.images:
        found = sorted(Path(item).glob("*")) if Path(item).is_dir() else [Path(item)]
        paths += [p for p in found if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not paths:
        print(f"error: no jpg/png images in {' '.join(map(str, args.images))}")
        return 2
    frames = []
    for path in paths[: args.max_images]:
        bgr = cv2.imread(str(path))
        if bgr is None:
            print(f"error: cannot read {path}")
            return 2
        frames.append(_letterbox(np.ascontiguousarray(bgr[:, :, ::-1]), args.width, args.height))
    camera = PinholeCamera.from_fov(args.width, args.height, 69.0)
    depth_m = np.full((args.height, args.width), 2.0, np.float32)
    n = len(frames) * args.frames_per_image
    times: dict[str, list[float]] = {"backend video mode": [], "backend static mode": [], "SkeletonEstimator.process": []}
    hands_name = "SkeletonEstimator + hands"
    if args.hands:
        times[hands_name] = []
    hands_found = []
    cpu_ms: dict[str, list[float]] = {}   # process CPU time (all threads) of the estimator runs
    bar = tqdm(total=len(times) * n, desc="frames", disable=args.no_progress)
    for name in list(times)[:3]:
        static = name == "backend static mode"
        with contextlib.ExitStack() as stack:
            backend = stack.enter_context(MediaPipePoseBackend(static_image_mode=static))
            runs = []   # (name, estimator): with --hands the two estimators alternate on every frame
            if name.startswith("Skeleton"):
                runs.append((name, SkeletonEstimator(backend)))
                if args.hands:
                    hand_backend = stack.enter_context(
                        MediaPipeHandBackend(model_complexity=args.hand_model_complexity))
                    body = stack.enter_context(MediaPipePoseBackend(static_image_mode=False))
                    runs.append((hands_name, SkeletonEstimator(body, hand_backend=hand_backend)))
            k = 0
            for rgb in frames:
                for _ in range(args.frames_per_image):
                    for run_name, est in (runs if runs else [(name, None)]):
                        t0, c0 = time.perf_counter(), time.process_time()
                        if est is None:
                            backend.detect(rgb)
                        else:
                            skeletons = est.process(rgb, depth_m, camera, k / 30.0)
                            cpu_ms.setdefault(run_name, []).append((time.process_time() - c0) * 1e3)
                        times[run_name].append((time.perf_counter() - t0) * 1e3)
                        if run_name == hands_name:
                            hands_found.append(sum(len(s.hands) for s in skeletons))
                        bar.update(1)
                    k += 1
    bar.close()
    print(f"== human pipeline per frame, {args.width}x{args.height}, {len(frames)} photos x "
          f"{args.frames_per_image} frames (first frame of each run excluded)")
    print(f"  {'stage':<28} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'Hz@p50':>8}")
    for name, ms in times.items():
        a = np.array(ms[1:])
        p50 = float(np.percentile(a, 50))
        print(f"  {name:<28} {p50:>8.1f} {np.percentile(a, 95):>8.1f} {a.mean():>8.1f} {1000 / p50:>8.1f}")
    if args.hands:
        added = np.array(times[hands_name][1:]) - np.array(times["SkeletonEstimator.process"][1:])
        cpu = {k: float(np.median(v[1:])) for k, v in cpu_ms.items()}
        print(f"  hands added per frame (paired, same frame): wall p50 {np.percentile(added, 50):.1f} ms, "
              f"p95 {np.percentile(added, 95):.1f} ms; CPU p50 {cpu['SkeletonEstimator.process']:.1f} -> "
              f"{cpu[hands_name]:.1f} ms; hands found per frame: mean {np.mean(hands_found):.2f} "
              f"(hand model {'full' if args.hand_model_complexity == 1 else 'lite'})")
    return 0
