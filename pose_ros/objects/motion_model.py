"""Constant-velocity prediction of a tracked object's pose in the camera frame.

Why: tracking starts ICP from the previous pose. With a moving camera (or object) and a node that
drops frames when busy, the object has moved a few centimetres by the next processed frame, and
ICP from the old pose converges more slowly, beside the object, or not at all (the track is lost and
the object is missing until a detection arrives). Starting from where the motion seen so far puts
the object leaves ICP only the change in motion to correct.

The velocity is the object centre's linear velocity and its angular velocity about that centre,
both in the camera frame (so that the motion of a static scene seen by a moving camera is what is
modelled), per unit of the tracker's clock (seconds of frame stamps, or frames). It is smoothed
and damped: in a direction ICP does not constrain (a body of revolution's turn about its axis, a
box sliding along a face while half hidden) the pose moves only by the prediction, so the
measured velocity would otherwise feed itself forever.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = ["velocity_between", "predict_pose", "blend_velocity", "without_turn"]


def velocity_between(T_from_cam_obj: np.ndarray, T_to_cam_obj: np.ndarray, dt: float) -> np.ndarray:
    """(6,) [angular (rad per unit, camera frame), linear (m per unit, camera frame)] that moves
    ``T_from`` to ``T_to`` in ``dt`` units."""
    if not dt > 0:
        raise ValueError(f"dt must be > 0; got {dt}")
    R_delta = T_to_cam_obj[:3, :3] @ T_from_cam_obj[:3, :3].T
    w = Rotation.from_matrix(R_delta).as_rotvec() / dt
    v = (T_to_cam_obj[:3, 3] - T_from_cam_obj[:3, 3]) / dt
    return np.concatenate([w, v])


def predict_pose(T_cam_obj: np.ndarray, velocity: np.ndarray, dt: float, max_translation_m: float,
                 max_rotation_rad: float) -> np.ndarray:
    """``T_cam_obj`` moved ``dt`` units ahead at ``velocity``. The step is scaled down (both parts
    alike) to at most ``max_translation_m`` / ``max_rotation_rad``: a prediction is a starting point
    for ICP, and an implausible one (a glitch in the velocity, a long gap) must not throw it far."""
    if not dt > 0:
        return T_cam_obj.copy()
    rotvec = velocity[:3] * dt
    step = velocity[3:] * dt
    angle, dist = float(np.linalg.norm(rotvec)), float(np.linalg.norm(step))
    scale = min(1.0, max_rotation_rad / angle if angle > 0 else 1.0, max_translation_m / dist if dist > 0 else 1.0)
    T = T_cam_obj.copy()
    T[:3, :3] = Rotation.from_rotvec(rotvec * scale).as_matrix() @ T_cam_obj[:3, :3]
    T[:3, 3] = T_cam_obj[:3, 3] + step * scale
    return T


def blend_velocity(previous: np.ndarray | None, measured: np.ndarray, gain: float, damping: float) -> np.ndarray:
    """Smoothed velocity after one measurement: ``damping * (gain * measured + (1 - gain) * previous)``.
    With damping < 1 a velocity that only feeds itself (an unconstrained direction) dies away
    (0.9: to a tenth in ~22 updates); a constant true velocity is followed at
    ``damping * gain / (1 - damping * (1 - gain))`` of its size (0.86 for gain 0.7, damping 0.9)."""
    mixed = measured if previous is None else gain * measured + (1.0 - gain) * previous
    return damping * mixed


def without_turn(velocity: np.ndarray, R_cam_obj: np.ndarray, axis_obj: np.ndarray | None) -> np.ndarray:
    """The velocity with its turn about the model's turn axis removed: ICP barely sees that turn
    on a body of revolution (the demo mug swung up to 20 deg between frames), so extrapolating it
    would spin the track; the appearance check corrects that turn instead."""
    if axis_obj is None:
        return velocity
    a_cam = R_cam_obj @ (np.asarray(axis_obj, float) / np.linalg.norm(axis_obj))
    out = velocity.copy()
    out[:3] -= float(np.dot(out[:3], a_cam)) * a_cam
    return out
