"""Several pose_ros nodes in one process, spun by one single-threaded executor.

Why: rclpy has no zero-copy intra-process transport, but nodes that share a process share one
DDS participant, and Fast DDS hands a sample from a writer to a reader of the same participant
without the transport (no shared-memory segment, no fragments, no acknowledgements). For the
teleop chain (camera -> human_pose -> retarget) that keeps the ~1.5 MB of colour + depth per
frame off the inter-process path; `pose-ros bench-teleop --composed` measures the difference.

Usage (built by `pose_ros.cli.launcher`, not typed by hand):

    python -m pose_ros.nodes.container '[{"module": "human_pose_node", "args": ["--ros-args", ...]}, ...]'

Each entry's `args` are exactly the `--ros-args ...` a separate process of that node would get
(name remapping, parameter files, `-p` overrides, remappings); they are applied to that node
only (`cli_args`, no global arguments), so two nodes never see each other's parameters.
"""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any

# Node modules that can be composed, and the node class each exposes. Every class takes the
# rclpy.Node keyword arguments (`cli_args`, `use_global_arguments`).
COMPOSABLE: dict[str, str] = {
    "realsense_camera_node": "RealSenseCameraNode",
    "human_pose_node": "HumanPoseNode",
    "retarget_node": "RetargetNode",
    "skeleton_replay_node": "SkeletonReplayNode",
    "teleop_bench": "PersonCameraNode",
}


@dataclass(frozen=True)
class ComposedNode:
    module: str           # pose_ros.nodes.<module>
    args: list[str]       # ["--ros-args", ...] for this node only


def parse_entries(text: str) -> list[ComposedNode]:
    """The container's one command-line argument: a JSON list of {module, args}."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"container argument is not JSON ({exc}); pass a list of {{module, args}}") from exc
    if not isinstance(raw, list) or not raw:
        raise ValueError("container argument must be a non-empty JSON list of {module, args}")
    out = []
    for item in raw:
        module = item.get("module") if isinstance(item, dict) else None
        if module not in COMPOSABLE:
            raise ValueError(f"cannot compose node module {module!r}; composable: {', '.join(sorted(COMPOSABLE))}")
        args = item.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError(f"'args' of {module} must be a list of strings")
        out.append(ComposedNode(module, list(args)))
    return out


def entries_json(entries: list[ComposedNode]) -> str:
    return json.dumps([{"module": e.module, "args": e.args} for e in entries])


def make_node(entry: ComposedNode) -> Any:
    cls = getattr(importlib.import_module(f"pose_ros.nodes.{entry.module}"), COMPOSABLE[entry.module])
    return cls(cli_args=entry.args, use_global_arguments=False)


def run(entries: list[ComposedNode], args: list[str] | None = None) -> int:
    """Create every node (in order), spin them on one SingleThreadedExecutor until shutdown.

    One executor thread, like the separate teleop processes: the callbacks only hand work to a
    node's own worker (human_pose) or serialise on one lock (retarget); the multi-threaded
    executor costs more CPU than it saves (see pose_ros.nodes.runner)."""
    from pose_ros.nodes.runner import run_nodes

    return run_nodes([partial(make_node, entry) for entry in entries], args=args, threads=1,
                     what="container startup")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m pose_ros.nodes.container '<JSON list of {module, args}>'", file=sys.stderr)
        return 2
    try:
        entries = parse_entries(argv[0])
    except ValueError as exc:
        print(f"[pose_ros] {exc}", file=sys.stderr)
        return 2
    return run(entries, args=[sys.argv[0]])


if __name__ == "__main__":
    sys.exit(main())
