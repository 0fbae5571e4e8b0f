"""Camera nodes over real DDS: synthetic and dataset cameras, received by a separate node."""
from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from conftest import shared_data_path
from pose_ros.msg import ObjectPoseArray
from pose_ros.nodes.image_conversions import (camera_info_to_camera, image_to_depth_m, image_to_rgb,
                                              stamp_to_ns)
from pose_ros.nodes.qos import result_qos, sensor_qos
from pose_ros.nodes.ros_conversions import pose_to_T
from pose_ros.nodes.topics import COLOR_TOPIC, DEPTH_TOPIC, GROUND_TRUTH_TOPIC, INFO_TOPIC
from ros_helpers import SpinThread, ros_context, start_node_process, stop_process, wait_for

pytestmark = pytest.mark.ros


class CameraListener:
    """Collects the camera topics, keyed by stamp, with arrival times."""

    def __init__(self, node: Node) -> None:
        self.by_stamp: dict[int, dict] = defaultdict(dict)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        qos = sensor_qos()
        for key, topic, typ in (("color", COLOR_TOPIC, Image), ("depth", DEPTH_TOPIC, Image),
                                ("info", INFO_TOPIC, CameraInfo)):
            node.create_subscription(typ, topic, lambda m, k=key: self._store(k, m), qos)
        node.create_subscription(ObjectPoseArray, GROUND_TRUTH_TOPIC, lambda m: self._store("gt", m), result_qos())

    def _store(self, key: str, msg) -> None:
        self.arrivals[key].append(time.monotonic())
        self.by_stamp[stamp_to_ns(msg.header.stamp)][key] = msg

    def complete(self) -> list[dict]:
        return [v for _, v in sorted(self.by_stamp.items()) if len(v) == 4]


def run_camera_until(module: str, name: str, params: dict, n_frames: int, log_path) -> tuple[CameraListener, int]:
    """Run a camera node process until `n_frames` complete frames arrived; (listener, exit code)."""
    proc = start_node_process(module, name=name, params=params, log_path=log_path)
    try:
        with ros_context() as context:
            import rclpy
            node = rclpy.create_node(f"{name}_listener", context=context)
            listener = CameraListener(node)
            with SpinThread(context, node):
                assert wait_for(lambda: len(listener.complete()) >= n_frames, 60.0), log_path.read_text()
    finally:
        code = stop_process(proc)
    return listener, code


def test_synthetic_camera_publishes_renderer_output_exactly_at_the_set_rate(tmp_path):
    from pose_ros.core.object_model import load_object_dir
    from pose_ros.resources import meshes_dir
    from pose_ros.synth.stream import SyntheticSceneStream

    rate_hz = 4.0
    listener, code = run_camera_until(
        "synthetic_camera_node", "synthetic_camera",
        {"rate_hz": rate_hz, "noise": False, "time_scale": 0.0, "seed": 3, "depth_encoding": "32FC1",
         "width": 320, "height": 240}, 12, tmp_path / "camera.log")
    assert code in (0, -2)
    frames = listener.complete()
    # The camera's own schedule: the typical step between the stamps it takes at capture. Arrival times
    # in this process also carry the listener thread's delays (one late delivery at the start once read
    # 6.7 Hz for 4 Hz), and a frame lost in transport would double one step, not change the typical one.
    stamps_s = np.array(sorted(ns / 1e9 for ns, v in listener.by_stamp.items() if "color" in v))
    rate = 1.0 / float(np.median(np.diff(stamps_s)))
    assert abs(rate - rate_hz) / rate_hz < 0.25, f"measured {rate:.2f} Hz for a set rate of {rate_hz} Hz"

    camera = camera_info_to_camera(frames[-1]["info"])
    assert (camera.width, camera.height) == (320, 240)
    render, depth_m, truth = SyntheticSceneStream(load_object_dir(meshes_dir()), camera, seed=3, noise=False).frame(0.0)
    for f in frames[-3:]:
        assert f["color"].header.frame_id == "camera_color_optical_frame"
        np.testing.assert_array_equal(image_to_rgb(f["color"]), render.rgb)
        np.testing.assert_array_equal(image_to_depth_m(f["depth"]), np.where(depth_m > 0, depth_m, 0).astype(np.float32))
        got = {o.class_name: pose_to_T(o.pose.pose) for o in f["gt"].objects}
        assert sorted(got) == sorted(g.name for g in truth)
        for g in truth:
            np.testing.assert_allclose(got[g.name], g.T_cam_obj, atol=1e-12)


def test_dataset_camera_replays_ycbv_frames_exactly(tmp_path):
    from pose_ros.eval.bop_io import BopSceneReader

    scene = shared_data_path("ycbv_real", "data", "0000")
    listener, _ = run_camera_until("dataset_camera_node", "dataset_camera",
                                   {"dataset_path": str(scene), "rate_hz": 4.0, "depth_encoding": "32FC1"},
                                   6, tmp_path / "dataset.log")
    reader = BopSceneReader(scene, load_masks=False)
    expected = [reader.frame(im_id) for im_id in reader.im_ids]
    matched = 0
    for f in listener.complete():
        depth = image_to_depth_m(f["depth"])
        frame = next((fr for fr in expected if np.array_equal(fr.depth_m, depth)), None)
        assert frame is not None, "received depth matches no recorded frame"
        np.testing.assert_array_equal(image_to_rgb(f["color"]), frame.rgb)
        np.testing.assert_allclose(camera_info_to_camera(f["info"]).K, frame.camera.K)
        got = [(o.class_id, pose_to_T(o.pose.pose)) for o in f["gt"].objects]
        assert [g.obj_id for g in frame.gt] == [c for c, _ in got]
        for g, (_, T) in zip(frame.gt, got):
            np.testing.assert_allclose(T, g.T_cam_obj, atol=1e-9)
        matched += 1
    assert matched >= 6


def test_dataset_camera_without_a_dataset_fails_with_a_clear_message(tmp_path):
    log = tmp_path / "bad.log"
    proc = start_node_process("dataset_camera_node", name="dataset_camera", params={"dataset_path": str(tmp_path / "nope")},
                              log_path=log)
    assert proc.wait(timeout=60) == 2
    assert "does not exist" in log.read_text()
