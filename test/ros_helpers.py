"""Helpers for tests that run real rclpy nodes over real DDS (no mocks)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def ros_context() -> Iterator[Context]:
    """A private rclpy context, shut down afterwards even when the test fails."""
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)


class SpinThread:
    """Spin nodes in a background executor thread for the duration of a `with` block.

    ``single_threaded``: rclpy's SingleThreadedExecutor, as `run_node(threads=1)` runs a node in
    production. rclpy's MultiThreadedExecutor hands every ready entity of a pass to its pool in
    wait-set order (timers, subscriptions, clients, services); a node's entities share its mutually
    exclusive default group, so under CPU load a fast timer and a busy subscription win every pass
    and services or other subscriptions wait far longer than in production (test_retarget_nodes).
    """

    def __init__(self, context: Context, *nodes, single_threaded: bool = False) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = (SingleThreadedExecutor(context=context) if single_threaded
                         else MultiThreadedExecutor(num_threads=4, context=context))
        for node in nodes:
            self.executor.add_node(node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        # spin_once slices, not spin(): the loop stops before the executor is shut down (below)
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def add_node(self, node) -> None:
        self.executor.add_node(node)

    def __enter__(self) -> "SpinThread":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        # rclpy 9's Executor.shutdown destroys the guard condition before it waits for callbacks
        # still running in the pool, which trigger it when they finish: drain the pool first.
        pool = getattr(self.executor, "_executor", None)   # MultiThreadedExecutor's thread pool
        if pool is not None:
            pool.shutdown(wait=True)
        self.executor.shutdown(timeout_sec=2.0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, period_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period_s)
    return predicate()


def start_node_process(module: str, *ros_args: str, params_file: str | Path | None = None,
                       params: dict | None = None, name: str | None = None,
                       log_path: Path | None = None) -> subprocess.Popen:
    """Run `python -m pose_ros.nodes.<module>` as a separate process with --ros-args."""
    cmd = [sys.executable, "-m", f"pose_ros.nodes.{module}", "--ros-args"]
    if name:
        cmd += ["-r", f"__node:={name}"]
    if params_file:
        cmd += ["--params-file", str(params_file)]
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        cmd += ["-p", f"{key}:={value}"]
    cmd += list(ros_args)
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(2)  # SIGINT: let rclpy shut down cleanly
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def set_remote_parameter(node, target: str, name: str, value, timeout_s: float = 60.0):
    """What `ros2 param set <target> <name> <value>` does: the SetParameters service of node `target`
    (fully qualified, e.g. '/object_pose'); returns its rcl_interfaces/SetParametersResult."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = node.create_client(SetParameters, f"{target}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f"{target}/set_parameters not available"
        # an empty list has no element type: a string array, as pose_ros's list parameters are
        param = Parameter(name, Parameter.Type.STRING_ARRAY, []) if value == [] else Parameter(name, value=value)
        future = client.call_async(SetParameters.Request(parameters=[param.to_parameter_msg()]))
        assert wait_for(future.done, timeout_s), f"{target}/set_parameters did not answer in {timeout_s} s"
        return future.result().results[0]
    finally:
        node.destroy_client(client)


def get_remote_parameter(node, target: str, name: str, timeout_s: float = 60.0):
    """The current value of parameter `name` of node `target` (`ros2 param get`)."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = node.create_client(GetParameters, f"{target}/get_parameters")
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f"{target}/get_parameters not available"
        future = client.call_async(GetParameters.Request(names=[name]))
        assert wait_for(future.done, timeout_s), f"{target}/get_parameters did not answer in {timeout_s} s"
        return parameter_value_to_python(future.result().values[0])
    finally:
        node.destroy_client(client)


def start_ground_truth_object_chain(tag: str, log_dir: Path, camera_params: dict | None = None,
                                    node_params: dict | None = None) -> tuple[subprocess.Popen, subprocess.Popen, str]:
    """A synthetic camera (frozen scene at 3 Hz, 320x240, no noise, ground truth on /<tag>/ground_truth)
    and an object_pose node that refines that ground truth on depth (no network, no tracking): the
    smallest real chain whose published poses are known, for tests of the node's output interfaces.
    Logs: ``log_dir``/camera.log and object_pose.log. Returns (camera, object_pose, ground-truth topic)."""
    prefix = f"/{tag}/camera"
    gt_topic = f"/{tag}/ground_truth"
    topics = {"color_topic": f"{prefix}/color/image_raw", "depth_topic": f"{prefix}/aligned_depth_to_color/image_raw",
              "info_topic": f"{prefix}/color/camera_info"}
    camera = start_node_process("synthetic_camera_node", name=f"synthetic_camera_{tag}", log_path=log_dir / "camera.log",
                                params={"rate_hz": 3.0, "width": 320, "height": 240, "noise": False, "time_scale": 0.0,
                                        "seed": 5, "ground_truth_topic": gt_topic, **topics, **(camera_params or {})})
    pose_node = start_node_process("object_pose_node", name=f"object_pose_{tag}", log_path=log_dir / "object_pose.log",
                                   params={"model_file": "''", "meshes_dir": str(REPO_ROOT / "meshes"),
                                           "init_poses_topic": gt_topic, "tracking": False,
                                           "publish_debug_image": False, "max_rate_hz": 3.0, **topics,
                                           **(node_params or {})})
    return camera, pose_node, gt_topic
