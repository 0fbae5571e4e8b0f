"""Read a camera's intrinsics from the files users have: ROS camera_info YAML or BOP camera.json.

Why: training renders must see objects at the size the user's camera sees them. A YCB-Video
camera (fx 1066 px at 640 px width) shows an object ~1.8x larger than a 600 px camera at the same
distance; a network that never saw that scale misses it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pose_ros.core.camera import PinholeCamera

__all__ = ["load_camera_file", "CameraFileError"]


class CameraFileError(ValueError):
    """A camera file that is missing, of an unknown kind or without usable intrinsics."""


def _numbers(value: object, n: int, what: str, path: Path) -> np.ndarray:
    if isinstance(value, dict):
        value = value.get("data")
    try:
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.size < n or not np.all(np.isfinite(arr[:n])):
        raise CameraFileError(f"{path}: {what} must hold {n} finite numbers; got {value!r}")
    return arr


def load_camera_file(path: str | Path) -> PinholeCamera:
    """PinholeCamera from a ROS camera_info YAML (``camera_calibration`` format, or a
    ``sensor_msgs/CameraInfo`` dump with ``k``/``d``) or a BOP ``camera.json`` (fx, fy, cx, cy,
    width, height)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CameraFileError(f"camera file {p} not found")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise CameraFileError(f"{p}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise CameraFileError(f"{p}: expected a mapping of camera fields")
    dist = np.zeros(5)
    model = "plumb_bob"
    if all(k in data for k in ("fx", "fy", "cx", "cy")):                 # BOP camera.json
        K = np.array([[data["fx"], 0, data["cx"]], [0, data["fy"], data["cy"]], [0, 0, 1]], dtype=np.float64)
        w, h = data.get("width"), data.get("height")
    elif "camera_matrix" in data or "k" in data or "K" in data:         # ROS YAML / CameraInfo dump
        K = _numbers(data.get("camera_matrix", data.get("k", data.get("K"))), 9, "camera_matrix", p)[:9].reshape(3, 3)
        w = data.get("image_width", data.get("width"))
        h = data.get("image_height", data.get("height"))
        d = data.get("distortion_coefficients", data.get("d", data.get("D")))
        if d is not None:
            dd = _numbers(d, 0, "distortion_coefficients", p)
            if dd.size:
                dist = dd
        model = str(data.get("distortion_model", model) or model)
    else:
        raise CameraFileError(f"{p}: neither a ROS camera_info YAML (camera_matrix, image_width, image_height) "
                              "nor a BOP camera.json (fx, fy, cx, cy, width, height)")
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError):
        raise CameraFileError(f"{p}: image width/height missing or not integers ({w!r}, {h!r})") from None
    try:
        return PinholeCamera(K, w, h, dist_coeffs=dist, distortion_model=model)
    except ValueError as exc:
        raise CameraFileError(f"{p}: {exc}") from None
