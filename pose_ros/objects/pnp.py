"""PnP from voted 2D keypoints: RANSAC (EPnP), then uncertainty-weighted Levenberg-Marquardt.

Why: the voted keypoints come with 2D covariances. RANSAC removes gross outliers; a refinement
that whitens each residual by its keypoint's covariance (PVNet's uncertainty-driven PnP) lets
sharp keypoints dominate blurry ones, and its Jacobian gives the pose covariance
``(J^T Sigma^-1 J)^-1`` that the estimator publishes. Degenerate or implausible solutions are
rejected with a reason instead of being passed on as poses.

Pose covariance convention (ROS ``PoseWithCovariance``): 6x6 over ``[tx, ty, tz, rx, ry, rz]``,
translation in metres and rotation as a small fixed-axis (camera-frame) rotation vector applied
on the left: ``R = exp([r]x) R_hat``, ``t = t_hat + dt``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from pose_ros.core.camera import PinholeCamera

__all__ = ["PnpConfig", "PnpResult", "solve_pnp", "perturb_pose"]


@dataclass
class PnpConfig:
    ransac_reprojection_px: float = 6.0     # in camera-image pixels
    ransac_iterations: int = 100
    ransac_confidence: float = 0.999
    min_inliers: int = 5
    max_keypoint_std_px: float = 30.0       # keypoints blurrier than this (largest std) are dropped
    min_depth_m: float = 0.05
    max_depth_m: float = 10.0
    min_projected_size_px: float = 8.0      # object smaller than this in the image: implausible
    out_of_view_margin: float = 0.5         # centre may lie this fraction of the image size outside
    max_mean_reprojection_px: float = 12.0
    weighted_refine: bool = True


@dataclass
class PnpResult:
    ok: bool
    reason: str                                    # "ok" or why it was rejected
    T_cam_obj: np.ndarray | None = None
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, int))   # indices into the input keypoints
    reprojection_error_px: float = float("nan")    # mean over inliers
    covariance: np.ndarray | None = None           # 6x6 [t, r] (see module doc)
    num_keypoints_used: int = 0


def perturb_pose(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Apply the left perturbation p = [dt(3), dr(3)] to T (the covariance convention)."""
    out = T.copy()
    dR = Rotation.from_rotvec(p[3:6]).as_matrix()
    out[:3, :3] = dR @ T[:3, :3]
    out[:3, 3] = T[:3, 3] + p[:3]
    return out


def _project(camera: PinholeCamera, T: np.ndarray, pts_m: np.ndarray) -> np.ndarray:
    pc = pts_m @ T[:3, :3].T + T[:3, 3]
    if not camera.has_distortion:
        z = np.where(pc[:, 2] > 1e-9, pc[:, 2], 1e-9)
        return np.stack([camera.fx * pc[:, 0] / z + camera.K[0, 1] * pc[:, 1] / z + camera.cx,
                         camera.fy * pc[:, 1] / z + camera.cy], 1)
    return camera.project(pc)


def _whiteners(cov: np.ndarray) -> np.ndarray:
    """(K,2,2) covariances -> (K,2,2) W with W^T W = cov^-1 (residual whitening).

    Closed form (2x2 inverse + Cholesky), vectorised: LAPACK calls for tiny matrices cost
    milliseconds each on a loaded machine (BLAS thread wake-ups), this costs microseconds.
    """
    c = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    a, b, d = c[:, 0, 0] + 1e-6, c[:, 0, 1], c[:, 1, 1] + 1e-6
    det = np.maximum(a * d - b * b, 1e-12)
    p, q, r = d / det, -b / det, a / det                    # inverse [[p, q], [q, r]]
    l11 = np.sqrt(p)
    l21 = q / l11
    l22 = np.sqrt(np.maximum(r - l21 * l21, 1e-12))
    W = np.zeros_like(c)
    W[:, 0, 0], W[:, 0, 1], W[:, 1, 1] = l11, l21, l22     # W = L^T, L = [[l11, 0], [l21, l22]]
    return W


def solve_pnp(keypoints_m: np.ndarray, keypoints_uv: np.ndarray, camera: PinholeCamera,
              covariances_px: np.ndarray | None = None, valid: np.ndarray | None = None,
              object_diameter_m: float | None = None, config: PnpConfig | None = None) -> PnpResult:
    """Pose of the model from 2D-3D keypoint correspondences (image pixels of ``camera``)."""
    cfg = config or PnpConfig()
    X = np.asarray(keypoints_m, dtype=np.float64)
    uv = np.asarray(keypoints_uv, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 3 or uv.shape != (X.shape[0], 2):
        raise ValueError(f"keypoints_m must be (K,3) and keypoints_uv (K,2); got {X.shape} and {uv.shape}")
    K_ = X.shape[0]
    cov = (np.tile(np.eye(2), (K_, 1, 1)) if covariances_px is None
           else np.asarray(covariances_px, dtype=np.float64).reshape(K_, 2, 2))
    use = np.isfinite(uv).all(1) & np.isfinite(X).all(1) & np.isfinite(cov).all((1, 2))
    if valid is not None:
        use &= np.asarray(valid, bool)
    max_std = np.sqrt(np.maximum(np.linalg.eigvalsh(np.where(np.isfinite(cov), cov, 1e12)), 0).max(1))
    use &= max_std <= cfg.max_keypoint_std_px
    idx = np.nonzero(use)[0]
    if len(idx) < max(4, cfg.min_inliers):
        return PnpResult(False, f"too_few_keypoints ({len(idx)} sharp keypoints, need {max(4, cfg.min_inliers)})",
                         num_keypoints_used=len(idx))
    Xo, uvo = X[idx], uv[idx]
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            Xo.reshape(-1, 1, 3), uvo.reshape(-1, 1, 2), camera.K, camera.dist_coeffs,
            iterationsCount=cfg.ransac_iterations, reprojectionError=cfg.ransac_reprojection_px,
            confidence=cfg.ransac_confidence, flags=cv2.SOLVEPNP_EPNP)
    except cv2.error as exc:
        return PnpResult(False, f"ransac_failed ({exc.err})", num_keypoints_used=len(idx))
    if not ok or inl is None:
        return PnpResult(False, "ransac_failed (no consensus)", num_keypoints_used=len(idx))
    inl = inl.ravel()
    if len(inl) < cfg.min_inliers:
        return PnpResult(False, f"too_few_inliers ({len(inl)} < {cfg.min_inliers})", inliers=idx[inl],
                         num_keypoints_used=len(idx))
    rvec, tvec = cv2.solvePnPRefineLM(Xo[inl].reshape(-1, 1, 3), uvo[inl].reshape(-1, 1, 2), camera.K,
                                      camera.dist_coeffs, rvec, tvec)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.ravel()

    # Re-select inliers with the refined pose, then uncertainty-weighted LM on them.
    err_all = np.linalg.norm(_project(camera, T, Xo) - uvo, axis=1)
    inl = np.nonzero(err_all <= cfg.ransac_reprojection_px * 1.5)[0]
    if len(inl) < cfg.min_inliers:
        return PnpResult(False, f"too_few_inliers after refinement ({len(inl)})", T_cam_obj=T,
                         inliers=idx[inl], num_keypoints_used=len(idx))
    Wt = _whiteners(cov[idx][inl] if cfg.weighted_refine else np.tile(np.eye(2), (len(inl), 1, 1)))
    Xi, uvi = Xo[inl], uvo[inl]

    def resid(p: np.ndarray, T_base: np.ndarray) -> np.ndarray:
        r = _project(camera, perturb_pose(T_base, p), Xi) - uvi
        return np.einsum("kij,kj->ki", Wt, r).ravel()

    T, J = _gauss_newton(resid, T)
    try:
        cov6 = np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        cov6 = None
    err = np.linalg.norm(_project(camera, T, Xi) - uvi, axis=1)
    res = PnpResult(True, "ok", T, idx[inl], float(err.mean()), cov6, len(idx))
    reason = check_plausible(T, camera, X, object_diameter_m, cfg)
    if reason:
        res.ok, res.reason = False, reason
    elif res.reprojection_error_px > cfg.max_mean_reprojection_px:
        res.ok, res.reason = False, f"large_reprojection_error ({res.reprojection_error_px:.1f} px)"
    return res


def _numeric_jacobian(f, T: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """d f(p, T) / d p at p = 0 by central differences (6 unknowns)."""
    cols = []
    for i in range(6):
        d = np.zeros(6)
        d[i] = step
        cols.append((f(d, T) - f(-d, T)) / (2 * step))
    return np.stack(cols, 1)


def _gauss_newton(f, T: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on the left perturbation of T for residuals f(p, T) (~1 ms for 9
    keypoints, far cheaper than a general solver). Returns the pose and the Jacobian there."""
    r = f(np.zeros(6), T)
    cost = float(r @ r)
    lam = 1e-6
    J = _numeric_jacobian(f, T)
    for _ in range(iterations):
        A = J.T @ J
        try:
            dp = -np.linalg.solve(A + lam * np.diag(np.diag(A) + 1e-12), J.T @ r)
        except np.linalg.LinAlgError:
            break
        T_new = perturb_pose(T, dp)
        r_new = f(np.zeros(6), T_new)
        c = float(r_new @ r_new)
        if c < cost:
            T, r, cost, lam = T_new, r_new, c, lam * 0.1
            J = _numeric_jacobian(f, T)
            if np.abs(dp).max() < 1e-10:
                break
        else:
            lam *= 10.0
            if lam > 1e6:
                break
    return T, J


def check_plausible(T: np.ndarray, camera: PinholeCamera, keypoints_m: np.ndarray,
                    object_diameter_m: float | None, cfg: PnpConfig) -> str:
    """'' if the pose is physically plausible for this camera, else the rejection reason."""
    pc = keypoints_m @ T[:3, :3].T + T[:3, 3]
    centre = pc[-1]  # last keypoint = bbox centre
    if not np.isfinite(T).all():
        return "non_finite_pose"
    if centre[2] <= 0 or (pc[:, 2] <= 0).any():
        return f"behind_camera (z={centre[2]:.3f} m)"
    if not (cfg.min_depth_m <= centre[2] <= cfg.max_depth_m):
        return f"implausible_distance (z={centre[2]:.3f} m outside [{cfg.min_depth_m}, {cfg.max_depth_m}])"
    diam = object_diameter_m if object_diameter_m else float(
        np.max(np.linalg.norm(keypoints_m[:, None] - keypoints_m[None], axis=-1)))
    size_px = camera.fx * diam / centre[2]
    if size_px < cfg.min_projected_size_px:
        return f"implausible_distance (object would be {size_px:.1f} px wide at z={centre[2]:.2f} m)"
    uvc = _project(camera, T, keypoints_m[-1:])[0]
    mx, my = cfg.out_of_view_margin * camera.width, cfg.out_of_view_margin * camera.height
    if not (-mx <= uvc[0] <= camera.width + mx and -my <= uvc[1] <= camera.height + my):
        return f"out_of_view (centre projects to ({uvc[0]:.0f}, {uvc[1]:.0f}))"
    return ""
