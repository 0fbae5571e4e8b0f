"""Per-frame human pipeline: rgb + aligned depth + camera -> 3D skeletons.

backend (2D + model 3D) -> depth lifting -> operator tracking -> One-Euro smoothing per track,
and with a hand backend the operator's hands (hand_keypoints: crops at the body's wrists, lifted
and smoothed the same way). The ROS node, the CLI and the benchmarks all call
`SkeletonEstimator.process`, so what is measured offline is what runs on the robot.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.human.conventions import (BLAZEPOSE33, BLAZEPOSE33_NAMES, COCO17, COCO17_NAMES,
                                        CONVENTIONS, HAND21_EDGES, SOURCE_DEPTH, SOURCE_NONE, blazepose_to_coco17)
from pose_ros.human.hand_keypoints import Hand3D, HandBackend, hand_lifting_config, lift_hand
from pose_ros.human.keypoint_backend import Detection2D, KeypointBackend, validate_rgb
from pose_ros.human.lifting import DepthImageError, LiftingConfig, lift_keypoints
from pose_ros.human.one_euro import OneEuroConfig, OneEuroFilter
from pose_ros.human.operator_tracking import OperatorTracker, TrackerConfig


class CameraMismatchError(ValueError):
    """camera_info size differs from the image size."""


@dataclass
class Skeleton3D:
    """One person in one frame, in `convention` order. positions_cam_m NaN where source==NONE."""

    names: tuple[str, ...]
    positions_cam_m: np.ndarray   # (N, 3) camera optical frame
    uv_px: np.ndarray             # (N, 2)
    confidence: np.ndarray        # (N,)
    source: np.ndarray            # (N,) int8 SOURCE_*
    track_id: int
    is_operator: bool
    convention: str = BLAZEPOSE33
    hands: list[Hand3D] = field(default_factory=list)   # the operator's, 0-2, left first

    @property
    def score(self) -> float:
        return float(np.mean(self.confidence)) if len(self.confidence) else 0.0

    def to_convention(self, convention: str) -> "Skeleton3D":
        """Same skeleton in another convention (only blazepose33 -> coco17 loses information)."""
        if convention == self.convention:
            return self
        if self.convention == BLAZEPOSE33 and convention == COCO17:
            return replace(self, names=COCO17_NAMES, convention=COCO17,
                           positions_cam_m=blazepose_to_coco17(self.positions_cam_m),
                           uv_px=blazepose_to_coco17(self.uv_px),
                           confidence=blazepose_to_coco17(self.confidence),
                           source=blazepose_to_coco17(self.source))
        raise ValueError(f"cannot convert a {self.convention} skeleton to {convention}: "
                         f"convert from {BLAZEPOSE33}, which is a superset")


@dataclass
class SkeletonEstimatorConfig:
    convention: str = BLAZEPOSE33         # output convention: blazepose33 | coco17
    operator_only: bool = False           # drop everyone but the operator
    min_score: float = 0.3                # detections with lower mean confidence are dropped
    filter_enabled: bool = True
    lifting: LiftingConfig = field(default_factory=LiftingConfig)
    hand_lifting: LiftingConfig = field(default_factory=hand_lifting_config)
    tracking: TrackerConfig = field(default_factory=TrackerConfig)
    filter: OneEuroConfig = field(default_factory=OneEuroConfig)

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"SkeletonEstimatorConfig.convention={self.convention!r}: use one of {CONVENTIONS}")


class SkeletonEstimator:
    """Holds the backend, tracker and filters; call `process` once per frame.

    hand_backend (optional): finds the operator's hands from the image and the operator's body
    keypoints; None = no hands (Skeleton3D.hands stays empty)."""

    def __init__(self, backend: KeypointBackend, config: SkeletonEstimatorConfig | None = None,
                 hand_backend: HandBackend | None = None) -> None:
        self.backend = backend
        self.config = config or SkeletonEstimatorConfig()
        self.hand_backend = hand_backend
        self.tracker = OperatorTracker(self.config.tracking)
        self._filters: dict[int, OneEuroFilter] = {}
        self._hand_filters: dict[tuple[int, str], OneEuroFilter] = {}
        self._hand_track_id: int | None = None
        self.last_operator_lost = False

    def reset(self) -> None:
        """Forget tracks and filter state (e.g. after a camera change)."""
        self.tracker.reset()
        self._filters.clear()
        self._hand_filters.clear()
        self._hand_track_id = None
        if self.hand_backend is not None:
            self.hand_backend.reset()

    def process(self, rgb: np.ndarray, depth_m: np.ndarray | None, camera: PinholeCamera,
                stamp_s: float) -> list[Skeleton3D]:
        """Skeletons of the people in this frame (operator first), in config.convention."""
        rgb = validate_rgb(rgb)
        height, width = rgb.shape[:2]
        if (camera.width, camera.height) != (width, height):
            raise CameraMismatchError(
                f"camera is {camera.width}x{camera.height} but the image is {width}x{height}: "
                "use the colour camera_info (or camera.with_size()) for this image")
        if depth_m is not None and np.shape(depth_m) != (height, width):
            raise DepthImageError(
                f"depth {np.shape(depth_m)} != colour (H,W)=({height},{width}): "
                "subscribe to aligned_depth_to_color")

        detections = [d for d in self.backend.detect(rgb) if d.score >= self.config.min_score]
        lifted = [lift_keypoints(d.uv_px, d.confidence, d.world_m, depth_m, camera, self.config.lifting)
                  for d in detections]
        depths = np.array([np.nanmedian(l.points_cam_m[:, 2]) if np.any(l.source != SOURCE_NONE)
                           else np.nan for l in lifted])
        update = self.tracker.update(np.array([d.bbox_xyxy_px for d in detections]).reshape(-1, 4),
                                     (width, height), depths)
        self.last_operator_lost = update.operator_lost
        for tid in update.lost_ids:
            self._filters.pop(tid, None)
        if update.lost_ids:
            self._hand_filters = {k: f for k, f in self._hand_filters.items() if k[0] not in update.lost_ids}

        skeletons = []
        for i, (det, lift) in enumerate(zip(detections, lifted)):
            is_op = update.operator_index == i
            if self.config.operator_only and not is_op:
                continue
            tid = update.track_ids[i]
            pos = lift.points_cam_m
            if self.config.filter_enabled:
                filt = self._filters.setdefault(tid, OneEuroFilter(self.config.filter))
                pos = filt.filter(pos, stamp_s)
            hands = self._hands(rgb, depth_m, camera, det, tid, stamp_s) if is_op else []
            skel = Skeleton3D(names=BLAZEPOSE33_NAMES, positions_cam_m=pos, uv_px=det.uv_px.copy(),
                              confidence=det.confidence.copy(), source=lift.source.copy(),
                              track_id=tid, is_operator=is_op, convention=BLAZEPOSE33, hands=hands)
            skeletons.append(skel.to_convention(self.config.convention))
        skeletons.sort(key=lambda s: not s.is_operator)
        return skeletons

    def _hands(self, rgb: np.ndarray, depth_m: np.ndarray | None, camera: PinholeCamera, det: Detection2D,
               track_id: int, stamp_s: float) -> list[Hand3D]:
        """The operator's hands, lifted like the body and smoothed per (track, side)."""
        if self.hand_backend is None:
            return []
        if track_id != self._hand_track_id:   # another operator: the hand crops tracked so far are not theirs
            self.hand_backend.reset()
            self._hand_track_id = track_id
        hands = []
        for found in self.hand_backend.detect(rgb, det.uv_px, det.confidence):
            hand = lift_hand(found, depth_m, camera, self.config.hand_lifting)
            if self.config.filter_enabled:
                filt = self._hand_filters.setdefault((track_id, hand.side), OneEuroFilter(self.config.filter))
                hand = replace(hand, positions_cam_m=filt.filter(hand.positions_cam_m, stamp_s))
            hands.append(hand)
        return hands


def depth_fraction(skeleton: Skeleton3D) -> float:
    """Share of keypoints whose 3D came from depth (a quick health number for logs)."""
    return float(np.mean(skeleton.source == SOURCE_DEPTH)) if len(skeleton.source) else 0.0


def draw_skeletons(rgb: np.ndarray, skeletons: list[Skeleton3D], min_confidence: float = 0.3) -> np.ndarray:
    """Copy of rgb with bones and joints drawn (operator green, others orange), for debug images.

    Joint colour encodes the 3D source: white = depth, yellow = model fallback, red = none.
    Hands: thin bones, cyan for the left hand, magenta for the right.
    """
    import cv2

    from pose_ros.human.conventions import edges_for

    out = np.ascontiguousarray(rgb.copy())
    source_colour = {SOURCE_DEPTH: (255, 255, 255), SOURCE_NONE: (255, 0, 0)}
    for s in skeletons:
        bone = (0, 220, 0) if s.is_operator else (255, 140, 0)
        ok = np.isfinite(s.uv_px).all(axis=1) & (s.confidence >= min_confidence)
        for a, b in edges_for(s.convention):
            if ok[a] and ok[b]:
                cv2.line(out, tuple(int(round(v)) for v in s.uv_px[a]), tuple(int(round(v)) for v in s.uv_px[b]),
                         bone, 2, cv2.LINE_AA)
        for i in np.flatnonzero(ok):
            colour = source_colour.get(int(s.source[i]), (255, 255, 0))
            cv2.circle(out, tuple(int(round(v)) for v in s.uv_px[i]), 3, colour, -1, cv2.LINE_AA)
        for hand in s.hands:
            colour = (0, 220, 255) if hand.side == "left" else (255, 0, 220)
            hand_ok = np.isfinite(hand.uv_px).all(axis=1) & (hand.confidence > 0)
            for a, b in HAND21_EDGES:
                if hand_ok[a] and hand_ok[b]:
                    cv2.line(out, tuple(int(round(v)) for v in hand.uv_px[a]),
                             tuple(int(round(v)) for v in hand.uv_px[b]), colour, 1, cv2.LINE_AA)
        if np.any(ok):
            x, y = s.uv_px[ok].min(axis=0)
            cv2.putText(out, f"id {s.track_id}{' OP' if s.is_operator else ''}", (int(x), max(12, int(y) - 6)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, bone, 1, cv2.LINE_AA)
    return out
