"""URDF parser (xml.etree only, no ROS): the robot's links, joints, limits and chains.

Retargeting needs a robot's kinematics and limits from any URDF a user brings, and it must run
in the CLI and tests without ROS, so this is a small self-contained parser. Visual geometry is
kept (boxes/cylinders/spheres/meshes) only so that tools can show it; inertia and collision are
ignored.

Joint types: revolute, continuous and prismatic are movable; fixed is rigid; floating and planar
are treated as rigid at their zero pose (a humanoid's floating base is the retargeting base, it is
never commanded). Mimic joints are handled: they are not independent variables, their value is
`multiplier * q[source] + offset` (see `UrdfModel.mimic_of` and `kinematics.KinematicTree`).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MOVABLE_TYPES = ("revolute", "continuous", "prismatic")
RIGID_TYPES = ("fixed", "floating", "planar")
JOINT_TYPES = MOVABLE_TYPES + RIGID_TYPES


class UrdfError(ValueError):
    """A URDF that cannot be used: the message names the problem and how to fix it."""


@dataclass(frozen=True)
class JointLimits:
    """Position limits (rad or m), max speed (rad/s or m/s), max effort (N m or N)."""
    lower: float
    upper: float
    velocity: float
    effort: float


@dataclass(frozen=True)
class Mimic:
    """`q_this = multiplier * q[joint] + offset`."""
    joint: str
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Visual:
    """One visual: geometry kind ('box' | 'cylinder' | 'sphere' | 'mesh'), its size parameters,
    its pose in the link frame and an RGBA colour (None when the URDF gives none)."""
    kind: str
    params: dict
    T_link_visual: np.ndarray
    rgba: tuple[float, float, float, float] | None = None


@dataclass
class UrdfLink:
    name: str
    visuals: list[Visual] = field(default_factory=list)


@dataclass
class UrdfJoint:
    """One joint. `T_parent_joint` is the fixed origin transform (parent link -> joint frame at
    q = 0); the child link frame is the joint frame moved by q about/along `axis`."""
    name: str
    type: str
    parent: str
    child: str
    T_parent_joint: np.ndarray
    axis: np.ndarray
    limits: JointLimits | None
    mimic: Mimic | None = None

    @property
    def movable(self) -> bool:
        return self.type in MOVABLE_TYPES


def rpy_to_R(rpy: np.ndarray) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw: R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def origin_to_T(xyz: np.ndarray, rpy: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rpy_to_R(rpy)
    T[:3, 3] = xyz
    return T


class UrdfModel:
    """A parsed robot: `links`, `joints` (dicts by name, file order kept), `root` link."""

    def __init__(self, name: str, links: dict[str, UrdfLink], joints: dict[str, UrdfJoint],
                 source: str = "<string>"):
        self.name = name
        self.links = links
        self.joints = joints
        self.source = source
        self._child_joint: dict[str, UrdfJoint] = {}
        self._children: dict[str, list[UrdfJoint]] = {n: [] for n in links}
        self._validate()

    # -- structure -------------------------------------------------------------------------
    def _validate(self) -> None:
        if not self.links:
            raise UrdfError(f"{self.source}: the robot has no <link> elements; a URDF needs at least one link")
        valid = ", ".join(sorted(self.links))
        for j in self.joints.values():
            for role, link in (("parent", j.parent), ("child", j.child)):
                if link not in self.links:
                    raise UrdfError(f"{self.source}: joint '{j.name}' names unknown {role} link '{link}'; "
                                    f"add the <link> or fix the name (links: {valid})")
            if j.child in self._child_joint:
                raise UrdfError(f"{self.source}: link '{j.child}' is the child of two joints "
                                f"('{self._child_joint[j.child].name}' and '{j.name}'); a URDF must be a tree")
            self._child_joint[j.child] = j
            self._children[j.parent].append(j)
        for j in self.joints.values():
            if j.mimic is not None and j.mimic.joint not in self.joints:
                raise UrdfError(f"{self.source}: joint '{j.name}' mimics unknown joint '{j.mimic.joint}'")
        roots = [n for n in self.links if n not in self._child_joint]
        if not roots:
            raise UrdfError(f"{self.source}: every link is some joint's child, so the joints form a cycle; "
                            "a URDF must be a tree with one root link")
        if len(roots) > 1:
            raise UrdfError(f"{self.source}: {len(roots)} root links ({', '.join(roots)}); a URDF must be one "
                            "tree: connect them with joints (e.g. a fixed joint)")
        self.root = roots[0]
        # Reachability from the root catches cycles that do not involve the root.
        seen, stack = {self.root}, [self.root]
        while stack:
            for j in self._children[stack.pop()]:
                if j.child in seen:
                    raise UrdfError(f"{self.source}: cycle through link '{j.child}'")
                seen.add(j.child)
                stack.append(j.child)
        unreachable = set(self.links) - seen
        if unreachable:
            raise UrdfError(f"{self.source}: links {sorted(unreachable)} form a cycle detached from root "
                            f"'{self.root}'; a URDF must be a tree")

    def parent_joint(self, link: str) -> UrdfJoint | None:
        """The joint whose child is `link` (None for the root)."""
        self._require_link(link)
        return self._child_joint.get(link)

    def child_joints(self, link: str) -> list[UrdfJoint]:
        self._require_link(link)
        return list(self._children[link])

    def _require_link(self, link: str) -> None:
        if link not in self.links:
            raise UrdfError(f"unknown link '{link}' in robot '{self.name}'; valid links: "
                            f"{', '.join(sorted(self.links))}")

    def require_joint(self, joint: str) -> UrdfJoint:
        if joint not in self.joints:
            raise UrdfError(f"unknown joint '{joint}' in robot '{self.name}'; valid joints: "
                            f"{', '.join(self.joints)}")
        return self.joints[joint]

    def path_to_root(self, link: str) -> list[UrdfJoint]:
        """Joints from the root down to `link` (root first)."""
        self._require_link(link)
        path = []
        while (j := self._child_joint.get(link)) is not None:
            path.append(j)
            link = j.parent
        return path[::-1]

    def chain(self, base_link: str, tip_link: str) -> list[UrdfJoint]:
        """Joints from `base_link` down to `tip_link` (base first). `tip_link` must be a
        descendant of `base_link` (or the same link, giving an empty chain)."""
        self._require_link(base_link)
        path = self.path_to_root(tip_link)
        if base_link == tip_link:
            return []
        for i, j in enumerate(path):
            if j.parent == base_link:
                return path[i:]
        raise UrdfError(f"link '{tip_link}' is not below '{base_link}' in robot '{self.name}'; "
                        f"its path from the root is {[self.root] + [j.child for j in path]}")

    # -- joints ----------------------------------------------------------------------------
    @property
    def movable_joints(self) -> list[UrdfJoint]:
        """Movable joints (revolute, continuous, prismatic) in file order, mimics included."""
        return [j for j in self.joints.values() if j.movable]

    @property
    def actuated_joint_names(self) -> list[str]:
        """Independently commandable joints: movable and not mimicking another, file order."""
        return [j.name for j in self.joints.values() if j.movable and j.mimic is None]

    def limits_of(self, joint: str) -> JointLimits:
        """Limits, with continuous joints given +-inf position limits."""
        j = self.require_joint(joint)
        if j.limits is None:
            raise UrdfError(f"joint '{joint}' ({j.type}) has no limits")
        return j.limits


# -- parsing -------------------------------------------------------------------------------
def _floats(text: str | None, n: int, what: str, default: tuple[float, ...]) -> np.ndarray:
    if text is None:
        return np.array(default, dtype=np.float64)
    try:
        vals = [float(v) for v in text.split()]
    except ValueError:
        raise UrdfError(f"{what}: '{text}' is not {n} numbers") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise UrdfError(f"{what}: '{text}' must be {n} finite numbers")
    return np.array(vals, dtype=np.float64)


def _origin(elem: ET.Element | None, what: str) -> np.ndarray:
    if elem is None:
        return np.eye(4)
    xyz = _floats(elem.get("xyz"), 3, f"{what} origin xyz", (0.0, 0.0, 0.0))
    rpy = _floats(elem.get("rpy"), 3, f"{what} origin rpy", (0.0, 0.0, 0.0))
    return origin_to_T(xyz, rpy)


def _attr_float(elem: ET.Element, name: str, what: str, default: float | None) -> float:
    raw = elem.get(name)
    if raw is None:
        if default is None:
            raise UrdfError(f"{what}: missing attribute '{name}'")
        return default
    try:
        return float(raw)
    except ValueError:
        raise UrdfError(f"{what}: attribute {name}='{raw}' is not a number") from None


def _parse_visual(v: ET.Element, link: str, materials: dict[str, tuple]) -> Visual | None:
    geom = v.find("geometry")
    if geom is None or len(geom) == 0:
        return None
    g = geom[0]
    what = f"link '{link}' visual {g.tag}"
    if g.tag == "box":
        params = {"size": _floats(g.get("size"), 3, f"{what} size", (0.0, 0.0, 0.0)).tolist()}
    elif g.tag == "cylinder":
        params = {"radius": _attr_float(g, "radius", what, None), "length": _attr_float(g, "length", what, None)}
    elif g.tag == "sphere":
        params = {"radius": _attr_float(g, "radius", what, None)}
    elif g.tag == "mesh":
        params = {"filename": g.get("filename", ""),
                  "scale": _floats(g.get("scale"), 3, f"{what} scale", (1.0, 1.0, 1.0)).tolist()}
    else:
        return None
    rgba = None
    mat = v.find("material")
    if mat is not None:
        color = mat.find("color")
        if color is not None:
            rgba = tuple(_floats(color.get("rgba"), 4, f"{what} colour", (0.7, 0.7, 0.7, 1.0)).tolist())
            if mat.get("name"):
                materials[mat.get("name")] = rgba
        elif mat.get("name") in materials:
            rgba = materials[mat.get("name")]
    return Visual(kind=g.tag, params=params, T_link_visual=_origin(v.find("origin"), what), rgba=rgba)


def _parse_joint(e: ET.Element, source: str) -> UrdfJoint:
    name = e.get("name")
    if not name:
        raise UrdfError(f"{source}: a <joint> has no name attribute")
    jtype = e.get("type")
    if jtype not in JOINT_TYPES:
        raise UrdfError(f"{source}: joint '{name}' has type '{jtype}'; valid types: {', '.join(JOINT_TYPES)}")
    parent, child = e.find("parent"), e.find("child")
    if parent is None or child is None or not parent.get("link") or not child.get("link"):
        raise UrdfError(f"{source}: joint '{name}' needs <parent link=.../> and <child link=.../>")
    what = f"{source}: joint '{name}'"
    axis = _floats(e.find("axis").get("xyz") if e.find("axis") is not None else None, 3,
                   f"{what} axis", (1.0, 0.0, 0.0))
    if jtype in MOVABLE_TYPES:
        norm = float(np.linalg.norm(axis))
        if norm < 1e-9:
            raise UrdfError(f"{what}: axis is zero; give a unit axis like xyz=\"0 0 1\"")
        axis = axis / norm
    lim = e.find("limit")
    limits = None
    if jtype in ("revolute", "prismatic"):
        if lim is None or lim.get("lower") is None or lim.get("upper") is None:
            raise UrdfError(f"{what} is {jtype} but has no <limit lower=... upper=.../>; add the limits "
                            "(or make it 'continuous' if it really spins freely)")
    if lim is not None:
        lower = _attr_float(lim, "lower", what, -math.inf if jtype == "continuous" else 0.0)
        upper = _attr_float(lim, "upper", what, math.inf if jtype == "continuous" else 0.0)
        if jtype == "continuous":
            lower, upper = -math.inf, math.inf
        velocity = _attr_float(lim, "velocity", what, math.inf)
        effort = _attr_float(lim, "effort", what, math.inf)
        if jtype in MOVABLE_TYPES and not lower <= upper:
            raise UrdfError(f"{what}: limit lower={lower} > upper={upper}; swap them")
        if jtype in MOVABLE_TYPES and not velocity > 0:
            raise UrdfError(f"{what}: limit velocity={velocity} must be > 0 (rad/s or m/s)")
        limits = JointLimits(lower, upper, velocity, effort)
    elif jtype == "continuous":
        limits = JointLimits(-math.inf, math.inf, math.inf, math.inf)
    mimic = None
    m = e.find("mimic")
    if m is not None:
        if not m.get("joint"):
            raise UrdfError(f"{what}: <mimic> needs a joint attribute")
        mimic = Mimic(m.get("joint"), _attr_float(m, "multiplier", what, 1.0), _attr_float(m, "offset", what, 0.0))
    return UrdfJoint(name=name, type=jtype, parent=parent.get("link"), child=child.get("link"),
                     T_parent_joint=_origin(e.find("origin"), what), axis=axis, limits=limits, mimic=mimic)


def parse_urdf_string(xml_text: str, source: str = "<string>") -> UrdfModel:
    """Parse URDF XML text. Raises UrdfError (a ValueError) naming the problem."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise UrdfError(f"{source}: malformed XML ({exc}); check that the file is a complete URDF") from None
    if root.tag != "robot":
        raise UrdfError(f"{source}: the top element is <{root.tag}>, a URDF starts with <robot name=...>")
    materials: dict[str, tuple] = {}
    for mat in root.findall("material"):
        color = mat.find("color")
        if mat.get("name") and color is not None:
            materials[mat.get("name")] = tuple(_floats(color.get("rgba"), 4, "material", (0.7, 0.7, 0.7, 1)).tolist())
    links: dict[str, UrdfLink] = {}
    for e in root.findall("link"):
        name = e.get("name")
        if not name:
            raise UrdfError(f"{source}: a <link> has no name attribute")
        if name in links:
            raise UrdfError(f"{source}: link '{name}' is defined twice")
        visuals = [vis for v in e.findall("visual") if (vis := _parse_visual(v, name, materials)) is not None]
        links[name] = UrdfLink(name, visuals)
    joints: dict[str, UrdfJoint] = {}
    for e in root.findall("joint"):
        j = _parse_joint(e, source)
        if j.name in joints:
            raise UrdfError(f"{source}: joint '{j.name}' is defined twice")
        joints[j.name] = j
    return UrdfModel(root.get("name", "robot"), links, joints, source=source)


def load_urdf(path: str | Path) -> UrdfModel:
    """Load a URDF file (xacro must be expanded first)."""
    path = Path(path)
    if not path.is_file():
        raise UrdfError(f"URDF file not found: {path}; pass an existing .urdf path")
    text = path.read_text(encoding="utf-8", errors="replace")
    if "xacro:" in text and "<xacro:" in text:
        raise UrdfError(f"{path} uses xacro macros; expand it first (xacro {path.name} > robot.urdf)")
    return parse_urdf_string(text, source=str(path))


def default_robot_dir() -> Path:
    """config/robots of this package (source checkout or installed share directory)."""
    here = Path(__file__).resolve().parents[2] / "config" / "robots"
    if here.is_dir():
        return here
    try:  # installed with colcon: share/pose_ros/config/robots
        from ament_index_python.packages import get_package_share_directory  # type: ignore
        return Path(get_package_share_directory("pose_ros")) / "config" / "robots"
    except Exception:  # noqa: BLE001 - ament index absent in a plain venv
        return here


def default_urdf_path() -> Path:
    """The embedded default robot: pose_ros_humanoid.urdf."""
    return default_robot_dir() / "pose_ros_humanoid.urdf"
