"""SkeletonEstimator end to end on a real COCO photo with a constructed depth image."""
import cv2
import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.core.camera import PinholeCamera
from pose_ros.human.conventions import BLAZEPOSE33_NAMES, COCO17_NAMES, SOURCE_DEPTH, SOURCE_MODEL
from pose_ros.human.keypoint_backend import MediaPipePoseBackend
from pose_ros.human.lifting import DepthImageError
from pose_ros.human.operator_tracking import TrackerConfig
from pose_ros.human.skeleton_estimator import (CameraMismatchError, SkeletonEstimator,
                                               SkeletonEstimatorConfig)


@pytest.fixture(scope="module")
def photo():
    path = shared_data_path("coco_person_dev", "images", "000000000785.jpg")
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


@pytest.fixture(scope="module")
def backend():
    with MediaPipePoseBackend(static_image_mode=False) as b:
        yield b


def _camera(rgb):
    return PinholeCamera.from_fov(rgb.shape[1], rgb.shape[0], 60.0)


def test_flat_depth_gives_depth_sourced_points_on_the_plane(photo, backend):
    cam = _camera(photo)
    depth = np.full(photo.shape[:2], 2.0, np.float32)
    depth[:, : photo.shape[1] // 2] = 0.0          # left half has no depth: model fallback there
    est = SkeletonEstimator(backend, SkeletonEstimatorConfig(filter_enabled=False))
    skels = est.process(photo, depth, cam, 0.0)
    assert len(skels) == 1
    s = skels[0]
    assert s.convention == "blazepose33" and s.names == BLAZEPOSE33_NAMES and s.is_operator
    from_depth = s.source == SOURCE_DEPTH
    assert from_depth.sum() >= 10
    np.testing.assert_allclose(s.positions_cam_m[from_depth, 2], 2.0, atol=1e-5)
    # depth points re-project onto their pixels
    np.testing.assert_allclose(cam.project(s.positions_cam_m[from_depth]), s.uv_px[from_depth], atol=1e-6)
    from_model = s.source == SOURCE_MODEL
    assert np.all(np.isfinite(s.positions_cam_m[from_model]))
    assert np.all(np.abs(s.positions_cam_m[from_model, 2] - 2.0) < 0.8)


def test_coco17_output_track_ids_and_loss(photo, backend):
    cam = _camera(photo)
    depth = np.full(photo.shape[:2], 2.5, np.float32)
    cfg = SkeletonEstimatorConfig(convention="coco17", tracking=TrackerConfig(max_missed_frames=2))
    est = SkeletonEstimator(backend, cfg)
    ids = []
    for k in range(3):
        skels = est.process(photo, depth, cam, 0.033 * k)
        assert len(skels) == 1 and skels[0].names == COCO17_NAMES and skels[0].positions_cam_m.shape == (17, 3)
        ids.append(skels[0].track_id)
    assert len(set(ids)) == 1
    blank = np.full_like(photo, 127)
    lost = []
    for k in range(3, 7):
        assert est.process(blank, depth, cam, 0.033 * k) == []
        lost.append(est.last_operator_lost)
    assert lost == [False, False, True, False]
    skels = est.process(photo, depth, cam, 0.033 * 8)
    assert len(skels) == 1 and skels[0].track_id != ids[0] and skels[0].is_operator


def test_filter_smooths_between_frames(photo, backend):
    cam = _camera(photo)
    rng = np.random.default_rng(0)
    depths = [np.full(photo.shape[:2], 2.0 + rng.normal(0, 0.03), np.float32) for _ in range(12)]
    jitter = {}
    for enabled in (False, True):
        est = SkeletonEstimator(backend, SkeletonEstimatorConfig(filter_enabled=enabled))
        zs = [est.process(photo, d, cam, 0.033 * k)[0].positions_cam_m[11, 2] for k, d in enumerate(depths)]
        jitter[enabled] = np.std(np.diff(zs[2:]))
    assert jitter[True] < jitter[False] / 2, jitter


def test_mismatched_inputs_raise(photo, backend):
    est = SkeletonEstimator(backend)
    cam = _camera(photo)
    with pytest.raises(CameraMismatchError, match="camera_info"):
        est.process(photo, None, PinholeCamera.from_fov(320, 240, 60.0), 0.0)
    with pytest.raises(DepthImageError, match="aligned_depth_to_color"):
        est.process(photo, np.ones((10, 10), np.float32), cam, 0.0)
    with pytest.raises(ValueError, match="convention"):
        SkeletonEstimatorConfig(convention="smpl")
