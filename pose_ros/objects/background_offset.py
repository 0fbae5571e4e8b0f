"""How much more evidence than the background a pixel needs to be called an object.

Why: trained on renders, the network's plain per-pixel argmax labels ~5% of real object-free photos
as an object (clutter that merely looks like one). Fine-tuning on such photos (``hard_negatives``)
fixed the photos but cost real recall (docs/real_images.md). An offset added to the background logit
before the argmax is a decision threshold on the network's own belief, set after training: the
smallest offset at which at most ``target_share`` of the pixels of the object-free *training* photos
are labelled an object (the held-out photos stay for ``pose-ros eval-photos``). The estimator requires
it only of regions that depth does not show standing out of the scene's large planes
(``PoseEstimator._class_map``): a real object on a table keeps the plain argmax, clutter that merely
looks like one (print, screens, photos) needs the margin. Measured on ``models/ycbv.pt``: held-out photos
4.6% -> 0.33%, real YCB-V frames 50.4 -> 50.8% ADD(-S) with the same score calibration (docs/real_images.md).

A pixel is an object under offset ``b`` exactly when its best object logit exceeds the background
logit by more than ``b`` (a tie is background, as in ``argmax``), so the offset for a target share is a
quantile of those margins: exact, no search.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["object_margin", "labelled_share", "choose_background_offset"]


def object_margin(seg_logits: np.ndarray) -> np.ndarray:
    """(h, w) best object logit minus the background logit, from (1 + classes, h, w) logits."""
    seg_logits = np.asarray(seg_logits)
    if seg_logits.ndim != 3 or seg_logits.shape[0] < 2:
        raise ValueError(f"seg_logits must be (1 + classes, h, w); got shape {seg_logits.shape}")
    return seg_logits[1:].max(0) - seg_logits[0]


def labelled_share(margins: Sequence[np.ndarray], offset: float) -> float:
    """Share of all pixels labelled an object when ``offset`` is added to the background logit."""
    total = sum(int(np.asarray(m).size) for m in margins)
    if total == 0:
        raise ValueError("no pixels")
    return sum(int((np.asarray(m) > offset).sum()) for m in margins) / total


def choose_background_offset(margins: Sequence[np.ndarray], target_share: float) -> float:
    """Smallest offset >= 0 at which at most ``target_share`` of the pixels are labelled an object."""
    if not 0.0 <= target_share < 1.0:
        raise ValueError(f"target_share must be in [0, 1); got {target_share}")
    m = np.concatenate([np.asarray(x, np.float64).ravel() for x in margins]) if margins else np.empty(0)
    if m.size == 0:
        raise ValueError("no pixels to choose the background offset on")
    allowed = int(np.floor(target_share * m.size))          # pixels that may stay above the offset
    if allowed >= m.size:
        return 0.0
    # The offset must reach the (allowed+1)-th largest margin: every margin above it is allowed.
    kth = np.partition(m, m.size - allowed - 1)[m.size - allowed - 1]
    return float(max(0.0, kth))
