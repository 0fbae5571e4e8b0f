"""Render-and-compare appearance check: does the object's texture, rendered at a pose, match the image?

Why: depth and the instance mask pin down *where* an object is and the shape of its visible
surface, but not which way round a near-symmetric shape sits (a printed box flipped 180 deg, a
mug turned about its axis with the handle hidden or small). The mesh's colours tell those poses
apart. The object is ray-cast alone at the pose with its albedo (no lighting: the scene's light
is unknown), at a reduced resolution for speed, and compared with the observed colour on the
pixels both the render and the instance mask cover.

Besides colour, the same render gives the silhouette (IoU with the instance mask) and the depth
(rendered vs observed: confirmed minus seen-through pixels), the evidence a handle leaves when the
texture itself is periodic.

The render is lean because the depth search verifies ~10 poses per instance: rays are cast only
inside the object's projected box against the mesh's cached BVH (the renderer's, built once in the
model frame), and only what the comparison needs is computed (hit mask, z-depth, albedo of the
hit pixels); no full-image buffers, shading or normals. The observed image, depth and mask at the
compare resolution are made once per frame/instance.

Similarity: per-channel Pearson correlation between rendered albedo and observed colour, averaged
with the rendered channel variances as weights. Correlation is invariant to per-channel gain and
offset, so exposure, white balance and the light's colour cancel; shading across a curved or
many-faced object lowers it for every hypothesis alike. Channels without texture variation carry
no evidence and get no weight. A mesh without vertex colours (or with a uniform colour) returns
NaN: no evidence either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from pose_ros.core.camera import PinholeCamera

__all__ = ["AppearanceConfig", "AppearanceScorer", "Verification", "has_texture", "point_colours", "pick_twin",
           "twin_verifications", "TwinChoice"]

_POINT_COLOURS: dict[int, tuple[Any, np.ndarray | None]] = {}


@dataclass
class AppearanceConfig:
    scale: float = 0.5               # render / compare at this fraction of the image resolution
    min_pixels: int = 30             # overlap (at that scale) below which there is no verdict
    min_channel_std: float = 0.03    # rendered albedo std (0..1) below which a channel is uninformative
    depth_tolerance_m: float = 0.01  # rendered vs observed depth agreement band


@dataclass
class Verification:
    """Render-and-compare evidence for one pose; NaN where there is none."""

    colour: float        # texture correlation in [-1, 1]
    depth: float         # fraction of rendered pixels the depth confirms minus those it sees through
    silhouette_iou: float
    chroma_distance: float = float("nan")   # mean L1 distance of (r, g) chromaticity, rendered albedo vs image


    def combined(self) -> float:
        """Sum of the available terms (missing ones count 0, the same for every hypothesis of a frame)."""
        return float(sum(v for v in (self.colour, self.depth, self.silhouette_iou) if np.isfinite(v)))


def _texture_colours(model: Any, min_std: float) -> np.ndarray | None:
    """Per-vertex colours in [0,1] if they vary by at least ``min_std`` in some channel, else None."""
    from pose_ros.synth.renderer import _mesh_colors

    mesh = getattr(model, "mesh", None)
    if mesh is None:
        return None
    cols = _mesh_colors(mesh)
    return cols if len(cols) and float(cols.std(0).max()) >= min_std else None


def has_texture(model: Any, min_std: float = 0.03) -> bool:
    """True if the mesh carries vertex colours that vary (a texture the check can use)."""
    return _texture_colours(model, min_std) is not None


def point_colours(model: Any, min_std: float = 0.03) -> np.ndarray | None:
    """(N,3) colour in [0,1] of each of ``model.points_m`` (nearest mesh vertex); None if untextured.

    Cached per mesh: the depth search scores hundreds of hypotheses per instance with these.
    """
    from scipy.spatial import cKDTree

    hit = _POINT_COLOURS.get(id(model.mesh))
    if hit is not None and hit[0] is model.mesh:
        return hit[1]
    out = None
    cols = _texture_colours(model, min_std)
    if cols is not None:
        verts = np.asarray(model.mesh.vertices, np.float64)
        _, j = cKDTree(verts).query(np.asarray(model.points_m, np.float64))
        out = cols[j].astype(np.float32)
    _POINT_COLOURS[id(model.mesh)] = (model.mesh, out)
    return out


class _AloneRender(NamedTuple):
    """The model ray-cast alone at a pose, inside pixel box (u0, u1, v0, v1) of the compare image."""

    box: tuple[int, int, int, int]
    hit: np.ndarray        # (h,w) bool: the model covers the pixel
    depth_m: np.ndarray    # (h,w) float32 z-depth, inf where not hit
    albedo: np.ndarray     # (n,3) float32 in [0,1] of the hit pixels (row-major), as uint8 quantised
                           # (the renderer's output precision, so scores match a full render's)


_NEAR_M = 1e-4


class AppearanceScorer:
    """Scores poses of textured models against a colour image (see module doc)."""

    def __init__(self, config: AppearanceConfig | None = None) -> None:
        self.config = config or AppearanceConfig()
        if not 0.05 <= float(self.config.scale) <= 1.0:
            raise ValueError(f"appearance scale must be in [0.05, 1]; got {self.config.scale}")
        self._rays: np.ndarray | None = None
        self._rays_key: tuple | None = None
        self._entries: dict[int, Any] = {}                  # id(mesh) -> renderer mesh entry
        self._depth_key: tuple | None = None
        self._depth_small: np.ndarray | None = None
        self._depth_ref: np.ndarray | None = None            # keeps the keyed id unique while cached
        self._mask_key: tuple | None = None
        self._mask_small: tuple[np.ndarray, int] | None = None
        self._mask_ref: np.ndarray | None = None
        self._textured: dict[int, tuple[Any, bool]] = {}     # id(mesh) -> (mesh, textured)
        self._frame_key: tuple | None = None
        self._frame_small: np.ndarray | None = None
        self._frame_ref: np.ndarray | None = None          # keeps the keyed image alive: its id stays unique

    def is_textured(self, model: Any) -> bool:
        hit = self._textured.get(id(model.mesh))
        if hit is None or hit[0] is not model.mesh:       # ids of collected meshes get reused
            hit = (model.mesh, has_texture(model, self.config.min_channel_std))
            self._textured[id(model.mesh)] = hit
        return hit[1]

    def _small_camera(self, camera: PinholeCamera) -> PinholeCamera:
        s = float(self.config.scale)
        return camera if s == 1.0 else camera.scaled(s)

    def _rays_for(self, cam_small: PinholeCamera) -> np.ndarray:
        """(H,W,3) float32 camera-frame ray directions with z = 1 (so ray length t is z-depth)."""
        key = (cam_small.width, cam_small.height, tuple(np.round(cam_small.K.ravel(), 6)),
               tuple(np.round(np.asarray(cam_small.dist_coeffs).ravel(), 9)) if cam_small.has_distortion else ())
        if self._rays is None or self._rays_key != key:
            W, H = cam_small.width, cam_small.height
            vv, uu = np.mgrid[0:H, 0:W]
            xy = cam_small.normalized_rays(np.stack([uu.ravel(), vv.ravel()], 1).astype(np.float64))
            self._rays = np.concatenate([xy, np.ones((len(xy), 1))], 1).astype(np.float32).reshape(H, W, 3)
            self._rays_key = key
        return self._rays

    def _mesh_entry(self, model: Any) -> Any:
        """The mesh's BVH (model frame), corner colours and AABB, built once per mesh."""
        from pose_ros.synth.renderer import _build_entry

        hit = self._entries.get(id(model.mesh))
        if hit is None or hit.mesh is not model.mesh:         # ids of collected meshes get reused
            if len(self._entries) >= 64:
                self._entries.clear()
            hit = _build_entry(model.mesh)
            self._entries[id(model.mesh)] = hit
        return hit

    def _render_alone(self, model: Any, T_cam_obj: np.ndarray, cam_s: PinholeCamera) -> _AloneRender | None:
        """Cast the model alone at ``T_cam_obj`` inside its projected box; None when off-screen."""
        e = self._mesh_entry(model)
        T = np.asarray(T_cam_obj, np.float64)
        H, W = cam_s.height, cam_s.width
        corners = e.corners_m @ T[:3, :3].T + T[:3, 3]
        if np.all(corners[:, 2] <= _NEAR_M):
            return None
        uv = cam_s.project(corners) if np.all(corners[:, 2] > _NEAR_M) else None
        if uv is None or not np.all(np.isfinite(uv)):
            box = (0, W, 0, H)                              # straddles the camera plane: cast everything
        else:
            m = 2 + (0.02 * max(W, H) if cam_s.has_distortion else 0)
            box = (int(max(0, np.floor(uv[:, 0].min() - m))), int(min(W, np.ceil(uv[:, 0].max() + m) + 1)),
                   int(max(0, np.floor(uv[:, 1].min() - m))), int(min(H, np.ceil(uv[:, 1].max() + m) + 1)))
            if box[0] >= box[1] or box[2] >= box[3]:
                return None
        u0, u1, v0, v1 = box
        R_obj_cam = T[:3, :3].T
        d = self._rays_for(cam_s)[v0:v1, u0:u1].reshape(-1, 3) @ R_obj_cam.T.astype(np.float32)
        rays = np.empty((len(d), 6), np.float32)
        rays[:, :3] = -R_obj_cam @ T[:3, 3]
        rays[:, 3:] = d
        out = e.scene.cast_rays(rays)
        t = out["t_hit"].numpy().reshape(v1 - v0, u1 - u0)
        hit = np.isfinite(t) & (t > _NEAR_M)
        albedo = np.zeros((0, 3), np.float32)
        if hit.any():
            sel = hit.ravel()
            pid = out["primitive_ids"].numpy()[sel]
            b = out["primitive_uvs"].numpy()[sel]
            w = np.empty((len(pid), 3), np.float32)
            w[:, 1:] = b
            w[:, 0] = 1.0 - b[:, 0] - b[:, 1]
            col = np.einsum("nkc,nk->nc", e.face_colors[pid], w)
            albedo = np.clip(col * 255.0 + 0.5, 0, 255).astype(np.uint8).astype(np.float32) / 255.0
        return _AloneRender(box, hit, t, albedo)

    def _observed_small(self, rgb: np.ndarray, cam_small: PinholeCamera) -> np.ndarray:
        """The image at the compare resolution, float [0,1]; cached for repeated calls on one frame."""
        import cv2

        key = (id(rgb), rgb.shape, cam_small.width, cam_small.height)
        if self._frame_key != key or self._frame_small is None:
            small = rgb if rgb.shape[:2] == (cam_small.height, cam_small.width) else cv2.resize(
                rgb, (cam_small.width, cam_small.height), interpolation=cv2.INTER_AREA)
            self._frame_small = small.astype(np.float32) / 255.0
            self._frame_key = key
            self._frame_ref = rgb
        return self._frame_small

    def _depth_small_for(self, depth_m: np.ndarray, cam_s: PinholeCamera) -> np.ndarray:
        import cv2

        key = (id(depth_m), depth_m.shape, cam_s.width, cam_s.height)
        if self._depth_key != key or self._depth_small is None:
            self._depth_small = depth_m if depth_m.shape == (cam_s.height, cam_s.width) else cv2.resize(
                depth_m, (cam_s.width, cam_s.height), interpolation=cv2.INTER_NEAREST)
            self._depth_key = key
            self._depth_ref = depth_m
        return self._depth_small

    def _mask_small_for(self, mask: np.ndarray, cam_s: PinholeCamera) -> tuple[np.ndarray, int]:
        import cv2

        key = (id(mask), mask.shape, cam_s.width, cam_s.height)
        if self._mask_key != key or self._mask_small is None:
            m = mask if mask.shape == (cam_s.height, cam_s.width) else cv2.resize(
                mask.astype(np.uint8), (cam_s.width, cam_s.height), interpolation=cv2.INTER_NEAREST) > 0
            self._mask_small = (m, int(m.sum()))
            self._mask_key = key
            self._mask_ref = mask
        return self._mask_small

    def verify(self, model: Any, T_cam_obj: np.ndarray, rgb: np.ndarray, depth_m: np.ndarray | None,
               mask: np.ndarray, camera: PinholeCamera) -> "Verification":
        """Render the model alone at the pose and compare colour, depth and silhouette with the frame.

        The frame's arrays are cached at the compare size by identity for repeated calls (one
        instance's hypotheses): do not modify them in place between calls.
        """
        cam_s = self._small_camera(camera)
        m_small, m_count = self._mask_small_for(np.asarray(mask), cam_s)
        ren = self._render_alone(model, self._check_T(T_cam_obj), cam_s)
        if ren is None:
            return Verification(float("nan"), float("nan"), 0.0)
        u0, u1, v0, v1 = ren.box
        drawn = ren.hit
        m_box = m_small[v0:v1, u0:u1]
        inter = int((drawn & m_box).sum())
        union = int(drawn.sum()) + m_count - inter
        iou = float(inter) / union if union else 0.0
        depth_term = float("nan")
        if depth_m is not None:
            d_box = self._depth_small_for(depth_m, cam_s)[v0:v1, u0:u1]
            valid = drawn & (d_box > 0)
            if valid.sum() >= self.config.min_pixels:
                r = d_box[valid] - ren.depth_m[valid]
                tol = self.config.depth_tolerance_m
                depth_term = float(np.mean(np.abs(r) <= tol) - np.mean(r > tol))
        colour = float("nan")
        sel = drawn & m_box
        if self.is_textured(model) and inter >= self.config.min_pixels:
            obs = self._observed_small(rgb, cam_s)[v0:v1, u0:u1]
            a = ren.albedo[sel[drawn]]                          # rendered albedo (n,3)
            b = obs[sel]                                        # observed colour (n,3)
            a = a - a.mean(0)
            b = b - b.mean(0)
            sa = np.sqrt((a * a).mean(0))
            sb = np.sqrt((b * b).mean(0))
            w = np.where(sa >= self.config.min_channel_std, sa, 0.0)
            if w.sum() > 0:
                rr = (a * b).mean(0) / np.maximum(sa * sb, 1e-6)
                colour = float((w * rr).sum() / w.sum())
        chroma = float("nan")
        if inter >= self.config.min_pixels:
            # Absolute colour, which correlation ignores: a red can and a yellow bottle of the same
            # shape correlate alike. Chromaticity cancels brightness; dark pixels carry none.
            obs = self._observed_small(rgb, cam_s)[v0:v1, u0:u1][sel]
            alb = ren.albedo[sel[drawn]]
            so, sa_ = obs.sum(1), alb.sum(1)
            ok = (so > 0.15) & (sa_ > 0.15)
            if ok.sum() >= self.config.min_pixels:
                co = obs[ok, :2] / so[ok, None]
                ca = alb[ok, :2] / sa_[ok, None]
                chroma = float(np.abs(co - ca).sum(1).mean())
        return Verification(colour, depth_term, iou, chroma)

    @staticmethod
    def _check_T(T_cam_obj: np.ndarray) -> np.ndarray:
        from pose_ros.synth.renderer import RenderInputError

        T = np.asarray(T_cam_obj, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise RenderInputError(f"T_cam_obj must be a finite 4x4 matrix; got shape {T.shape}")
        R = T[:3, :3]
        if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
            raise RenderInputError("T_cam_obj rotation is not orthonormal; orthonormalise it "
                                   "(pose_ros.core.transforms.orthonormalize)")
        return T


@dataclass
class TwinChoice:
    """The outcome of ``pick_twin``: ``index`` -1 keeps the pose."""

    index: int
    T_cam_obj: np.ndarray            # the chosen pose (refined when ``refine`` was given)
    verification: Verification       # of the chosen pose
    pose_verification: Verification  # of the pose passed in
    refined: Any = None              # what ``refine`` returned beside the pose (e.g. the IcpResult)


def pick_twin(scorer: AppearanceScorer, model: Any, T_cam_obj: np.ndarray, twins: list[np.ndarray], rgb: np.ndarray,
              depth_m: np.ndarray | None, mask: np.ndarray, camera: PinholeCamera, margin: float = 0.05,
              refine: Callable[[np.ndarray], tuple[np.ndarray, Any] | None] | None = None,
              refine_top: int = 3, rounds: int = 1) -> TwinChoice:
    """The near-symmetric twin (``T @ twins[k]``) the render-and-compare check prefers to the pose by
    more than ``margin``.

    Why ``refine``: twins are a discrete set (the mug's turns about its axis ~30 deg apart), so the
    twin nearest the truth is still a few degrees off and, unrefined, can score below a refined
    wrong pose. With ``refine(T) -> (T_refined, extra) | None`` (ICP on depth) the ``refine_top``
    best-scoring twins are refined and compared again; None (refinement rejected) drops a twin.

    Why ``rounds`` (with ``refine``): when the pose is a few degrees off (tilted), so are all its
    twins, and the best-looking refined twin can be a step short of the truth (the mug turned by
    30 deg instead of 120 deg); after the first switch the twins of the refined new pose are
    compared again, up to ``rounds`` times, each switch again needing ``margin`` over the pose it
    replaces. ``index`` is then the twin of the last switch; ``T_cam_obj`` the pose reached.
    """
    v0, *vt = twin_verifications(scorer, model, T_cam_obj, twins, rgb, depth_m, mask, camera)
    best = TwinChoice(-1, T_cam_obj, v0, v0)
    if not vt:
        return best
    vs = np.array([v.combined() for v in vt])
    bar = v0.combined() + margin          # what a twin must reach: the pose plus the margin, then the best so far
    if refine is None:
        k = int(np.argmax(vs))
        return TwinChoice(k, T_cam_obj @ twins[k], vt[k], v0) if vs[k] >= bar else best
    T_cur = T_cam_obj
    for r_i in range(max(1, int(rounds))):
        if r_i > 0:
            if best.index < 0 or best.T_cam_obj is T_cur:
                break                          # the last round kept its pose: nothing new to compare
            T_cur = best.T_cam_obj
            vs = np.array([scorer.verify(model, T_cur @ S, rgb, depth_m, mask, camera).combined() for S in twins])
            bar = best.verification.combined() + margin
        for k in np.argsort(-vs)[:refine_top]:
            r = refine(T_cur @ twins[k])
            if r is None:
                continue
            v = scorer.verify(model, r[0], rgb, depth_m, mask, camera)
            if v.combined() >= bar:
                best, bar = TwinChoice(int(k), r[0], v, v0, r[1]), v.combined()
    return best


def twin_verifications(scorer: AppearanceScorer, model: Any, T_cam_obj: np.ndarray, twins: list[np.ndarray],
                       rgb: np.ndarray, depth_m: np.ndarray | None, mask: np.ndarray,
                       camera: PinholeCamera) -> list[Verification]:
    """Verifications of the pose and of each near-symmetric twin ``T @ twins[k]`` (pose first)."""
    return [scorer.verify(model, T_cam_obj @ S, rgb, depth_m, mask, camera) for S in [np.eye(4), *twins]]
