"""Launch files and `pose-ros launch` name only nodes, executables, files and parameters that exist.

Checked without the `launch` package (not on PyPI): the launch files are thin wrappers over
pose_ros.launch_specs, so checking the specs checks them, and the wrappers are compiled here.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from pose_ros.launch_specs import SYSTEMS, condition_holds, resolve_args
from pose_ros.nodes.params import ParamSpec, parameters_in_yaml

ROOT = Path(__file__).resolve().parents[1]
ALL_NODES = sorted({(n.module, n.executable, n.name, n.params_file) for s in SYSTEMS.values() for n in s.nodes
                    if not n.ros_only})


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    return dict(re.match(r"\s*(\S+)\s*=\s*(\S+)", e.value).groups() for e in v.elts)
    raise AssertionError("no console_scripts in setup.py")


def _cmake_executables() -> set[str]:
    """Executables CMakeLists.txt installs for `ros2 run`: an explicit list or the *_node.py glob."""
    text = (ROOT / "CMakeLists.txt").read_text()
    listed = re.search(r"set\(_nodes(.*?)\)", text, re.S)
    if listed:
        return set(listed.group(1).split())
    assert "pose_ros/nodes/*_node.py" in text, "CMakeLists.txt installs no node executables"
    return {p.name[: -len("_node.py")] for p in (ROOT / "pose_ros" / "nodes").glob("*_node.py")}


@pytest.mark.parametrize("module,executable,name,params_file", ALL_NODES)
def test_node_exists_and_declares_every_configured_parameter(module, executable, name, params_file):
    scripts = _console_scripts()
    assert scripts.get(executable) == f"pose_ros.nodes.{module}:main", f"setup.py lacks console script {executable}"
    assert executable in _cmake_executables(), f"CMakeLists.txt does not install {executable} for ros2 run"
    mod = importlib.import_module(f"pose_ros.nodes.{module}")
    assert callable(getattr(mod, "main", None))
    declared = {p.name for p in mod.PARAMETERS}
    assert all(isinstance(p, ParamSpec) and p.description for p in mod.PARAMETERS), "every parameter needs a description"
    assert params_file, f"node {name} has no parameter file"
    sections = parameters_in_yaml(ROOT / "config" / params_file)
    assert name in sections, f"config/{params_file} has no section for node '{name}'"
    unknown = set(sections[name]) - declared
    assert not unknown, f"config/{params_file} sets parameters {sorted(unknown)} that {module} does not declare"
    for system in SYSTEMS.values():
        for spec in system.nodes:
            if spec.module == module:
                named = set(spec.arg_params.values()) | set(spec.params)
                assert named <= declared, f"{system.name} sets undeclared parameters {sorted(named - declared)} on {name}"


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_launch_file_exists_and_compiles(system):
    path = ROOT / "launch" / f"{system}.launch.py"
    assert path.is_file()
    compile(path.read_text(), str(path), "exec")
    assert f'generate("{system}")' in path.read_text()


def test_nodes_of_other_packages_get_their_files_from_launch_arguments():
    for system in SYSTEMS.values():
        names = {a.name for a in system.args}
        for spec in system.nodes:
            if spec.ros_only:
                assert set(spec.arg_file_params) <= names, f"{spec.name} reads an undeclared launch argument"
                from pose_ros.launch_specs import robot_urdf_for
                for mapping in ("config/robots/pose_ros_humanoid.yaml", "config/robots/unitree_g1.yaml"):
                    args = resolve_args(system, {"mapping": mapping})
                    if mapping.endswith("g1.yaml") and not robot_urdf_for(args).startswith("/"):
                        continue
                    assert Path(robot_urdf_for(args)).is_file(), f"{spec.name}: no URDF for {mapping}"


def test_default_launch_arguments_start_something_and_unknown_arguments_are_refused():
    for system in SYSTEMS.values():
        args = resolve_args(system, {})
        assert any(condition_holds(n.condition, args) for n in system.nodes), system.name
    with pytest.raises(ValueError, match="unknown launch argument"):
        resolve_args(SYSTEMS["object_pose"], {"modle": "x.pt"})


def test_conditions():
    assert condition_holds("camera==replay", {"camera": "Replay"})
    assert condition_holds("camera!=replay", {"camera": "none"})
    assert not condition_holds("camera!=replay", {"camera": "replay"})
    assert condition_holds("", {})


def test_pose_ros_launch_show_prints_the_node_commands(capsys):
    from pose_ros.cli import main
    assert main(["launch", "object_pose", "camera:=dataset", "dataset:=/tmp/scene", "--show"]) == 0
    out = capsys.readouterr().out
    assert "pose_ros.nodes.dataset_camera_node" in out and "dataset_path:=/tmp/scene" in out
    assert "synthetic_camera_node" not in out


def test_every_argument_remapping_names_a_declared_argument_and_a_default_topic():
    for system in SYSTEMS.values():
        names = {a.name for a in system.args}
        for spec in system.nodes:
            if not spec.arg_remappings:
                continue
            assert set(spec.arg_remappings) <= names, f"{spec.name} remaps by an undeclared launch argument"
            # the remapped topic is the node's topic as configured (a remap rule matches names, not parameters)
            section = parameters_in_yaml(ROOT / "config" / spec.params_file)[spec.name]
            topics = {v for v in section.values() if isinstance(v, str)}
            for topic, target in spec.arg_remappings.values():
                assert topic in topics, f"{spec.name}: {topic} is not one of its configured topics"
                assert "{}" in target


def test_teleop_remaps_the_commands_to_the_named_ros2_control_controllers():
    """forward_command_controller listens on /<name>/commands, joint_trajectory_controller on
    /<name>/joint_trajectory; `pose-ros launch`, composed and `ros2 launch` all use the same rules."""
    from pose_ros.cli.launcher import plan
    from pose_ros.launch_specs import remappings_for
    from pose_ros.nodes.container import parse_entries

    system = SYSTEMS["teleop"]
    spec = next(s for s in system.nodes if s.name == "retarget")
    section = parameters_in_yaml(ROOT / "config" / spec.params_file)["retarget"]
    assert section["forward_command_topic"] == "~/forward_command"
    assert section["trajectory_topic"] == "~/joint_trajectory"
    controllers = {"forward_controller": "forward_position_controller",
                   "trajectory_controller": "joint_trajectory_controller"}
    remaps = dict(remappings_for(spec, resolve_args(system, controllers)))
    assert remaps == {"skeletons": "/human_pose/skeletons",
                      "~/forward_command": "/forward_position_controller/commands",
                      "~/joint_trajectory": "/joint_trajectory_controller/joint_trajectory"}
    # empty (the default): today's topics, /retarget/forward_command and /retarget/joint_trajectory
    assert dict(remappings_for(spec, resolve_args(system, {}))) == {"skeletons": "/human_pose/skeletons"}
    only_fwd = dict(remappings_for(spec, resolve_args(system, {"forward_controller": "/arm/fwd_controller/"})))
    assert only_fwd["~/forward_command"] == "/arm/fwd_controller/commands" and "~/joint_trajectory" not in only_fwd
    for bad in ("1st_controller", "my controller", "ctrl:=x", "a//b", "~/ctrl"):
        with pytest.raises(ValueError, match="forward_controller.*not a controller name"):
            remappings_for(spec, resolve_args(system, {"forward_controller": bad}))

    # separate processes (pose-ros launch)
    cmd = next(p for p in plan(system, controllers) if p.spec.name == "retarget").command
    pairs = {cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "-r"}
    assert {"~/forward_command:=/forward_position_controller/commands",
            "~/joint_trajectory:=/joint_trajectory_controller/joint_trajectory"} <= pairs
    # composed:=true: the container gives the retarget node the same rules
    container = next(p for p in plan(system, {**controllers, "composed": "true"}) if p.spec.module == "container")
    entry = next(e for e in parse_entries(container.command[3]) if e.module == "retarget_node")
    assert "~/forward_command:=/forward_position_controller/commands" in entry.args
    # ros2 launch (launch/_pose_ros_launch.py, not importable without `launch`) builds remappings the same way
    assert "remappings=remappings_for(spec, args)" in (ROOT / "launch" / "_pose_ros_launch.py").read_text()


def test_teleop_asks_for_a_higher_priority_for_its_chain_and_only_its_chain():
    from pose_ros.cli.launcher import plan

    def priority_of(system: str, args: dict) -> dict[str, tuple]:
        out = {}
        for p in plan(SYSTEMS[system], args):
            values = dict(p.command[i + 1].split(":=", 1) for i, a in enumerate(p.command[:-1]) if a == "-p")
            out[p.spec.name] = (values.get("process_realtime_priority"), values.get("process_nice"))
        return out

    chain = ("realsense_camera", "human_pose", "retarget")
    assert priority_of("teleop", {"camera": "realsense"}) == {n: ("10", "-10") for n in chain}
    assert priority_of("teleop", {"camera": "realsense", "realtime_priority": "0", "nice": "0"}) == \
        {n: ("0", "0") for n in chain}
    assert set(priority_of("object_pose", {"camera": "realsense"}).values()) == {(None, None)}   # as started


def test_launch_argument_text_becomes_the_parameter_type_it_spells():
    from pose_ros.launch_specs import parameter_value

    assert parameter_value("-10") == -10 and isinstance(parameter_value("-10"), int)
    assert parameter_value("10.0") == 10.0 and isinstance(parameter_value("10.0"), float)
    assert parameter_value("True") is True and parameter_value("false") is False
    assert parameter_value("config/robots/g1.yaml") == "config/robots/g1.yaml"
