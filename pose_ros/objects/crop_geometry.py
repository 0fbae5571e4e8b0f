"""Object-centric square crops: where to cut, how to cut, and how crop pixels map back to the image.

Why a crop: the correspondence stage (``correspondence_net``) sees every object at the same size
whatever its distance and the camera's focal length, so a small network learns one scale instead of
all of them (CDPN's "dynamic zoom-in"). The box is a square around the instance's visible-mask
bounding box, enlarged by ``pad`` so that the occluded remainder of the object and a margin of
context fit in; training jitters centre and size the way a detector's masks are off.

Everything is one affine map ``A`` (2x3, image pixel -> crop pixel, uniform scale, no rotation):
crop pixel ``q`` comes from image pixel ``(q - A[:, 2]) / s``. Pixel centres are at integer
coordinates in both frames (OpenCV's convention), so back-projection needs no half-pixel terms.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CropBox", "crop_box_from_mask", "jitter_box", "crop_image", "crop_to_image_px", "image_to_crop_px"]


@dataclass(frozen=True)
class CropBox:
    """Square box in image pixels: centre (u, v) and side length."""

    cu: float
    cv: float
    side_px: float

    def affine(self, size: int) -> np.ndarray:
        """(2,3) image pixel -> crop pixel for a ``size`` x ``size`` crop."""
        s = size / self.side_px
        # image point (cu, cv) lands on the crop's centre (size - 1) / 2
        return np.array([[s, 0.0, (size - 1) / 2.0 - s * self.cu],
                         [0.0, s, (size - 1) / 2.0 - s * self.cv]], np.float64)


def crop_box_from_mask(mask: np.ndarray, pad: float = 1.4, min_side_px: float = 16.0) -> CropBox | None:
    """Square box around a mask's bounding box (None for an empty mask)."""
    vs, us = np.nonzero(mask)
    if len(us) == 0:
        return None
    u0, u1, v0, v1 = float(us.min()), float(us.max()), float(vs.min()), float(vs.max())
    side = max(u1 - u0 + 1.0, v1 - v0 + 1.0) * float(pad)
    return CropBox((u0 + u1) / 2.0, (v0 + v1) / 2.0, max(side, float(min_side_px)))


def jitter_box(box: CropBox, rng: np.random.Generator, shift: float = 0.12, scale: tuple[float, float] = (0.8, 1.25),
               ) -> CropBox:
    """The box a detector might have given: centre moved by up to ``shift`` x side, side scaled."""
    d = rng.uniform(-shift, shift, 2) * box.side_px
    return CropBox(box.cu + float(d[0]), box.cv + float(d[1]), box.side_px * float(rng.uniform(*scale)))


def crop_image(img: np.ndarray, box: CropBox, size: int, nearest: bool = False) -> np.ndarray:
    """Cut ``box`` out of ``img`` resampled to ``size`` x ``size`` (zeros outside the image).

    Colour: area-like averaging when shrinking (a blur before linear sampling), linear when
    enlarging. Depth and labels: ``nearest`` (no mixing across object edges).
    """
    A = box.affine(size)
    src = img
    s = A[0, 0]
    if not nearest and s < 0.5:
        k = 0.5 / s                          # anti-alias: Gaussian of ~half the sampling step
        src = cv2.GaussianBlur(img, (0, 0), k * 0.6)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(src, A, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_to_image_px(q: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """(N,2) crop pixels of a ``size`` crop -> (N,2) image pixels."""
    A = box.affine(size)
    return (np.asarray(q, np.float64) - A[:, 2]) / A[0, 0]


def image_to_crop_px(p: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """(N,2) image pixels -> (N,2) crop pixels of a ``size`` crop."""
    A = box.affine(size)
    return np.asarray(p, np.float64) * A[0, 0] + A[:, 2]
