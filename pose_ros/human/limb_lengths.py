"""Running estimate of the operator's limb (segment) lengths from 3D skeletons.

Per-segment scaling needs the operator's upper-arm, forearm, thigh ... lengths, but a single
frame's length is noisy (depth noise, a keypoint sliding along the limb, occlusion). A median
over the last `window` confident samples is stable against those outliers and still follows a
new operator once the old samples are reset; a gate rejects samples far from the current median
so a few bad frames never enter, and a long run of rejections (the gate locked onto a wrong
start) restarts that segment.
"""
from __future__ import annotations

import numpy as np


class LimbLengthEstimator:
    """Median of each named segment's length (metres) over a window of confident samples."""

    def __init__(self, names: list[str], window: int = 240, min_samples: int = 5,
                 outlier_ratio: float = 0.35):
        if window < 1 or min_samples < 1:
            raise ValueError(f"window ({window}) and min_samples ({min_samples}) must be >= 1")
        if not outlier_ratio > 0:
            raise ValueError(f"outlier_ratio must be > 0, got {outlier_ratio}")
        self.names = list(names)
        self.window = int(window)
        self.min_samples = int(min_samples)
        self.outlier_ratio = float(outlier_ratio)
        self.reset()

    def reset(self) -> None:
        """Forget every sample (new operator, or the operator was lost)."""
        S = len(self.names)
        self._buf_m = np.full((S, self.window), np.nan)
        self._count = np.zeros(S, dtype=np.int64)      # samples accepted in total
        self._rejected_run = np.zeros(S, dtype=np.int64)
        self._median_m = np.full(S, np.nan)

    def update(self, lengths_m: np.ndarray, valid: np.ndarray) -> None:
        """Add one frame: `lengths_m` (S,) in the order of `names`, `valid` (S,) the confident ones."""
        lengths_m = np.asarray(lengths_m, dtype=np.float64)
        ok = np.asarray(valid, dtype=bool) & np.isfinite(lengths_m) & (lengths_m > 1e-3)
        if not ok.any():
            return
        med = self._median_m
        gated = ok & (self._count >= self.min_samples)
        far = np.zeros_like(ok)
        far[gated] = np.abs(lengths_m[gated] - med[gated]) > self.outlier_ratio * med[gated]
        self._rejected_run[far] += 1
        self._rejected_run[ok & ~far] = 0
        # A gate that rejects half a window in a row was seeded wrongly: start that segment over.
        stuck = self._rejected_run > self.window // 2
        if stuck.any():
            self._buf_m[stuck] = np.nan
            self._count[stuck] = 0
            self._rejected_run[stuck] = 0
            med[stuck] = np.nan
            far &= ~stuck
        take = np.flatnonzero(ok & ~far)
        if take.size == 0:
            return
        self._buf_m[take, self._count[take] % self.window] = lengths_m[take]
        self._count[take] += 1
        # Median of each row's filled part: unfilled slots (NaN) sort to the end.
        rows = np.sort(self._buf_m[take], axis=1)
        n = np.minimum(self._count[take], self.window)
        r = np.arange(take.size)
        med[take] = 0.5 * (rows[r, (n - 1) // 2] + rows[r, n // 2])

    @property
    def lengths_m(self) -> np.ndarray:
        """(S,) current estimate, NaN for segments never measured."""
        return self._median_m.copy()

    @property
    def sample_counts(self) -> np.ndarray:
        """(S,) samples in the current window (at most `window`)."""
        return np.minimum(self._count, self.window)

    def as_dict(self) -> dict[str, float]:
        """{segment name: length in metres} for the measured segments (what a node reports)."""
        return {n: float(v) for n, v in zip(self.names, self._median_m) if np.isfinite(v)}
