"""Node parameters as users write them: `tracking_max_gap_s: 0` in a YAML file or `-p name:=0` is an
integer to ROS; a float parameter takes it. A value of the wrong type or out of range stops a node
at start-up with one clear line and exit code 2, never a traceback (real rclpy, real node processes).
"""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from ros_helpers import REPO_ROOT

NODE_MODULES = ["synthetic_camera_node", "dataset_camera_node", "realsense_camera_node", "object_pose_node",
                "human_pose_node", "retarget_node", "skeleton_replay_node", "topic_monitor_node"]


def _declare(overrides: list[str], specs):
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from pose_ros.nodes.params import declare_parameters

    ctx = Context()
    rclpy.init(args=["test", "--ros-args", *[a for o in overrides for a in ("-p", o)]], context=ctx)
    node = Node("param_test", context=ctx)
    try:
        return declare_parameters(node, specs)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_a_float_parameter_takes_an_integer_and_checks_type_and_range():
    from pose_ros.nodes.params import ParamSpec

    specs = [ParamSpec("gap_s", 0.5, "a float", min=0.0, max=5.0), ParamSpec("count", 3, "an int", min=1, max=9)]
    values = _declare(["gap_s:=0", "count:=4"], specs)
    assert values == {"gap_s": 0.0, "count": 4} and isinstance(values["gap_s"], float)
    assert _declare(["gap_s:=2.5"], specs)["gap_s"] == 2.5
    assert _declare([], specs) == {"gap_s": 0.5, "count": 3}
    with pytest.raises(ValueError, match=r"'gap_s' = 7 is outside \[0.0, 5.0\]"):
        _declare(["gap_s:=7"], specs)
    with pytest.raises(ValueError, match="'gap_s' must be a number; got 'abc'"):
        _declare(["gap_s:=abc"], specs)
    with pytest.raises(ValueError, match="must be a number; got True"):
        _declare(["gap_s:=true"], specs)


def test_every_node_stops_with_one_clear_line_on_a_bad_parameter():
    procs = {}
    for module in NODE_MODULES:
        specs = importlib.import_module(f"pose_ros.nodes.{module}").PARAMETERS
        name = next(s.name for s in specs if isinstance(s.default, float))
        cmd = [sys.executable, "-m", f"pose_ros.nodes.{module}", "--ros-args", "-p", f"{name}:=abc"]
        procs[module] = (name, subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                text=True))
    for module, (name, proc) in procs.items():
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{module} kept running with {name}:=abc")
        assert proc.returncode == 2, (module, proc.returncode, out[-2000:])
        assert f"startup failed: parameter '{name}' must be a number" in out, (module, out[-2000:])
        assert "Traceback" not in out, (module, out[-3000:])
