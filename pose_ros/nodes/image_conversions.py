"""sensor_msgs/Image and CameraInfo <-> numpy / PinholeCamera, without cv_bridge.

cv_bridge is not available from PyPI, and the package must run in a plain venv. Only the
encodings an RGB-D pipeline needs are supported; anything else is refused with a message that
names the encoding and what to do, rather than being silently misread.
"""
from __future__ import annotations

import sys

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from pose_ros.core.camera import PinholeCamera

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC3")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


class ImageConversionError(ValueError):
    """An Image message that cannot be decoded as claimed (encoding, size, step)."""


class CameraInfoError(ValueError):
    """A CameraInfo message that does not describe a usable pinhole camera."""


def _check_layout(msg: Image) -> tuple[np.dtype, int]:
    if msg.encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding '{msg.encoding}'; supported: {', '.join(ENCODINGS)}. "
            "Configure the camera driver for rgb8/bgr8 colour and 16UC1/32FC1 depth.")
    dtype, channels = ENCODINGS[msg.encoding]
    if msg.width <= 0 or msg.height <= 0:
        raise ImageConversionError(f"image has zero size ({msg.width}x{msg.height})")
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes:
        raise ImageConversionError(
            f"image step {msg.step} is smaller than width*channels*bytes = {row_bytes} "
            f"for {msg.width}x{msg.height} {msg.encoding}")
    if msg.step % dtype.itemsize:
        raise ImageConversionError(f"image step {msg.step} is not a multiple of {dtype.itemsize} bytes")
    expected = msg.step * msg.height
    if len(msg.data) != expected:
        raise ImageConversionError(
            f"image data has {len(msg.data)} bytes, expected step*height = {expected} "
            f"({msg.width}x{msg.height} {msg.encoding}, step {msg.step})")
    return dtype, channels


def image_to_numpy(msg: Image) -> np.ndarray:
    """Decode an Image into an (H, W) or (H, W, C) array in the message's own channel order."""
    dtype, channels = _check_layout(msg)
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    buf = buf[:, : msg.width * channels * dtype.itemsize]
    arr = np.ascontiguousarray(buf).view(dtype)
    big_endian_host = sys.byteorder == "big"
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != big_endian_host:
        arr = arr.byteswap()
    if channels == 1:
        return arr.reshape(msg.height, msg.width)
    return arr.reshape(msg.height, msg.width, channels)


def image_to_rgb(msg: Image) -> np.ndarray:
    """Decode a colour Image as (H, W, 3) uint8 RGB, whatever its colour encoding."""
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(
            f"colour image has encoding '{msg.encoding}'; expected one of {', '.join(COLOR_ENCODINGS)}")
    arr = image_to_numpy(msg)
    if msg.encoding in ("rgb8", "8UC3"):
        return arr
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(arr[:, :, ::-1])
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(arr[:, :, :3])
    if msg.encoding == "bgra8":
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return np.repeat(arr[:, :, None], 3, axis=2)  # mono8


def image_to_depth_m(msg: Image, depth_scale_m: float = 0.001) -> np.ndarray:
    """Decode a depth Image as float32 metres; invalid pixels (0, NaN, inf) become 0.

    16UC1 follows the ROS REP 118 convention of millimetres (scaled by depth_scale_m),
    32FC1 is already metres.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"depth image has encoding '{msg.encoding}'; expected 16UC1 (mm) or 32FC1 (m)")
    arr = image_to_numpy(msg)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(depth_scale_m)
    depth_m = arr.astype(np.float32, copy=True)
    depth_m[~np.isfinite(depth_m) | (depth_m < 0)] = 0.0
    return depth_m


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Encode an array as an Image; the array's dtype and shape must match the encoding."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding '{encoding}'")
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(array)
    if arr.dtype != dtype:
        raise ImageConversionError(f"encoding {encoding} needs dtype {dtype}, got {arr.dtype}")
    shape_channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else -1)
    if shape_channels != channels:
        raise ImageConversionError(
            f"encoding {encoding} needs {channels} channel(s), got array of shape {arr.shape}")
    arr = np.ascontiguousarray(arr)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = int(msg.width * channels * dtype.itemsize)
    msg.data = arr.tobytes()
    return msg


def depth_m_to_image(depth_m: np.ndarray, encoding: str = "16UC1", header: Header | None = None) -> Image:
    """Encode metric depth as 16UC1 millimetres (0 = invalid) or 32FC1 metres."""
    depth_m = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if encoding == "16UC1":
        mm = np.where(valid, np.round(depth_m * 1000.0), 0.0)
        return numpy_to_image(np.clip(mm, 0, 65535).astype(np.uint16), "16UC1", header)
    if encoding == "32FC1":
        return numpy_to_image(np.where(valid, depth_m, 0.0).astype(np.float32), "32FC1", header)
    raise ImageConversionError(f"depth encoding must be 16UC1 or 32FC1, got '{encoding}'")


_ROS_TO_CV_DISTORTION = {"plumb_bob": "plumb_bob", "rational_polynomial": "rational_polynomial",
                         "equidistant": "equidistant", "": "plumb_bob", "none": "plumb_bob"}


def camera_info_to_camera(msg: CameraInfo) -> PinholeCamera:
    """Build a PinholeCamera from CameraInfo; refuses missing or zero intrinsics."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CameraInfoError(
            f"camera_info on frame '{msg.header.frame_id}' has no valid intrinsics "
            f"(fx={K[0, 0]}, fy={K[1, 1]}): is the camera calibrated / the driver publishing K?")
    if msg.width <= 0 or msg.height <= 0:
        raise CameraInfoError(f"camera_info has zero image size ({msg.width}x{msg.height})")
    model = _ROS_TO_CV_DISTORTION.get(msg.distortion_model)
    if model is None:
        raise CameraInfoError(
            f"unsupported distortion model '{msg.distortion_model}'; "
            "supported: plumb_bob, rational_polynomial, equidistant")
    d = np.asarray(msg.d, dtype=np.float64)
    if d.size == 0:
        d = np.zeros(5)
    return PinholeCamera(K=K, width=int(msg.width), height=int(msg.height),
                         dist_coeffs=d, distortion_model=model)


def camera_to_camera_info(camera: PinholeCamera, header: Header | None = None) -> CameraInfo:
    """CameraInfo for a PinholeCamera (no rectification: R = I, P = [K | 0])."""
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(camera.width), int(camera.height)
    msg.distortion_model = camera.distortion_model
    msg.d = [float(x) for x in np.asarray(camera.dist_coeffs, dtype=np.float64).ravel()]
    msg.k = [float(x) for x in np.asarray(camera.K, dtype=np.float64).ravel()]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = camera.K
    msg.p = [float(x) for x in P.ravel()]
    return msg


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))
