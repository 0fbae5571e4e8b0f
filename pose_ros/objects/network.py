"""Keypoint-correspondence network (PVNet-style) small enough for >= 10 Hz on 2 CPU cores.

Why this shape: a stride-8 encoder of depthwise-separable residual blocks (dilated at the
bottom for a wide receptive field without more downsampling) and a U-Net-like decoder with skips
back to 1/2 input resolution. One forward pass predicts, for every pixel of the output map:

* ``seg``    (B, C+1, h, w) logits over background + C object classes;
* ``vec``    (B, C*(K+1)*2, h, w) un-normalised 2D vectors pointing from the pixel to each of the
  K+1 keypoints of *that pixel's* class (class-specific channel groups, PVNet);
* ``centre`` (B, 2, h, w) offset from the pixel to its instance's projected centre, divided by
  ``CENTRE_OFFSET_SCALE_PX`` (output pixels). Clustering the votes ``pixel + offset`` separates
  touching instances of the same class (``voting.split_instances``).

Input is RGB plus (optionally) one depth channel: depth relative to the image's median valid depth,
which helps separate objects from the table and each other and is distance-invariant. Missing
depth is fed as zeros; training drops depth on some samples so RGB-only still works.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

__all__ = [
    "NetworkConfig", "KeypointNet", "prepare_input", "CENTRE_OFFSET_SCALE_PX", "DEPTH_REL_SCALE_M",
    "RGB_MEAN", "RGB_STD", "output_size", "split_vector_channels", "depth_channel", "count_parameters",
]

CENTRE_OFFSET_SCALE_PX = 32.0   # centre offsets are regressed in units of 32 output pixels
DEPTH_REL_SCALE_M = 0.25        # depth channel = (depth - median) / 0.25 m, clipped to +-4
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)


@dataclass
class NetworkConfig:
    """Everything needed to rebuild the network; stored in the model file."""

    num_classes: int                       # object classes, background excluded
    num_keypoints: int = 9                 # K+1 (8 FPS surface points + centre)
    use_depth: bool = True                 # 4th input channel = relative depth
    input_width: int = 320
    input_height: int = 240
    widths: tuple[int, int, int, int] = (24, 40, 64, 96)   # stem(1/2), 1/4, 1/8, bottleneck(1/8)
    decoder_width: int = 40
    output_stride: int = 2                 # output map = input / 2

    def __post_init__(self) -> None:
        if int(self.num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1; got {self.num_classes}")
        if int(self.num_keypoints) < 4:
            raise ValueError(f"num_keypoints must be >= 4 for PnP; got {self.num_keypoints}")
        for name in ("input_width", "input_height"):
            v = int(getattr(self, name))
            if v <= 0 or v % 8 != 0:
                raise ValueError(f"{name} must be a positive multiple of 8 (encoder stride); got {v}")
        if self.output_stride != 2:
            raise ValueError("only output_stride=2 is implemented")
        self.widths = tuple(int(w) for w in self.widths)

    @property
    def in_channels(self) -> int:
        return 4 if self.use_depth else 3

    @property
    def vector_channels(self) -> int:
        return self.num_classes * self.num_keypoints * 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return cls(**d)


def output_size(config: NetworkConfig) -> tuple[int, int]:
    """(width, height) of the output maps."""
    return config.input_width // config.output_stride, config.input_height // config.output_stride


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SepBlock(nn.Module):
    """Depthwise-separable residual block (3x3 dw + 1x1 pw), optional stride / dilation."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.dw = _conv_bn(cin, cin, 3, stride, dilation, groups=cin)
        self.pw = _conv_bn(cin, cout, 1, act=False)
        self.skip: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                                      _conv_bn(cin, cout, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        s = x if self.skip is None else self.skip(x)
        return F.relu(y + s, inplace=True)


class KeypointNet(nn.Module):
    """Encoder-decoder with seg / keypoint-vector / centre-offset heads (see module doc)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3, w4 = config.widths
        d = config.decoder_width
        self.stem = nn.Sequential(_conv_bn(config.in_channels, w1, 3, 2), SepBlock(w1, w1))       # 1/2
        self.enc2 = nn.Sequential(SepBlock(w1, w2, stride=2), SepBlock(w2, w2))                     # 1/4
        self.enc3 = nn.Sequential(SepBlock(w2, w3, stride=2), SepBlock(w3, w3))                     # 1/8
        self.bottleneck = nn.Sequential(SepBlock(w3, w4, dilation=2), SepBlock(w4, w4, dilation=4),
                                        SepBlock(w4, w4, dilation=8))                              # 1/8, wide RF
        self.up3 = _conv_bn(w4 + w3, d, 1)
        self.dec2 = nn.Sequential(_conv_bn(d + w2, d, 1), SepBlock(d, d))                           # 1/4
        self.dec1 = nn.Sequential(_conv_bn(d + w1, d, 1), SepBlock(d, d))                           # 1/2
        self.head_seg = nn.Conv2d(d, config.num_classes + 1, 1)
        self.head_vec = nn.Sequential(_conv_bn(d, d, 3, groups=d), nn.Conv2d(d, config.vector_channels, 1))
        self.head_centre = nn.Conv2d(d, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"input must be (B,{self.config.in_channels},H,W); got {tuple(x.shape)}")
        s1 = self.stem(x)
        s2 = self.enc2(s1)
        s3 = self.enc3(s2)
        b = self.bottleneck(s3)
        y = self.up3(torch.cat([b, s3], 1))
        y = F.interpolate(y, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec2(torch.cat([y, s2], 1))
        y = F.interpolate(y, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        y = self.dec1(torch.cat([y, s1], 1))
        return {"seg": self.head_seg(y), "vec": self.head_vec(y), "centre": self.head_centre(y)}


def split_vector_channels(vec: torch.Tensor, num_classes: int, num_keypoints: int) -> torch.Tensor:
    """(B, C*(K+1)*2, h, w) -> (B, C, K+1, 2, h, w)."""
    b, _, h, w = vec.shape
    return vec.view(b, num_classes, num_keypoints, 2, h, w)


def prepare_input(rgb: np.ndarray, depth_m: np.ndarray | None, config: NetworkConfig) -> np.ndarray:
    """Resize + normalise one RGB(-D) frame to the (C, H, W) float32 network input.

    Depth is resized with nearest neighbour (no mixing across object edges), made relative to the
    median valid depth and scaled by ``DEPTH_REL_SCALE_M``; invalid (0/NaN) depth becomes 0.
    """
    import cv2

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H,W,3) uint8; got shape {rgb.shape}")
    W, H = config.input_width, config.input_height
    if rgb.shape[1] != W or rgb.shape[0] != H:
        rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA)
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(RGB_MEAN, np.float32)) / np.asarray(RGB_STD, np.float32)
    chans = [x.transpose(2, 0, 1)]
    if config.use_depth:
        chans.append(depth_channel(depth_m, W, H)[None])
    return np.ascontiguousarray(np.concatenate(chans, 0), dtype=np.float32)


def depth_channel(depth_m: np.ndarray | None, width: int, height: int) -> np.ndarray:
    """Relative, clipped depth channel at (height, width); zeros when depth is missing."""
    import cv2

    if depth_m is None:
        return np.zeros((height, width), np.float32)
    d = np.asarray(depth_m, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth_m must be (H,W) float metres; got shape {d.shape}")
    if d.shape != (height, width):
        d = cv2.resize(d, (width, height), interpolation=cv2.INTER_NEAREST)
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros((height, width), np.float32)
    if valid.sum() < 16:
        return out
    med = float(np.median(d[valid]))
    out[valid] = np.clip((d[valid] - med) / DEPTH_REL_SCALE_M, -4.0, 4.0)
    return out


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
