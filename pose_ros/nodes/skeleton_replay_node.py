"""Skeleton replay node: plays a BVH mocap clip as if it were the human pose node's output.

For teleoperation without a camera (demos, CI, tuning the retargeter on real human motion): the
clip is turned into BlazePose-named keypoints in a virtual level camera's optical frame
(`pose_ros.human.bvh`), the subject ~2.5 m in front, and published in real time as
pose_ros/HumanSkeletonArray on `skeletons` (one operator skeleton, header = now + optical frame).
The virtual camera's frames go on /tf_static like a real camera's (`base_frame_id` -> camera_color_frame
-> `frame_id`, nodes/tf_publisher.py), so RViz's fixed frame camera_link holds the replayed operator, the
retargeted robot and the objects alike. /diagnostics: rate, clip position. `loop` is applied live
(`ros2 param set`); the other parameters are read at start-up and a set is refused with that reason.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import Point
from rclpy.node import Node
from std_msgs.msg import Header

from pose_ros.msg import HumanKeypoint, HumanSkeleton, HumanSkeletonArray
from pose_ros.nodes.diagnostics import DiagnosticReport, NodeDiagnostics, RateMeter
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.qos import result_qos
from pose_ros.nodes.runner import run_node
from pose_ros.nodes.tf_publisher import BASE_FRAME, TfPublisher, camera_frame_transforms
from pose_ros.nodes.topics import COLOR_OPTICAL_FRAME

_SOURCE_MODEL = 2  # HumanKeypoint.SOURCE_MODEL: exact 3D from the mocap "model"

PARAMETERS = [
    ParamSpec("bvh_file", "", "BVH clip (CMU joint names); empty = ../shared/data/mocap_cmu131 walk if present"),
    ParamSpec("bvh_scale", 0.0, "BVH units -> metres; 0 = auto (metres or CMU units)", min=0.0, max=100.0),
    ParamSpec("rate_hz", 30.0, "publish rate (camera-like); frames are picked by elapsed time", min=0.1,
              max=1000.0),
    ParamSpec("speed", 1.0, "playback speed factor", min=0.01, max=100.0),
    ParamSpec("loop", True, "restart at the end of the clip (otherwise publish empty arrays after it)",
              live=True),
    ParamSpec("topic", "skeletons", "output pose_ros/HumanSkeletonArray topic"),
    ParamSpec("frame_id", COLOR_OPTICAL_FRAME, "header frame (the virtual camera's optical frame)"),
    ParamSpec("base_frame_id", BASE_FRAME, "the virtual camera's body frame in the static TF (/tf_static): "
              "<base> -> camera_color_frame -> frame_id, as realsense-ros; empty = no TF"),
    ParamSpec("distance_m", 2.5, "virtual camera distance to the subject", min=0.5, max=20.0),
    ParamSpec("camera_height_m", 1.2, "virtual camera height above the floor", min=0.0, max=5.0),
    ParamSpec("convention", "blazepose33", "keypoint convention to publish: blazepose33 or coco17"),
    ParamSpec("intrinsics", [615.0, 615.0, 320.0, 240.0],
              "virtual camera fx, fy, cx, cy (pixels) for the keypoints' u, v"),
]


def default_bvh_path() -> Path:
    import os
    base = Path(os.environ.get("POSE_ROS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    return base / "mocap_cmu131" / "resources" / "scaled_131_01.bvh"


class SkeletonReplayNode(Node):
    def __init__(self, node_name: str = "skeleton_replay", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_parameters(self, PARAMETERS)
        from pose_ros.human.bvh import bvh_to_camera_skeletons, load_bvh
        from pose_ros.human.conventions import BLAZEPOSE33_NAMES, COCO17_FROM_BLAZEPOSE33, COCO17_NAMES

        path = Path(self.p["bvh_file"]) if self.p["bvh_file"] else default_bvh_path()
        if not path.is_file():
            raise ValueError(f"BVH file not found: {path}; set bvh_file (or provide ../shared/data/mocap_cmu131)")
        if self.p["convention"] not in ("blazepose33", "coco17"):
            raise ValueError(f"convention '{self.p['convention']}' is not valid; use blazepose33 or coco17")
        intr = [float(v) for v in self.p["intrinsics"]]
        if len(intr) != 4 or intr[0] <= 0 or intr[1] <= 0:
            raise ValueError(f"intrinsics must be [fx, fy, cx, cy] with fx, fy > 0, got {intr}")
        clip = load_bvh(path, scale_to_m=self.p["bvh_scale"] or "auto")
        kp, _ = bvh_to_camera_skeletons(clip, distance_m=float(self.p["distance_m"]),
                                        height_m=float(self.p["camera_height_m"]))
        if self.p["convention"] == "coco17":
            kp, self._names = kp[:, COCO17_FROM_BLAZEPOSE33], list(COCO17_NAMES)
        else:
            self._names = list(BLAZEPOSE33_NAMES)
        fx, fy, cx, cy = intr
        with np.errstate(divide="ignore", invalid="ignore"):
            z = kp[..., 2]
            self._uv = np.stack([fx * kp[..., 0] / z + cx, fy * kp[..., 1] / z + cy], axis=-1)
            self._uv[z <= 0] = np.nan
        self._kp = kp
        self._frame_time = clip.frame_time_s / float(self.p["speed"])
        self._start = time.monotonic()
        self._published = 0
        self._frame: int | None = None
        self._rate = RateMeter()
        self.pub = self.create_publisher(HumanSkeletonArray, self.p["topic"], result_qos())
        self.tf = TfPublisher(self)
        if self.p["base_frame_id"]:
            self.tf.send_static(camera_frame_transforms(self.p["base_frame_id"], self.p["frame_id"],
                                                        stamp=self.get_clock().now().to_msg()))
        self.create_timer(1.0 / float(self.p["rate_hz"]), self._on_timer)
        self.diagnostics = NodeDiagnostics(self, self._diagnostics, hardware_id=path.name)
        self.get_logger().info(f"replaying {path.name}: {clip.num_frames} frames, "
                               f"{clip.num_frames * clip.frame_time_s:.1f} s, on {self.pub.topic_name} "
                               f"at {self.p['rate_hz']:.0f} Hz ({self.p['convention']}); {self.tf.describe()}")

    def _diagnostics(self) -> DiagnosticReport:
        rate = self._rate.rate_hz()
        n = self._kp.shape[0]
        where = f"clip frame {self._frame}/{n}" if self._frame is not None else "clip ended (loop off)"
        return DiagnosticReport(f"{rate:.1f} Hz, {where}",
                                {"messages_published": self._published, "rate_hz": rate, "clip_frame": where,
                                 "loop": bool(self.p["loop"])})

    def frame_index(self, elapsed_s: float) -> int | None:
        """Clip frame for the elapsed wall time, or None after the end when not looping."""
        i = int(elapsed_s / self._frame_time)
        n = self._kp.shape[0]
        if i >= n:
            return i % n if self.p["loop"] else None
        return i

    def _on_timer(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.p["frame_id"])
        out = HumanSkeletonArray(header=header)
        i = self.frame_index(time.monotonic() - self._start)
        if i is not None:
            sk = HumanSkeleton(track_id=1, convention=self.p["convention"], is_operator=True, score=1.0)
            for k, name in enumerate(self._names):
                x, y, z = (float(v) for v in self._kp[i, k])
                sk.keypoints.append(HumanKeypoint(name=name, position=Point(x=x, y=y, z=z),
                                                  u=float(self._uv[i, k, 0]), v=float(self._uv[i, k, 1]),
                                                  confidence=1.0, source=_SOURCE_MODEL))
            out.skeletons.append(sk)
        self.pub.publish(out)
        self._published += 1
        self._frame = i
        self._rate.tick()


def main(args: list[str] | None = None) -> int:
    return run_node(SkeletonReplayNode, args)


if __name__ == "__main__":
    sys.exit(main())
