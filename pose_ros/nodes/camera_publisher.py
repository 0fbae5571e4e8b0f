"""Publishing one RGB-D frame (+ ground truth) the way realsense-ros does, for replay cameras.

Shared by the synthetic and dataset camera nodes so both look exactly like a RealSense to the
rest of the graph: same topic names, encodings, frame id and one stamp for all three images.
With `publish_compressed` they also publish what image_transport's compressed plugins would:
`<color_topic>/compressed` (JPEG/PNG) and `<depth_topic>/compressedDepth` (PNG), same stamps.
The camera's static frames go on /tf_static as realsense-ros publishes them (`base_frame_id` ->
`camera_color_frame` -> `frame_id`, and -> `camera_depth_frame` -> `depth_frame_id`; nodes/tf_publisher.py):
the depth is rendered or recorded in the colour camera, so both optical frames share one origin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from pose_ros.core.camera import PinholeCamera
from pose_ros.msg import ObjectPose, ObjectPoseArray
from pose_ros.nodes.image_conversions import (camera_to_camera_info, depth_m_to_image, depth_to_compressed_depth,
                                              numpy_to_image, rgb_to_compressed, transport_topic)
from pose_ros.nodes.params import ParamSpec
from pose_ros.nodes.qos import camera_publisher_qos, result_qos
from pose_ros.nodes.ros_conversions import T_to_pose
from pose_ros.nodes.tf_publisher import BASE_FRAME, TfPublisher, camera_frame_transforms
from pose_ros.nodes.topics import (COLOR_OPTICAL_FRAME, COLOR_TOPIC, DEPTH_OPTICAL_FRAME, DEPTH_TOPIC,
                                   GROUND_TRUTH_TOPIC, INFO_TOPIC)


@dataclass
class GroundTruthInstance:
    """A ground-truth object in the published frame; `visible_fraction` goes into `score`."""
    name: str
    obj_id: int
    T_cam_obj: np.ndarray
    visible_fraction: float = 1.0


CAMERA_OUTPUT_PARAMS = [
    ParamSpec("color_topic", COLOR_TOPIC, "colour image topic (realsense-ros name)"),
    ParamSpec("depth_topic", DEPTH_TOPIC, "depth aligned to colour (realsense-ros name)"),
    ParamSpec("info_topic", INFO_TOPIC, "colour camera_info topic (realsense-ros name)"),
    ParamSpec("ground_truth_topic", GROUND_TRUTH_TOPIC,
              "ground-truth object poses (pose_ros/ObjectPoseArray; score = visible fraction)"),
    ParamSpec("frame_id", COLOR_OPTICAL_FRAME, "optical frame id stamped on every message"),
    ParamSpec("base_frame_id", BASE_FRAME, "camera body frame of the static TF (/tf_static) to the optical frames, "
              "as realsense-ros: <base> -> camera_color_frame -> frame_id and <base> -> camera_depth_frame -> "
              "depth_frame_id; empty = no TF"),
    ParamSpec("depth_frame_id", DEPTH_OPTICAL_FRAME, "depth optical frame in the static TF (the depth images "
              "are aligned to colour and stamped with frame_id)"),
    ParamSpec("color_encoding", "rgb8", "rgb8 or bgr8"),
    ParamSpec("depth_encoding", "16UC1", "16UC1 (millimetres, like realsense-ros) or 32FC1 (metres)"),
    ParamSpec("reliable", True, "reliable publishers (like realsense-ros); false = best effort"),
    ParamSpec("publish_compressed", False, "also publish <color_topic>/compressed and <depth_topic>/compressedDepth "
              "(sensor_msgs/CompressedImage as image_transport's compressed and compressedDepth plugins write them)"),
    ParamSpec("compressed_format", "jpeg", "colour codec of <color_topic>/compressed: jpeg | png"),
    ParamSpec("jpeg_quality", 95, "JPEG quality of <color_topic>/compressed (image_transport's default: 95)",
              min=1, max=100),
]


class RgbdPublisher:
    def __init__(self, node: Node, params: dict) -> None:
        if params["color_encoding"] not in ("rgb8", "bgr8"):
            raise ValueError(f"color_encoding must be rgb8 or bgr8, got '{params['color_encoding']}'")
        if params["depth_encoding"] not in ("16UC1", "32FC1"):
            raise ValueError(f"depth_encoding must be 16UC1 or 32FC1, got '{params['depth_encoding']}'")
        if params["compressed_format"] not in ("jpeg", "png"):
            raise ValueError(f"compressed_format must be jpeg or png, got '{params['compressed_format']}'")
        self._p = params
        qos = camera_publisher_qos(reliable=bool(params["reliable"]))
        self.color_pub = node.create_publisher(Image, params["color_topic"], qos)
        self.depth_pub = node.create_publisher(Image, params["depth_topic"], qos)
        self.info_pub = node.create_publisher(CameraInfo, params["info_topic"], qos)
        self.gt_pub = node.create_publisher(ObjectPoseArray, params["ground_truth_topic"], result_qos())
        self.color_compressed_pub = self.depth_compressed_pub = None
        if params["publish_compressed"]:
            _, color_compressed = transport_topic(params["color_topic"], "compressed")
            _, depth_compressed = transport_topic(params["depth_topic"], "compressedDepth")
            self.color_compressed_pub = node.create_publisher(CompressedImage, color_compressed, qos)
            self.depth_compressed_pub = node.create_publisher(CompressedImage, depth_compressed, qos)
        self.published = 0
        self.tf = TfPublisher(node)
        if params["base_frame_id"]:
            self.tf.send_static(camera_frame_transforms(params["base_frame_id"], params["frame_id"],
                                                        params["depth_frame_id"], node.get_clock().now().to_msg()))

    def publish(self, stamp, rgb: np.ndarray, depth_m: np.ndarray, camera: PinholeCamera,
                ground_truth: Sequence[GroundTruthInstance] = ()) -> None:
        header = Header(stamp=stamp, frame_id=self._p["frame_id"])
        colour = rgb if self._p["color_encoding"] == "rgb8" else np.ascontiguousarray(rgb[:, :, ::-1])
        self.color_pub.publish(numpy_to_image(colour, self._p["color_encoding"], header))
        self.depth_pub.publish(depth_m_to_image(depth_m, self._p["depth_encoding"], header))
        if self.color_compressed_pub is not None:
            self.color_compressed_pub.publish(rgb_to_compressed(
                rgb, self._p["compressed_format"], header, encoding=self._p["color_encoding"],
                jpeg_quality=int(self._p["jpeg_quality"])))
            self.depth_compressed_pub.publish(depth_to_compressed_depth(depth_m, self._p["depth_encoding"], header))
        self.info_pub.publish(camera_to_camera_info(camera, header))
        gt = ObjectPoseArray(header=header)
        for i, inst in enumerate(ground_truth):
            msg = ObjectPose(class_name=inst.name, class_id=int(inst.obj_id), instance_id=i,
                             score=float(inst.visible_fraction))
            msg.pose.pose = T_to_pose(inst.T_cam_obj)
            gt.objects.append(msg)
        self.gt_pub.publish(gt)
        self.published += 1
