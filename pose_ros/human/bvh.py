"""BVH motion capture: parse, forward kinematics, and re-express as a camera-frame skeleton.

Real mocap is the ground truth for retargeting: we turn each frame into the same named
keypoints (BlazePose 33 names) in a camera optical frame that the perception stack publishes,
so the offline CLI, the replay node and the live camera all feed the retargeter identically.

Channels may come in any order per joint; rotations compose in the listed order
(R = R_c1 @ R_c2 @ R_c3, angles in degrees), positions add to the joint's OFFSET.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pose_ros.human.conventions import BLAZEPOSE33_NAMES

# CMU mocap length unit in metres ((1/0.45) inch, http://mocap.cs.cmu.edu/faqs.php).
CMU_UNIT_M = (1.0 / 0.45) * 2.54 / 100.0

_VALID_CHANNELS = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")


class BvhError(ValueError):
    """Unreadable or inconsistent BVH: the message says where and how to fix it."""


@dataclass
class BvhJoint:
    name: str
    parent: int                       # index into BvhClip.joints, -1 for the root
    offset: np.ndarray                # (3,) in file units (scaled to metres by load_bvh)
    channels: list[str] = field(default_factory=list)
    channel_start: int = 0            # first column in the motion matrix
    is_end_site: bool = False


@dataclass
class BvhClip:
    """A parsed clip: joints (parents first), motion (F, C) in file order, frame time in s."""
    joints: list[BvhJoint]
    motion: np.ndarray
    frame_time_s: float
    scale_to_m: float = 1.0

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    def index(self, name: str) -> int:
        for i, j in enumerate(self.joints):
            if j.name == name:
                return i
        raise BvhError(f"no joint '{name}' in the BVH; joints: {', '.join(self.joint_names)}")

    def forward_kinematics(self, frames: slice | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """World rotations (F,J,3,3) and positions in metres (F,J,3) of every joint and end site,
        in the BVH world frame (CMU: y up)."""
        motion = self.motion if frames is None else self.motion[frames]
        F, J = motion.shape[0], len(self.joints)
        R_world = np.zeros((F, J, 3, 3))
        p_world = np.zeros((F, J, 3))
        for i, joint in enumerate(self.joints):
            R_local = np.broadcast_to(np.eye(3), (F, 3, 3)).copy()
            t_local = np.broadcast_to(joint.offset * self.scale_to_m, (F, 3)).copy()
            for k, ch in enumerate(joint.channels):
                col = motion[:, joint.channel_start + k]
                axis = "XYZ".index(ch[0])
                if ch.endswith("position"):
                    t_local[:, axis] += col * self.scale_to_m
                else:
                    R_local = R_local @ _axis_rotation(axis, np.deg2rad(col))
            if joint.parent < 0:
                R_world[:, i], p_world[:, i] = R_local, t_local
            else:
                Rp = R_world[:, joint.parent]
                R_world[:, i] = Rp @ R_local
                p_world[:, i] = p_world[:, joint.parent] + np.einsum("fij,fj->fi", Rp, t_local)
        return R_world, p_world


def _axis_rotation(axis: int, angle_rad: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    R = np.zeros((angle_rad.shape[0], 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[:, axis, axis] = 1.0
    R[:, i, i], R[:, i, j], R[:, j, i], R[:, j, j] = c, -s, s, c
    return R


def parse_bvh_text(text: str, source: str = "<string>") -> BvhClip:
    """Parse BVH text (units as in the file; see load_bvh for scaling)."""
    tokens = text.split()
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise BvhError(f"{source}: file ends early" + (f" (expected '{expected}')" if expected else ""))
        tok = tokens[pos]
        pos += 1
        if expected is not None and tok != expected:
            raise BvhError(f"{source}: expected '{expected}' but found '{tok}' (token {pos})")
        return tok

    def number(what: str) -> float:
        tok = take()
        try:
            return float(tok)
        except ValueError:
            raise BvhError(f"{source}: {what} '{tok}' is not a number") from None

    if not tokens or tokens[0] != "HIERARCHY":
        raise BvhError(f"{source}: a BVH file starts with HIERARCHY")
    take("HIERARCHY")
    joints: list[BvhJoint] = []
    n_channels = 0
    stack: list[int] = []
    kw = take()
    if kw != "ROOT":
        raise BvhError(f"{source}: expected ROOT after HIERARCHY, found '{kw}'")
    pending = ("ROOT", take())
    while True:
        kind, name = pending
        parent = stack[-1] if stack else -1
        take("{")
        take("OFFSET")
        offset = np.array([number("OFFSET"), number("OFFSET"), number("OFFSET")])
        joint = BvhJoint(name=name, parent=parent, offset=offset, is_end_site=(kind == "End"))
        if kind != "End":
            take("CHANNELS")
            n = int(number("CHANNELS count"))
            chans = [take() for _ in range(n)]
            bad = [c for c in chans if c not in _VALID_CHANNELS]
            if bad:
                raise BvhError(f"{source}: joint '{name}' has unknown channels {bad}; valid: {_VALID_CHANNELS}")
            joint.channels, joint.channel_start = chans, n_channels
            n_channels += n
        joints.append(joint)
        stack.append(len(joints) - 1)
        # Children or closing braces.
        while True:
            tok = take()
            if tok == "JOINT":
                pending = ("JOINT", take())
                break
            if tok == "End":
                take("Site")
                pending = ("End", f"{joints[stack[-1]].name}_end")
                break
            if tok == "}":
                stack.pop()
                if not stack:
                    pending = None
                    break
                continue
            raise BvhError(f"{source}: unexpected '{tok}' in joint '{joints[stack[-1]].name}'")
        if pending is None:
            break
    take("MOTION")
    take("Frames:")
    n_frames = int(number("Frames"))
    take("Frame")
    take("Time:")
    frame_time = number("Frame Time")
    if not frame_time > 0:
        raise BvhError(f"{source}: Frame Time must be > 0 seconds, got {frame_time}")
    values = tokens[pos:]
    if n_channels == 0:
        raise BvhError(f"{source}: the hierarchy has no channels")
    if len(values) % n_channels != 0:
        raise BvhError(f"{source}: {len(values)} motion values is not a multiple of {n_channels} channels; "
                       "the MOTION section is truncated or the hierarchy does not match it")
    try:
        motion = np.array(values, dtype=np.float64).reshape(-1, n_channels)
    except ValueError:
        raise BvhError(f"{source}: MOTION section has non-numeric values") from None
    if motion.shape[0] == 0:
        raise BvhError(f"{source}: no motion frames")
    if motion.shape[0] < n_frames:
        raise BvhError(f"{source}: header says {n_frames} frames but only {motion.shape[0]} are present")
    if not np.all(np.isfinite(motion)):
        raise BvhError(f"{source}: MOTION contains NaN/inf values")
    return BvhClip(joints=joints, motion=motion[:n_frames], frame_time_s=frame_time)


def load_bvh(path: str | Path, scale_to_m: float | str = "auto") -> BvhClip:
    """Load a BVH file. `scale_to_m`: file units -> metres; 'auto' accepts metres when the rest
    skeleton is human-sized (1-2.5 m tall) and CMU units (~0.0564 m) when it is ~18-45 units."""
    path = Path(path)
    if not path.is_file():
        raise BvhError(f"BVH file not found: {path}")
    clip = parse_bvh_text(path.read_text(encoding="utf-8", errors="replace"), source=str(path))
    if scale_to_m == "auto":
        height = _rest_height(clip)
        if 1.0 <= height <= 2.5:
            scale_to_m = 1.0
        elif 1.0 <= height * CMU_UNIT_M <= 2.5:
            scale_to_m = CMU_UNIT_M
        else:
            raise BvhError(f"{path}: rest skeleton is {height:.3g} units tall, neither metres nor CMU units; "
                           "pass scale_to_m explicitly (--bvh-scale)")
    clip.scale_to_m = float(scale_to_m)
    return clip


def _rest_height(clip: BvhClip) -> float:
    pts = np.zeros((len(clip.joints), 3))
    for i, j in enumerate(clip.joints):
        pts[i] = j.offset + (pts[j.parent] if j.parent >= 0 else 0.0)
    return float(pts[:, 1].max() - pts[:, 1].min())


# -- CMU joints -> BlazePose keypoint names --------------------------------------------------
# Direct joint positions; other BlazePose points are placed at fixed offsets in a joint's local
# frame (CMU rest frames are world-aligned: x = subject's left, y up, z forward).
_CMU_DIRECT = {
    "left_shoulder": "LeftShoulder", "right_shoulder": "RightShoulder",
    "left_elbow": "LeftElbow", "right_elbow": "RightElbow",
    "left_wrist": "LeftWrist", "right_wrist": "RightWrist",
    "left_thumb": "LThumb_end", "right_thumb": "RThumb_end",
    "left_hip": "LeftHip", "right_hip": "RightHip",
    "left_knee": "LeftKnee", "right_knee": "RightKnee",
    "left_ankle": "LeftAnkle", "right_ankle": "RightAnkle",
    "left_foot_index": "LeftToe_end", "right_foot_index": "RightToe_end",
}
_CMU_OFFSETS_M = {  # name: (joint, offset in the joint's frame, metres)
    "nose": ("Head", (0.0, 0.03, 0.10)),
    "left_eye_inner": ("Head", (0.015, 0.065, 0.085)), "left_eye": ("Head", (0.032, 0.065, 0.08)),
    "left_eye_outer": ("Head", (0.048, 0.065, 0.07)),
    "right_eye_inner": ("Head", (-0.015, 0.065, 0.085)), "right_eye": ("Head", (-0.032, 0.065, 0.08)),
    "right_eye_outer": ("Head", (-0.048, 0.065, 0.07)),
    "left_ear": ("Head", (0.075, 0.05, 0.0)), "right_ear": ("Head", (-0.075, 0.05, 0.0)),
    "mouth_left": ("Head", (0.025, 0.0, 0.09)), "mouth_right": ("Head", (-0.025, 0.0, 0.09)),
    # Fingers run along -y of the finger joint, the thumb side is +z: index and pinky straddle it.
    "left_index": ("LFingers", (0.0, -0.03, 0.018)), "left_pinky": ("LFingers", (0.0, -0.022, -0.022)),
    "right_index": ("RFingers", (0.0, -0.03, 0.018)), "right_pinky": ("RFingers", (0.0, -0.022, -0.022)),
    "left_heel": ("LeftAnkle", (0.0, -0.05, -0.05)), "right_heel": ("RightAnkle", (0.0, -0.05, -0.05)),
}


def cmu_keypoints_world(clip: BvhClip, frames: slice | np.ndarray | None = None) -> np.ndarray:
    """BlazePose-33 keypoints (F,33,3) in the BVH world frame, metres, from a CMU-named clip."""
    R, p = clip.forward_kinematics(frames)
    out = np.zeros((p.shape[0], len(BLAZEPOSE33_NAMES), 3))
    for k, name in enumerate(BLAZEPOSE33_NAMES):
        if name in _CMU_DIRECT:
            out[:, k] = p[:, clip.index(_CMU_DIRECT[name])]
        else:
            joint, off = _CMU_OFFSETS_M[name]
            i = clip.index(joint)
            out[:, k] = p[:, i] + R[:, i] @ np.asarray(off)
    return out


def virtual_camera_pose(keypoints_world: np.ndarray, distance_m: float = 2.5, height_m: float = 1.2,
                        up_world: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """T_world_cam of a level virtual camera `distance_m` in front of the subject's mean hip
    centre over the clip, looking at them (optical frame: x right, y down, z forward)."""
    up = np.asarray(up_world, dtype=np.float64)
    lh, rh = BLAZEPOSE33_NAMES.index("left_hip"), BLAZEPOSE33_NAMES.index("right_hip")
    hips = 0.5 * (keypoints_world[:, lh] + keypoints_world[:, rh])
    centre = hips.mean(axis=0)
    left = (keypoints_world[:, lh] - keypoints_world[:, rh]).mean(axis=0)
    facing = np.cross(left, up)          # subject's forward: left x up
    facing -= up * (facing @ up)
    if np.linalg.norm(facing) < 1e-6:
        raise BvhError("cannot tell which way the subject faces (hips collapsed)")
    facing /= np.linalg.norm(facing)
    eye = centre + facing * distance_m
    eye = eye - up * (eye @ up) + up * height_m
    z = -facing                          # camera looks back at the subject
    y = -up
    x = np.cross(y, z)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def bvh_to_camera_skeletons(clip: BvhClip, distance_m: float = 2.5, height_m: float = 1.2,
                            frames: slice | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints_cam_m (F,33,3) in BlazePose order, T_world_cam 4x4) for a CMU clip, with the
    camera placed as `virtual_camera_pose` from the whole clip (so it does not move)."""
    kp_all = cmu_keypoints_world(clip)
    T_world_cam = virtual_camera_pose(kp_all, distance_m, height_m)
    kp = kp_all if frames is None else kp_all[frames]
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    kp_cam = (kp - t) @ R          # R^T (x - t), row vectors
    return kp_cam, T_world_cam


def frame_times_s(clip: BvhClip) -> np.ndarray:
    return np.arange(clip.num_frames) * clip.frame_time_s


def clip_duration_s(clip: BvhClip) -> float:
    return clip.num_frames * clip.frame_time_s if clip.num_frames else 0.0


__all__ = ["BvhClip", "BvhError", "BvhJoint", "CMU_UNIT_M", "bvh_to_camera_skeletons", "clip_duration_s",
           "cmu_keypoints_world", "frame_times_s", "load_bvh", "parse_bvh_text", "virtual_camera_pose"]
