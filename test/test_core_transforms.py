"""Rigid transform helpers: round trips between 4x4, (R, t) and quaternions; validation."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pose_ros.core import transforms as tf


def test_make_split_invert_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        R = tf.random_rotation(rng)
        t = rng.normal(size=3)
        T = tf.make_T(R, t)
        R2, t2 = tf.split_T(T)
        np.testing.assert_allclose(R2, R)
        np.testing.assert_allclose(t2, t)
        np.testing.assert_allclose(tf.invert_T(T) @ T, np.eye(4), atol=1e-12)
        pts = rng.normal(size=(20, 3))
        back = tf.transform_points(tf.invert_T(T), tf.transform_points(T, pts))
        np.testing.assert_allclose(back, pts, atol=1e-12)


def test_quaternion_round_trip_and_order():
    rng = np.random.default_rng(1)
    for _ in range(50):
        R = tf.random_rotation(rng)
        q = tf.quat_xyzw_from_R(R)
        assert abs(np.linalg.norm(q) - 1) < 1e-12 and q[3] >= 0
        np.testing.assert_allclose(tf.R_from_quat_xyzw(q), R, atol=1e-12)
        p = rng.normal(size=3)
        T = tf.T_from_pos_quat(p, q)
        p2, q2 = tf.pos_quat_from_T(T)
        np.testing.assert_allclose(p2, p)
        np.testing.assert_allclose(q2, q, atol=1e-12)
    # (x, y, z, w): 90 degrees about z.
    q = tf.quat_xyzw_from_R(Rotation.from_euler("z", 90, degrees=True).as_matrix())
    np.testing.assert_allclose(q, [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-12)
    # Unnormalised input is normalised.
    np.testing.assert_allclose(tf.R_from_quat_xyzw([0, 0, 0, 5.0]), np.eye(3))


def test_rotation_angle_and_axis_angle():
    R = tf.R_from_axis_angle([0, 1, 0], 0.7)
    assert abs(tf.rotation_angle_rad(np.eye(3), R) - 0.7) < 1e-12
    assert tf.rotation_angle_rad(R, R) < 1e-6


def test_random_rotation_is_reproducible_and_uniformish():
    a = tf.random_rotation(np.random.default_rng(5))
    b = tf.random_rotation(np.random.default_rng(5))
    np.testing.assert_allclose(a, b)
    rng = np.random.default_rng(6)
    zs = np.array([tf.random_rotation(rng)[:, 2] for _ in range(2000)])
    # z-axis direction uniform on the sphere: mean near zero.
    assert np.abs(zs.mean(axis=0)).max() < 0.06
    assert all(tf.is_rotation(tf.random_rotation(rng)) for _ in range(10))


def test_look_at_optical_frame():
    T = tf.look_at([1.0, 0.0, 0.5], [0.0, 0.0, 0.5], up=[0, 0, 1])
    R, t = tf.split_T(T)
    assert tf.is_rotation(R)
    np.testing.assert_allclose(R[:, 2], [-1, 0, 0], atol=1e-12)  # z forward to the target
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-12)  # y down
    target_cam = tf.transform_points(tf.invert_T(T), np.array([0.0, 0.0, 0.5]))
    np.testing.assert_allclose(target_cam, [0, 0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="parallel"):
        tf.look_at([0, 0, 1], [0, 0, 0], up=[0, 0, 1])


def test_validation_errors():
    with pytest.raises(ValueError, match="shape"):
        tf.make_T(np.eye(2), [0, 0, 0])
    with pytest.raises(ValueError, match="shape"):
        tf.make_T(np.eye(3), [0, 0])
    with pytest.raises(ValueError, match="non-finite"):
        tf.make_T(np.eye(3), [0, np.nan, 0])
    with pytest.raises(ValueError, match="zero norm"):
        tf.R_from_quat_xyzw([0, 0, 0, 0])
    with pytest.raises(ValueError, match="not a rotation"):
        tf.quat_xyzw_from_R(np.diag([1.0, 1.0, -1.0]))
    bad = np.eye(4)
    bad[3, 0] = 1
    with pytest.raises(ValueError, match="last row"):
        tf.invert_T(bad)
    R = tf.orthonormalize(np.eye(3) + 1e-3 * np.random.default_rng(0).normal(size=(3, 3)))
    assert tf.is_rotation(R, tol=1e-10)
