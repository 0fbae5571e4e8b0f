"""`pose-ros train-crops`: train a model file's second stage (dense correspondences on object crops).

Renders crops zoomed in on each object of scenes like the first stage's (same camera, photos, clutter,
distances: read from the model file) into a crop bank (``--bank-dir``, default ``<model>.crops/``;
kept, so a later run reuses it), stores the stage in the model file after every epoch (key
``correspondence``) and keeps the optimizer in ``<model>.crops.ckpt`` so that ``--resume`` continues an
interrupted run. Prints per epoch the held-out coordinate error, mask IoU and the share of objects
posed within 0.1 d ADD(-S) by PnP (and by 3D-3D RANSAC with depth) on these correspondences alone.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-crops", help="train the crop correspondence stage of a model file",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model file (updated in place)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--meshes", type=Path, help="meshes/ folder (object.yaml per object)")
    src.add_argument("--bop-models", type=Path, help="BOP models folder")
    p.add_argument("--bank-dir", type=Path, default=None, help="rendered crops (default: <model>.crops/ beside it)")
    p.add_argument("--crops", type=int, default=20000, help="training crops to render")
    p.add_argument("--val-crops", type=int, default=256, help="held-out crops (another seed)")
    p.add_argument("--workers", type=int, default=2, help="processes rendering crops")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--widths", type=str, default="32,64,128", help="encoder widths at 1/2, 1/4, 1/8")
    p.add_argument("--no-class-film", dest="class_film", action="store_false",
                   help="class-specific heads only (no class-conditioned features; the older design)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=None, help="stop after the epoch that passes this many s")
    p.add_argument("--resume", action="store_true", help="continue from <model>.crops.ckpt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pose_ros.objects.correspondence_training import CropTrainConfig
    from pose_ros.objects.estimator import load_meshes_for_model
    from pose_ros.objects.model_file import ModelFileError, check_meshes, load_model_file

    try:
        loaded = load_model_file(args.model)
        models = load_meshes_for_model(args.meshes or args.bop_models, [o.obj_id for o in loaded.objects])
        by_class = check_meshes(loaded, models)
        models = [by_class[c] for c in range(1, len(loaded.objects) + 1)]
        widths = tuple(int(w) for w in args.widths.split(","))
        if len(widths) != 3:
            raise ValueError(f"--widths needs 3 values; got {args.widths}")
        for name in ("epochs", "crops", "val_crops", "workers", "batch_size"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
        cfg = CropTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, crop_size=args.crop_size,
                              widths=widths, class_film=args.class_film, threads=args.threads, seed=args.seed, time_budget_s=args.time_budget,
                              crops=args.crops, val_crops=args.val_crops, render_workers=args.workers)
        command = "pose-ros " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--resume")
        train_and_report(args.model, models, cfg, args.resume, command, args.bank_dir)
    except (ModelFileError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def train_and_report(model: Path, models: list, cfg: object, resume: bool, command: str,
                     bank_dir: Path | None = None) -> None:
    """Train the crop stage into ``model`` (optimizer kept in ``<model>.crops.ckpt``, crops in
    ``bank_dir`` or ``<model>.crops/``) and print the result; `pose-ros train --crop-epochs` calls this too."""
    from pose_ros.objects.correspondence_training import train_correspondence
    from pose_ros.objects.training_data import scene_config_of_model
    from pose_ros.objects.model_file import load_model_file

    scene_cfg = scene_config_of_model(load_model_file(model))
    ckpt = model.with_name(model.name + ".crops.ckpt")
    bank = bank_dir or model.with_name(model.stem + ".crops")
    out = train_correspondence(model, models, scene_cfg, bank, cfg, ckpt, resume=resume, command=command)
    h = out["history"][-1] if out["history"] else {}
    print(f"crop stage: {out['progress']['epoch']}/{cfg.epochs} epochs, {out['progress']['train_time_s'] / 60:.1f} "
          f"min; held-out ADD(-S) before ICP: PnP {100 * h.get('pnp_add_s', 0):.1f}%, with depth "
          f"{100 * h.get('rgbd_add_s', 0):.1f}%")
