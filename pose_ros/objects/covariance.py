"""Pose covariance helpers (6x6, ROS ``PoseWithCovariance`` order [x y z rx ry rz], camera frame).

Why separate: the same conventions are needed by PnP (keypoint covariances -> pose covariance),
the estimator (fusing with ICP) and the ROS conversion (row-major 36 floats), and they are easy to
get subtly wrong (order of translation/rotation, units).
"""
from __future__ import annotations

import numpy as np

__all__ = ["fuse_icp_covariance", "icp_covariance", "covariance_is_valid", "to_ros_covariance",
           "pose_std"]


def icp_covariance(rmse_m: float, diameter_m: float) -> np.ndarray:
    """Diagonal covariance from an ICP residual.

    The inlier RMSE is treated as an error that does *not* average out over the matched points
    (neighbouring depth residuals are strongly correlated: sensor bias, model error), so the
    translation std is ``sqrt(3) * rmse`` overall and the rotation std the angle that moves a point
    at the object's radius by that much.
    """
    rmse = float(rmse_m) if np.isfinite(rmse_m) and rmse_m > 0 else 0.005
    st2 = 3.0 * rmse ** 2
    sr2 = 3.0 * (rmse / max(float(diameter_m) / 2.0, 1e-3)) ** 2
    return np.diag([st2] * 3 + [sr2] * 3)


def fuse_icp_covariance(cov_pnp: np.ndarray, rmse_m: float, diameter_m: float) -> np.ndarray:
    """Information-form fusion ``(P^-1 + C_icp^-1)^-1`` of the PnP (colour) and ICP (depth) estimates."""
    C_icp = icp_covariance(rmse_m, diameter_m)
    cov = np.asarray(cov_pnp, dtype=np.float64)
    if not covariance_is_valid(cov):
        return C_icp
    P = np.linalg.inv(0.5 * (cov + cov.T) + np.eye(6) * 1e-12)
    return np.linalg.inv(P + np.linalg.inv(C_icp))


def covariance_is_valid(cov: np.ndarray) -> bool:
    """Finite, symmetric (to rounding) and positive definite 6x6."""
    cov = np.asarray(cov)
    if cov.shape != (6, 6) or not np.isfinite(cov).all():
        return False
    if not np.allclose(cov, cov.T, rtol=1e-6, atol=1e-12):
        return False
    try:
        np.linalg.cholesky(0.5 * (cov + cov.T))
    except np.linalg.LinAlgError:
        return False
    return True


def to_ros_covariance(cov: np.ndarray) -> list[float]:
    """36 floats row-major for geometry_msgs/PoseWithCovariance; invalid -> -1 on the diagonal
    (the REP-145-style 'unknown' marker) so consumers never trust garbage."""
    cov = np.asarray(cov, dtype=np.float64)
    if not covariance_is_valid(cov):
        out = np.zeros((6, 6))
        np.fill_diagonal(out, -1.0)
        return out.ravel().tolist()
    return (0.5 * (cov + cov.T)).ravel().tolist()


def pose_std(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(translation std m (3,), rotation std rad (3,)) from the diagonal."""
    d = np.sqrt(np.clip(np.diag(np.asarray(cov, dtype=np.float64)), 0, None))
    return d[:3], d[3:]
