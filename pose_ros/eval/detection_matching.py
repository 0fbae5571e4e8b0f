"""Which published poses are right, and which are false positives, against ground truth.

Why one place: ``pose-ros eval`` (real and synthetic BOP frames) and ``pose-ros bench`` (its
rendered frames) must count a false positive the same way. Results are duck-typed (``obj_id``,
``score``, ``T_cam_obj`` and optionally ``T_pnp_cam_obj``), GT instances too (``obj_id``,
``T_cam_obj``), so this layer needs nothing from the estimator.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["match_estimates", "count_false_positives", "result_pose"]


def match_estimates(gt: list[Any], results: list[Any], use_icp: bool) -> list[Any]:
    """Greedy matching per obj_id: highest score first to the nearest unmatched GT (translation).

    Returns, per GT instance, the matched PoseResult or None.
    """
    out: list[Any] = [None] * len(gt)
    for r in sorted(results, key=lambda r: -r.score):
        T = result_pose(r, use_icp)
        if T is None:                     # no PnP pose (found by the depth search only)
            continue
        best, best_d = None, np.inf
        for i, g in enumerate(gt):
            if out[i] is not None or int(g.obj_id) != int(r.obj_id):
                continue
            d = float(np.linalg.norm(g.T_cam_obj[:3, 3] - T[:3, 3]))
            if d < best_d:
                best, best_d = i, d
        if best is not None:
            out[best] = r
    return out


def count_false_positives(gt: list[Any], results: list[Any], models: dict[int, Any], use_icp: bool) -> tuple[int, int]:
    """(absent, wrong): published poses of an object not in view (no GT instance of it left to
    match), and poses matched to an instance in view but wrong (ADD(-S) >= 0.1 d). Both make a
    grasp planner reach for something that is not there. Every GT instance counts here, however
    little of it is visible: a right pose of a hidden object is not a false positive."""
    from pose_ros.eval.pose_metrics import add_s_error

    matched = match_estimates(gt, results, use_icp)
    n_pub = sum(result_pose(r, use_icp) is not None for r in results)
    pairs = [(g, r) for g, r in zip(gt, matched) if r is not None]
    right = sum(add_s_error(models[int(g.obj_id)], result_pose(r, use_icp), g.T_cam_obj) < 0.1 * models[int(g.obj_id)].diameter_m
                for g, r in pairs)
    return n_pub - len(pairs), len(pairs) - right


def result_pose(result: Any, use_icp: bool) -> np.ndarray | None:
    """The final pose, or the PnP pose before ICP (None where the depth search alone found it)."""
    return result.T_cam_obj if use_icp else getattr(result, "T_pnp_cam_obj", None)
