"""Offline tracking accuracy on the demo camera's moving synthetic stream (no DDS, no timing).

Why: the node's end-to-end figure (`pose-ros bench-node`) mixes accuracy with which frames the
worker happened to process, so it varies from run to run. This replays the same stream the
synthetic camera publishes (``SyntheticSceneStream``) at a fixed frame rate through ``PoseTracker``
exactly as the node uses it, so two tracker settings can be compared frame for frame.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable


__all__ = ["TrackingEvalResult", "evaluate_tracking"]


@dataclass
class TrackingEvalResult:
    seed: int
    frames: int
    visible_gt: int                       # GT instances at least ``min_visible`` visible
    correct: int                          # of those, matched by a pose with ADD(-S) < 0.1 d
    missing: int                          # of those, no pose of that class at all
    by_source: dict[str, Counter] = field(default_factory=dict)   # "detect"/"track" -> {ok, wrong}
    counters: dict[str, int] = field(default_factory=dict)
    appearances: list = field(default_factory=list)   # appearance_latency.Appearance: into view -> right pose

    @property
    def recall(self) -> float:
        return self.correct / max(self.visible_gt, 1)


def evaluate_tracking(estimator: Any, tracker_config: Any, seed: int, frames: int, rate_hz: float,
                      min_visible: float = 0.3, width: int = 640, height: int = 480, fov_x_deg: float = 69.0,
                      progress: Callable[[int], None] | None = None,
                      detect_latency_frames: int | None = None) -> TrackingEvalResult:
    """Run ``PoseTracker(estimator, tracker_config)`` over ``frames`` frames of the seed's stream.

    ``detect_latency_frames``: detection aside from tracking, as the node's detector process runs it,
    with its results arriving this many frames late (``InlineDetector``); None: detection in line.
    """
    from pose_ros.objects.detection_worker import InlineDetector
    from pose_ros.core.camera import PinholeCamera
    from pose_ros.eval.appearance_latency import AppearanceLatency
    from pose_ros.eval.pose_metrics import add_s_error
    from pose_ros.objects.tracking import PoseTracker
    from pose_ros.synth.stream import SyntheticSceneStream

    if frames < 1 or not rate_hz > 0:
        raise ValueError(f"frames must be >= 1 and rate_hz > 0; got {frames}, {rate_hz}")
    models = [estimator.models[c] for c in sorted(estimator.models)]
    if not models:
        raise ValueError("the estimator has no meshes: tracking needs them (pass meshes=...)")
    camera = PinholeCamera.from_fov(width, height, fov_x_deg)
    stream = SyntheticSceneStream(models, camera, seed=seed)
    detector = None if detect_latency_frames is None else InlineDetector(estimator, detect_latency_frames)
    tracker = PoseTracker(estimator, tracker_config, detector=detector)
    by_name = {m.name: m for m in models}
    res = TrackingEvalResult(seed, frames, 0, 0, 0, {"detect": Counter(), "track": Counter()})
    appearance = AppearanceLatency(min_visible)
    for i in range(frames):
        render, depth_m, gts = stream.frame(i / rate_hz)
        poses = tracker.update(render.rgb, depth_m, camera, stamp_s=i / rate_hz)   # stamps, as the node passes
        source = "detect" if tracker.last_detection_frame is not None else "track"
        stamp_ns = int(round(i * 1e9 / rate_hz))
        appearance.observe_truth(stamp_ns, {g.name: g.visible_fraction for g in gts})
        right: set[str] = set()
        for g in gts:
            if g.visible_fraction < min_visible or g.name not in by_name:
                continue
            res.visible_gt += 1
            cands = [p for p in poses if p.class_name == g.name]
            if not cands:
                res.missing += 1
                continue
            m = by_name[g.name]
            ok = min(add_s_error(m, p.T_cam_obj, g.T_cam_obj) for p in cands) < 0.1 * m.diameter_m
            res.correct += int(ok)
            res.by_source[source]["ok" if ok else "wrong"] += 1
            if ok:
                right.add(g.name)
        # in scene time: a pose counts from the frame it is about (no processing time here)
        appearance.observe_poses(stamp_ns, stamp_ns, right)
        if progress:
            progress(i)
    res.counters = dict(tracker.counters)
    res.appearances = appearance.counted()
    return res
