"""RealSense capture without ROS: device discovery, stream checks, filters, alignment, reconnect.

Why not ``rs.pipeline``: a pipeline only sees devices enumerated by a context, so it can drive
neither a ``software_device`` (how this is tested without hardware) nor give us control over
which sensor opens which profile. We open the sensors ourselves into one ``rs.syncer`` (what
realsense-ros does too), so hardware, ``.bag`` playback and software devices share one code path.

Colour comes out as RGB uint8, depth as the sensor's uint16 units plus the per-frame depth scale
(metres per unit); with ``align_depth`` the depth is librealsense-aligned to the colour camera.

In a process that also uses rclpy, import rclpy *before* pyrealsense2: the pyrealsense2 2.59
wheel exports its own copy of Fast DDS, and loaded first it captures rclpy's symbols (the process
then segfaults at exit). The camera node imports rclpy at module level for this reason.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pose_ros.core.camera import PinholeCamera

__all__ = [
    "RealSenseError", "DeviceNotFoundError", "StreamConfigError", "StreamRequest", "FilterSettings",
    "CaptureSettings", "RgbdFrame", "DeviceInfo", "list_devices", "find_device", "open_playback",
    "intrinsics_to_camera", "extrinsics_to_T", "distortion_model_name", "select_profile",
    "build_filters", "RealSenseCapture", "StampMapper", "CameraSupervisor", "SupervisorStats",
]

# Colour formats we can turn into RGB without a colour-space conversion, in preference order.
_COLOR_FORMATS = ("rgb8", "bgr8", "rgba8", "bgra8")


class RealSenseError(RuntimeError):
    """A device-level failure (not there, lost, refused to start)."""


class DeviceNotFoundError(RealSenseError):
    """No (matching) device: the message lists the devices that were found."""


class StreamConfigError(ValueError):
    """Requested stream/filter settings are not supported; the message lists what is."""


@dataclass
class StreamRequest:
    """One video stream; 0 for width/height/fps means "the device default"."""

    width: int = 640
    height: int = 480
    fps: int = 30

    def __post_init__(self) -> None:
        for name in ("width", "height", "fps"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise StreamConfigError(f"{name} must be a non-negative integer (0 = device default); got {v!r}")
            setattr(self, name, int(v))


@dataclass
class FilterSettings:
    """librealsense post-processing filters, applied to depth in realsense-ros's order.

    Defaults follow realsense-ros (all off). Option names are librealsense's.
    """

    decimation: bool = False
    decimation_magnitude: int = 2            # 2..8, divides depth resolution
    spatial: bool = False
    spatial_magnitude: int = 2               # 1..5 iterations
    spatial_smooth_alpha: float = 0.5        # 0.25..1
    spatial_smooth_delta: float = 20.0       # 1..50 (depth units step that counts as an edge)
    spatial_holes_fill: int = 0              # 0..5
    temporal: bool = False
    temporal_smooth_alpha: float = 0.4       # 0..1
    temporal_smooth_delta: float = 20.0      # 1..100
    temporal_persistence: int = 3            # 0..8 (librealsense persistency index)
    hole_filling: bool = False
    hole_filling_mode: int = 1               # 0 fill_from_left, 1 farthest_from_around, 2 nearest_from_around

    def __post_init__(self) -> None:
        checks = [("decimation_magnitude", 2, 8), ("spatial_magnitude", 1, 5), ("spatial_smooth_alpha", 0.25, 1.0),
                  ("spatial_smooth_delta", 1, 50), ("spatial_holes_fill", 0, 5), ("temporal_smooth_alpha", 0.0, 1.0),
                  ("temporal_smooth_delta", 1, 100), ("temporal_persistence", 0, 8), ("hole_filling_mode", 0, 2)]
        for name, lo, hi in checks:
            v = getattr(self, name)
            if not (lo <= v <= hi):
                raise StreamConfigError(f"filter option {name}={v} is outside librealsense's range [{lo}, {hi}]")


@dataclass
class CaptureSettings:
    """Everything that decides what a capture opens."""

    serial_no: str = ""                      # empty = first device found
    color: StreamRequest = field(default_factory=StreamRequest)
    depth: StreamRequest = field(default_factory=StreamRequest)
    align_depth: bool = True
    filters: FilterSettings = field(default_factory=FilterSettings)
    playback_file: str = ""                  # RealSense .bag instead of a device
    playback_realtime: bool = True
    frame_timeout_s: float = 1.0


@dataclass
class RgbdFrame:
    """One synchronised colour + depth pair, ready to publish."""

    color_rgb: np.ndarray            # (H,W,3) uint8 RGB
    depth_raw: np.ndarray            # (h,w) uint16 sensor units, 0 = invalid
    depth_scale_m: float             # metres per depth unit
    color_camera: PinholeCamera
    depth_camera: PinholeCamera      # camera of depth_raw (the colour camera when aligned)
    T_color_depth: np.ndarray        # 4x4, depth_raw's camera -> colour camera (identity when aligned)
    timestamp_ms: float              # colour frame timestamp
    timestamp_domain: str            # "hardware_clock" | "system_time" | "global_time"
    frame_number: int
    aligned: bool

    @property
    def depth_m(self) -> np.ndarray:
        """Depth in metres (float32, 0 = invalid)."""
        return self.depth_raw.astype(np.float32) * np.float32(self.depth_scale_m)

    @property
    def depth_mm_u16(self) -> np.ndarray:
        """Depth as uint16 millimetres (ROS 16UC1), rescaling if the device unit is not 1 mm."""
        if abs(self.depth_scale_m - 0.001) < 1e-9:
            return self.depth_raw
        mm = np.rint(self.depth_raw.astype(np.float64) * (self.depth_scale_m * 1000.0))
        mm[mm > 65535] = 0  # beyond 16-bit mm range: invalid rather than wrapped
        return mm.astype(np.uint16)


@dataclass
class DeviceInfo:
    name: str
    serial: str
    firmware: str = ""
    usb_type: str = ""
    product_line: str = ""

    def __str__(self) -> str:
        extra = ", ".join(x for x in (self.product_line, f"fw {self.firmware}" if self.firmware else "",
                                        f"USB {self.usb_type}" if self.usb_type else "") if x)
        return f"{self.name} (serial {self.serial}{', ' + extra if extra else ''})"


def _rs() -> Any:
    import pyrealsense2 as rs  # imported lazily: optional for everything but this module's functions
    return rs


def _info(dev: Any, key: str) -> str:
    rs = _rs()
    ci = getattr(rs.camera_info, key)
    try:
        return dev.get_info(ci) if dev.supports(ci) else ""
    except RuntimeError:
        return ""


def device_info(dev: Any) -> DeviceInfo:
    return DeviceInfo(_info(dev, "name"), _info(dev, "serial_number"), _info(dev, "firmware_version"),
                      _info(dev, "usb_type_descriptor"), _info(dev, "product_line"))


def list_devices(ctx: Any | None = None) -> list[DeviceInfo]:
    """Connected devices as seen by ``ctx`` (a fresh ``rs.context`` by default)."""
    ctx = ctx if ctx is not None else _rs().context()
    return [device_info(d) for d in ctx.query_devices()]


def find_device(serial_no: str = "", ctx: Any | None = None) -> Any:
    """The device with ``serial_no`` (first device when empty); DeviceNotFoundError lists what exists."""
    ctx = ctx if ctx is not None else _rs().context()
    devices = list(ctx.query_devices())
    want = str(serial_no).strip()
    for dev in devices:
        if not want or _info(dev, "serial_number") == want:
            return dev
    found = [str(device_info(d)) for d in devices]
    what = f"serial_no '{want}'" if want else "any RealSense device"
    listing = "; ".join(found) if found else "none (check the USB cable, udev rules, and that no other process holds it)"
    raise DeviceNotFoundError(f"no device matching {what}; found: {listing}")


def open_playback(path: str, realtime: bool = True, ctx: Any | None = None) -> Any:
    """A playback device for a RealSense recording (``.bag``; ``.db3`` from librealsense >= 2.56)."""
    import os

    if not os.path.isfile(path):
        raise DeviceNotFoundError(f"playback_file {path!r} does not exist; give the path of a RealSense .bag recording")
    ctx = ctx if ctx is not None else _rs().context()
    try:  # reopening (the loop at the end of a recording) needs the previous instance gone
        ctx.unload_device(path)
    except RuntimeError:
        pass
    try:
        dev = ctx.load_device(path)
    except RuntimeError as exc:
        raise DeviceNotFoundError(f"cannot open playback_file {path!r} as a RealSense recording: {exc}") from exc
    dev.as_playback().set_real_time(bool(realtime))
    return dev


def distortion_model_name(rs_model: Any) -> str:
    """librealsense distortion -> ROS CameraInfo model name.

    Brown-Conrady, modified and inverse Brown-Conrady all carry k1,k2,p1,p2,k3 in OpenCV order and
    map to ``plumb_bob`` (what realsense-ros publishes; D400 colour coefficients are zero or
    tiny, so the inverse-model difference is below a pixel). Kannala-Brandt (T265/fisheye) maps
    to ``equidistant``. F-theta has no ROS equivalent and is refused.
    """
    rs = _rs()
    if rs_model in (rs.distortion.none, rs.distortion.brown_conrady, rs.distortion.modified_brown_conrady,
                    rs.distortion.inverse_brown_conrady):
        return "plumb_bob"
    if rs_model == rs.distortion.kannala_brandt4:
        return "equidistant"
    raise StreamConfigError(f"librealsense distortion {rs_model} has no ROS CameraInfo equivalent; "
                            "use a stream with Brown-Conrady or Kannala-Brandt distortion")


def intrinsics_to_camera(intr: Any) -> PinholeCamera:
    """``rs.intrinsics`` -> PinholeCamera (K, size, OpenCV-ordered coefficients, ROS model name)."""
    model = distortion_model_name(intr.model)
    coeffs = np.asarray(list(intr.coeffs), dtype=np.float64)
    coeffs = coeffs[:4] if model == "equidistant" else coeffs[:5]
    K = np.array([[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]])
    return PinholeCamera(K, int(intr.width), int(intr.height), coeffs, model)


def extrinsics_to_T(ext: Any) -> np.ndarray:
    """``rs.extrinsics`` (column-major rotation, metres) -> 4x4 ``T_to_from``."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(list(ext.rotation), dtype=np.float64).reshape(3, 3).T
    T[:3, 3] = np.asarray(list(ext.translation), dtype=np.float64)
    return T


def _profile_str(p: Any) -> str:
    v = p.as_video_stream_profile()
    return f"{v.width()}x{v.height()}@{p.fps()} {str(p.format()).split('.')[-1]}"


def _video_profiles(dev: Any, stream: Any) -> list[tuple[Any, Any]]:
    """All (sensor, video profile) pairs of a stream type across the device's sensors."""
    out = []
    for sensor in dev.query_sensors():
        for p in sensor.get_stream_profiles():
            if p.stream_type() == stream and p.is_video_stream_profile():
                out.append((sensor, p))
    return out


def select_profile(dev: Any, stream_name: str, req: StreamRequest, formats: tuple[str, ...]) -> tuple[Any, Any]:
    """(sensor, profile) for ``req``; StreamConfigError names the supported profiles otherwise."""
    rs = _rs()
    stream = getattr(rs.stream, stream_name)
    fmt_ids = [getattr(rs.format, f) for f in formats]
    pairs = _video_profiles(dev, stream)
    if not pairs:
        raise StreamConfigError(f"device {device_info(dev)} has no {stream_name} stream")
    usable = [(s, p) for s, p in pairs if p.format() in fmt_ids]

    def fits(p: Any) -> bool:
        v = p.as_video_stream_profile()
        return ((req.width == 0 or v.width() == req.width) and (req.height == 0 or v.height() == req.height)
                and (req.fps == 0 or p.fps() == req.fps))

    matches = [(s, p) for s, p in usable if fits(p)]
    if not matches:
        supported = sorted({_profile_str(p) for _, p in usable}) or sorted({_profile_str(p) for _, p in pairs})
        raise StreamConfigError(
            f"{stream_name} {req.width}x{req.height}@{req.fps} is not supported by {device_info(dev).name}; "
            f"supported ({'/'.join(formats)}): {', '.join(supported)}. Set {stream_name}_width/height/fps to one of these")
    defaults = [(s, p) for s, p in matches if p.is_default()]
    ranked = defaults or matches
    ranked.sort(key=lambda sp: fmt_ids.index(sp[1].format()))
    return ranked[0]


def build_filters(settings: FilterSettings) -> list[Any]:
    """librealsense filter chain: decimation, [to disparity, spatial, temporal, to depth], hole filling."""
    rs = _rs()
    chain: list[Any] = []
    if settings.decimation:
        f = rs.decimation_filter()
        f.set_option(rs.option.filter_magnitude, float(settings.decimation_magnitude))
        chain.append(f)
    if settings.spatial or settings.temporal:
        # Spatial/temporal smoothing is better conditioned in disparity (errors grow with z^2).
        chain.append(rs.disparity_transform(True))
        if settings.spatial:
            f = rs.spatial_filter()
            f.set_option(rs.option.filter_magnitude, float(settings.spatial_magnitude))
            f.set_option(rs.option.filter_smooth_alpha, float(settings.spatial_smooth_alpha))
            f.set_option(rs.option.filter_smooth_delta, float(settings.spatial_smooth_delta))
            f.set_option(rs.option.holes_fill, float(settings.spatial_holes_fill))
            chain.append(f)
        if settings.temporal:
            f = rs.temporal_filter()
            f.set_option(rs.option.filter_smooth_alpha, float(settings.temporal_smooth_alpha))
            f.set_option(rs.option.filter_smooth_delta, float(settings.temporal_smooth_delta))
            f.set_option(rs.option.holes_fill, float(settings.temporal_persistence))
            chain.append(f)
        chain.append(rs.disparity_transform(False))
    if settings.hole_filling:
        f = rs.hole_filling_filter()
        f.set_option(rs.option.holes_fill, float(settings.hole_filling_mode))
        chain.append(f)
    return chain


def _to_rgb(color_frame: Any) -> np.ndarray:
    rs = _rs()
    arr = np.asanyarray(color_frame.get_data())
    fmt = color_frame.get_profile().format()
    if fmt == rs.format.rgb8:
        return arr.copy()
    if fmt == rs.format.bgr8:
        return arr[:, :, ::-1].copy()
    if fmt == rs.format.rgba8:
        return arr[:, :, :3].copy()
    if fmt == rs.format.bgra8:
        return arr[:, :, 2::-1].copy()
    raise StreamConfigError(f"colour format {fmt} cannot be converted to RGB; use one of {_COLOR_FORMATS}")


class RealSenseCapture:
    """Open a device's colour + depth sensors into one syncer; ``read()`` gives RgbdFrames.

    ``device`` is anything librealsense calls a device: hardware from ``find_device``, a playback
    device from ``open_playback``, or an ``rs.software_device``.
    """

    def __init__(self, device: Any, settings: CaptureSettings) -> None:
        rs = _rs()
        self.device = device
        self.settings = settings
        self.info = device_info(device)
        self._color_sensor, self._color_profile = select_profile(device, "color", settings.color, _COLOR_FORMATS)
        self._depth_sensor, self._depth_profile = select_profile(device, "depth", settings.depth, ("z16",))
        self._filters = build_filters(settings.filters)
        self._align = rs.align(rs.stream.color) if settings.align_depth else None
        self._syncer = rs.syncer(4)
        self._opened: list[Any] = []
        self._started: list[Any] = []
        self.color_camera = intrinsics_to_camera(self._color_profile.as_video_stream_profile().get_intrinsics())
        self.T_color_depth = extrinsics_to_T(self._depth_profile.get_extrinsics_to(self._color_profile))
        self._cameras: dict[tuple, PinholeCamera] = {}

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "RealSenseCapture":
        rs = _rs()
        # D405-style devices stream colour from the depth sensor: one open() with both profiles.
        groups: list[tuple[Any, list[Any]]] = []
        for sensor, prof in ((self._color_sensor, self._color_profile), (self._depth_sensor, self._depth_profile)):
            name = sensor.get_info(rs.camera_info.name)
            for s, profs in groups:
                if s.get_info(rs.camera_info.name) == name:
                    profs.append(prof)
                    break
            else:
                groups.append((sensor, [prof]))
        try:
            for sensor, profs in groups:
                if sensor.supports(rs.option.global_time_enabled) and not sensor.is_option_read_only(
                        rs.option.global_time_enabled):
                    sensor.set_option(rs.option.global_time_enabled, 1.0)
                sensor.open(profs if len(profs) > 1 else profs[0])
                self._opened.append(sensor)
            for sensor in self._opened:
                sensor.start(self._syncer)
                self._started.append(sensor)
        except RuntimeError as exc:
            self.stop()
            raise RealSenseError(f"could not start streams on {self.info}: {exc} "
                                 "(device busy in another process, or USB bandwidth too low for these profiles)") from exc
        return self

    def stop(self) -> None:
        for sensor in self._started:
            try:
                sensor.stop()
            except RuntimeError:
                pass
        for sensor in self._opened:
            try:
                sensor.close()
            except RuntimeError:
                pass
        self._started.clear()
        self._opened.clear()

    def __enter__(self) -> "RealSenseCapture":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- frames
    def _camera_of(self, frame: Any) -> PinholeCamera:
        intr = frame.get_profile().as_video_stream_profile().get_intrinsics()
        key = (intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy, tuple(intr.coeffs), str(intr.model))
        cam = self._cameras.get(key)
        if cam is None:
            cam = self._cameras[key] = intrinsics_to_camera(intr)
        return cam

    def read(self, timeout_s: float | None = None) -> RgbdFrame | None:
        """Next synchronised pair, or None when none arrived within ``timeout_s``.

        Framesets missing colour or depth (the syncer releases singles while it learns the
        streams, or when one stream stalls) are skipped within the same time budget.
        """
        timeout_s = self.settings.frame_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            ok, fs = self._syncer.try_wait_for_frames(max(1, remaining_ms))
            if not ok:
                return None
            fs = fs.as_frameset()
            if fs and fs.get_color_frame() and fs.get_depth_frame():
                return self._process(fs)
            if time.monotonic() >= deadline:
                return None

    def _process(self, fs: Any) -> RgbdFrame:
        f = fs
        for flt in self._filters:
            f = flt.process(f)
        f = f.as_frameset()
        if self._align is not None:
            f = self._align.process(f)
        color = f.get_color_frame()
        depth = f.get_depth_frame()
        color_cam = self._camera_of(color)
        depth_cam = self._camera_of(depth)
        aligned = self._align is not None
        T = np.eye(4) if aligned else extrinsics_to_T(depth.get_profile().get_extrinsics_to(color.get_profile()))
        domain = str(color.get_frame_timestamp_domain()).split(".")[-1]
        return RgbdFrame(color_rgb=_to_rgb(color), depth_raw=np.asanyarray(depth.get_data()).copy(),
                         depth_scale_m=float(depth.get_units()), color_camera=color_cam, depth_camera=depth_cam,
                         T_color_depth=T, timestamp_ms=float(color.get_timestamp()), timestamp_domain=domain,
                         frame_number=int(color.get_frame_number()), aligned=aligned)


class StampMapper:
    """Frame timestamps (ms) -> host/ROS time (ns).

    ``system_time``/``global_time`` stamps are already host clock (librealsense's global time
    maps the device clock onto the host clock), so they are used as they are: the stamp is the
    exposure time, not the arrival time. ``hardware_clock`` stamps (and everything from playback
    or a software device when ``trust_host_domains`` is False) keep the device's frame spacing
    but are shifted onto the host clock at the first frame; the shift is re-anchored when the
    mapped time drifts more than ``max_drift_s`` from the host (device reset, playback loop).
    """

    def __init__(self, trust_host_domains: bool = True, max_drift_s: float = 0.5) -> None:
        self.trust_host_domains = trust_host_domains
        self.max_drift_ns = int(max_drift_s * 1e9)
        self._offset_ns: int | None = None
        self.reanchors = 0

    def __call__(self, timestamp_ms: float, domain: str, host_now_ns: int) -> int:
        ts_ns = int(round(timestamp_ms * 1e6))
        if self.trust_host_domains and domain in ("system_time", "global_time"):
            if abs(ts_ns - host_now_ns) <= self.max_drift_ns:
                return ts_ns
        if self._offset_ns is None or abs(ts_ns + self._offset_ns - host_now_ns) > self.max_drift_ns:
            if self._offset_ns is not None:
                self.reanchors += 1
            self._offset_ns = host_now_ns - ts_ns
        return ts_ns + self._offset_ns


@dataclass
class SupervisorStats:
    open_attempts: int = 0
    open_failures: int = 0
    opens: int = 0
    reconnects: int = 0
    frames: int = 0
    read_timeouts: int = 0
    callback_errors: int = 0
    last_error: str = ""


class CameraSupervisor:
    """Capture thread that keeps a camera running: open, read, detect loss, reopen, never die.

    ``open_capture`` builds and starts a RealSenseCapture (raising on failure); it is retried
    every ``retry_period_s``. A device is declared lost after ``max_timeouts`` consecutive read
    timeouts or when ``notify_device_removed`` is called (hook for ``devices_changed``), then
    reopened. ``on_frame`` runs on the capture thread; its exceptions are logged and counted.
    """

    def __init__(self, open_capture: Callable[[], RealSenseCapture], on_frame: Callable[[RgbdFrame], None],
                 retry_period_s: float = 2.0, max_timeouts: int = 3, read_timeout_s: float = 1.0,
                 logger: Any = None) -> None:
        if not retry_period_s > 0:
            raise ValueError(f"retry_period_s must be > 0; got {retry_period_s}")
        if max_timeouts < 1:
            raise ValueError(f"max_timeouts must be >= 1; got {max_timeouts}")
        self._open_capture = open_capture
        self._on_frame = on_frame
        self.retry_period_s = float(retry_period_s)
        self.max_timeouts = int(max_timeouts)
        self.read_timeout_s = float(read_timeout_s)
        self.log = logger if logger is not None else logging.getLogger("pose_ros.realsense")
        self.stats = SupervisorStats()
        self.capture: RealSenseCapture | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_report = -1e9

    @property
    def connected(self) -> bool:
        return self.capture is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="realsense-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._close()

    def notify_device_removed(self) -> None:
        self._lost.set()

    def _close(self) -> None:
        cap, self.capture = self.capture, None
        if cap is not None:
            try:
                cap.stop()
            except Exception as exc:  # noqa: BLE001 - a dying device may throw anything; we are closing anyway
                self.log.warning(f"error while closing the lost device: {exc}")

    def _report_open_failure(self, what: str, exc: Exception) -> None:
        """Log a failed open: in full when new, then at most every 30 s while it repeats."""
        msg = str(exc)
        self.stats.open_failures += 1
        now = time.monotonic()
        if msg != self.stats.last_error or now - self._last_report >= 30.0:
            self.log.error(f"{what}: {msg}; retrying every {self.retry_period_s:g} s "
                           f"(attempt {self.stats.open_attempts})")
            self._last_report = now
        self.stats.last_error = msg

    def _try_open(self) -> None:
        self.stats.open_attempts += 1
        try:
            self.capture = self._open_capture()
        except StreamConfigError as exc:
            self._report_open_failure("bad stream parameters", exc)
            return
        except Exception as exc:  # noqa: BLE001 - librealsense raises bare RuntimeError for many causes
            self._report_open_failure("camera not available", exc)
            return
        self.stats.opens += 1
        if self.stats.opens > 1:
            self.stats.reconnects += 1
        self._lost.clear()
        cap = self.capture
        self.log.info(f"streaming from {cap.info}: colour {cap.color_camera.width}x{cap.color_camera.height}, "
                      f"align_depth={cap.settings.align_depth}")

    def _run(self) -> None:
        consecutive_timeouts = 0
        while not self._stop.is_set():
            if self.capture is None:
                self._try_open()
                if self.capture is None:
                    self._stop.wait(self.retry_period_s)
                    continue
                consecutive_timeouts = 0
            try:
                frame = self.capture.read(self.read_timeout_s)
            except Exception as exc:  # noqa: BLE001 - device errors surface as RuntimeError mid-read
                self.stats.last_error = str(exc)
                self.log.error(f"frame read failed: {exc}; reopening the device")
                self._close()
                continue
            if frame is None:
                self.stats.read_timeouts += 1
                consecutive_timeouts += 1
                if consecutive_timeouts >= self.max_timeouts or self._lost.is_set():
                    self.log.warning(f"no frames for {consecutive_timeouts * self.read_timeout_s:.1f} s: "
                                     "device lost, reopening")
                    self._close()
                continue
            if self._lost.is_set():
                self.log.warning("device removal reported: reopening")
                self._close()
                continue
            consecutive_timeouts = 0
            self.stats.frames += 1
            try:
                self._on_frame(frame)
            except Exception as exc:  # noqa: BLE001 - a publish error must not kill the capture thread
                self.stats.callback_errors += 1
                self.stats.last_error = str(exc)
                self.log.error(f"frame handler failed: {exc}")
