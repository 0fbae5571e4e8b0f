"""Keypoint convention tables: BlazePose-33 / COCO-17 names, mapping, edges, left/right pairs."""
import json

import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.human import conventions as c


def test_sizes_and_mapping_names_agree():
    assert len(c.BLAZEPOSE33_NAMES) == 33 and len(set(c.BLAZEPOSE33_NAMES)) == 33
    assert len(c.COCO17_NAMES) == 17
    for coco_i, blaze_i in enumerate(c.COCO17_FROM_BLAZEPOSE33):
        assert c.BLAZEPOSE33_NAMES[blaze_i] == c.COCO17_NAMES[coco_i]


def test_coco_names_and_skeleton_match_the_real_annotation_file():
    ann = json.loads(shared_data_path("coco_person_dev", "person_keypoints_mmpose4.json").read_text())
    cat = ann["categories"][0]
    assert tuple(cat["keypoints"]) == c.COCO17_NAMES
    coco_edges = {frozenset((a - 1, b - 1)) for a, b in cat["skeleton"]}
    assert {frozenset(e) for e in c.COCO17_EDGES} == coco_edges


def test_edges_in_range_and_left_right_pairs_mirror():
    for conv in c.CONVENTIONS:
        names = c.names_for(conv)
        for a, b in c.edges_for(conv):
            assert 0 <= a < len(names) and 0 <= b < len(names) and a != b
    for names, pairs in ((c.BLAZEPOSE33_NAMES, c.BLAZEPOSE33_LEFT_RIGHT), (c.COCO17_NAMES, c.COCO17_LEFT_RIGHT)):
        for li, ri in pairs:
            assert names[li].replace("left", "right") == names[ri]
    assert len(c.BLAZEPOSE33_LEFT_RIGHT) == 16 and len(c.COCO17_LEFT_RIGHT) == 8


def test_blazepose_to_coco17_selects_rows_and_rejects_wrong_length():
    values = np.arange(33 * 2).reshape(33, 2)
    out = c.blazepose_to_coco17(values)
    assert out.shape == (17, 2)
    np.testing.assert_array_equal(out[:, 0] // 2, c.COCO17_FROM_BLAZEPOSE33)
    with pytest.raises(ValueError, match="BlazePose"):
        c.blazepose_to_coco17(np.zeros((17, 2)))
    with pytest.raises(c.UnknownConventionError, match="coco17"):
        c.names_for("openpose25")
