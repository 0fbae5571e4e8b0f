"""Known-object models: mesh in metres, surface samples, keypoints, BOP symmetries.

Why: every object stage (renderer, keypoint network, PnP, ICP, metrics) needs the same
metre-scaled mesh, the same keypoints and the same symmetry set; loading them once here with
unit sanity checks stops the classic "mm mesh read as metres" failure at the door.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import trimesh

from pose_ros.core.config_file import read_config_file
from pose_ros.core.transforms import orthonormalize

__all__ = [
    "ObjectSymmetry", "ObjectModel", "ModelInfo", "MeshUnitsError", "ModelInfoError", "MeshLoadError",
    "load_object_model", "load_models_info", "load_bop_models", "load_object_dir", "farthest_point_sampling",
    "mesh_diameter", "SUPPORTED_MESH_EXTENSIONS", "MIN_DIAMETER_M", "MAX_DIAMETER_M",
]

log = logging.getLogger(__name__)

SUPPORTED_MESH_EXTENSIONS = (".ply", ".obj", ".stl")
MIN_DIAMETER_M = 0.005
MAX_DIAMETER_M = 3.0
_UNIT_SCALE = {"m": 1.0, "mm": 0.001}
# Rotations in published models_info.json files are only orthonormal to ~1e-3 (YCB-V), so
# accept small drift (and re-orthonormalise) but reject anything that is not a rotation.
_ROT_TOL = 2e-2


class MeshLoadError(ValueError):
    """Mesh file missing, unsupported, empty or degenerate."""


class MeshUnitsError(ValueError):
    """Mesh size is implausible for the declared units; the message suggests the right units."""


class ModelInfoError(ValueError):
    """models_info.json / object.yaml entry is malformed; the message names the object and field."""


# ----------------------------------------------------------------------------- symmetries
def _rotation_about_axis(axis: np.ndarray, offset_m: np.ndarray, angle_rad: float) -> np.ndarray:
    """4x4 rotation by angle about the line through offset_m with direction axis (unit)."""
    a = axis / np.linalg.norm(axis)
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    ax = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    R = c * np.eye(3) + s * ax + (1.0 - c) * np.outer(a, a)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = offset_m - R @ offset_m
    return T


@dataclass
class ObjectSymmetry:
    """Symmetry transforms of a model in its own frame (metres), BOP convention.

    A transform S is a symmetry if the model surface is unchanged by S, so poses T and T @ S are
    indistinguishable. ``discrete`` excludes the identity; ``continuous`` holds (unit axis,
    offset point in metres) pairs: rotation about the axis line through the offset.
    """

    discrete: list[np.ndarray] = field(default_factory=list)
    continuous: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def is_symmetric(self) -> bool:
        return bool(self.discrete or self.continuous)

    def transforms(self, continuous_steps: int = 36) -> list[np.ndarray]:
        """All symmetry transforms incl. the identity (first).

        Continuous axes are discretised into ``continuous_steps`` rotations and combined with
        each discrete symmetry (as the BOP toolkit does), so the list covers the full group
        closely enough for ADD-S/MSSD-style minimisation.
        """
        if continuous_steps < 1:
            raise ValueError(f"continuous_steps must be >= 1; got {continuous_steps}")
        base = [np.eye(4)] + [np.asarray(S, dtype=np.float64) for S in self.discrete]
        if not self.continuous:
            return [S.copy() for S in base]
        out: list[np.ndarray] = []
        for axis, offset in self.continuous:
            for k in range(continuous_steps):
                if k == 0 and out:
                    continue  # identity already listed from the first axis
                R_k = _rotation_about_axis(np.asarray(axis, float), np.asarray(offset, float),
                                           2.0 * math.pi * k / continuous_steps)
                out.extend(R_k @ S for S in base)
        return out

    @classmethod
    def from_bop(cls, info: dict[str, Any], obj_id: int | str = "?", source: str = "models_info.json",
                 translation_scale: float = 0.001) -> "ObjectSymmetry":
        """Parse ``symmetries_discrete`` (16 row-major floats, mm) / ``symmetries_continuous``."""
        return _parse_symmetry(info.get("symmetries_discrete", []), info.get("symmetries_continuous", []),
                               f"{source}: obj {obj_id}", translation_scale)


def _num_list(value: Any, n: int | None, where: str, fld: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ModelInfoError(f"{where}: field '{fld}' must be numbers; got {value!r}") from exc
    if n is not None and arr.size != n:
        raise ModelInfoError(f"{where}: field '{fld}' must have {n} numbers; got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ModelInfoError(f"{where}: field '{fld}' has non-finite values: {arr.tolist()}")
    return arr


def _parse_symmetry(discrete: Any, continuous: Any, where: str, translation_scale: float) -> ObjectSymmetry:
    if discrete is None:
        discrete = []
    if continuous is None:
        continuous = []
    if not isinstance(discrete, (list, tuple)):
        raise ModelInfoError(f"{where}: 'symmetries_discrete' must be a list of 4x4 transforms; got {type(discrete).__name__}")
    if not isinstance(continuous, (list, tuple)):
        raise ModelInfoError(f"{where}: 'symmetries_continuous' must be a list of {{axis, offset}}; got {type(continuous).__name__}")
    # Tolerate one bare transform (4x4 nested or 16 flat numbers) instead of a list of them.
    if len(discrete) == 16 and all(isinstance(x, (int, float)) for x in discrete):
        discrete = [discrete]
    elif len(discrete) == 4 and all(isinstance(r, (list, tuple)) and len(r) == 4
                                    and all(isinstance(x, (int, float)) for x in r) for r in discrete):
        discrete = [discrete]
    sym = ObjectSymmetry()
    for i, entry in enumerate(discrete):
        fld = f"symmetries_discrete[{i}]"
        S = _num_list(entry, 16, where, fld).reshape(4, 4)
        if not np.allclose(S[3], [0, 0, 0, 1], atol=1e-6):
            raise ModelInfoError(f"{where}: field '{fld}' last row must be [0,0,0,1]; got {S[3].tolist()}")
        R = S[:3, :3]
        if np.abs(R.T @ R - np.eye(3)).max() > _ROT_TOL or abs(np.linalg.det(R) - 1.0) > _ROT_TOL:
            raise ModelInfoError(f"{where}: field '{fld}' rotation is not orthonormal with det +1 "
                                 f"(R^T R - I max {np.abs(R.T @ R - np.eye(3)).max():.3g}, det {np.linalg.det(R):.3g})")
        T = np.eye(4)
        T[:3, :3] = orthonormalize(R)
        T[:3, 3] = S[:3, 3] * translation_scale
        sym.discrete.append(T)
    for i, entry in enumerate(continuous):
        fld = f"symmetries_continuous[{i}]"
        if not isinstance(entry, dict) or "axis" not in entry:
            raise ModelInfoError(f"{where}: field '{fld}' must be {{'axis': [3], 'offset': [3]}}; got {entry!r}")
        axis = _num_list(entry["axis"], 3, where, fld + ".axis")
        n = np.linalg.norm(axis)
        if n < 1e-9:
            raise ModelInfoError(f"{where}: field '{fld}.axis' has zero length")
        offset = _num_list(entry.get("offset", [0, 0, 0]), 3, where, fld + ".offset") * translation_scale
        sym.continuous.append((axis / n, offset))
    return sym


# ----------------------------------------------------------------------------- models_info
@dataclass
class ModelInfo:
    """One validated models_info.json entry, converted to metres."""

    obj_id: int
    diameter_m: float
    symmetry: ObjectSymmetry
    bbox_min_m: np.ndarray | None = None
    bbox_size_m: np.ndarray | None = None


def load_models_info(path: str | Path) -> dict[int, ModelInfo]:
    """Read and validate a BOP models_info.json (mm) -> {obj_id: ModelInfo (metres)}."""
    path = Path(path)
    raw = read_config_file(path, ModelInfoError, missing=f"models_info.json not found: {path}",
                           mapping_expected="top level must be an object {obj_id: info}")
    out: dict[int, ModelInfo] = {}
    for key, info in raw.items():
        try:
            obj_id = int(key)
        except ValueError as exc:
            raise ModelInfoError(f"{path}: key {key!r} is not an integer object id") from exc
        where = f"{path.name}: obj {obj_id}"
        if not isinstance(info, dict):
            raise ModelInfoError(f"{where}: entry must be an object; got {type(info).__name__}")
        if "diameter" not in info:
            raise ModelInfoError(f"{where}: missing field 'diameter' (mm); add it (max vertex distance)")
        d = _num_list(info["diameter"], 1, where, "diameter")[0]
        if d <= 0:
            raise ModelInfoError(f"{where}: field 'diameter' must be > 0 mm; got {d}")
        bbox_min = bbox_size = None
        if all(k in info for k in ("min_x", "min_y", "min_z")):
            bbox_min = _num_list([info["min_x"], info["min_y"], info["min_z"]], 3, where, "min_x/min_y/min_z") * 1e-3
        if all(k in info for k in ("size_x", "size_y", "size_z")):
            bbox_size = _num_list([info["size_x"], info["size_y"], info["size_z"]], 3, where, "size_x/size_y/size_z") * 1e-3
        sym = ObjectSymmetry.from_bop(info, obj_id, path.name)
        out[obj_id] = ModelInfo(obj_id, float(d) * 1e-3, sym, bbox_min, bbox_size)
    return out


# ----------------------------------------------------------------------------- geometry helpers
def mesh_diameter(vertices_m: np.ndarray, chunk: int = 2048) -> float:
    """Exact max pairwise vertex distance, computed over convex-hull vertices (chunked)."""
    v = np.asarray(vertices_m, dtype=np.float64)
    v = np.unique(v, axis=0) if len(v) < 200_000 else v
    if len(v) < 2:
        return 0.0
    try:
        from scipy.spatial import ConvexHull

        v = v[ConvexHull(v).vertices]
    except Exception:  # planar/collinear input: qhull fails, fall back to all vertices
        if len(v) > 20_000:
            v = v[np.random.default_rng(0).choice(len(v), 20_000, replace=False)]
    best = 0.0
    for i in range(0, len(v), chunk):
        d2 = ((v[i:i + chunk, None, :] - v[None, :, :]) ** 2).sum(-1)
        best = max(best, float(d2.max()))
    return math.sqrt(best)


def farthest_point_sampling(points: np.ndarray, k: int, seed: int = 0, start: int | str | None = None) -> np.ndarray:
    """Indices of k points chosen greedily to be mutually far apart.

    ``start``: None = the point farthest from the bounding-box centre (deterministic, so
    keypoints do not depend on a seed); "random" = a seed-chosen point; int = that index.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"points must be a non-empty (N,3) array; got shape {pts.shape}")
    if k < 1 or k > len(pts):
        raise ValueError(f"k must be in [1, {len(pts)}]; got {k}")
    if start is None:
        centre = 0.5 * (pts.min(0) + pts.max(0))
        first = int(np.argmax(((pts - centre) ** 2).sum(1)))
    elif start == "random":
        first = int(np.random.default_rng(seed).integers(len(pts)))
    else:
        first = int(start)
    idx = np.empty(k, dtype=np.int64)
    idx[0] = first
    d2 = ((pts - pts[first]) ** 2).sum(1)
    for i in range(1, k):
        nxt = int(np.argmax(d2))
        idx[i] = nxt
        d2 = np.minimum(d2, ((pts - pts[nxt]) ** 2).sum(1))
    return idx


# ----------------------------------------------------------------------------- ObjectModel
@dataclass
class ObjectModel:
    """A known object: metre mesh in the model frame plus what the pose stages need."""

    name: str
    obj_id: int
    mesh: trimesh.Trimesh
    diameter_m: float
    points_m: np.ndarray
    normals: np.ndarray
    keypoints_m: np.ndarray
    symmetry: ObjectSymmetry = field(default_factory=ObjectSymmetry)
    source_path: str = ""            # mesh file it was loaded from ("" if built in memory)
    source_scale: float = 1.0        # metres per unit of that file (RViz mesh markers need it)

    @property
    def is_symmetric(self) -> bool:
        return self.symmetry.is_symmetric

    @property
    def bbox_min_m(self) -> np.ndarray:
        return np.asarray(self.mesh.bounds[0], dtype=np.float64)

    @property
    def bbox_max_m(self) -> np.ndarray:
        return np.asarray(self.mesh.bounds[1], dtype=np.float64)

    @property
    def bbox_center_m(self) -> np.ndarray:
        return 0.5 * (self.bbox_min_m + self.bbox_max_m)

    @property
    def bbox_corners_m(self) -> np.ndarray:
        """(8,3) corners of the axis-aligned model-frame bounding box."""
        lo, hi = self.bbox_min_m, self.bbox_max_m
        return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])

    def __repr__(self) -> str:
        return (f"ObjectModel(name={self.name!r}, obj_id={self.obj_id}, diameter_m={self.diameter_m:.4f}, "
                f"vertices={len(self.mesh.vertices)}, keypoints={len(self.keypoints_m)}, "
                f"symmetric={self.is_symmetric})")


class _RecordCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            msg += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.messages.append(msg)


def _load_mesh(path: Path) -> trimesh.Trimesh:
    if not path.exists():
        raise MeshLoadError(f"mesh file not found: {path}")
    if path.suffix.lower() not in SUPPORTED_MESH_EXTENSIONS:
        raise MeshLoadError(f"unsupported mesh format {path.suffix!r} for {path}; use one of {SUPPORTED_MESH_EXTENSIONS}")
    # trimesh logs a full traceback when a referenced texture image is missing (BOP ycbv PLYs
    # name one that is not shipped); collect those records and report one line instead.
    tm_log = logging.getLogger("trimesh")
    catcher = _RecordCatcher()
    old_propagate = tm_log.propagate
    tm_log.addHandler(catcher)
    tm_log.propagate = False
    try:
        # process=False keeps vertex order/colours/UVs exactly as authored (renderer needs them).
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise MeshLoadError(f"could not read mesh {path}: {exc}") from exc
    finally:
        tm_log.removeHandler(catcher)
        tm_log.propagate = old_propagate
    if catcher.messages:
        log.warning("mesh %s: trimesh reported: %s", path.name, "; ".join(sorted(set(catcher.messages)))[:300])
    if isinstance(mesh, trimesh.Scene):  # older trimesh may still hand back a Scene
        geoms = [g for g in mesh.geometry.values() if isinstance(g, trimesh.Trimesh)]
        mesh = trimesh.util.concatenate(geoms) if geoms else trimesh.Trimesh()
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise MeshLoadError(f"mesh {path} has no triangles (empty or a point cloud); export it as a triangle mesh")
    if not np.all(np.isfinite(mesh.vertices)):
        raise MeshLoadError(f"mesh {path} has non-finite vertex coordinates; repair it before loading")
    if float(mesh.area) <= 0.0:
        raise MeshLoadError(f"mesh {path} is degenerate (zero surface area); check the export")
    return mesh


def load_object_model(path: str | Path, units: str = "m", name: str | None = None, obj_id: int = 0,
                      symmetry: ObjectSymmetry | None = None, num_keypoints: int = 8, num_points: int = 2000,
                      seed: int = 0) -> ObjectModel:
    """Load a PLY/OBJ/STL mesh into an ObjectModel in metres.

    ``units`` must be stated ('m' or 'mm'); a diameter outside [5 mm, 3 m] raises
    MeshUnitsError with the likely right units. Keypoints: ``num_keypoints`` farthest-point
    samples of the surface samples plus the bbox centre last.
    """
    path = Path(path)
    if units not in _UNIT_SCALE:
        raise ValueError(f"units must be 'm' or 'mm'; got {units!r}")
    if num_points < 1 or num_keypoints < 1:
        raise ValueError(f"num_points and num_keypoints must be >= 1; got {num_points}, {num_keypoints}")
    mesh = _load_mesh(path)
    scale = _UNIT_SCALE[units]
    if scale != 1.0:
        mesh.apply_scale(scale)
    diameter_m = mesh_diameter(mesh.vertices)
    if not (MIN_DIAMETER_M <= diameter_m <= MAX_DIAMETER_M):
        shown = f"{diameter_m:.1f} m" if diameter_m >= 1 else f"{diameter_m * 1000:.2f} mm"
        if diameter_m > MAX_DIAMETER_M and units == "m" and MIN_DIAMETER_M <= diameter_m * 1e-3 <= MAX_DIAMETER_M:
            hint = "it looks like millimetres: load it with units='mm'"
        elif diameter_m < MIN_DIAMETER_M and units == "mm" and MIN_DIAMETER_M <= diameter_m * 1e3 <= MAX_DIAMETER_M:
            hint = "it looks like metres: load it with units='m'"
        else:
            hint = f"expected [{MIN_DIAMETER_M * 1000:.0f} mm, {MAX_DIAMETER_M:.0f} m]; check the mesh's units/scale"
        raise MeshUnitsError(f"mesh {path.name} has diameter {shown} with units={units!r}; {hint}")
    points_m, face_idx = trimesh.sample.sample_surface(mesh, int(num_points), seed=seed)
    points_m = np.asarray(points_m, dtype=np.float64)
    normals = np.asarray(mesh.face_normals[face_idx], dtype=np.float64)
    k = min(int(num_keypoints), len(points_m))
    kp_idx = farthest_point_sampling(points_m, k)
    centre = 0.5 * (mesh.bounds[0] + mesh.bounds[1])
    keypoints_m = np.vstack([points_m[kp_idx], centre[None, :]])
    return ObjectModel(name=name or path.stem, obj_id=int(obj_id), mesh=mesh, diameter_m=float(diameter_m),
                       points_m=points_m, normals=normals, keypoints_m=keypoints_m,
                       symmetry=symmetry if symmetry is not None else ObjectSymmetry(),
                       source_path=str(path.resolve()), source_scale=float(scale))


# ----------------------------------------------------------------------------- collections
def load_bop_models(models_dir: str | Path, obj_ids: Iterable[int] | None = None, **kwargs: Any) -> list[ObjectModel]:
    """Load BOP ``obj_XXXXXX.ply`` (mm) with symmetries from ``models_info.json`` in the same folder.

    ``obj_ids=None`` loads every listed object whose PLY exists (missing files are logged, since
    subsets of BOP datasets often ship fewer meshes than models_info lists); explicit ids must exist.
    Extra keyword arguments go to :func:`load_object_model` (num_points, num_keypoints, seed).
    """
    models_dir = Path(models_dir)
    info = load_models_info(models_dir / "models_info.json")
    if obj_ids is None:
        ids = [i for i in sorted(info) if (models_dir / f"obj_{i:06d}.ply").is_file()]
        missing = sorted(set(info) - set(ids))
        if missing:
            log.info("%s: no PLY for obj ids %s listed in models_info.json; skipped", models_dir, missing)
        if not ids:
            raise MeshLoadError(f"{models_dir}: none of the models in models_info.json has an obj_XXXXXX.ply file")
    else:
        ids = [int(i) for i in obj_ids]
    models = []
    for oid in ids:
        if oid not in info:
            raise ModelInfoError(f"obj {oid} is not in {models_dir / 'models_info.json'} (has {sorted(info)})")
        ply = models_dir / f"obj_{oid:06d}.ply"
        m = load_object_model(ply, units="mm", name=f"obj_{oid:06d}", obj_id=oid, symmetry=info[oid].symmetry, **kwargs)
        if abs(m.diameter_m - info[oid].diameter_m) > 0.02 * info[oid].diameter_m:
            log.warning("obj %d: mesh diameter %.4f m differs from models_info %.4f m", oid, m.diameter_m,
                        info[oid].diameter_m)
        models.append(m)
    return models


_REQUIRED_YAML_KEYS = ("name", "obj_id", "mesh", "units")


def load_object_dir(meshes_dir: str | Path, **kwargs: Any) -> list[ObjectModel]:
    """Load every ``meshes/<folder>/object.yaml`` object, sorted by obj_id.

    ``object.yaml`` format (symmetry in metres, the model frame of the mesh)::

        name: mug               # unique name
        obj_id: 3               # unique positive integer
        mesh: mug.ply           # file in the same folder (.ply/.obj/.stl)
        units: m                # m | mm: units of the mesh file
        symmetry:               # optional
          discrete: [[...4x4...], ...]          # nested 4x4 or 16 row-major numbers, translation m
          continuous: [{axis: [0, 0, 1], offset: [0, 0, 0]}]   # offset m

    Folders without object.yaml are skipped with a warning.
    """
    meshes_dir = Path(meshes_dir)
    if not meshes_dir.is_dir():
        raise MeshLoadError(f"meshes directory not found: {meshes_dir}")
    models: list[ObjectModel] = []
    for sub in sorted(p for p in meshes_dir.iterdir() if p.is_dir()):
        cfg_path = sub / "object.yaml"
        if not cfg_path.is_file():
            log.warning("skipping %s: no object.yaml", sub)
            continue
        cfg = read_config_file(cfg_path, ModelInfoError,
                               mapping_expected=f"must be a mapping with keys {_REQUIRED_YAML_KEYS}")
        missing = [k for k in _REQUIRED_YAML_KEYS if k not in cfg]
        if missing:
            raise ModelInfoError(f"{cfg_path}: missing key(s) {missing}; required: {list(_REQUIRED_YAML_KEYS)}")
        try:
            obj_id = int(cfg["obj_id"])
        except (TypeError, ValueError) as exc:
            raise ModelInfoError(f"{cfg_path}: 'obj_id' must be an integer; got {cfg['obj_id']!r}") from exc
        sym_cfg = cfg.get("symmetry") or {}
        if not isinstance(sym_cfg, dict):
            raise ModelInfoError(f"{cfg_path}: 'symmetry' must be a mapping with 'discrete'/'continuous'")
        sym = _parse_symmetry(sym_cfg.get("discrete", []), sym_cfg.get("continuous", []),
                              f"{cfg_path}: obj {obj_id}", translation_scale=1.0)
        models.append(load_object_model(sub / str(cfg["mesh"]), units=str(cfg["units"]), name=str(cfg["name"]),
                                        obj_id=obj_id, symmetry=sym, **kwargs))
    ids = [m.obj_id for m in models]
    names = [m.name for m in models]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise ModelInfoError(f"{meshes_dir}: obj_id and name must be unique; got ids {ids}, names {names}")
    return sorted(models, key=lambda m: m.obj_id)


def models_by_id(models: Sequence[ObjectModel]) -> dict[int, ObjectModel]:
    """{obj_id: model} convenience map."""
    return {m.obj_id: m for m in models}
