"""The shipped YCB-Video model on real data: real YCB-Video RGB-D frames and real object-free photos.

The model was trained only on renders of the YCB-Video meshes (real photos as backgrounds, none
showing a YCB object); these frames and the held-out photos were never trained on.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.resources import models_dir

MODEL = models_dir() / "ycbv.pt"


@pytest.fixture(scope="module")
def ycbv_estimator():
    from pose_ros.objects.estimator import PoseEstimator

    meshes = shared_data_path("ycbv_real", "models_ycbv")
    return PoseEstimator(MODEL, meshes=meshes, threads=2)


def _visible_gt(frame, models, min_visib=0.3):
    from pose_ros.synth.renderer import RgbdRenderer

    ren = RgbdRenderer(frame.camera)
    out = []
    for g in frame.gt:
        alone = ren.render([(models[g.obj_id], g.T_cam_obj)]).instance_mask == 0
        if alone.sum() and (g.mask_visib & alone).sum() / alone.sum() >= min_visib:
            out.append(g)
    return out


def _run(estimator, scene: str, im_id: int):
    from pose_ros.eval.bop_io import YcbvRawSceneReader
    from pose_ros.eval.detection_matching import count_false_positives

    frame = YcbvRawSceneReader(shared_data_path("ycbv_real", "data", scene)).frame(im_id)
    models = {m.obj_id: m for m in estimator.models.values()}
    results = estimator.estimate(frame.rgb, frame.depth_m, frame.camera)
    absent, wrong = count_false_positives(frame.gt, results, models, use_icp=True)
    for r in results:                                  # published means above the node's threshold
        assert r.score >= estimator.score_threshold
    return frame, models, results, absent, wrong


def test_real_frame_most_objects_right(ycbv_estimator):
    """Full pipeline from the image (no GT masks, no initial poses) on a real frame: the master chef
    can, cracker box, sugar box and mustard bottle of scene 0001 (the first three are found in 95-100%
    of that scene's frames; the mustard bottle in none: README, real-frame section)."""
    frame, models, results, absent, wrong = _run(ycbv_estimator, "0001", 10)
    gt = _visible_gt(frame, models)
    right = len(results) - absent - wrong
    assert len(gt) == 4 and right >= 2, [(r.obj_id, round(r.score, 2)) for r in results]
    assert absent + wrong <= 1, (absent, wrong, [(r.obj_id, round(r.score, 2)) for r in results])


@pytest.mark.parametrize("scene", ["0000", "0002"])
def test_real_clutter_gives_no_confident_wrong_pose(ycbv_estimator, scene):
    """Scenes whose objects the model mostly misses still must not send a grasp planner to a wrong
    place: at most one published pose that is not a right pose of an object in view."""
    _, _, results, absent, wrong = _run(ycbv_estimator, scene, 10)
    assert absent + wrong <= 1, (absent, wrong, [(r.obj_id, round(r.score, 2)) for r in results])


def test_class_hypotheses_pose_an_object_the_network_names_wrongly(ycbv_estimator):
    """Scene 0000: the network labels two thirds of the gelatin box (obj 8) "cracker box". Tried whole as
    its likeliest classes, it is posed right; with the network's class split only, it is not."""
    from pose_ros.eval.pose_metrics import add_s_error

    def gelatin_right(results, frame, models) -> bool:
        g = next(g for g in frame.gt if g.obj_id == 8)
        return any(r.obj_id == 8 and add_s_error(models[8], r.T_cam_obj, g.T_cam_obj) < 0.1 * models[8].diameter_m
                   for r in results)

    frame, models, results, absent, wrong = _run(ycbv_estimator, "0000", 10)
    assert gelatin_right(results, frame, models), [(r.obj_id, round(r.score, 2)) for r in results]
    assert absent + wrong <= 1
    ycbv_estimator.class_hypotheses = 1
    try:
        frame, models, results, _, _ = _run(ycbv_estimator, "0000", 10)
    finally:
        ycbv_estimator.class_hypotheses = 2
    assert not gelatin_right(results, frame, models)


def test_no_pose_on_object_free_real_photos(ycbv_estimator):
    """Held-out real photos (never trained on) that show none of the objects, on a flat surface's
    depth: nothing is published."""
    from pose_ros.core.camera import PinholeCamera
    from pose_ros.objects.false_positive_monitor import object_free_frames

    photos = shared_data_path("photos", "imagenet_sample")
    cam = PinholeCamera(np.array([[1066.778, 0, 312.9869], [0, 1067.487, 241.3109], [0, 0, 1]]), 640, 480)
    frames = object_free_frames([str(photos)], cam.K, 640, 480, count=4, seed=3)
    published = {f.name: [(r.class_name, round(r.score, 2)) for r in ycbv_estimator.estimate(f.rgb, f.depth_m, cam)]
                 for f in frames}
    assert all(not v for v in published.values()), published


def test_model_records_how_it_was_trained():
    """The shipped file says how to reproduce it: command, real backgrounds, camera, calibration."""
    from pose_ros.objects.model_file import load_model_file

    raw = load_model_file(MODEL).raw
    training = raw["training"]
    assert training["command"].startswith("pose-ros train") and "--camera" in training["command"]
    sc = training["scene_config"]
    assert sc["photo_dirs"] and sc["camera_K"] and tuple(sc["camera_size"]) == (640, 480)
    assert raw["score_calibration"]["features"]
    assert any("fp_pixel_share" in m for m in raw["metrics"])
