"""2D (+ model-metric 3D) human keypoint detection behind a small protocol.

The rest of the pipeline only sees `Detection2D` in BlazePose-33 order, so another network can
replace MediaPipe by implementing `KeypointBackend.detect`.

MediaPipe Pose (the legacy `mediapipe.solutions.pose` graph) finds ONE person per image: the
most prominent one its detector picks. For several people, run it on one crop per person box
(what `pose_ros.eval.coco_keypoints` does with the ground-truth boxes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from pose_ros.human.conventions import BLAZEPOSE33_NAMES

NUM_BLAZEPOSE = len(BLAZEPOSE33_NAMES)


class InvalidImageError(ValueError):
    """An input image with the wrong shape or dtype."""


class UnsupportedModelError(ValueError):
    """A backend model option that cannot run here (e.g. needs a download)."""


@dataclass
class Detection2D:
    """One person's keypoints in one image, BlazePose-33 order.

    uv_px: (33, 2) pixel coordinates (u right, v down), may lie outside the image.
    confidence: (33,) visibility in [0, 1].
    world_m: (33, 3) model metric landmarks, hip-centred, axes roughly camera-aligned
        (x right, y down, z away from the camera); None if the backend has none.
    bbox_xyxy_px: (4,) x0, y0, x1, y1 of the confidently detected keypoints, clipped to the image.
    """

    uv_px: np.ndarray
    confidence: np.ndarray
    world_m: np.ndarray | None
    bbox_xyxy_px: np.ndarray

    @property
    def score(self) -> float:
        """Mean keypoint confidence."""
        return float(np.mean(self.confidence))


@runtime_checkable
class KeypointBackend(Protocol):
    """Anything that turns an RGB image into people's BlazePose-33 keypoints."""

    def detect(self, rgb: np.ndarray) -> list[Detection2D]:
        """rgb: (H, W, 3) uint8 RGB. Returns zero or more detections."""
        ...


def validate_rgb(rgb: np.ndarray) -> np.ndarray:
    """Check the (H, W, 3) uint8 contract; return a C-contiguous view/copy."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise InvalidImageError(
            f"rgb must be an (H, W, 3) array, got shape {shape}: convert grayscale/RGBA to RGB first")
    if rgb.dtype != np.uint8:
        raise InvalidImageError(
            f"rgb must be uint8, got {rgb.dtype}: scale to 0..255 and cast with .astype(np.uint8)")
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise InvalidImageError(f"rgb image {rgb.shape[1]}x{rgb.shape[0]} is too small (min 8x8)")
    return np.ascontiguousarray(rgb)


def keypoint_bbox(uv_px: np.ndarray, confidence: np.ndarray, width: int, height: int,
                  min_confidence: float = 0.3) -> np.ndarray:
    """Box around the confident keypoints (all keypoints if none are), clipped to the image."""
    keep = confidence >= min_confidence
    if not np.any(keep):
        keep = np.ones(len(uv_px), dtype=bool)
    uv = uv_px[keep]
    x0, y0 = np.clip(uv.min(axis=0), 0, [width - 1, height - 1])
    x1, y1 = np.clip(uv.max(axis=0), 0, [width - 1, height - 1])
    return np.array([x0, y0, x1, y1], dtype=np.float64)


class MediaPipePoseBackend:
    """BlazePose Full (model_complexity=1) through `mediapipe.solutions.pose`.

    Only complexity 1 ships inside the mediapipe wheel; 0 (lite) and 2 (heavy) are downloaded on
    first use, which fails on an offline robot, so they are refused up front.
    static_image_mode=False lets MediaPipe track between video frames (faster, smoother);
    use True for unrelated photos (evaluation).
    """

    def __init__(self, model_complexity: int = 1, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, static_image_mode: bool = False) -> None:
        if model_complexity != 1:
            raise UnsupportedModelError(
                f"model_complexity={model_complexity} needs a model download that the mediapipe "
                "wheel does not include; use model_complexity=1 (BlazePose Full, bundled)")
        for name, value in (("min_detection_confidence", min_detection_confidence),
                            ("min_tracking_confidence", min_tracking_confidence)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1]")
        import mediapipe as mp  # heavy: only when a backend is actually built

        self._pose = mp.solutions.pose.Pose(
            static_image_mode=static_image_mode,
            model_complexity=model_complexity,
            smooth_landmarks=not static_image_mode,
            enable_segmentation=False,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        self.static_image_mode = static_image_mode

    def detect(self, rgb: np.ndarray) -> list[Detection2D]:
        rgb = validate_rgb(rgb)
        height, width = rgb.shape[:2]
        result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            return []
        lms = result.pose_landmarks.landmark
        uv_px = np.array([[lm.x * width, lm.y * height] for lm in lms], dtype=np.float64)
        confidence = np.clip(np.array([lm.visibility for lm in lms], dtype=np.float64), 0.0, 1.0)
        world_m = None
        if result.pose_world_landmarks is not None:
            world_m = np.array([[lm.x, lm.y, lm.z] for lm in result.pose_world_landmarks.landmark],
                               dtype=np.float64)
        if uv_px.shape != (NUM_BLAZEPOSE, 2) or not np.all(np.isfinite(uv_px)):
            return []
        return [Detection2D(uv_px=uv_px, confidence=confidence, world_m=world_m,
                            bbox_xyxy_px=keypoint_bbox(uv_px, confidence, width, height))]

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._pose.close()

    def __enter__(self) -> "MediaPipePoseBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
