"""Operator selection and track identity across frames (boxes in pixels, 640x480 image)."""
import numpy as np
import pytest

from pose_ros.human.operator_tracking import OperatorTracker, TrackerConfig, box_iou

SIZE = (640, 480)


def box(cx, cy, w, h):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_iou():
    assert box_iou(np.array(box(100, 100, 50, 50)), np.array(box(100, 100, 50, 50))) == pytest.approx(1.0)
    assert box_iou(np.array(box(100, 100, 50, 50)), np.array(box(300, 100, 50, 50))) == 0.0


def test_id_kept_while_moving_and_operator_sticky_when_a_bigger_person_enters():
    tr = OperatorTracker(TrackerConfig(selection="largest"))
    first = tr.update([box(200, 240, 100, 300)], SIZE)
    op_id = first.track_ids[0]
    assert first.operator_index == 0 and first.operator_id == op_id
    for k in range(1, 20):                      # walks right 8 px per frame
        upd = tr.update([box(200 + 8 * k, 240, 100, 300)], SIZE)
        assert upd.track_ids == [op_id] and upd.operator_index == 0
    # a bigger person appears (listed first): the operator does not switch
    upd = tr.update([box(500, 240, 200, 400), box(200 + 8 * 20, 240, 100, 300)], SIZE)
    assert upd.track_ids[1] == op_id and upd.track_ids[0] != op_id
    assert upd.operator_index == 1


def test_short_gap_keeps_id_without_reporting_and_long_gap_reports_loss_then_new_id():
    tr = OperatorTracker(TrackerConfig(max_missed_frames=3))
    op_id = tr.update([box(300, 240, 100, 300)], SIZE).operator_id
    for _ in range(3):                           # 3 missed frames: still tracked, nothing reported
        upd = tr.update(np.zeros((0, 4)), SIZE)
        assert upd.operator_index is None and not upd.operator_lost and upd.operator_id == op_id
    upd = tr.update([box(305, 240, 100, 300)], SIZE)
    assert upd.track_ids == [op_id] and upd.operator_index == 0
    losses = []
    for _ in range(6):
        losses.append(tr.update(np.zeros((0, 4)), SIZE).operator_lost)
    assert losses == [False, False, False, True, False, False]   # reported once, after N frames
    assert tr.operator_losses == 1
    upd = tr.update([box(300, 240, 100, 300)], SIZE)
    assert upd.operator_index == 0 and upd.operator_id != op_id   # re-acquired: a new id


def test_selection_closest_and_roi():
    boxes = [box(150, 240, 200, 400), box(480, 240, 80, 200)]
    tr = OperatorTracker(TrackerConfig(selection="closest"))
    assert tr.update(boxes, SIZE, depths_m=np.array([3.0, 1.2])).operator_index == 1
    tr = OperatorTracker(TrackerConfig(selection="roi", roi=(0.6, 0.0, 1.0, 1.0)))
    assert tr.update(boxes, SIZE).operator_index == 1
    tr = OperatorTracker(TrackerConfig(selection="roi", roi=(0.0, 0.0, 0.1, 0.1)))
    upd = tr.update(boxes, SIZE)
    assert upd.operator_index is None and len(set(upd.track_ids)) == 2   # tracked, nobody operates


def test_bad_config_raises_naming_the_field():
    with pytest.raises(ValueError, match="selection"):
        TrackerConfig(selection="tallest")
    with pytest.raises(ValueError, match="roi"):
        TrackerConfig(roi=(0.5, 0.0, 0.2, 1.0))
