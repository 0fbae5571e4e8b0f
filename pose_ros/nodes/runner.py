"""`main()` boilerplate for nodes: init, spin, clean shutdown on Ctrl-C / SIGINT / errors."""
from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor


def run_node(factory: Callable[[], "rclpy.node.Node"], args: list[str] | None = None, threads: int = 2) -> int:
    """Create the node with `factory` and spin it until shutdown; returns an exit code.

    A startup error (bad parameter, missing model file) is logged as one clear line and exits
    with code 2 instead of a traceback: the message names the fix.
    """
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    executor = None
    code = 0
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads)
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
