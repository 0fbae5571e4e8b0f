"""Retargeting mapping (YAML): which human keypoints drive which robot links, for one robot.

The mapping is what makes the retargeter robot-agnostic: segment direction pairs (human
keypoint A->B must point like robot point A'->B'), position targets (chains of segments whose
human vectors, each scaled to the robot's segment length, place an end effector relative to an
anchor: GMR-style per-segment scaling), how the human body frame is built from the keypoints (so
the result does not depend on where the camera is), the teleoperated joints and their command
order, the home pose, solver weights and safety limits. Every name, weight and key is checked
against the URDF and the keypoint convention at load time, so typos fail loudly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pose_ros.core.config_file import read_config_file
from pose_ros.human.conventions import BLAZEPOSE33_NAMES
from pose_ros.human.kinematics import PointRef, all_link_poses
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
    scale: float | None = None      # fixed robot/human length ratio; None = measured per operator


@dataclass(frozen=True)
class PositionTargetSpec:
    """Place robot point `tip` relative to robot point `anchor` where the operator's chain of
    segments puts it, each human segment vector scaled by robot length / operator length.

    `anchor` is the first chain segment's robot_from, `tip` the last one's robot_to; consecutive
    segments share their joint keypoint and robot point, so the scaled vectors sum to a path.
    """
    name: str
    chain: tuple[str, ...]          # segment names, anchor -> tip
    group: str
    weight: float                   # IK weight of the 3D residual, per m^2
    anchor: PointRef
    tip: PointRef


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
    # Operator limb-length estimate (per-segment scaling of the position targets).
    limb_window: int = 240             # median over this many confident samples per segment
    limb_min_samples: int = 5          # before this many, no outlier gate
    limb_min_confidence: float = 0.5   # both keypoints at least this confident to measure a length
    limb_outlier_ratio: float = 0.35   # samples this far (relative) from the median are dropped
    limb_reset_after_invalid: int = 15  # this many invalid frames in a row = operator lost: re-measure
    reach_fraction: float = 1.0        # position targets clamped to this fraction of the chain's reach
                                       # (< 1 keeps arms off full extension, the IK's singularity)


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
    position_targets: list[PositionTargetSpec] = field(default_factory=list)

    def groups(self, full_body: bool = False) -> list[str]:
        return self.teleop_groups + (self.full_body_groups if full_body else [])

    def command_joints(self, full_body: bool = False) -> list[str]:
        """Teleoperated joints in controller command order (group order, then listed order)."""
        return [j for g in self.groups(full_body) for j in self.joint_groups[g]]

    def active_segments(self, full_body: bool = False) -> list[SegmentSpec]:
        groups = set(self.groups(full_body))
        return [s for s in self.segments if s.group in groups]

    def active_position_targets(self, full_body: bool = False) -> list[PositionTargetSpec]:
        groups = set(self.groups(full_body))
        return [t for t in self.position_targets if t.group in groups]

    def segment(self, name: str) -> SegmentSpec:
        for s in self.segments:
            if s.name == name:
                return s
        raise MappingError(f"{self.path}: no segment '{name}'; segments: {', '.join(s.name for s in self.segments)}")

    def robot_segment_lengths_m(self) -> dict[str, float]:
        """{segment: |robot_to - robot_from|} at the home pose (joints not in home at 0), metres:
        the robot side of every per-segment scale."""
        poses = all_link_poses(self.model, self.home)

        def at(p: PointRef) -> np.ndarray:
            return (poses[p.link] @ np.r_[p.offset_link_m, 1.0])[:3]

        return {s.name: float(np.linalg.norm(at(s.robot_to) - at(s.robot_from))) for s in self.segments}

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


def _positive(value, where: str, what: str = "weight") -> float:
    """A finite number > 0 (bools and strings rejected: YAML `weight: yes` is a typo, not 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MappingError(f"{where}: {what} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_keys(entry, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(entry, dict):
        raise MappingError(f"{where}: must be a mapping with keys {', '.join(allowed)}, got {entry!r}")
    for k in entry:
        if k not in allowed:
            raise MappingError(f"{where}: unknown key '{k}'; valid keys: {', '.join(allowed)}")


_SEGMENT_KEYS = ("name", "group", "weight", "human", "robot", "scale")
_TARGET_KEYS = ("name", "group", "weight", "chain")


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
    raw = read_config_file(path, MappingError, missing=f"mapping file not found: {path}",
                           mapping_expected="top level must be a mapping with robot, body_frame, segments, joint_groups")
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
    seg_list = _require(raw, "segments", where)
    if not isinstance(seg_list, list):
        raise MappingError(f"{where} segments: must be a list of {{name, group, human, robot, weight}}")
    for i, s in enumerate(seg_list):
        sw = f"{where} segments[{i}]"
        _check_keys(s, _SEGMENT_KEYS, sw)
        name = str(s.get("name", f"segment_{i}"))
        if any(prev.name == name for prev in segments):
            raise MappingError(f"{sw}: duplicate segment name '{name}'")
        human = _require(s, "human", sw)
        rob = _require(s, "robot", sw)
        if len(human) != 2 or len(rob) != 2:
            raise MappingError(f"{sw} ({name}): human and robot must each be [from, to]")
        group = str(_require(s, "group", sw))
        if group not in joint_groups:
            raise MappingError(f"{sw} ({name}): group '{group}' is not in joint_groups ({', '.join(joint_groups)})")
        weight = _positive(s.get("weight", 1.0), f"{sw} ({name})")
        scale = _positive(s["scale"], f"{sw} ({name})", "scale") if s.get("scale") is not None else None
        segments.append(SegmentSpec(
            name=name,
            human_from=_check_keypoint(human[0], valid_kp, f"{sw} ({name}).human"),
            human_to=_check_keypoint(human[1], valid_kp, f"{sw} ({name}).human"),
            robot_from=_point(model, rob[0], f"{sw} ({name}).robot"),
            robot_to=_point(model, rob[1], f"{sw} ({name}).robot"),
            weight=weight, group=group, scale=scale))
        for p in (segments[-1].robot_from, segments[-1].robot_to):
            model.chain(base_link, p.link)  # must hang below the base
    targets = _position_targets(raw.get("position_targets") or [], segments, joint_groups, where)

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
        default = valid_solver[k].default
        v = solver_raw[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (isinstance(default, int) and not isinstance(v, int)):
            raise MappingError(f"{where} solver.{k}: must be a finite {type(default).__name__}, got {v!r}")
    solver = SolverParams(**solver_raw)
    if not 0 < solver.reach_fraction <= 1:
        raise MappingError(f"{where} solver.reach_fraction: must be in (0, 1], got {solver.reach_fraction}")
    for k in ("limb_window", "limb_min_samples", "limb_reset_after_invalid"):
        if getattr(solver, k) < 1:
            raise MappingError(f"{where} solver.{k}: must be >= 1, got {getattr(solver, k)}")
    if not solver.limb_outlier_ratio > 0:
        raise MappingError(f"{where} solver.limb_outlier_ratio: must be > 0, got {solver.limb_outlier_ratio}")
    return RetargetMapping(path=path, model=model, urdf_path=Path(urdf_path), base_link=base_link,
                           body_frame=body, virtual_keypoints=virtual, segments=segments,
                           joint_groups=joint_groups, teleop_groups=teleop, full_body_groups=full,
                           home=home, solver=solver, safety=dict(raw.get("safety") or {}),
                           position_targets=targets)


def _position_targets(raw_targets, segments: list[SegmentSpec], joint_groups: dict[str, list[str]],
                      where: str) -> list[PositionTargetSpec]:
    """Validate `position_targets`: known segments chained end to start (human keypoints and robot
    points both), a known group, a positive weight."""
    if not isinstance(raw_targets, list):
        raise MappingError(f"{where} position_targets: must be a list of {{name, group, weight, chain}}")
    by_name = {s.name: s for s in segments}
    out: list[PositionTargetSpec] = []
    for i, t in enumerate(raw_targets):
        tw = f"{where} position_targets[{i}]"
        _check_keys(t, _TARGET_KEYS, tw)
        name = str(_require(t, "name", tw))
        tw = f"{tw} ({name})"
        if any(o.name == name for o in out):
            raise MappingError(f"{tw}: duplicate position target name")
        chain = _require(t, "chain", tw)
        if isinstance(chain, str):
            chain = [chain]
        if not isinstance(chain, list) or not chain:
            raise MappingError(f"{tw}: chain must be a non-empty list of segment names, anchor -> tip")
        for c in chain:
            if c not in by_name:
                raise MappingError(f"{tw}: unknown segment '{c}' in chain; valid segments: {', '.join(by_name)}")
        for a, b in zip(chain[:-1], chain[1:]):
            sa, sb = by_name[a], by_name[b]
            if sa.human_to != sb.human_from:
                raise MappingError(f"{tw}: chain breaks between '{a}' and '{b}': human keypoint "
                                   f"'{sa.human_to}' != '{sb.human_from}' (segments must join end to start)")
            if sa.robot_to != sb.robot_from:
                raise MappingError(f"{tw}: chain breaks between '{a}' and '{b}': robot point "
                                   f"{sa.robot_to} != {sb.robot_from} (segments must join end to start)")
        group = str(_require(t, "group", tw))
        if group not in joint_groups:
            raise MappingError(f"{tw}: group '{group}' is not in joint_groups ({', '.join(joint_groups)})")
        out.append(PositionTargetSpec(name=name, chain=tuple(chain), group=group,
                                      weight=_positive(_require(t, "weight", tw), tw),
                                      anchor=by_name[chain[0]].robot_from, tip=by_name[chain[-1]].robot_to))
    return out


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
