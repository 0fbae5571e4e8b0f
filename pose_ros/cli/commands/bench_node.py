"""`pose-ros bench-node`: end-to-end latency, pose rate and ADD(-S) recall of the object pose node.

Synthetic camera (1 or 3 demo objects) + object pose node + topic monitor as separate processes
over real DDS (pose_ros.eval.node_latency_bench), then one summary.
"""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench-node", help="end-to-end latency / pose rate / ADD(-S) of the object pose node over DDS",
        description="Launches the synthetic camera with --objects demo objects, the object pose node and the "
                    "topic monitor (pose-ros launch object_pose), runs them for --duration seconds and prints "
                    "the latency from the camera stamp to the received pose message (p50/p95), the sustained "
                    "pose rate and the ADD(-S) < 0.1 d recall against the camera's ground truth.")
    p.add_argument("--objects", type=int, choices=[1, 2, 3], default=3,
                   help="number of demo objects in the scene (1 = mug; 3 = mug, box, bottle)")
    p.add_argument("--object-names", nargs="+", default=None, help="explicit demo object names instead of --objects")
    p.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    p.add_argument("--rate", type=float, default=15.0, help="camera rate in Hz (default 15)")
    p.add_argument("--size", default="640x480", help="camera WxH (default 640x480)")
    p.add_argument("--model", default="models/demo_objects.pt", help="trained model file")
    p.add_argument("--depth-only", action="store_true",
                   help="no network: the node ICP-refines the ground truth (transport + ICP latency only)")
    p.add_argument("--search-hypotheses", type=int, default=None, metavar="N",
                   help="the node's search_max_hypotheses (default: config/object_pose.yaml's)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set an object_pose parameter (repeatable), e.g. --param detect_aside=false")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID for the launched nodes (default: the environment's); use a free one so "
                        "no other camera on the default topics feeds the benchmark")
    p.add_argument("--out", default=None, help="folder for the monitor summary and node logs (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    p.add_argument("--verbose", action="store_true", help="show the nodes' output live")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pose_ros.eval.node_latency_bench import DEMO_OBJECTS_BY_COUNT, NodeBenchConfig, run_node_bench

    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
        cfg = NodeBenchConfig(objects=args.object_names or list(DEMO_OBJECTS_BY_COUNT[args.objects]),
                              duration_s=args.duration, rate_hz=args.rate, model=args.model,
                              depth_only=args.depth_only, width=w, height=h,
                              search_hypotheses=args.search_hypotheses, node_params=_params(args.param))
        print(f"[bench-node] running {cfg.duration_s:g} s: camera {cfg.objects} at {cfg.rate_hz:g} Hz -> object_pose "
              f"({'depth-only' if cfg.depth_only else cfg.model}) -> topic_monitor ...", flush=True)
        result = run_node_bench(cfg, out_dir=args.out, verbose=args.verbose, domain_id=args.domain_id)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}")
        return 2
    print(result.format())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.__dict__, f, indent=2)
    if result.exit_code != 0:
        print(f"[bench-node] a node exited with an error (see {result.log_file})")
        return 1
    return 0 if result.latency_samples else 1


def _params(items: list[str]) -> dict:
    """NAME=VALUE strings -> {name: YAML-typed value} (true/false, numbers, strings)."""
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param wants NAME=VALUE; got '{item}'")
        out[name.strip()] = yaml.safe_load(value)
    return out
