"""Lift 2D keypoints to 3D camera-frame points with the aligned depth image.

Per keypoint (BlazePose-33 order):
1. depth: the median of the valid depths in a small k x k window around the pixel (k scales
   with the image size), only for confident keypoints; the median shrugs off speckle and a few
   background pixels at the silhouette.
2. gating: with model landmarks, each keypoint has an expected depth (torso depth + the model's
   z offset from its torso); a second pass takes the median over only the window pixels within
   `model_depth_tolerance_m` of it, so a wrist at a limb's edge reads the limb, not the wall
   behind, even when the wall covers most of the window.
3. sanity: a depth is rejected when it lies more than `body_extent_m` from the torso's median
   depth (background / foreground clutter), or when it breaks the model's own relative depth
   (depth minus torso depth differs from the model landmark's z minus the model torso's z by more
   than `model_depth_tolerance_m`: e.g. a wrist hidden behind a table reads the table).
4. fallback: every keypoint without an accepted depth takes the model's metric landmark
   (hip-centred, from the backend) placed in the camera frame by aligning the model to the
   depth-lifted anchors: a rigid Kabsch fit (rotation + translation, no scale) on the accepted
   torso keypoints when at least 3 non-collinear ones exist, otherwise translation only (mean
   offset). With no depth at all, `pnp_fallback` places the model with PnP on the 2D keypoints.

Sources are plain ints (conventions.SOURCE_NONE / _DEPTH / _MODEL), matching HumanKeypoint.msg.
Depth gives the skin surface, not the joint centre; `joint_depth_offset_m` pushes depth-lifted
points along z by a constant (0 by default, so what is measured is what is reported).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.human.conventions import BLAZEPOSE33_TORSO, SOURCE_DEPTH, SOURCE_MODEL, SOURCE_NONE


class DepthImageError(ValueError):
    """A depth image that does not match the colour image / camera."""


@dataclass
class LiftingConfig:
    window_frac: float = 0.012          # window side as a fraction of the image's larger side
    min_window_px: int = 3
    max_window_px: int = 21
    min_valid_fraction: float = 0.2     # of window pixels with valid depth
    min_depth_m: float = 0.15
    max_depth_m: float = 8.0
    depth_min_confidence: float = 0.5   # keypoints less visible than this do not read depth
    min_confidence: float = 0.0         # keypoints less visible than this get no 3D at all
    body_extent_m: float = 1.0          # max |depth - torso depth| for a body keypoint
    model_depth_tolerance_m: float = 0.4
    alignment: str = "rigid"            # "rigid" | "translation"
    pnp_fallback: bool = True
    joint_depth_offset_m: float = 0.0

    def __post_init__(self) -> None:
        if self.alignment not in ("rigid", "translation"):
            raise ValueError(f"LiftingConfig.alignment={self.alignment!r}: use 'rigid' or 'translation'")
        if not 0 < self.min_depth_m < self.max_depth_m:
            raise ValueError(f"need 0 < min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}")
        if self.min_window_px < 1 or self.max_window_px < self.min_window_px:
            raise ValueError("need 1 <= min_window_px <= max_window_px")
        if self.body_extent_m <= 0 or self.model_depth_tolerance_m <= 0:
            raise ValueError("body_extent_m and model_depth_tolerance_m must be > 0")


@dataclass
class LiftResult:
    points_cam_m: np.ndarray   # (N, 3), NaN where source is NONE
    source: np.ndarray         # (N,) int8 SOURCE_*
    depth_read_m: np.ndarray   # (N,) plain window median before gating and checks (NaN = none)
    rejected: np.ndarray       # (N,) bool: a depth was read but failed a sanity check
    alignment: str             # how the model fallback was placed: rigid|translation|pnp|none


def window_size_px(width: int, height: int, config: LiftingConfig) -> int:
    """Odd window side in pixels for an image of this size."""
    k = int(round(config.window_frac * max(width, height)))
    k = int(np.clip(k, config.min_window_px, config.max_window_px))
    return k if k % 2 == 1 else k + 1


def sample_depth(depth_m: np.ndarray, uv_px: np.ndarray, k: int, config: LiftingConfig,
                 expected_m: np.ndarray | None = None, gate_m: float = np.inf) -> np.ndarray:
    """(N,) robust depth (window median of valid pixels) at each uv; NaN where unusable.

    With expected_m (N,), only pixels within gate_m of keypoint i's expected depth count (NaN
    expectations leave that keypoint ungated). All windows are gathered and reduced at once:
    a per-keypoint Python loop cost several ms per frame, a real share of the teleop budget."""
    height, width = depth_m.shape
    uv_px = np.asarray(uv_px, dtype=np.float64).reshape(-1, 2)
    n = len(uv_px)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    half = k // 2
    need = max(1.0, config.min_valid_fraction * k * k)
    with np.errstate(invalid="ignore"):
        centre = np.rint(uv_px)          # round half to even, like round()
    inside = np.isfinite(centre).all(axis=1)
    inside &= (centre[:, 0] >= 0) & (centre[:, 0] < width) & (centre[:, 1] >= 0) & (centre[:, 1] < height)
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return out
    ui = centre[idx, 0].astype(np.int64)
    vi = centre[idx, 1].astype(np.int64)
    off = np.arange(-half, half + 1)
    rows = (vi[:, None] + off[None, :])[:, :, None]          # (M, k, 1)
    cols = (ui[:, None] + off[None, :])[:, None, :]          # (M, 1, k)
    in_img = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)   # windows clipped at the border
    win = depth_m[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)].astype(np.float64)
    with np.errstate(invalid="ignore"):
        ok = in_img & np.isfinite(win) & (win >= config.min_depth_m) & (win <= config.max_depth_m)
        if expected_m is not None:
            exp = np.asarray(expected_m, dtype=np.float64)[idx]
            gated = np.isfinite(exp)
            ok &= ~gated[:, None, None] | (np.abs(win - exp[:, None, None]) <= gate_m)
    vals = np.where(ok, win, np.nan).reshape(len(idx), -1)
    count = ok.reshape(len(idx), -1).sum(axis=1)
    vals.sort(axis=1)                    # NaN last: the valid values come first, in order
    enough = count >= need
    c = np.maximum(count, 1)
    rowsel = np.arange(len(idx))
    median = 0.5 * (vals[rowsel, (c - 1) // 2] + vals[rowsel, c // 2])
    out[idx[enough]] = median[enough]
    return out


def kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising sum |R src + t - dst|^2 (no scale)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    H = (src - mu_s).T @ (dst - mu_d)
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return R, mu_d - R @ mu_s


def _spread_ok(points: np.ndarray, min_m: float = 0.05) -> bool:
    """True when points span a plane (2nd singular value of the centred set above min_m)."""
    if len(points) < 3:
        return False
    s = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return bool(s[1] > min_m)


def _pnp_place(world_m: np.ndarray, uv_px: np.ndarray, confidence: np.ndarray,
               camera: PinholeCamera) -> np.ndarray | None:
    """Place the model skeleton by PnP on its confident 2D keypoints; None if it fails."""
    import cv2

    use = (confidence >= 0.5) & np.isfinite(uv_px).all(axis=1) & np.isfinite(world_m).all(axis=1)
    if use.sum() < 6:
        return None
    ok, rvec, tvec = cv2.solvePnP(world_m[use].astype(np.float64), uv_px[use].astype(np.float64),
                                  camera.K, camera.dist_coeffs, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return None
    R, _ = cv2.Rodrigues(rvec)
    placed = world_m @ R.T + tvec.reshape(1, 3)
    if np.median(placed[:, 2]) <= 0:
        return None
    return placed


def lift_keypoints(uv_px: np.ndarray, confidence: np.ndarray, world_m: np.ndarray | None,
                   depth_m: np.ndarray | None, camera: PinholeCamera,
                   config: LiftingConfig | None = None,
                   anchor_indices: tuple[int, ...] = BLAZEPOSE33_TORSO) -> LiftResult:
    """3D camera-frame keypoints from 2D keypoints + aligned depth (+ model landmarks).

    uv_px (N,2), confidence (N,), world_m (N,3) or None, depth_m (H,W) metres (0/NaN invalid) or
    None. anchor_indices are the torso keypoints used as reference depth and alignment anchors.
    """
    config = config or LiftingConfig()
    uv_px = np.asarray(uv_px, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    n = len(uv_px)
    if uv_px.shape != (n, 2) or confidence.shape != (n,):
        raise ValueError(f"uv_px must be (N,2) and confidence (N,); got {uv_px.shape}, {confidence.shape}")
    if world_m is not None:
        world_m = np.asarray(world_m, dtype=np.float64)
        if world_m.shape != (n, 3):
            raise ValueError(f"world_m must be (N,3) like uv_px; got {world_m.shape}")
    anchors = np.array([a for a in anchor_indices if a < n], dtype=np.int64)

    points = np.full((n, 3), np.nan)
    source = np.full(n, SOURCE_NONE, dtype=np.int8)
    depth_read = np.full(n, np.nan)
    rejected = np.zeros(n, dtype=bool)

    if depth_m is not None:
        depth_m = np.asarray(depth_m)
        if depth_m.shape != (camera.height, camera.width):
            raise DepthImageError(
                f"depth_m shape {depth_m.shape} != camera (H,W)=({camera.height},{camera.width}): "
                "use the depth aligned to the colour image (aligned_depth_to_color)")
        k = window_size_px(camera.width, camera.height, config)
        usable = confidence >= config.depth_min_confidence
        depth_read = np.where(usable, sample_depth(depth_m, uv_px, k, config), np.nan)
        cand = np.isfinite(depth_read)
        torso_cand = anchors[cand[anchors]] if len(anchors) else anchors
        ref_idx = torso_cand if len(torso_cand) else np.flatnonzero(cand)
        if len(ref_idx):
            z_ref = float(np.median(depth_read[ref_idx]))
            depth_use = depth_read
            expected = None
            if world_m is not None and len(torso_cand):
                model_ref = float(np.median(world_m[torso_cand, 2]))
                expected = z_ref + (world_m[:, 2] - model_ref)
                gated = sample_depth(depth_m, uv_px, k, config, expected, config.model_depth_tolerance_m)
                depth_use = np.where(usable, gated, np.nan)
            ok = np.isfinite(depth_use)
            with np.errstate(invalid="ignore"):
                bad = ok & (np.abs(depth_use - z_ref) > config.body_extent_m)
                if expected is not None:
                    bad |= ok & (np.abs(depth_use - expected) > config.model_depth_tolerance_m)
            accepted = ok & ~bad
            rejected = cand & ~accepted
            if np.any(accepted):
                z = depth_use[accepted] + config.joint_depth_offset_m
                points[accepted] = camera.backproject(uv_px[accepted], z)
                source[accepted] = SOURCE_DEPTH

    alignment = "none"
    want = (source == SOURCE_NONE) & (confidence >= config.min_confidence)
    if world_m is not None and np.any(want):
        depth_idx = np.flatnonzero(source == SOURCE_DEPTH)
        anchor_idx = np.intersect1d(anchors, depth_idx)
        if len(anchor_idx) == 0:
            anchor_idx = depth_idx
        placed = None
        if len(anchor_idx):
            src, dst = world_m[anchor_idx], points[anchor_idx]
            if config.alignment == "rigid" and _spread_ok(src) and _spread_ok(dst):
                R, t = kabsch(src, dst)
                placed, alignment = world_m @ R.T + t, "rigid"
            else:
                placed, alignment = world_m + (dst - src).mean(axis=0), "translation"
        elif config.pnp_fallback:
            placed = _pnp_place(world_m, uv_px, confidence, camera)
            alignment = "pnp" if placed is not None else "none"
        if placed is not None:
            points[want] = placed[want]
            source[want] = SOURCE_MODEL
    return LiftResult(points_cam_m=points, source=source, depth_read_m=depth_read,
                      rejected=rejected, alignment=alignment)
