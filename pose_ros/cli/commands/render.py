"""`pose-ros render`: render sample synthetic tabletop frames to PNGs, or benchmark the renderer.

Writes per frame: NNNN_rgb.png, NNNN_depth.png (16-bit mm, noisy), NNNN_depth_vis.png
(colourised, black = missing), NNNN_mask.png (instance ids as grey levels) and, with --sheet,
one contact sheet. ``--bench N`` times N renders of random 3-object scenes instead.
"""
from __future__ import annotations

import argparse


def _vis_depth(depth_m, max_m: float):
    import cv2
    import numpy as np

    v = cv2.applyColorMap((np.clip(depth_m / max_m, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    v[depth_m <= 0] = 0
    return v


def _run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import cv2
    import numpy as np
    from tqdm import tqdm

    from pose_ros.core.camera import PinholeCamera
    from pose_ros.core.object_model import load_object_dir
    from pose_ros.synth.noise import DepthNoiseModel
    from pose_ros.synth.renderer import RgbdRenderer
    from pose_ros.synth.scene_sampler import TabletopSceneSampler
    from pose_ros.synth.stream import SyntheticSceneStream

    models = load_object_dir(args.meshes)
    cam = PinholeCamera.from_fov(args.width, args.height, args.fov_x_deg)
    if args.bench and args.stream:
        stream = SyntheticSceneStream(models, cam, seed=args.seed)
        stream.frame(0.0)
        wall, cpu = [], []
        for i in tqdm(range(args.bench), desc="stream", unit="frame"):
            t0, c0 = time.perf_counter(), time.process_time()
            stream.frame(i * args.dt)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(f"SyntheticSceneStream.frame {cam.width}x{cam.height} (render + noise), {args.bench} frames, dt {args.dt} s: "
              f"wall median {1000 * np.median(wall):.1f} ms p90 {1000 * np.percentile(wall, 90):.1f} ms | "
              f"process CPU median {1000 * np.median(cpu):.1f} ms")
        return 0
    if args.bench:
        sampler = TabletopSceneSampler(models, cam, args.seed, n_distractors=(0, 0))
        renderer = RgbdRenderer(cam)
        noise = DepthNoiseModel()
        rng = np.random.default_rng(args.seed)
        scenes = [sampler.sample(args.objects) for _ in range(args.bench)]
        bg = np.full((cam.height, cam.width, 3), 128, np.uint8)
        renderer.render(scenes[0].render_list(models), background=bg, table=scenes[0].table)  # build BVHs
        wall, cpu, wall_n, cpu_n, px = [], [], [], [], []
        for sc in tqdm(scenes, desc="render", unit="frame"):
            t0, c0 = time.perf_counter(), time.process_time()
            res = renderer.render(sc.render_list(models), background=bg, rng=rng,
                                  table=sc.table if args.table else None)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            t1, c1 = time.perf_counter(), time.process_time()
            noise.apply(res.depth_m, res.normals_cam, rng, K=cam.K)
            wall_n.append(time.perf_counter() - t1)
            cpu_n.append(time.process_time() - c1)
            px.append(int((res.instance_mask >= 0).sum()))
        ms = lambda a, q: 1000 * float(np.percentile(a, q))  # noqa: E731
        print(f"{cam.width}x{cam.height}, {args.objects} objects, table={'on' if args.table else 'off'}, "
              f"{args.bench} frames, mean object pixels {np.mean(px):.0f}")
        print(f"render      wall median {ms(wall, 50):.1f} ms  p90 {ms(wall, 90):.1f} ms | "
              f"process CPU median {ms(cpu, 50):.1f} ms")
        print(f"depth noise wall median {ms(wall_n, 50):.1f} ms  p90 {ms(wall_n, 90):.1f} ms | "
              f"process CPU median {ms(cpu_n, 50):.1f} ms")
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sheet = []
    if args.stream:
        stream = SyntheticSceneStream(models, cam, seed=args.seed)
        frames = ((stream.frame(i * args.dt)[:2]) for i in range(args.n))
    else:
        sampler = TabletopSceneSampler(models, cam, args.seed)
        renderer = RgbdRenderer(cam)
        noise = DepthNoiseModel()
        rng = np.random.default_rng(args.seed)

        def gen():
            for _ in range(args.n):
                sc = sampler.sample(args.objects)
                res = renderer.render(sc.render_list(models), rng=rng, table=sc.table)
                yield res, noise.apply(res.depth_m, res.normals_cam, rng, K=cam.K)

        frames = gen()
    for i, (res, depth) in enumerate(tqdm(frames, total=args.n, desc="render", unit="frame")):
        bgr = res.rgb[:, :, ::-1]
        cv2.imwrite(str(out / f"{i:04d}_rgb.png"), bgr)
        cv2.imwrite(str(out / f"{i:04d}_depth.png"), np.clip(np.rint(depth * 1000), 0, 65535).astype(np.uint16))
        dv = _vis_depth(depth, args.max_depth_m)
        cv2.imwrite(str(out / f"{i:04d}_depth_vis.png"), dv)
        mask = np.where(res.instance_mask >= 0, 40 + 40 * res.instance_mask, 0).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(out / f"{i:04d}_mask.png"), mask)
        if args.sheet:
            sheet.append(np.concatenate([bgr, dv, cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)], axis=1))
    if sheet:
        cv2.imwrite(str(out / "sheet.png"), cv2.resize(np.concatenate(sheet, axis=0), None, fx=0.5, fy=0.5))
    print(f"wrote {args.n} frames to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="render sample synthetic RGB-D frames (or --bench the renderer)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meshes", default="meshes", help="object folder for load_object_dir (default: meshes)")
    p.add_argument("--out", default="/tmp/pose_ros_render", help="output folder for PNGs")
    p.add_argument("-n", type=int, default=4, help="number of frames")
    p.add_argument("--objects", type=int, default=3, help="known objects per scene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fov-x-deg", type=float, default=60.0)
    p.add_argument("--max-depth-m", type=float, default=1.5, help="depth colour scale")
    p.add_argument("--stream", action="store_true", help="frames from SyntheticSceneStream instead of random scenes")
    p.add_argument("--dt", type=float, default=1.0, help="seconds between --stream frames")
    p.add_argument("--sheet", action="store_true", help="also write sheet.png (rgb | depth | mask per row)")
    p.add_argument("--bench", type=int, default=0, metavar="N", help="time N renders (or N stream frames with --stream) instead of writing PNGs")
    p.add_argument("--no-table", dest="table", action="store_false", help="--bench without the table plane")
    p.set_defaults(func=_run)
