"""`pose-ros play BAG [--rate R] [--loop] [--clock [HZ]]`: publish a ROS 2 MCAP bag with its recorded timing."""
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
    p.add_argument("--clock", type=_positive_float, nargs="?", const=40.0, default=0.0, metavar="HZ",
                   help="publish the bag's time on /clock (rosgraph_msgs/Clock) at HZ (40 when given without a "
                        "value), as `ros2 bag play --clock` does: nodes with use_sim_time follow the bag")
    p.set_defaults(func=_run)


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _run(args: argparse.Namespace) -> int:
    from pose_ros.nodes.bag_tools import play
    from pose_ros.sensors.bag import BagError

    try:
        return play(args.bag, rate=args.rate, loop=args.loop, topics=args.topics, start_delay_s=args.start_delay,
                    clock_hz=args.clock)
    except (BagError, ValueError) as exc:
        print(f"pose-ros play: {exc}")
        return 2
