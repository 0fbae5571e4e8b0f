"""Procedural RGB backgrounds for synthetic training images (no image datasets needed).

Why: a keypoint network trained on renders over a flat colour learns to find "anything not
grey". Random gradients, value noise, shapes and stripes force it to use object appearance.
All functions are deterministic for a given ``rng`` state and return (H,W,3) uint8.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["random_background", "gradient", "value_noise", "random_shapes", "stripes"]


def _check_size(height: int, width: int) -> None:
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"background size must be positive; got height={height}, width={width}")


def gradient(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Linear colour gradient in a random direction between two random colours."""
    _check_size(height, width)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    # A linear ramp survives bilinear upsampling exactly, so build it small and resize (fast).
    h, w = max(2, height // 8), max(2, width // 8)
    s = np.add.outer(np.linspace(0, 1, h) * np.sin(ang) * height, np.linspace(0, 1, w) * np.cos(ang) * width)
    s = (s - s.min()) / max(float(np.ptp(s)), 1e-6)
    small = (c0[None, None, :] * (1 - s[..., None]) + c1[None, None, :] * s[..., None]).astype(np.float32)
    return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR), 0, 255).astype(np.uint8)


def value_noise(height: int, width: int, rng: np.random.Generator, octaves: int = 4) -> np.ndarray:
    """Multi-octave smooth colour noise (upsampled random grids), like cloudy textures."""
    _check_size(height, width)
    acc = np.zeros((height, width, 3), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
        acc += amp * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    acc /= total
    lo, hi = rng.uniform(0, 120), rng.uniform(150, 255)
    return np.clip(lo + (hi - lo) * acc, 0, 255).astype(np.uint8)


def stripes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Rotated stripes of two colours with random period: strong straight edges as distractors."""
    _check_size(height, width)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    period = rng.uniform(8, 60)
    ang = rng.uniform(0, np.pi)
    k = np.float32(2 * np.pi / period)
    phase = np.add.outer(np.arange(height, dtype=np.float32) * np.float32(np.sin(ang)) * k,
                         np.arange(width, dtype=np.float32) * np.float32(np.cos(ang)) * k)
    s = (np.sin(phase) > 0)[..., None]
    return np.where(s, c0.astype(np.uint8), c1.astype(np.uint8))


def random_shapes(height: int, width: int, rng: np.random.Generator, n_shapes: int | None = None,
                  base: np.ndarray | None = None) -> np.ndarray:
    """Random filled circles, rectangles and polylines over ``base`` (or a gradient)."""
    _check_size(height, width)
    img = np.ascontiguousarray(gradient(height, width, rng) if base is None else base.copy())
    n = int(rng.integers(5, 25)) if n_shapes is None else int(n_shapes)
    scale = max(height, width)
    for _ in range(n):
        col = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = int(rng.integers(0, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        if kind == 0:
            cv2.circle(img, (cx, cy), int(rng.uniform(0.02, 0.15) * scale), col, -1, cv2.LINE_AA)
        elif kind == 1:
            w, h = (rng.uniform(0.03, 0.3, 2) * scale).astype(int)
            cv2.rectangle(img, (cx, cy), (cx + int(w), cy + int(h)), col, -1)
        else:
            pts = rng.integers(0, [width, height], (int(rng.integers(2, 6)), 2)).astype(np.int32)
            cv2.polylines(img, [pts], False, col, int(rng.integers(1, 8)), cv2.LINE_AA)
    return img


def random_background(height: int, width: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """One of gradient / value noise / stripes / shapes-over-noise, chosen from ``rng``."""
    rng = np.random.default_rng(0) if rng is None else rng
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return gradient(height, width, rng)
    if kind == 1:
        return value_noise(height, width, rng)
    if kind == 2:
        return stripes(height, width, rng)
    return random_shapes(height, width, rng, base=value_noise(height, width, rng))
