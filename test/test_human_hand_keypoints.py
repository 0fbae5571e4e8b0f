"""Hand keypoints on real COCO photos: found at the body's wrists, right side, lifted like the body."""
import json

import cv2
import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.core.camera import PinholeCamera
from pose_ros.human.conventions import (BLAZEPOSE33_NAMES, COCO17_NAMES, HAND21, HAND21_NAMES, HAND21_PALM,
                                        SOURCE_DEPTH, SOURCE_MODEL)
from pose_ros.human.hand_keypoints import (HandBackend, HandDetection2D, MediaPipeHandBackend, _drop_duplicate,
                                           _side_probability, hand_lifting_config, lift_hand)
from pose_ros.human.keypoint_backend import InvalidImageError, MediaPipePoseBackend, UnsupportedModelError
from pose_ros.human.lifting import lift_keypoints
from pose_ros.human.skeleton_estimator import SkeletonEstimator, draw_skeletons

# COCO train2017 photos in ../shared/data/coco_person_dev (no hand keypoint annotations there; the
# person annotations give the wrists). 463557: a child eating from a plate, both hands in view
# (right hand over the plate, fingers down; left hand holding the plate). 535506: a woman at a sink,
# whose BlazePose left wrist lands on her right hand (her left hand is up at the knife).
BOTH_HANDS = 463557
WRONG_WRIST = 535506
WRIST = {"left": BLAZEPOSE33_NAMES.index("left_wrist"), "right": BLAZEPOSE33_NAMES.index("right_wrist")}
TIPS = [HAND21_NAMES.index(n) for n in ("thumb_tip", "index_finger_tip", "middle_finger_tip", "ring_finger_tip",
                                        "pinky_tip")]


def _photo(image_id: int) -> np.ndarray:
    path = shared_data_path("coco_person_dev", "train2017", f"{image_id:012d}.jpg")
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def _gt_wrists(image_id: int) -> tuple[dict[str, np.ndarray], float]:
    """The largest annotated person's COCO wrists (side -> uv) and sqrt(area)."""
    ann = json.loads(shared_data_path("coco_person_dev", "person_keypoints_train2017.json").read_text())
    person = max((a for a in ann["annotations"] if a["image_id"] == image_id), key=lambda a: a["area"])
    kps = np.array(person["keypoints"], dtype=np.float64).reshape(17, 3)
    wrists = {side: kps[COCO17_NAMES.index(f"{side}_wrist"), :2] for side in ("left", "right")
              if kps[COCO17_NAMES.index(f"{side}_wrist"), 2] == 2}
    return wrists, float(np.sqrt(person["area"]))


@pytest.fixture(scope="module")
def body():
    with MediaPipePoseBackend(static_image_mode=True) as backend:
        yield backend


@pytest.fixture(scope="module")
def hands():
    with MediaPipeHandBackend(static_image_mode=True) as backend:
        yield backend


def test_both_hands_found_at_the_annotated_wrists_on_a_real_photo(body, hands):
    rgb = _photo(BOTH_HANDS)
    person = body.detect(rgb)[0]
    found = hands.detect(rgb, person.uv_px, person.confidence)
    assert isinstance(hands, HandBackend)
    assert [h.side for h in found] == ["left", "right"]
    gt, scale_px = _gt_wrists(BOTH_HANDS)
    assert set(gt) == {"left", "right"}
    for h in found:
        assert h.uv_px.shape == (21, 2) and h.confidence.shape == (21,) and h.world_m.shape == (21, 3)
        assert 0.5 <= h.presence <= 1.0 and h.handedness_score > 0.9   # its own classifier agrees with the side
        assert np.all(h.confidence == h.presence)                      # all 21 inside the image
        # the hand model's wrist is the annotated wrist: COCO wrist OKS term >= 0.6 (sigma 0.062)
        d = np.linalg.norm(h.uv_px[0] - gt[h.side])
        assert np.exp(-d ** 2 / (2 * (scale_px * 2 * 0.062) ** 2)) >= 0.6, (h.side, d)
        assert np.linalg.norm(h.uv_px[0] - person.uv_px[WRIST[h.side]]) < 2 * h.size_px() + 5
        # metric model hand: wrist to middle knuckle 5-12 cm (a child's hand here)
        assert 0.05 < np.linalg.norm(h.world_m[9] - h.world_m[0]) < 0.12
    right = found[1]
    assert np.all(right.uv_px[TIPS, 1] > right.uv_px[0, 1])   # the right hand hangs over the plate, fingers down


def test_a_crop_that_caught_the_other_hand_is_dropped(body, hands):
    """BlazePose puts this woman's left wrist on her right hand: the left crop holds the right hand,
    which the hand model says, so only one (right) hand is reported."""
    rgb = _photo(WRONG_WRIST)
    person = body.detect(rgb)[0]
    assert np.linalg.norm(person.uv_px[WRIST["left"]] - person.uv_px[WRIST["right"]]) < 50
    found = hands.detect(rgb, person.uv_px, person.confidence)
    assert [h.side for h in found] == ["right"]
    gt, _ = _gt_wrists(WRONG_WRIST)
    assert np.linalg.norm(found[0].uv_px[0] - gt["right"]) < 20


def test_lifted_like_the_body_from_depth_or_by_pnp_without_it(body, hands):
    rgb = _photo(BOTH_HANDS)
    person = body.detect(rgb)[0]
    found = hands.detect(rgb, person.uv_px, person.confidence)
    height, width = rgb.shape[:2]
    camera = PinholeCamera.from_fov(width, height, 60.0)
    depth_m = np.full((height, width), 1.5, np.float32)
    for h in found:
        hand = lift_hand(h, depth_m, camera)
        # the body's own lifting with the palm as anchors, nothing else
        ref = lift_keypoints(h.uv_px, h.confidence, h.world_m, depth_m, camera, hand_lifting_config(),
                             anchor_indices=HAND21_PALM)
        np.testing.assert_array_equal(hand.positions_cam_m, ref.points_cam_m)
        np.testing.assert_array_equal(hand.source, ref.source)
        assert hand.names == HAND21_NAMES and hand.convention == HAND21 and hand.side == h.side
        on_depth = hand.source == SOURCE_DEPTH
        assert on_depth.sum() >= 15
        assert np.allclose(hand.positions_cam_m[on_depth, 2], 1.5)
        assert np.allclose(camera.project(hand.positions_cam_m[on_depth]), h.uv_px[on_depth], atol=0.05)
        # no depth: the metric model hand placed by PnP, in front of the camera and hand-sized
        no_depth = lift_hand(h, None, camera)
        assert np.all(no_depth.source == SOURCE_MODEL)
        assert np.all(no_depth.positions_cam_m[:, 2] > 0)
        size_m = np.linalg.norm(no_depth.positions_cam_m[9] - no_depth.positions_cam_m[0])
        assert size_m == pytest.approx(np.linalg.norm(h.world_m[9] - h.world_m[0]), rel=1e-6)


def test_estimator_gives_the_operator_their_hands():
    rgb = _photo(BOTH_HANDS)
    height, width = rgb.shape[:2]
    camera = PinholeCamera.from_fov(width, height, 60.0)
    depth_m = np.full((height, width), 1.5, np.float32)
    with MediaPipePoseBackend(static_image_mode=False) as body, MediaPipeHandBackend() as hand_backend:
        est = SkeletonEstimator(body, hand_backend=hand_backend)
        for k in range(3):   # video mode: the hand crops are tracked from frame to frame
            skeletons = est.process(rgb, depth_m, camera, k / 30.0)
    op = skeletons[0]
    assert op.is_operator and [h.side for h in op.hands] == ["left", "right"]
    assert all(np.isfinite(h.positions_cam_m).all() for h in op.hands)
    assert [h.side for h in op.to_convention("coco17").hands] == ["left", "right"]
    overlay = draw_skeletons(rgb, skeletons)
    assert np.any(overlay != rgb)
    with MediaPipePoseBackend(static_image_mode=False) as body:   # no hand backend: no hands
        assert SkeletonEstimator(body).process(rgb, depth_m, camera, 0.0)[0].hands == []


def test_no_hands_where_there_are_none(body, hands):
    rgb = _photo(BOTH_HANDS)
    person = body.detect(rgb)[0]
    assert hands.detect(np.full_like(rgb, 127), person.uv_px, person.confidence) == []   # crops of a grey image
    invisible = np.zeros_like(person.confidence)   # no visible wrist: no crop at all
    assert hands.detect(rgb, person.uv_px, invisible) == []


def test_bad_input_and_options_give_clear_errors(body, hands):
    rgb = _photo(BOTH_HANDS)
    person = body.detect(rgb)[0]
    with pytest.raises(InvalidImageError, match="uint8"):
        hands.detect(rgb.astype(np.float32), person.uv_px, person.confidence)
    with pytest.raises(InvalidImageError, match=r"\(H, W, 3\)"):
        hands.detect(rgb[:, :, 0], person.uv_px, person.confidence)
    with pytest.raises(ValueError, match="BlazePose-33"):
        hands.detect(rgb, person.uv_px[:17], person.confidence[:17])
    with pytest.raises(UnsupportedModelError, match="hand_landmark_lite"):
        MediaPipeHandBackend(model_complexity=2)
    with pytest.raises(ValueError, match="min_presence"):
        MediaPipeHandBackend(min_presence=1.5)


def test_lite_model_is_a_different_model_on_the_same_crops(body):
    rgb = _photo(BOTH_HANDS)
    person = body.detect(rgb)[0]
    with MediaPipeHandBackend(model_complexity=0, static_image_mode=True) as lite, \
            MediaPipeHandBackend(model_complexity=1, static_image_mode=True) as full:
        a = lite.detect(rgb, person.uv_px, person.confidence)
        b = full.detect(rgb, person.uv_px, person.confidence)
    assert [h.side for h in a] == [h.side for h in b] == ["left", "right"]
    assert not np.allclose(a[0].uv_px, b[0].uv_px)   # the switch really loaded hand_landmark_lite
    assert np.linalg.norm(a[1].uv_px[0] - b[1].uv_px[0]) < 10


def test_handedness_mapping_and_duplicates():
    # MediaPipe labels assume a mirrored image: its "Right" is the person's left hand on a robot camera
    assert _side_probability("Right", 0.9, "left") == pytest.approx(0.9)
    assert _side_probability("Left", 0.9, "left") == pytest.approx(0.1)
    assert np.isnan(_side_probability("Unknown", 0.9, "left"))

    def hand(side, wrist_uv, p_side):
        uv = np.tile(np.asarray(wrist_uv, float), (21, 1))
        uv[9] += [0.0, -20.0]          # 20 px hand
        return HandDetection2D(side=side, uv_px=uv, confidence=np.ones(21), presence=1.0,
                               handedness_score=p_side, world_m=None)

    apart = [hand("left", [100, 100], 0.9), hand("right", [200, 100], 0.8)]
    assert _drop_duplicate(apart) == apart
    same = [hand("left", [100, 100], 0.4), hand("right", [104, 100], 0.8)]   # one hand caught twice
    assert [h.side for h in _drop_duplicate(same)] == ["right"]
