"""MediaPipe backend on real COCO photos: finds the annotated people, refuses bad options/input."""
import json

import cv2
import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.eval.coco_keypoints import detect_in_box, keypoint_oks_terms, person_oks
from pose_ros.human.conventions import blazepose_to_coco17
from pose_ros.human.keypoint_backend import (InvalidImageError, KeypointBackend, MediaPipePoseBackend,
                                             UnsupportedModelError)


@pytest.fixture(scope="module")
def backend():
    with MediaPipePoseBackend(static_image_mode=True) as b:
        yield b


def _load(folder, ann_file):
    root = shared_data_path("coco_person_dev")
    ann = json.loads((root / ann_file).read_text())
    images = {im["id"]: root / folder / im["file_name"] for im in ann["images"]}
    return ann, images


def _rgb(path):
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


def test_backend_finds_the_annotated_people_on_real_coco_crops(backend):
    ann, images = _load("images", "person_keypoints_mmpose4.json")
    people = [a for a in ann["annotations"] if a["num_keypoints"] >= 10]
    assert len(people) >= 10
    oks = []
    for a in people:
        det = detect_in_box(backend, _rgb(images[a["image_id"]]), a["bbox"], margin=0.25)
        uv = None if det is None else blazepose_to_coco17(det.uv_px)
        oks.append(person_oks(keypoint_oks_terms(a["keypoints"], a["area"], uv)))
    oks = np.array(oks)
    assert np.mean(oks >= 0.5) >= 0.8, oks
    assert np.median(oks) >= 0.7, oks


def test_detection_fields_on_a_full_real_photo(backend):
    ann, images = _load("images", "person_keypoints_mmpose4.json")
    img_id = 785  # one annotated person
    rgb = _rgb(images[img_id])
    dets = backend.detect(rgb)
    assert isinstance(backend, KeypointBackend) and len(dets) == 1
    d = dets[0]
    assert d.uv_px.shape == (33, 2) and d.confidence.shape == (33,) and d.world_m.shape == (33, 3)
    assert np.all((d.confidence >= 0) & (d.confidence <= 1))
    # hip-centred metric model: hips about 0.2-0.35 m apart, head 0.4-0.9 m above the hips
    hips = d.world_m[[23, 24]]
    assert np.linalg.norm(hips.mean(axis=0)) < 0.05
    assert 0.1 < np.linalg.norm(hips[0] - hips[1]) < 0.45
    assert -0.9 < d.world_m[0, 1] < -0.4
    gt = [a for a in ann["annotations"] if a["image_id"] == img_id][0]
    x, y, w, h = gt["bbox"]
    bx = d.bbox_xyxy_px
    iou_w = max(0, min(bx[2], x + w) - max(bx[0], x))
    iou_h = max(0, min(bx[3], y + h) - max(bx[1], y))
    assert iou_w * iou_h / (w * h) > 0.6   # keypoint box covers most of the GT box


def test_no_person_gives_no_detection(backend):
    rng = np.random.default_rng(0)
    flat = np.full((480, 640, 3), 128, np.uint8)
    assert backend.detect(flat) == []
    noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert backend.detect(noise) == []


def test_refuses_models_that_need_a_download_and_bad_images(backend):
    for complexity in (0, 2):
        with pytest.raises(UnsupportedModelError, match="model_complexity=1"):
            MediaPipePoseBackend(model_complexity=complexity)
    with pytest.raises(InvalidImageError, match="uint8"):
        backend.detect(np.zeros((480, 640, 3), np.float32))
    with pytest.raises(InvalidImageError, match="RGB"):
        backend.detect(np.zeros((480, 640), np.uint8))
