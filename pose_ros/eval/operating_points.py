"""Recall and false positives per frame at several score thresholds: where to set ``score_threshold``.

Why: one threshold gives one point of the trade-off a grasp planner cares about (poses found against
wrong poses published). Two estimators, or two score calibrations, are only compared fairly along the
whole curve: a calibration that is more cautious on real frames gives fewer poses *and* fewer false
positives at the same threshold. The same rules as the eval's tables: a visible ground-truth instance
is found when the estimate matched to it (``detection_matching.match_estimates``) is within 0.1 d
ADD(-S); false positives are ``detection_matching.count_false_positives``.
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["DEFAULT_THRESHOLDS", "OperatingPoints", "describe_operating_points"]

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class OperatingPoints:
    """Feed every frame (``add_frame``); ``report()`` gives, per threshold, recall and false positives."""

    def __init__(self, thresholds: Sequence[float], models: dict[int, Any], use_icp: bool = True) -> None:
        if not thresholds:
            raise ValueError("at least one score threshold")
        self.thresholds = sorted(float(t) for t in thresholds)
        self.models = models
        self.use_icp = use_icp
        self.frames = 0
        self.instances = 0
        self._found = [0] * len(self.thresholds)
        self._false = [0] * len(self.thresholds)

    def add_frame(self, visible_gt: list[Any], all_gt: list[Any], results: list[Any]) -> None:
        """``visible_gt``: the instances recall counts (the eval's visibility rule); ``all_gt``: every
        instance of the model's objects (a right pose of a barely visible one is no false positive)."""
        from pose_ros.eval.detection_matching import count_false_positives, match_estimates, result_pose
        from pose_ros.eval.pose_metrics import add_s_error

        self.frames += 1
        self.instances += len(visible_gt)
        for k, t in enumerate(self.thresholds):
            kept = [r for r in results if r.score >= t]
            for g, r in zip(visible_gt, match_estimates(visible_gt, kept, self.use_icp)):
                if r is not None:
                    m = self.models[int(g.obj_id)]
                    self._found[k] += add_s_error(m, result_pose(r, self.use_icp), g.T_cam_obj) < 0.1 * m.diameter_m
            absent, wrong = count_false_positives(all_gt, kept, self.models, self.use_icp)
            self._false[k] += absent + wrong

    def report(self) -> list[dict[str, float]]:
        n, f = max(self.instances, 1), max(self.frames, 1)
        return [{"threshold": t, "add_s_recall": self._found[k] / n, "false_positives_per_frame": self._false[k] / f}
                for k, t in enumerate(self.thresholds)]


def describe_operating_points(rows: list[dict[str, float]]) -> str:
    """One line: 'score >= t: recall / FP per frame' for each threshold."""
    return "; ".join(f">= {r['threshold']:.1f}: {100 * r['add_s_recall']:.1f}% / {r['false_positives_per_frame']:.2f}"
                     for r in rows)
