"""`pose-ros eval-tracking`'s library part on a few frames of the demo stream (real renders, shipped model)."""
from __future__ import annotations

import pytest


def test_tracking_eval_counts_add_up_and_detection_then_tracking_run(demo_estimator):
    from pose_ros.eval.tracking_eval import evaluate_tracking
    from pose_ros.objects.tracking import TrackingConfig

    r = evaluate_tracking(demo_estimator, TrackingConfig(redetect_every=15, twin_check_every=2), seed=0, frames=5,
                          rate_hz=6.0)
    assert r.visible_gt >= 10                          # three objects in view on most of 5 frames
    found = sum(sum(c.values()) for c in r.by_source.values())
    assert found + r.missing == r.visible_gt
    assert r.correct == r.by_source["detect"]["ok"] + r.by_source["track"]["ok"]
    assert r.counters["detect"] >= 1 and r.counters["tracked"] >= 1     # frame 1 detects, later frames track
    assert sum(r.by_source["track"].values()) > 0
    assert r.recall > 0.3                              # the pipeline finds most of them (README: ~75%)
    with pytest.raises(ValueError, match="frames must be"):
        evaluate_tracking(demo_estimator, TrackingConfig(), seed=0, frames=0, rate_hz=6.0)
