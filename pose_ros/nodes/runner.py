"""`main()` boilerplate for nodes: init, spin, clean shutdown on Ctrl-C / SIGINT / errors.

Executor: ``threads=1`` spins rclpy's SingleThreadedExecutor, more threads the
MultiThreadedExecutor. The multi-threaded one is pure Python and costly: measured on the 2-core
machine, a process receiving 640x480 colour + depth at 30 Hz used ~30% of a core with it and ~9%
with the single-threaded one, and its colour-frame age p95 was 70-140 ms against ~45-60 ms. Nodes
whose callbacks only hand work to their own worker thread, or serialise on one lock anyway (the
teleop nodes), use one thread.

Ctrl-C / SIGINT / SIGTERM: handled here in Python, not by rclpy's signal handlers (rclpy is
initialised with `SignalHandlerOptions.NO`). rclpy's handlers shut the context down from a native
thread of their own while the nodes still exist; the nodes were then destroyed on a shut-down
context (rmw_fastrtps does not support that: ros2/rmw_fastrtps#478), which now and then crashed the
process (SIGSEGV in `__rmw_trigger_guard_condition` on a native thread while the main thread was in
`destroy_node`: exit -11 instead of 0 on Ctrl-C, seen on the loaded 2-core machine), or made `spin`
raise an RCLError ("the given context is not valid") halfway through building a wait set (exit 1).
Here a signal only raises KeyboardInterrupt in the main thread, which spins in short slices so that
it notices within SPIN_SLICE_S; the executor is stopped, the nodes destroyed and only then the
context shut down, in that order, on one thread.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable, Sequence

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

# How long the main thread may sit in one wait of the executor before it checks for a signal.
SPIN_SLICE_S = 0.1


def run_node(factory: Callable[[], "rclpy.node.Node"], args: list[str] | None = None, threads: int = 2) -> int:
    """Create the node with `factory` and spin it until shutdown; returns an exit code.

    A startup error (bad parameter, missing model file) is logged as one clear line and exits
    with code 2 instead of a traceback: the message names the fix.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1; got {threads}")
    return run_nodes([factory], args if args is not None else sys.argv, threads)


def run_nodes(factories: Sequence[Callable[[], "rclpy.node.Node"]], args: list[str] | None = None,
              threads: int = 1, what: str = "startup") -> int:
    """Create the nodes in order and spin them on one executor until shutdown (``run_node``'s
    loop, also the container's); nodes are destroyed in reverse order."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)   # signals: module doc
    previous_handlers = _signals_raise_keyboard_interrupt()
    nodes: list = []
    executor = None
    code = 0
    try:
        for factory in factories:
            nodes.append(factory())
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        for node in nodes:
            executor.add_node(node)
        while rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_SLICE_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError, ParameterException) as exc:
        print(f"[pose_ros] {what} failed: {exc}", file=sys.stderr)
        code = 2
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        for node in reversed(nodes):
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    return code


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _signals_raise_keyboard_interrupt() -> dict[int, Any]:
    """SIGINT and SIGTERM (`ros2 launch` escalating, `kill`) raise KeyboardInterrupt in the main
    thread: a clean shutdown, also where SIGINT was inherited as ignored (a background job) and
    instead of Python's default of dying on the spot at SIGTERM. Returns the previous handlers;
    none are set outside the main thread (there the caller owns the signals)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, _raise_keyboard_interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
