"""sensor_msgs/Image, CompressedImage and CameraInfo <-> numpy / PinholeCamera, without cv_bridge.

cv_bridge and image_transport are not available from PyPI, and the package must run in a plain
venv. Only the encodings an RGB-D pipeline needs are supported; anything else is refused with a
message that names the encoding and what to do, rather than being silently misread.

Compressed images (remote operation over Wi-Fi) are read as image_transport's plugins write them:

- `compressed` (compressed_image_transport), colour on `<topic>/compressed`: `format` is
  `"<encoding>; <jpeg|png|tiff> compressed <target>"`, e.g. `"rgb8; jpeg compressed bgr8"`; the data is
  a JPEG/PNG file. `compressed bgr*` in the tail means the file holds BGR (OpenCV's order), else the
  channels are in the order of `<encoding>`; a format with no `;` (older publishers: `"jpeg"`, `"png"`)
  means BGR (mono when the file has one channel).
- `compressedDepth` (compressed_depth_image_transport), depth on `<topic>/compressedDepth`: `format` is
  `"<16UC1|32FC1>; compressedDepth png"` (older: `"...; compressedDepth"`); the data is a 12-byte
  ConfigHeader (int32 format, float32 depthQuantA, float32 depthQuantB; little-endian) then a 16-bit
  PNG. 16UC1: the PNG is the depth in its units (mm), exact; pixels beyond the publisher's depth_max
  (10 m by default) were zeroed. 32FC1: the PNG holds quantised inverse depth q = trunc(A / d + B)
  (A = Z0 (Z0 + 1), B = 1 - A / depth_max; Z0 = depth_quantization, 100 by default); d = A / (q - B),
  q = 0 invalid. The error grows with d^2 / A: 0.1 mm at 1 m, 2.5 mm at 5 m with the defaults.
  The `rvl` variant (`"...; compressedDepth rvl"`) is refused: set the publisher's format to png.

Decoding errors (corrupt bytes, unknown formats) raise `ImageConversionError`, a ValueError, which the
nodes count as dropped frames.
"""
from __future__ import annotations

import struct
import sys

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
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


# ---------------------------------------------------------------- image_transport: compressed images
IMAGE_TRANSPORTS = ("raw", "compressed")             # colour: image_transport plugin (and topic suffix) names
DEPTH_IMAGE_TRANSPORTS = ("raw", "compressedDepth")  # depth
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_END = b"\xff\xd9"
# compressed_depth_image_transport's ConfigHeader: int32 format (INV_DEPTH = 0), float32 depthQuantA, depthQuantB.
COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")
_COLOUR_CODECS = ("jpeg", "png", "tiff")


class CompressedImageError(ImageConversionError):
    """A CompressedImage that cannot be decoded as its `format` claims (corrupt bytes, unknown format)."""


def image_transport_name(value, depth: bool = False) -> str:
    """The `image_transport` (colour) or `depth_image_transport` parameter, normalised to the plugin's
    name (raw | compressed, raw | compressedDepth); anything else is a ValueError naming the choices."""
    choices = DEPTH_IMAGE_TRANSPORTS if depth else IMAGE_TRANSPORTS
    name = str(value).strip()
    by_lower = {c.lower(): c for c in choices}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    param = "depth_image_transport" if depth else "image_transport"
    if depth and name.lower() == "compressed":
        hint = " (depth goes over compressedDepth, image_transport's lossless 16-bit PNG with a header)"
    elif not depth and name.lower() == "compresseddepth":
        hint = " (compressedDepth is for depth: set depth_image_transport)"
    else:
        hint = " (other image_transport plugins, e.g. theora, ffmpeg, zstd, are not read: republish as compressed)"
    raise ValueError(f"{param} must be one of {' | '.join(choices)}, got {value!r}{hint}")


def transport_topic(base_topic: str, transport: str) -> tuple[type, str]:
    """(message type, topic) of `transport` for the image topic `base_topic`, named as image_transport names
    them: raw = the topic itself (sensor_msgs/Image), else `<base_topic>/<transport>` (CompressedImage)."""
    if transport == "raw":
        return Image, base_topic
    return CompressedImage, f"{base_topic.rstrip('/')}/{transport}"


def _imdecode(data: bytes, what: str) -> np.ndarray:
    import cv2

    if not data:
        raise CompressedImageError(f"{what}: the message has no data")
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        arr = None
    if arr is None or arr.size == 0:
        raise CompressedImageError(f"{what}: {len(data)} bytes that OpenCV cannot decode (corrupt, truncated or "
                                   f"not that format; they start with {data[:8].hex()})")
    return arr


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a colour CompressedImage (image_transport `compressed`: JPEG/PNG) as (H, W, 3) uint8 RGB."""
    fmt = str(msg.format)
    encoding, sep, tail = (part.strip() for part in fmt.partition(";"))
    if "compresseddepth" in fmt.lower():
        raise CompressedImageError(
            f"colour input has the compressedDepth format '{fmt}' (a depth stream): subscribe to the colour "
            "image's /compressed topic")
    if sep:
        codec = next((c for c in _COLOUR_CODECS if f"{c} compressed" in tail.lower()), None)
        if codec is None:
            raise CompressedImageError(
                f"unsupported compressed image format '{fmt}'; supported: '<encoding>; jpeg|png compressed ...' "
                "(image_transport's compressed plugin; set its format parameter to jpeg or png)")
        if encoding in DEPTH_ENCODINGS:
            raise CompressedImageError(f"colour input has a {encoding} depth image ('{fmt}'): subscribe to the "
                                       "colour topic")
        # `compressed bgr8`: the file holds BGR (converted by the publisher); else the encoding's own bytes,
        # which the decoder hands back in RGB order (what image_transport's subscriber does too).
        file_is_bgr = "compressed bgr" in tail.lower()
    else:
        codec = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}.get(encoding.lower())
        if codec is None:
            raise CompressedImageError(
                f"unsupported compressed image format '{fmt}'; supported: jpeg, png, or "
                "'<encoding>; jpeg|png compressed ...' as image_transport's compressed plugin writes it")
        file_is_bgr = True   # older publishers: the image was encoded from bgr8
    data = bytes(msg.data)
    what = f"{codec} colour image (format '{fmt}')"
    arr = _imdecode(data, what)
    if codec == "jpeg" and JPEG_END not in data:
        raise CompressedImageError(f"{what}: truncated JPEG ({len(data)} bytes, no end-of-image marker)")
    if arr.dtype != np.uint8:
        raise CompressedImageError(f"{what}: decodes to {arr.dtype} ({8 * arr.dtype.itemsize}-bit); colour must be "
                                   "8-bit (publish rgb8/bgr8)")
    if arr.ndim == 2 or arr.shape[2] == 1:
        return np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    if arr.shape[2] not in (3, 4):
        raise CompressedImageError(f"{what}: decodes to {arr.shape[2]} channels, expected 1, 3 or 4")
    arr = arr[:, :, :3]
    return np.ascontiguousarray(arr[:, :, ::-1] if file_is_bgr else arr)


def compressed_depth_to_depth_m(msg: CompressedImage, depth_scale_m: float = 0.001) -> np.ndarray:
    """Decode image_transport `compressedDepth` (16UC1 or 32FC1, PNG) as float32 metres; invalid = 0.

    16UC1 is scaled by depth_scale_m (mm by REP 118) like the raw image; 32FC1 is dequantised from
    inverse depth with the header's A, B (see the module doc)."""
    fmt = str(msg.format)
    encoding, sep, tail = (part.strip() for part in fmt.partition(";"))
    if sep:
        low = tail.lower()
        if "compresseddepth" not in low:
            raise CompressedImageError(
                f"depth input has format '{fmt}', not compressedDepth ('<16UC1|32FC1>; compressedDepth png'): "
                "subscribe to the depth image's /compressedDepth topic (depth_image_transport: compressedDepth)")
        method = low.split("compresseddepth", 1)[1].strip()
        if method == "rvl":
            raise CompressedImageError(f"compressedDepth rvl ('{fmt}') is not supported: set the publisher's "
                                       "compressedDepth format parameter to png")
        if method not in ("", "png"):
            raise CompressedImageError(f"unsupported compressedDepth format '{fmt}'; supported: "
                                       "'<16UC1|32FC1>; compressedDepth png'")
    if encoding not in DEPTH_ENCODINGS:
        raise CompressedImageError(
            f"compressedDepth format '{fmt}' names encoding '{encoding}'; expected 16UC1 (mm) or 32FC1 (m)")
    data = bytes(msg.data)
    size = COMPRESSED_DEPTH_HEADER.size
    what = f"compressedDepth image (format '{fmt}')"
    if len(data) <= size:
        raise CompressedImageError(f"{what}: {len(data)} bytes, not even the {size}-byte header and a PNG")
    _, quant_a, quant_b = COMPRESSED_DEPTH_HEADER.unpack_from(data)
    if data[size:size + len(PNG_SIGNATURE)] != PNG_SIGNATURE:
        raise CompressedImageError(
            f"{what}: no PNG after the {size}-byte header (corrupt, or not compressedDepth data: a plain "
            "PNG/JPEG from the compressed plugin?)")
    arr = _imdecode(data[size:], what)
    if arr.dtype != np.uint16 or arr.ndim != 2:
        raise CompressedImageError(f"{what}: the PNG is {arr.dtype} with shape {arr.shape}, expected one "
                                   "16-bit channel")
    if encoding in ("16UC1", "mono16"):
        return arr.astype(np.float32) * np.float32(depth_scale_m)
    if not (np.isfinite(quant_a) and np.isfinite(quant_b) and quant_a > 0):
        raise CompressedImageError(f"{what}: header has no usable inverse-depth parameters (A={quant_a}, "
                                   f"B={quant_b})")
    q = arr.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth_m = np.float32(quant_a) / (q - np.float32(quant_b))
    depth_m[(arr == 0) | ~np.isfinite(depth_m) | (depth_m < 0)] = 0.0
    return depth_m.astype(np.float32, copy=False)


def decode_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """Colour as (H, W, 3) uint8 RGB from an Image or a `compressed` CompressedImage."""
    return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)


def decode_depth_m(msg: Image | CompressedImage, depth_scale_m: float = 0.001) -> np.ndarray:
    """Depth as float32 metres (0 = invalid) from an Image or a `compressedDepth` CompressedImage."""
    if isinstance(msg, CompressedImage):
        return compressed_depth_to_depth_m(msg, depth_scale_m)
    return image_to_depth_m(msg, depth_scale_m)


def rgb_to_compressed(rgb: np.ndarray, codec: str = "jpeg", header: Header | None = None, encoding: str = "rgb8",
                      jpeg_quality: int = 95, png_level: int = 3) -> CompressedImage:
    """Encode RGB as image_transport's compressed plugin does: format `<encoding>; <codec> compressed bgr8`,
    the data a JPEG/PNG of the BGR image. `encoding` is the raw stream's (rgb8 or bgr8)."""
    import cv2

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"rgb must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
    if codec not in ("jpeg", "png"):
        raise ImageConversionError(f"compressed codec must be jpeg or png, got '{codec}'")
    if encoding not in ("rgb8", "bgr8"):
        raise ImageConversionError(f"encoding must be rgb8 or bgr8, got '{encoding}'")
    params = ([cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if codec == "jpeg"
              else [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {rgb.shape[1]}x{rgb.shape[0]} image as {codec}")
    return _compressed_message(header, f"{encoding}; {codec} compressed bgr8", buf.tobytes())


def _compressed_message(header: Header | None, fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = data
    return msg


def depth_to_compressed_depth(depth_m: np.ndarray, encoding: str = "16UC1", header: Header | None = None,
                              depth_max_m: float = 10.0, depth_quantization: float = 100.0,
                              png_level: int = 3) -> CompressedImage:
    """Encode metric depth as image_transport's compressedDepth plugin does (its defaults: depth_max 10 m,
    depth_quantization 100): 16UC1 = the millimetre image (pixels beyond depth_max zeroed) as PNG; 32FC1 =
    quantised inverse depth as PNG. Behind the 12-byte header. Depths the 16-bit inverse cannot hold
    (nearer than A / (65535 - B), 0.15 m with the defaults) are stored invalid (the plugin wraps them)."""
    import cv2

    depth_m = np.asarray(depth_m, dtype=np.float32)
    if depth_m.ndim != 2:
        raise ImageConversionError(f"depth must be (H, W), got shape {depth_m.shape}")
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if encoding == "16UC1":
        mm = np.clip(np.where(valid, np.round(depth_m * 1000.0), 0.0), 0, 65535).astype(np.uint16)
        mm[mm > np.uint16(min(65535, int(np.float32(depth_max_m) * np.float32(1000.0))))] = 0
        image, head = mm, COMPRESSED_DEPTH_HEADER.pack(0, 0.0, 0.0)
    elif encoding == "32FC1":
        z0 = np.float32(depth_quantization)
        quant_a = z0 * (z0 + np.float32(1.0))
        quant_b = np.float32(1.0) - quant_a / np.float32(depth_max_m)
        valid &= depth_m < np.float32(depth_max_m)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = quant_a / depth_m + quant_b
        valid &= q < 65536.0
        image = np.where(valid, q, 0.0).astype(np.uint16)   # truncation toward zero, as the plugin's cast
        head = COMPRESSED_DEPTH_HEADER.pack(0, float(quant_a), float(quant_b))
    else:
        raise ImageConversionError(f"compressedDepth encoding must be 16UC1 or 32FC1, got '{encoding}'")
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {image.shape[1]}x{image.shape[0]} depth PNG")
    return _compressed_message(header, f"{encoding}; compressedDepth png", head + buf.tobytes())


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
