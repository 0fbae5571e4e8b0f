"""Synthetic RGB-D camera: a moving tabletop scene of known objects, as a RealSense would publish it.

Publishes colour, aligned depth and camera_info on the realsense-ros topic names at a set rate,
plus the ground-truth object poses, so the whole pipeline runs and can be scored with no
hardware. Rendering is the library's Open3D ray caster (pose_ros.synth). Static TF of the camera frames
(camera_link -> optical frames, nodes/camera_publisher.py); /diagnostics: frame rate, render time.
`rate_hz` and `time_scale` are applied live (`ros2 param set`); the other parameters are read at start-up.
"""
from __future__ import annotations

import sys
import time

from rclpy.node import Node

from pose_ros.nodes.camera_publisher import CAMERA_OUTPUT_PARAMS, GroundTruthInstance, RgbdPublisher
from pose_ros.nodes.diagnostics import DiagnosticReport, NodeDiagnostics, RateMeter
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.runner import run_node

PARAMETERS = [
    ParamSpec("rate_hz", 15.0, "frames per second to publish", min=0.1, max=120.0, live=True),
    ParamSpec("width", 640, "image width in pixels", min=32, max=4096),
    ParamSpec("height", 480, "image height in pixels", min=32, max=4096),
    ParamSpec("fov_x_deg", 69.0, "horizontal field of view (RealSense D435 colour: ~69 deg)", min=10.0, max=150.0),
    ParamSpec("meshes_dir", "", "object meshes folder (meshes/<name>/object.yaml); empty = the demo objects"),
    ParamSpec("objects", [], "names of the objects to place in the scene; empty = all objects in meshes_dir"),
    ParamSpec("seed", 0, "scene seed: same seed, same scene and motion", min=0, max=2**31 - 1),
    ParamSpec("noise", True, "apply the depth sensor noise model (structured-light-like)"),
    ParamSpec("time_scale", 1.0, "scene seconds per wall-clock second (0 = frozen scene; a change continues "
              "from the current scene time)", min=0.0, max=100.0, live=True),
] + CAMERA_OUTPUT_PARAMS


class SyntheticCameraNode(Node):
    def __init__(self) -> None:
        super().__init__("synthetic_camera")
        self.p = declare_parameters(self, PARAMETERS, apply=self._apply_parameter)
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
        self._scene_t0 = 0.0             # scene time at _t0, and its speed: both moved when time_scale changes
        self._time_scale = float(self.p["time_scale"])
        self._last_report = self._t0
        self._render_ms: list[float] = []
        self._rate = RateMeter()
        self._last_render_ms = float("nan")
        self._timer = self.create_timer(1.0 / float(self.p["rate_hz"]), self._tick)
        self.diagnostics = NodeDiagnostics(self, self._diagnostics)
        self.get_logger().info(
            f"synthetic camera {self.camera.width}x{self.camera.height} @ {self.p['rate_hz']} Hz, "
            f"objects: {', '.join(m.name for m in self.models)} (from {mesh_root}) -> {self.p['color_topic']}; "
            f"{self.out.tf.describe()}")

    def scene_time(self) -> float:
        return self._scene_t0 + (time.monotonic() - self._t0) * self._time_scale

    def _apply_parameter(self, name: str, value) -> None:
        if name == "rate_hz":
            self._timer.timer_period_ns = int(1e9 / float(value))
            self._timer.reset()
        elif name == "time_scale":   # the scene goes on from where it is, at the new speed
            now = time.monotonic()
            self._scene_t0 = self._scene_t0 + (now - self._t0) * self._time_scale
            self._t0, self._time_scale = now, float(value)

    def _diagnostics(self) -> DiagnosticReport:
        rate = self._rate.rate_hz()
        return DiagnosticReport(
            f"{rate:.1f} Hz (set {float(self.p['rate_hz']):g} Hz), {self.out.published} frames published",
            {"frames_published": self.out.published, "rate_hz": rate, "rate_set_hz": float(self.p["rate_hz"]),
             "render_ms_last": self._last_render_ms, "scene_time_s": self.scene_time(),
             "time_scale": float(self.p["time_scale"]), "objects": len(self.models)})

    def _tick(self) -> None:
        t_start = time.perf_counter()
        stamp = self.get_clock().now().to_msg()
        render, depth_m, gt = self.stream.frame(self.scene_time())
        self._last_render_ms = (time.perf_counter() - t_start) * 1e3
        self._render_ms.append(self._last_render_ms)
        truth = [GroundTruthInstance(g.name, g.obj_id, g.T_cam_obj, g.visible_fraction) for g in gt]
        if not self.context.ok():  # shutting down while rendering
            return
        self.out.publish(stamp, render.rgb, depth_m, self.camera, truth)
        self._rate.tick()
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
