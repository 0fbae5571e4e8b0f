"""`pose-ros record OUT [--topics ...] [--duration S]`: record live topics into a ROS 2 MCAP bag."""
from __future__ import annotations

import argparse

from pose_ros.nodes.topics import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record", help="record topics into a ROS 2 bag (MCAP, `ros2 bag` layout)",
        description="Record topics into a folder OUT with metadata.yaml + OUT_0.mcap, readable by "
                    "`ros2 bag info/play` and `pose-ros play`. Default topics: the RealSense RGB-D trio.")
    p.add_argument("out", help="bag folder to create (must not exist unless --overwrite)")
    p.add_argument("--topics", nargs="+", default=[COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC],
                   help="absolute topic names (default: colour, aligned depth, camera_info)")
    p.add_argument("--all", action="store_true", help="record every topic (except /rosout, /parameter_events)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to record (0 = until Ctrl-C)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag folder")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose_ros.nodes.bag_tools import record
    from pose_ros.sensors.bag import BagError

    if args.duration < 0:
        print(f"--duration must be >= 0 seconds; got {args.duration}")
        return 2
    try:
        return record(args.out, None if args.all else list(args.topics), args.duration, overwrite=args.overwrite)
    except (BagError, ValueError) as exc:
        print(f"pose-ros record: {exc}")
        return 2
