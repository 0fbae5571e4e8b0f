"""`pose-ros train`: train the keypoint network on synthetic renders of your meshes."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the object keypoint network on synthetic RGB-D renders",
        description="Pre-renders synthetic scenes once (into --data-dir, reusable), then trains with a progress "
                    "bar and a per-epoch validation on held-out scenes. Checkpoints go into --out itself; "
                    "re-run with --resume after an interruption.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--meshes", type=Path, help="meshes/ folder with <name>/object.yaml per object")
    src.add_argument("--bop-models", type=Path, help="BOP models folder (obj_XXXXXX.ply in mm + models_info.json)")
    p.add_argument("--obj-ids", type=int, nargs="+", help="with --bop-models: only these obj_ids")
    p.add_argument("--out", type=Path, required=True, help="model file to write (e.g. models/my_objects.pt)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where rendered training data is cached (default: <out>.data/)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--images", type=int, default=2000, help="training scenes to render")
    p.add_argument("--val-images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-depth", action="store_true", help="RGB-only network (no depth input channel)")
    p.add_argument("--input-size", default="320x240", help="network input WxH (multiples of 8)")
    p.add_argument("--widths", default="24,40,64,96",
                   help="network channel widths: stem,1/4,1/8,bottleneck (bigger learns orientation faster, runs slower)")
    p.add_argument("--decoder-width", type=int, default=40)
    p.add_argument("--crop", default="192x144",
                   help="train on random WxH crops of the input frames ('none' = whole frames; faster on CPU)")
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="stop (checkpointed, resumable) after this many minutes")
    p.add_argument("--crop-epochs", type=int, default=0,
                   help="then train the crop correspondence stage this many epochs on the same scenes "
                        "(`pose-ros train-crops`; off by default: on CPU budgets its coordinates have not "
                        "learned enough to beat the depth search, see docs/training.md)")
    p.add_argument("--resume", action="store_true", help="continue the training stored in --out")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this model file's weights (same objects), fresh LR schedule: fine-tune a "
                        "shipped model on more scenes")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--backgrounds", nargs="+", default=None, metavar="DIR",
                   help="folders of real photos without your objects (e.g. frames of your workspace exported from a "
                        "`pose-ros record` bag): backgrounds, table tops and distractor textures; 1 in 10 is held out "
                        "for the per-epoch false-positive check. Default: the ImageNet sample in "
                        "../shared/data/photos when present; 'none' = procedural textures only")
    p.add_argument("--camera", type=Path, default=None,
                   help="your camera: ROS camera_info YAML or BOP camera.json; renders use its intrinsics "
                        "(letterboxed into the network input as at run time)")
    p.add_argument("--distance-range", type=float, nargs=2, default=(0.35, 1.4), metavar=("MIN_M", "MAX_M"),
                   help="working distance of the camera to the objects, metres")
    p.add_argument("--hard-negatives", type=float, default=0.0, metavar="SHARE",
                   help="replace this share of the training samples (e.g. 0.25) by whole photos of the --backgrounds "
                        "(no object in them), drawn by how much of each the network still labels as an object, "
                        "re-measured every epoch: fewer false objects on real clutter (fine-tunes, with --init)")
    p.set_defaults(func=run)


def _scene_sources(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[float, ...] | None, tuple[int, int] | None]:
    """(photo folders, camera K, camera size) from --backgrounds / --camera; ValueError with the fix."""
    from pose_ros.core.camera_file import load_camera_file
    from pose_ros.synth.photo_bank import PhotoBank, default_photo_dirs

    lo, hi = args.distance_range
    if not 0.05 <= lo < hi <= 10.0:
        raise ValueError(f"--distance-range must be 0.05 <= MIN < MAX <= 10 m; got {lo} {hi}")
    if args.backgrounds is None:
        dirs = default_photo_dirs()
        if not dirs:
            print("warning: no --backgrounds and no default photos (../shared/data/photos) here: procedural "
                  "backgrounds only, which real clutter breaks; pass --backgrounds DIR", file=sys.stderr)
    elif [b.lower() for b in args.backgrounds] == ["none"]:
        dirs = []
    else:
        dirs = [Path(b) for b in args.backgrounds]
    if dirs:
        PhotoBank.from_dirs(dirs, split="train")          # clear error now, not in a render worker
    K = size = None
    if args.camera is not None:
        cam = load_camera_file(args.camera)
        K, size = tuple(float(v) for v in cam.K.ravel()), (cam.width, cam.height)
    return tuple(str(Path(d).resolve()) for d in dirs), K, size


def run(args: argparse.Namespace) -> int:
    import logging

    from pose_ros.core.object_model import load_bop_models, load_object_dir
    from pose_ros.objects.train import TrainConfig, train

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        w, h = (int(v) for v in args.input_size.lower().split("x"))
    except ValueError:
        print(f"error: --input-size must look like 320x240; got {args.input_size!r}", file=sys.stderr)
        return 2
    try:
        widths = tuple(int(v) for v in args.widths.split(","))
        if len(widths) != 4:
            raise ValueError
    except ValueError:
        print(f"error: --widths needs 4 comma-separated integers; got {args.widths!r}", file=sys.stderr)
        return 2
    crop_w = crop_h = None
    if args.crop.lower() != "none":
        try:
            crop_w, crop_h = (int(v) for v in args.crop.lower().split("x"))
        except ValueError:
            print(f"error: --crop must look like 192x144 or none; got {args.crop!r}", file=sys.stderr)
            return 2
    try:
        if args.meshes is not None:
            models = load_object_dir(args.meshes)
            for m in models:
                m.source = str(args.meshes / m.name)
        else:
            models = load_bop_models(args.bop_models, args.obj_ids)
            for m in models:
                m.source = str(args.bop_models / f"obj_{m.obj_id:06d}.ply")
        if not models:
            print("error: no objects found", file=sys.stderr)
            return 2
        photo_dirs, camera_K, camera_size = _scene_sources(args)
        cfg = TrainConfig(epochs=args.epochs, images=args.images, val_images=args.val_images,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed, workers=args.workers,
                          device=args.device, use_depth=not args.no_depth, input_width=w, input_height=h,
                          threads=args.threads, crop_width=crop_w, crop_height=crop_h,
                          widths=widths, decoder_width=args.decoder_width,
                          time_budget_s=None if args.time_budget_min is None else 60.0 * args.time_budget_min,
                          photo_dirs=photo_dirs, camera_K=camera_K, camera_size=camera_size,
                          distance_range_m=tuple(args.distance_range), hard_negatives=args.hard_negatives)
        if not 0.0 <= args.hard_negatives < 1.0:
            raise ValueError(f"--hard-negatives is a share in [0, 1); got {args.hard_negatives}")
        data_dir = args.data_dir or args.out.with_name(args.out.name + ".data")
        command = "pose-ros " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if args.init is not None and args.resume:
            print("error: --init and --resume exclude each other (--resume continues --out itself)", file=sys.stderr)
            return 2
        res = train(models, args.out, cfg, data_dir, resume=args.resume, command=command, init_from=args.init)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prog = res["progress"]
    last = res["metrics"][-1] if res["metrics"] else {}
    state = "finished" if prog["finished"] else "stopped (resume with --resume)"
    print(f"{state}: epoch {prog['epoch']}/{cfg.epochs}, step {prog['step']}, {prog['train_time_s'] / 60:.1f} min; "
          f"last val: {last}; model: {res['path']}")
    if prog["finished"] and args.crop_epochs > 0:
        from pose_ros.cli.commands.train_crops import train_and_report
        from pose_ros.objects.correspondence_training import CropTrainConfig

        try:
            train_and_report(args.out, models, CropTrainConfig(epochs=args.crop_epochs, seed=args.seed), args.resume,
                             command)
        except ValueError as exc:
            print(f"error: crop stage: {exc}", file=sys.stderr)
            return 2
    return 0
