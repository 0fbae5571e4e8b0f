"""`pose-ros play BAG [--rate R] [--loop]`: publish a ROS 2 MCAP bag with its recorded timing."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "play", help="play a ROS 2 MCAP bag (folder with metadata.yaml, or a .mcap file)",
        description="Publish every message of BAG with the recorded spacing divided by --rate.")
    p.add_argument("bag", help="bag folder (metadata.yaml + *.mcap) or a single .mcap file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="start again at the end, until Ctrl-C")
    p.add_argument("--topics", nargs="+", default=None, help="only these topics (default: all)")
    p.add_argument("--start-delay", type=float, default=0.5,
                   help="seconds to wait before the first message so subscribers can connect")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose_ros.nodes.bag_tools import play
    from pose_ros.sensors.bag import BagError

    try:
        return play(args.bag, rate=args.rate, loop=args.loop, topics=args.topics, start_delay_s=args.start_delay)
    except (BagError, ValueError) as exc:
        print(f"pose-ros play: {exc}")
        return 2
