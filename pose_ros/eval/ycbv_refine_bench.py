"""Real YCB-Video refinement benchmark: our ICP from perturbed GT poses vs OpenCV's PPF matcher.

Why this benchmark: the synthetic numbers say nothing about real sensor noise (Xtion depth holes,
edge flying pixels, occlusion). Here every GT object of the real frames in
``../shared/data/ycbv_real`` is perturbed by fixed translation/rotation magnitudes in seeded random
directions and refined; the PPF baseline (global, needs no initial pose) runs on the same
objects with the same masks. Scene points for both methods come from the GT *visible* mask,
read from the dataset's ``-label.png`` (label value = BOP obj_id for YCB-V).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from pose_ros.core.camera import PinholeCamera

log = logging.getLogger(__name__)

__all__ = ["YcbvGt", "YcbvFrame", "iter_ycbv_frames", "perturb_pose", "RefineCase", "run_refine_bench",
           "summarize", "format_summary", "plot_summary", "DEFAULT_TRANSLATIONS_M", "DEFAULT_ROTATIONS_DEG"]

DEFAULT_TRANSLATIONS_M = (0.01, 0.02, 0.04)
DEFAULT_ROTATIONS_DEG = (5.0, 10.0, 20.0)


class YcbvDataError(ValueError):
    """The YCB-V folder is missing files or has an unexpected layout; the message says which."""


@dataclass
class YcbvGt:
    obj_id: int
    T_cam_obj: np.ndarray      # 4x4, metres
    mask_visib: np.ndarray     # (H,W) bool from the label png


@dataclass
class YcbvFrame:
    scene: str
    im_id: int
    depth_m: np.ndarray
    camera: PinholeCamera
    gt: list[YcbvGt] = field(default_factory=list)


def _scene_dirs(data_dir: Path) -> list[Path]:
    dirs = sorted(p.parent for p in data_dir.glob("*/*/scene_gt_bop.json"))
    dirs += sorted(p.parent for p in data_dir.glob("*/scene_gt_bop.json"))
    return sorted(set(dirs))


def iter_ycbv_frames(data_dir: str | Path) -> Iterator[YcbvFrame]:
    """Frames of ``ycbv_real`` (``data/NNNN`` and ``special_data/NNNN``) with BOP GT (metres)
    and visible masks from ``XXXXXX-label.png``; depth = raw * depth_scale mm."""
    import cv2

    data_dir = Path(data_dir)
    scenes = _scene_dirs(data_dir)
    if not scenes:
        raise YcbvDataError(f"no */scene_gt_bop.json under {data_dir}; pass the ycbv_real folder "
                            "(e.g. ../shared/data/ycbv_real)")
    for sd in scenes:
        gt_all = json.loads((sd / "scene_gt_bop.json").read_text())
        cams = json.loads((sd / "scene_camera_bop.json").read_text())
        for key in sorted(gt_all, key=int):
            im = int(key)
            dpath = sd / f"{im:06d}-depth.png"
            lpath = sd / f"{im:06d}-label.png"
            raw = cv2.imread(str(dpath), cv2.IMREAD_UNCHANGED)
            label = cv2.imread(str(lpath), cv2.IMREAD_UNCHANGED)
            if raw is None or label is None:
                raise YcbvDataError(f"cannot read {dpath} or {lpath}")
            cam = cams[key]
            H, W = raw.shape
            camera = PinholeCamera(np.asarray(cam["cam_K"], float).reshape(3, 3), W, H)
            depth_m = raw.astype(np.float32) * np.float32(float(cam["depth_scale"]) * 1e-3)
            gts = []
            for g in gt_all[key]:
                T = np.eye(4)
                T[:3, :3] = np.asarray(g["cam_R_m2c"], float).reshape(3, 3)
                T[:3, 3] = np.asarray(g["cam_t_m2c"], float) * 1e-3
                gts.append(YcbvGt(int(g["obj_id"]), T, label == int(g["obj_id"])))
            yield YcbvFrame(f"{sd.parent.name}/{sd.name}", im, depth_m, camera, gts)


def perturb_pose(T_cam_obj: np.ndarray, translation_m: float, rotation_deg: float,
                 rng: np.random.Generator) -> np.ndarray:
    """GT pose moved by exactly ``translation_m`` in a random camera-frame direction and rotated
    by exactly ``rotation_deg`` about a random axis through the object origin."""
    from scipy.spatial.transform import Rotation

    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    a = rng.normal(size=3)
    a /= np.linalg.norm(a)
    T = np.asarray(T_cam_obj, float).copy()
    T[:3, :3] = Rotation.from_rotvec(a * math.radians(rotation_deg)).as_matrix() @ T[:3, :3]
    T[:3, 3] = T[:3, 3] + d * translation_m
    return T
