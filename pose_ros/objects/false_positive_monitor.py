"""How much of a real, object-free photo the network labels as an object.

Why: validation renders say how well the network fits the renderer; they say nothing about real
clutter, which is where it failed (30% of the pixels of real photos labelled as an object). Real
photos that contain none of the objects and were held out of training (``synth.photo_bank``
split) measure exactly that failure, cheaply, once per epoch, and pick the checkpoint.

Photos have no depth. Each gets the depth of a flat surface seen at a random tilt and distance
(a wall or table top with the photo as its texture): the depth channel the network sees on a real
object-free view, rather than the all-missing depth it sees only on dropped-depth samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["ObjectFreeFrame", "object_free_camera", "object_free_frames", "plane_depth", "false_positive_stats", "network_seg_logits",
           "network_class_maps"]


@dataclass
class ObjectFreeFrame:
    rgb: np.ndarray          # (H,W,3) uint8
    depth_m: np.ndarray      # (H,W) float32, a tilted plane
    name: str


def plane_depth(K: np.ndarray, width: int, height: int, rng: np.random.Generator,
                distance_range_m: tuple[float, float] = (0.6, 1.5)) -> np.ndarray:
    """Depth (H,W) float32 of a plane at a random distance, tilted up to ~35 deg."""
    n = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.7), 1.0])
    n /= np.linalg.norm(n)
    z0 = float(rng.uniform(*distance_range_m))
    vv, uu = np.mgrid[0:height, 0:width].astype(np.float64)
    dot = n[0] * (uu - K[0, 2]) / K[0, 0] + n[1] * (vv - K[1, 2]) / K[1, 1] + n[2]
    return np.clip(z0 * n[2] / np.maximum(dot, 0.2), 0.2, 8.0).astype(np.float32)


def object_free_frames(photo_dirs: Sequence[str], K: np.ndarray, width: int, height: int, count: int = 60,
                       seed: int = 0, split: str = "heldout") -> list[ObjectFreeFrame]:
    """``count`` held-out photos (every k-th, deterministic) resized to (width, height) with plane depth."""
    import cv2

    from pose_ros.synth.photo_bank import PhotoBank

    bank = PhotoBank.from_dirs(photo_dirs, split=split, min_photos=1, check_readable=False)
    rng = np.random.default_rng(seed)
    step = max(1, len(bank) // max(1, count))
    out = []
    for i in range(0, len(bank), step)[:count]:
        img = bank.read(i)
        rgb = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        out.append(ObjectFreeFrame(rgb, plane_depth(K, width, height, rng), bank.paths[i].name))
    return out


def false_positive_stats(class_maps: Sequence[np.ndarray], min_pixels: int = 12) -> dict[str, float]:
    """Share of pixels labelled as any object, and object blobs (>= ``min_pixels`` connected pixels
    of one class, what the estimator would turn into an instance) per image, over object-free maps."""
    import cv2

    if not class_maps:
        return {"fp_pixel_share": float("nan"), "fp_blobs_per_image": float("nan"), "images": 0}
    px = 0
    total = 0
    blobs = 0
    for cm in class_maps:
        cm = np.asarray(cm)
        px += int((cm > 0).sum())
        total += cm.size
        for c in np.unique(cm[cm > 0]):
            n, _, stats, _ = cv2.connectedComponentsWithStats((cm == c).astype(np.uint8), connectivity=8)
            blobs += int((stats[1:, cv2.CC_STAT_AREA] >= min_pixels).sum())
    return {"fp_pixel_share": px / max(total, 1), "fp_blobs_per_image": blobs / len(class_maps),
            "images": len(class_maps)}


def object_free_camera(camera_K: Any = None, camera_size: Any = None) -> Any:
    """The camera a model's object-free photos are seen through: its training camera (K at
    camera_size), else a 640x480 one with fx 600 (a typical RGB-D camera)."""
    from pose_ros.core.camera import PinholeCamera

    if camera_K is not None:
        w, h = camera_size
        return PinholeCamera(np.asarray(camera_K, np.float64).reshape(3, 3), int(w), int(h))
    return PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)


def network_seg_logits(net: Any, frames: Sequence[ObjectFreeFrame], device: str = "cpu") -> list[np.ndarray]:
    """The network's (1 + classes, h, w) segmentation logits on each frame, at its output resolution."""
    import torch

    from pose_ros.objects.network import prepare_input

    cfg = net.config
    was_training = net.training
    net.eval()
    out = []
    with torch.no_grad():
        for f in frames:
            x = torch.from_numpy(prepare_input(f.rgb, f.depth_m if cfg.use_depth else None, cfg))[None].to(device)
            out.append(net(x)["seg"][0].cpu().numpy())
    if was_training:
        net.train()
    return out


def network_class_maps(net: Any, frames: Sequence[ObjectFreeFrame], device: str = "cpu") -> list[np.ndarray]:
    """The network's per-pixel class (argmax) on each frame, at its output resolution."""
    return [s.argmax(0) for s in network_seg_logits(net, frames, device)]
