"""Start a system's nodes as processes: `ros2 launch` for venvs that have no `launch` package.

Each node runs as `python -m pose_ros.nodes.<module> --ros-args ...` with the same parameter
files, parameter overrides and remappings that `launch/*.launch.py` passes, so what runs in
the venv is what runs on the robot. Output is prefixed with the node name; Ctrl-C (or the
optional duration) stops every node with SIGINT, then SIGKILL after a grace period.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pose_ros.launch_specs import (NodeSpec, SystemSpec, condition_holds, launch_environment, remappings_for,
                                   resolve_args)
from pose_ros.nodes.container import ComposedNode, entries_json
from pose_ros.resources import config_dir, resolve


@dataclass
class NodeProcess:
    spec: NodeSpec
    command: list[str]
    process: subprocess.Popen | None = None


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def node_command(spec: NodeSpec, args: dict[str, str], extra_params: dict[str, object] | None = None) -> list[str]:
    cmd = [sys.executable, "-m", f"pose_ros.nodes.{spec.module}", "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.params_file:
        cmd += ["--params-file", str(config_dir() / spec.params_file)]
    params: dict[str, object] = dict(spec.params)
    for arg_name, param in spec.arg_params.items():
        value = args.get(arg_name, "")
        if value != "":
            params[param] = str(resolve(value).absolute()) if ("/" in value or value.endswith((".pt", ".urdf", ".yaml", ".bvh"))) else value
    params.update(extra_params or {})
    for key, value in params.items():
        cmd += ["-p", f"{key}:={_format_value(value)}"]
    for src, dst in remappings_for(spec, args):
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def container_process(name: str, members: list[NodeProcess]) -> NodeProcess:
    """One `pose_ros.nodes.container` process running `members` with their own --ros-args."""
    entries = [ComposedNode(p.spec.module, p.command[3:]) for p in members]   # drop `python -m module`
    spec = NodeSpec("", "container", name)
    return NodeProcess(spec, [sys.executable, "-m", "pose_ros.nodes.container", entries_json(entries)])


def plan(system: SystemSpec, overrides: dict[str, str],
         node_params: dict[str, dict[str, object]] | None = None) -> list[NodeProcess]:
    args = resolve_args(system, overrides)
    procs = []
    for spec in system.nodes:
        if not condition_holds(spec.condition, args):
            continue
        if spec.ros_only:
            print(f"[launch] skipping {spec.name} ({spec.package} is not available in a venv; ros2 launch starts it)")
            continue
        procs.append(NodeProcess(spec, node_command(spec, args, (node_params or {}).get(spec.name))))
    if system.composable and condition_holds("composed==true", args):
        members = [p for p in procs if p.spec.name in system.composable]
        if len(members) > 1:
            first = procs.index(members[0])
            rest = [p for p in procs if p not in members]
            procs = rest[:first] + [container_process(f"{system.name}_container", members)] + rest[first:]
    return procs


def _pump(name: str, stream, width: int) -> None:
    for raw in iter(stream.readline, b""):
        sys.stdout.write(f"[{name:<{width}}] {raw.decode(errors='replace')}")
        sys.stdout.flush()


def run(system: SystemSpec, overrides: dict[str, str], duration_s: float | None = None,
        node_params: dict[str, dict[str, object]] | None = None) -> int:
    """Run the system until Ctrl-C, `duration_s`, or a node exits with an error."""
    procs = plan(system, overrides, node_params)
    if not procs:
        print(f"nothing to start for '{system.name}' with {overrides}")
        return 2
    width = max(len(p.spec.name) for p in procs)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    added = launch_environment(system, env, str(config_dir()))
    for key, value in added.items():
        print(f"[launch] {key}={value}")
    env.update(added)
    print(f"pose-ros launch {system.name}: starting {', '.join(p.spec.name for p in procs)}")
    pumps = []
    for p in procs:
        p.process = subprocess.Popen(p.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, cwd=Path.cwd(), start_new_session=True)
        t = threading.Thread(target=_pump, args=(p.spec.name, p.process.stdout, width), daemon=True)
        t.start()
        pumps.append(t)
    start = time.monotonic()
    exit_code = 0
    try:
        while True:
            time.sleep(0.2)
            failed = [p for p in procs if p.process.poll() not in (None, 0)]
            if failed:
                for p in failed:
                    print(f"[launch] node '{p.spec.name}' exited with code {p.process.returncode}; stopping all")
                exit_code = 1
                break
            if all(p.process.poll() is not None for p in procs):
                break
            if duration_s is not None and time.monotonic() - start >= duration_s:
                break
    except KeyboardInterrupt:
        pass
    finally:
        _stop_all(procs)
        for t in pumps:
            t.join(timeout=2.0)
    return exit_code


def _stop_all(procs: list[NodeProcess], grace_s: float = 8.0) -> None:
    for p in procs:
        if p.process and p.process.poll() is None:
            try:
                os.killpg(p.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for p in procs:
        if not p.process:
            continue
        try:
            p.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.process.pid, signal.SIGKILL)
            p.process.wait()
