"""BVH parsing, forward kinematics and the camera-frame skeleton, on synthetic and real CMU clips."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data_path

from pose_ros.human.bvh import (CMU_UNIT_M, BvhError, bvh_to_camera_skeletons, cmu_keypoints_world, load_bvh,
                                parse_bvh_text)
from pose_ros.human.conventions import BLAZEPOSE33_NAMES

_TWO_LINK = """HIERARCHY
ROOT Root
{{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition {root_order}
  JOINT Arm
  {{
    OFFSET 1 0 0
    CHANNELS 3 {arm_order}
    End Site
    {{
      OFFSET 0 2 0
    }}
  }}
}}
MOTION
Frames: 2
Frame Time: 0.5
{frames}
"""


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return {"X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


@pytest.mark.parametrize("arm_order", ["Zrotation Xrotation Yrotation", "Xrotation Yrotation Zrotation",
                                       "Yrotation Zrotation Xrotation"])
def test_fk_follows_channel_order(arm_order):
    angles = {"Z": 30.0, "X": -50.0, "Y": 70.0}
    order = [c[0] for c in arm_order.split()]
    arm_vals = " ".join(str(angles[a]) for a in order)
    text = _TWO_LINK.format(root_order="Zrotation Yrotation Xrotation", arm_order=arm_order,
                            frames=f"0 0 0 0 0 0 0 0 0\n1 2 3 90 0 0 {arm_vals}")
    clip = parse_bvh_text(text)
    assert clip.num_frames == 2 and clip.frame_time_s == 0.5
    assert clip.joint_names == ["Root", "Arm", "Arm_end"]
    R, p = clip.forward_kinematics()
    assert np.allclose(p[0], [[0, 0, 0], [1, 0, 0], [1, 2, 0]])
    R_root = _rot("Z", 90)
    R_arm = R_root @ _rot(order[0], angles[order[0]]) @ _rot(order[1], angles[order[1]]) @ _rot(order[2], angles[order[2]])
    assert np.allclose(p[1, 0], [1, 2, 3])
    assert np.allclose(p[1, 1], [1, 2, 3] + R_root @ [1, 0, 0])
    assert np.allclose(p[1, 2], p[1, 1] + R_arm @ [0, 2, 0])
    assert np.allclose(R[1, 2], R_arm)


@pytest.mark.parametrize("mutate, match", [
    (lambda t: t.replace("HIERARCHY", "HIERARCHIE"), "starts with HIERARCHY"),
    (lambda t: t.replace("Xrotation Yrotation Zrotation", "Xrotation Yrotation Wrotation"), "unknown channels"),
    (lambda t: t.rsplit("\n", 2)[0] + "\n1 2 3\n", "not a multiple"),
    (lambda t: t.replace("Frames: 2", "Frames: 5"), "only 2 are present"),
    (lambda t: t.replace("Frame Time: 0.5", "Frame Time: 0"), "must be > 0"),
    (lambda t: t.replace("0 0 0 0 0 0 0 0 0", "0 0 0 0 nan 0 0 0 0"), "NaN"),
])
def test_bad_bvh_gives_clear_errors(mutate, match):
    text = _TWO_LINK.format(root_order="Zrotation Yrotation Xrotation", arm_order="Xrotation Yrotation Zrotation",
                            frames="0 0 0 0 0 0 0 0 0\n0 0 0 0 0 0 0 0 0")
    with pytest.raises(BvhError, match=match):
        parse_bvh_text(mutate(text))


def test_cmu_clip_units_and_keypoints():
    res = shared_data_path("mocap_cmu131", "resources")
    raw = load_bvh(res / "131_01.bvh")                   # CMU units, detected
    scaled = load_bvh(res / "scaled_131_01.bvh")         # metres
    assert raw.scale_to_m == pytest.approx(CMU_UNIT_M) and scaled.scale_to_m == 1.0
    assert len(raw.joints) == 31 + 7                       # 31 joints + 7 end sites
    assert scaled.frame_time_s == pytest.approx(1 / 120, rel=1e-3)
    kp_raw = cmu_keypoints_world(raw, slice(0, 50))
    kp_scaled = cmu_keypoints_world(scaled, slice(0, 50))
    assert np.allclose(kp_raw, kp_scaled, atol=2e-3)       # same motion, same metres
    # human proportions (metres)
    idx = {n: i for i, n in enumerate(BLAZEPOSE33_NAMES)}
    upper_arm = np.linalg.norm(kp_scaled[:, idx["left_elbow"]] - kp_scaled[:, idx["left_shoulder"]], axis=1)
    thigh = np.linalg.norm(kp_scaled[:, idx["left_knee"]] - kp_scaled[:, idx["left_hip"]], axis=1)
    assert np.allclose(upper_arm, upper_arm[0]) and 0.2 < upper_arm[0] < 0.4
    assert 0.3 < thigh[0] < 0.55
    height = kp_scaled[:, idx["nose"], 1] - kp_scaled[:, idx["left_ankle"], 1]
    assert np.all((1.0 < height) & (height < 1.9))   # the subject dances crouched at times


def test_camera_skeleton_faces_the_camera():
    clip = load_bvh(shared_data_path("mocap_cmu131", "resources", "scaled_131_03.bvh"))
    kp, T_world_cam = bvh_to_camera_skeletons(clip, distance_m=2.5)
    assert kp.shape == (clip.num_frames, 33, 3) and np.all(np.isfinite(kp))
    idx = {n: i for i, n in enumerate(BLAZEPOSE33_NAMES)}
    hips = 0.5 * (kp[:, idx["left_hip"]] + kp[:, idx["right_hip"]])
    assert abs(hips[:, 2].mean() - 2.5) < 0.1                 # ~2.5 m in front on average
    assert np.all(kp[:, idx["nose"], 1] < kp[:, idx["left_ankle"], 1])   # optical y points down
    # facing the camera (the subject turns away briefly in this clip): the subject's left shoulder
    # is on the image right (+x) and the nose is closer than the hips
    assert kp[0, idx["left_shoulder"], 0] > kp[0, idx["right_shoulder"], 0] and kp[0, idx["nose"], 2] < hips[0, 2]
    assert np.mean(kp[:, idx["left_shoulder"], 0] > kp[:, idx["right_shoulder"], 0]) > 0.85
    assert np.mean(kp[:, idx["nose"], 2] < hips[:, 2]) > 0.85
    assert np.allclose(T_world_cam[:3, :3] @ T_world_cam[:3, :3].T, np.eye(3), atol=1e-12)
