"""One-Euro filter (Casiez, Roussel, Vogel, CHI 2012), vectorised and time-stamped.

Why One-Euro: it adapts its cutoff to speed, so a still operator is smoothed hard (no jitter on
the robot) while a fast arm motion passes with little lag. Each element of the array (e.g. every
coordinate of every keypoint) is filtered independently; NaN inputs pass through as NaN and
restart that element, so a keypoint that disappears does not drag a stale value back in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class OneEuroConfig:
    """min_cutoff (Hz): smoothing at rest (lower = smoother, more lag).
    beta (s/unit): how fast the cutoff rises with speed (higher = less lag when moving).
    d_cutoff (Hz): cutoff of the speed estimate.
    max_gap_s: a pause longer than this (dropped frames, lost track) restarts the filter."""

    min_cutoff: float = 1.0
    beta: float = 0.5
    d_cutoff: float = 1.0
    max_gap_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "d_cutoff", "max_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"OneEuroConfig.{name}={value} must be a positive finite number")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"OneEuroConfig.beta={self.beta} must be >= 0")


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    """Exponential smoothing factor of a first-order low-pass at cutoff_hz for step dt_s."""
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Filter arrays of a fixed shape sampled at (possibly irregular) times."""

    def __init__(self, config: OneEuroConfig | None = None) -> None:
        self.config = config or OneEuroConfig()
        self.reset()

    def reset(self) -> None:
        """Forget all state: the next sample is passed through unchanged."""
        self._x_hat: np.ndarray | None = None
        self._dx_hat: np.ndarray | None = None
        self._t_s: float | None = None
        self.resets = 0

    def __call__(self, x: np.ndarray, t_s: float) -> np.ndarray:
        return self.filter(x, t_s)

    def filter(self, x: np.ndarray, t_s: float) -> np.ndarray:
        """Filtered copy of x observed at time t_s (seconds)."""
        x = np.asarray(x, dtype=np.float64)
        if not math.isfinite(t_s):
            raise ValueError(f"timestamp {t_s} is not finite: pass the sample time in seconds")
        if self._x_hat is not None and x.shape != self._x_hat.shape:
            raise ValueError(f"sample shape {x.shape} differs from the filter's {self._x_hat.shape}: "
                             "use one filter per keypoint set (or call reset())")
        dt = None if self._t_s is None else t_s - self._t_s
        if dt is None or dt <= 0.0 or dt > self.config.max_gap_s:
            # First sample, time going backwards / repeated stamp, or a long gap: restart.
            if dt is not None:
                self.resets += 1
            self._x_hat = x.copy()
            self._dx_hat = np.zeros_like(x)
            self._t_s = t_s
            return x.copy()

        assert self._x_hat is not None and self._dx_hat is not None
        prev = self._x_hat
        fresh = np.isfinite(x) & ~np.isfinite(prev)  # element (re)appears: start it at x
        dx = np.where(np.isfinite(prev), (x - prev) / dt, 0.0)
        a_d = _alpha(self.config.d_cutoff, dt)
        dx_hat = np.where(fresh, 0.0, a_d * dx + (1.0 - a_d) * self._dx_hat)
        cutoff = self.config.min_cutoff + self.config.beta * np.abs(dx_hat)
        a = _alpha(cutoff, dt)
        x_hat = np.where(fresh, x, a * x + (1.0 - a) * prev)
        # NaN input -> NaN output and forgotten derivative.
        missing = ~np.isfinite(x)
        x_hat = np.where(missing, np.nan, x_hat)
        dx_hat = np.where(missing, 0.0, dx_hat)
        self._x_hat, self._dx_hat, self._t_s = x_hat, dx_hat, t_s
        return x_hat.copy()
