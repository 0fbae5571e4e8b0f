"""Node parameters as users write them: `score_threshold: 0` in a YAML file or `-p name:=0` is an
integer to ROS; a float parameter takes it. A value of the wrong type or out of range stops a node
at start-up with one clear line and exit code 2, never a traceback (real rclpy, real node processes).
"""
from __future__ import annotations

import importlib
import os
import re
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


def test_a_startup_parameter_set_is_refused_with_the_reason_and_a_live_one_is_applied():
    """`ros2 param set` through the node's SetParameters service, from another node over DDS: a start-up
    parameter is refused with why and what to do, the value stays; a live one is checked (type, range, the
    node's own check), written into the node's parameter dict and handed to its apply hook."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from pose_ros.nodes.params import LIVE_CONSTRAINT, STARTUP_CONSTRAINT, ParamSpec, declare_parameters
    from ros_helpers import SpinThread, get_remote_parameter, set_remote_parameter

    specs = [ParamSpec("model", "a.pt", "read once"), ParamSpec("rate_hz", 5.0, "live", min=0.5, max=50.0, live=True),
             ParamSpec("mode", "file", "live, two values", live=True), ParamSpec("names", [], "live list", live=True)]
    applied = []
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        node = Node(f"guarded_{os.getpid()}", context=ctx)
        values = declare_parameters(node, specs, check=lambda n, v: "mode must be file or package"
                                    if n == "mode" and v not in ("file", "package") else None,
                                    apply=lambda n, v: applied.append((n, v)))
        client = Node(f"param_client_{os.getpid()}", context=ctx)
        target = f"/{node.get_name()}"
        with SpinThread(ctx, node, client):
            res = set_remote_parameter(client, target, "model", "b.pt")
            assert not res.successful
            assert res.reason == ("model is read at start-up; restart the node to change it "
                                  "(parameters applied live: mode, names, rate_hz)"), res.reason
            assert get_remote_parameter(client, target, "model") == "a.pt" and values["model"] == "a.pt"

            res = set_remote_parameter(client, target, "rate_hz", 2)   # an integer, as `ros2 param set ... 2` sends
            assert res.successful, res.reason
            assert values["rate_hz"] == 2.0 and isinstance(values["rate_hz"], float)
            assert applied == [("rate_hz", 2.0)]
            for bad, why in ((99.0, r"rate_hz.* out of range|'rate_hz' = 99 is outside"), (60, "'rate_hz' = 60 is outside"),
                             ("fast", "must be a number")):
                res = set_remote_parameter(client, target, "rate_hz", bad)
                assert not res.successful and re.search(why, res.reason), res.reason
            res = set_remote_parameter(client, target, "mode", "ftp")
            assert not res.successful and res.reason == "mode must be file or package"
            assert set_remote_parameter(client, target, "names", ["mug", "box"]).successful
            assert values == {"model": "a.pt", "rate_hz": 2.0, "mode": "file", "names": ["mug", "box"]}
            assert applied[-1] == ("names", ["mug", "box"])
        descriptors = {d.name: d for d in node.describe_parameters(["model", "rate_hz"])}
        assert descriptors["model"].additional_constraints == STARTUP_CONSTRAINT
        assert descriptors["rate_hz"].additional_constraints == LIVE_CONSTRAINT
        assert not descriptors["model"].read_only   # rclpy's read-only check would answer first, without a reason
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("module", NODE_MODULES)
def test_every_node_marks_only_parameters_it_applies_as_live(module):
    """A live parameter is either read from the node's parameter dict while it runs or acted on by its
    apply hook: its name appears in the node's code outside the PARAMETERS list (a guard against marking
    a start-up parameter live, which would accept a set that does nothing)."""
    mod = importlib.import_module(f"pose_ros.nodes.{module}")
    source = (REPO_ROOT / "pose_ros" / "nodes" / f"{module}.py").read_text()
    import ast
    end = next(n.end_lineno for n in ast.parse(source).body if isinstance(n, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == "PARAMETERS" for t in n.targets))
    body = "\n".join(source.splitlines()[end:])
    for spec in mod.PARAMETERS:
        if spec.live:
            assert f'"{spec.name}"' in body, f"{module}: live parameter {spec.name} is never read or applied"
