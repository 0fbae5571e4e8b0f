"""Draw object poses on a colour image: the model's outline, its axes and its name and score.

Why one function: the node's ``~/debug_image`` and ``pose-ros eval --overlays`` must show a pose
the same way, so what a user sees on the robot is what the benchmark pictures show.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["draw_poses"]


def draw_poses(rgb: np.ndarray, camera: Any, results: Sequence[Any], models_by_name: Mapping[str, Any],
               colour_of: Mapping[str, tuple[float, float, float]] | None = None,
               ground_truth: Sequence[tuple[Any, np.ndarray]] = ()) -> np.ndarray:
    """A copy of ``rgb`` with every result (``class_name``, ``score``, ``T_cam_obj``) drawn: the convex
    outline of its model's surface points, x/y/z axes (red/green/blue, half the diameter) and a label;
    ``ground_truth`` ((model, T_cam_obj) pairs) is outlined thin in white underneath."""
    import cv2

    img = np.ascontiguousarray(np.asarray(rgb).copy())
    for model, T in ground_truth:
        _outline(img, camera, model, np.asarray(T), (255, 255, 255), 1)
    for r in results:
        colour = tuple(int(255 * c) for c in (colour_of or {}).get(r.class_name, (0.8, 0.8, 0.8)))
        model = models_by_name.get(r.class_name)
        T = np.asarray(r.T_cam_obj)
        if model is not None:
            _outline(img, camera, model, T, colour, 2)
        length = 0.5 * (float(model.diameter_m) if model is not None else 0.1)
        axes = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0], [0, 0, length]])
        uv = camera.project(axes @ T[:3, :3].T + T[:3, 3])
        if np.all(np.isfinite(uv)):
            o = tuple(int(v) for v in uv[0])
            for k, c in zip(range(1, 4), ((255, 0, 0), (0, 255, 0), (0, 0, 255))):
                cv2.line(img, o, tuple(int(v) for v in uv[k]), c, 2, cv2.LINE_AA)
            cv2.putText(img, f"{r.class_name} {r.score:.2f}", (o[0] + 5, o[1] - 5), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, colour, 1, cv2.LINE_AA)
    return img


def _outline(img: np.ndarray, camera: Any, model: Any, T: np.ndarray, colour: tuple, width: int) -> None:
    import cv2

    pts = getattr(model, "points_m", None)
    if pts is None or not len(pts):
        return
    uv = camera.project(pts @ T[:3, :3].T + T[:3, 3])
    ok = np.all(np.isfinite(uv), axis=1)
    if ok.sum() >= 3:
        hull = cv2.convexHull(uv[ok].astype(np.float32)).astype(np.int32)
        cv2.polylines(img, [hull], True, colour, width, cv2.LINE_AA)
