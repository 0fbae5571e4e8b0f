"""`pose-ros bench`: per-stage timing and FPS of the object pose estimator on rendered RGB-D frames.

Frames are rendered once (tabletop scenes with exactly ``--objects`` known objects, sensor depth
noise) at ``--size``; then the estimator runs on them repeatedly. Reports mean / p50 / p95 per
stage (preprocess, network, instances, voting, pnp, icp, depth_search, appearance, scoring, total) and
end-to-end FPS.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="time the object pose estimator per stage (FPS)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--meshes", type=Path, default=None, help="meshes/ folder (default: ./meshes)")
    src.add_argument("--bop-models", type=Path, default=None)
    p.add_argument("--size", default="640x480", help="camera image WxH")
    p.add_argument("--objects", type=int, default=3, help="known objects per frame")
    p.add_argument("--frames", type=int, default=8, help="distinct rendered frames")
    p.add_argument("--repeats", type=int, default=4, help="passes over the frames")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-icp", action="store_true", help="PnP poses only (also disables the depth search)")
    p.add_argument("--no-depth-search", action="store_true", help="never run the depth-driven pose search")
    p.add_argument("--no-appearance", action="store_true",
                   help="no render-and-compare check (geometry-only hypothesis ranking; faster)")
    p.add_argument("--search-hypotheses", type=int, default=None, metavar="N",
                   help="most depth-search hypotheses per instance (default: DepthSearchConfig's; 8 = the fast search)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from pose_ros.core.camera import PinholeCamera
    from pose_ros.eval.bop_io import GtInstance
    from pose_ros.eval.detection_matching import count_false_positives
    from pose_ros.objects.estimator import PoseEstimator, describe_stage_counts
    from pose_ros.objects.model_file import ModelFileError
    from pose_ros.synth.noise import DepthNoiseModel
    from pose_ros.synth.renderer import RgbdRenderer
    from pose_ros.synth.scene_sampler import TabletopSceneSampler

    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"error: --size must look like 640x480; got {args.size!r}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    meshes = args.bop_models or args.meshes or Path("meshes")
    from pose_ros.objects.depth_search import DepthSearchConfig

    search = None if args.search_hypotheses is None else DepthSearchConfig(max_verified=args.search_hypotheses)
    try:
        est = PoseEstimator(args.model, meshes=meshes, device=args.device, use_icp=not args.no_icp,
                            depth_search=not args.no_depth_search, appearance_check=not args.no_appearance,
                            depth_search_config=search)
    except (ModelFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    models = [est.models[c] for c in sorted(est.models)]
    if not models:
        print("error: no meshes matched the model; pass --meshes/--bop-models", file=sys.stderr)
        return 2
    f = 600.0 * w / 640.0
    cam = PinholeCamera(np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]), w, h)
    rng = np.random.default_rng(args.seed)
    sampler = TabletopSceneSampler(models, cam, rng=rng, distance_m=(0.5, 0.9))
    ren = RgbdRenderer(cam)
    noise = DepthNoiseModel()
    frames = []
    gts = []
    for _ in range(args.frames):
        sc = sampler.sample(args.objects)
        r = ren.render(sc.render_list(models), rng=rng, table=sc.table)
        frames.append((r.rgb, noise.apply(r.depth_m, r.normals_cam, rng=rng, K=cam.K)))
        gts.append([GtInstance(int(models[mi].obj_id), np.asarray(T)) for mi, T in zip(sc.model_indices, sc.T_cam_obj)])
    est.estimate(*frames[0], cam)                                  # warm-up (allocations, BVH caches)
    times: list[dict[str, float]] = []
    found = []
    false_pos = []
    by_id = {int(m.obj_id): m for m in models}
    for _ in tqdm(range(args.repeats), desc="bench", unit="pass"):
        for (rgb, depth), gt in zip(frames, gts):
            res = est.estimate(rgb, depth, cam)
            times.append(dict(est.last_timing_ms))
            found.append(len(res))
            false_pos.append(sum(count_false_positives(gt, res, by_id, use_icp=True)))
    keys = ["preprocess", "network", "objectness", "instances", "crop_network", "crop_pnp", "voting", "pnp", "icp",
            "depth_search", "appearance", "scoring", "total"]
    print(f"object pose bench: {w}x{h}, {args.objects} objects/frame, {len(times)} runs, torch threads "
          f"{torch.get_num_threads()}, device {args.device}, ICP {'off' if args.no_icp else 'on'}, depth search "
          f"{'off' if args.no_icp or args.no_depth_search else 'on'}, appearance check "
          f"{'off' if args.no_icp or args.no_appearance else 'on'}")
    print(f"{'stage':<11}{'mean ms':>9}{'p50':>9}{'p95':>9}")
    for k in keys:
        v = np.array([t.get(k, 0.0) for t in times])
        print(f"{k:<11}{v.mean():9.1f}{np.percentile(v, 50):9.1f}{np.percentile(v, 95):9.1f}")
    tot = np.array([t["total"] for t in times])
    print(f"FPS (1000 / mean total): {1000.0 / tot.mean():.1f}; poses found per frame: {np.mean(found):.2f} "
          f"(of {args.objects}); false positives per frame (absent object or ADD(-S) >= 0.1 d): {np.mean(false_pos):.2f}")
    print(describe_stage_counts(est.stage_counts))
    return 0
