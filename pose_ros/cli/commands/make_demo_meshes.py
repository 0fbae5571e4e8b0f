"""`pose-ros make-demo-meshes`: regenerate the procedural demo objects in meshes/ (deterministic)."""
from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from pose_ros.synth.demo_objects import write_demo_objects

    for d in write_demo_objects(args.out):
        size_kb = sum(f.stat().st_size for f in d.iterdir()) / 1024
        print(f"wrote {d} ({size_kb:.0f} KB)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("make-demo-meshes", help="write the procedural demo objects (mug, box, bottle)",
                              description=__doc__)
    p.add_argument("--out", default="meshes", help="output folder (default: meshes)")
    p.set_defaults(func=_run)
