"""COCO OKS evaluation on the real annotated photos, and the eval-coco CLI."""
import json

import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.eval.coco_keypoints import (CocoDataError, coco_eval_stats, enlarged_crop, evaluate_backend,
                                          keypoint_oks_terms, load_coco, person_oks)


def test_oks_terms_perfect_missed_and_unlabelled():
    gt = np.zeros((17, 3))
    gt[:, :2] = np.arange(34).reshape(17, 2) * 5.0
    gt[:, 2] = 2
    gt[3, 2] = 0                               # unlabelled
    terms = keypoint_oks_terms(gt.ravel(), 5000.0, gt[:, :2])
    assert np.isnan(terms[3]) and np.allclose(np.delete(terms, 3), 1.0)
    missed = keypoint_oks_terms(gt.ravel(), 5000.0, None)
    assert person_oks(missed) == 0.0
    off = keypoint_oks_terms(gt.ravel(), 5000.0, gt[:, :2] + 10.0)
    assert np.all(np.delete(off, 3) < 1.0) and off[0] < off[5]   # nose is stricter than shoulders


def test_pycocotools_agrees_perfect_results_give_ap_one():
    coco = load_coco(shared_data_path("coco_person_dev", "person_keypoints_mmpose4.json"))
    anns = [a for a in coco.loadAnns(coco.getAnnIds()) if a["num_keypoints"] > 0]
    perfect = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in anns]
    assert coco_eval_stats(coco, perfect)["AP"] == pytest.approx(1.0)
    assert coco_eval_stats(coco, [])["AP"] == 0.0


def test_crop_margin_and_bad_box():
    assert enlarged_crop([100, 100, 40, 80], 640, 480, 0.25) == (90, 80, 150, 200)
    assert enlarged_crop([0, 0, 40, 80], 640, 480, 0.25)[:2] == (0, 0)
    with pytest.raises(CocoDataError, match="no area"):
        enlarged_crop([0, 0, 0, 10], 640, 480)


def test_evaluate_backend_on_real_val_images():
    from pose_ros.human.keypoint_backend import MediaPipePoseBackend

    root = shared_data_path("coco_person_dev")
    coco = load_coco(root / "person_keypoints_mmpose4.json")
    with MediaPipePoseBackend(static_image_mode=True) as backend:
        rep = evaluate_backend(coco, root / "images", backend, progress=False)
    assert rep.num_people == 12 and rep.num_detected >= 11
    assert rep.stats["AP"] >= 0.35 and rep.stats["AP50"] >= 0.7
    assert rep.per_keypoint_oks["left_shoulder"] > 0.75
    assert len(rep.results) == rep.num_detected and len(rep.person_oks) == len(rep.person_ann_ids) == 12


def test_cli_writes_results_metrics_and_plot(tmp_path, capsys):
    from pose_ros.cli import main

    root = shared_data_path("coco_person_dev")
    rc = main(["eval-coco", "--ann", str(root / "person_keypoints_mmpose4.json"), "--images",
               str(root / "images"), "--out", str(tmp_path), "--limit", "2", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "left_wrist" in out
    results = json.loads((tmp_path / "person_keypoints_mmpose4_results.json").read_text())
    assert results and all(len(r["keypoints"]) == 51 for r in results)
    metrics = json.loads((tmp_path / "person_keypoints_mmpose4_metrics.json").read_text())
    assert metrics["num_images"] == 2 and 0.0 <= metrics["stats"]["AP"] <= 1.0
    png = (tmp_path / "person_keypoints_mmpose4_per_keypoint.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rc = main(["eval-coco", "--ann", str(tmp_path / "missing.json"), "--images", str(root / "images")])
    assert rc == 2 and "not found" in capsys.readouterr().out


def test_hand_wrists_against_the_annotated_wrists_on_real_photos():
    """eval-coco --hands on two real photos: both of the child's hands and the woman's right hand
    (her left crop holds the right hand and is dropped); found wrists within a few pixels."""
    from pycocotools.coco import COCO

    from pose_ros.eval.coco_hands import evaluate_hand_wrists, format_hand_report
    from pose_ros.human.hand_keypoints import MediaPipeHandBackend
    from pose_ros.human.keypoint_backend import MediaPipePoseBackend

    root = shared_data_path("coco_person_dev")
    full = load_coco(root / "person_keypoints_train2017.json")
    ids = [463557, 535506]
    coco = COCO()
    coco.dataset = {"images": full.loadImgs(ids), "categories": full.loadCats([1]),
                    "annotations": full.loadAnns(full.getAnnIds(imgIds=ids))}
    coco.createIndex()
    with MediaPipePoseBackend(static_image_mode=True) as body, MediaPipeHandBackend(static_image_mode=True) as hands:
        report = evaluate_hand_wrists(coco, root / "train2017", body, hands)
    assert report.visible_wrists == report.body_found == 4
    assert report.hands_found == 3 and report.handedness_agrees == 3
    assert np.median(report.hand_error_px) < 15 and min(report.hand_oks) > 0.6
    assert len(report.body_error_px) == len(report.body_oks) == 3
    text = format_hand_report(report, "two photos")
    assert "hand found 3 (75%)" in text and "hand model (HAND21 wrist)" in text
    with pytest.raises(CocoDataError, match="not found"):
        evaluate_hand_wrists(coco, root / "no_such_folder", body, hands)
