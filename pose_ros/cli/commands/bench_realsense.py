"""`pose-ros bench-realsense`: time depth registration and the RealSense capture path (no hardware).

Registration runs on the real RealSense frames in ../shared/data/realsense_m3t when present
(848x480 depth -> 960x540 colour), else on a synthetic plane of the same sizes. The capture
path (librealsense syncer + optional rs.align + conversion to ROS messages) is driven by a
software device at the requested resolutions, which measures the host-side cost per frame.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench-realsense", help="time depth registration and the RealSense capture path",
                              description=__doc__)
    p.add_argument("--frames", type=int, default=60, help="frames per measurement (default 60)")
    p.add_argument("--color", default="1280x720", help="colour WxH for the capture benchmark")
    p.add_argument("--depth", default="848x480", help="depth WxH for the capture benchmark")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3].parent / "shared" / "data"),
                   help="shared data folder (for realsense_m3t)")
    p.set_defaults(func=_run)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"size must look like 848x480; got {text!r}") from exc
    return w, h


def _stats(ms: list[float]) -> str:
    import numpy as np

    a = np.asarray(ms)
    return f"p50 {np.percentile(a, 50):.1f} ms, p95 {np.percentile(a, 95):.1f} ms ({1000 / np.median(a):.0f} Hz)"


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from pose_ros.core.camera import PinholeCamera
    from pose_ros.sensors.registration import depth_units_to_m, register_depth

    if args.frames < 1:
        print("--frames must be >= 1")
        return 2
    try:
        cw, ch = _size(args.color)
        dw, dh = _size(args.depth)
    except ValueError as exc:
        print(exc)
        return 2

    # ---- registration
    m3t = Path(args.data) / "realsense_m3t" / "_sequence"
    if (m3t / "depth_camera_image_200.png").is_file():
        import cv2
        import yaml

        def cam(name):
            y = yaml.safe_load((m3t / name).read_text().replace("%YAML:1.2", "").replace("!!opencv-matrix", ""))
            i = y["intrinsics"]
            K = np.array([[i["f_u"], 0, i["pp_x"]], [0, i["f_v"], i["pp_y"]], [0, 0, 1.0]])
            pose = np.asarray(y["camera2world_pose"]["data"], float).reshape(4, 4)
            return PinholeCamera(K, i["width"], i["height"]), pose, y

        color_cam, T_w_c, _ = cam("color_camera.yaml")
        depth_cam, T_w_d, yd = cam("depth_camera.yaml")
        T = np.linalg.inv(T_w_c) @ T_w_d
        depth_m = depth_units_to_m(cv2.imread(str(m3t / "depth_camera_image_200.png"), cv2.IMREAD_UNCHANGED),
                                   float(yd["depth_scale"]))
        source = "real realsense_m3t frame 200"
    else:
        depth_cam = PinholeCamera.from_fov(848, 480, 87.0)
        color_cam = PinholeCamera.from_fov(960, 540, 69.0)
        T = np.eye(4)
        T[0, 3] = 0.015
        depth_m = np.full((480, 848), 0.8, np.float32)
        source = "synthetic plane (realsense_m3t not found)"
    ms = []
    for _ in tqdm(range(args.frames), desc="register_depth"):
        t0 = time.perf_counter()
        register_depth(depth_m, depth_cam, color_cam, T)
        ms.append((time.perf_counter() - t0) * 1e3)
    print(f"register_depth {depth_cam.width}x{depth_cam.height} -> {color_cam.width}x{color_cam.height} "
          f"({source}, {np.mean(depth_m > 0):.0%} valid): {_stats(ms)}")

    # ---- capture path through librealsense
    try:
        import pyrealsense2  # noqa: F401
    except ImportError:
        print("pyrealsense2 not installed: capture benchmark skipped")
        return 0
    from pose_ros.sensors.realsense_device import CaptureSettings, RealSenseCapture, StreamRequest
    from pose_ros.sensors.software_device import SoftwareRealSense

    cc = PinholeCamera.from_fov(cw, ch, 69.0)
    dc = PinholeCamera.from_fov(dw, dh, 87.0)
    T = np.eye(4)
    T[0, 3] = 0.015
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (ch, cw, 3), dtype=np.uint8)
    depth = rng.integers(400, 3000, (dh, dw), dtype=np.uint16)
    try:
        from pose_ros.nodes.image_conversions import camera_to_camera_info, numpy_to_image
        from std_msgs.msg import Header
    except ImportError:
        numpy_to_image = None
    for align in (False, True):
        sw = SoftwareRealSense(cc, dc, T)
        settings = CaptureSettings(color=StreamRequest(cw, ch, 30), depth=StreamRequest(dw, dh, 30),
                                   align_depth=align, frame_timeout_s=1.0)
        ms, conv_ms = [], []
        with RealSenseCapture(sw.device, settings) as cap:
            sw.push(rgb, depth)
            cap.read(0.2)  # the syncer learns the streams on the first pair
            for _ in tqdm(range(args.frames), desc=f"capture align={align}"):
                t0 = time.perf_counter()
                sw.push(rgb, depth)
                f = cap.read(1.0)
                t1 = time.perf_counter()
                if f is None:
                    continue
                ms.append((t1 - t0) * 1e3)
                if numpy_to_image is not None:
                    h = Header(frame_id="camera_color_optical_frame")
                    numpy_to_image(f.color_rgb, "rgb8", h)
                    numpy_to_image(f.depth_mm_u16, "16UC1", h)
                    camera_to_camera_info(f.color_camera, h)
                    conv_ms.append((time.perf_counter() - t1) * 1e3)
        if not ms:
            print(f"capture align={align}: no frames came through")
            continue
        line = f"capture colour {cw}x{ch} + depth {dw}x{dh}, align={align}: {_stats(ms)}"
        if conv_ms:
            line += f"; to ROS messages {_stats(conv_ms)}"
        print(line)
    return 0
