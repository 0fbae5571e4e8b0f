"""Depth lifting on a constructed depth image of known surfaces at known keypoint pixels."""
import numpy as np
import pytest

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.transforms import R_from_axis_angle
from pose_ros.human.conventions import BLAZEPOSE33_NAMES, SOURCE_DEPTH, SOURCE_MODEL, SOURCE_NONE
from pose_ros.human.lifting import (DepthImageError, LiftingConfig, lift_keypoints, window_size_px)

IDX = {n: i for i, n in enumerate(BLAZEPOSE33_NAMES)}
LEFT_HAND = {IDX[n] for n in ("left_wrist", "left_pinky", "left_index", "left_thumb")}
CAM = PinholeCamera(np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]]), 640, 480)


def body_world_m() -> np.ndarray:
    """A plausible hip-centred 33-landmark body (x right, y down, z away), arms forward-ish."""
    p = {
        "left_shoulder": (0.18, -0.50, 0.02), "right_shoulder": (-0.18, -0.50, 0.0),
        "left_elbow": (0.30, -0.28, -0.10), "right_elbow": (-0.30, -0.28, -0.08),
        "left_wrist": (0.28, -0.25, -0.35), "right_wrist": (-0.30, -0.05, -0.20),
        "left_hip": (0.10, 0.0, 0.01), "right_hip": (-0.10, 0.0, -0.01),
        "left_knee": (0.11, 0.42, -0.03), "right_knee": (-0.11, 0.42, 0.02),
        "left_ankle": (0.12, 0.82, 0.05), "right_ankle": (-0.12, 0.82, 0.06),
        "nose": (0.0, -0.66, -0.10),
    }
    w = np.zeros((33, 3))
    for name, xyz in p.items():
        w[IDX[name]] = xyz
    derived = {  # (anchor, offset) for face, hand and foot points
        "left_eye_inner": ("nose", (0.015, -0.03, 0.02)), "left_eye": ("nose", (0.03, -0.03, 0.02)),
        "left_eye_outer": ("nose", (0.045, -0.03, 0.03)), "right_eye_inner": ("nose", (-0.015, -0.03, 0.02)),
        "right_eye": ("nose", (-0.03, -0.03, 0.02)), "right_eye_outer": ("nose", (-0.045, -0.03, 0.03)),
        "left_ear": ("nose", (0.07, -0.02, 0.09)), "right_ear": ("nose", (-0.07, -0.02, 0.09)),
        "mouth_left": ("nose", (0.02, 0.04, 0.01)), "mouth_right": ("nose", (-0.02, 0.04, 0.01)),
        "left_pinky": ("left_wrist", (0.02, 0.0, -0.07)), "right_pinky": ("right_wrist", (-0.02, 0.07, 0.0)),
        "left_index": ("left_wrist", (0.0, 0.0, -0.08)), "right_index": ("right_wrist", (0.0, 0.08, 0.0)),
        "left_thumb": ("left_wrist", (-0.02, -0.01, -0.05)), "right_thumb": ("right_wrist", (0.02, 0.05, 0.0)),
        "left_heel": ("left_ankle", (0.0, 0.05, 0.05)), "right_heel": ("right_ankle", (0.0, 0.05, 0.05)),
        "left_foot_index": ("left_ankle", (0.0, 0.07, -0.15)), "right_foot_index": ("right_ankle", (0.0, 0.07, -0.15)),
    }
    for name, (anchor, off) in derived.items():
        w[IDX[name]] = w[IDX[anchor]] + np.array(off)
    return w


def scene(yaw_deg=15.0, t=(0.1, -0.05, 2.4)):
    """(world_m, truth_cam_m, uv_px) with the body turned by yaw and placed at t."""
    world = body_world_m()
    R = R_from_axis_angle(np.array([0.0, 1.0, 0.0]), np.deg2rad(yaw_deg))
    truth = world @ R.T + np.array(t)
    return world, truth, CAM.project(truth)


def paint_depth(truth, uv, radius=6, skip=(), override=None, radii=None, background_m=0.0):
    """Depth image: a disc of each keypoint's true z at its pixel (far first), background elsewhere."""
    depth = np.full((CAM.height, CAM.width), background_m, np.float32)
    vv, uu = np.mgrid[0:CAM.height, 0:CAM.width]
    z = truth[:, 2].copy()
    for i, zi in (override or {}).items():
        z[i] = zi
    for i in np.argsort(-z):
        if i in skip:
            continue
        r = (radii or {}).get(i, radius)
        disc = (uu - uv[i, 0]) ** 2 + (vv - uv[i, 1]) ** 2 <= r ** 2
        depth[disc] = z[i]
    return depth


def test_window_scales_with_image_size():
    cfg = LiftingConfig()
    assert window_size_px(640, 480, cfg) == 9
    assert window_size_px(1280, 720, cfg) > window_size_px(640, 480, cfg)
    assert window_size_px(100, 80, cfg) == 3 and window_size_px(10000, 8000, cfg) == 21


def test_depth_keypoints_recover_truth_missing_goes_to_model_outlier_rejected():
    world, truth, uv = scene()
    lw, re, lk = IDX["left_wrist"], IDX["right_elbow"], IDX["left_knee"]
    # left hand: no depth at all; right elbow: reads 0.6 m behind itself (within the body's 1 m
    # extent but against the model's depth ordering); left knee: reads a far wall.
    depth = paint_depth(truth, uv, skip=LEFT_HAND, override={re: truth[re, 2] + 0.6, lk: 5.0})
    rng = np.random.default_rng(1)
    holes = rng.random(depth.shape) < 0.15           # speckle dropouts: the median shrugs them off
    depth[holes] = 0.0
    conf = np.full(33, 0.9)
    res = lift_keypoints(uv, conf, world, depth, CAM)

    assert res.source[lw] == SOURCE_MODEL and not res.rejected[lw]
    assert res.source[re] == SOURCE_MODEL and res.rejected[re]
    assert res.source[lk] == SOURCE_MODEL and res.rejected[lk]
    depth_ok = res.source == SOURCE_DEPTH
    assert depth_ok.sum() >= 25
    # well-separated joints read their own surface exactly; face/hand/foot points a few px apart
    # share window pixels with their neighbours, which sit within a few cm
    joints = np.zeros(33, bool)
    joints[[IDX[n] for n in ("left_shoulder", "right_shoulder", "left_elbow", "right_wrist",
                             "left_hip", "right_hip", "right_knee")]] = True
    assert np.all(depth_ok[joints])
    np.testing.assert_allclose(res.points_cam_m[joints], truth[joints], atol=1e-3)
    assert np.max(np.linalg.norm(res.points_cam_m[depth_ok] - truth[depth_ok], axis=1)) < 0.04
    # model fallback: rigid alignment to the depth torso is exact for an exact model
    model = res.source == SOURCE_MODEL
    err = np.linalg.norm(res.points_cam_m[model] - truth[model], axis=1)
    assert np.all(err < 0.01), err
    assert res.alignment == "rigid"


def test_thin_limb_over_a_wall_reads_the_limb_not_the_wall():
    world, truth, uv = scene()
    lw = IDX["left_wrist"]
    # the wrist covers ~35 % of its 9x9 window; a wall 0.9 m behind the body fills the rest
    depth = paint_depth(truth, uv, skip=LEFT_HAND - {lw}, radii={lw: 3}, background_m=3.3)
    res = lift_keypoints(uv, np.full(33, 0.9), world, depth, CAM)
    assert res.depth_read_m[lw] == pytest.approx(3.3)       # a plain window median reads the wall
    assert res.source[lw] == SOURCE_DEPTH                      # gating by the model's depth reads the wrist
    np.testing.assert_allclose(res.points_cam_m[lw], truth[lw], atol=1e-3)


def test_translation_only_alignment_is_worse_under_rotation():
    world, truth, uv = scene(yaw_deg=15.0)
    lw = IDX["left_wrist"]
    depth = paint_depth(truth, uv, skip=LEFT_HAND)
    conf = np.full(33, 0.9)
    rigid = lift_keypoints(uv, conf, world, depth, CAM, LiftingConfig(alignment="rigid"))
    trans = lift_keypoints(uv, conf, world, depth, CAM, LiftingConfig(alignment="translation"))
    e_rigid = np.linalg.norm(rigid.points_cam_m[lw] - truth[lw])
    e_trans = np.linalg.norm(trans.points_cam_m[lw] - truth[lw])
    assert trans.alignment == "translation" and trans.source[lw] == SOURCE_MODEL
    assert e_rigid < 0.01 < e_trans


def test_low_confidence_keypoints_do_not_read_depth_and_none_without_model():
    world, truth, uv = scene()
    depth = paint_depth(truth, uv)
    conf = np.full(33, 0.9)
    conf[IDX["right_ankle"]] = 0.1
    res = lift_keypoints(uv, conf, world, depth, CAM)
    assert res.source[IDX["right_ankle"]] == SOURCE_MODEL
    res = lift_keypoints(uv, conf, None, depth, CAM)
    assert res.source[IDX["right_ankle"]] == SOURCE_NONE
    assert np.all(np.isnan(res.points_cam_m[IDX["right_ankle"]]))
    assert res.source[IDX["left_hip"]] == SOURCE_DEPTH


def test_no_depth_places_model_by_pnp():
    world, truth, uv = scene(yaw_deg=-20.0, t=(-0.2, 0.1, 3.0))
    res = lift_keypoints(uv, np.full(33, 0.9), world, None, CAM)
    assert res.alignment == "pnp" and np.all(res.source == SOURCE_MODEL)
    assert np.max(np.linalg.norm(res.points_cam_m - truth, axis=1)) < 0.01
    res = lift_keypoints(uv, np.full(33, 0.9), world, None, CAM, LiftingConfig(pnp_fallback=False))
    assert np.all(res.source == SOURCE_NONE)


def test_keypoints_outside_the_image_fall_back_to_model():
    world, truth, uv = scene(t=(0.0, 0.0, 2.4))
    uv = uv.copy()
    uv[IDX["left_ankle"]] = (700.0, 500.0)  # the detector may place off-image points
    depth = paint_depth(truth, uv)
    res = lift_keypoints(uv, np.full(33, 0.9), world, depth, CAM)
    assert res.source[IDX["left_ankle"]] == SOURCE_MODEL


def test_bad_inputs_raise_clear_errors():
    world, truth, uv = scene()
    with pytest.raises(DepthImageError, match="aligned_depth_to_color"):
        lift_keypoints(uv, np.ones(33), world, np.zeros((240, 320), np.float32), CAM)
    with pytest.raises(ValueError, match="world_m"):
        lift_keypoints(uv, np.ones(33), world[:17], None, CAM)
    with pytest.raises(ValueError, match="alignment"):
        LiftingConfig(alignment="affine")
