"""`pose-ros launch <system> [name:=value ...]`: the venv equivalent of `ros2 launch pose_ros ...`."""
from __future__ import annotations

import argparse


def parse_launch_args(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise SystemExit(f"launch arguments are name:=value, got '{item}'")
        out[name] = value
    return out


def register(sub: argparse._SubParsersAction) -> None:
    from pose_ros.launch_specs import SYSTEMS
    p = sub.add_parser("launch", help="start a system's nodes (like ros2 launch, for venvs without launch)",
                       description="Systems: " + "; ".join(f"{s.name}: {s.description}" for s in SYSTEMS.values()))
    p.add_argument("system", choices=sorted(SYSTEMS))
    p.add_argument("args", nargs="*", help="launch arguments name:=value (see --show)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--show", action="store_true", help="print the launch arguments and node commands, start nothing")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose_ros.cli.launcher import plan, run
    from pose_ros.launch_specs import SYSTEMS
    system = SYSTEMS[args.system]
    overrides = parse_launch_args(args.args)
    if args.show:
        for a in system.args:
            print(f"  {a.name}:={overrides.get(a.name, a.default)!s:<40} {a.description}")
        for proc in plan(system, overrides):
            print(" ".join(proc.command))
        return 0
    return run(system, overrides, duration_s=args.duration)
