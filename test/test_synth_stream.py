"""SyntheticSceneStream: deterministic in (seed, t), smooth, consistent ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.object_model import load_object_dir
from pose_ros.core.transforms import rotation_angle_rad, transform_points
from pose_ros.synth.stream import SyntheticSceneStream

REPO = Path(__file__).resolve().parents[1]
CAM = PinholeCamera.from_fov(320, 240, 60.0)  # small frames keep the test fast


@pytest.fixture(scope="module")
def models():
    return load_object_dir(REPO / "meshes")


@pytest.fixture(scope="module")
def stream(models):
    return SyntheticSceneStream(models, CAM, seed=4)


def test_deterministic_per_seed_and_time(models, stream):
    r1, d1, g1 = stream.frame(3.25)
    stream.frame(9.0)  # asking other frames in between changes nothing
    r2, d2, g2 = stream.frame(3.25)
    other = SyntheticSceneStream(models, CAM, seed=4)
    r3, d3, _ = other.frame(3.25)
    assert np.array_equal(d1, d2) and np.array_equal(d1, d3)
    assert np.array_equal(r1.rgb, r2.rgb) and np.array_equal(r1.rgb, r3.rgb)
    assert all(np.array_equal(a.T_cam_obj, b.T_cam_obj) for a, b in zip(g1, g2))
    _, d4, _ = SyntheticSceneStream(models, CAM, seed=5).frame(3.25)
    assert not np.array_equal(d1, d4)


def test_motion_is_smooth_and_gt_matches_the_image(models, stream):
    res_a, depth_a, gt_a = stream.frame(10.0)
    res_b, _, gt_b = stream.frame(10.0 + 1 / 30)
    assert [g.name for g in gt_a] == [m.name for m in models]
    assert [g.obj_id for g in gt_a] == [1, 2, 3]
    for a, b in zip(gt_a, gt_b):
        assert np.linalg.norm(a.T_cam_obj[:3, 3] - b.T_cam_obj[:3, 3]) < 0.01
        assert np.degrees(rotation_angle_rad(a.T_cam_obj[:3, :3], b.T_cam_obj[:3, :3])) < 2.0
    for i, (g, m) in enumerate(zip(gt_a, models)):
        assert g.visible_fraction == pytest.approx(res_a.visible_fraction[i])
        if g.visible_fraction > 0.5:
            # The model's bbox centre projects onto (or right next to) its own instance pixels.
            c = transform_points(g.T_cam_obj, m.keypoints_m[-1:])
            u, v = np.rint(CAM.project(c)[0]).astype(int)
            ys, xs = np.nonzero(res_a.instance_mask == i)
            assert np.min(np.hypot(xs - u, ys - v)) < 3
    # Noisy depth stays close to the clean render where both are valid.
    both = (depth_a > 0) & (res_a.depth_m > 0)
    assert both.mean() > 0.5
    assert np.median(np.abs(depth_a[both] - res_a.depth_m[both])) < 0.005


def test_objects_get_occluded_or_leave_view(models):
    st = SyntheticSceneStream(models, CAM, seed=4, noise=False)
    fr = np.array([[g.visible_fraction for g in st.frame(t)[2]] for t in np.arange(0.0, 40.0, 1.0)])
    assert (fr > 0.9).all(axis=1).mean() > 0.3  # often everything is in clear view ...
    assert (fr < 0.5).any()                     # ... and sometimes something is hidden or out of view


def test_bad_input(models):
    with pytest.raises(ValueError, match="at least one model"):
        SyntheticSceneStream([], CAM)
    with pytest.raises(ValueError, match="finite"):
        SyntheticSceneStream(models, CAM).frame(float("nan"))


def test_camera_never_enters_the_occluder(stream):
    from pose_ros.core.transforms import invert_T

    for t in np.arange(0.0, 60.0, 0.25):
        eye = invert_T(stream.camera_pose(t))[:3, 3]
        T_arm = stream.arm_pose(t)
        assert eye[2] > 0.3
        if T_arm is not None:
            assert T_arm[2, 3] + 0.025 < eye[2]
