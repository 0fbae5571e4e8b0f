"""CPU RGB-D renderer on Open3D ray casting (no OpenGL, runs headless and in CI).

Why ray casting: it gives exact z-depth, per-pixel instance ids and barycentric coordinates
without a GL context. Each mesh gets one BVH, built once in its *model* frame and cached; per
frame the camera rays are rotated into each model frame instead of moving the mesh, so nothing is
rebuilt. Rays are cast only inside each object's projected bounding box, which keeps a
640x480 frame with a few objects in the tens of milliseconds on one core. Casting each object on
its own also yields the "rendered alone" pixel count that ``visible_fraction`` needs for free.

Conventions: camera optical frame (x right, y down, z forward), pixel centres at integer uv,
``depth_m`` is the z coordinate (not the ray length), 0 where no surface. Lens distortion of the
camera is honoured through its precomputed per-pixel ray grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from pose_ros.core.camera import PinholeCamera

__all__ = ["RgbdRenderer", "RenderResult", "SceneMesh", "TablePlane", "RenderInputError"]

_NEAR_M = 1e-4


class RenderInputError(ValueError):
    """Bad renderer input (pose, background, mesh); the message names the problem and the fix."""


@dataclass
class SceneMesh:
    """A renderable mesh that is not a known object (distractor, prop): anything with ``.mesh``."""

    name: str
    mesh: Any  # trimesh.Trimesh in metres, optional vertex colours


@dataclass
class TablePlane:
    """A finite textured rectangle z=0 in the table frame, ray-cast analytically (exact, cheap).

    ``texture(x_m, y_m) -> (N,3) float RGB in [0,1]`` colours a hit at table coordinates.
    """

    T_cam_table: np.ndarray
    size_xy_m: tuple[float, float] = (1.2, 0.8)
    texture: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    texel_m: float = 0.001  # the texture is baked once per (texture, size) at this resolution


@dataclass
class RenderResult:
    rgb: np.ndarray            # (H,W,3) uint8
    depth_m: np.ndarray        # (H,W) float32, z in metres, 0 = no surface
    instance_mask: np.ndarray  # (H,W) int32, index into the rendered object list, -1 elsewhere
    visible_fraction: np.ndarray  # (n,) visible pixels / pixels of the object rendered alone
    normals_cam: np.ndarray    # (H,W,3) float32 unit geometric normals facing the camera, 0 = none
    visible_px: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (n,)
    alone_px: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))    # (n,)
    light_dir_cam: np.ndarray = field(default_factory=lambda: np.zeros(3))  # towards the light


@dataclass
class _MeshEntry:
    mesh: Any                 # keeps the mesh alive so the id() key stays unique
    scene: Any                # o3d.t.geometry.RaycastingScene in the model frame
    faces: np.ndarray         # (F,3) int64
    face_colors: np.ndarray   # (F,3,3) float32 in [0,1]: colour of each corner of each face
    face_vnormals: np.ndarray  # (F,3,3) float32: vertex normal at each corner of each face
    fnormals: np.ndarray      # (F,3) float32
    corners_m: np.ndarray     # (8,3) model-frame AABB corners


def _mesh_colors(mesh: Any) -> np.ndarray:
    """Per-vertex RGB in [0,1]; texture maps are baked to vertices, no colour -> light grey."""
    n = len(mesh.vertices)
    visual = getattr(mesh, "visual", None)
    try:
        kind = getattr(visual, "kind", None)
        if kind == "texture":
            vc = visual.to_color().vertex_colors
        elif kind in ("vertex", "face"):
            vc = visual.vertex_colors
        else:
            vc = None
        if vc is not None and len(vc) == n:
            return (np.asarray(vc)[:, :3].astype(np.float32) / 255.0)
    except Exception:  # malformed visuals: render grey rather than fail the frame
        pass
    return np.full((n, 3), 0.7, np.float32)


def _build_entry(mesh: Any) -> _MeshEntry:
    import open3d as o3d

    verts = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3 or len(verts) == 0 or faces.ndim != 2 or len(faces) == 0:
        raise RenderInputError("mesh has no triangles; load a triangle mesh (trimesh.Trimesh) with faces")
    if not np.all(np.isfinite(verts)):
        raise RenderInputError("mesh has non-finite vertices; repair the mesh file")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(faces.astype(np.uint32)))
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
    try:
        vn = np.asarray(mesh.vertex_normals, dtype=np.float32)
    except Exception:
        vn = np.zeros_like(verts)
    lo, hi = verts.min(0), verts.max(0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    # Per-face corner tables make barycentric interpolation one contiguous gather + einsum.
    fc = np.ascontiguousarray(_mesh_colors(mesh)[faces], dtype=np.float32)
    fvn = np.ascontiguousarray(vn[faces], dtype=np.float32)
    return _MeshEntry(mesh, scene, faces, fc, fvn, fn.astype(np.float32), corners)


def wood_texture(seed: int = 0) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A procedural wood-like table texture (grain stripes + planks), deterministic per seed."""
    rng = np.random.default_rng(seed)
    base = rng.uniform([0.45, 0.28, 0.12], [0.75, 0.55, 0.35])
    freq = rng.uniform(40.0, 90.0)
    plank_w = rng.uniform(0.08, 0.2)
    phase = rng.uniform(0, 2 * np.pi, 64)

    def tex(x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
        plank = np.floor(y_m / plank_w).astype(np.int64)
        ph = phase[plank % len(phase)]
        grain = 0.5 + 0.5 * np.sin(freq * (y_m + 0.02 * np.sin(7.0 * x_m + ph)) + 3 * ph)
        shade = 0.82 + 0.12 * grain + 0.06 * np.cos(ph)
        seam = (np.abs((y_m / plank_w) - np.round(y_m / plank_w)) * plank_w) < 0.0015
        shade = np.where(seam, 0.55, shade)
        return np.clip(base[None, :] * shade[:, None], 0.0, 1.0)

    return tex


_DEFAULT_TABLE_TEXTURE = wood_texture(0)


class RgbdRenderer:
    """Renders (model, T_cam_obj) lists to RGB, z-depth, instance mask and normals."""

    def __init__(self, camera: PinholeCamera, max_cache: int = 64):
        self.camera = camera
        H, W = camera.height, camera.width
        vv, uu = np.mgrid[0:H, 0:W]
        uv = np.stack([uu.ravel(), vv.ravel()], axis=1).astype(np.float64)
        xy = camera.normalized_rays(uv)  # undistorted (x/z, y/z): z-depth == ray parameter
        self._dirs_cam = np.concatenate([xy, np.ones((len(xy), 1))], axis=1).astype(np.float32).reshape(H, W, 3)
        self._cache: dict[int, _MeshEntry] = {}
        self._max_cache = int(max_cache)
        self._tex_cache: dict[tuple, tuple[Any, np.ndarray]] = {}

    def for_camera(self, camera: PinholeCamera) -> "RgbdRenderer":
        """A renderer for another camera that shares this one's mesh BVHs and textures (zoomed
        views of one scene, e.g. object-centric crops, without rebuilding any mesh)."""
        other = RgbdRenderer(camera, self._max_cache)
        other._cache, other._tex_cache = self._cache, self._tex_cache
        return other

    # ------------------------------------------------------------------ helpers
    def _entry(self, mesh: Any) -> _MeshEntry:
        key = id(mesh)
        e = self._cache.get(key)
        if e is None or e.mesh is not mesh:
            if len(self._cache) >= self._max_cache:
                self._cache.pop(next(iter(self._cache)))
            e = _build_entry(mesh)
            self._cache[key] = e
        return e

    def _region(self, e: _MeshEntry, T_cam_obj: np.ndarray) -> tuple[int, int, int, int] | None:
        """Pixel box (u0,u1,v0,v1) that contains the object's projection, None if off-screen."""
        H, W = self.camera.height, self.camera.width
        pts = e.corners_m @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]
        if np.all(pts[:, 2] <= _NEAR_M):
            return None
        if np.any(pts[:, 2] <= _NEAR_M):  # straddles the camera plane: cast everything
            return 0, W, 0, H
        uv = self.camera.project(pts)
        if not np.all(np.isfinite(uv)):
            return 0, W, 0, H
        m = 2 + (0.02 * max(W, H) if self.camera.has_distortion else 0)
        u0 = int(max(0, np.floor(uv[:, 0].min() - m)))
        u1 = int(min(W, np.ceil(uv[:, 0].max() + m) + 1))
        v0 = int(max(0, np.floor(uv[:, 1].min() - m)))
        v1 = int(min(H, np.ceil(uv[:, 1].max() + m) + 1))
        if u0 >= u1 or v0 >= v1:
            return None
        return u0, u1, v0, v1

    @staticmethod
    def _check_T(T: np.ndarray, i: int) -> np.ndarray:
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise RenderInputError(f"object {i}: T_cam_obj must be a finite 4x4 matrix; got shape {T.shape}")
        R = T[:3, :3]
        if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
            raise RenderInputError(f"object {i}: T_cam_obj rotation is not orthonormal; orthonormalise it "
                                   "(pose_ros.core.transforms.orthonormalize)")
        return T

    def _background(self, background: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        H, W = self.camera.height, self.camera.width
        if background is None:
            from pose_ros.synth.backgrounds import random_background

            return random_background(H, W, rng)
        bg = np.asarray(background)
        if bg.shape != (H, W, 3):
            raise RenderInputError(f"background must be (H,W,3)=({H},{W},3) uint8; got {bg.shape}; resize it first")
        if bg.dtype != np.uint8:
            raise RenderInputError(f"background must be uint8; got {bg.dtype}; use (img*255).astype(np.uint8)")
        return bg

    # ------------------------------------------------------------------ main entry
    def render(self, objects: Sequence[tuple[Any, np.ndarray]], background: np.ndarray | None = None,
               light_dir_cam: np.ndarray | None = None, ambient: float = 0.4,
               rng: np.random.Generator | None = None, table: TablePlane | None = None) -> RenderResult:
        """Render objects (anything with ``.mesh``: ObjectModel, SceneMesh) at their T_cam_obj.

        ``background`` (H,W,3) uint8 fills pixels without a surface; None draws a procedural one
        from ``rng``. ``light_dir_cam`` points from the surface towards the light; None picks a
        random light above the camera from ``rng`` (fixed default light when rng is None).
        ``table`` adds an analytic textured plane behind/under the objects (instance id -1).
        """
        if not 0.0 <= float(ambient) <= 1.0:
            raise RenderInputError(f"ambient must be in [0,1]; got {ambient}")
        H, W = self.camera.height, self.camera.width
        n = len(objects)
        if light_dir_cam is None:
            if rng is None:
                light = np.array([-0.3, -0.6, -1.0])
            else:
                light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-1.0, 0.2), -1.0])
        else:
            light = np.asarray(light_dir_cam, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(light)) or np.linalg.norm(light) < 1e-9:
            raise RenderInputError("light_dir_cam must be a finite non-zero 3-vector")
        light = light / np.linalg.norm(light)
        rng_bg = rng if rng is not None else np.random.default_rng(0)

        depth = np.full((H, W), np.inf, np.float32)
        inst = np.full((H, W), -1, np.int32)
        prim = np.zeros((H, W), np.int64)
        bary = np.zeros((H, W, 2), np.float32)
        alone = np.zeros(n, np.int64)
        entries: list[_MeshEntry] = []
        Ts: list[np.ndarray] = []
        boxes: list[tuple[int, int, int, int] | None] = []
        for i, item in enumerate(objects):
            try:
                model, T = item
            except (TypeError, ValueError):
                raise RenderInputError(f"object {i}: expected a (model, T_cam_obj) pair") from None
            mesh = getattr(model, "mesh", None)
            if mesh is None:
                raise RenderInputError(f"object {i}: {type(model).__name__} has no .mesh; pass an ObjectModel or SceneMesh")
            T = self._check_T(T, i)
            e = self._entry(mesh)
            entries.append(e)
            Ts.append(T)
            box = self._region(e, T)
            boxes.append(box)
            if box is None:
                continue
            u0, u1, v0, v1 = box
            R_obj_cam = T[:3, :3].T
            t_obj_cam = -R_obj_cam @ T[:3, 3]
            d = self._dirs_cam[v0:v1, u0:u1].reshape(-1, 3) @ R_obj_cam.T.astype(np.float32)
            rays = np.empty((len(d), 6), np.float32)
            rays[:, :3] = t_obj_cam
            rays[:, 3:] = d
            out = e.scene.cast_rays(rays)
            t = out["t_hit"].numpy().reshape(v1 - v0, u1 - u0)
            hit = np.isfinite(t) & (t > _NEAR_M)
            alone[i] = int(hit.sum())
            dz = depth[v0:v1, u0:u1]
            win = hit & (t < dz)
            dz[win] = t[win]
            inst[v0:v1, u0:u1][win] = i
            prim[v0:v1, u0:u1][win] = out["primitive_ids"].numpy().reshape(t.shape)[win]
            bary[v0:v1, u0:u1][win] = out["primitive_uvs"].numpy().reshape(*t.shape, 2)[win]

        rgb = self._background(background, rng_bg).copy()
        normals = np.zeros((H, W, 3), np.float32)
        if table is not None:
            self._render_table(table, depth, inst, rgb, normals, light, ambient)

        light32 = light.astype(np.float32)
        for i, (e, T, box) in enumerate(zip(entries, Ts, boxes)):
            if box is None or alone[i] == 0:
                continue
            u0, u1, v0, v1 = box
            sel_box = inst[v0:v1, u0:u1] == i
            if not sel_box.any():
                continue
            vv, uu = np.nonzero(sel_box)
            vv += v0
            uu += u0
            pid = prim[vv, uu]
            b = bary[vv, uu]
            w = np.empty((len(pid), 3), np.float32)
            w[:, 1:] = b
            w[:, 0] = 1.0 - b[:, 0] - b[:, 1]
            col = np.einsum("nkc,nk->nc", e.face_colors[pid], w)
            R = T[:3, :3].astype(np.float32)
            n_geo = e.fnormals[pid] @ R.T
            n_s = np.einsum("nkc,nk->nc", e.face_vnormals[pid], w) @ R.T
            n_s /= np.maximum(np.linalg.norm(n_s, axis=1, keepdims=True), 1e-9)
            view = self._dirs_cam[vv, uu]
            flip = np.where(np.einsum("ij,ij->i", n_geo, view) > 0, -1.0, 1.0).astype(np.float32)[:, None]
            n_geo *= flip
            n_s *= flip
            # Smooth shading on curved parts; creases (box edges) keep the face normal.
            n_shade = np.where((np.einsum("ij,ij->i", n_s, n_geo) > 0.85)[:, None], n_s, n_geo)
            lam = np.clip(n_shade @ light32, 0.0, 1.0)
            shade = (ambient + (1.0 - ambient) * lam)[:, None]
            rgb[vv, uu] = np.clip(col * shade * 255.0 + 0.5, 0, 255).astype(np.uint8)
            normals[vv, uu] = n_geo

        visible = np.bincount(inst[inst >= 0].ravel(), minlength=n)[:n] if n else np.zeros(0, np.int64)
        frac = np.where(alone > 0, visible / np.maximum(alone, 1), 0.0)
        depth[np.isinf(depth)] = 0.0
        return RenderResult(rgb=rgb, depth_m=depth, instance_mask=inst, visible_fraction=frac,
                            normals_cam=normals, visible_px=visible.astype(np.int64), alone_px=alone,
                            light_dir_cam=light)

    def _table_colors(self, table: TablePlane, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
        """Table coordinates -> (N,3) float32 RGB from a texture baked once and cached."""
        tex = table.texture or _DEFAULT_TABLE_TEXTURE
        sx, sy = float(table.size_xy_m[0]), float(table.size_xy_m[1])
        key = (id(tex), sx, sy, float(table.texel_m))
        hit = self._tex_cache.get(key)
        if hit is None or hit[0] is not tex:
            nx = max(1, int(np.ceil(sx / table.texel_m)) + 1)
            ny = max(1, int(np.ceil(sy / table.texel_m)) + 1)
            gy, gx = np.mgrid[0:ny, 0:nx]
            xs = gx.ravel() * table.texel_m - sx / 2
            ys = gy.ravel() * table.texel_m - sy / 2
            baked = np.asarray(tex(xs, ys), np.float32).reshape(ny, nx, 3)
            if len(self._tex_cache) >= 8:
                self._tex_cache.pop(next(iter(self._tex_cache)))
            hit = (tex, baked)
            self._tex_cache[key] = hit
        baked = hit[1]
        ny, nx = baked.shape[:2]
        ix = np.clip(((x_m + sx / 2) / table.texel_m + 0.5).astype(np.int64), 0, nx - 1)
        iy = np.clip(((y_m + sy / 2) / table.texel_m + 0.5).astype(np.int64), 0, ny - 1)
        return baked[iy, ix]

    def _render_table(self, table: TablePlane, depth: np.ndarray, inst: np.ndarray, rgb: np.ndarray,
                      normals: np.ndarray, light: np.ndarray, ambient: float) -> None:
        """Intersect every pixel ray with the table rectangle; fill where it is the nearest surface."""
        T = self._check_T(table.T_cam_table, -1)
        R = T[:3, :3].astype(np.float32)
        p0 = T[:3, 3].astype(np.float32)
        dirs = self._dirs_cam.reshape(-1, 3)
        proj = dirs @ R  # (N,3): ray direction in table axes
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (p0 @ R[:, 2]) / proj[:, 2]
        hx, hy = table.size_xy_m[0] / 2, table.size_xy_m[1] / 2
        x = t * proj[:, 0] - p0 @ R[:, 0]
        y = t * proj[:, 1] - p0 @ R[:, 1]
        flat_depth = depth.reshape(-1)
        ok = (t > _NEAR_M) & (np.abs(x) <= hx) & (np.abs(y) <= hy) & (t < flat_depth)
        idx = np.flatnonzero(ok)
        flat_depth[idx] = t[idx]
        inst.reshape(-1)[idx] = -1
        n_cam = R[:, 2] if float(R[:, 2] @ p0) < 0 else -R[:, 2]  # the side facing the camera
        shade = np.float32(255.0 * (ambient + (1 - ambient) * max(0.0, float(n_cam @ light))))
        col = self._table_colors(table, x[idx], y[idx]) * shade + np.float32(0.5)
        rgb.reshape(-1, 3)[idx] = np.minimum(col, 255.0).astype(np.uint8)
        np.copyto(normals, n_cam.astype(np.float32), where=ok.reshape(depth.shape)[..., None])
