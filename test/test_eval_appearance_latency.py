"""Appearance latency: an object coming into view -> the first pose message that has it right."""
from __future__ import annotations

import pytest

from pose_ros.eval.appearance_latency import AppearanceLatency

MS = 1_000_000


def _run(truth: list[dict[str, float]], poses: dict[int, tuple[int, set[str]]], frame_ms: int = 100,
         **kw) -> AppearanceLatency:
    """``truth[k]``: visible fractions on frame k (stamp k * frame_ms); ``poses[k]``: (receive ms, right
    classes) of the pose message about frame k, fed after that frame's truth."""
    a = AppearanceLatency(**kw)
    for k, visible in enumerate(truth):
        a.observe_truth(k * frame_ms * MS, visible)
        if k in poses:
            receive_ms, right = poses[k]
            a.observe_poses(k * frame_ms * MS, receive_ms * MS, right)
    return a


def test_delay_runs_from_the_frame_it_came_into_view_to_the_receipt_of_its_first_right_pose():
    truth = [{"mug": 1.0}] * 3 + [{"mug": 1.0, "box": 0.1}] * 3 + [{"mug": 1.0, "box": 0.8}] * 6
    # frame 0 starts the run (mug visible before it is not counted); the box comes into view on frame 6
    # (600 ms); frames 6-7 pose only the mug, frame 8's message (received at 950 ms) has the box right
    poses = {k: (k * 100 + 150, {"mug"} | ({"box"} if k >= 8 else set())) for k in range(12)}
    s = _run(truth, poses).summary()
    assert (s["appearances"], s["posed"], s["missed"], s["open"]) == (1, 1, 0, 0)
    assert s["delay_ms_p50"] == pytest.approx(950 - 600)
    assert s["posed_within_share"] == 0.0                          # 350 ms > 200 ms


def test_a_wrong_or_missing_pose_does_not_end_the_wait_and_an_older_frame_does_not_count():
    a = AppearanceLatency()
    for k, v in enumerate([0.0, 0.0, 0.9, 0.9]):
        a.observe_truth(k * 100 * MS, {"mug": v})
    a.observe_poses(0, 120 * MS, set())                           # the run's first message
    a.observe_poses(2 * 100 * MS, 260 * MS, set())                # mug not posed right
    a.observe_poses(1 * 100 * MS, 300 * MS, {"mug"})              # right, but about frame 1: before it came into view
    assert a.counted()[0].posed_ns is None
    a.observe_poses(3 * 100 * MS, 450 * MS, {"mug"})
    assert [e.delay_ms for e in a.counted()] == [pytest.approx(450 - 200)]


def test_hidden_again_before_a_right_pose_is_missed_and_a_short_dip_is_not_a_new_appearance():
    # box visible from frame 2, below 0.3 on frame 5 (0.1 s: a flicker), visible again 6-9, hidden 10-19
    # (1 s: gone), visible again from 20 on: the first appearance is posed by frame 8's message, the
    # second (frame 20) is still waiting at the end
    vis = [0.0, 0.0, 0.5, 0.5, 0.5, 0.1, 0.6, 0.6, 0.6, 0.6] + [0.0] * 10 + [0.7] * 5
    truth = [{"box": v} for v in vis]
    poses = {0: (110, set()), 8: (870, {"box"})}
    s = _run(truth, poses).summary()
    assert (s["appearances"], s["posed"], s["missed"], s["open"]) == (2, 1, 0, 1)
    assert s["delay_ms_p50"] == pytest.approx(870 - 200)          # from frame 2, the flicker did not restart it

    # the same object never posed while first in view, then hidden for a second: missed
    poses = {0: (110, set())}
    s = _run(truth, poses).summary()
    assert (s["appearances"], s["posed"], s["missed"], s["open"]) == (2, 0, 1, 1)
    assert s["delay_ms_p50"] is None and s["posed_within_share"] == 0.0


def test_a_late_message_about_a_frame_while_in_view_still_poses_an_object_hidden_since():
    truth = [{"can": 0.0}, {"can": 0.9}, {"can": 0.9}, {"can": 0.0}, {"can": 0.0}]
    a = _run(truth, {0: (100, set())})
    a.observe_poses(2 * 100 * MS, 520 * MS, {"can"})               # about frame 2, received after frame 3 hid it
    a.observe_poses(4 * 100 * MS, 530 * MS, {"can"})               # about a frame where it is hidden: ignored
    assert [e.delay_ms for e in a.counted()] == [pytest.approx(520 - 100)]


def test_appearances_before_the_first_pose_message_are_start_up_and_not_counted():
    truth = [{"mug": 1.0, "box": 1.0}] * 5
    s = _run(truth, {3: (400, {"mug", "box"})}).summary()
    assert s["appearances"] == 0 and s["posed_within_share"] is None
    assert _run(truth, {}).summary()["appearances"] == 0


def test_within_share_counts_misses_against_it():
    truth = [{"a": 0.0, "b": 0.0}] + [{"a": 0.9, "b": 0.9}] * 3 + [{"a": 0.9, "b": 0.0}] * 8
    poses = {0: (100, set()), 1: (250, {"a"})}                     # a: 150 ms; b never, hidden on frame 4
    s = _run(truth, poses).summary()
    assert (s["posed"], s["missed"]) == (1, 1)
    assert s["posed_within_share"] == 0.5


@pytest.mark.parametrize("kw", [{"min_visible": 0.0}, {"min_visible": 1.5}, {"min_hidden_s": -1.0},
                                {"within_ms": 0.0}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        AppearanceLatency(**kw)
