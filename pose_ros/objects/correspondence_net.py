"""Dense 2D-3D correspondences on an object-centric crop: the network of the second stage.

Why this design: the first stage (``network.KeypointNet``) finds and segments objects on the whole
frame; its keypoint votes are too coarse for PnP (tens of pixels). On a crop that shows the object at
a fixed size (``crop_geometry``) a small U-Net predicts, for every output pixel, whether it shows the
object and *which point of the object's surface* it shows (model-frame xyz, as in CDPN, Pix2Pose and
GDR-Net), with a per-pixel uncertainty. Hundreds of such correspondences per instance survive
occlusion (any visible patch gives its own), PnP-RANSAC removes the wrong ones, and the uncertainty
weights the refinement. Dense coordinates rather than sparse keypoint heatmaps because occluded
keypoints cannot be seen but every visible pixel can. Symmetric objects are trained on their
canonical pose (``training_data.canonical_pose``), so the coordinates are defined up to symmetry.

Inputs (B, 4, S, S): RGB normalised like the first stage, and depth relative to the instance's median
depth in units of the object's diameter (0 where missing), which makes the crop distance-invariant.
Outputs at S/2 for each class (heads are class-specific, selected by the detected class):
``mask`` logit, ``xyz`` = (X - centre) / diameter, ``log_sigma`` of the xyz error (Laplace).

With many objects (``class_film``) the detected class also modulates the features (a learned
per-class scale and shift, FiLM) at the bottleneck and before the heads: a small shared decoder then
only has to describe the one object it was asked about, instead of every object's surface at once,
which is what left a 21-object stage underfitted on CPU.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from pose_ros.objects.network import RGB_MEAN, RGB_STD, SepBlock, _conv_bn

__all__ = ["CorrespondenceConfig", "CorrespondenceNet", "crop_input", "CROP_DEPTH_CLIP"]

CROP_DEPTH_CLIP = 2.0      # relative depth channel clipped to +-2 diameters


@dataclass
class CorrespondenceConfig:
    """Everything needed to rebuild the crop network; stored in the model file."""

    num_classes: int
    crop_size: int = 64                    # input crop side (px); outputs are crop_size / 2
    widths: tuple[int, int, int] = (32, 64, 128)
    decoder_width: int = 48
    pad: float = 1.4                       # crop side = pad x the mask's bounding-box side
    class_film: bool = False               # class-conditioned features (module doc); False in older files

    def __post_init__(self) -> None:
        if int(self.num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1; got {self.num_classes}")
        if int(self.crop_size) % 8 or int(self.crop_size) < 32:
            raise ValueError(f"crop_size must be a multiple of 8 and >= 32; got {self.crop_size}")
        self.widths = tuple(int(w) for w in self.widths)

    @property
    def output_size(self) -> int:
        return int(self.crop_size) // 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CorrespondenceConfig":
        d = dict(d)
        d["widths"] = tuple(d.get("widths", cls.widths))
        return cls(**d)


class CorrespondenceNet(nn.Module):
    """Crop -> per-class visible mask, surface coordinates and their uncertainty (module doc)."""

    def __init__(self, config: CorrespondenceConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3 = config.widths
        d = config.decoder_width
        self.stem = nn.Sequential(_conv_bn(4, w1, 3, 2), SepBlock(w1, w1))                       # 1/2
        self.enc2 = nn.Sequential(SepBlock(w1, w2, stride=2), SepBlock(w2, w2))                   # 1/4
        self.enc3 = nn.Sequential(SepBlock(w2, w3, stride=2), SepBlock(w3, w3, dilation=2),
                                  SepBlock(w3, w3, dilation=4))                                   # 1/8, whole crop
        self.dec2 = nn.Sequential(_conv_bn(w3 + w2, d, 1), SepBlock(d, d))                        # 1/4
        self.dec1 = nn.Sequential(_conv_bn(d + w1, d, 1), SepBlock(d, d), SepBlock(d, d))          # 1/2
        c = config.num_classes
        self.head = nn.Conv2d(d, c * 5, 1)        # per class: mask logit, xyz (3), log sigma
        if config.class_film:
            self.film3 = nn.Embedding(c, 2 * w3)
            self.film1 = nn.Embedding(c, 2 * d)
            for e in (self.film3, self.film1):
                nn.init.zeros_(e.weight)          # starts as the identity: scale 1 + 0, shift 0
        # Channels-last runs the depthwise-separable blocks ~1.5x faster on CPU (training and inference).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` (B,4,S,S), ``cls`` (B,) 0-based class index -> that class's maps at S/2."""
        if x.ndim != 4 or x.shape[1] != 4:
            raise ValueError(f"input must be (B,4,S,S); got {tuple(x.shape)}")
        s1 = self.stem(x.contiguous(memory_format=torch.channels_last))
        s2 = self.enc2(s1)
        s3 = self.enc3(s2)
        if self.config.class_film:
            s3 = _film(s3, self.film3(cls.long()))
        y = F.interpolate(s3, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec2(torch.cat([y, s2], 1))
        y = F.interpolate(y, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec1(torch.cat([y, s1], 1))
        if self.config.class_film:
            y = _film(y, self.film1(cls.long()))
        out = self.head(y)
        b, _, h, w = out.shape
        out = out.view(b, self.config.num_classes, 5, h, w)[torch.arange(b, device=x.device), cls.long()]
        return {"mask": out[:, 0], "xyz": torch.tanh(out[:, 1:4]) * 0.75, "log_sigma": out[:, 4].clamp(-7.0, 2.0)}


def _film(x: torch.Tensor, scale_shift: torch.Tensor) -> torch.Tensor:
    """Per-sample channel scale (1 + a) and shift (b) from a (B, 2C) class embedding."""
    a, b = scale_shift[:, :, None, None].chunk(2, dim=1)
    return x * (1.0 + a) + b


def crop_input(rgb_crop: np.ndarray, depth_crop_m: np.ndarray | None, z_ref_m: float, diameter_m: float) -> np.ndarray:
    """(S,S,3) uint8 colour + (S,S) depth crop -> the (4,S,S) float32 network input (module doc)."""
    x = (rgb_crop.astype(np.float32) / 255.0 - np.asarray(RGB_MEAN, np.float32)) / np.asarray(RGB_STD, np.float32)
    d = np.zeros(rgb_crop.shape[:2], np.float32)
    if depth_crop_m is not None and z_ref_m > 0:
        ok = depth_crop_m > 0
        d[ok] = np.clip((depth_crop_m[ok] - z_ref_m) / max(diameter_m, 1e-3), -CROP_DEPTH_CLIP, CROP_DEPTH_CLIP)
    return np.ascontiguousarray(np.concatenate([x.transpose(2, 0, 1), d[None]], 0), dtype=np.float32)
