"""Synthetic training data for the keypoint network: scene sampling, rendering, targets, datasets.

Why rendered at the network input size: on a 2-core CPU rendering and training compete for the
same cores, so scenes are ray cast directly at the network resolution (e.g. 320x240) and either
pre-rendered once to disk (``prerender``: uncompressed .npy shards, memory-mapped, reusable across
runs and resumes) or rendered on the fly (``OnTheFlyDataset``, for GPUs with idle CPU). Variety
comes from: several objects and instances per scene, random distractor primitives, tabletop scenes
(textured table, resting poses, camera 20-85 deg above the table) and free-floating scenes
(uniform rotations, backdrop plane), random backgrounds, lights, focal lengths, truncation at the
border, sensor-like depth noise (``synth.noise.DepthNoiseModel``) and, per epoch, colour jitter,
blur, pixel noise and occasional depth dropout (so RGB-only input still works).

Symmetric objects: the target pose is replaced by the symmetry-equivalent pose closest to the
camera frame (``canonical_pose``), so the keypoint directions the network must learn are a
function of the image, not of an arbitrary choice among equivalent poses.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.transforms import invert_T, look_at, random_rotation

__all__ = [
    "SceneConfig", "full_resolution_scene_config", "scene_config_of_model", "RawSample", "canonical_pose", "sample_scene", "SceneDraw", "SceneRenderer", "make_targets", "augment",
    "prerender", "PrerenderedDataset", "OnTheFlyDataset", "DataDirError", "read_data_meta",
]


class DataDirError(ValueError):
    """A pre-rendered data directory is missing, incomplete or for other objects."""


@dataclass
class SceneConfig:
    width: int = 320
    height: int = 240
    fx_range: tuple[float, float] = (250.0, 330.0)      # at `width` (x2 for 640x480 cameras)
    objects_range: tuple[int, int] = (1, 6)             # target objects per scene
    distractors_range: tuple[int, int] = (0, 3)
    distance_range_m: tuple[float, float] = (0.35, 1.4)
    tabletop_prob: float = 0.6
    upright_prob: float = 0.5                          # tabletop: model +z = table normal, random yaw
    depth_noise: bool = True
    # The user's camera (``--camera``): K at its own resolution, scaled into the network input as the
    # estimator letterboxes it; fx varies by +-camera_fx_jitter around it. None: fx_range above.
    camera_K: tuple[float, ...] | None = None
    camera_size: tuple[int, int] | None = None         # (width, height) of that camera
    camera_fx_jitter: float = 0.08
    # Real photos (``synth.photo_bank``, training part only) for backgrounds, table tops, backdrops
    # and distractor textures; empty: procedural textures only.
    photo_dirs: tuple[str, ...] = ()
    photo_prob: float = 0.85                           # a surface takes a photo instead of a procedural texture
    empty_prob: float = 0.08                           # scenes with distractors only (no target object)
    background_depth_prob: float = 0.75                # pixels with no surface get a far wall's depth

    def __post_init__(self) -> None:
        self.photo_dirs = tuple(str(d) for d in self.photo_dirs)
        if self.camera_K is not None:
            self.camera_K = tuple(float(v) for v in np.asarray(self.camera_K, np.float64).ravel())
            if len(self.camera_K) != 9 or self.camera_size is None:
                raise ValueError("camera_K needs 9 numbers and camera_size (width, height)")
            self.camera_size = (int(self.camera_size[0]), int(self.camera_size[1]))

    def to_dict(self) -> dict:
        return asdict(self)


def full_resolution_scene_config(cfg: Any) -> Any:
    """The first stage's scene settings at the user's camera resolution (640x480 without one): score
    calibration and the crop stage see frames as the camera delivers them, not the network's
    letterboxed input."""
    from dataclasses import replace

    if cfg.camera_K is not None and cfg.camera_size is not None:
        return replace(cfg, width=int(cfg.camera_size[0]), height=int(cfg.camera_size[1]))
    s = 640.0 / cfg.width
    return replace(cfg, width=640, height=int(round(cfg.height * s)),
                   fx_range=(cfg.fx_range[0] * s, cfg.fx_range[1] * s))


def scene_config_of_model(loaded: Any) -> Any:
    """The scenes a model file's first stage was trained on, at the camera's resolution."""
    raw = loaded.raw.get("training", {}).get("scene_config")
    if raw is None:
        raise ValueError("the model file records no training scene settings (scene_config); train it with "
                         "`pose-ros train` first")
    known = set(SceneConfig.__dataclass_fields__)
    sc = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in known}
    return full_resolution_scene_config(SceneConfig(**sc))


@dataclass
class RawSample:
    """One rendered scene at the render (= network input) resolution."""

    rgb: np.ndarray              # (H,W,3) uint8
    depth_m: np.ndarray          # (H,W) float32, noisy
    inst: np.ndarray             # (H,W) int16: index into cls/T, -1 none
    cls: np.ndarray              # (M,) 0-based class index, -1 = distractor
    T_cam_obj: np.ndarray        # (M,4,4)
    K: np.ndarray                # (3,3)


def canonical_pose(T_cam_obj: np.ndarray, symmetries: Sequence[np.ndarray]) -> np.ndarray:
    """Among T @ S (S in symmetries, identity included) the one whose rotation is closest to I."""
    if len(symmetries) <= 1:
        return T_cam_obj
    S = np.asarray(symmetries)                                  # (n,4,4)
    R = np.einsum("ij,njk->nik", T_cam_obj[:3, :3], S[:, :3, :3])
    tr = np.trace(R, axis1=1, axis2=2)                          # max trace = min angle to I
    return T_cam_obj @ S[int(np.argmax(tr))]


# ----------------------------------------------------------------------------- scene sampling
def _make_distractors(rng: np.random.Generator, n: int = 16) -> list[Any]:
    import trimesh

    from pose_ros.synth.renderer import SceneMesh

    out = []
    for i in range(n):
        kind = i % 4
        s = rng.uniform(0.03, 0.15)
        if kind == 0:
            m = trimesh.creation.box(extents=rng.uniform(0.3, 1.0, 3) * s)
        elif kind == 1:
            m = trimesh.creation.cylinder(radius=0.3 * s, height=s, sections=24)
        elif kind == 2:
            m = trimesh.creation.icosphere(subdivisions=2, radius=0.4 * s)
        else:
            m = trimesh.creation.capsule(height=s, radius=0.2 * s)
        base = rng.uniform(0, 255, 3)
        cols = np.clip(base + rng.normal(0, 25, (len(m.vertices), 3)), 0, 255).astype(np.uint8)
        m.visual.vertex_colors = np.concatenate([cols, np.full((len(cols), 1), 255, np.uint8)], 1)
        out.append(SceneMesh(f"distractor_{i}", m))
    return out


def _photo_distractors(rng: np.random.Generator, photos: Any, n: int) -> list[Any]:
    """``n`` clutter meshes (boxes, cards, cylinders, spheres, capsules; 3-30 cm) wearing real photo
    crops: occluders and look-alikes with real-image texture, new for every scene.

    The primitives are subdivided (~1-3k vertices) so the per-vertex photo colours show detail at the
    render resolution; colours come from a planar projection of the vertices onto a photo crop.
    """
    import trimesh

    from pose_ros.synth.renderer import SceneMesh

    out = []
    for i in range(int(n)):
        kind = int(rng.integers(0, 5))
        s = float(rng.uniform(0.03, 0.30))
        if kind == 0:
            m = trimesh.creation.box(extents=rng.uniform(0.3, 1.0, 3) * s)
        elif kind == 1:                                   # card / book / sheet
            m = trimesh.creation.box(extents=[s, s * rng.uniform(0.5, 1.4), s * rng.uniform(0.01, 0.12)])
        elif kind == 2:
            m = trimesh.creation.cylinder(radius=rng.uniform(0.15, 0.5) * s, height=s, sections=32)
        elif kind == 3:
            m = trimesh.creation.icosphere(subdivisions=3, radius=0.4 * s)
        else:
            m = trimesh.creation.capsule(height=s, radius=rng.uniform(0.1, 0.3) * s, count=[24, 24])
        edge = 0.04 * s
        v, f = trimesh.remesh.subdivide_to_size(m.vertices, m.faces, max_edge=edge, max_iter=6)
        m = trimesh.Trimesh(v, f, process=False)
        img = photos.random_crop(rng, 96, 96, min_scale=0.2).astype(np.float32)
        ax = rng.permutation(3)[:2]
        lo, hi = m.vertices.min(0), m.vertices.max(0)
        uv = (m.vertices[:, ax] - lo[ax]) / np.maximum(hi[ax] - lo[ax], 1e-9)
        px = np.clip(np.rint(uv * 95), 0, 95).astype(np.int64)
        cols = img[px[:, 1], px[:, 0]]
        rgba = np.concatenate([np.clip(cols, 0, 255).astype(np.uint8), np.full((len(cols), 1), 255, np.uint8)], 1)
        m.visual.vertex_colors = rgba
        out.append(SceneMesh(f"photo_distractor_{i}", m))
    return out


def _background_depth(depth_m: np.ndarray, K: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixels without a surface get the depth of a far, tilted wall behind the scene (real rooms
    have depth everywhere; an empty background taught the network that "no depth" = background)."""
    empty = depth_m <= 0
    if not empty.any():
        return depth_m
    H, W = depth_m.shape
    valid = depth_m[~empty]
    z_back = (float(valid.max()) if valid.size else 1.0) + float(rng.uniform(0.2, 2.5))
    n = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    n /= np.linalg.norm(n)
    vv, uu = np.nonzero(empty)
    x = (uu - K[0, 2]) / K[0, 0]
    y = (vv - K[1, 2]) / K[1, 1]
    dot = n[0] * x + n[1] * y + n[2]
    z = z_back * n[2] / np.maximum(dot, 0.2)          # the plane n . X = z_back * n_z through (0, 0, z_back)
    out = depth_m.copy()
    out[vv, uu] = np.clip(z, 0.2, 8.0).astype(np.float32)
    return out


def _image_texture(img: np.ndarray, size_xy_m: tuple[float, float]):
    """Table texture from an RGB image stretched over the table rectangle."""
    H, W = img.shape[:2]
    sx, sy = size_xy_m
    f = img.astype(np.float32) / 255.0

    def tex(x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
        u = np.clip(((x_m / sx) + 0.5) * (W - 1), 0, W - 1).astype(np.int64)
        v = np.clip(((y_m / sy) + 0.5) * (H - 1), 0, H - 1).astype(np.int64)
        return f[v, u]

    return tex


def _rest_on_table(R_table_obj: np.ndarray, verts_m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """T_table_obj with the lowest vertex touching z=0 at table position xy."""
    z_min = float((verts_m @ R_table_obj.T)[:, 2].min())
    T = np.eye(4)
    T[:3, :3] = R_table_obj
    T[:3, 3] = [xy[0], xy[1], -z_min]
    return T


def _yaw(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def sample_scene(models: Sequence[Any], camera: PinholeCamera, cfg: SceneConfig, rng: np.random.Generator,
                 distractors: Sequence[Any] = (), photos: Any = None, empty: bool = False,
                 ) -> tuple[list[tuple[int, Any, np.ndarray]], Any]:
    """Random scene: [(class index or -1, renderable, T_cam_obj)], TablePlane (or None).

    ``photos`` (a ``synth.photo_bank.PhotoBank``) gives the table top or backdrop a real photo with
    probability ``cfg.photo_prob``; ``empty`` places distractors only.
    """
    from pose_ros.synth.backgrounds import random_background
    from pose_ros.synth.renderer import TablePlane, wood_texture

    n_obj = 0 if empty else int(rng.integers(cfg.objects_range[0], cfg.objects_range[1] + 1))
    n_dis = int(rng.integers(cfg.distractors_range[0], cfg.distractors_range[1] + 1)) if distractors else 0
    if empty:
        n_dis = max(n_dis, 1)
    picks: list[tuple[int, Any]] = [(int(c), models[int(c)]) for c in rng.integers(0, len(models), n_obj)]
    picks += [(-1, distractors[int(i)]) for i in rng.integers(0, len(distractors), n_dis)] if n_dis else []
    W, H = camera.width, camera.height
    out: list[tuple[int, Any, np.ndarray]] = []
    tex_kind = rng.random()
    size = (2.5, 2.5)
    if photos is not None and rng.random() < cfg.photo_prob:
        texture = _image_texture(photos.random_crop(rng, 384, 384, min_scale=0.25), size)
    else:
        texture = (wood_texture(int(rng.integers(0, 1 << 30))) if tex_kind < 0.4
                   else _image_texture(random_background(256, 256, rng), size))

    if rng.random() < cfg.tabletop_prob:
        dist = rng.uniform(*cfg.distance_range_m)
        elev = np.deg2rad(rng.uniform(20, 85))
        azim = rng.uniform(0, 2 * np.pi)
        eye = dist * np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
        target = np.array([rng.normal(0, 0.05), rng.normal(0, 0.05), 0.0])
        T_cam_table = invert_T(look_at(eye, target, (0.0, 0.0, 1.0)))
        T_table_cam = invert_T(T_cam_table)
        placed: list[tuple[np.ndarray, float]] = []
        for cls, obj in picks:
            verts = np.asarray(obj.mesh.vertices)
            radius = 0.5 * float(np.linalg.norm(verts.max(0) - verts.min(0)))
            for _ in range(20):
                uv = np.array([rng.uniform(-0.05, 1.05) * W, rng.uniform(-0.05, 1.05) * H])
                ray = np.linalg.solve(camera.K, np.array([uv[0], uv[1], 1.0]))
                d_tab = T_table_cam[:3, :3] @ ray
                o_tab = T_table_cam[:3, 3]
                if d_tab[2] > -1e-6:
                    continue
                xy = (o_tab + (-o_tab[2] / d_tab[2]) * d_tab)[:2]
                if all(np.linalg.norm(xy - p) > 0.7 * (radius + r) for p, r in placed):
                    break
            else:
                continue
            R = _yaw(rng.uniform(0, 2 * np.pi)) if (cls >= 0 and rng.random() < cfg.upright_prob) else random_rotation(rng)
            T_table_obj = _rest_on_table(R, verts, xy)
            placed.append((xy, radius))
            out.append((cls, obj, T_cam_table @ T_table_obj))
        table = TablePlane(T_cam_table, size_xy_m=size, texture=texture, texel_m=0.004)
    else:
        z_far = 0.0
        for cls, obj in picks:
            verts = np.asarray(obj.mesh.vertices)
            diam = float(np.linalg.norm(verts.max(0) - verts.min(0)))
            z = rng.uniform(*cfg.distance_range_m) * (0.5 + diam / 0.3) ** 0.5
            u, v = rng.uniform(-0.05, 1.05) * W, rng.uniform(-0.05, 1.05) * H
            xyz = z * np.linalg.solve(camera.K, np.array([u, v, 1.0]))
            T = np.eye(4)
            T[:3, :3] = random_rotation(rng)
            centre = 0.5 * (verts.max(0) + verts.min(0))
            T[:3, 3] = xyz - T[:3, :3] @ centre
            out.append((cls, obj, T))
            z_far = max(z_far, z + diam)
        # Backdrop plane behind everything, tilted, so background pixels have depth like a real room.
        Rb = _tilt(rng)
        Tb = np.eye(4)
        Tb[:3, :3] = Rb
        Tb[:3, 3] = [0.0, 0.0, z_far + rng.uniform(0.05, 0.6)]
        table = TablePlane(Tb, size_xy_m=(8.0, 8.0), texture=texture, texel_m=0.01)
    return out, table


def _tilt(rng: np.random.Generator) -> np.ndarray:
    """Rotation whose z axis points roughly along -camera z (a plane facing the camera)."""
    from scipy.spatial.transform import Rotation

    ax = rng.normal(0, 1, 3)
    ax[2] = 0
    ax /= max(np.linalg.norm(ax), 1e-9)
    tilt = Rotation.from_rotvec(ax * np.deg2rad(rng.uniform(0, 50))).as_matrix()
    flip = np.diag([1.0, -1.0, -1.0])           # plane normal (+z) faces the camera
    return tilt @ flip


@dataclass
class SceneDraw:
    """A sampled scene before rendering: camera index, [(class or -1, renderable, T_cam_obj)], table,
    background photo at the camera's size (None: procedural)."""

    camera_index: int
    scene: list
    table: Any
    background: np.ndarray | None


class SceneRenderer:
    """Renders RawSamples; one RgbdRenderer per focal length bucket (keeps mesh BVH caches warm)."""

    def __init__(self, models: Sequence[Any], cfg: SceneConfig, symmetries: Sequence[Sequence[np.ndarray]] | None = None,
                 num_cameras: int = 4, seed: int = 0):
        from pose_ros.synth.noise import DepthNoiseModel
        from pose_ros.synth.renderer import RgbdRenderer

        self.models = list(models)
        self.cfg = cfg
        self.cameras = render_cameras(cfg, num_cameras, seed)
        self.renderers = [RgbdRenderer(c) for c in self.cameras]
        self.distractors = _make_distractors(np.random.default_rng(seed + 1))
        self.photos = None
        if cfg.photo_dirs:
            from pose_ros.synth.photo_bank import PhotoBank

            self.photos = PhotoBank.from_dirs(cfg.photo_dirs, split="train", check_readable=False)
        self.noise = DepthNoiseModel()
        self.symmetries = [list(s) for s in symmetries] if symmetries is not None else [
            m.symmetry.transforms(72) for m in self.models]

    def sample(self, rng: np.random.Generator, empty: bool | None = None) -> SceneDraw:
        """A random scene and the camera that sees it, not yet rendered (``crop_rendering`` renders
        the same scenes through zoomed cameras)."""
        ci = int(rng.integers(0, len(self.cameras)))
        cam = self.cameras[ci]
        if empty is None:
            empty = rng.random() < self.cfg.empty_prob
        distractors: list[Any] = list(self.distractors)
        background = None
        if self.photos is not None:
            distractors = _photo_distractors(rng, self.photos, 6) + distractors[:4]
            if rng.random() < self.cfg.photo_prob:
                background = self.photos.random_crop(rng, cam.width, cam.height)
        for _ in range(5):
            scene, table = sample_scene(self.models, cam, self.cfg, rng, distractors, photos=self.photos, empty=empty)
            if empty or any(c >= 0 for c, _, _ in scene):
                break
        return SceneDraw(ci, scene, table, background)

    def render(self, rng: np.random.Generator) -> RawSample:
        draw = self.sample(rng)
        cam, ren, scene = self.cameras[draw.camera_index], self.renderers[draw.camera_index], draw.scene
        res = ren.render([(obj, T) for _, obj, T in scene], background=draw.background, rng=rng, table=draw.table)
        depth = res.depth_m
        if rng.random() < self.cfg.background_depth_prob:
            depth = _background_depth(depth, cam.K, rng)
        if self.cfg.depth_noise:
            depth = self.noise.apply(depth, res.normals_cam, rng=rng, K=cam.K)
        cls = np.array([c for c, _, _ in scene], np.int16)
        Ts = np.array([canonical_pose(T, self.symmetries[c]) if c >= 0 else T for c, _, T in scene]).reshape(-1, 4, 4)
        return RawSample(res.rgb, depth.astype(np.float32), res.instance_mask.astype(np.int16), cls, Ts, cam.K.copy())


def render_cameras(cfg: SceneConfig, num_cameras: int = 4, seed: int = 0) -> list[PinholeCamera]:
    """The render cameras at the network input size: the user's camera letterboxed into it (as the
    estimator does) with fx varied by +-``camera_fx_jitter``, else fx spread over ``fx_range``."""
    rng = np.random.default_rng(seed + 7919)
    cams = []
    if cfg.camera_K is not None:
        K0 = np.asarray(cfg.camera_K, np.float64).reshape(3, 3)
        w0, h0 = cfg.camera_size
        s = min(cfg.width / w0, cfg.height / h0)
        for g in np.linspace(1.0 - cfg.camera_fx_jitter, 1.0 + cfg.camera_fx_jitter, num_cameras):
            K = np.array([[K0[0, 0] * s * g, 0, (K0[0, 2] + 0.5) * s - 0.5],
                          [0, K0[1, 1] * s * g, (K0[1, 2] + 0.5) * s - 0.5], [0, 0, 1.0]])
            cams.append(PinholeCamera(K, cfg.width, cfg.height))
        return cams
    for f in np.linspace(cfg.fx_range[0], cfg.fx_range[1], num_cameras):
        K = np.array([[f, 0, cfg.width / 2 - 0.5 + rng.normal(0, 3)], [0, f, cfg.height / 2 - 0.5 + rng.normal(0, 3)],
                      [0, 0, 1.0]])
        cams.append(PinholeCamera(K, cfg.width, cfg.height))
    return cams


# ----------------------------------------------------------------------------- targets
def make_targets(sample: RawSample, keypoints_m: Sequence[np.ndarray], output_stride: int = 2,
                 min_pixels: int = 4) -> dict[str, np.ndarray]:
    """Per-pixel targets at the output resolution.

    Returns seg (h,w) int64 (0 bg, c+1 class), vec (K,2,h,w) unit vectors to the pixel's instance
    keypoints, centre (2,h,w) offset to the projected centre keypoint / CENTRE_OFFSET_SCALE_PX,
    inst (h,w) int64 (-1 none) and kp_uv (M,K,2) projected keypoints (output pixels).
    """
    from pose_ros.objects.network import CENTRE_OFFSET_SCALE_PX

    s = 1.0 / output_stride
    H, W = sample.inst.shape
    h, w = H // output_stride, W // output_stride
    inst = sample.inst[:h * output_stride:output_stride, :w * output_stride:output_stride].astype(np.int64)
    Kp = sample.K.copy()
    Kp[0, :] *= s
    Kp[1, :] *= s
    Kp[0, 2] = (sample.K[0, 2] + 0.5) * s - 0.5
    Kp[1, 2] = (sample.K[1, 2] + 0.5) * s - 0.5
    nk = len(keypoints_m[0])
    M = len(sample.cls)
    seg = np.zeros((h, w), np.int64)
    vec = np.zeros((nk, 2, h, w), np.float32)
    centre = np.zeros((2, h, w), np.float32)
    kp_uv = np.full((M, nk, 2), np.nan, np.float32)
    inst_out = np.full((h, w), -1, np.int64)
    for m in range(M):
        c = int(sample.cls[m])
        if c < 0:
            continue
        vs, us = np.nonzero(inst == m)
        T = sample.T_cam_obj[m]
        pc = keypoints_m[c] @ T[:3, :3].T + T[:3, 3]
        uvk = (pc @ Kp.T)
        uvk = uvk[:, :2] / uvk[:, 2:3]
        kp_uv[m] = uvk
        if len(vs) < min_pixels:
            continue
        seg[vs, us] = c + 1
        inst_out[vs, us] = m
        d = uvk[None, :, :] - np.stack([us, vs], 1)[:, None, :].astype(np.float64)    # (n,K,2)
        n = np.linalg.norm(d, axis=2, keepdims=True)
        dn = d / np.maximum(n, 1e-6)
        vec[:, :, vs, us] = dn.transpose(1, 2, 0)
        centre[:, vs, us] = (d[:, -1, :] / CENTRE_OFFSET_SCALE_PX).T
    return {"seg": seg, "vec": vec, "centre": centre, "inst": inst_out, "kp_uv": kp_uv}


def _camera_photometry(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a real camera does to colour (float RGB 0-255 in, out): white balance / colour
    temperature, exposure through a gamma curve, and lens vignetting."""
    t = float(rng.uniform(-0.25, 0.25))                   # warm (+) / cold (-) light
    x = x * np.array([1.0 + t, 1.0, 1.0 - t], np.float32)[None, None, :]
    if rng.random() < 0.5:
        g = float(np.exp(rng.uniform(-0.35, 0.35)))
        x = 255.0 * np.power(np.clip(x, 0, 255) / 255.0, g)
    if rng.random() < 0.5:
        H, W = x.shape[:2]
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        r2 = ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / float((W / 2) ** 2 + (H / 2) ** 2)
        x = x * (1.0 - float(rng.uniform(0.1, 0.45)) * r2)[..., None]
    return x


def augment(rgb: np.ndarray, depth_m: np.ndarray, rng: np.random.Generator,
            depth_drop_prob: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Photometric + depth augmentation (cheap; applied per epoch on top of the baked render)."""
    import cv2

    x = rgb.astype(np.float32)
    # brightness / contrast / per-channel gain / saturation
    x = x * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
    x = x * rng.uniform(0.85, 1.15, 3)[None, None, :]
    grey = x.mean(2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.6, 1.3)
    # hue rotation of small angle on a fraction of samples
    if rng.random() < 0.3:
        hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-8, 9))) % 180
        x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    r = rng.random()
    if r < 0.3:
        k = float(rng.uniform(0.3, 1.2))
        x = cv2.GaussianBlur(x, (0, 0), k)
    elif r < 0.4:
        L = int(rng.integers(3, 7))
        ker = np.zeros((L, L), np.float32)
        ker[L // 2, :] = 1.0 / L
        M = cv2.getRotationMatrix2D(((L - 1) / 2, (L - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        ker = cv2.warpAffine(ker, M, (L, L))
        x = cv2.filter2D(x, -1, ker / max(ker.sum(), 1e-6))
    x = _camera_photometry(x, rng)
    x = x + rng.normal(0, rng.uniform(0, 8), x.shape).astype(np.float32)
    rgb_out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:                                # compressed streams (JPEG, image_transport)
        ok, buf = cv2.imencode(".jpg", rgb_out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 92))])
        if ok:
            rgb_out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    d = depth_m.copy()
    if rng.random() < depth_drop_prob:
        d[:] = 0.0
    elif rng.random() < 0.3:
        # random rectangular holes (specular / absorbing surfaces)
        H, W = d.shape
        for _ in range(int(rng.integers(1, 4))):
            hh, ww = int(rng.integers(4, H // 4)), int(rng.integers(4, W // 4))
            y0, x0 = int(rng.integers(0, H - hh)), int(rng.integers(0, W - ww))
            d[y0:y0 + hh, x0:x0 + ww] = 0.0
    return rgb_out, d


def sample_to_tensors(sample: RawSample, keypoints_m: Sequence[np.ndarray], net_cfg: Any,
                      rng: np.random.Generator | None, crop: tuple[int, int] | None = None) -> dict[str, Any]:
    """Network input + targets (numpy; the DataLoader's collate makes tensors).

    ``crop`` (w, h): train on a random window (mostly centred near a random visible object) instead
    of the whole frame. The network is fully convolutional and every target is translation
    equivariant, so crops are ~(crop area / frame area) cheaper per sample at the same learning
    signal on objects. The depth channel is normalised on the full frame before cropping.
    """
    from pose_ros.objects.network import prepare_input

    rgb, depth = sample.rgb, sample.depth_m
    if rng is not None:
        rgb, depth = augment(rgb, depth, rng)
    st = net_cfg.output_stride
    t = make_targets(sample, keypoints_m, st)
    x = prepare_input(rgb, depth if net_cfg.use_depth else None, net_cfg)
    seg, vec, centre = t["seg"], t["vec"], t["centre"]
    if crop is not None:
        cw, ch = int(crop[0]), int(crop[1])
        H, W = x.shape[1:]
        if cw % 8 or ch % 8 or cw > W or ch > H:
            raise ValueError(f"crop {cw}x{ch} must be multiples of 8 within the {W}x{H} input")
        r = rng if rng is not None else np.random.default_rng(0)
        ids = [m for m in np.unique(t["inst"]) if m >= 0]
        if ids and r.random() < 0.85:
            vs, us = np.nonzero(t["inst"] == ids[int(r.integers(0, len(ids)))])
            cu = us.mean() * st + r.uniform(-cw / 3, cw / 3)
            cv = vs.mean() * st + r.uniform(-ch / 3, ch / 3)
        else:
            cu, cv = r.uniform(0, W), r.uniform(0, H)
        x0 = int(np.clip(cu - cw / 2, 0, W - cw)) // st * st
        y0 = int(np.clip(cv - ch / 2, 0, H - ch)) // st * st
        x = x[:, y0:y0 + ch, x0:x0 + cw]
        o0, o1 = x0 // st, y0 // st
        seg = seg[o1:o1 + ch // st, o0:o0 + cw // st]
        vec = vec[:, :, o1:o1 + ch // st, o0:o0 + cw // st]
        centre = centre[:, o1:o1 + ch // st, o0:o0 + cw // st]
    return {"input": np.ascontiguousarray(x), "seg": np.ascontiguousarray(seg), "vec": np.ascontiguousarray(vec),
            "centre": np.ascontiguousarray(centre)}


# ----------------------------------------------------------------------------- pre-rendered data on disk
SHARD = 64


def _render_shard(args: tuple) -> int:
    (out_dir, shard, start, count, seed, models, cfg) = args
    import torch

    torch.set_num_threads(1)
    ren = SceneRenderer(models, cfg, seed=seed)
    rgbs, depths, insts, metas = [], [], [], []
    for i in range(start, start + count):
        s = ren.render(np.random.default_rng([seed, i]))
        rgbs.append(s.rgb)
        depths.append(np.clip(np.round(s.depth_m * 1e4), 0, 65535).astype(np.uint16))   # 0.1 mm units
        insts.append(s.inst.astype(np.int8))
        metas.append((s.cls, s.T_cam_obj, s.K))
    M = max(len(m[0]) for m in metas)
    cls = np.full((count, M), -2, np.int16)
    Ts = np.zeros((count, M, 4, 4))
    Ks = np.zeros((count, 3, 3))
    for j, (c, T, K) in enumerate(metas):
        cls[j, :len(c)] = c
        Ts[j, :len(c)] = T
        Ks[j] = K
    d = Path(out_dir)
    np.save(d / f"rgb_{shard:05d}.npy", np.stack(rgbs))
    np.save(d / f"depth_{shard:05d}.npy", np.stack(depths))
    np.save(d / f"inst_{shard:05d}.npy", np.stack(insts))
    np.savez(d / f"meta_{shard:05d}.npz", cls=cls, T=Ts, K=Ks)
    return count


def prerender(models: Sequence[Any], out_dir: str | Path, num_images: int, seed: int = 0,
              cfg: SceneConfig | None = None, workers: int = 2, progress: bool = True) -> Path:
    """Render ``num_images`` scenes into ``out_dir`` (shards of 64); skips shards already there.

    Deterministic: sample i always comes from rng([seed, i]), so an interrupted run resumes and
    two runs with the same seed produce the same data.
    """
    from pose_ros.objects.model_file import mesh_hash
    from pose_ros.objects.shard_jobs import run_shard_jobs

    cfg = cfg or SceneConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pose_ros.train_shards", "version": 1, "num_images": int(num_images), "seed": int(seed),
            "shard_size": SHARD, "scene_config": cfg.to_dict(),
            "objects": [{"name": m.name, "obj_id": int(m.obj_id), "mesh_hash": mesh_hash(m.mesh)} for m in models]}
    meta = json.loads(json.dumps(meta))          # tuples -> lists, as read back from disk
    meta_path = out / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("objects") != meta["objects"] or old.get("seed") != seed or old.get("scene_config") != meta["scene_config"]:
            raise DataDirError(f"{out} holds data for other objects/seed/settings; choose another --data-dir or delete it")
    meta_path.write_text(json.dumps(meta, indent=1))
    jobs = []
    for shard, start in enumerate(range(0, num_images, SHARD)):
        count = min(SHARD, num_images - start)
        if (out / f"meta_{shard:05d}.npz").exists():
            continue
        jobs.append((str(out), shard, start, count, seed, list(models), cfg))
    run_shard_jobs(_render_shard, jobs, num_images, num_images - sum(j[3] for j in jobs), workers, progress,
                   desc="render", unit="img")
    (out / "done").write_text(str(num_images))
    return out


def read_data_meta(data_dir: str | Path) -> dict:
    p = Path(data_dir) / "meta.json"
    if not p.is_file():
        raise DataDirError(f"{data_dir}: no meta.json; pre-render it with `pose-ros train --data-dir ...` first")
    return json.loads(p.read_text())


class PrerenderedDataset:
    """torch-style Dataset over pre-rendered shards (memory-mapped; safe with DataLoader workers)."""

    def __init__(self, data_dir: str | Path, keypoints_m: Sequence[np.ndarray], net_cfg: Any,
                 augment_data: bool = True, seed: int = 0, limit: int | None = None,
                 crop: tuple[int, int] | None = None):
        self.crop = crop
        self.dir = Path(data_dir)
        meta = read_data_meta(self.dir)
        shards = sorted(self.dir.glob("meta_*.npz"))
        if not shards:
            raise DataDirError(f"{self.dir}: no rendered shards")
        self.keypoints_m = [np.asarray(k, np.float64) for k in keypoints_m]
        self.net_cfg = net_cfg
        self.augment = augment_data
        self.seed = seed
        self.epoch = 0
        self.index: list[tuple[int, int]] = []
        self.metas = []
        for si, p in enumerate(shards):
            m = np.load(p)
            self.metas.append({k: m[k] for k in m.files})
            self.index += [(si, j) for j in range(len(m["K"]))]
        if limit is not None:
            self.index = self.index[:limit]
        self.shard_ids = [int(p.stem.split("_")[1]) for p in shards]
        self.meta = meta
        self._mm: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _arr(self, kind: str, si: int) -> np.ndarray:
        key = (kind, si)
        if key not in self._mm:
            self._mm[key] = np.load(self.dir / f"{kind}_{self.shard_ids[si]:05d}.npy", mmap_mode="r")
        return self._mm[key]

    def raw(self, i: int) -> RawSample:
        si, j = self.index[i]
        meta = self.metas[si]
        cls = meta["cls"][j]
        n = int((cls >= -1).sum())
        return RawSample(np.array(self._arr("rgb", si)[j]), self._arr("depth", si)[j].astype(np.float32) * 1e-4,
                         np.array(self._arr("inst", si)[j]).astype(np.int16), cls[:n].copy(), meta["T"][j, :n].copy(),
                         meta["K"][j].copy())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.augment else None
        return sample_to_tensors(self.raw(i), self.keypoints_m, self.net_cfg, rng, self.crop)


class OnTheFlyDataset:
    """Renders every sample when asked (seeded by index and epoch); renderer built per worker process."""

    def __init__(self, models: Sequence[Any], keypoints_m: Sequence[np.ndarray], net_cfg: Any, length: int,
                 seed: int = 0, cfg: SceneConfig | None = None, augment_data: bool = True,
                 crop: tuple[int, int] | None = None):
        self.crop = crop
        self.models = list(models)
        self.keypoints_m = [np.asarray(k, np.float64) for k in keypoints_m]
        self.net_cfg = net_cfg
        self.length = int(length)
        self.seed = seed
        self.cfg = cfg or SceneConfig(width=net_cfg.input_width, height=net_cfg.input_height)
        self.augment = augment_data
        self.epoch = 0
        self._ren: SceneRenderer | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def raw(self, i: int) -> RawSample:
        if self._ren is None or self._pid != os.getpid():
            self._ren = SceneRenderer(self.models, self.cfg, seed=self.seed)
            self._pid = os.getpid()
        return self._ren.render(np.random.default_rng([self.seed, self.epoch, i]))

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, i, 1]) if self.augment else None
        return sample_to_tensors(self.raw(i), self.keypoints_m, self.net_cfg, rng, self.crop)


# ----------------------------------------------------------------------------- BOP test set
def render_bop_testset(models: Sequence[Any], out_dir: str | Path, num_images: int, seed: int = 2_000_003,
                       camera: PinholeCamera | None = None, objects_range: tuple[int, int] = (2, 5),
                       progress: bool = True) -> Path:
    """Write a synthetic RGB-D test split in BOP format: ``out_dir/000000/{rgb,depth,mask_visib,...}``.

    Deliberately a *different* generator than training (``synth.TabletopSceneSampler``: physically
    stable resting poses, its own distractors and camera model) at the full camera resolution
    (default 640x480, fx=fy=600), with sensor depth noise and a seed disjoint from training, so the
    scores measure generalisation to unseen scenes, not memorisation.
    """
    from tqdm import tqdm

    from pose_ros.eval.bop_io import BopFrame, BopSceneWriter, GtInstance
    from pose_ros.synth.noise import DepthNoiseModel
    from pose_ros.synth.renderer import RgbdRenderer
    from pose_ros.synth.scene_sampler import TabletopSceneSampler

    cam = camera or PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)
    rng = np.random.default_rng(seed)
    sampler = TabletopSceneSampler(models, cam, rng=rng)
    ren = RgbdRenderer(cam)
    noise = DepthNoiseModel()
    scene_dir = Path(out_dir) / "000000"
    with BopSceneWriter(scene_dir, models={int(m.obj_id): m for m in models}, overwrite=True) as writer:
        for im_id in tqdm(range(num_images), desc="render test set", unit="img", disable=not progress):
            n = int(rng.integers(objects_range[0], objects_range[1] + 1))
            scene = sampler.sample(n)
            res = ren.render(scene.render_list(models), rng=rng, table=scene.table)
            depth = noise.apply(res.depth_m, res.normals_cam, rng=rng, K=cam.K)
            gt = [GtInstance(int(models[mi].obj_id), np.asarray(T), mask_visib=res.instance_mask == k,
                             visib_fract=float(res.visible_fraction[k]))
                  for k, (mi, T) in enumerate(zip(scene.model_indices, scene.T_cam_obj))]
            writer.add(BopFrame(0, im_id, res.rgb, depth.astype(np.float32), cam, gt))
    return Path(out_dir)
