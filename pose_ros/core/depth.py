"""Small depth-image utilities shared by lifting, ICP, scoring and the sensors layer.

Why: depth images mark missing data as 0 or NaN and have holes at object edges; every consumer
needs the same "is this valid, what is the depth near this pixel" logic, done vectorised.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "valid_depth_mask", "depth_m_from_raw", "depth_raw_from_m", "sample_depth_nearest", "sample_depth_bilinear",
    "median_depth_in_window",
]


def _check_depth(depth_m: np.ndarray) -> np.ndarray:
    d = np.asarray(depth_m)
    if d.ndim != 2:
        raise ValueError(f"depth_m must be a (H,W) image; got shape {d.shape}")
    return d


def _check_uv(uv: np.ndarray) -> np.ndarray:
    a = np.asarray(uv, dtype=np.float64)
    if a.ndim == 1 and a.shape[0] == 2:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"uv must have shape (N,2); got {np.shape(uv)}")
    return a


def valid_depth_mask(depth_m: np.ndarray, min_m: float = 0.0, max_m: float = np.inf) -> np.ndarray:
    """(H,W) bool: finite and within (min_m, max_m]; 0/NaN/inf/negative are invalid."""
    d = _check_depth(depth_m)
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > max(min_m, 0.0)) & (d <= max_m)


def depth_m_from_raw(raw: np.ndarray, metres_per_unit: float = 0.001) -> np.ndarray:
    """uint16 sensor depth (e.g. RealSense/ROS 16UC1 mm) -> float32 metres, 0 stays 0."""
    if not metres_per_unit > 0:
        raise ValueError(f"metres_per_unit must be > 0; got {metres_per_unit}")
    return np.asarray(raw).astype(np.float32) * np.float32(metres_per_unit)


def depth_raw_from_m(depth_m: np.ndarray, metres_per_unit: float = 0.001) -> tuple[np.ndarray, int]:
    """float metres -> uint16 units (rounded); invalid or out-of-range pixels -> 0.

    Returns (raw, n_dropped) so callers can count/log what did not fit instead of wrapping around.
    """
    if not metres_per_unit > 0:
        raise ValueError(f"metres_per_unit must be > 0; got {metres_per_unit}")
    d = _check_depth(depth_m).astype(np.float64)
    valid = valid_depth_mask(d)
    units = np.zeros(d.shape)
    units[valid] = np.rint(d[valid] / metres_per_unit)
    over = units > 65535
    units[over] = 0
    return units.astype(np.uint16), int(over.sum())


def sample_depth_nearest(depth_m: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(N,) depth at the nearest pixel of each uv; NaN outside the image or where invalid."""
    d = _check_depth(depth_m)
    uv = _check_uv(uv)
    h, w = d.shape
    out = np.full(len(uv), np.nan)
    fin = np.isfinite(uv).all(axis=1)
    ui = np.full(len(uv), -1)
    vi = np.full(len(uv), -1)
    ui[fin] = np.rint(uv[fin, 0]).astype(int)
    vi[fin] = np.rint(uv[fin, 1]).astype(int)
    inside = fin & (ui >= 0) & (vi >= 0) & (ui < w) & (vi < h)
    vals = d[vi[inside], ui[inside]].astype(np.float64)
    vals[~(np.isfinite(vals) & (vals > 0))] = np.nan
    out[inside] = vals
    return out


def sample_depth_bilinear(depth_m: np.ndarray, uv: np.ndarray, max_rel_jump: float = 0.05) -> np.ndarray:
    """(N,) bilinearly interpolated depth at sub-pixel uv, using only valid neighbours.

    Neighbours that are invalid get zero weight. If the valid neighbours differ by more than
    ``max_rel_jump`` x depth (an occlusion edge), interpolating would invent a surface between
    foreground and background, so the nearest valid neighbour is returned instead.
    NaN where no neighbour is valid or uv is outside the image.
    """
    d = _check_depth(depth_m).astype(np.float64)
    uv = _check_uv(uv)
    h, w = d.shape
    out = np.full(len(uv), np.nan)
    fin = np.isfinite(uv).all(axis=1)
    inside = fin.copy()
    inside[fin] = (uv[fin, 0] >= -0.5) & (uv[fin, 1] >= -0.5) & (uv[fin, 0] <= w - 0.5) & (uv[fin, 1] <= h - 0.5)
    if not inside.any():
        return out
    u = np.clip(uv[inside, 0], 0, w - 1)
    v = np.clip(uv[inside, 1], 0, h - 1)
    u0 = np.minimum(np.floor(u).astype(int), w - 2) if w > 1 else np.zeros(len(u), int)
    v0 = np.minimum(np.floor(v).astype(int), h - 2) if h > 1 else np.zeros(len(v), int)
    u1 = np.minimum(u0 + 1, w - 1)
    v1 = np.minimum(v0 + 1, h - 1)
    fu, fv = u - u0, v - v0
    corners = np.stack([d[v0, u0], d[v0, u1], d[v1, u0], d[v1, u1]], axis=1)
    wts = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], axis=1)
    ok = np.isfinite(corners) & (corners > 0)
    wts = np.where(ok, wts, 0.0)
    cz = np.where(ok, corners, 0.0)
    wsum = wts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        interp = (wts * cz).sum(1) / wsum
        cmax = np.where(ok, corners, -np.inf).max(1)
        cmin = np.where(ok, corners, np.inf).min(1)
        edge = (cmax - cmin) > max_rel_jump * cmin
    nearest = cz[np.arange(len(cz)), np.argmax(np.where(ok, wts + 1e-9, -1.0), axis=1)]
    res = np.where(edge, nearest, interp)
    res[~ok.any(1)] = np.nan
    out[inside] = res
    return out


def median_depth_in_window(depth_m: np.ndarray, uv: np.ndarray, radius: int = 2,
                           min_valid: int = 1) -> np.ndarray:
    """(N,) median of valid depths in a (2r+1)^2 window around each rounded uv.

    Robust depth for a keypoint that may sit on a hole or an edge pixel. NaN where fewer than
    ``min_valid`` valid pixels are in the window or uv is non-finite/outside the image.
    """
    d = _check_depth(depth_m).astype(np.float64)
    uv = _check_uv(uv)
    if radius < 0:
        raise ValueError(f"radius must be >= 0; got {radius}")
    h, w = d.shape
    out = np.full(len(uv), np.nan)
    fin = np.isfinite(uv).all(axis=1)
    ui = np.zeros(len(uv), int)
    vi = np.zeros(len(uv), int)
    ui[fin] = np.rint(uv[fin, 0]).astype(int)
    vi[fin] = np.rint(uv[fin, 1]).astype(int)
    inside = fin & (ui >= 0) & (vi >= 0) & (ui < w) & (vi < h)
    if not inside.any():
        return out
    offs = np.arange(-radius, radius + 1)
    du, dv = np.meshgrid(offs, offs)
    uu = ui[inside, None] + du.ravel()[None]
    vv = vi[inside, None] + dv.ravel()[None]
    in_img = (uu >= 0) & (vv >= 0) & (uu < w) & (vv < h)
    vals = np.full(uu.shape, np.nan)
    vals[in_img] = d[vv[in_img], uu[in_img]]
    vals[~(np.isfinite(vals) & (vals > 0))] = np.nan
    count = np.isfinite(vals).sum(1)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(vals, axis=1)
    med[count < max(1, min_valid)] = np.nan
    out[inside] = med
    return out
