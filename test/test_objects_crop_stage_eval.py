"""The crop stage alone on annotated frames (true visible masks): library figures and `pose-ros eval-crops`,
on rendered demo table scenes written as a BOP split and read back."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import demo_table_frame
from pose_ros.core.camera import PinholeCamera
from pose_ros.eval.bop_io import BopFrame, BopSceneWriter, GtInstance, iter_dataset_frames
from pose_ros.objects.correspondence_pose import stage_from_model
from pose_ros.objects.crop_stage_eval import CropStageRecord, evaluate_crop_stage, summarise_crop_stage

REPO = Path(__file__).resolve().parents[1]
CAM = PinholeCamera(np.array([[610.0, 0, 321.7], [0, 605.0, 238.2], [0, 0, 1]]), 640, 480)


@pytest.fixture(scope="module")
def demo():
    from pose_ros.core.object_model import load_object_dir
    from pose_ros.objects.model_file import load_model_file

    loaded = load_model_file(REPO / "models" / "demo_objects.pt")
    by_name = {m.name: m for m in load_object_dir(REPO / "meshes")}
    models = [by_name[o.name] for o in loaded.objects]
    return loaded, by_name, models


@pytest.fixture(scope="module")
def split(tmp_path_factory, demo):
    """Four rendered table scenes (12 instances) as a BOP split on disk."""
    loaded, by_name, _ = demo
    obj_id = {o.name: int(o.obj_id) for o in loaded.objects}
    out = tmp_path_factory.mktemp("crops") / "split"
    with BopSceneWriter(out / "000001") as w:
        for i, seed in enumerate(range(31, 35)):
            ms, sc, r, depth = demo_table_frame(by_name, CAM, seed)
            gt = [GtInstance(obj_id[ms[c].name], sc.T_cam_obj[k], mask_visib=r.instance_mask == k)
                  for k, c in enumerate(sc.model_indices)]
            w.add(BopFrame(1, i, r.rgb, depth, CAM, gt))
    return out


def test_shipped_demo_stage_on_true_masks(demo, split):
    loaded, _, models = demo
    stage = stage_from_model(loaded)
    records = evaluate_crop_stage(stage, loaded.objects, models, iter_dataset_frames(split))
    assert len(records) == 12 and all(isinstance(r, CropStageRecord) for r in records)
    assert {r.obj_id for r in records} == {int(o.obj_id) for o in loaded.objects}
    s = summarise_crop_stage(records)
    a = s["all"]
    assert a["instances"] == 12 and set(s["per_object"]) == {int(o.obj_id) for o in loaded.objects}
    # the true pose explains most of the stage's correspondences; the same pose 0.3 d aside almost none
    assert a["agreement_median"] >= 0.6 and a["agreement_shifted_median"] <= 0.1, a
    assert a["posed_before_icp"] >= 0.5 and a["no_pose_share"] == 0.0, a
    assert 0.0 <= a["wrong_class_refused"] <= 1.0
    assert all(0 <= r.correspondences <= 150 and r.wrong_class_correspondences >= 0 for r in records)
    # instances below the visible-pixel floor are skipped
    assert evaluate_crop_stage(stage, loaded.objects, models, iter_dataset_frames(split), min_visible_px=10**6) == []
    assert summarise_crop_stage([]) == {"all": {"instances": 0}, "per_object": {}}


def test_eval_crops_command(demo, split, tmp_path, capsys):
    from pose_ros.cli import main

    out = tmp_path / "crops.json"
    rc = main(["eval-crops", str(split), "--model", str(REPO / "models" / "demo_objects.pt"),
               "--meshes", str(REPO / "meshes"), "--every", "2", "--out", str(out)])
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["every"] == 2 and summary["all"]["instances"] == 6          # frames 0 and 2
    assert math.isfinite(summary["all"]["agreement_median"])
    text = capsys.readouterr().out
    assert "agreement" in text and text.count("\n") >= 5
    # a model without the stage, or a folder without frames, is a clear error
    rc = main(["eval-crops", str(split), "--model", str(REPO / "models" / "demo_objects.pt"),
               "--meshes", str(REPO / "meshes"), "--every", "0"])
    assert rc == 2 and "--every" in capsys.readouterr().err
    rc = main(["eval-crops", str(tmp_path / "none"), "--model", str(REPO / "models" / "demo_objects.pt"),
               "--meshes", str(REPO / "meshes")])
    assert rc == 2 and "not found" in capsys.readouterr().err
