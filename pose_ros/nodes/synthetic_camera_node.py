"""Synthetic RGB-D camera: a moving tabletop scene of known objects, as a RealSense would publish it.

Publishes colour, aligned depth and camera_info on the realsense-ros topic names at a set rate,
plus the ground-truth object poses, so the whole pipeline runs and can be scored with no
hardware. Rendering is the library's Open3D ray caster (pose_ros.synth).
"""
from __future__ import annotations

import sys
import time

from rclpy.node import Node

from pose_ros.nodes.camera_publisher import CAMERA_OUTPUT_PARAMS, GroundTruthInstance, RgbdPublisher
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.runner import run_node

PARAMETERS = [
    ParamSpec("rate_hz", 15.0, "frames per second to publish", min=0.1, max=120.0),
    ParamSpec("width", 640, "image width in pixels", min=32, max=4096),
    ParamSpec("height", 480, "image height in pixels", min=32, max=4096),
    ParamSpec("fov_x_deg", 69.0, "horizontal field of view (RealSense D435 colour: ~69 deg)", min=10.0, max=150.0),
    ParamSpec("meshes_dir", "", "object meshes folder (meshes/<name>/object.yaml); empty = the demo objects"),
    ParamSpec("objects", [], "names of the objects to place in the scene; empty = all objects in meshes_dir"),
    ParamSpec("seed", 0, "scene seed: same seed, same scene and motion", min=0, max=2**31 - 1),
    ParamSpec("noise", True, "apply the depth sensor noise model (structured-light-like)"),
    ParamSpec("time_scale", 1.0, "scene seconds per wall-clock second (0 = frozen scene)", min=0.0, max=100.0),
] + CAMERA_OUTPUT_PARAMS


class SyntheticCameraNode(Node):
    def __init__(self) -> None:
        super().__init__("synthetic_camera")
        self.p = declare_parameters(self, PARAMETERS)
        from pose_ros.core.camera import PinholeCamera
        from pose_ros.core.object_model import load_object_dir
        from pose_ros.resources import meshes_dir, resolve
        from pose_ros.synth.stream import SyntheticSceneStream

        mesh_root = resolve(self.p["meshes_dir"]) if self.p["meshes_dir"] else meshes_dir()
        self.models = load_object_dir(mesh_root)
        if self.p["objects"]:
            names = {m.name for m in self.models}
            unknown = sorted(set(self.p["objects"]) - names)
            if unknown:
                raise ValueError(f"objects {unknown} are not in {mesh_root} (it has {sorted(names)})")
            self.models = [m for m in self.models if m.name in set(self.p["objects"])]
        self.camera = PinholeCamera.from_fov(int(self.p["width"]), int(self.p["height"]), float(self.p["fov_x_deg"]))
        self.stream = SyntheticSceneStream(self.models, self.camera, seed=int(self.p["seed"]), noise=bool(self.p["noise"]))
        self.out = RgbdPublisher(self, self.p)
        self._t0 = time.monotonic()
        self._last_report = self._t0
        self._render_ms: list[float] = []
        self.create_timer(1.0 / float(self.p["rate_hz"]), self._tick)
        self.get_logger().info(
            f"synthetic camera {self.camera.width}x{self.camera.height} @ {self.p['rate_hz']} Hz, "
            f"objects: {', '.join(m.name for m in self.models)} (from {mesh_root}) -> {self.p['color_topic']}")

    def scene_time(self) -> float:
        return (time.monotonic() - self._t0) * float(self.p["time_scale"])

    def _tick(self) -> None:
        t_start = time.perf_counter()
        stamp = self.get_clock().now().to_msg()
        render, depth_m, gt = self.stream.frame(self.scene_time())
        self._render_ms.append((time.perf_counter() - t_start) * 1e3)
        truth = [GroundTruthInstance(g.name, g.obj_id, g.T_cam_obj, g.visible_fraction) for g in gt]
        if not self.context.ok():  # shutting down while rendering
            return
        self.out.publish(stamp, render.rgb, depth_m, self.camera, truth)
        now = time.monotonic()
        if now - self._last_report > 10.0:
            ms = sorted(self._render_ms)
            self.get_logger().info(f"published {self.out.published} frames; render p50 {ms[len(ms) // 2]:.1f} ms")
            self._render_ms.clear()
            self._last_report = now


def main(args: list[str] | None = None) -> int:
    return run_node(SyntheticCameraNode, args)


if __name__ == "__main__":
    sys.exit(main())
