"""Real-photo training scenes (SceneConfig photo_dirs / camera_K) and the train CLI's early errors.

Uses the real ImageNet sample photos and YCB-Video meshes from ../shared/data (skips when absent)
and the shipped ycbv_xtion camera file. A handful of 320x240 renders only.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, shared_data_path
from pose_ros.core.camera_file import load_camera_file
from pose_ros.objects.training_data import (RawSample, SceneConfig, SceneRenderer, _background_depth, augment,
                                            render_cameras)

YCBV_FX = 1066.778
CAMERA_FILE = REPO_ROOT / "config" / "cameras" / "ycbv_xtion.yaml"


def _cfg(**kw) -> SceneConfig:
    cam = load_camera_file(CAMERA_FILE)
    photos = shared_data_path("photos", "imagenet_sample")
    return SceneConfig(photo_dirs=(str(photos),), camera_K=tuple(cam.K.ravel()),
                       camera_size=(cam.width, cam.height), **kw)


@pytest.fixture(scope="module")
def ycbv_models():
    from pose_ros.core.object_model import load_bop_models

    models = load_bop_models(shared_data_path("ycbv_real", "models_ycbv"), [1, 5], num_points=500)
    assert [m.obj_id for m in models] == [1, 5]
    return models


def _check_sample(s: RawSample, cfg: SceneConfig) -> None:
    H, W = cfg.height, cfg.width
    assert s.rgb.shape == (H, W, 3) and s.rgb.dtype == np.uint8
    assert s.depth_m.shape == (H, W) and s.depth_m.dtype == np.float32
    assert s.inst.shape == (H, W)
    assert s.inst.max() < len(s.cls)
    assert len(s.cls) == len(s.T_cam_obj)


# ----------------------------------------------------------------------------- cameras
def test_render_cameras_use_the_camera_file_scaled_to_the_input():
    cfg = _cfg()
    cams = render_cameras(cfg, num_cameras=4)
    assert len(cams) == 4
    s = 0.5                                                 # 640x480 -> 320x240
    fx0 = YCBV_FX * s
    fxs = np.array([c.fx for c in cams])
    for c in cams:
        assert (c.width, c.height) == (320, 240)
        assert fx0 * (1 - cfg.camera_fx_jitter) - 1e-6 <= c.fx <= fx0 * (1 + cfg.camera_fx_jitter) + 1e-6
        assert c.fy / c.fx == pytest.approx(1067.487 / YCBV_FX)
        assert c.cx == pytest.approx((312.9869 + 0.5) * s - 0.5)
        assert c.cy == pytest.approx((241.3109 + 0.5) * s - 0.5)
    assert fxs.min() < fx0 < fxs.max()                      # the jitter spreads both ways
    assert fxs.mean() == pytest.approx(fx0, rel=1e-6)


def test_render_cameras_letterbox_a_wider_camera():
    # a 1280x720 camera into 320x240: width limits the scale (0.25), as the estimator letterboxes
    K = (900.0, 0, 640.0, 0, 900.0, 360.0, 0, 0, 1)
    cams = render_cameras(SceneConfig(camera_K=K, camera_size=(1280, 720), camera_fx_jitter=0.0), num_cameras=2)
    for c in cams:
        assert c.fx == pytest.approx(225.0)
        assert c.cx == pytest.approx(159.625)


def test_camera_K_without_size_is_refused():
    with pytest.raises(ValueError, match="camera_size"):
        SceneConfig(camera_K=(500.0, 0, 160, 0, 500.0, 120, 0, 0, 1))


def test_without_camera_file_fx_comes_from_fx_range():
    cfg = SceneConfig()
    fxs = [c.fx for c in render_cameras(cfg, num_cameras=3)]
    assert fxs == pytest.approx(list(np.linspace(*cfg.fx_range, 3)))


# ----------------------------------------------------------------------------- renders
def test_forced_background_depth_leaves_no_hole(ycbv_models):
    cfg = _cfg(background_depth_prob=1.0, depth_noise=False, empty_prob=0.0)
    ren = SceneRenderer(ycbv_models, cfg, num_cameras=2, seed=3)
    assert ren.photos is not None and len(ren.photos) > 20
    for seed in range(2):
        s = ren.render(np.random.default_rng(seed))
        _check_sample(s, cfg)
        assert np.all(np.isfinite(s.depth_m))
        assert np.all(s.depth_m > 0), f"{int((s.depth_m <= 0).sum())} zero-depth pixels"
        assert (s.cls >= 0).any()                           # a target object is in the scene
        assert any(np.allclose(s.K, c.K) for c in ren.cameras)


def test_empty_scene_has_no_target_pixels(ycbv_models):
    cfg = _cfg(empty_prob=1.0)
    ren = SceneRenderer(ycbv_models, cfg, num_cameras=1, seed=4)
    for seed in range(2):
        s = ren.render(np.random.default_rng(100 + seed))
        _check_sample(s, cfg)
        assert len(s.cls) >= 1 and np.all(s.cls == -1)     # distractors only
        labelled = s.inst[s.inst >= 0]
        assert not np.any(s.cls[labelled] >= 0)


def test_photo_background_is_not_flat(ycbv_models):
    cfg = _cfg(photo_prob=1.0, empty_prob=0.0)
    ren = SceneRenderer(ycbv_models, cfg, num_cameras=1, seed=5)
    for seed in range(2):
        s = ren.render(np.random.default_rng(200 + seed))
        bg = s.rgb[s.inst < 0].astype(np.float32)
        assert len(bg) > 1000
        assert float(bg.std(axis=0).mean()) > 8.0, "background looks like one flat colour"
        assert len(np.unique(bg.astype(np.uint8), axis=0)) > 200


def test_background_depth_fills_only_holes_behind_the_scene():
    K = np.array([[260.0, 0, 159.5], [0, 260.0, 119.5], [0, 0, 1]])
    depth = np.zeros((240, 320), np.float32)
    depth[80:160, 100:220] = 0.9
    out = _background_depth(depth, K, np.random.default_rng(0))
    assert out is not depth
    np.testing.assert_array_equal(out[80:160, 100:220], 0.9)
    holes = depth <= 0
    assert np.all(out[holes] > 0.9) and np.all(out[holes] <= 8.0) and np.all(np.isfinite(out))
    full = np.full((4, 4), 1.0, np.float32)
    assert _background_depth(full, K, np.random.default_rng(0)) is full


def test_augment_keeps_shapes_and_types():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    depth = np.full((240, 320), 1.2, np.float32)
    for i in range(6):
        r, d = augment(rgb, depth, np.random.default_rng(i))
        assert r.shape == rgb.shape and r.dtype == np.uint8
        assert d.shape == depth.shape


# ----------------------------------------------------------------------------- train CLI
# If the early checks ever regress, training starts: keep that run tiny so the test fails fast on rc.
GUARD = ["--workers", "0", "--epochs", "1", "--images", "2", "--val-images", "1", "--device", "cpu", "--threads", "1"]
CLI = [sys.executable, "-c", "import sys; from pose_ros.cli import main; sys.exit(main())"]


def _train_cli(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    models = shared_data_path("ycbv_real", "models_ycbv")
    out = tmp_path / "x.pt"
    proc = subprocess.run([*CLI, "train", "--bop-models", str(models), "--obj-ids", "1", "--out", str(out),
                           *extra, *GUARD], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    # failed before any rendering or training: nothing written next to --out
    assert not out.exists()
    assert not out.with_name(out.name + ".data").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("x.pt")) == []
    return proc


def test_cli_backgrounds_empty_folder(tmp_path):
    empty = tmp_path / "empty_photos"
    empty.mkdir()
    proc = _train_cli(tmp_path, "--backgrounds", str(empty))
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "has no images" in proc.stderr
    assert str(empty) in proc.stderr


def test_cli_backgrounds_too_few_photos(tmp_path):
    import cv2

    few = tmp_path / "few_photos"
    few.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        assert cv2.imwrite(str(few / f"p{i}.jpg"), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    proc = _train_cli(tmp_path, "--backgrounds", str(few))
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "at least" in proc.stderr


def test_cli_camera_missing_file(tmp_path):
    missing = tmp_path / "no_camera.yaml"
    proc = _train_cli(tmp_path, "--backgrounds", "none", "--camera", str(missing))
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and "not found" in proc.stderr
    assert str(missing) in proc.stderr


def test_cli_bad_distance_range(tmp_path):
    proc = _train_cli(tmp_path, "--backgrounds", "none", "--distance-range", "1.5", "0.5")
    assert proc.returncode == 2, proc.stderr
    assert "--distance-range" in proc.stderr


def test_cli_bad_hard_negative_share(tmp_path):
    proc = _train_cli(tmp_path, "--backgrounds", "none", "--hard-negatives", "1.5")
    assert proc.returncode == 2, proc.stderr
    assert "--hard-negatives" in proc.stderr


def test_cli_hard_negatives_need_photos(tmp_path):
    proc = _train_cli(tmp_path, "--backgrounds", "none", "--hard-negatives", "0.25")
    assert proc.returncode == 2, proc.stderr
    assert "hard negatives need real photos" in proc.stderr
