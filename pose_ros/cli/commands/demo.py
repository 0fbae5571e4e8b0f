"""`pose-ros demo`: the all-in-one demo on the embedded default (synthetic camera, demo objects).

Synthetic camera -> object pose node -> live monitor printing pose error against ground truth,
rate and latency, all over real ROS 2 topics. Without a trained model file it runs the camera
and the monitor only, and says how to get one.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the all-in-one demo on synthetic data (no hardware)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds to run (0 = until Ctrl-C)")
    p.add_argument("--model", default="models/demo_objects.pt", help="trained model file")
    p.add_argument("--camera", default="synthetic", choices=["synthetic", "dataset"], help="camera source")
    p.add_argument("--dataset", default="", help="BOP/YCB-V scene folder for --camera dataset")
    p.add_argument("--rate", default="10.0", help="camera rate in Hz")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose_ros.cli.launcher import run
    from pose_ros.launch_specs import SYSTEMS
    from pose_ros.resources import resolve

    model = resolve(args.model)
    overrides = {"camera": args.camera, "rate": args.rate}
    if args.dataset:
        overrides["dataset"] = args.dataset
    out_dir = Path(tempfile.mkdtemp(prefix="pose_ros_demo_"))
    summary_path, errors_path = out_dir / "summary.json", out_dir / "errors.jsonl"
    monitor = {"topic_monitor": {"summary_file": str(summary_path), "errors_file": str(errors_path)}}
    if model.is_file():
        system = SYSTEMS["demo"]
        overrides["model"] = str(model)
    else:
        print(f"[demo] no trained model at {model} (train one: pose-ros train --meshes meshes --out {args.model}); "
              "running camera + monitor only")
        system = SYSTEMS["camera"]
    code = run(system, overrides, duration_s=args.duration or None, node_params=monitor)
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        print("\n[demo] summary")
        for key, value in s.items():
            print(f"  {key:<22} {value}")
        if errors_path.is_file():
            print(f"  {'timeline':<22} {errors_path} (one JSON line per scored ground-truth instance)")
    return code
