"""Tracking mode: refine last frame's poses with ICP on the new depth, re-detect only when needed.

Why: between consecutive frames objects move little, so ICP from the previous pose is cheaper
than the network + voting + PnP and gives temporally stable poses and instance ids. A track is
*lost* when its score or its ICP fitness drops (occlusion, fast motion, object removed); then the
full estimator runs in the same frame, with the surviving tracks passed as ``prev`` so that
re-detected objects keep their ids. The network also runs every ``redetect_every`` frames to
pick up objects that entered the view.

Near-symmetric twins: ICP from the previous pose keeps whatever turn a detection chose, so a
wrong turn of a near-symmetric shape (a printed box half-turned, a mug turned about its axis)
would ride along until the next detection, and might be chosen again there. The tracker therefore
re-runs the render-and-compare check on one track every ``twin_check_every`` frames and keeps a
running average of its evidence for the pose and each twin: views change as the camera or the
object moves (the handle comes into sight), and evidence gathered over them outweighs one
ambiguous frame. A twin whose running evidence beats the pose's by ``twin_switch_margin``
replaces it after ICP from the twin, unless its depth score is clearly worse. The same check
catches drift that depth cannot see (a box sliding over its own top face): when the pose's
evidence (and every twin's) falls ``appearance_drop`` below the best the track has shown, it is lost
and the next frame runs the detector.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.transforms import rotation_angle_rad
from pose_ros.objects.covariance import icp_covariance
from pose_ros.objects.estimator import PoseEstimator, PoseResult, PoseStats

__all__ = ["TrackingConfig", "PoseTracker"]


@dataclass
class TrackingConfig:
    min_score: float = 0.4              # tracked pose below this score -> lost
    max_fitness_drop: float = 0.35      # fitness below (1 - this) x the fitness when (re)detected -> lost
    redetect_every: int = 15            # run the network at least every N frames (new objects)
    max_translation_step_m: float = 0.05   # per-frame ICP correction above this -> lost (jump)
    twin_check_every: int = 3           # appearance check of one track's near-symmetric twins every N frames (0: off)
    twin_evidence_rate: float = 0.5     # weight of the newest check in the running evidence
    twin_switch_margin: float = 0.1     # running evidence a twin needs over the pose to replace it
    twin_score_slack: float = 0.1       # depth-score loss tolerated for that switch
    appearance_drop: float = 0.4        # evidence this far below the track's best -> lost

    def __post_init__(self) -> None:
        if self.redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1; got {self.redetect_every}")
        if self.twin_check_every < 0:
            raise ValueError(f"twin_check_every must be >= 0 (0 = off); got {self.twin_check_every}")
        if not 0.0 < self.twin_evidence_rate <= 1.0:
            raise ValueError(f"twin_evidence_rate must be in (0,1]; got {self.twin_evidence_rate}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0,1]; got {self.min_score}")


@dataclass
class _Track:
    result: PoseResult
    ref_fitness: float
    age: int = 0
    evidence: np.ndarray | None = None      # running appearance evidence: [pose, twin 1, ...]
    ref_appearance: float | None = None     # the best evidence the track's pose has shown


class PoseTracker:
    """Stateful wrapper around a PoseEstimator (one per camera stream)."""

    def __init__(self, estimator: PoseEstimator, config: TrackingConfig | None = None):
        self.est = estimator
        self.cfg = config or TrackingConfig()
        self.tracks: list[_Track] = []
        self.frame = 0
        self.since_detect = 0
        self.counters = {"detect": 0, "tracked": 0, "lost": 0, "twin_checks": 0, "twin_switches": 0}
        self._twin_turn = 0
        self._force_detect = False
        self.last_lost_reasons: list[str] = []

    def reset(self) -> None:
        """Forget all tracks (e.g. the ROS 'reset tracking' service)."""
        self.tracks = []
        self.since_detect = 0

    def seed(self, results: list[PoseResult]) -> None:
        """Start tracking from externally known poses (another detector, a saved scene, a test)."""
        self.tracks = [_Track(r, r.stats.icp_fitness if r.stats.icp_applied else 0.0) for r in results]
        self.since_detect = 0

    def update(self, rgb: np.ndarray, depth_m: np.ndarray | None, camera: PinholeCamera,
               enabled_classes: Iterable[str | int] | None = None) -> list[PoseResult]:
        rgb, depth = self.est._check_inputs(rgb, depth_m, camera)
        enabled = self.est._resolve_classes(enabled_classes)
        self.frame += 1
        self.last_lost_reasons = []
        can_track = depth is not None and bool(np.any(depth > 0))
        need_detect = (not self.tracks or not can_track or self.since_detect + 1 >= self.cfg.redetect_every
                       or self._force_detect)
        self._force_detect = False
        kept: list[_Track] = []
        if not need_detect:
            for tr in self.tracks:
                if tr.result.class_id not in enabled:
                    continue
                new = self._track_one(tr, depth, camera)
                if new is None:
                    need_detect = True
                else:
                    kept.append(new)
        if need_detect:
            prev = [t.result for t in self.tracks]
            results = self.est.estimate(rgb, depth, camera, enabled_classes=enabled, prev=prev)
            self.counters["detect"] += 1
            self.since_detect = 0
            by_id = {t.result.instance_id: t for t in kept}
            new_tracks = []
            for r in results:
                fit = r.stats.icp_fitness if r.stats.icp_applied else 0.0
                old = by_id.pop(r.instance_id, None)
                # The running twin evidence is relative to the pose: it survives a re-detection
                # only if the detector chose the same turn.
                same_turn = old is not None and rotation_angle_rad(old.result.T_cam_obj[:3, :3],
                                                                   r.T_cam_obj[:3, :3]) < np.radians(15.0)
                new_tracks.append(_Track(r, fit if fit > 0 else (old.ref_fitness if old else 0.0),
                                         (old.age + 1) if old else 0, old.evidence if same_turn else None,
                                         old.ref_appearance if same_turn else None))
            # Tracked objects the network missed this frame (e.g. heavily occluded) stay tracked.
            new_tracks.extend(by_id.values())
            self.tracks = new_tracks
        else:
            self.since_detect += 1
            self.counters["tracked"] += len(kept)
            self.tracks = kept
            every = self.cfg.twin_check_every
            checkable = [i for i, t in enumerate(self.tracks) if self.est.has_twins(t.result.class_id)]
            if every and checkable and self.frame % every == 0:
                # One track per check frame, in turn: bounds the added time per frame.
                i = checkable[self._twin_turn % len(checkable)]
                self._twin_turn += 1
                checked = self._check_twins(self.tracks[i], rgb, depth, camera)
                if checked is None:
                    del self.tracks[i]
                    self._force_detect = True
                else:
                    self.tracks[i] = checked
        return [t.result for t in self.tracks]

    def _check_twins(self, tr: _Track, rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera) -> _Track | None:
        """Update the track's running twin evidence; switch to a twin it clearly prefers; None: lost
        (its evidence, and every twin's, fell ``appearance_drop`` below the track's best; module doc)."""
        from pose_ros.objects.icp import refine_pose_icp

        r = tr.result
        t0 = time.perf_counter()
        res = self.est.twin_appearance(r.class_id, r.T_cam_obj, rgb, depth, camera)
        if res is None:
            return tr
        self.counters["twin_checks"] += 1
        twins, scores = res
        if tr.ref_appearance is not None and scores.max() < tr.ref_appearance - self.cfg.appearance_drop:
            self._lost(f"appearance {tr.ref_appearance:.2f} -> {scores[0]:.2f}")
            return None
        tr.ref_appearance = max(float(scores[0]), tr.ref_appearance or -np.inf)
        a = self.cfg.twin_evidence_rate
        ev = scores if tr.evidence is None or len(tr.evidence) != len(scores) else (1 - a) * tr.evidence + a * scores
        tr.evidence = ev
        k = int(np.argmax(ev[1:]))
        if not ev[k + 1] >= ev[0] + self.cfg.twin_switch_margin:
            return tr
        model = self.est.models[r.class_id]
        icp = refine_pose_icp(model, r.T_cam_obj @ twins[k], depth, camera, mask=None, config=self.est.icp_config)
        if not icp.applied:
            return tr
        agree, score = _depth_score(model, icp, depth, camera)
        if score < r.score - self.cfg.twin_score_slack:
            return tr
        self.counters["twin_switches"] += 1
        spec = self.est.objects[r.class_id - 1]
        time_ms = dict(r.stats.time_ms)
        time_ms["appearance"] = (time.perf_counter() - t0) * 1e3
        stats = replace(r.stats, icp_fitness=float(icp.fitness), icp_rmse_m=float(icp.inlier_rmse_m),
                        depth_agreement=float(agree), appearance_flipped=True, method="icp_tracking+appearance",
                        time_ms=time_ms)
        new = replace(r, T_cam_obj=icp.T_cam_obj, score=float(score),
                      covariance=icp_covariance(icp.inlier_rmse_m, spec.diameter_m), stats=stats)
        return _Track(new, tr.ref_fitness, tr.age, None, tr.ref_appearance)

    def _track_one(self, tr: _Track, depth: np.ndarray, camera: PinholeCamera) -> _Track | None:
        from pose_ros.objects.icp import refine_pose_icp

        t0 = time.perf_counter()
        r = tr.result
        model = self.est.models.get(r.class_id)
        if model is None:
            self._lost("no mesh for ICP")
            return None
        icp = refine_pose_icp(model, r.T_cam_obj, depth, camera, mask=None, config=self.est.icp_config)
        if not icp.applied:
            self._lost(f"icp: {icp.reason}")
            return None
        if icp.correction_translation_m > self.cfg.max_translation_step_m:
            self._lost(f"jump {icp.correction_translation_m:.3f} m")
            return None
        if tr.ref_fitness > 0 and icp.fitness < (1.0 - self.cfg.max_fitness_drop) * tr.ref_fitness:
            self._lost(f"fitness drop {tr.ref_fitness:.2f} -> {icp.fitness:.2f}")
            return None
        agree, score = _depth_score(model, icp, depth, camera)
        if score < self.cfg.min_score:
            self._lost(f"score {score:.2f}")
            return None
        spec = self.est.objects[r.class_id - 1]
        stats = PoseStats(icp_applied=True, icp_fitness=float(icp.fitness), icp_rmse_m=float(icp.inlier_rmse_m),
                          icp_iterations=int(icp.iterations),
                          icp_correction_translation_m=float(icp.correction_translation_m),
                          icp_correction_rotation_rad=float(icp.correction_rotation_rad), icp_reason=icp.reason,
                          depth_agreement=float(agree), source="tracking", method="icp_tracking",
                          time_ms={"icp": (time.perf_counter() - t0) * 1e3})
        new = replace(r, T_cam_obj=icp.T_cam_obj, score=float(score),
                      covariance=icp_covariance(icp.inlier_rmse_m, spec.diameter_m), stats=stats,
                      T_pnp_cam_obj=None, keypoints_uv=None, mask=None)
        return _Track(new, tr.ref_fitness if tr.ref_fitness > 0 else float(icp.fitness), tr.age + 1, tr.evidence,
                      tr.ref_appearance)

    def _lost(self, reason: str) -> None:
        self.counters["lost"] += 1
        self.last_lost_reasons.append(reason)


def _depth_score(model, icp, depth: np.ndarray, camera: PinholeCamera) -> tuple[float, float]:
    """(depth agreement, pose score) of a tracked ICP result: there is no mask while tracking."""
    from pose_ros.objects.scoring import mask_depth_agreement, pose_score

    agree = mask_depth_agreement(model, icp.T_cam_obj, depth, camera)
    return agree, pose_score(agree, icp.fitness, None)
