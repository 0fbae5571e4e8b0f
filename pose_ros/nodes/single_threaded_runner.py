"""`main()` for latency-critical nodes: like `runner.run_node`, but spun by rclpy's
SingleThreadedExecutor.

Why: rclpy's MultiThreadedExecutor is pure Python and costly. Measured on the 2-core machine, a
process receiving 640x480 colour + depth at 30 Hz used ~30% of a core with it and ~9% with the
single-threaded executor, and its colour-frame age p95 was 70-140 ms against ~45-60 ms. The teleop
nodes gain nothing from more executor threads: human_pose's callbacks only hand frames to its
worker thread, retarget's callbacks all serialise on one lock.

TODO(runner): `runner.run_node` could take an executor choice; then this module goes.
"""
from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def run_node_single_threaded(factory: Callable[[], "rclpy.node.Node"], args: list[str] | None = None) -> int:
    """Create the node with `factory`, spin it on one thread until shutdown; returns an exit code
    (2 with one clear line for a startup error, as `runner.run_node`)."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    executor = None
    code = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:
        print(f"[pose_ros] startup failed: {exc}", file=sys.stderr)
        code = 2
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code
