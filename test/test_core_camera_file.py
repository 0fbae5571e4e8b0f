"""load_camera_file: the shipped ROS camera_info YAML, a BOP camera.json, a CameraInfo dump, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO_ROOT
from pose_ros.core.camera import PinholeCamera
from pose_ros.core.camera_file import CameraFileError, load_camera_file


def test_shipped_ycbv_xtion_yaml():
    cam = load_camera_file(REPO_ROOT / "config" / "cameras" / "ycbv_xtion.yaml")
    assert isinstance(cam, PinholeCamera)
    assert (cam.width, cam.height) == (640, 480)
    assert cam.fx == pytest.approx(1066.778)
    assert cam.fy == pytest.approx(1067.487)
    assert cam.cx == pytest.approx(312.9869)
    assert cam.cy == pytest.approx(241.3109)
    assert cam.K.dtype == np.float64 and cam.K.shape == (3, 3)
    assert cam.K[2, 2] == 1.0 and cam.K[0, 1] == 0.0
    assert cam.distortion_model == "plumb_bob"
    assert not cam.has_distortion


def test_bop_camera_json(tmp_path):
    p = tmp_path / "camera.json"
    p.write_text(json.dumps({"fx": 572.4114, "fy": 573.57043, "cx": 325.2611, "cy": 242.04899,
                             "width": 640, "height": 480, "depth_scale": 1.0}))
    cam = load_camera_file(p)
    assert (cam.width, cam.height) == (640, 480)
    np.testing.assert_allclose(cam.K, [[572.4114, 0, 325.2611], [0, 573.57043, 242.04899], [0, 0, 1]])
    assert not cam.has_distortion


def test_camera_info_dump_yaml(tmp_path):
    p = tmp_path / "camera_info.yaml"
    p.write_text(
        "header:\n  frame_id: camera_color_optical_frame\n"
        "height: 720\nwidth: 1280\n"
        "distortion_model: plumb_bob\n"
        "d: [0.1, -0.05, 0.001, 0.002, 0.0]\n"
        "k: [910.5, 0.0, 640.2, 0.0, 909.8, 360.7, 0.0, 0.0, 1.0]\n"
        "r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]\n"
        "p: [910.5, 0.0, 640.2, 0.0, 0.0, 909.8, 360.7, 0.0, 0.0, 0.0, 1.0, 0.0]\n")
    cam = load_camera_file(p)
    assert (cam.width, cam.height) == (1280, 720)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx((910.5, 909.8, 640.2, 360.7))
    np.testing.assert_allclose(cam.dist_coeffs[:5], [0.1, -0.05, 0.001, 0.002, 0.0])
    assert cam.has_distortion
    assert cam.distortion_model == "plumb_bob"


def test_missing_file(tmp_path):
    missing = tmp_path / "no_camera.yaml"
    with pytest.raises(CameraFileError, match="not found") as exc:
        load_camera_file(missing)
    assert str(missing) in str(exc.value)


def test_yaml_without_intrinsics(tmp_path):
    p = tmp_path / "cam.yaml"
    p.write_text("camera_name: mystery\nimage_width: 640\nimage_height: 480\n")
    with pytest.raises(CameraFileError, match="neither a ROS camera_info YAML") as exc:
        load_camera_file(p)
    assert str(p) in str(exc.value)


def test_missing_width(tmp_path):
    p = tmp_path / "cam.yaml"
    p.write_text("image_height: 480\ncamera_matrix:\n  rows: 3\n  cols: 3\n"
                 "  data: [600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0]\n")
    with pytest.raises(CameraFileError, match="width/height missing") as exc:
        load_camera_file(p)
    assert str(p) in str(exc.value)


def test_bop_json_missing_width(tmp_path):
    p = tmp_path / "camera.json"
    p.write_text(json.dumps({"fx": 600.0, "fy": 600.0, "cx": 320.0, "cy": 240.0, "height": 480}))
    with pytest.raises(CameraFileError, match="width/height missing"):
        load_camera_file(p)


def test_short_camera_matrix(tmp_path):
    p = tmp_path / "cam.yaml"
    p.write_text("image_width: 640\nimage_height: 480\ncamera_matrix:\n  data: [600.0, 0.0, 320.0]\n")
    with pytest.raises(CameraFileError, match="9 finite numbers"):
        load_camera_file(p)


def test_unparseable_and_non_mapping(tmp_path):
    bad = tmp_path / "camera.json"
    bad.write_text("{not json")
    with pytest.raises(CameraFileError, match="cannot parse"):
        load_camera_file(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(CameraFileError, match="mapping"):
        load_camera_file(lst)


def test_invalid_focal_length_is_a_camera_file_error(tmp_path):
    p = tmp_path / "camera.json"
    p.write_text(json.dumps({"fx": -600.0, "fy": 600.0, "cx": 320.0, "cy": 240.0, "width": 640, "height": 480}))
    with pytest.raises(CameraFileError) as exc:
        load_camera_file(p)
    assert str(p) in str(exc.value)
