"""Retargeting mapping (YAML): which human keypoints drive which robot links, for one robot.

The mapping is what makes the retargeter robot-agnostic: segment direction pairs (human
keypoint A->B must point like robot point A'->B'), how the human body frame is built from the
keypoints (so the result does not depend on where the camera is), the teleoperated joints and
their command order, the home pose, solver weights and safety limits. Every name is checked
against the URDF and the keypoint convention at load time, so typos fail loudly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from pose_ros.human.conventions import BLAZEPOSE33_NAMES
from pose_ros.human.kinematics import PointRef
from pose_ros.human.urdf_model import UrdfModel, default_robot_dir, load_urdf


class MappingError(ValueError):
    """Invalid retargeting mapping: names the key, the bad value and the valid choices."""


@dataclass(frozen=True)
class SegmentSpec:
    """Human `human_from -> human_to` drives robot `robot_from -> robot_to` (directions)."""
    name: str
    human_from: str
    human_to: str
    robot_from: PointRef
    robot_to: PointRef
    weight: float = 1.0
    group: str = ""


@dataclass(frozen=True)
class BodyFrameSpec:
    """Human body frame (x forward, y left, z up, like REP-103 robot base frames).

    y points `left_from -> left_to` (e.g. right_hip -> left_hip). z is `up_vector_cam` when
    `up == 'camera'` (gravity as seen by a level camera: keeps torso pitch observable), or
    `torso_from -> torso_to` when `up == 'torso'` (camera tilt does not matter, torso pitch is
    then not observable). x = y cross z.
    """
    left_from: str
    left_to: str
    up: str = "camera"
    up_vector_cam: tuple[float, float, float] = (0.0, -1.0, 0.0)
    torso_from: str = "hip_centre"
    torso_to: str = "shoulder_centre"


@dataclass(frozen=True)
class SolverParams:
    iterations: int = 4
    init_iterations: int = 25          # on the first frame / after a reset
    damping: float = 1e-3              # Levenberg damping on the step
    w_previous: float = 0.02           # pull toward the previous solution (smoothness)
    w_home: float = 0.002              # small pull toward home (resolves redundancy)
    min_confidence: float = 0.3        # keypoints below this are unobserved
    min_segments: int = 3              # fewer observed segments -> result invalid (tracking lost)
    limit_margin_rad: float = 0.02     # IK bounds are the URDF limits shrunk by this
    max_step_rad: float = 0.2          # trust region per iteration (largest joint change)
    hands_up_height_m: float = 0.15    # wrists this far above the nose -> hands-up gesture


@dataclass
class RetargetMapping:
    path: Path
    model: UrdfModel
    urdf_path: Path
    base_link: str
    body_frame: BodyFrameSpec
    virtual_keypoints: dict[str, tuple[str, ...]]
    segments: list[SegmentSpec]
    joint_groups: dict[str, list[str]]
    teleop_groups: list[str]
    full_body_groups: list[str]
    home: dict[str, float]
    solver: SolverParams
    safety: dict = field(default_factory=dict)

    def groups(self, full_body: bool = False) -> list[str]:
        return self.teleop_groups + (self.full_body_groups if full_body else [])

    def command_joints(self, full_body: bool = False) -> list[str]:
        """Teleoperated joints in controller command order (group order, then listed order)."""
        return [j for g in self.groups(full_body) for j in self.joint_groups[g]]

    def active_segments(self, full_body: bool = False) -> list[SegmentSpec]:
        groups = set(self.groups(full_body))
        return [s for s in self.segments if s.group in groups]

    def home_vector(self, joint_names: list[str]) -> np.ndarray:
        return np.array([self.home.get(j, 0.0) for j in joint_names], dtype=np.float64)

    @property
    def keypoint_names(self) -> list[str]:
        """Every keypoint name the mapping may use (convention + virtual)."""
        return list(BLAZEPOSE33_NAMES) + list(self.virtual_keypoints)


def _require(d: dict, key: str, where: str):
    if not isinstance(d, dict) or key not in d:
        raise MappingError(f"{where}: missing key '{key}'")
    return d[key]


def _check_keypoint(name: str, valid: list[str], where: str) -> str:
    if name not in valid:
        raise MappingError(f"{where}: unknown keypoint '{name}'; valid keypoints: {', '.join(valid)}")
    return name


def _check_link(model: UrdfModel, name: str, where: str) -> str:
    if name not in model.links:
        raise MappingError(f"{where}: unknown robot link '{name}'; valid links: {', '.join(model.links)}")
    return name


def _point(model: UrdfModel, spec, where: str) -> PointRef:
    if isinstance(spec, str):
        return PointRef(_check_link(model, spec, where))
    if not isinstance(spec, dict) or "link" not in spec:
        raise MappingError(f"{where}: a robot point is a link name or {{link: NAME, offset: [x, y, z]}}")
    off = spec.get("offset", [0.0, 0.0, 0.0])
    if len(off) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in off):
        raise MappingError(f"{where}: offset must be 3 finite numbers (metres, link frame), got {off}")
    return PointRef(_check_link(model, spec["link"], where), tuple(float(v) for v in off))


def load_mapping(path: str | Path, urdf_path: str | Path | None = None) -> RetargetMapping:
    """Load and validate a mapping YAML. `urdf_path` overrides the mapping's robot.urdf
    (relative paths in the YAML are relative to the YAML file, then config/robots)."""
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"mapping file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise MappingError(f"{path}: top level must be a mapping with robot, body_frame, segments, joint_groups")
    where = str(path)
    robot = _require(raw, "robot", where)
    if urdf_path is None:
        urdf_path = _resolve(path, str(_require(robot, "urdf", f"{where} robot")))
    model = load_urdf(urdf_path)
    base_link = _check_link(model, str(_require(robot, "base_link", f"{where} robot")), f"{where} robot.base_link")

    valid_kp = list(BLAZEPOSE33_NAMES)
    virtual: dict[str, tuple[str, ...]] = {}
    for name, parts in (raw.get("virtual_keypoints") or {}).items():
        if not isinstance(parts, list) or not parts:
            raise MappingError(f"{where} virtual_keypoints.{name}: must be a non-empty list of keypoints to average")
        virtual[name] = tuple(_check_keypoint(p, valid_kp, f"{where} virtual_keypoints.{name}") for p in parts)
    valid_kp = valid_kp + list(virtual)

    bf = _require(raw, "body_frame", where)
    left = _require(bf, "left", f"{where} body_frame")
    up = bf.get("up", "camera")
    if up not in ("camera", "torso"):
        raise MappingError(f"{where} body_frame.up: '{up}' is not valid; use 'camera' or 'torso'")
    torso = bf.get("torso", ["hip_centre", "shoulder_centre"])
    upv = bf.get("up_vector_cam", [0.0, -1.0, 0.0])
    if len(upv) != 3 or np.linalg.norm(upv) < 1e-6:
        raise MappingError(f"{where} body_frame.up_vector_cam: must be a non-zero 3-vector, got {upv}")
    body = BodyFrameSpec(
        left_from=_check_keypoint(left[0], valid_kp, f"{where} body_frame.left"),
        left_to=_check_keypoint(left[1], valid_kp, f"{where} body_frame.left"),
        up=up, up_vector_cam=tuple(float(v) / float(np.linalg.norm(upv)) for v in upv),
        torso_from=_check_keypoint(torso[0], valid_kp, f"{where} body_frame.torso"),
        torso_to=_check_keypoint(torso[1], valid_kp, f"{where} body_frame.torso"))

    groups_raw = _require(raw, "joint_groups", where)
    joint_groups: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    movable = [j.name for j in model.movable_joints if j.mimic is None]
    for g, joints in groups_raw.items():
        joint_groups[g] = []
        for j in joints or []:
            if j not in model.joints or j not in movable:
                raise MappingError(f"{where} joint_groups.{g}: '{j}' is not a movable joint of "
                                   f"{model.name}; valid joints: {', '.join(movable)}")
            if j in seen:
                raise MappingError(f"{where} joint_groups.{g}: '{j}' is already in group '{seen[j]}'")
            seen[j] = g
            joint_groups[g].append(j)
    teleop = list(raw.get("teleop_groups", list(joint_groups)))
    full = list(raw.get("full_body_groups", []))
    for g in teleop + full:
        if g not in joint_groups:
            raise MappingError(f"{where}: group '{g}' is not in joint_groups ({', '.join(joint_groups)})")

    segments = []
    for i, s in enumerate(_require(raw, "segments", where)):
        sw = f"{where} segments[{i}]"
        name = str(s.get("name", f"segment_{i}"))
        human = _require(s, "human", sw)
        rob = _require(s, "robot", sw)
        if len(human) != 2 or len(rob) != 2:
            raise MappingError(f"{sw} ({name}): human and robot must each be [from, to]")
        group = str(_require(s, "group", sw))
        if group not in joint_groups:
            raise MappingError(f"{sw} ({name}): group '{group}' is not in joint_groups ({', '.join(joint_groups)})")
        weight = float(s.get("weight", 1.0))
        if not weight > 0:
            raise MappingError(f"{sw} ({name}): weight must be > 0")
        segments.append(SegmentSpec(
            name=name,
            human_from=_check_keypoint(human[0], valid_kp, f"{sw} ({name}).human"),
            human_to=_check_keypoint(human[1], valid_kp, f"{sw} ({name}).human"),
            robot_from=_point(model, rob[0], f"{sw} ({name}).robot"),
            robot_to=_point(model, rob[1], f"{sw} ({name}).robot"),
            weight=weight, group=group))
        for p in (segments[-1].robot_from, segments[-1].robot_to):
            model.chain(base_link, p.link)  # must hang below the base

    home = {}
    for j, v in (raw.get("home") or {}).items():
        if j not in seen:
            raise MappingError(f"{where} home: '{j}' is not in any joint group; valid: {', '.join(seen)}")
        lim = model.joints[j].limits
        if lim is not None and not lim.lower <= float(v) <= lim.upper:
            raise MappingError(f"{where} home: {j}={v} is outside its limits [{lim.lower}, {lim.upper}]")
        home[j] = float(v)
    solver_raw = raw.get("solver") or {}
    valid_solver = SolverParams.__dataclass_fields__
    for k in solver_raw:
        if k not in valid_solver:
            raise MappingError(f"{where} solver: unknown key '{k}'; valid: {', '.join(valid_solver)}")
    solver = SolverParams(**solver_raw)
    return RetargetMapping(path=path, model=model, urdf_path=Path(urdf_path), base_link=base_link,
                           body_frame=body, virtual_keypoints=virtual, segments=segments,
                           joint_groups=joint_groups, teleop_groups=teleop, full_body_groups=full,
                           home=home, solver=solver, safety=dict(raw.get("safety") or {}))


def _resolve(mapping_path: Path, ref: str) -> Path:
    """A robot file reference: absolute, relative to the YAML, relative to config/robots, or
    `shared:` + a path under the shared data folder (../shared/data or $POSE_ROS_SHARED_DATA)."""
    if ref.startswith("shared:"):
        import os
        base = Path(os.environ.get("POSE_ROS_SHARED_DATA",
                                   Path(__file__).resolve().parents[2].parent / "shared" / "data"))
        return base / ref[len("shared:"):]
    p = Path(ref)
    if p.is_absolute():
        return p
    for base in (mapping_path.parent, default_robot_dir()):
        if (base / p).exists():
            return base / p
    return mapping_path.parent / p


def default_mapping_path() -> Path:
    return default_robot_dir() / "pose_ros_humanoid.yaml"
