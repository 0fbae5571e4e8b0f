"""`pose-ros train-crops`: train a model file's second stage (dense correspondences on object crops).

Uses the scenes the first stage was trained on (``--data-dir``, the data dir `pose-ros train` wrote;
by default the one recorded in the model file), stores the stage in the model file after every epoch
(key ``correspondence``) and keeps the optimizer in ``<model>.crops.ckpt`` so that ``--resume``
continues an interrupted run. Prints per epoch the held-out coordinate error, mask IoU and the share
of objects posed within 0.1 d ADD(-S) by PnP on these correspondences alone.
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
    p.add_argument("--data-dir", type=Path, default=None, help="pre-rendered scenes (default: the model's own)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--widths", type=str, default="32,64,128", help="encoder widths at 1/2, 1/4, 1/8")
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
        data_dir = args.data_dir or loaded.raw.get("training", {}).get("data_dir")
        if not data_dir or not (Path(data_dir) / "train" / "meta.json").is_file():
            raise ValueError(f"no pre-rendered scenes at {data_dir!r}; pass the --data-dir that `pose-ros train` "
                             "rendered (it re-renders them deterministically with its stored command)")
        models = load_meshes_for_model(args.meshes or args.bop_models, [o.obj_id for o in loaded.objects])
        by_class = check_meshes(loaded, models)
        models = [by_class[c] for c in range(1, len(loaded.objects) + 1)]
        widths = tuple(int(w) for w in args.widths.split(","))
        if len(widths) != 3:
            raise ValueError(f"--widths needs 3 values; got {args.widths}")
        cfg = CropTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, crop_size=args.crop_size,
                              widths=widths, threads=args.threads, seed=args.seed, time_budget_s=args.time_budget)
        command = "pose-ros " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--resume")
        train_and_report(args.model, models, data_dir, cfg, args.resume, command)
    except (ModelFileError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def train_and_report(model: Path, models: list, data_dir: str | Path, cfg: object, resume: bool, command: str) -> None:
    """Train the crop stage into ``model`` (optimizer kept in ``<model>.crops.ckpt``) and print the result;
    `pose-ros train --crop-epochs` calls this too."""
    from pose_ros.objects.correspondence_training import train_correspondence

    ckpt = model.with_name(model.name + ".crops.ckpt")
    out = train_correspondence(model, models, data_dir, cfg, ckpt, resume=resume, command=command)
    h = out["history"][-1] if out["history"] else {}
    print(f"crop stage: {out['progress']['epoch']}/{cfg.epochs} epochs, {out['progress']['train_time_s'] / 60:.1f} "
          f"min; held-out ADD(-S) before ICP: PnP {100 * h.get('pnp_add_s', 0):.1f}%, with depth "
          f"{100 * h.get('rgbd_add_s', 0):.1f}%")
