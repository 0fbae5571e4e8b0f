"""human_pose_node over real DDS: a real COCO photo + flat depth in, skeletons/markers/overlay out."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from conftest import shared_data_path
from pose_ros.core.camera import PinholeCamera
from pose_ros.human.conventions import BLAZEPOSE33_NAMES
from pose_ros.msg import HumanKeypoint, HumanSkeletonArray
from pose_ros.nodes.image_conversions import camera_to_camera_info, depth_m_to_image, numpy_to_image
from pose_ros.nodes.params import parameters_in_yaml
from pose_ros.nodes.qos import camera_publisher_qos, result_qos
from ros_helpers import REPO_ROOT, SpinThread, ros_context, start_node_process, stop_process, wait_for

pytestmark = pytest.mark.ros

import os

# Unique topic names per test process: other ROS tests may share the DDS domain, and some of
# them publish skeletons on /human_pose/skeletons (replay nodes).
PREFIX = f"/test_human_pose_{os.getpid()}"
FRAME = "camera_color_optical_frame"
OUTPUTS = ("skeletons", "markers", "debug_image")
REMAP = [arg for name in OUTPUTS for arg in ("-r", f"/human_pose/{name}:={PREFIX}/out/{name}")]


def test_config_file_matches_declared_parameters():
    from pose_ros.nodes.human_pose_node import PARAMETERS

    declared = {p.name: p for p in PARAMETERS}
    params = parameters_in_yaml(REPO_ROOT / "config" / "human_pose.yaml")["human_pose"]
    assert set(params) == set(declared)
    for name, value in params.items():
        assert type(value) is type(declared[name].default) or isinstance(declared[name].default, list), name
        assert declared[name].description


class FakeCamera:
    """Publishes colour/depth/camera_info like realsense-ros, from a test-side node."""

    def __init__(self, node, rgb: np.ndarray, depth_m: np.ndarray, camera: PinholeCamera) -> None:
        qos = camera_publisher_qos()
        self.node = node
        self.color = node.create_publisher(Image, f"{PREFIX}/color", qos)
        self.depth = node.create_publisher(Image, f"{PREFIX}/depth", qos)
        self.info = node.create_publisher(CameraInfo, f"{PREFIX}/info", qos)
        self.rgb, self.depth_m, self.camera = rgb, depth_m, camera
        self.stamps: list[tuple[int, int]] = []

    def publish(self, rgb=None, depth_m=None, info=True, color_encoding="rgb8") -> None:
        stamp: Time = self.node.get_clock().now().to_msg()
        header = Header(stamp=stamp, frame_id=FRAME)
        rgb = self.rgb if rgb is None else rgb
        if color_encoding == "mono16":  # a wrong stream on the colour topic
            self.color.publish(numpy_to_image(np.zeros(rgb.shape[:2], np.uint16), "mono16", header))
        else:
            self.color.publish(numpy_to_image(rgb, "rgb8", header))
        self.depth.publish(depth_m_to_image(self.depth_m if depth_m is None else depth_m, "16UC1", header))
        if info:
            self.info.publish(camera_to_camera_info(self.camera, header))
        self.stamps.append((stamp.sec, stamp.nanosec))


def test_node_publishes_skeletons_markers_and_overlay(tmp_path):
    path = shared_data_path("coco_person_dev", "images", "000000000785.jpg")
    rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
    height, width = rgb.shape[:2]
    camera = PinholeCamera.from_fov(width, height, 60.0)
    depth_m = np.full((height, width), 2.0, np.float32)
    depth_m[:, :20] = 0.0  # a strip of invalid depth like a real sensor's left band

    log = tmp_path / "human_pose.log"
    proc = start_node_process(
        "human_pose_node", *REMAP, params_file=REPO_ROOT / "config" / "human_pose.yaml", log_path=log,
        params={"color_topic": f"{PREFIX}/color", "depth_topic": f"{PREFIX}/depth", "info_topic": f"{PREFIX}/info",
                "max_missed_frames": 2, "status_period_s": 1.0})
    skeletons: list[HumanSkeletonArray] = []
    markers: list[MarkerArray] = []
    overlays: list[Image] = []
    try:
        with ros_context() as context:
            import rclpy

            pub_node = rclpy.create_node("fake_camera", context=context)
            sub_node = rclpy.create_node("skeleton_listener", context=context)
            cam = FakeCamera(pub_node, rgb, depth_m, camera)
            sub_node.create_subscription(HumanSkeletonArray, f"{PREFIX}/out/skeletons", skeletons.append, result_qos())
            sub_node.create_subscription(MarkerArray, f"{PREFIX}/out/markers", markers.append, result_qos())
            sub_node.create_subscription(Image, f"{PREFIX}/out/debug_image", overlays.append, camera_publisher_qos(depth=1))
            with SpinThread(context, pub_node, sub_node):
                assert wait_for(lambda: cam.color.get_subscription_count() > 0
                                and cam.depth.get_subscription_count() > 0, 30.0), "node never subscribed"
                # 1) bad input first: no camera_info yet, then a mismatched depth, then a wrong encoding
                # (person-free frames here: DDS may deliver one of them after the camera_info below)
                blank = np.full_like(rgb, 127)
                for _ in range(3):
                    cam.publish(rgb=blank, info=False)
                    time.sleep(0.1)
                assert wait_for(lambda: "no camera_info" in log.read_text(), 10.0)
                for _ in range(3):
                    cam.publish(depth_m=np.full((height // 2, width // 2), 2.0, np.float32))
                    time.sleep(0.1)
                for _ in range(3):
                    cam.publish(color_encoding="mono16")
                    time.sleep(0.1)
                assert proc.poll() is None, "node died on bad input"
                assert not any(s.skeletons for s in skeletons)

                # 2) good frames until a skeleton arrives
                def good_frame() -> bool:
                    cam.publish()
                    return wait_for(lambda: any(s.skeletons for s in skeletons) and overlays, 0.1)
                assert wait_for(good_frame, 30.0, period_s=0.0), "no skeleton from the node"
                for _ in range(3):
                    cam.publish()
                    time.sleep(0.1)
                assert wait_for(lambda: any(m.markers for m in markers), 5.0)

                # 3) the person leaves: markers deleted after max_missed_frames
                def deleted() -> bool:
                    cam.publish(rgb=blank)
                    return wait_for(lambda: any(mk.action == Marker.DELETE for m in markers for mk in m.markers), 0.1)
                assert wait_for(deleted, 20.0, period_s=0.0), "markers were not deleted"
                time.sleep(1.5)  # let one status line with the drop counts be written
    finally:
        rc = stop_process(proc)

    text = log.read_text()
    assert rc == 0, text[-2000:]
    # every bad-input kind was logged and counted, and the node went on working
    assert "no camera_info" in text and "depth size mismatch" in text and "ImageConversionError" in text
    assert "drops:" in text
    assert "from colour stamp p50/p95 ms: paired" in text  # where the latency goes, per stage

    arr = next(s for s in skeletons if s.skeletons)
    assert arr.header.frame_id == FRAME
    assert (arr.header.stamp.sec, arr.header.stamp.nanosec) in cam.stamps
    person = arr.skeletons[0]
    assert person.convention == "blazepose33" and person.is_operator and 0.3 < person.score <= 1.0
    assert [k.name for k in person.keypoints] == list(BLAZEPOSE33_NAMES)
    depth_kps = [k for k in person.keypoints if k.source == HumanKeypoint.SOURCE_DEPTH]
    assert len(depth_kps) >= 10
    assert all(abs(k.position.z - 2.0) < 1e-3 for k in depth_kps)
    # depth keypoints lie on the camera rays of their pixels
    for k in depth_kps:
        uv = camera.project(np.array([[k.position.x, k.position.y, k.position.z]]))[0]
        assert np.allclose(uv, [k.u, k.v], atol=0.05)

    mk = next(m for m in markers if m.markers).markers
    types = {m.type for m in mk}
    assert {Marker.LINE_LIST, Marker.SPHERE_LIST} <= types
    bones = next(m for m in mk if m.type == Marker.LINE_LIST)
    assert bones.header.frame_id == FRAME and len(bones.points) >= 20 and len(bones.points) % 2 == 0
    deleted_ids = {m.id for a in markers for m in a.markers if m.action == Marker.DELETE}
    assert person.track_id in deleted_ids

    ov = overlays[0]
    assert (ov.width, ov.height, ov.encoding) == (width, height, "rgb8")
    assert ov.header.frame_id == FRAME
    overlay = np.frombuffer(ov.data, np.uint8).reshape(height, width, 3)
    assert np.any(overlay != rgb)  # something was drawn


def test_node_without_depth_publishes_coco17_model_skeleton(tmp_path):
    path = shared_data_path("coco_person_dev", "images", "000000000785.jpg")
    rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
    camera = PinholeCamera.from_fov(rgb.shape[1], rgb.shape[0], 60.0)
    log = tmp_path / "human_pose.log"
    proc = start_node_process(
        "human_pose_node", *REMAP, params_file=REPO_ROOT / "config" / "human_pose.yaml", log_path=log,
        params={"color_topic": f"{PREFIX}/color", "info_topic": f"{PREFIX}/info", "use_depth": False,
                "convention": "coco17"})
    skeletons: list[HumanSkeletonArray] = []
    try:
        with ros_context() as context:
            import rclpy

            pub_node = rclpy.create_node("fake_colour_camera", context=context)
            sub_node = rclpy.create_node("skeleton_listener", context=context)
            cam = FakeCamera(pub_node, rgb, np.zeros(rgb.shape[:2], np.float32), camera)
            sub_node.create_subscription(HumanSkeletonArray, f"{PREFIX}/out/skeletons", skeletons.append, result_qos())
            with SpinThread(context, pub_node, sub_node):
                assert wait_for(lambda: cam.color.get_subscription_count() > 0, 30.0), "node never subscribed"
                def frame() -> bool:
                    cam.publish()
                    return wait_for(lambda: any(s.skeletons for s in skeletons), 0.1)
                assert wait_for(frame, 30.0, period_s=0.0), "no skeleton from the node"
    finally:
        rc = stop_process(proc)
    assert rc == 0, log.read_text()[-2000:]
    person = next(s for s in skeletons if s.skeletons).skeletons[0]
    assert person.convention == "coco17" and len(person.keypoints) == 17
    assert all(k.source == HumanKeypoint.SOURCE_MODEL for k in person.keypoints)  # placed by PnP
    z = np.array([k.position.z for k in person.keypoints])
    assert np.all(np.isfinite(z)) and 0.5 < np.median(z) < 10.0


def test_rate_limiter_caps_the_average_rate_but_not_jittery_frames():
    from pose_ros.nodes.human_pose_node import RateLimiter

    # a camera at the cap with +-10 ms jitter: no frame is held back
    rng = np.random.default_rng(0)
    lim = RateLimiter(30.0)
    waits = []
    for k in range(3000):
        t = k / 30.0 + rng.uniform(-0.01, 0.01)
        waits.append(lim.wait_s(t))
        lim.take(t + waits[-1])
    assert max(waits) == 0.0
    # a 1 kHz camera: at most rate * duration + burst frames start
    lim = RateLimiter(30.0)
    t, started = 0.0, 0
    while t < 10.0:
        t += lim.wait_s(t)
        lim.take(t)
        started += 1
        t += 0.001
    assert 295 <= started <= 30 * 10 + 2 + 1
    with pytest.raises(ValueError):
        RateLimiter(0.0)


def test_node_publishes_the_operators_hands(tmp_path):
    """hands:=true on a real photo with both hands in view: HumanSkeleton.hands carries them, 21
    named keypoints each, 3D from the depth image like the body; hand bones in the markers."""
    from pose_ros.human.conventions import HAND21, HAND21_NAMES

    path = shared_data_path("coco_person_dev", "train2017", "000000463557.jpg")
    rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
    height, width = rgb.shape[:2]
    camera = PinholeCamera.from_fov(width, height, 60.0)
    depth_m = np.full((height, width), 1.5, np.float32)
    log = tmp_path / "human_pose.log"
    proc = start_node_process(
        "human_pose_node", *REMAP, params_file=REPO_ROOT / "config" / "human_pose.yaml", log_path=log,
        params={"color_topic": f"{PREFIX}/color", "depth_topic": f"{PREFIX}/depth", "info_topic": f"{PREFIX}/info",
                "hands": True})
    skeletons: list[HumanSkeletonArray] = []
    try:
        with ros_context() as context:
            import rclpy

            pub_node = rclpy.create_node("fake_camera_hands", context=context)
            sub_node = rclpy.create_node("hands_listener", context=context)
            cam = FakeCamera(pub_node, rgb, depth_m, camera)
            sub_node.create_subscription(HumanSkeletonArray, f"{PREFIX}/out/skeletons", skeletons.append, result_qos())
            with SpinThread(context, pub_node, sub_node):
                assert wait_for(lambda: cam.color.get_subscription_count() > 0
                                and cam.depth.get_subscription_count() > 0, 30.0), "node never subscribed"

                def two_hands() -> bool:
                    cam.publish()
                    return wait_for(lambda: any(len(s.hands) == 2 for a in skeletons for s in a.skeletons), 0.1)
                assert wait_for(two_hands, 30.0, period_s=0.0), "no hands from the node"
    finally:
        rc = stop_process(proc)
    text = log.read_text()
    assert rc == 0, text[-2000:]
    assert "hands: on" in text
    person = next(s for a in skeletons for s in a.skeletons if len(s.hands) == 2)
    assert person.is_operator and [h.side for h in person.hands] == ["left", "right"]
    for hand in person.hands:
        assert hand.convention == HAND21 and 0.5 <= hand.score <= 1.0 and hand.handedness_score > 0.5
        assert [k.name for k in hand.keypoints] == list(HAND21_NAMES)
        on_depth = [k for k in hand.keypoints if k.source == HumanKeypoint.SOURCE_DEPTH]
        assert len(on_depth) >= 15
        for k in on_depth:   # on the flat depth, on the ray of its pixel
            assert abs(k.position.z - 1.5) < 0.02
            uv = camera.project(np.array([[k.position.x, k.position.y, k.position.z]]))[0]
            assert np.allclose(uv, [k.u, k.v], atol=0.5)
