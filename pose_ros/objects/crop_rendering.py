"""Training crops for the correspondence stage, rendered zoomed in on each object.

Why render the crops rather than cut them out of the first stage's scenes: those scenes are rendered at
the network input size (320x240), where an object 0.35-1.4 m away spans 20-100 pixels; cut out and
enlarged to the crop size they hold little of the surface detail that says which point of the object a
pixel shows, and the crop stage did not learn coordinates from them on CPU (23 mm median error after
4 epochs, docs/training.md). Here each scene (the first stage's sampler: table, clutter, real photos,
the user's camera at its own resolution) is first rendered small to find each instance's visible box,
as the detector's mask gives it at run time; the box is jittered as a detector's is off, and the scene
is rendered again through a *crop camera*: the user's camera zoomed onto that box at ``supersample``
times the crop size, then shrunk to the crop with the anti-aliasing ``crop_geometry.crop_image`` applies
to a camera frame at run time. The crop holds what a full-resolution camera sees in that box
(perspective, occluders, neighbours, table, background photo), for ~(2S)^2 rays instead of a frame.

Targets come from the exact render depth (before sensor noise): the model point each output pixel
shows, in the canonical pose of symmetric objects (``training_data.canonical_pose``). Some crops are
negatives with an empty target mask: a distractor's crop asked for as an object, or an object's crop
asked for as another class, so that the mask head also says "not this object".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.objects.crop_geometry import CropBox, crop_box_from_mask, crop_image, crop_to_image_px, jitter_box

__all__ = ["CropSample", "CropRenderer", "whole_render_box"]


@dataclass
class CropSample:
    """One training crop before augmentation, its targets, and the crop camera that saw it."""

    rgb: np.ndarray               # (S,S,3) uint8
    depth_m: np.ndarray           # (S,S) float32 noisy depth, 0 = none
    z_ref_m: float                # median depth of the instance's visible pixels (0: too few)
    cls: int                      # class the crop is asked for (0-based)
    mask: np.ndarray              # (s,s) bool: pixels of that object
    xyz: np.ndarray               # (3,s,s) float32: (X - centre) / diameter where valid
    valid: np.ndarray             # (s,s) bool: mask with a depth and a point inside the model's box
    K_crop: np.ndarray            # (3,3) of the crop camera at the render size
    T_cam_obj: np.ndarray | None  # (4,4) canonical pose in the crop camera; None for a negative
    render_depth_m: np.ndarray | None = None   # (R,R) noisy depth of the crop camera (``keep_render_depth``)


def whole_render_box(render_size: int) -> CropBox:
    """The box of a crop camera's whole image: cutting it to S px is the shrink to the crop."""
    c = (render_size - 1) / 2.0
    return CropBox(c, c, float(render_size))


def _zoomed_camera(K: np.ndarray, box: CropBox, size: int) -> PinholeCamera:
    """The camera whose ``size`` x ``size`` image is ``box`` of the camera with ``K`` (same centre of
    projection; the crop's affine map applied to K)."""
    A = box.affine(size)
    Kc = np.array([[K[0, 0] * A[0, 0], 0.0, K[0, 2] * A[0, 0] + A[0, 2]],
                   [0.0, K[1, 1] * A[1, 1], K[1, 2] * A[1, 1] + A[1, 2]], [0.0, 0.0, 1.0]])
    return PinholeCamera(Kc, size, size, check_principal_point=False)   # off-centre boxes: pp outside


class CropRenderer:
    """Random scenes -> object-centric crops with targets (module doc)."""

    def __init__(self, models: Sequence[Any], scene_cfg: Any, centres_m: Sequence[np.ndarray],
                 diameters_m: Sequence[float], crop_size: int = 64, pad: float = 1.4, supersample: int = 2,
                 visibility_scale: float = 0.25, min_visible_px: int = 80, max_crops_per_scene: int = 4,
                 wrong_class_share: float = 0.05, distractor_share: float = 0.08,
                 symmetries: Sequence[Sequence[np.ndarray]] | None = None, keep_render_depth: bool = False,
                 seed: int = 0) -> None:
        from pose_ros.objects.training_data import SceneRenderer

        self.scenes = SceneRenderer(models, scene_cfg, symmetries=symmetries, seed=seed)
        self.models = list(models)
        self.centres = [np.asarray(c, np.float64) for c in centres_m]
        self.diameters = [float(d) for d in diameters_m]
        halves = [(m.points_m.max(0) - m.points_m.min(0)) / 2 for m in self.models]
        # a target point outside the model's box (+5 mm) is a pixel of mixed depth at an edge: not trained on
        self.limits = [np.asarray(h, np.float64) + 0.005 for h in halves]
        self.S, self.pad, self.ss = int(crop_size), float(pad), int(supersample)
        self.R = self.S * self.ss
        self.vis_scale = float(visibility_scale)
        self.min_visible_px = int(min_visible_px)
        self.max_crops = int(max_crops_per_scene)
        self.wrong_class_share = float(wrong_class_share)
        self.distractor_share = float(distractor_share)
        self.keep_render_depth = bool(keep_render_depth)
        # one small camera per scene camera: the visibility pass that finds each instance's box
        self._vis = []
        for cam, ren in zip(self.scenes.cameras, self.scenes.renderers):
            s = self.vis_scale
            K = cam.K.copy()
            K[0, 0] *= s
            K[1, 1] *= s
            K[0, 2] = (K[0, 2] + 0.5) * s - 0.5
            K[1, 2] = (K[1, 2] + 0.5) * s - 0.5
            w, h = int(round(cam.width * s)), int(round(cam.height * s))
            self._vis.append(ren.for_camera(PinholeCamera(K, w, h)))

    def scene_crops(self, rng: np.random.Generator) -> list[CropSample]:
        """Crops of the instances of one random scene (objects and some distractors)."""
        draw = self.scenes.sample(rng, empty=False)
        objs = [(obj, T) for _, obj, T in draw.scene]
        if not objs:
            return []
        vis = self._vis[draw.camera_index].render(objs, rng=rng, table=draw.table)
        s = self.vis_scale
        min_px = self.min_visible_px * s * s
        counts = np.bincount(vis.instance_mask[vis.instance_mask >= 0].ravel(), minlength=len(objs))
        picks = []
        for k, (c, _, _) in enumerate(draw.scene):
            if counts[k] < max(min_px, 4):
                continue
            if c >= 0 or rng.random() < self.distractor_share:
                picks.append(k)
        rng.shuffle(picks)
        out = []
        light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-1.0, 0.2), -1.0])
        for k in picks[:self.max_crops]:
            b = crop_box_from_mask(vis.instance_mask == k, self.pad, min_side_px=16.0 * s)   # run time's 16 px
            box = CropBox((b.cu + 0.5) / s - 0.5, (b.cv + 0.5) / s - 0.5, b.side_px / s)   # full-frame pixels
            box = jitter_box(box, rng)
            sample = self._render_crop(draw, k, box, light, rng)
            if sample is not None:
                out.append(sample)
        return out

    def _render_crop(self, draw: Any, k: int, box: CropBox, light: np.ndarray,
                     rng: np.random.Generator) -> CropSample | None:
        from pose_ros.objects.training_data import _background_depth, canonical_pose

        R, S, o = self.R, self.S, self.S // 2
        ccam, res = self.render_view(draw, box, rng, light)
        if not (res.instance_mask == k).any():
            return None
        depth_exact = res.depth_m
        depth = depth_exact
        if rng.random() < self.scenes.cfg.background_depth_prob:
            depth = _background_depth(depth, ccam.K, rng)
        if self.scenes.cfg.depth_noise:
            depth = self.scenes.noise.apply(depth, res.normals_cam, rng=rng, K=ccam.K)
        depth = depth.astype(np.float32)

        whole = whole_render_box(R)
        rgb_c = crop_image(res.rgb, whole, S)
        dep_c = crop_image(depth, whole, S, nearest=True)
        c_true = int(draw.scene[k][0])
        C = len(self.models)
        negative = c_true < 0
        c = c_true if not negative else int(rng.integers(0, C))
        if not negative and C > 1 and rng.random() < self.wrong_class_share:
            c = int((c + rng.integers(1, C)) % C)
            negative = True
        d_vis = depth[res.instance_mask == k]
        d_vis = d_vis[d_vis > 0]
        z_ref = float(np.median(d_vis)) if len(d_vis) >= 10 else 0.0

        inst_t = crop_image((res.instance_mask + 1).astype(np.uint8) if len(draw.scene) < 255 else
                            (res.instance_mask + 1).astype(np.uint16), whole, o, nearest=True).astype(np.int32) - 1
        mask_t = (inst_t == k) & (not negative)
        xyz_t = np.zeros((3, o, o), np.float32)
        valid = np.zeros((o, o), bool)
        T = None
        if not negative:
            T = canonical_pose(draw.scene[k][2], self.scenes.symmetries[c])
            z = crop_image(depth_exact, whole, o, nearest=True).astype(np.float64)
            jj, ii = np.mgrid[0:o, 0:o]
            uv = crop_to_image_px(np.stack([ii.ravel(), jj.ravel()], 1), whole, o)
            Kc = ccam.K
            zz = z.ravel()
            X_cam = np.stack([(uv[:, 0] - Kc[0, 2]) / Kc[0, 0] * zz, (uv[:, 1] - Kc[1, 2]) / Kc[1, 1] * zz, zz], 1)
            X_obj = (X_cam - T[:3, 3]) @ T[:3, :3]
            inside = (np.abs(X_obj - self.centres[c]) <= self.limits[c]).all(1).reshape(o, o)
            n = ((X_obj - self.centres[c]) / self.diameters[c]).reshape(o, o, 3).transpose(2, 0, 1)
            valid = mask_t & (z > 0) & inside
            xyz_t = np.where(valid[None], n, 0.0).astype(np.float32)
        return CropSample(rgb=rgb_c, depth_m=dep_c.astype(np.float32), z_ref_m=z_ref, cls=c, mask=mask_t, xyz=xyz_t,
                          valid=valid, K_crop=ccam.K.copy(), T_cam_obj=T,
                          render_depth_m=depth if self.keep_render_depth else None)

    def render_view(self, draw: Any, box: CropBox, rng: np.random.Generator, light: np.ndarray | None = None,
                    ) -> tuple[PinholeCamera, Any]:
        """The scene ``draw`` as the crop camera on ``box`` (full-frame pixels) sees it, at R x R."""
        cam = self.scenes.cameras[draw.camera_index]
        ccam = _zoomed_camera(cam.K, box, self.R)
        background = None
        if draw.background is not None:
            background = np.ascontiguousarray(crop_image(draw.background, box, self.R))
        ren = self.scenes.renderers[draw.camera_index].for_camera(ccam)
        res = ren.render([(obj, T) for _, obj, T in draw.scene], background=background, rng=rng,
                         light_dir_cam=light, table=draw.table)
        # what lies outside the camera's frame, the camera does not see: zeros, as run-time crops get
        inside = self._inside_frame(cam, box)
        if not inside.all():
            res.rgb[~inside] = 0
            res.depth_m[~inside] = 0.0
            res.instance_mask[~inside] = -1
        return ccam, res

    def _inside_frame(self, cam: PinholeCamera, box: CropBox) -> np.ndarray:
        """(R,R) crop-camera pixels whose nearest camera pixel is inside the camera's frame."""
        q = np.arange(self.R, dtype=np.float64)
        A = box.affine(self.R)
        u = np.rint((q - A[0, 2]) / A[0, 0])
        v = np.rint((q - A[1, 2]) / A[1, 1])
        return ((v >= 0) & (v < cam.height))[:, None] & ((u >= 0) & (u < cam.width))[None, :]

    def crops(self, rng: np.random.Generator, n: int, negatives: bool = True) -> list[CropSample]:
        """At least ``n`` crops (whole scenes), the first ``n`` returned."""
        out: list[CropSample] = []
        while len(out) < n:
            got = self.scene_crops(rng)
            out.extend(g for g in got if negatives or g.T_cam_obj is not None)
        return out[:n]
