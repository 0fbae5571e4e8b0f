"""A RealSense built from numpy frames with librealsense's ``software_device``.

Why: it runs the real librealsense code (syncer, filters, ``rs.align``, intrinsics/extrinsics
plumbing) with frames and calibration we choose, so the camera node and the capture pipeline
are exercised end to end without hardware, and recorded RGB-D frames with known calibration
(e.g. a separate colour + depth camera) can be streamed as if from a device.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.sensors.registration import check_rigid_transform

__all__ = ["SoftwareRealSense"]


def _rs_intrinsics(camera: PinholeCamera) -> Any:
    import pyrealsense2 as rs

    intr = rs.intrinsics()
    intr.width, intr.height = camera.width, camera.height
    intr.fx, intr.fy, intr.ppx, intr.ppy = camera.fx, camera.fy, camera.cx, camera.cy
    if camera.distortion_model == "equidistant":
        intr.model = rs.distortion.kannala_brandt4
        intr.coeffs = [float(c) for c in camera.dist_coeffs[:4]] + [0.0]
    else:
        if camera.dist_coeffs.size > 5 and np.any(camera.dist_coeffs[5:] != 0):
            raise ValueError("librealsense intrinsics hold 5 coefficients; rational_polynomial k4..k6 must be 0")
        intr.model = rs.distortion.brown_conrady
        intr.coeffs = [float(c) for c in np.resize(camera.dist_coeffs, 5)]
    return intr


class SoftwareRealSense:
    """A colour + depth ``rs.software_device`` with given intrinsics and depth->colour extrinsic.

    ``push(rgb, depth_raw)`` injects one synchronised pair; timestamps advance by exactly one
    frame period (librealsense's syncer matches on ``1000/fps`` ms spacing).
    """

    def __init__(self, color_camera: PinholeCamera, depth_camera: PinholeCamera,
                 T_color_depth: np.ndarray | None = None, fps: int = 30, depth_scale_m: float = 0.001,
                 serial: str = "SW0001", name: str = "Software RealSense D400") -> None:
        import pyrealsense2 as rs

        self.fps = int(fps)
        self.depth_scale_m = float(depth_scale_m)
        self.color_camera, self.depth_camera = color_camera, depth_camera
        T = np.eye(4) if T_color_depth is None else check_rigid_transform(T_color_depth)
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, name)
        self._depth_sensor = self.device.add_sensor("Stereo Module")
        self._color_sensor = self.device.add_sensor("RGB Camera")

        depth_vs = rs.video_stream()
        depth_vs.type, depth_vs.index, depth_vs.uid = rs.stream.depth, 0, 0
        depth_vs.width, depth_vs.height, depth_vs.fps = depth_camera.width, depth_camera.height, self.fps
        depth_vs.bpp, depth_vs.fmt, depth_vs.intrinsics = 2, rs.format.z16, _rs_intrinsics(depth_camera)
        self._depth_profile = self._depth_sensor.add_video_stream(depth_vs).as_video_stream_profile()

        color_vs = rs.video_stream()
        color_vs.type, color_vs.index, color_vs.uid = rs.stream.color, 0, 1
        color_vs.width, color_vs.height, color_vs.fps = color_camera.width, color_camera.height, self.fps
        color_vs.bpp, color_vs.fmt, color_vs.intrinsics = 3, rs.format.rgb8, _rs_intrinsics(color_camera)
        self._color_profile = self._color_sensor.add_video_stream(color_vs).as_video_stream_profile()

        self._depth_sensor.add_read_only_option(rs.option.depth_units, self.depth_scale_m)
        ext = rs.extrinsics()
        ext.rotation = [float(x) for x in T[:3, :3].T.ravel()]  # librealsense: column-major
        ext.translation = [float(x) for x in T[:3, 3]]
        self._depth_profile.register_extrinsics_to(self._color_profile, ext)
        self.device.create_matcher(rs.matchers.default)
        self._lock = threading.Lock()
        self.frame_number = 0
        self._keep: list[Any] = []
        self._stream_stop = threading.Event()
        self._stream_thread: threading.Thread | None = None
        self.paused = threading.Event()  # set = stop injecting (simulates a stalled/unplugged device)

    def push(self, rgb: np.ndarray, depth_raw: np.ndarray) -> int:
        """Inject one colour (H,W,3 uint8 RGB) + depth (h,w uint16) pair; returns its frame number.

        Frames injected while no capture has the sensors open are dropped by librealsense.
        """
        import pyrealsense2 as rs

        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        depth = np.ascontiguousarray(depth_raw, dtype=np.uint16)
        if rgb.shape != (self.color_camera.height, self.color_camera.width, 3):
            raise ValueError(f"rgb shape {rgb.shape} does not match the colour stream "
                             f"({self.color_camera.height},{self.color_camera.width},3)")
        if depth.shape != (self.depth_camera.height, self.depth_camera.width):
            raise ValueError(f"depth shape {depth.shape} does not match the depth stream "
                             f"({self.depth_camera.height},{self.depth_camera.width})")
        with self._lock:
            n = self.frame_number
            self.frame_number += 1
            ts_ms = n * 1000.0 / self.fps
            for sensor, profile, data, bpp in ((self._depth_sensor, self._depth_profile, depth, 2),
                                               (self._color_sensor, self._color_profile, rgb, 3)):
                f = rs.software_video_frame()
                f.pixels = data
                f.stride = data.shape[1] * bpp
                f.bpp = bpp
                f.timestamp = ts_ms
                f.domain = rs.timestamp_domain.hardware_clock
                f.frame_number = n
                f.profile = profile
                if bpp == 2:
                    f.depth_units = self.depth_scale_m
                sensor.on_video_frame(f)
            # librealsense may reference the pixel buffers until the frame is released.
            self._keep = (self._keep + [rgb, depth])[-32:]
        return n

    def start_stream(self, make_frame: Callable[[int], tuple[np.ndarray, np.ndarray]],
                     rate_hz: float | None = None) -> None:
        """Push ``make_frame(frame_number)`` pairs from a thread at ``rate_hz`` (default: fps)."""
        self.stop_stream()
        period = 1.0 / float(rate_hz or self.fps)
        self._stream_stop.clear()

        def run() -> None:
            next_t = time.monotonic()
            while not self._stream_stop.is_set():
                if not self.paused.is_set():
                    rgb, depth = make_frame(self.frame_number)
                    self.push(rgb, depth)
                next_t += period
                self._stream_stop.wait(max(0.0, next_t - time.monotonic()))

        self._stream_thread = threading.Thread(target=run, name="software-realsense", daemon=True)
        self._stream_thread.start()

    def stop_stream(self) -> None:
        self._stream_stop.set()
        if self._stream_thread is not None:
            self._stream_thread.join(5.0)
            self._stream_thread = None
