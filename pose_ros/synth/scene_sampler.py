"""Random tabletop scenes: known objects in stable resting poses, distractors, a varied camera.

Why: pose networks trained on objects floating at random rotations see poses that never occur
on a real table and miss the occlusion and contact patterns that do. Here every object rests
on the table plane in one of its physically stable poses (trimesh's quasi-static stable-pose
analysis, computed once per mesh), with random yaw and non-overlapping footprints, and the
camera looks down from a random elevation, distance, azimuth and roll.

Table frame: origin at the table centre on its surface, +z up; objects rest on z = 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import trimesh

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.transforms import invert_T, look_at, make_T
from pose_ros.synth.renderer import SceneMesh, TablePlane, wood_texture

__all__ = ["TabletopSceneSampler", "SampledScene", "StablePoses", "stable_poses", "make_distractor",
           "camera_pose_on_table", "SceneSamplingError"]


class SceneSamplingError(ValueError):
    """The requested scene cannot be built (e.g. objects do not fit on the table)."""


@dataclass
class StablePoses:
    """Resting poses of one mesh: T_rest_obj puts the mesh on z=0, footprint centred at x=y=0."""

    T_rest_obj: np.ndarray       # (P,4,4)
    probs: np.ndarray            # (P,) normalised
    radius_m: np.ndarray         # (P,) footprint circle radius about the origin


@dataclass
class SampledScene:
    T_cam_obj: list[np.ndarray]          # one per known object, model frame -> camera
    model_indices: list[int]             # index into the sampler's models, parallel to T_cam_obj
    T_cam_table: np.ndarray
    T_table_obj: list[np.ndarray]
    distractors: list[tuple[SceneMesh, np.ndarray]] = field(default_factory=list)  # (mesh, T_cam_obj)
    table: TablePlane | None = None

    def render_list(self, models: Sequence[Any]) -> list[tuple[Any, np.ndarray]]:
        """(model, T_cam_obj) for the renderer: known objects first (instance id i = object i),
        then distractors."""
        return [(models[m], T) for m, T in zip(self.model_indices, self.T_cam_obj)] + list(self.distractors)


_STABLE_CACHE: dict[int, tuple[Any, StablePoses]] = {}


def _center_mass(mesh: trimesh.Trimesh) -> np.ndarray:
    """Volume centroid when watertight, else the area-weighted surface centroid (thin shells
    such as mugs and bottles are well described by it)."""
    if mesh.is_watertight and mesh.volume > 0:
        return np.asarray(mesh.center_mass)
    w = mesh.area_faces
    return (mesh.triangles_center * w[:, None]).sum(0) / max(w.sum(), 1e-12)


def stable_poses(mesh: trimesh.Trimesh, min_prob: float = 0.02, max_poses: int = 12) -> StablePoses:
    """Stable resting poses of ``mesh`` (cached per mesh object)."""
    hit = _STABLE_CACHE.get(id(mesh))
    if hit is not None and hit[0] is mesh:
        return hit[1]
    hull = mesh.convex_hull
    Ts, probs = trimesh.poses.compute_stable_poses(hull, center_mass=_center_mass(mesh), sigma=0.0, n_samples=1)
    Ts, probs = np.asarray(Ts), np.asarray(probs, dtype=np.float64)
    if len(Ts) == 0:
        raise SceneSamplingError("no stable pose found for the mesh; is it degenerate (flat or a single line)?")
    order = np.argsort(-probs)[:max_poses]
    keep = [i for i in order if probs[i] >= min_prob] or [int(order[0])]
    hv = np.asarray(hull.vertices)
    out_T, out_r = [], []
    for i in keep:
        T = np.array(Ts[i], dtype=np.float64)
        p = hv @ T[:3, :3].T + T[:3, 3]
        lo, hi = p[:, :2].min(0), p[:, :2].max(0)
        c = (lo + hi) / 2
        T[:3, 3] -= np.array([c[0], c[1], p[:, 2].min()])
        out_T.append(T)
        out_r.append(float(np.linalg.norm(p[:, :2] - c, axis=1).max()))
    pr = probs[keep] / probs[keep].sum()
    sp = StablePoses(np.stack(out_T), pr, np.asarray(out_r))
    if len(_STABLE_CACHE) > 256:
        _STABLE_CACHE.clear()
    _STABLE_CACHE[id(mesh)] = (mesh, sp)
    return sp


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_distractor(rng: np.random.Generator) -> tuple[SceneMesh, np.ndarray, float]:
    """A random coloured box / cylinder / sphere resting at the origin: (mesh, T_table_obj, radius)."""
    kind = int(rng.integers(0, 3))
    col = np.append(rng.integers(20, 236, 3), 255).astype(np.uint8)
    if kind == 0:
        ext = rng.uniform([0.03, 0.03, 0.02], [0.12, 0.12, 0.15])
        mesh = trimesh.creation.box(extents=ext)
        z0, r = ext[2] / 2, float(np.hypot(ext[0], ext[1]) / 2)
        name = "distractor_box"
    elif kind == 1:
        rad, h = rng.uniform(0.015, 0.05), rng.uniform(0.04, 0.2)
        mesh = trimesh.creation.cylinder(radius=rad, height=h, sections=32)
        z0, r = h / 2, float(rad)
        name = "distractor_cylinder"
    else:
        rad = rng.uniform(0.02, 0.05)
        mesh = trimesh.creation.icosphere(subdivisions=2, radius=rad)
        z0, r = rad, float(rad)
        name = "distractor_sphere"
    # Two-tone vertex colours so distractors are not flat blobs.
    vc = np.tile(col, (len(mesh.vertices), 1))
    alt = np.append(rng.integers(20, 236, 3), 255).astype(np.uint8)
    vc[np.asarray(mesh.vertices)[:, 2] > 0] = alt
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=vc)
    return SceneMesh(name, mesh), make_T(np.eye(3), [0.0, 0.0, z0]), r


def camera_pose_on_table(elevation_rad: float, azimuth_rad: float, distance_m: float,
                         target_table_m: np.ndarray, roll_rad: float = 0.0) -> np.ndarray:
    """T_cam_table for a camera at (elevation, azimuth, distance) around target, rolled about its axis."""
    tgt = np.asarray(target_table_m, dtype=np.float64)
    ce = np.cos(elevation_rad)
    eye = tgt + distance_m * np.array([ce * np.cos(azimuth_rad), ce * np.sin(azimuth_rad), np.sin(elevation_rad)])
    up = np.array([0.0, 0.0, 1.0]) if abs(np.sin(elevation_rad)) < 0.999 else np.array([1.0, 0.0, 0.0])
    T_table_cam = look_at(eye, tgt, up) @ make_T(_rz(roll_rad), np.zeros(3))
    return invert_T(T_table_cam)


class TabletopSceneSampler:
    """Seeded generator of tabletop scenes for the given models (anything with ``.mesh``)."""

    def __init__(self, models: Sequence[Any], camera: PinholeCamera,
                 rng: np.random.Generator | int | None = 0,
                 elevation_deg: tuple[float, float] = (20.0, 80.0),
                 distance_m: tuple[float, float] = (0.4, 1.2),
                 roll_deg: tuple[float, float] = (-20.0, 20.0),
                 lookat_jitter_m: float = 0.05,
                 n_distractors: tuple[int, int] = (0, 3),
                 table_size_xy_m: tuple[float, float] = (1.2, 0.8),
                 min_gap_m: float = 0.005,
                 n_table_textures: int = 8,
                 upright_bias: float = 4.0):
        if len(models) == 0:
            raise SceneSamplingError("TabletopSceneSampler needs at least one model")
        for i, m in enumerate(models):
            if getattr(m, "mesh", None) is None:
                raise SceneSamplingError(f"model {i} ({type(m).__name__}) has no .mesh; pass ObjectModel objects")
        if not (0 < elevation_deg[0] <= elevation_deg[1] <= 90):
            raise SceneSamplingError(f"elevation_deg must satisfy 0 < lo <= hi <= 90; got {elevation_deg}")
        if not (0 < distance_m[0] <= distance_m[1]):
            raise SceneSamplingError(f"distance_m must satisfy 0 < lo <= hi; got {distance_m}")
        self.models = list(models)
        self.camera = camera
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.elevation_deg, self.distance_m, self.roll_deg = elevation_deg, distance_m, roll_deg
        self.lookat_jitter_m = float(lookat_jitter_m)
        self.n_distractors = n_distractors
        self.table_size_xy_m = table_size_xy_m
        self.min_gap_m = float(min_gap_m)
        tex_seed = int(self.rng.integers(0, 2**31))
        self._textures = [wood_texture(tex_seed + k) for k in range(max(1, n_table_textures))]
        self._stable = [stable_poses(m.mesh) for m in self.models]
        # People put things down upright more often than physics alone predicts: stable poses
        # with the model +z axis up get their quasi-static probability multiplied by this.
        if upright_bias <= 0:
            raise SceneSamplingError(f"upright_bias must be > 0; got {upright_bias}")
        self._pose_probs = []
        for sp in self._stable:
            w = sp.probs * np.where(sp.T_rest_obj[:, 2, 2] > 0.99, upright_bias, 1.0)
            self._pose_probs.append(w / w.sum())

    def _place(self, radii: list[float], area_r: float, rng: np.random.Generator) -> list[np.ndarray]:
        """Non-overlapping footprint circle centres inside a disc (grown if crowded), each
        footprint fully on the table."""
        hx, hy = self.table_size_xy_m[0] / 2, self.table_size_xy_m[1] / 2
        for attempt in range(8):
            centres: list[np.ndarray] = []
            ok = True
            for r in radii:
                for _ in range(100):
                    rr = area_r * np.sqrt(rng.random())
                    a = rng.uniform(0, 2 * np.pi)
                    c = np.array([rr * np.cos(a), rr * np.sin(a)])
                    if abs(c[0]) + r > hx or abs(c[1]) + r > hy:
                        continue
                    if all(np.linalg.norm(c - c2) > r + r2 + self.min_gap_m for c2, r2 in zip(centres, radii)):
                        centres.append(c)
                        break
                else:
                    ok = False
                    break
            if ok:
                return centres
            area_r = min(area_r * 1.25, float(np.hypot(hx, hy)))
        half = min(self.table_size_xy_m) / 2
        raise SceneSamplingError(f"could not place {len(radii)} objects without overlap (disc up to {area_r:.2f} m, "
                                 f"table half-size {half:.2f} m); request fewer objects or a larger table")

    def sample(self, n_objects: int, model_indices: Sequence[int] | None = None) -> SampledScene:
        """A scene with ``n_objects`` known objects (random models, or the given indices)."""
        rng = self.rng
        if model_indices is None:
            if n_objects < 0:
                raise SceneSamplingError(f"n_objects must be >= 0; got {n_objects}")
            idx = [int(i) for i in rng.integers(0, len(self.models), n_objects)]
        else:
            idx = [int(i) for i in model_indices]
            bad = [i for i in idx if not 0 <= i < len(self.models)]
            if bad:
                raise SceneSamplingError(f"model_indices {bad} out of range 0..{len(self.models) - 1}")
        # Camera first: the placement disc follows how much of the table the camera sees.
        el = np.deg2rad(rng.uniform(*self.elevation_deg))
        az = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(*self.distance_m)
        roll = np.deg2rad(rng.uniform(*self.roll_deg))
        target = np.array([*rng.normal(0, self.lookat_jitter_m, 2), 0.0])
        half_fov = np.arctan(0.5 * min(self.camera.width / self.camera.fx, self.camera.height / self.camera.fy))
        area_r = float(np.clip(0.8 * dist * np.tan(half_fov), 0.1, min(self.table_size_xy_m) / 2))

        rest, radii = [], []
        for m in idx:
            sp = self._stable[m]
            k = int(rng.choice(len(sp.probs), p=self._pose_probs[m]))
            rest.append(sp.T_rest_obj[k])
            radii.append(float(sp.radius_m[k]))
        n_d = int(rng.integers(self.n_distractors[0], self.n_distractors[1] + 1)) if self.n_distractors[1] > 0 else 0
        dis = [make_distractor(rng) for _ in range(n_d)]
        centres = self._place(radii + [d[2] for d in dis], area_r, rng)

        T_cam_table = camera_pose_on_table(el, az, dist, target, roll)
        T_table_obj = []
        for T_rest, c in zip(rest, centres):
            T_yaw = make_T(_rz(rng.uniform(0, 2 * np.pi)), [c[0], c[1], 0.0])
            T_table_obj.append(T_yaw @ T_rest)
        distractors = []
        for (mesh, T_rest, _), c in zip(dis, centres[len(idx):]):
            T_yaw = make_T(_rz(rng.uniform(0, 2 * np.pi)), [c[0], c[1], 0.0])
            distractors.append((mesh, T_cam_table @ T_yaw @ T_rest))
        tex = self._textures[int(rng.integers(0, len(self._textures)))]
        return SampledScene(T_cam_obj=[T_cam_table @ T for T in T_table_obj], model_indices=idx,
                            T_cam_table=T_cam_table, T_table_obj=T_table_obj, distractors=distractors,
                            table=TablePlane(T_cam_table, self.table_size_xy_m, tex))
