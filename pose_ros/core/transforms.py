"""Rigid transforms: 4x4 matrices, (R, t), quaternions (x, y, z, w) like ROS.

Why: one validated place for pose conversions, so quaternion order and frame conventions
(``x_a = T_a_b @ x_b``) are identical everywhere in the stack.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "TransformError", "make_T", "split_T", "invert_T", "transform_points", "quat_xyzw_from_R",
    "R_from_quat_xyzw", "T_from_pos_quat", "pos_quat_from_T", "rotation_angle_rad", "random_rotation",
    "look_at", "is_rotation", "orthonormalize", "R_from_axis_angle", "translation_distance",
]


class TransformError(ValueError):
    """Malformed rotation/translation/transform; the message says what shape or property was wrong."""


def _arr(a, shape: tuple[int, ...], name: str) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    if x.shape != shape:
        if x.size == int(np.prod(shape)) and shape == (3,):
            x = x.reshape(shape)
        else:
            raise TransformError(f"{name} must have shape {shape}; got {np.shape(a)}")
    if not np.all(np.isfinite(x)):
        raise TransformError(f"{name} contains non-finite values: {x.tolist()}")
    return x


def is_rotation(R: np.ndarray, tol: float = 1e-5) -> bool:
    """True if R is a proper rotation (R^T R = I, det = +1) within tol."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        return False
    return bool(np.allclose(R.T @ R, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1.0) < tol)


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """Nearest proper rotation to R (SVD); fixes float drift from files/accumulated products."""
    R = _arr(R, (3, 3), "R")
    U, _, Vt = np.linalg.svd(R)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    return U @ D @ Vt


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a 3-vector translation."""
    R = _arr(R, (3, 3), "R")
    t = _arr(t, (3,), "t")
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _check_T(T: np.ndarray) -> np.ndarray:
    T = _arr(T, (4, 4), "T")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise TransformError(f"T's last row must be [0,0,0,1]; got {T[3].tolist()}")
    return T


def split_T(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R 3x3, t 3) copies from a 4x4 transform."""
    T = _check_T(T)
    return T[:3, :3].copy(), T[:3, 3].copy()


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (uses R^T, exact for rotations)."""
    R, t = split_T(T)
    Ti = np.eye(4)
    Ti[:3, :3] = R.T
    Ti[:3, 3] = -R.T @ t
    return Ti


def transform_points(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply 4x4 T to (N,3) points (or one 3-vector) -> same shape."""
    T = _check_T(T)
    p = np.asarray(pts, dtype=np.float64)
    if p.shape == (3,):
        return T[:3, :3] @ p + T[:3, 3]
    if p.ndim != 2 or p.shape[1] != 3:
        raise TransformError(f"points must have shape (N,3); got {p.shape}")
    return p @ T[:3, :3].T + T[:3, 3]


def quat_xyzw_from_R(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) with w >= 0 (canonical sign) from a rotation matrix."""
    R = _arr(R, (3, 3), "R")
    if not is_rotation(R, tol=1e-3):
        raise TransformError("R is not a rotation matrix (R^T R != I or det != 1); orthonormalize() it first")
    q = Rotation.from_matrix(R).as_quat()
    if q[3] < 0:
        q = -q
    return q / np.linalg.norm(q)


def R_from_quat_xyzw(q: np.ndarray) -> np.ndarray:
    """3x3 rotation from quaternion (x, y, z, w); normalised, zero-norm raises."""
    q = np.asarray(q, dtype=np.float64).ravel()
    if q.shape != (4,) or not np.all(np.isfinite(q)):
        raise TransformError(f"quaternion must be 4 finite values (x,y,z,w); got {np.asarray(q).tolist()}")
    n = np.linalg.norm(q)
    if n < 1e-12:
        raise TransformError("quaternion has zero norm; an identity is (0,0,0,1)")
    return Rotation.from_quat(q / n).as_matrix()


def T_from_pos_quat(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """4x4 from position (3) and quaternion (x,y,z,w)."""
    return make_T(R_from_quat_xyzw(q), p)


def pos_quat_from_T(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position 3, quaternion x,y,z,w) from a 4x4 transform."""
    R, t = split_T(T)
    return t, quat_xyzw_from_R(R)


def rotation_angle_rad(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Geodesic angle (radians, [0, pi]) between two rotations."""
    R_a = _arr(R_a, (3, 3), "R_a")
    R_b = _arr(R_b, (3, 3), "R_b")
    c = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


def translation_distance(T_a: np.ndarray, T_b: np.ndarray) -> float:
    """Euclidean distance between the translations of two transforms."""
    return float(np.linalg.norm(_check_T(T_a)[:3, 3] - _check_T(T_b)[:3, 3]))


def R_from_axis_angle(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation about a (non-zero) axis by angle_rad."""
    a = _arr(axis, (3,), "axis")
    n = np.linalg.norm(a)
    if n < 1e-12:
        raise TransformError("rotation axis has zero length")
    return Rotation.from_rotvec(a / n * float(angle_rad)).as_matrix()


def random_rotation(rng: np.random.Generator | None = None) -> np.ndarray:
    """Uniformly distributed random rotation (3x3), reproducible with rng."""
    rng = np.random.default_rng() if rng is None else rng
    # Uniform on SO(3): normalised 4D Gaussian quaternion.
    q = rng.standard_normal(4)
    while np.linalg.norm(q) < 1e-9:
        q = rng.standard_normal(4)
    return Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_cam for an optical-frame camera (x right, y down, z forward) at eye looking at target."""
    eye = _arr(eye, (3,), "eye")
    target = _arr(target, (3,), "target")
    up = _arr(up, (3,), "up")
    z = target - eye  # forward axis
    nz = np.linalg.norm(z)
    if nz < 1e-12:
        raise TransformError("look_at: eye and target coincide")
    z /= nz
    x = np.cross(z, up)
    nx = np.linalg.norm(x)
    if nx < 1e-9:
        raise TransformError("look_at: viewing direction is parallel to 'up'; pass a different up vector")
    x /= nx
    y = np.cross(z, x)  # points 'down' in the image relative to up
    R = np.stack([x, y, z], axis=1)
    return make_T(R, eye)
