"""`pose-ros eval`'s false-positive count and comparison table, and the dataset reader it uses
(BOP or raw YCB-Video layout) on real files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.transforms import R_from_axis_angle, make_T
from pose_ros.eval.bop_io import (BopFormatError, BopFrame, BopSceneWriter, GtInstance, YcbvRawSceneReader,
                                  iter_dataset_frames)
from pose_ros.objects.estimator import PoseResult, PoseStats

from conftest import shared_data_path

REPO = Path(__file__).resolve().parents[1]
CAM = PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)


@pytest.fixture(scope="module")
def models():
    from pose_ros.core.object_model import load_object_dir

    return {int(m.obj_id): m for m in load_object_dir(REPO / "meshes")}


def _T(x=0.0, y=0.0, z=0.7, angle=0.4):
    return make_T(R_from_axis_angle(np.array([0.3, 1.0, 0.2]), angle), [x, y, z])


def _result(models, obj_id, T, score=0.9, T_pnp="same"):
    m = models[obj_id]
    return PoseResult(m.name, obj_id, obj_id, -1, T, score, np.eye(6), PoseStats(),
                      T_pnp_cam_obj=T if isinstance(T_pnp, str) else T_pnp)


def _shift(T, dx):
    out = T.copy()
    out[0, 3] += dx
    return out


def test_count_false_positives_cases(models):
    from pose_ros.cli.commands.eval import count_false_positives

    MUG, BOX, BOTTLE = 1, 2, 3
    T_mug, T_box = _T(-0.1), _T(0.12, angle=1.1)
    gt = [GtInstance(MUG, T_mug), GtInstance(BOX, T_box)]
    for use_icp in (True, False):
        # Right poses: nothing false.
        assert count_false_positives(gt, [_result(models, MUG, T_mug), _result(models, BOX, T_box)], models,
                                     use_icp) == (0, 0)
        # A pose 5 cm off (the mug's 0.1 d is 1.25 cm): a wrong pose of an object in view.
        assert count_false_positives(gt, [_result(models, MUG, _shift(T_mug, 0.05))], models, use_icp) == (0, 1)
        # A pose of an object that is not in the frame: absent.
        assert count_false_positives(gt, [_result(models, BOTTLE, _T(0.0, 0.1))], models, use_icp) == (1, 0)
        # Misses are not false positives.
        assert count_false_positives(gt, [], models, use_icp) == (0, 0)
    # Two poses of the mug, one mug in view: the higher-scored one is matched, the other is absent.
    two = [_result(models, MUG, T_mug, 0.9), _result(models, MUG, _shift(T_mug, 0.004), 0.6)]
    assert count_false_positives(gt, two, models, True) == (1, 0)
    two = [_result(models, MUG, _shift(T_mug, 0.05), 0.9), _result(models, MUG, T_mug, 0.6)]
    assert count_false_positives(gt, two, models, True) == (1, 1)      # the wrong one scored higher
    # Two mugs in view, two poses: each matched to the nearer instance.
    T_mug2 = _T(0.0, -0.1, 0.8)
    gt2 = gt + [GtInstance(MUG, T_mug2)]
    assert count_false_positives(gt2, [_result(models, MUG, T_mug2, 0.9), _result(models, MUG, T_mug, 0.8)],
                                 models, True) == (0, 0)
    # Symmetric bottle: a turn about its axis is still right (ADD-S).
    T_bottle = _T(0.0, 0.1, angle=0.2)
    turned = T_bottle @ make_T(R_from_axis_angle(np.array([0.0, 0.0, 1.0]), 1.3), np.zeros(3))
    assert models[BOTTLE].is_symmetric
    assert count_false_positives([GtInstance(BOTTLE, T_bottle)], [_result(models, BOTTLE, turned)], models,
                                 True) == (0, 0)
    # With ICP vs without: the refined pose is right, the PnP pose before ICP is 5 cm off.
    r = _result(models, BOX, T_box, T_pnp=_shift(T_box, 0.05))
    assert count_false_positives(gt, [r], models, True) == (0, 0)
    assert count_false_positives(gt, [r], models, False) == (0, 1)
    # Found by the depth search only (no PnP pose): not published without ICP.
    r = _result(models, BOTTLE, _T(0.0, 0.1), T_pnp=None)
    assert count_false_positives(gt, [r], models, True) == (1, 0)
    assert count_false_positives(gt, [r], models, False) == (0, 0)


def test_operating_points_trade_recall_for_fewer_false_positives(models):
    """Recall and false positives per frame at each threshold: a right pose scored 0.8, a wrong one 0.45
    and an absent object's pose 0.35 in one frame; a right pose scored 0.5 in another."""
    from pose_ros.eval.operating_points import OperatingPoints, describe_operating_points

    MUG, BOX, BOTTLE = 1, 2, 3
    T_mug, T_box, T_far = _T(-0.1), _T(0.12, angle=1.1), _T(0.0, 0.1)
    gt1 = [GtInstance(MUG, T_mug), GtInstance(BOX, T_box)]
    res1 = [_result(models, MUG, T_mug, 0.8), _result(models, BOX, _shift(T_box, 0.05), 0.45),
            _result(models, BOTTLE, T_far, 0.35)]
    gt2 = [GtInstance(BOX, T_box)]
    res2 = [_result(models, BOX, T_box, 0.5)]
    op = OperatingPoints([0.4, 0.3, 0.6], models)
    op.add_frame(gt1, gt1, res1)
    op.add_frame(gt2, gt2, res2)
    rows = {r["threshold"]: r for r in op.report()}
    assert list(rows) == [0.3, 0.4, 0.6]
    assert rows[0.3]["add_s_recall"] == pytest.approx(2 / 3) and rows[0.3]["false_positives_per_frame"] == 1.0
    assert rows[0.4]["add_s_recall"] == pytest.approx(2 / 3) and rows[0.4]["false_positives_per_frame"] == 0.5
    assert rows[0.6]["add_s_recall"] == pytest.approx(1 / 3) and rows[0.6]["false_positives_per_frame"] == 0.0
    assert describe_operating_points(op.report()).startswith(">= 0.3: 66.7% / 1.00; >= 0.4: 66.7% / 0.50")
    # a barely visible instance left out of recall is still no false positive when posed right
    op = OperatingPoints([0.3], models)
    op.add_frame([], gt2, res2)
    assert op.report()[0]["false_positives_per_frame"] == 0.0 and op.instances == 0
    with pytest.raises(ValueError):
        OperatingPoints([], models)


def test_comparison_table_rows(models):
    from pose_ros.cli.commands.eval import comparison_table
    from pose_ros.eval.pose_metrics import PoseRecord, evaluate_poses

    m = models[2]
    T = _T(0.05)
    recs = [PoseRecord(2, m, T, T, CAM), PoseRecord(2, m, T, _shift(T, 0.05), CAM),
            PoseRecord(2, m, T, None, CAM), PoseRecord(2, m, T, _shift(T, 0.002), CAM)]
    rep_icp = evaluate_poses(recs, vsd=False)
    rep_pnp = evaluate_poses(recs[1:3], vsd=False)
    res = {"icp": rep_icp, "no_icp": rep_pnp, "frames": 4, "timing_ms": {"total": 123.4},
           "false_positives": {"icp": {"per_frame": 0.25}, "no_icp": {"per_frame": 1.5}}}
    lines = comparison_table(res).splitlines()
    assert lines[0].split() == ["method", "ADD(-S)", "AR", "FP/frame", "ms/frame"]
    assert len(lines) == 3
    assert lines[1].startswith("ours: network -> PnP -> ICP -> check")
    assert lines[1][52:].split() == ["50.0%", "-", "0.25", "123"]          # no AR without VSD
    assert lines[2].startswith("ours: PnP pose only (no ICP)")
    assert lines[2][52:].split() == ["0.0%", "-", "1.50", "nan"]
    res["ppf"] = {"report": evaluate_poses(recs[:2], vsd=False), "false_positives_per_frame": 0.5,
                  "ms_per_object": 200.0}
    lines = comparison_table(res).splitlines()
    assert len(lines) == 4 and lines[3].startswith("PPF (OpenCV) + ICP")
    assert lines[3][52:].split() == ["50.0%", "-", "0.50", "100"]           # 200 ms x 2 objects / 4 frames


# --------------------------------------------------------------------------- dataset layouts
def _ycbv_data() -> Path:
    return shared_data_path("ycbv_real", "data")


def test_auto_layout_reads_raw_ycbv_poses():
    from scipy.io import loadmat

    data = _ycbv_data()
    frames = list(iter_dataset_frames(data))
    assert len(frames) == 60
    assert [(f.scene_id, f.im_id) for f in frames] == sorted((f.scene_id, f.im_id) for f in frames)
    scenes = sorted({f.scene_id for f in frames})
    raw = {s: YcbvRawSceneReader(data / f"{s:04d}", load_masks=False) for s in scenes}
    for f in frames[::7]:
        ref = raw[f.scene_id].frame(f.im_id)
        assert [g.obj_id for g in f.gt] == [g.obj_id for g in ref.gt]
        for g, r in zip(f.gt, ref.gt):
            assert np.array_equal(g.T_cam_obj, r.T_cam_obj)
            assert g.mask_visib is not None and g.mask_visib.shape == f.depth_m.shape
        meta = loadmat(str(data / f"{f.scene_id:04d}" / f"{f.im_id:06d}-meta.mat"))
        poses = np.asarray(meta["poses"], np.float64).reshape(3, 4, -1)
        for i, g in enumerate(f.gt):
            assert g.obj_id == int(np.ravel(meta["cls_indexes"])[i])
            assert np.allclose(g.T_cam_obj[:3, 3], poses[:, 3, i])
            assert np.allclose(g.T_cam_obj[:3, :3], poses[:, :3, i], atol=1e-5)
        assert np.allclose(f.camera.K, meta["intrinsic_matrix"])
    assert all(f.depth_m.dtype == np.float32 and np.nanmax(f.depth_m) < 5.0 for f in frames[::11])
    # Explicit ycbv-raw gives the same frames and poses.
    raw_frames = list(iter_dataset_frames(data, layout="ycbv-raw", load_masks=False))
    assert len(raw_frames) == 60
    for a, b in zip(frames[::9], raw_frames[::9]):
        assert (a.scene_id, a.im_id) == (b.scene_id, b.im_id)
        assert all(np.array_equal(g.T_cam_obj, h.T_cam_obj) for g, h in zip(a.gt, b.gt))
        assert all(h.mask_visib is None for h in b.gt)


def test_bop_layout_reads_scene_gt_bop_poses():
    data = _ycbv_data()
    raw = list(iter_dataset_frames(data, layout="ycbv-raw", load_masks=False))
    bop = list(iter_dataset_frames(data, layout="bop", load_masks=False))
    assert len(bop) == 60
    offsets: dict[int, list[np.ndarray]] = {}
    for a, b in zip(raw, bop):
        assert (a.scene_id, a.im_id) == (b.scene_id, b.im_id)
        assert sorted(g.obj_id for g in a.gt) == sorted(g.obj_id for g in b.gt)
        assert np.allclose(a.camera.K, b.camera.K)
        for g in a.gt:
            h = next(h for h in b.gt if h.obj_id == g.obj_id)
            # Same rotation; the translation differs by the model-frame offset of that object.
            assert np.allclose(g.T_cam_obj[:3, :3], h.T_cam_obj[:3, :3], atol=1e-4)
            offsets.setdefault(g.obj_id, []).append(g.T_cam_obj[:3, :3].T @ (h.T_cam_obj[:3, 3] - g.T_cam_obj[:3, 3]))
    norms = {o: float(np.linalg.norm(np.mean(v, 0))) for o, v in offsets.items()}
    assert max(norms.values()) > 0.005, norms                     # at least one object: > 5 mm apart
    for o, v in offsets.items():                                   # one constant offset per object
        assert np.ptp(np.array(v), axis=0).max() < 0.002, (o, np.ptp(np.array(v), axis=0))


def test_single_scene_folder_and_errors(tmp_path):
    data = _ycbv_data()
    one = list(iter_dataset_frames(data / "0001", load_masks=False))
    assert len(one) == 20 and {f.scene_id for f in one} == {1}
    assert len(list(iter_dataset_frames(data / "0001", layout="bop", load_masks=False))) == 20
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BopFormatError, match="no scene folders"):
        list(iter_dataset_frames(empty))
    (empty / "notes").mkdir()
    (empty / "notes" / "readme.txt").write_text("not a scene")
    for layout in ("auto", "bop", "ycbv-raw"):
        with pytest.raises(BopFormatError, match="no scene folders"):
            list(iter_dataset_frames(empty, layout=layout))
    with pytest.raises(BopFormatError, match="not found"):
        list(iter_dataset_frames(tmp_path / "missing"))
    with pytest.raises(ValueError, match="layout must be"):
        list(iter_dataset_frames(data, layout="coco"))


def test_auto_layout_reads_a_written_bop_split(tmp_path, models):
    """A BOP split written by BopSceneWriter (no *-meta.mat): auto reads it as BOP, ycbv-raw refuses it."""
    from pose_ros.synth.renderer import RgbdRenderer

    T = _T(0.0, 0.0, 0.6)
    r = RgbdRenderer(CAM).render([(models[2], T)], background=np.full((480, 640, 3), 60, np.uint8))
    frame = BopFrame(3, 0, r.rgb, r.depth_m, CAM, [GtInstance(2, T, mask_visib=r.instance_mask == 0)])
    with BopSceneWriter(tmp_path / "split" / "000003") as w:
        w.add(frame)
    frames = list(iter_dataset_frames(tmp_path / "split"))
    assert len(frames) == 1 and frames[0].scene_id == 3
    g = frames[0].gt[0]
    assert g.obj_id == 2 and np.allclose(g.T_cam_obj, T, atol=1e-6)
    assert np.array_equal(g.mask_visib, r.instance_mask == 0)
    assert len(list(iter_dataset_frames(tmp_path / "split" / "000003", layout="bop"))) == 1
    with pytest.raises(BopFormatError, match="meta.mat"):
        list(iter_dataset_frames(tmp_path / "split", layout="ycbv-raw"))
