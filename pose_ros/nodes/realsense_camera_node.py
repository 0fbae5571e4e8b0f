"""RealSense D400 camera node (pyrealsense2), a drop-in for realsense-ros's RGB-D topics.

Publishes colour (rgb8), depth aligned to colour (16UC1 millimetres) and camera_info on the
realsense-ros names, so the object-pose and teleop launch files run unchanged on a machine
without realsense-ros. Capture, filtering and alignment live in
``pose_ros.sensors.realsense_device`` (no ROS); this node only maps parameters, stamps and
publishes. The capture thread publishes directly, so a slow executor never delays frames.

Stamps: one stamp per frameset on all messages: the colour frame's librealsense timestamp
when it is host-clock based (``global_time``/``system_time``, D400 default with global time
on), i.e. the exposure time; otherwise (hardware clock, playback, software device) the device
timestamp shifted onto ROS time at the first frame (see ``StampMapper``).

TF: each time a device opens, the static camera frames go on /tf_static as realsense-ros publishes
them (``base_frame_id`` -> ``camera_depth_frame`` -> ``depth_frame_id`` and -> ``camera_color_frame``
-> ``color_frame_id``, with the device's depth-to-colour extrinsics; nodes/tf_publisher.py).
/diagnostics: connection state, frame rate, timeouts, reconnects, the last error (hardware_id: the device).
All parameters are read at start-up (the device is configured with them): `ros2 param set` is refused.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from pose_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticReport, NodeDiagnostics, RateMeter
from pose_ros.nodes.image_conversions import camera_to_camera_info, ns_to_stamp, numpy_to_image
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.process_priority import apply_process_priority, priority_parameters
from pose_ros.nodes.qos import camera_publisher_qos
from pose_ros.nodes.runner import run_node
from pose_ros.nodes.tf_publisher import BASE_FRAME, TfPublisher, camera_frame_transforms
from pose_ros.nodes.topics import COLOR_OPTICAL_FRAME, COLOR_TOPIC, DEPTH_OPTICAL_FRAME, DEPTH_TOPIC, INFO_TOPIC

ALIGNED_DEPTH_INFO_TOPIC = "/camera/camera/aligned_depth_to_color/camera_info"
RAW_DEPTH_TOPIC = "/camera/camera/depth/image_rect_raw"
RAW_DEPTH_INFO_TOPIC = "/camera/camera/depth/camera_info"

PARAMETERS = [
    *priority_parameters(),
    ParamSpec("serial_no", "", "device serial number; empty = first device found"),
    ParamSpec("color_width", 640, "colour width in pixels (0 = device default)", min=0, max=4096),
    ParamSpec("color_height", 480, "colour height in pixels (0 = device default)", min=0, max=4096),
    ParamSpec("color_fps", 30, "colour frame rate (0 = device default)", min=0, max=300),
    ParamSpec("depth_width", 640, "depth width in pixels (0 = device default)", min=0, max=4096),
    ParamSpec("depth_height", 480, "depth height in pixels (0 = device default)", min=0, max=4096),
    ParamSpec("depth_fps", 30, "depth frame rate (0 = device default)", min=0, max=300),
    ParamSpec("align_depth", True, "publish depth aligned to the colour camera (rs.align); "
              "false = raw depth on raw_depth_topic in the depth optical frame"),
    ParamSpec("decimation_filter.enable", False, "librealsense decimation filter (divides depth resolution)"),
    ParamSpec("decimation_filter.filter_magnitude", 2, "decimation factor", min=2, max=8),
    ParamSpec("spatial_filter.enable", False, "librealsense edge-preserving spatial filter"),
    ParamSpec("spatial_filter.filter_magnitude", 2, "spatial filter iterations", min=1, max=5),
    ParamSpec("spatial_filter.filter_smooth_alpha", 0.5, "spatial filter alpha", min=0.25, max=1.0),
    ParamSpec("spatial_filter.filter_smooth_delta", 20, "spatial filter edge step (depth units)", min=1, max=50),
    ParamSpec("spatial_filter.holes_fill", 0, "spatial hole filling radius mode (0 = off)", min=0, max=5),
    ParamSpec("temporal_filter.enable", False, "librealsense temporal filter"),
    ParamSpec("temporal_filter.filter_smooth_alpha", 0.4, "temporal filter alpha", min=0.0, max=1.0),
    ParamSpec("temporal_filter.filter_smooth_delta", 20, "temporal filter edge step (depth units)", min=1, max=100),
    ParamSpec("temporal_filter.holes_fill", 3, "temporal persistency index (0 = off .. 8 = always)", min=0, max=8),
    ParamSpec("hole_filling_filter.enable", False, "librealsense hole filling filter"),
    ParamSpec("hole_filling_filter.holes_fill", 1,
              "hole filling mode: 0 fill_from_left, 1 farthest_from_around, 2 nearest_from_around", min=0, max=2),
    ParamSpec("color_topic", COLOR_TOPIC, "colour image topic (realsense-ros name)"),
    ParamSpec("depth_topic", DEPTH_TOPIC, "aligned depth topic, 16UC1 mm (realsense-ros name)"),
    ParamSpec("info_topic", INFO_TOPIC, "colour camera_info topic (realsense-ros name)"),
    ParamSpec("depth_info_topic", ALIGNED_DEPTH_INFO_TOPIC, "aligned depth camera_info topic"),
    ParamSpec("raw_depth_topic", RAW_DEPTH_TOPIC, "depth topic when align_depth is false"),
    ParamSpec("raw_depth_info_topic", RAW_DEPTH_INFO_TOPIC, "depth camera_info topic when align_depth is false"),
    ParamSpec("color_frame_id", COLOR_OPTICAL_FRAME, "colour (and aligned depth) optical frame id"),
    ParamSpec("depth_frame_id", DEPTH_OPTICAL_FRAME, "depth optical frame id (unaligned depth only)"),
    ParamSpec("base_frame_id", BASE_FRAME, "camera body frame of the static TF (/tf_static) to the optical frames, "
              "as realsense-ros: <base> -> camera_depth_frame -> depth_frame_id, <base> -> camera_color_frame -> "
              "color_frame_id (device extrinsics); empty = no TF"),
    ParamSpec("reliable", True, "reliable publishers (realsense-ros default SYSTEM_DEFAULT = reliable); "
              "false = best effort (SENSOR_DATA)"),
    ParamSpec("retry_period_s", 2.0, "seconds between attempts to open an absent device", min=0.05, max=3600.0),
    ParamSpec("frame_timeout_s", 1.0, "wait per frameset before counting a timeout", min=0.05, max=60.0),
    ParamSpec("max_timeouts", 3, "consecutive timeouts before the device counts as lost and is reopened",
              min=1, max=1000),
    ParamSpec("playback_file", "", "RealSense recording (.bag; .db3 from librealsense >= 2.56) to play instead of a device; loops at the end"),
    ParamSpec("playback_realtime", True, "play the recording at recorded speed (false = as fast as consumed)"),
]


def capture_settings_from_params(p: dict[str, Any]):
    """Node parameters -> CaptureSettings (validates filter ranges: ValueError names the option)."""
    from pose_ros.sensors.realsense_device import CaptureSettings, FilterSettings, StreamRequest

    filters = FilterSettings(
        decimation=bool(p["decimation_filter.enable"]),
        decimation_magnitude=int(p["decimation_filter.filter_magnitude"]),
        spatial=bool(p["spatial_filter.enable"]),
        spatial_magnitude=int(p["spatial_filter.filter_magnitude"]),
        spatial_smooth_alpha=float(p["spatial_filter.filter_smooth_alpha"]),
        spatial_smooth_delta=float(p["spatial_filter.filter_smooth_delta"]),
        spatial_holes_fill=int(p["spatial_filter.holes_fill"]),
        temporal=bool(p["temporal_filter.enable"]),
        temporal_smooth_alpha=float(p["temporal_filter.filter_smooth_alpha"]),
        temporal_smooth_delta=float(p["temporal_filter.filter_smooth_delta"]),
        temporal_persistence=int(p["temporal_filter.holes_fill"]),
        hole_filling=bool(p["hole_filling_filter.enable"]),
        hole_filling_mode=int(p["hole_filling_filter.holes_fill"]),
    )
    return CaptureSettings(
        serial_no=str(p["serial_no"]),
        color=StreamRequest(int(p["color_width"]), int(p["color_height"]), int(p["color_fps"])),
        depth=StreamRequest(int(p["depth_width"]), int(p["depth_height"]), int(p["depth_fps"])),
        align_depth=bool(p["align_depth"]), filters=filters, playback_file=str(p["playback_file"]),
        playback_realtime=bool(p["playback_realtime"]), frame_timeout_s=float(p["frame_timeout_s"]))


class RealSenseCameraNode(Node):
    """Publishes one RealSense's colour, depth and camera_info; survives unplug/replug.

    ``device`` (any librealsense device object, e.g. a ``software_device``) or ``device_provider``
    (called on every (re)open, returns a device or raises) replace discovery by serial number.
    """

    def __init__(self, *, device: Any = None, device_provider: Callable[[], Any] | None = None,
                 node_name: str = "realsense_camera", **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        from pose_ros.sensors.realsense_device import CameraSupervisor, StampMapper

        self.p = declare_parameters(self, PARAMETERS)
        self.process_priority = apply_process_priority(self, self.p["process_realtime_priority"],
                                                       self.p["process_nice"])
        self.settings = capture_settings_from_params(self.p)
        playback = bool(self.settings.playback_file)
        self._ctx = None
        if device is not None:
            self._provider: Callable[[], Any] = lambda: device
        elif device_provider is not None:
            self._provider = device_provider
        else:
            self._provider = self._discover
        self._current_device: Any = None
        self._stamps = StampMapper(trust_host_domains=not playback)
        qos = camera_publisher_qos(reliable=bool(self.p["reliable"]))
        aligned = self.settings.align_depth
        self.color_pub = self.create_publisher(Image, self.p["color_topic"], qos)
        self.info_pub = self.create_publisher(CameraInfo, self.p["info_topic"], qos)
        self.depth_pub = self.create_publisher(
            Image, self.p["depth_topic"] if aligned else self.p["raw_depth_topic"], qos)
        self.depth_info_pub = self.create_publisher(
            CameraInfo, self.p["depth_info_topic"] if aligned else self.p["raw_depth_info_topic"], qos)
        self.published = 0
        self._lock = threading.Lock()
        self._rate = RateMeter()
        self.tf = TfPublisher(self)
        self.diagnostics = NodeDiagnostics(self, self._diagnostics, hardware_id=self._hardware_id)
        self.supervisor = CameraSupervisor(
            self._open_capture, self._publish, retry_period_s=float(self.p["retry_period_s"]),
            max_timeouts=int(self.p["max_timeouts"]), read_timeout_s=float(self.p["frame_timeout_s"]),
            logger=self.get_logger())
        self.supervisor.start()
        source = self.settings.playback_file or (f"serial '{self.settings.serial_no}'" if self.settings.serial_no
                                                 else "first device")
        self.get_logger().info(f"RealSense camera ({source}) -> {self.p['color_topic']}, "
                               f"{self.depth_pub.topic_name}, {self.p['info_topic']}; {self.tf.describe()}")

    # -------------------------------------------------------------- device handling
    def _discover(self) -> Any:
        from pose_ros.sensors.realsense_device import find_device, open_playback

        import pyrealsense2 as rs

        if self._ctx is None:
            self._ctx = rs.context()
            if not self.settings.playback_file:
                self._ctx.set_devices_changed_callback(self._on_devices_changed)
        if self.settings.playback_file:
            return open_playback(self.settings.playback_file, self.settings.playback_realtime, self._ctx)
        return find_device(self.settings.serial_no, self._ctx)

    def _on_devices_changed(self, info: Any) -> None:
        dev = self._current_device
        try:
            if dev is not None and info.was_removed(dev):
                self.supervisor.notify_device_removed()
        except RuntimeError:
            self.supervisor.notify_device_removed()

    def _open_capture(self):
        from pose_ros.sensors.realsense_device import RealSenseCapture

        dev = self._provider()
        cap = RealSenseCapture(dev, self.settings).start()
        self._current_device = dev
        self._publish_camera_tf(cap.T_color_depth)
        return cap

    def _publish_camera_tf(self, T_color_depth) -> None:
        """Static camera frames of the opened device: camera_link at the depth sensor, the colour
        optical frame where the depth-to-colour extrinsics put it."""
        if not self.p["base_frame_id"]:
            return
        import numpy as np

        from pose_ros.core.transforms import invert_T
        T_depth_color = invert_T(np.asarray(T_color_depth, dtype=np.float64))
        self.tf.send_static(camera_frame_transforms(self.p["base_frame_id"], self.p["color_frame_id"],
                                                    self.p["depth_frame_id"], self.get_clock().now().to_msg(),
                                                    T_depth_color=T_depth_color))

    def _hardware_id(self) -> str:
        cap = self.supervisor.capture if hasattr(self, "supervisor") else None
        return str(cap.info) if cap is not None else (self.settings.playback_file or self.settings.serial_no)

    def _diagnostics(self) -> DiagnosticReport:
        st = self.supervisor.stats
        rate = self._rate.rate_hz()
        connected = self.supervisor.connected
        values = {"connected": connected, "frames_published": self.published, "rate_hz": rate,
                  "opens": st.opens, "reconnects": st.reconnects, "open_failures": st.open_failures,
                  "read_timeouts": st.read_timeouts, "callback_errors": st.callback_errors,
                  "last_error": st.last_error}
        if not connected:
            return DiagnosticReport(f"no camera ({st.last_error or 'opening'}); retrying every "
                                    f"{float(self.p['retry_period_s']):g} s", values, ERROR)
        level = WARN if rate == 0.0 else OK
        return DiagnosticReport(f"streaming {rate:.1f} Hz, {self.published} framesets, {st.reconnects} reconnects",
                                values, level)

    # -------------------------------------------------------------- publishing
    def _publish(self, frame) -> None:
        stamp_ns = self._stamps(frame.timestamp_ms, frame.timestamp_domain, self.get_clock().now().nanoseconds)
        stamp = ns_to_stamp(stamp_ns)
        color_header = Header(stamp=stamp, frame_id=self.p["color_frame_id"])
        depth_header = color_header if frame.aligned else Header(stamp=stamp, frame_id=self.p["depth_frame_id"])
        with self._lock:
            self.color_pub.publish(numpy_to_image(frame.color_rgb, "rgb8", color_header))
            self.depth_pub.publish(numpy_to_image(frame.depth_mm_u16, "16UC1", depth_header))
            self.info_pub.publish(camera_to_camera_info(frame.color_camera, color_header))
            self.depth_info_pub.publish(camera_to_camera_info(frame.depth_camera, depth_header))
            self.published += 1
        self._rate.tick()

    def destroy_node(self) -> None:
        self.supervisor.stop()
        if self._ctx is not None and self.settings.playback_file:
            try:
                self._ctx.unload_device(self.settings.playback_file)
            except RuntimeError:
                pass
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(RealSenseCameraNode, args)


if __name__ == "__main__":
    sys.exit(main())
