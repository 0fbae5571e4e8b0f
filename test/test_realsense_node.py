"""The RealSense camera node over real DDS, driven by librealsense software devices (no hardware)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

# rclpy before pyrealsense2: the pyrealsense2 2.59 wheel exports its own Fast DDS symbols, and
# loaded first it captures rclpy's (segfault at interpreter exit).
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("pyrealsense2")

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from pose_ros.core.camera import PinholeCamera  # noqa: E402
from pose_ros.nodes.image_conversions import image_to_numpy  # noqa: E402
from pose_ros.nodes.qos import sensor_qos  # noqa: E402
from pose_ros.nodes.realsense_camera_node import PARAMETERS, RealSenseCameraNode  # noqa: E402
from pose_ros.nodes.topics import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC  # noqa: E402
from pose_ros.sensors.software_device import SoftwareRealSense  # noqa: E402

pytestmark = pytest.mark.ros

COLOR_CAM = PinholeCamera(np.array([[120.0, 0, 63.5], [0, 121.0, 47.0], [0, 0, 1]]), 128, 96,
                          np.array([0.01, -0.002, 0.0, 0.0, 0.0]))
DEPTH_CAM = PinholeCamera(np.array([[100.0, 0, 56.0], [0, 100.0, 40.5], [0, 0, 1]]), 112, 80)
ALIGNED_DEPTH_INFO = "/camera/camera/aligned_depth_to_color/camera_info"
RAW_DEPTH = "/camera/camera/depth/image_rect_raw"
RAW_DEPTH_INFO = "/camera/camera/depth/camera_info"


def content(n: int, depth_cam: PinholeCamera = DEPTH_CAM) -> tuple[np.ndarray, np.ndarray]:
    """Frame n: random pixels seeded by n; n is also written into pixel (0,0) so a receiver can check."""
    rng = np.random.default_rng(1000 + n)
    rgb = rng.integers(0, 256, (COLOR_CAM.height, COLOR_CAM.width, 3), dtype=np.uint8)
    rgb[0, 0] = (n % 256, (n // 256) % 256, 77)
    depth = rng.integers(300, 4000, (depth_cam.height, depth_cam.width), dtype=np.uint16)
    depth[0, 0] = 10000 + n
    depth[10:20, 10:20] = 0
    return rgb, depth


def frame_number_of(rgb: np.ndarray) -> int:
    return int(rgb[0, 0, 0]) + 256 * int(rgb[0, 0, 1])


def size_params(**extra) -> list[Parameter]:
    values = dict(color_width=COLOR_CAM.width, color_height=COLOR_CAM.height, depth_width=DEPTH_CAM.width,
                  depth_height=DEPTH_CAM.height, retry_period_s=0.1, frame_timeout_s=0.2, max_timeouts=2)
    values.update(extra)
    return [Parameter(k, value=v) for k, v in values.items()]


class Listener:
    """A separate node subscribing with best-effort sensor QoS (what pose_ros consumers use)."""

    def __init__(self, topics: dict[str, type]) -> None:
        self.node = rclpy.create_node("realsense_test_listener")
        self.msgs: dict[str, list] = {t: [] for t in topics}
        self._lock = threading.Lock()
        for topic, cls in topics.items():
            self.node.create_subscription(cls, topic, self._cb(topic), sensor_qos(depth=50))

    def _cb(self, topic):
        def cb(msg):
            with self._lock:
                self.msgs[topic].append(msg)
        return cb

    def wait(self, topic: str, n: int, timeout_s: float = 30.0) -> list:
        """The messages of `topic` once there are `n`, or all there are after `timeout_s` (generous: it
        only bounds a failure, and on a loaded 2-core machine discovery and first frames are slow)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.msgs[topic]) >= n:
                    return list(self.msgs[topic])
            time.sleep(0.02)
        with self._lock:
            return list(self.msgs[topic])




def test_parameters_are_declared_with_descriptions():
    names = [p.name for p in PARAMETERS]
    assert len(names) == len(set(names))
    for spec in PARAMETERS:
        assert spec.description, spec.name
    for required in ("serial_no", "align_depth", "retry_period_s", "playback_file", "playback_realtime",
                     "color_frame_id", "decimation_filter.enable", "hole_filling_filter.enable"):
        assert required in names


def test_node_publishes_exact_frames_unaligned(ros):
    T = np.eye(4)
    T[:3, 3] = [0.015, 0.0, 0.0]
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM, T)
    listener = Listener({COLOR_TOPIC: Image, RAW_DEPTH: Image, INFO_TOPIC: CameraInfo, RAW_DEPTH_INFO: CameraInfo})
    ros(listener.node)
    node = ros(RealSenseCameraNode(device=sw.device, parameter_overrides=size_params(align_depth=False)))
    sw.start_stream(content, rate_hz=20)
    try:
        colors = listener.wait(COLOR_TOPIC, 5)
        listener.wait(RAW_DEPTH, 5)
        listener.wait(INFO_TOPIC, 5)
        listener.wait(RAW_DEPTH_INFO, 5)
    finally:
        sw.stop_stream()
    # the other topics once the last colour frame's companions are in (taken at once, a snapshot could
    # hold a colour image whose camera_info was still on its way: a CI failure)
    time.sleep(0.5)
    depths, infos, dinfos = (listener.wait(t, 0) for t in (RAW_DEPTH, INFO_TOPIC, RAW_DEPTH_INFO))
    assert len(colors) >= 5 and len(depths) >= 5 and len(infos) >= 5 and len(dinfos) >= 5
    depth_by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in depths}
    info_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in infos}
    matched = 0
    for cmsg in colors:
        assert cmsg.encoding == "rgb8" and cmsg.header.frame_id == "camera_color_optical_frame"
        rgb = image_to_numpy(cmsg)
        n = frame_number_of(rgb)
        exp_rgb, exp_depth = content(n)
        np.testing.assert_array_equal(rgb, exp_rgb)
        key = (cmsg.header.stamp.sec, cmsg.header.stamp.nanosec)
        assert key in info_stamps, "camera_info must carry the same stamp as its image"
        if key in depth_by_stamp:
            dmsg = depth_by_stamp[key]
            assert dmsg.encoding == "16UC1" and dmsg.header.frame_id == "camera_depth_optical_frame"
            np.testing.assert_array_equal(image_to_numpy(dmsg), exp_depth)
            matched += 1
    assert matched >= 3
    info = infos[-1]
    assert info.header.frame_id == "camera_color_optical_frame"
    assert (info.width, info.height) == (COLOR_CAM.width, COLOR_CAM.height)
    assert info.distortion_model == "plumb_bob"
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), COLOR_CAM.K, atol=1e-4)
    np.testing.assert_allclose(info.d, COLOR_CAM.dist_coeffs, atol=1e-6)
    np.testing.assert_allclose(np.reshape(dinfos[-1].k, (3, 3)), DEPTH_CAM.K, atol=1e-4)
    assert dinfos[-1].header.frame_id == "camera_depth_optical_frame"
    # Hardware-clock stamps keep the device's spacing (1/fps = 1/30 s per frame), anchored near ROS now.
    stamps = sorted(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in colors)
    steps = np.diff(stamps)
    assert np.all(steps > 0)
    assert np.median(steps) == pytest.approx(1e9 / 30, rel=0.01)
    assert abs(stamps[-1] - node.get_clock().now().nanoseconds) < 5e9


def test_node_aligned_depth_lands_in_colour_camera(ros):
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM, np.eye(4), depth_scale_m=0.0001)  # D405-style 0.1 mm units
    plane = np.full((DEPTH_CAM.height, DEPTH_CAM.width), 9000, np.uint16)  # 0.9 m
    listener = Listener({DEPTH_TOPIC: Image, ALIGNED_DEPTH_INFO: CameraInfo, COLOR_TOPIC: Image})
    ros(listener.node)
    ros(RealSenseCameraNode(device=sw.device, parameter_overrides=size_params()))
    sw.start_stream(lambda n: (content(n)[0], plane), rate_hz=20)
    try:
        depths = listener.wait(DEPTH_TOPIC, 3)
        dinfos = listener.wait(ALIGNED_DEPTH_INFO, 3)
    finally:
        sw.stop_stream()
    assert depths and dinfos
    d = depths[-1]
    assert d.encoding == "16UC1" and (d.width, d.height) == (COLOR_CAM.width, COLOR_CAM.height)
    assert d.header.frame_id == "camera_color_optical_frame"
    depth_mm = image_to_numpy(d)
    # Same optical centre: every colour pixel whose ray falls inside the depth image sees 900 mm.
    centre = depth_mm[20:76, 20:108]
    assert np.all(centre == 900), np.unique(centre)
    np.testing.assert_allclose(np.reshape(dinfos[-1].k, (3, 3)), COLOR_CAM.K, atol=1e-4)


def test_node_survives_absent_device_and_starts_when_it_appears(ros):
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    attempts = {"n": 0}

    def provider():
        attempts["n"] += 1
        if attempts["n"] <= 3:
            from pose_ros.sensors.realsense_device import find_device
            return find_device("000000000000")  # real discovery: raises, listing what is connected
        return sw.device

    listener = Listener({COLOR_TOPIC: Image})
    ros(listener.node)
    node = ros(RealSenseCameraNode(device_provider=provider, parameter_overrides=size_params()))
    sw.start_stream(content, rate_hz=20)
    try:
        msgs = listener.wait(COLOR_TOPIC, 3)
    finally:
        sw.stop_stream()
    assert len(msgs) >= 3
    assert node.supervisor.stats.open_failures == 3 and node.supervisor.stats.opens == 1


def test_node_with_no_device_keeps_retrying_with_clear_error(ros):
    node = ros(RealSenseCameraNode(parameter_overrides=size_params(serial_no="000000000000")))
    stats = node.supervisor.stats
    # Waited for, not slept: each attempt is a real device discovery (0.1-0.2 s measured with the CPU
    # loaded) plus the 0.1 s retry period, so three attempts within a fixed 0.8 s were borderline.
    assert wait_until(lambda: stats.open_attempts >= 3, 30.0), stats
    assert stats.opens == 0
    assert "no device matching serial_no '000000000000'; found:" in stats.last_error
    assert node.supervisor._thread.is_alive() and node.published == 0


def test_node_reconnects_after_device_loss(ros):
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    listener = Listener({COLOR_TOPIC: Image})
    ros(listener.node)
    node = ros(RealSenseCameraNode(device=sw.device, parameter_overrides=size_params()))
    sw.start_stream(content, rate_hz=20)
    try:
        assert len(listener.wait(COLOR_TOPIC, 3)) >= 3
        sw.paused.set()  # frames stop: unplugged / USB stall
        deadline = time.monotonic() + 10
        while node.supervisor.stats.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.supervisor.stats.reconnects >= 1 and node.supervisor.stats.read_timeouts >= 2
        n_before = len(listener.msgs[COLOR_TOPIC])
        sw.paused.clear()
        assert len(listener.wait(COLOR_TOPIC, n_before + 3)) >= n_before + 3
    finally:
        sw.stop_stream()


def test_unsupported_resolution_is_reported_with_supported_profiles(ros):
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    node = ros(RealSenseCameraNode(device=sw.device, parameter_overrides=size_params(color_width=1920,
                                                                                      color_height=1080)))
    # Waited for, not slept: the first open attempt runs on the capture thread, late under load.
    assert wait_until(lambda: "is not supported" in node.supervisor.stats.last_error, 30.0), node.supervisor.stats
    err = node.supervisor.stats.last_error
    assert "color 1920x1080@30 is not supported" in err and "128x96@30 rgb8" in err
    assert node.supervisor._thread.is_alive() and node.published == 0


def test_out_of_range_filter_parameter_is_refused_at_startup(ros):
    from rclpy.exceptions import InvalidParameterValueException

    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    with pytest.raises(InvalidParameterValueException, match="decimation_filter.filter_magnitude"):
        RealSenseCameraNode(device=sw.device,
                            parameter_overrides=size_params(**{"decimation_filter.filter_magnitude": 20}))


def test_node_plays_a_realsense_recording_and_loops(ros, tmp_path):
    """playback_file: frames recorded with librealsense's recorder come back over DDS, looping at the end."""
    import pyrealsense2 as rs

    from pose_ros.sensors.realsense_device import CaptureSettings, RealSenseCapture, StreamRequest

    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM)
    path = tmp_path / "recording.db3"  # librealsense >= 2.56 records ROS 2 .db3 (older: .bag)
    recorder = rs.recorder(str(path), sw.device)
    settings = CaptureSettings(color=StreamRequest(128, 96, 30), depth=StreamRequest(112, 80, 30),
                               align_depth=False)
    cap = RealSenseCapture(recorder, settings).start()
    recorded = []
    for _ in range(12):
        sw.push(*content(sw.frame_number))
        f = cap.read(0.3)
        if f is not None:
            recorded.append(f.frame_number)
    cap.stop()
    del cap, recorder  # closes the file
    assert len(recorded) >= 8 and path.stat().st_size > 0

    listener = Listener({COLOR_TOPIC: Image, RAW_DEPTH: Image})
    ros(listener.node)
    node = ros(RealSenseCameraNode(parameter_overrides=size_params(
        playback_file=str(path), align_depth=False, playback_realtime=True)))
    msgs = listener.wait(COLOR_TOPIC, 2 * len(recorded) + 4, timeout_s=20)
    numbers = [frame_number_of(image_to_numpy(m)) for m in msgs]
    # Only recorded frames come back; on a loaded 2-core machine some are dropped on the way
    # (the syncer also drops the first pair of every pass while it learns the streams).
    assert set(numbers) <= set(range(sw.frame_number)) and len(set(numbers)) >= len(recorded) // 2, (numbers, recorded)
    for m in msgs[:5]:
        rgb = image_to_numpy(m)
        np.testing.assert_array_equal(rgb, content(frame_number_of(rgb))[0])
    assert node.supervisor.stats.opens >= 2, "the end of the recording must be followed by a reopen (loop)"
    depths = listener.wait(RAW_DEPTH, 3)
    assert depths and (depths[0].width, depths[0].height) == (DEPTH_CAM.width, DEPTH_CAM.height)
    assert depths[0].header.stamp.sec > 0  # recorded device times are mapped onto ROS time


def test_node_publishes_camera_frames_with_the_device_extrinsics_on_tf_static(ros):
    """On opening a device: camera_link -> camera_{depth,color}_frame -> optical frames on /tf_static
    (realsense-ros's tree), the colour optical frame where the depth-to-colour extrinsics put it, for a
    plain TFMessage subscriber that joins later (transient local)."""
    tf2_msgs = pytest.importorskip("tf2_msgs.msg")
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    from pose_ros.core.transforms import T_from_pos_quat

    T_color_depth = np.eye(4)
    T_color_depth[:3, 3] = [-0.015, 0.0, 0.0]     # depth points -> colour: colour sensor 15 mm to the right
    sw = SoftwareRealSense(COLOR_CAM, DEPTH_CAM, T_color_depth)
    node = ros(RealSenseCameraNode(device=sw.device, parameter_overrides=size_params(base_frame_id="rs_link")))
    sw.start_stream(content, rate_hz=20)
    try:
        assert wait_until(lambda: node.published >= 2, 20.0), "no frames published"
        static: dict = {}
        lock = threading.Lock()

        def on_static(msg):
            with lock:
                static.update({t.child_frame_id: t for t in msg.transforms})

        listener = ros(rclpy.create_node("realsense_tf_listener"))
        listener.create_subscription(tf2_msgs.TFMessage, "/tf_static", on_static, QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        want = {"camera_depth_frame", "camera_depth_optical_frame", "camera_color_frame", "camera_color_optical_frame"}
        assert wait_until(lambda: want <= set(static), 30.0), sorted(static)
    finally:
        sw.stop_stream()

    def T_of(child):
        t = static[child]
        tr, q = t.transform.translation, t.transform.rotation
        return t.header.frame_id, T_from_pos_quat(np.array([tr.x, tr.y, tr.z]), np.array([q.x, q.y, q.z, q.w]))

    parents = {c: T_of(c)[0] for c in want}
    assert parents == {"camera_depth_frame": "rs_link", "camera_color_frame": "rs_link",
                       "camera_depth_optical_frame": "camera_depth_frame",
                       "camera_color_optical_frame": "camera_color_frame"}
    T_link_depth_opt = T_of("camera_depth_frame")[1] @ T_of("camera_depth_optical_frame")[1]
    T_link_color_opt = T_of("camera_color_frame")[1] @ T_of("camera_color_optical_frame")[1]
    # colour optical frame in the depth optical frame = the inverse of the depth -> colour extrinsics
    np.testing.assert_allclose(np.linalg.inv(T_link_depth_opt) @ T_link_color_opt, np.linalg.inv(T_color_depth),
                               atol=1e-9)
    np.testing.assert_allclose(T_of("camera_color_frame")[1][:3, 3], [0.0, -0.015, 0.0], atol=1e-9)  # right = -y


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
