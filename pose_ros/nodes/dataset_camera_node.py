"""Dataset camera: replays recorded RGB-D frames (BOP format, or the YCB-Video layout) as a camera.

Real recorded data then flows through exactly the topics and code paths of the live camera,
with the ground-truth poses on their own topic for scoring downstream. Static TF of the camera frames
(camera_link -> optical frames, nodes/camera_publisher.py); /diagnostics: rate, position, skipped frames.
`rate_hz` and `loop` are applied live (`ros2 param set`); the other parameters are read at start-up.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rclpy.node import Node

from pose_ros.nodes.camera_publisher import CAMERA_OUTPUT_PARAMS, GroundTruthInstance, RgbdPublisher
from pose_ros.nodes.diagnostics import OK, WARN, DiagnosticReport, NodeDiagnostics, RateMeter
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.runner import run_node

PARAMETERS = [
    ParamSpec("dataset_path", "", "a BOP scene folder, a BOP split folder (all scenes), or a YCB-Video scene"),
    ParamSpec("rate_hz", 5.0, "frames per second to publish", min=0.05, max=120.0, live=True),
    ParamSpec("loop", True, "start over after the last frame (else stop publishing)", live=True),
    ParamSpec("models_info", "", "optional models_info.json / object.yaml dir to name objects; default obj_XXXXXX"),
] + CAMERA_OUTPUT_PARAMS


def find_scenes(path: Path) -> list[Path]:
    """Scene folders under `path` (itself if it is one), in order."""
    def is_scene(p: Path) -> bool:
        return any((p / n).is_file() for n in ("scene_camera.json", "scene_camera_bop.json"))
    if is_scene(path):
        return [path]
    scenes = sorted(p for p in path.iterdir() if p.is_dir() and is_scene(p)) if path.is_dir() else []
    if not scenes and path.is_dir() and path.name == "ycbv_real":
        scenes = sorted(p for p in (path / "data").iterdir() if p.is_dir() and is_scene(p))
    return scenes


class DatasetCameraNode(Node):
    def __init__(self) -> None:
        super().__init__("dataset_camera")
        self.p = declare_parameters(self, PARAMETERS, apply=self._apply_parameter)
        from pose_ros.eval.bop_io import BopSceneReader

        if not self.p["dataset_path"]:
            raise ValueError("dataset_path is empty: set it to a BOP scene/split folder, "
                             "e.g. -p dataset_path:=../shared/data/ycbv_real/data/0000")
        root = Path(self.p["dataset_path"]).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"dataset_path {root} does not exist")
        scenes = find_scenes(root)
        if not scenes:
            raise ValueError(f"{root}: no BOP scene folders (with scene_camera.json) found")
        self.readers = [BopSceneReader(s, load_masks=False) for s in scenes]
        self.index = [(r, im_id) for r in self.readers for im_id in r.im_ids]
        self.names = self._object_names()
        self.out = RgbdPublisher(self, self.p)
        self._cursor = 0
        self.errors = 0
        self._rate = RateMeter()
        self._timer = self.create_timer(1.0 / float(self.p["rate_hz"]), self._tick)
        self.diagnostics = NodeDiagnostics(self, self._diagnostics)
        self.get_logger().info(f"replaying {len(self.index)} frames from {len(scenes)} scene(s) in {root} "
                               f"at {self.p['rate_hz']} Hz (loop={self.p['loop']}); {self.out.tf.describe()}")

    def _apply_parameter(self, name: str, value) -> None:
        if name == "rate_hz":
            self._timer.timer_period_ns = int(1e9 / float(value))
            self._timer.reset()

    def _diagnostics(self) -> DiagnosticReport:
        rate = self._rate.rate_hz()
        done = self._cursor >= len(self.index) and not self.p["loop"]
        values = {"frames_published": self.out.published, "rate_hz": rate, "rate_set_hz": float(self.p["rate_hz"]),
                  "position": f"{min(self._cursor, len(self.index))}/{len(self.index)}", "loop": bool(self.p["loop"]),
                  "skipped_frames": self.errors}
        state = "finished (loop off)" if done else f"{rate:.1f} Hz (set {float(self.p['rate_hz']):g} Hz)"
        return DiagnosticReport(f"{state}, {self.out.published} frames published, {self.errors} skipped",
                                values, WARN if self.errors else OK)

    def _object_names(self) -> dict[int, str]:
        src = self.p["models_info"]
        if not src:
            return {}
        path = Path(src)
        if path.is_dir():
            import yaml
            names = {}
            for meta in path.glob("*/object.yaml"):
                data = yaml.safe_load(meta.read_text()) or {}
                if "obj_id" in data and "name" in data:
                    names[int(data["obj_id"])] = str(data["name"])
            return names
        return {}

    def _tick(self) -> None:
        if self._cursor >= len(self.index):
            if not self.p["loop"]:
                return
            self._cursor = 0
        reader, im_id = self.index[self._cursor]
        self._cursor += 1
        try:
            frame = reader.frame(im_id)
        except ValueError as exc:  # a broken file in the dataset: skip it, keep going
            self.errors += 1
            self.get_logger().error(f"skipping {reader.scene_dir.name}/{im_id}: {exc} ({self.errors} skipped)",
                                    throttle_duration_sec=5.0)
            return
        truth = [GroundTruthInstance(self.names.get(g.obj_id, f"obj_{g.obj_id:06d}"), g.obj_id, g.T_cam_obj,
                                     g.visib_fract if g.visib_fract is not None else 1.0) for g in frame.gt]
        self.out.publish(self.get_clock().now().to_msg(), frame.rgb, frame.depth_m, frame.camera, truth)
        self._rate.tick()


def main(args: list[str] | None = None) -> int:
    return run_node(DatasetCameraNode, args)


if __name__ == "__main__":
    sys.exit(main())
