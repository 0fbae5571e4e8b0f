"""Pinhole camera model with optional OpenCV lens distortion.

Why one class: every layer (renderer, PnP, ICP, nodes, BOP I/O) needs the same projection
conventions (optical frame x right, y down, z forward; pixel centres at integer uv). Keeping them
in one validated object avoids silent off-by-one or wrong-K bugs across the stack.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PinholeCamera", "CameraModelError", "DISTORTION_MODELS"]

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
# Principal point this far outside the image (in units of image size) is almost surely a bug
# (K for a different resolution, or row/column swapped). Mildly outside is legal after crops.
_PP_LIMIT = 1.0


class CameraModelError(ValueError):
    """Invalid camera intrinsics/distortion; the message names the problem and the fix."""


def _as_points(a: np.ndarray, ncols: int, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == ncols:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != ncols:
        raise ValueError(f"{name} must have shape (N,{ncols}); got {np.shape(a)}")
    return arr


@dataclass
class PinholeCamera:
    """Intrinsics ``K`` (3x3), image size and OpenCV-ordered distortion coefficients.

    ``dist_coeffs`` follow OpenCV order k1,k2,p1,p2,k3[,k4,k5,k6] for ``plumb_bob`` /
    ``rational_polynomial`` and k1..k4 for ``equidistant`` (fisheye). All-zero coefficients take
    a vectorised numpy fast path.
    """

    K: np.ndarray
    width: int
    height: int
    dist_coeffs: np.ndarray = field(default_factory=lambda: np.zeros(5))
    distortion_model: str = "plumb_bob"
    # Crops (object-centred network inputs) legitimately move the principal point far off the
    # crop, so derived cameras switch this sanity check off; cameras from sensors keep it.
    check_principal_point: bool = field(default=True, repr=False, compare=False)

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.size == 9 and K.ndim == 1:
            K = K.reshape(3, 3)
        if K.shape != (3, 3):
            raise CameraModelError(f"K must be 3x3 (or 9 row-major values); got shape {np.shape(self.K)}")
        if not np.all(np.isfinite(K)):
            raise CameraModelError(f"K contains non-finite values: {K.tolist()}; check the camera_info source")
        if not (K[0, 0] > 0 and K[1, 1] > 0):
            raise CameraModelError(
                f"focal lengths must be > 0; got fx={K[0, 0]}, fy={K[1, 1]} (uncalibrated camera_info has K all zero)")
        if abs(K[2, 2]) < 1e-12:
            raise CameraModelError("K[2,2] must be 1; got 0")
        K = K / K[2, 2]
        if abs(K[1, 0]) > 1e-9 or abs(K[2, 0]) > 1e-9 or abs(K[2, 1]) > 1e-9:
            raise CameraModelError(f"K must be upper-triangular [[fx,s,cx],[0,fy,cy],[0,0,1]]; got {K.tolist()}")
        self.K = K
        try:
            w, h = int(self.width), int(self.height)
        except (TypeError, ValueError) as exc:
            raise CameraModelError(f"width/height must be integers; got {self.width!r}, {self.height!r}") from exc
        if w <= 0 or h <= 0 or w != self.width or h != self.height:
            raise CameraModelError(f"image size must be positive integers; got width={self.width}, height={self.height}")
        self.width, self.height = w, h
        cx, cy = K[0, 2], K[1, 2]
        pp_inside = (-_PP_LIMIT * w <= cx <= (1 + _PP_LIMIT) * w) and (-_PP_LIMIT * h <= cy <= (1 + _PP_LIMIT) * h)
        if self.check_principal_point and not pp_inside:
            # An error, not a warning: such a K projects everything off-image and every
            # downstream stage would silently produce nothing.
            raise CameraModelError(
                f"principal point ({cx:.1f}, {cy:.1f}) is far outside the {w}x{h} image; "
                "K probably belongs to another resolution (use scaled()) or width/height are swapped")
        if self.distortion_model not in DISTORTION_MODELS:
            raise CameraModelError(
                f"unsupported distortion_model {self.distortion_model!r}; use one of {DISTORTION_MODELS}")
        d = np.asarray(self.dist_coeffs if self.dist_coeffs is not None else [], dtype=np.float64).ravel()
        if not np.all(np.isfinite(d)):
            raise CameraModelError(f"dist_coeffs contain non-finite values: {d.tolist()}")
        if self.distortion_model == "equidistant":
            if d.size == 0:
                d = np.zeros(4)
            if d.size != 4:
                raise CameraModelError(f"equidistant distortion needs 4 coefficients k1..k4; got {d.size}")
        else:
            if d.size == 0:
                d = np.zeros(5)
            if d.size not in (4, 5, 8, 12, 14):
                raise CameraModelError(
                    f"dist_coeffs must have 4, 5, 8, 12 or 14 values (OpenCV order); got {d.size}")
        self.dist_coeffs = d

    # ------------------------------------------------------------------ properties
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist_coeffs != 0.0))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    # ------------------------------------------------------------------ projection
    def project(self, points_cam_m: np.ndarray) -> np.ndarray:
        """Project (N,3) camera-frame points to (N,2) pixel uv; points with z <= 0 give NaN."""
        pts = _as_points(points_cam_m, 3, "points_cam_m")
        uv = np.full((pts.shape[0], 2), np.nan)
        z = pts[:, 2]
        ok = np.isfinite(pts).all(axis=1) & (z > 0)
        if not np.any(ok):
            return uv
        p = pts[ok]
        if not self.has_distortion:
            x = p[:, 0] / p[:, 2]
            y = p[:, 1] / p[:, 2]
            uv[ok, 0] = self.K[0, 0] * x + self.K[0, 1] * y + self.K[0, 2]
            uv[ok, 1] = self.K[1, 1] * y + self.K[1, 2]
            return uv
        import cv2

        zero = np.zeros(3)
        if self.distortion_model == "equidistant":
            out, _ = cv2.fisheye.projectPoints(p.reshape(-1, 1, 3), zero, zero, self.K, self.dist_coeffs)
        else:
            out, _ = cv2.projectPoints(p.reshape(-1, 1, 3), zero, zero, self.K, self.dist_coeffs)
        uv[ok] = out.reshape(-1, 2)
        return uv

    def normalized_rays(self, uv: np.ndarray) -> np.ndarray:
        """(N,2) pixels -> (N,2) undistorted normalised image coordinates (x/z, y/z)."""
        uv = _as_points(uv, 2, "uv")
        if not self.has_distortion:
            y = (uv[:, 1] - self.cy) / self.fy
            x = (uv[:, 0] - self.cx - self.K[0, 1] * y) / self.fx
            return np.stack([x, y], axis=1)
        import cv2

        src = uv.reshape(-1, 1, 2)
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(src, self.K, self.dist_coeffs)
        else:
            # Iterative solver with a tight criterion so round trips are sub-pixel exact.
            crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
            out = cv2.undistortPointsIter(src, self.K, self.dist_coeffs, None, None, crit)
        return out.reshape(-1, 2)

    def backproject(self, uv: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
        """(N,2) pixels + (N,) z-depth in metres -> (N,3) camera-frame points (undistorts uv)."""
        xy = self.normalized_rays(uv)
        d = np.asarray(depth_m, dtype=np.float64).ravel()
        if d.size == 1 and xy.shape[0] != 1:
            d = np.full(xy.shape[0], float(d[0]))
        if d.shape[0] != xy.shape[0]:
            raise ValueError(f"depth_m must have one value per uv row; got {d.shape[0]} for {xy.shape[0]} pixels")
        return np.stack([xy[:, 0] * d, xy[:, 1] * d, d], axis=1)

    def depth_to_points(self, depth_m: np.ndarray, mask: np.ndarray | None = None,
                        stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Depth image (H,W) metres -> ((N,3) points_cam_m, (N,2) int pixel uv).

        Zero, negative, NaN and inf depths are skipped; ``mask`` (H,W) bool restricts pixels;
        ``stride`` subsamples rows and columns for speed.
        """
        depth = np.asarray(depth_m)
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth_m shape {depth.shape} does not match camera size (H,W)=({self.height},{self.width}); "
                             "resize the depth or use camera.scaled()")
        stride = int(stride)
        if stride < 1:
            raise ValueError(f"stride must be >= 1; got {stride}")
        d = depth[::stride, ::stride]
        with np.errstate(invalid="ignore"):
            valid = d > 0  # False for NaN; inf filtered below
        valid &= np.isfinite(d)
        if mask is not None:
            m = np.asarray(mask)
            if m.shape != depth.shape:
                raise ValueError(f"mask shape {m.shape} does not match depth shape {depth.shape}")
            valid &= m[::stride, ::stride].astype(bool)
        flat = np.flatnonzero(valid)
        cols = d.shape[1]
        vs = (flat // cols) * stride
        us = (flat % cols) * stride
        uv = np.stack([us, vs], axis=1).astype(np.int64)
        if flat.size == 0:
            return np.zeros((0, 3)), uv
        z = d.ravel()[flat].astype(np.float64)
        rays = self._ray_grid(stride).reshape(-1, 2)[flat]  # cached undistorted (x/z, y/z) per pixel
        pts = np.empty((flat.size, 3))
        pts[:, 0] = rays[:, 0] * z
        pts[:, 1] = rays[:, 1] * z
        pts[:, 2] = z
        return pts, uv

    def _ray_grid(self, stride: int) -> np.ndarray:
        """(H',W',2) normalised rays of the strided pixel grid, cached per (K, distortion, stride)."""
        key = (stride, self.width, self.height, self.K.tobytes(), self.dist_coeffs.tobytes(), self.distortion_model)
        cache = self.__dict__.setdefault("_ray_cache", {})
        grid = cache.get(key)
        if grid is None:
            vs, us = np.mgrid[0:self.height:stride, 0:self.width:stride]
            uv = np.stack([us.ravel(), vs.ravel()], axis=1).astype(np.float64)
            grid = self.normalized_rays(uv).reshape(us.shape[0], us.shape[1], 2)
            if len(cache) > 4:
                cache.clear()
            cache[key] = grid
        return grid

    def in_image(self, uv: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(N,) bool: uv finite and inside the image (pixel centres 0..W-1, 0..H-1) with margin."""
        uv = _as_points(uv, 2, "uv")
        with np.errstate(invalid="ignore"):
            return (np.isfinite(uv).all(axis=1) & (uv[:, 0] >= -0.5 + margin) & (uv[:, 1] >= -0.5 + margin)
                    & (uv[:, 0] < self.width - 0.5 - margin) & (uv[:, 1] < self.height - 0.5 - margin))

    # ------------------------------------------------------------------ derived cameras
    def scaled(self, sx: float, sy: float | None = None) -> "PinholeCamera":
        """Camera for the image resized by (sx, sy); pixel-centre convention preserved."""
        sy = sx if sy is None else sy
        if not (sx > 0 and sy > 0 and math.isfinite(sx) and math.isfinite(sy)):
            raise ValueError(f"scale factors must be finite and > 0; got sx={sx}, sy={sy}")
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return PinholeCamera(K, max(1, int(round(self.width * sx))), max(1, int(round(self.height * sy))),
                             self.dist_coeffs.copy(), self.distortion_model,
                             check_principal_point=self.check_principal_point)

    def with_size(self, width: int, height: int) -> "PinholeCamera":
        """Camera for the same sensor resized to (width, height)."""
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"size must be > 0; got {width}x{height}")
        cam = self.scaled(int(width) / self.width, int(height) / self.height)
        cam.width, cam.height = int(width), int(height)
        return cam

    def cropped(self, x0: int, y0: int, w: int, h: int) -> "PinholeCamera":
        """Camera for the crop image[y0:y0+h, x0:x0+w]."""
        if w <= 0 or h <= 0:
            raise ValueError(f"crop size must be > 0; got {w}x{h}")
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return PinholeCamera(K, int(w), int(h), self.dist_coeffs.copy(), self.distortion_model,
                             check_principal_point=False)

    @classmethod
    def from_fov(cls, width: int, height: int, fov_x_deg: float) -> "PinholeCamera":
        """Ideal square-pixel camera with the given horizontal field of view, principal point centred."""
        if not (0.0 < fov_x_deg < 180.0):
            raise ValueError(f"fov_x_deg must be in (0, 180); got {fov_x_deg}")
        f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2.0)
        K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
        return cls(K, int(width), int(height))

    def __repr__(self) -> str:
        return (f"PinholeCamera({self.width}x{self.height}, fx={self.fx:.2f}, fy={self.fy:.2f}, "
                f"cx={self.cx:.2f}, cy={self.cy:.2f}, model={self.distortion_model}, "
                f"distorted={self.has_distortion})")
