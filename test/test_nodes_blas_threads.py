"""One BLAS thread in node processes: the environment rule, and a node module started on its own."""
from __future__ import annotations

import os
import subprocess
import sys

from pose_ros.nodes.blas_threads import blas_environment, limit_blas_threads


def test_one_blas_thread_per_node_unless_the_user_sets_one():
    assert blas_environment({}) == {"OPENBLAS_NUM_THREADS": "1"}
    assert blas_environment({"OPENBLAS_NUM_THREADS": "2"}) == {}
    assert blas_environment({"OMP_NUM_THREADS": "4"}) == {}


def test_too_late_once_numpy_is_loaded():
    import numpy  # noqa: F401  (this process has it already)

    assert limit_blas_threads() is False


def _thread_env_after_import(module: str, extra: dict[str, str], then: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                             "MKL_NUM_THREADS")}
    env.update(extra)
    code = f"import os, sys; import {module}; {then or 'pass'}; print(os.environ.get('OPENBLAS_NUM_THREADS'), 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_a_node_started_on_its_own_gets_one_thread_before_numpy_loads():
    """`ros2 run` / `python -m pose_ros.nodes.retarget_node`: no launch sets the environment."""
    threads, numpy_loaded = _thread_env_after_import("pose_ros.nodes.retarget_node", {})
    assert threads == "1" and numpy_loaded == "True"
    threads, _ = _thread_env_after_import("pose_ros.nodes.retarget_node", {"OPENBLAS_NUM_THREADS": "2"})
    assert threads == "2"


def test_the_pose_ros_command_gets_one_thread_before_its_commands_load_numpy():
    """`pose-ros bench` / `eval` time the estimator as a node runs it."""
    threads, numpy_loaded = _thread_env_after_import("pose_ros.cli", {}, then="pose_ros.cli.build_parser()")
    assert threads == "1" and numpy_loaded == "True"      # the parser imported every command module
    threads, _ = _thread_env_after_import("pose_ros.cli", {"OMP_NUM_THREADS": "3"})
    assert threads == "None"
