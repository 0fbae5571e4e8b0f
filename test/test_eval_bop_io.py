"""BOP I/O on real YCB-Video frames (GT agrees with real depth) and writer -> reader round trips."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.core.camera import PinholeCamera
from pose_ros.core.object_model import load_bop_models
from pose_ros.core.transforms import make_T, random_rotation, transform_points
from pose_ros.eval.bop_io import (BopFormatError, BopFrame, BopSceneReader, BopSceneWriter, GtInstance,
                                  YcbvRawSceneReader, iter_bop_dataset, load_bop_camera_json)


@pytest.fixture(scope="module")
def ycbv_root():
    return shared_data_path("ycbv_real")


@pytest.fixture(scope="module")
def ycbv_models(ycbv_root):
    return {m.obj_id: m for m in load_bop_models(ycbv_root / "models_bop_ycbv", num_points=2000)}


def _scene_dirs(root):
    return sorted((root / "data").iterdir()) + sorted((root / "special_data").iterdir())


def _depth_agreement(frame: BopFrame, g: GtInstance, model, shift_m=np.zeros(3)):
    """|z_model - z_real| (m) at front-facing, in-image model points not hidden behind the real surface."""
    T = g.T_cam_obj.copy()
    T[:3, 3] += shift_m
    p = transform_points(T, model.points_m)
    n = model.normals @ T[:3, :3].T
    uv = frame.camera.project(p)
    ok = frame.camera.in_image(uv) & ((n * p).sum(1) < 0)
    ui = np.rint(np.nan_to_num(uv)).astype(int)
    d = np.zeros(len(p))
    d[ok] = frame.depth_m[ui[ok, 1], ui[ok, 0]]
    vis = ok & (d > 0) & (p[:, 2] <= d + 0.01)
    in_mask = g.mask_visib[ui[vis, 1], ui[vis, 0]] if g.mask_visib is not None else None
    return np.abs(p[vis, 2] - d[vis]), in_mask


def test_ycbv_gt_agrees_with_real_depth(ycbv_root, ycbv_models):
    frames = per_inst = 0
    all_diffs = []
    for scene in _scene_dirs(ycbv_root):
        reader = BopSceneReader(scene)
        assert len(reader) >= 1
        for frame in reader:
            frames += 1
            assert frame.rgb.shape == (480, 640, 3) and frame.rgb.dtype == np.uint8
            assert frame.depth_m.dtype == np.float32 and 0.3 < np.median(frame.depth_m[frame.depth_m > 0]) < 3.0
            assert abs(frame.camera.fx - 1066.778) < 1e-6
            for g in frame.gt:
                diff, in_mask = _depth_agreement(frame, g, ycbv_models[g.obj_id])
                if len(diff) < 100:  # (almost) fully occluded instance: nothing to compare
                    continue
                per_inst += 1
                all_diffs.append(diff)
                assert in_mask.mean() > 0.8, (scene.name, frame.im_id, g.obj_id)
                if scene.parent.name == "data":
                    assert np.median(diff) < 0.005, (scene.name, frame.im_id, g.obj_id, np.median(diff))
                    assert (diff < 0.01).mean() >= 0.7, (scene.name, frame.im_id, g.obj_id)
                else:  # special_data: cluttered frame; the thin dark clamp (obj 20) has ~7 mm median
                    assert np.median(diff) < 0.01, (scene.name, frame.im_id, g.obj_id, np.median(diff))
    assert frames == 61 and per_inst >= 200
    diffs = np.concatenate(all_diffs)
    assert np.median(diffs) < 0.004 and (diffs < 0.01).mean() > 0.9


def test_depth_agreement_detects_wrong_pose(ycbv_root, ycbv_models):
    """Control: the same check fails for a pose shifted 2 cm sideways, so the test above can fail."""
    frame = BopSceneReader(ycbv_root / "data" / "0000").frame(1)
    for g in frame.gt:
        good, _ = _depth_agreement(frame, g, ycbv_models[g.obj_id])
        bad, _ = _depth_agreement(frame, g, ycbv_models[g.obj_id], shift_m=np.array([0.0, 0.0, -0.02]))
        assert (good < 0.01).mean() > 0.9 and (bad < 0.01).mean() < 0.3


def test_raw_reader_matches_bop_json(ycbv_root):
    """Raw meta.mat poses refer to the YCB-V model frame; BOP poses to the re-centred BOP meshes.
    Rotations must be identical and the frame offset R^T (t_bop - t_raw) constant per object."""
    offsets: dict[int, list[np.ndarray]] = {}
    for scene in _scene_dirs(ycbv_root):
        for fb, fr in zip(BopSceneReader(scene), YcbvRawSceneReader(scene)):
            assert (fb.scene_id, fb.im_id) == (fr.scene_id, fr.im_id)
            np.testing.assert_array_equal(fb.rgb, fr.rgb)
            np.testing.assert_allclose(fb.depth_m, fr.depth_m, atol=1e-6)
            np.testing.assert_allclose(fb.camera.K, fr.camera.K, atol=1e-3)
            assert [g.obj_id for g in fb.gt] == [g.obj_id for g in fr.gt]
            for gb, gr in zip(fb.gt, fr.gt):
                np.testing.assert_allclose(gb.T_cam_obj[:3, :3], gr.T_cam_obj[:3, :3], atol=1e-6)
                np.testing.assert_array_equal(gb.mask_visib, gr.mask_visib)
                offsets.setdefault(gb.obj_id, []).append(gb.T_cam_obj[:3, :3].T @ (gb.T_cam_obj[:3, 3] - gr.T_cam_obj[:3, 3]))
    assert len(offsets) >= 10
    for obj_id, offs in offsets.items():
        offs = np.array(offs)
        assert np.abs(offs - offs[0]).max() < 1e-4, obj_id  # 0.1 mm, across scenes and frames


def test_iter_bop_dataset_and_errors(ycbv_root, tmp_path):
    frames = list(iter_bop_dataset(ycbv_root / "data", load_masks=False))
    assert len(frames) == 60 and sorted({f.scene_id for f in frames}) == [0, 1, 2]
    assert all(g.mask_visib is None for f in frames for g in f.gt)
    with pytest.raises(BopFormatError, match="no scene_camera.json"):
        BopSceneReader(tmp_path)
    with pytest.raises(BopFormatError, match="no \\*-meta.mat"):
        YcbvRawSceneReader(tmp_path)
    (tmp_path / "scene_camera.json").write_text(json.dumps({"0": {"cam_K": [1, 0, 0], "depth_scale": 1}}))
    with pytest.raises(BopFormatError, match="cam_K must be 9"):
        BopSceneReader(tmp_path).camera_entry(0)


def test_lmo_camera_json():
    cam, depth_scale = load_bop_camera_json(shared_data_path("lmo_models", "camera.json"))
    assert (cam.width, cam.height) == (640, 480) and abs(cam.fx - 572.4114) < 1e-9 and depth_scale == 1.0


def _synthetic_frame(rng, im_id):
    cam = PinholeCamera(np.array([[500.0, 0, 159.5], [0, 505.0, 119.5], [0, 0, 1]]), 320, 240)
    rgb = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    depth_m = rng.uniform(0.3, 2.0, (240, 320)).astype(np.float32)
    depth_m[:10] = 0.0
    depth_m[20, 20] = np.nan
    gts = []
    for k in range(2):
        full = np.zeros((240, 320), bool)
        full[50 + 30 * k:150, 40 + 60 * k:200] = True
        vis = full.copy()
        vis[50:90] = False
        T = make_T(random_rotation(rng), rng.uniform([-0.1, -0.1, 0.5], [0.1, 0.1, 1.0]))
        gts.append(GtInstance(obj_id=k + 1, T_cam_obj=T, mask_visib=vis, mask_full=full))
    return BopFrame(scene_id=7, im_id=im_id, rgb=rgb, depth_m=depth_m, camera=cam, gt=gts)


def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    written = [_synthetic_frame(rng, i) for i in (0, 3)]
    with BopSceneWriter(tmp_path / "000007", depth_scale=0.1) as w:
        for f in written:
            w.add(f)
    reader = BopSceneReader(tmp_path / "000007")
    assert reader.im_ids == [0, 3] and reader.scene_id == 7
    info = json.loads((tmp_path / "000007" / "scene_gt_info.json").read_text())
    for fw, fr in zip(written, reader):
        np.testing.assert_array_equal(fr.rgb, fw.rgb)
        np.testing.assert_allclose(fr.camera.K, fw.camera.K)
        valid = np.isfinite(fw.depth_m) & (fw.depth_m > 0)
        assert (fr.depth_m[~valid] == 0).all()
        assert np.abs(fr.depth_m[valid] - fw.depth_m[valid]).max() <= 0.05e-3 + 1e-7  # 0.1 mm steps
        for gw, gr, gi in zip(fw.gt, fr.gt, info[str(fw.im_id)]):
            assert gr.obj_id == gw.obj_id
            np.testing.assert_allclose(gr.T_cam_obj, gw.T_cam_obj, atol=1e-12)
            np.testing.assert_array_equal(gr.mask_visib, gw.mask_visib)
            assert abs(gr.visib_fract - gw.mask_visib.sum() / gw.mask_full.sum()) < 1e-12
            ys, xs = np.nonzero(gw.mask_visib)
            assert gr.bbox_visib == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert gi["px_count_all"] == gw.mask_full.sum()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        BopSceneWriter(tmp_path / "000007")


def test_writer_real_frame_round_trip_and_bbox_from_model(ycbv_root, ycbv_models, tmp_path):
    """Real data through the writer: exact images and poses back; bbox_obj from projected models."""
    frame = BopSceneReader(ycbv_root / "data" / "0000").frame(2)
    w = BopSceneWriter(tmp_path / "s", depth_scale=0.1, models=ycbv_models)
    w.add(frame)
    w.close()
    back = BopSceneReader(tmp_path / "s").frame(2)
    np.testing.assert_array_equal(back.rgb, frame.rgb)
    np.testing.assert_allclose(back.depth_m, frame.depth_m, atol=1e-6)  # same 0.1 mm units: exact
    for g, gb in zip(frame.gt, back.gt):
        np.testing.assert_allclose(gb.T_cam_obj, g.T_cam_obj, atol=1e-12)
        np.testing.assert_array_equal(gb.mask_visib, g.mask_visib)
        x, y, bw, bh = gb.bbox_obj
        vx, vy, vw, vh = gb.bbox_visib
        # The visible box lies inside the full-object box (within a pixel of rounding).
        assert bw > 0 and vx >= x - 1 and vy >= y - 1 and vx + vw <= x + bw + 1 and vy + vh <= y + bh + 1


def test_writer_validation_and_depth_overflow(tmp_path):
    rng = np.random.default_rng(1)
    f = _synthetic_frame(rng, 0)
    w = BopSceneWriter(tmp_path / "a", depth_scale=0.1, flush_every=1)
    bad = BopFrame(0, 1, f.rgb[:, :100], f.depth_m, f.camera, [])
    with pytest.raises(ValueError, match="rgb must be"):
        w.add(bad)
    f.depth_m[100, 100] = 7.0  # beyond 6.5535 m at 0.1 mm steps
    w.add(f)
    assert w.dropped_depth_px == 1
    with pytest.raises(ValueError, match="already added"):
        w.add(f)
    # Flushed after each frame: readable before close() (a crashed generator keeps its frames).
    assert BopSceneReader(tmp_path / "a").im_ids == [0]
    w.close()
    assert BopSceneReader(tmp_path / "a").frame(0).depth_m[100, 100] == 0.0
    with pytest.raises(ValueError, match="depth_scale"):
        BopSceneWriter(tmp_path / "b", depth_scale=0)
