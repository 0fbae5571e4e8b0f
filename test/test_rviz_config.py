"""config/pose_ros.rviz shows only topics that the package's nodes really publish.

The published topics are read from the node sources, not from a list kept here: every
`create_publisher(<Type>, <topic>, ...)` call in a node module (and the pose_ros.nodes helpers it
imports) is found with `ast`, its topic is resolved the way ROS 2 would for each node that
pose_ros/launch_specs.py starts (node name for `~/`, parameter values from config/<node>.yaml or
the declared default, launch-spec remappings), and each RViz display's topic and message type
must be one of them. Renaming a topic or a node without updating the RViz file fails here.
"""
from __future__ import annotations

import ast
import importlib
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from pose_ros.launch_specs import SYSTEMS, NodeSpec
from pose_ros.nodes.params import parameters_in_yaml
from pose_ros.nodes.tf_publisher import BASE_FRAME
from pose_ros.nodes.topics import COLOR_OPTICAL_FRAME

ROOT = Path(__file__).resolve().parents[1]
RVIZ = ROOT / "config" / "pose_ros.rviz"
NODES_DIR = ROOT / "pose_ros" / "nodes"

# RViz display class -> message type (class name) its topic carries.
DISPLAY_MESSAGE = {
    "rviz_default_plugins/Image": "Image",
    "rviz_default_plugins/Camera": "Image",
    "rviz_default_plugins/MarkerArray": "MarkerArray",
    "rviz_default_plugins/Marker": "Marker",
    "rviz_default_plugins/PoseArray": "PoseArray",
    "rviz_default_plugins/Pose": "PoseStamped",
    "rviz_default_plugins/RobotModel": "String",
}
# Displays without a topic of their own (TF reads /tf and /tf_static).
TOPICLESS = {"rviz_default_plugins/Grid", "rviz_default_plugins/TF", "rviz_default_plugins/Axes",
             "rviz_common/Group"}
# Topics published by another ROS package: (message type, the package.xml dependency providing it).
EXTERNAL = {"/robot_description": ("String", "robot_state_publisher")}
# What the layout is for: (display class, topic) pairs that must be there.
REQUIRED = {
    ("rviz_default_plugins/Image", "/camera/camera/color/image_raw"),
    ("rviz_default_plugins/Image", "/object_pose/debug_image"),
    ("rviz_default_plugins/MarkerArray", "/object_pose/markers"),
    ("rviz_default_plugins/MarkerArray", "/human_pose/markers"),
    ("rviz_default_plugins/RobotModel", "/robot_description"),
    ("rviz_default_plugins/TF", None),
}


# ---------------------------------------------------------------- what the nodes publish

def _expand(name: str, node_name: str) -> str:
    """ROS 2 name expansion for a node in the root namespace."""
    if name.startswith("/"):
        return name
    if name.startswith("~/"):
        return f"/{node_name}/{name[2:]}"
    return f"/{name}"


def _resolve(name: str, spec: NodeSpec) -> str:
    full = _expand(name, spec.name)
    for src, dst in spec.remappings:
        if _expand(src, spec.name) == full:
            return _expand(dst, spec.name)
    return full


def _source_files(module: str) -> list[Path]:
    """The node module and the pose_ros.nodes modules it imports (publishers may live there)."""
    path = NODES_DIR / f"{module}.py"
    files = [path]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pose_ros.nodes."):
            helper = NODES_DIR / f"{node.module.rsplit('.', 1)[1]}.py"
            if helper.exists() and helper not in files:
                files.append(helper)
    return files


def _publisher_calls(path: Path) -> list[tuple[str | None, ast.expr, str]]:
    """(message class name, topic expression, QoS source text) of each create_publisher call."""
    tree = ast.parse(path.read_text())
    assigned = {t.id: ast.unparse(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "create_publisher" and len(node.args) >= 2):
            msg = node.args[0].id if isinstance(node.args[0], ast.Name) else None
            qos = ast.unparse(node.args[2]) if len(node.args) > 2 else ""
            calls.append((msg, node.args[1], assigned.get(qos, qos)))
    return calls


@lru_cache(maxsize=None)
def _declared_defaults(module: str) -> dict[str, object]:
    return {p.name: p.default for p in importlib.import_module(f"pose_ros.nodes.{module}").PARAMETERS}


def _parameter_value(spec: NodeSpec, param: str) -> object:
    if param in spec.params:
        return spec.params[param]
    if spec.params_file and (ROOT / "config" / spec.params_file).exists():
        section = parameters_in_yaml(ROOT / "config" / spec.params_file).get(spec.name, {})
        if param in section:
            return section[param]
    defaults = _declared_defaults(spec.module)
    assert param in defaults, f"{spec.module} publishes on parameter '{param}', which it does not declare"
    return defaults[param]


def _topic_name(expr: ast.expr, spec: NodeSpec) -> str | None:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    # params["color_topic"] / self.p["color_topic"]: a topic-name parameter
    if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant):
        return str(_parameter_value(spec, expr.slice.value))
    return None  # built at run time (f-strings, bag replay): not something RViz can name


@lru_cache(maxsize=1)
def published_topics() -> dict[str, set[tuple[str, bool, str]]]:
    """{topic: {(message class, latched, node name)}} over every node the launch specs start."""
    specs = {(s.module, s.name): s for system in SYSTEMS.values() for s in system.nodes}
    topics: dict[str, set[tuple[str, bool, str]]] = {}
    for spec in specs.values():
        if not (NODES_DIR / f"{spec.module}.py").exists():
            continue  # a node the specs name but that is not there: test_launch_specs reports it
        for path in _source_files(spec.module):
            for msg, expr, qos in _publisher_calls(path):
                name = _topic_name(expr, spec)
                if name is None or msg is None:
                    continue
                topics.setdefault(_resolve(name, spec), set()).add((msg, "latched_qos" in qos, spec.name))
    return topics


# ---------------------------------------------------------------- the RViz file

def _load() -> dict:
    config = yaml.safe_load(RVIZ.read_text())
    assert isinstance(config, dict) and "Visualization Manager" in config, f"{RVIZ} is not an RViz2 config"
    return config


def _displays(items: list[dict]) -> list[dict]:
    out = []
    for display in items:
        out.append(display)
        if display.get("Class") == "rviz_common/Group":
            out.extend(_displays(display.get("Displays", [])))
    return out


def _topic_of(display: dict) -> dict | None:
    return display.get("Description Topic") if display["Class"] == "rviz_default_plugins/RobotModel" \
        else display.get("Topic")


DISPLAYS = _displays(_load()["Visualization Manager"]["Displays"])


def test_rviz_file_is_an_rviz2_config_in_the_frame_robot_and_objects_share():
    """Fixed frame camera_link: the root every camera's static TF starts from (the object frames and markers
    hang below its colour optical frame) and, through retarget's robot_tf, the robot model's too."""
    config = _load()
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == BASE_FRAME == "camera_link"
    for node, frame_param in (("synthetic_camera", "frame_id"), ("dataset_camera", "frame_id"),
                              ("realsense_camera", "color_frame_id"), ("skeleton_replay", "frame_id")):
        section = parameters_in_yaml(ROOT / "config" / f"{node}.yaml")[node]
        assert section["base_frame_id"] == BASE_FRAME, f"{node} roots its TF elsewhere than RViz's fixed frame"
        assert section[frame_param] == COLOR_OPTICAL_FRAME, f"{node} publishes in another frame than the objects"
    assert parameters_in_yaml(ROOT / "config" / "retarget.yaml")["retarget"]["robot_tf"] is True, \
        "without robot_tf the robot model has no transform to the fixed frame"
    assert manager["Views"]["Current"]["Class"].startswith("rviz_default_plugins/")
    assert {p["Class"] for p in config["Panels"]} >= {"rviz_common/Displays"}
    names = [d["Name"] for d in DISPLAYS]
    assert len(names) == len(set(names)), f"display names must be unique: {names}"
    for display in DISPLAYS:
        assert display["Class"] in DISPLAY_MESSAGE or display["Class"] in TOPICLESS, \
            f"display '{display['Name']}' has an unknown class {display['Class']}"
        assert isinstance(display.get("Enabled"), bool), f"display '{display['Name']}' lacks Enabled"


def test_rviz_file_has_the_displays_the_package_needs():
    present = {(d["Class"], (_topic_of(d) or {}).get("Value")) for d in DISPLAYS}
    missing = REQUIRED - present
    assert not missing, f"{RVIZ.name} lacks displays {sorted(missing, key=str)}"


@pytest.mark.parametrize("display", [d for d in DISPLAYS if d["Class"] in DISPLAY_MESSAGE],
                         ids=lambda d: d["Name"])
def test_every_display_topic_is_published_with_that_type(display):
    topic = _topic_of(display)
    assert topic and isinstance(topic.get("Value"), str), f"display '{display['Name']}' has no topic"
    name = topic["Value"]
    assert name.startswith("/"), f"'{name}': use absolute topic names in the RViz file"
    expected = DISPLAY_MESSAGE[display["Class"]]
    assert topic.get("Reliability Policy") in ("Reliable", "Best Effort")
    if name in EXTERNAL:
        msg, package = EXTERNAL[name]
        assert msg == expected
        assert re.search(rf"<(exec_)?depend>{package}</", (ROOT / "package.xml").read_text()), \
            f"{name} comes from {package}, which package.xml does not depend on"
        # robot_state_publisher latches the description: a volatile subscriber started later
        # would never receive it
        assert topic.get("Durability Policy") == "Transient Local"
        return
    publishers = published_topics().get(name)
    assert publishers, (f"display '{display['Name']}' shows {name}, which no pose_ros node publishes; "
                        f"published: {sorted(published_topics())}")
    types = {msg for msg, _, _ in publishers}
    assert expected in types, f"{name} carries {sorted(types)}, but a {display['Class']} display needs {expected}"
    if topic.get("Durability Policy") == "Transient Local":
        assert any(latched for _, latched, _ in publishers), \
            f"{name} is not latched: a Transient Local subscription would not match its publisher"


def test_publisher_scan_finds_the_known_topics():
    """Guards the scan itself: if it found nothing, the test above would fail for the wrong reason."""
    topics = published_topics()
    for name in ("/camera/camera/color/image_raw", "/object_pose/markers", "/object_pose/debug_image",
                 "/human_pose/markers", "/camera/ground_truth/objects"):
        assert name in topics, f"publisher scan missed {name}: {sorted(topics)}"


def test_rviz_file_is_installed():
    assert "config/*.rviz" in (ROOT / "setup.py").read_text(), "setup.py does not install config/*.rviz"
    assert re.search(r"install\(DIRECTORY[^)]*\bconfig\b", (ROOT / "CMakeLists.txt").read_text()), \
        "CMakeLists.txt does not install config/"
