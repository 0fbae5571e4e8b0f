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

Similarity: per-channel Pearson correlation between rendered albedo and observed colour, averaged
with the rendered channel variances as weights. Correlation is invariant to per-channel gain and
offset, so exposure, white balance and the light's colour cancel; shading across a curved or
many-faced object lowers it for every hypothesis alike. Channels without texture variation carry
no evidence and get no weight. A mesh without vertex colours (or with a uniform colour) returns
NaN: no evidence either way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pose_ros.core.camera import PinholeCamera

__all__ = ["AppearanceConfig", "AppearanceScorer", "Verification", "has_texture", "point_colours", "pick_twin"]

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


class AppearanceScorer:
    """Scores poses of textured models against a colour image (see module doc)."""

    def __init__(self, config: AppearanceConfig | None = None) -> None:
        self.config = config or AppearanceConfig()
        if not 0.05 <= float(self.config.scale) <= 1.0:
            raise ValueError(f"appearance scale must be in [0.05, 1]; got {self.config.scale}")
        self._renderer: Any = None
        self._renderer_key: tuple | None = None
        self._textured: dict[int, tuple[Any, bool]] = {}     # id(mesh) -> (mesh, textured)
        self._frame_key: tuple | None = None
        self._frame_small: np.ndarray | None = None
        self._blank_img = np.zeros((0, 0, 3), np.uint8)

    def is_textured(self, model: Any) -> bool:
        hit = self._textured.get(id(model.mesh))
        if hit is None or hit[0] is not model.mesh:       # ids of collected meshes get reused
            hit = (model.mesh, has_texture(model, self.config.min_channel_std))
            self._textured[id(model.mesh)] = hit
        return hit[1]

    def _small_camera(self, camera: PinholeCamera) -> PinholeCamera:
        s = float(self.config.scale)
        return camera if s == 1.0 else camera.scaled(s)

    def _renderer_for(self, cam_small: PinholeCamera) -> Any:
        from pose_ros.synth.renderer import RgbdRenderer

        key = (cam_small.width, cam_small.height, tuple(np.round(cam_small.K.ravel(), 6)),
               tuple(np.round(np.asarray(cam_small.dist_coeffs).ravel(), 9)) if cam_small.has_distortion else ())
        if self._renderer is None or self._renderer_key != key:
            self._renderer = RgbdRenderer(cam_small)
            self._renderer_key = key
        return self._renderer

    def _observed_small(self, rgb: np.ndarray, cam_small: PinholeCamera) -> np.ndarray:
        """The image at the compare resolution, float [0,1]; cached for repeated calls on one frame."""
        import cv2

        key = (id(rgb), rgb.shape, cam_small.width, cam_small.height)
        if self._frame_key != key or self._frame_small is None:
            small = rgb if rgb.shape[:2] == (cam_small.height, cam_small.width) else cv2.resize(
                rgb, (cam_small.width, cam_small.height), interpolation=cv2.INTER_AREA)
            self._frame_small = small.astype(np.float32) / 255.0
            self._frame_key = key
        return self._frame_small

    def verify(self, model: Any, T_cam_obj: np.ndarray, rgb: np.ndarray, depth_m: np.ndarray | None,
               mask: np.ndarray, camera: PinholeCamera) -> "Verification":
        """Render the model alone at the pose and compare colour, depth and silhouette with the frame."""
        import cv2

        cam_s = self._small_camera(camera)
        obs = self._observed_small(rgb, cam_s)
        m_small = mask if mask.shape == (cam_s.height, cam_s.width) else cv2.resize(
            mask.astype(np.uint8), (cam_s.width, cam_s.height), interpolation=cv2.INTER_NEAREST) > 0
        ren = self._renderer_for(cam_s).render([(model, T_cam_obj)], background=self._blank(cam_s), ambient=1.0)
        drawn = ren.instance_mask == 0
        union = int((drawn | m_small).sum())
        iou = float((drawn & m_small).sum()) / union if union else 0.0
        depth_term = float("nan")
        if depth_m is not None:
            d_small = depth_m if depth_m.shape == (cam_s.height, cam_s.width) else cv2.resize(
                depth_m, (cam_s.width, cam_s.height), interpolation=cv2.INTER_NEAREST)
            valid = drawn & (d_small > 0)
            if valid.sum() >= self.config.min_pixels:
                r = d_small[valid] - ren.depth_m[valid]
                tol = self.config.depth_tolerance_m
                depth_term = float(np.mean(np.abs(r) <= tol) - np.mean(r > tol))
        colour = float("nan")
        sel = drawn & m_small
        if self.is_textured(model) and int(sel.sum()) >= self.config.min_pixels:
            a = ren.rgb[sel].astype(np.float32) / 255.0        # rendered albedo (n,3)
            b = obs[sel]                                        # observed colour (n,3)
            a = a - a.mean(0)
            b = b - b.mean(0)
            sa = np.sqrt((a * a).mean(0))
            sb = np.sqrt((b * b).mean(0))
            w = np.where(sa >= self.config.min_channel_std, sa, 0.0)
            if w.sum() > 0:
                rr = (a * b).mean(0) / np.maximum(sa * sb, 1e-6)
                colour = float((w * rr).sum() / w.sum())
        return Verification(colour, depth_term, iou)

    def _blank(self, cam_s: PinholeCamera) -> np.ndarray:
        """Black background of the compare size (the render draws the object alone on it)."""
        if self._blank_img.shape[:2] != (cam_s.height, cam_s.width):
            self._blank_img = np.zeros((cam_s.height, cam_s.width, 3), np.uint8)
        return self._blank_img


def pick_twin(scorer: AppearanceScorer, model: Any, T_cam_obj: np.ndarray, twins: list[np.ndarray], rgb: np.ndarray,
              depth_m: np.ndarray | None, mask: np.ndarray, camera: PinholeCamera,
              margin: float = 0.05) -> tuple[int, Verification]:
    """Index of the near-symmetric twin (``T @ twins[k]``) that the render-and-compare check prefers
    to ``T_cam_obj`` by more than ``margin`` (-1: keep the pose), and the pose's own verification."""
    v0 = scorer.verify(model, T_cam_obj, rgb, depth_m, mask, camera)
    if not twins:
        return -1, v0
    vs = [scorer.verify(model, T_cam_obj @ S, rgb, depth_m, mask, camera).combined() for S in twins]
    k = int(np.argmax(vs))
    return (k if vs[k] >= v0.combined() + margin else -1), v0
