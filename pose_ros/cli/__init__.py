"""The single `pose-ros` command line entry point.

Every module in `pose_ros.cli.commands` that defines `register(subparsers)` becomes a
subcommand; `register` adds a parser and sets `func` (called with the parsed args, returns an
exit code). Modules are imported lazily only for their parser, so heavy libraries (torch,
open3d, mediapipe) must be imported inside `func`, not at module top level.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from pose_ros.nodes.blas_threads import limit_blas_threads

limit_blas_threads()    # before a command module imports NumPy: benches and evals run as the nodes do

from pose_ros.cli import commands as _commands  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pose-ros",
        description="6DoF object pose and humanoid teleoperation from one RGB-D camera (ROS 2).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
