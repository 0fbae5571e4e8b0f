"""ROS plumbing without a running graph: Image/CameraInfo conversions and the synchroniser."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from pose_ros.core.camera import PinholeCamera
from pose_ros.nodes.image_conversions import (CameraInfoError, ImageConversionError, camera_info_to_camera,
                                              camera_to_camera_info, depth_m_to_image, image_to_depth_m,
                                              image_to_numpy, image_to_rgb, numpy_to_image, ns_to_stamp, stamp_to_ns)
from pose_ros.nodes.sync import ApproximateTimeSync

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("encoding,dtype,shape", [
    ("rgb8", np.uint8, (7, 5, 3)), ("bgr8", np.uint8, (7, 5, 3)), ("mono8", np.uint8, (7, 5)),
    ("16UC1", np.uint16, (7, 5)), ("32FC1", np.float32, (7, 5)), ("bgra8", np.uint8, (7, 5, 4)),
])
def test_image_round_trip_is_exact(encoding, dtype, shape):
    arr = (RNG.random(shape) * 1000).astype(dtype)
    msg = numpy_to_image(arr, encoding)
    assert msg.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_colour_conversions_reorder_channels():
    rgb = (RNG.random((4, 6, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(rgb[:, :, ::-1].copy(), "bgr8")), rgb)
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(rgb, "rgb8")), rgb)
    mono = rgb[:, :, 0].copy()
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(mono, "mono8")), np.stack([mono] * 3, axis=2))


def test_row_padding_is_honoured():
    arr = (RNG.random((3, 4, 3)) * 255).astype(np.uint8)
    msg = numpy_to_image(arr, "rgb8")
    padded = np.zeros((3, 16), np.uint8)
    padded[:, :12] = arr.reshape(3, 12)
    msg.step = 16
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_big_endian_depth_is_swapped():
    mm = np.array([[1000, 2500]], dtype=np.uint16)
    msg = numpy_to_image(mm, "16UC1")
    msg.is_bigendian = 1
    msg.data = mm.byteswap().tobytes()
    np.testing.assert_allclose(image_to_depth_m(msg), [[1.0, 2.5]])


def test_depth_units_and_invalid_pixels():
    depth_m = np.array([[0.5, 0.0, np.nan, 2.0]], dtype=np.float32)
    mm_msg = depth_m_to_image(depth_m, "16UC1")
    np.testing.assert_array_equal(image_to_numpy(mm_msg), [[500, 0, 0, 2000]])
    np.testing.assert_allclose(image_to_depth_m(mm_msg), [[0.5, 0, 0, 2.0]])
    f_msg = numpy_to_image(np.array([[0.5, np.nan, -1.0, np.inf]], np.float32), "32FC1")
    np.testing.assert_array_equal(image_to_depth_m(f_msg), [[0.5, 0, 0, 0]])


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding 'yuv422'"),
    (lambda m: setattr(m, "data", bytes(len(m.data) - 3)), "expected step*height"),
    (lambda m: setattr(m, "step", 5), "smaller than width*channels*bytes"),
    (lambda m: setattr(m, "width", 0), "zero size"),
])
def test_bad_images_get_clear_errors(mutate, needle):
    msg = numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    mutate(msg)
    with pytest.raises(ImageConversionError, match=needle.replace("*", r"\*").replace("(", r"\(")):
        image_to_numpy(msg)


def test_depth_decoder_refuses_colour_and_vice_versa():
    with pytest.raises(ImageConversionError, match="16UC1"):
        image_to_depth_m(numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    with pytest.raises(ImageConversionError, match="colour image has encoding '16UC1'"):
        image_to_rgb(numpy_to_image(np.zeros((2, 2), np.uint16), "16UC1"))
    with pytest.raises(ImageConversionError, match="needs dtype"):
        numpy_to_image(np.zeros((2, 2), np.float64), "32FC1")


def test_camera_info_round_trip_with_distortion():
    K = np.array([[615.0, 0, 322.5], [0, 615.5, 241.25], [0, 0, 1]])
    cam = PinholeCamera(K=K, width=640, height=480, dist_coeffs=np.array([0.1, -0.05, 0.001, 0.0005, 0.01]))
    msg = camera_to_camera_info(cam)
    back = camera_info_to_camera(msg)
    np.testing.assert_allclose(back.K, K)
    np.testing.assert_allclose(back.dist_coeffs, cam.dist_coeffs)
    assert (back.width, back.height, back.distortion_model) == (640, 480, "plumb_bob")


def test_camera_info_without_intrinsics_is_refused():
    msg = CameraInfo(width=640, height=480)
    with pytest.raises(CameraInfoError, match="no valid intrinsics"):
        camera_info_to_camera(msg)
    msg.k = [600.0, 0, 320, 0, 600.0, 240, 0, 0, 1]
    msg.width = 0
    with pytest.raises(CameraInfoError, match="zero image size"):
        camera_info_to_camera(msg)
    msg.width = 640
    msg.distortion_model = "fisheye_weird"
    with pytest.raises(CameraInfoError, match="unsupported distortion model"):
        camera_info_to_camera(msg)


def test_stamp_conversion():
    assert stamp_to_ns(ns_to_stamp(1_700_000_000_123_456_789)) == 1_700_000_000_123_456_789


class _Collector:
    def __init__(self):
        self.sets = []

    def __call__(self, *msgs):
        self.sets.append(msgs)


def test_sync_pairs_nearest_within_slop_and_drops_the_rest():
    out = _Collector()
    sync = ApproximateTimeSync(2, slop_ns=10_000_000, callback=out, queue_size=5)
    ms = 1_000_000
    # colour at 0, 33, 66 ms; depth offset by +3 ms, except one depth frame lost at 33 ms.
    sync.add(0, 0, "c0")
    sync.add(1, 3 * ms, "d0")
    sync.add(0, 33 * ms, "c1")
    sync.add(0, 66 * ms, "c2")
    sync.add(1, 69 * ms, "d2")
    assert out.sets == [("c0", "d0"), ("c2", "d2")]
    assert sync.stats.matched_sets == 2
    assert sync.stats.dropped_unmatched == 1  # c1 never had a partner


def test_sync_rejects_out_of_order_and_recovers_from_time_jumps():
    out = _Collector()
    sync = ApproximateTimeSync(2, slop_ns=5, callback=out, queue_size=3, time_jump_reset_ns=1000)
    sync.add(0, 5000, "a")
    sync.add(1, 5001, "b")
    sync.add(0, 4990, "late")       # older than the last matched set: dropped, counted
    assert sync.stats.dropped_out_of_order == 1
    sync.add(0, 10, "restart")    # jumped back by more than the threshold: start over
    sync.add(1, 12, "restart_d")
    assert out.sets[-1] == ("restart", "restart_d")
    assert sync.stats.time_jumps == 1


def test_sync_queue_is_bounded():
    out = _Collector()
    sync = ApproximateTimeSync(3, slop_ns=1, callback=out, queue_size=4)
    for k in range(100):
        sync.add(0, k * 100, k)
    assert out.sets == []
    assert sync.stats.dropped_unmatched == 96
    sync.add(1, 9900, "d")
    sync.add(2, 9900, "i")
    assert out.sets == [(99, "d", "i")]


def test_sync_argument_validation():
    with pytest.raises(ValueError):
        ApproximateTimeSync(0, 1, print)
    with pytest.raises(ValueError):
        ApproximateTimeSync(2, -1, print)
