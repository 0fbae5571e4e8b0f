"""Rigid transforms <-> geometry_msgs, and small message helpers shared by nodes."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3

from pose_ros.core.transforms import pos_quat_from_T, T_from_pos_quat


def T_to_pose(T: np.ndarray) -> Pose:
    p, q = pos_quat_from_T(np.asarray(T, dtype=np.float64))
    return Pose(position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def pose_to_T(pose: Pose) -> np.ndarray:
    p = np.array([pose.position.x, pose.position.y, pose.position.z])
    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    if not np.all(np.isfinite(p)) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-9:
        raise ValueError(f"pose is not finite or has a zero quaternion: p={p}, q={q}")
    return T_from_pos_quat(p, q)


def T_to_transform(T: np.ndarray) -> Transform:
    p, q = pos_quat_from_T(np.asarray(T, dtype=np.float64))
    return Transform(translation=Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                     rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))
