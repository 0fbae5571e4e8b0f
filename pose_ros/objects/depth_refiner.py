"""Depth-only pose refinement from given initial poses, without the network.

For objects that have a mesh but no trained model (e.g. a new part, or the YCB-Video objects),
poses from another source (a detector, a fiducial, an operator click, a perturbed ground truth
in tests) are refined by ICP on the depth image and scored the same way the full estimator
scores its poses, and come back as the same `PoseResult`s so a node publishes them unchanged.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.object_model import ObjectModel
from pose_ros.objects.covariance import icp_covariance
from pose_ros.objects.estimator import PoseResult, PoseStats
from pose_ros.objects.icp import IcpConfig, refine_pose_icp
from pose_ros.objects.scoring import mask_depth_agreement, pose_score


@dataclass
class PoseSeed:
    """An initial pose to refine: object name, instance id and T_cam_obj (metres)."""
    class_name: str
    instance_id: int
    T_cam_obj: np.ndarray


class DepthRefiner:
    """ICP + scoring of seeded poses; `estimate`-like interface for the pose node."""

    def __init__(self, models: Sequence[ObjectModel], use_icp: bool = True, score_threshold: float = 0.0,
                 icp_config: IcpConfig | None = None) -> None:
        if not models:
            raise ValueError("DepthRefiner needs at least one object model")
        self.models = {m.name: m for m in models}
        self.class_names = [m.name for m in models]
        self.use_icp = bool(use_icp)
        self.score_threshold = float(score_threshold)
        self.icp_config = icp_config or IcpConfig()

    def refine(self, depth_m: np.ndarray, camera: PinholeCamera, seeds: Sequence[PoseSeed],
               enabled_classes: Sequence[str] | None = None) -> list[PoseResult]:
        enabled = set(enabled_classes) if enabled_classes is not None else set(self.class_names)
        results: list[PoseResult] = []
        for seed in seeds:
            model = self.models.get(seed.class_name)
            if model is None or seed.class_name not in enabled:
                continue
            t0 = time.perf_counter()
            T = np.asarray(seed.T_cam_obj, dtype=np.float64)
            stats = PoseStats(source="external")
            if self.use_icp:
                icp = refine_pose_icp(model, T, depth_m, camera, config=self.icp_config)
                T = icp.T_cam_obj
                stats.icp_applied = icp.applied
                stats.icp_fitness = icp.fitness
                stats.icp_rmse_m = icp.inlier_rmse_m
                stats.icp_iterations = icp.iterations
                stats.icp_correction_translation_m = icp.correction_translation_m
                stats.icp_correction_rotation_rad = icp.correction_rotation_rad
                stats.icp_reason = icp.reason
            stats.depth_agreement = mask_depth_agreement(model, T, depth_m, camera)
            score = pose_score(stats.depth_agreement, stats.icp_fitness if stats.icp_applied else None, None)
            stats.time_ms = {"icp": (time.perf_counter() - t0) * 1e3}
            if score < self.score_threshold:
                continue
            covariance = np.full((6, 6), np.nan)
            if stats.icp_applied and np.isfinite(stats.icp_rmse_m):
                covariance = icp_covariance(stats.icp_rmse_m, model.diameter_m)
            results.append(PoseResult(class_name=seed.class_name, class_id=self.class_names.index(seed.class_name) + 1,
                                      obj_id=model.obj_id, instance_id=int(seed.instance_id), T_cam_obj=T,
                                      score=score, covariance=covariance, stats=stats))
        return results
