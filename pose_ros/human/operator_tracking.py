"""Pick the teleoperation operator among detected people and keep their identity.

Why a tracker: the robot must follow one person, not whoever the detector ranks first in this
frame. A track id survives short detection gaps (up to `max_missed_frames`) by box association
(IoU, then centroid distance); during a gap nothing is reported for that person (no
extrapolation: a guessed pose must never reach the robot). After the gap the track is declared
lost, and whoever is chosen next gets a new id.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SELECTIONS = ("largest", "closest", "roi")


@dataclass
class TrackerConfig:
    selection: str = "largest"            # how a new operator is chosen: largest | closest | roi
    roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # x0,y0,x1,y1 normalised
    iou_threshold: float = 0.2
    max_centroid_dist_frac: float = 0.15  # of the image diagonal, when IoU fails
    max_missed_frames: int = 5

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"TrackerConfig.selection={self.selection!r}: use one of {SELECTIONS}")
        x0, y0, x1, y1 = (float(v) for v in self.roi)
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(f"TrackerConfig.roi={self.roi}: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 "
                             "(normalised image coordinates)")
        if self.max_missed_frames < 0:
            raise ValueError("TrackerConfig.max_missed_frames must be >= 0")


@dataclass
class _Track:
    track_id: int
    bbox: np.ndarray
    missed: int = 0


@dataclass
class TrackUpdate:
    track_ids: list[int]                 # one per detection, same order
    operator_index: int | None           # detection index of the operator this frame
    operator_id: int | None              # the operator's track id (kept during a short gap)
    operator_lost: bool                  # True on the frame the operator is declared lost
    lost_ids: list[int] = field(default_factory=list)  # all tracks dropped this frame


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two x0,y0,x1,y1 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _centre(b: np.ndarray) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0])


class OperatorTracker:
    """Greedy box association across frames plus a sticky operator choice."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._next_id = 1
        self.operator_id: int | None = None
        self.operator_losses = 0

    def update(self, bboxes_xyxy_px: np.ndarray, image_size: tuple[int, int],
               depths_m: np.ndarray | None = None) -> TrackUpdate:
        """Associate this frame's person boxes (M,4) with tracks and choose the operator.

        image_size: (width, height). depths_m: (M,) typical depth per person (for 'closest').
        """
        boxes = np.asarray(bboxes_xyxy_px, dtype=np.float64).reshape(-1, 4)
        width, height = image_size
        diag = float(np.hypot(width, height))
        m = len(boxes)
        ids: list[int | None] = [None] * m

        # Greedy association: best IoU pairs first, then nearest centroids.
        pairs = []
        for ti, tr in enumerate(self._tracks):
            for di in range(m):
                iou = box_iou(tr.bbox, boxes[di])
                dist = float(np.linalg.norm(_centre(tr.bbox) - _centre(boxes[di]))) / diag
                if iou >= self.config.iou_threshold:
                    pairs.append((0, -iou, ti, di))
                elif dist <= self.config.max_centroid_dist_frac:
                    pairs.append((1, dist, ti, di))
        used_t: set[int] = set()
        for _, _, ti, di in sorted(pairs):
            if ti in used_t or ids[di] is not None:
                continue
            used_t.add(ti)
            ids[di] = self._tracks[ti].track_id
            self._tracks[ti].bbox = boxes[di].copy()
            self._tracks[ti].missed = 0

        lost_ids = []
        kept = []
        for ti, tr in enumerate(self._tracks):
            if ti not in used_t:
                tr.missed += 1
            if tr.missed > self.config.max_missed_frames:
                lost_ids.append(tr.track_id)
            else:
                kept.append(tr)
        self._tracks = kept
        for di in range(m):
            if ids[di] is None:
                ids[di] = self._next_id
                self._tracks.append(_Track(self._next_id, boxes[di].copy()))
                self._next_id += 1

        operator_lost = self.operator_id is not None and self.operator_id in lost_ids
        if operator_lost:
            self.operator_id = None
            self.operator_losses += 1
        track_ids = [int(i) for i in ids]  # type: ignore[arg-type]
        op_index = None
        if self.operator_id is not None:
            if self.operator_id in track_ids:
                op_index = track_ids.index(self.operator_id)
        elif m:
            op_index = self._choose(boxes, (width, height), depths_m)
            if op_index is not None:
                self.operator_id = track_ids[op_index]
        return TrackUpdate(track_ids=track_ids, operator_index=op_index, operator_id=self.operator_id,
                           operator_lost=operator_lost, lost_ids=lost_ids)

    def _choose(self, boxes: np.ndarray, image_size: tuple[int, int],
                depths_m: np.ndarray | None) -> int | None:
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        sel = self.config.selection
        if sel == "closest" and depths_m is not None:
            d = np.asarray(depths_m, dtype=np.float64)
            if np.any(np.isfinite(d)):
                return int(np.nanargmin(d))
        if sel == "roi":
            width, height = image_size
            x0, y0, x1, y1 = self.config.roi
            c = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / width, (boxes[:, 1] + boxes[:, 3]) / 2 / height], 1)
            inside = (c[:, 0] >= x0) & (c[:, 0] <= x1) & (c[:, 1] >= y0) & (c[:, 1] <= y1)
            if not np.any(inside):
                return None
            return int(np.flatnonzero(inside)[np.argmax(areas[inside])])
        # "largest", or "closest" without any depth: the biggest box is the nearest person.
        return int(np.argmax(areas))
