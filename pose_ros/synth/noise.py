"""Depth sensor noise for synthetic frames (structured-light / active-stereo style).

Why: ICP, scoring and the network must see the failure modes of real depth, not perfect
renders: noise that grows with distance, ragged object boundaries, holes at depth
discontinuities and on surfaces seen at grazing angles, random dropouts, a working range and
1 mm quantisation (16UC1 depth).

Default numbers (metres) follow the Kinect v1 model of Nguyen, Izadi & Lovell, "Modeling Kinect
Sensor Noise for Improved 3D Reconstruction and Tracking" (3DIMPVT 2012):
  axial   sigma_z(z, theta) = 0.0012 + 0.0019 (z - 0.4)^2 + 0.0001/sqrt(z) * theta^2/(pi/2 - theta)^2
          (the angle term matters only beyond ~60 deg; theta = angle between normal and view ray)
  lateral sigma_L(theta) [px] = 0.8 + 0.035 theta/(pi/2 - theta)
A RealSense D4xx at 0.5-1.5 m is of the same order (Intel quotes < 2 % RMS at 2 m), so one
model serves both; scale ``axial_*`` for a different sensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DepthNoiseParams", "DepthNoiseModel", "depth_edges", "view_angle_rad"]


@dataclass
class DepthNoiseParams:
    axial_a_m: float = 0.0012          # sigma_z at z0
    axial_b_per_m: float = 0.0019      # quadratic growth: sigma_z = a + b (z - z0)^2
    axial_z0_m: float = 0.4
    axial_angle_c_m: float = 0.0001    # angle term coefficient (Nguyen et al.)
    lateral_sigma_px: float = 0.8      # pixel jitter of where a depth sample comes from
    lateral_angle_px: float = 0.035
    edge_threshold_m: float = 0.01     # neighbour depth jump that counts as a discontinuity ...
    edge_threshold_rel: float = 0.02   # ... or this fraction of the depth, whichever is larger
    edge_width_px: int = 1             # band of pixels around a discontinuity that may vanish
    edge_drop_prob: float = 0.9
    grazing_angle_deg: float = 78.0    # surfaces seen more obliquely than this return nothing
    dropout_prob: float = 0.003        # random isolated holes
    min_range_m: float = 0.2
    max_range_m: float = 4.0
    quantization_m: float = 0.001      # 16UC1 millimetres; 0 disables

    def __post_init__(self) -> None:
        for name in ("axial_a_m", "axial_b_per_m", "axial_angle_c_m", "lateral_sigma_px", "lateral_angle_px",
                     "edge_threshold_m", "edge_threshold_rel", "quantization_m", "min_range_m"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"DepthNoiseParams.{name} must be finite and >= 0; got {v}")
        for name in ("edge_drop_prob", "dropout_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"DepthNoiseParams.{name} is a probability in [0,1]; got {v}")
        if not 0.0 < self.grazing_angle_deg <= 90.0:
            raise ValueError(f"DepthNoiseParams.grazing_angle_deg must be in (0,90]; got {self.grazing_angle_deg}")
        if self.max_range_m <= self.min_range_m:
            raise ValueError(f"max_range_m ({self.max_range_m}) must exceed min_range_m ({self.min_range_m})")
        if int(self.edge_width_px) < 0:
            raise ValueError(f"edge_width_px must be >= 0; got {self.edge_width_px}")

    def sigma_z(self, z_m: np.ndarray, theta_rad: np.ndarray | float = 0.0) -> np.ndarray:
        """Axial standard deviation (m) at depth z and view angle theta (the model above)."""
        z = np.asarray(z_m, dtype=np.float32)
        base = np.float32(self.axial_a_m) + np.float32(self.axial_b_per_m) * (z - np.float32(self.axial_z0_m)) ** 2
        if np.isscalar(theta_rad) and float(theta_rad) == 0.0:
            return base
        th = np.minimum(np.asarray(theta_rad, dtype=np.float32), np.float32(np.deg2rad(89.0)))
        ang = np.float32(self.axial_angle_c_m) / np.sqrt(np.maximum(z, np.float32(1e-3))) * th**2 / (np.float32(np.pi / 2) - th) ** 2
        return base + ang


def depth_edges(depth_m: np.ndarray, threshold_m: float, threshold_rel: float) -> np.ndarray:
    """Valid pixels next to a depth jump or next to a missing pixel (4-neighbourhood)."""
    d = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    dd = np.where(valid, d, 0.0)
    edge = np.zeros(d.shape, bool)
    thr = np.maximum(threshold_m, threshold_rel * dd)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        a, b = tuple(a), tuple(b)
        jump = (np.abs(dd[a] - dd[b]) > np.minimum(thr[a], thr[b])) | (valid[a] != valid[b])
        edge[a] |= jump
        edge[b] |= jump
    return edge & valid


def view_angle_rad(normals_cam: np.ndarray, K: np.ndarray | None = None) -> np.ndarray:
    """Angle between each pixel's surface normal and its viewing ray (0 = facing the camera).

    Without K the viewing ray is approximated by the optical axis (fine for narrow lenses).
    """
    n = np.asarray(normals_cam, dtype=np.float32)
    H, W = n.shape[:2]
    if K is None:
        cos = np.abs(n[..., 2])
    else:
        K = np.asarray(K, dtype=np.float64)
        x = (np.arange(W, dtype=np.float32) - K[0, 2]) / K[0, 0]
        y = (np.arange(H, dtype=np.float32) - K[1, 2]) / K[1, 1]
        inv = 1.0 / np.sqrt(1.0 + x[None, :] ** 2 + y[:, None] ** 2)
        cos = np.abs(n[..., 0] * x[None, :] + n[..., 1] * y[:, None] + n[..., 2]) * inv
    norm = np.sqrt(n[..., 0] * n[..., 0] + n[..., 1] * n[..., 1] + n[..., 2] * n[..., 2])  # cheaper than linalg.norm
    cos = np.where(norm > 1e-6, cos / np.maximum(norm, np.float32(1e-6)), np.float32(1.0))
    return np.arccos(np.clip(cos, 0.0, 1.0))


class DepthNoiseModel:
    """Turns a perfect rendered depth into a plausible sensor depth (0 = missing)."""

    def __init__(self, params: DepthNoiseParams | None = None):
        self.params = params or DepthNoiseParams()

    def apply(self, depth_m: np.ndarray, normals_cam: np.ndarray | None = None,
              rng: np.random.Generator | None = None, K: np.ndarray | None = None) -> np.ndarray:
        """Noisy float32 copy of ``depth_m`` (H,W); NaN/0 inputs stay 0.

        ``normals_cam`` (H,W,3) enables grazing-angle holes and the angle terms; ``K`` makes the
        viewing angle exact per pixel.
        """
        p = self.params
        d = np.asarray(depth_m)
        if d.ndim != 2:
            raise ValueError(f"depth_m must be (H,W); got shape {d.shape}")
        if normals_cam is not None and np.shape(normals_cam) != d.shape + (3,):
            raise ValueError(f"normals_cam must be (H,W,3) matching depth {d.shape}; got {np.shape(normals_cam)}")
        rng = np.random.default_rng() if rng is None else rng
        H, W = d.shape
        clean = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
        theta = view_angle_rad(normals_cam, K).astype(np.float32) if normals_cam is not None else None
        edge = depth_edges(clean, p.edge_threshold_m, p.edge_threshold_rel)

        # Lateral: pixels near discontinuities read their depth from a jittered neighbour, which
        # makes boundaries ragged. On smooth surfaces a sub-pixel shift changes depth far less
        # than the axial noise, so the jitter is applied only in a 2 px band around edges (fast).
        z = clean.copy()
        if p.lateral_sigma_px > 0 or p.lateral_angle_px > 0:
            import cv2

            band = cv2.dilate(edge.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) | (clean <= 0)
            vv, uu = np.nonzero(band)
            sig_l = p.lateral_sigma_px
            if theta is not None:
                th = theta[vv, uu]
                sig_l = sig_l + p.lateral_angle_px * th / np.maximum(np.pi / 2 - th, 1e-2)
            su = np.clip(uu + np.rint(rng.standard_normal(len(uu)) * sig_l).astype(np.int64), 0, W - 1)
            sv = np.clip(vv + np.rint(rng.standard_normal(len(vv)) * sig_l).astype(np.int64), 0, H - 1)
            z[vv, uu] = clean[sv, su]
        valid = z > 0

        # Axial Gaussian noise with the distance (and angle) dependent sigma.
        sig = p.sigma_z(z, theta if theta is not None else 0.0).astype(np.float32)
        out = z + sig * rng.standard_normal((H, W), dtype=np.float32)
        out[~valid] = 0.0

        # Holes: discontinuities, grazing angles, random dropout, range. One uniform draw serves
        # both random drops (edge drop uses its low end, dropout its high end).
        u = rng.random((H, W), dtype=np.float32)
        drop = u > np.float32(1.0 - p.dropout_prob) if p.dropout_prob > 0 else np.zeros((H, W), bool)
        if p.edge_drop_prob > 0 and p.edge_width_px > 0:
            if p.edge_width_px > 1:
                import cv2

                k = 2 * (int(p.edge_width_px) - 1) + 1
                edge = cv2.dilate(edge.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
            drop |= edge & (u < np.float32(p.edge_drop_prob))
        if theta is not None:
            drop |= theta > np.float32(np.deg2rad(p.grazing_angle_deg))
        out[drop] = 0.0
        out[(out < p.min_range_m) | (out > p.max_range_m)] = 0.0
        if p.quantization_m > 0:
            q = np.float32(p.quantization_m)
            out = np.rint(out / q) * q
        return out.astype(np.float32, copy=False)
