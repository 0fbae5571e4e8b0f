"""TF from pose_ros nodes: /tf and /tf_static as tf2 publishes them, with or without tf2_ros.

Every node that publishes frames does it through `TfPublisher`:
- where `tf2_ros` is importable (a ROS 2 install) its TransformBroadcaster and
  StaticTransformBroadcaster publish;
- else (a plain venv: the PyPI ROS 2 wheels have no tf2_ros) the same two topics are published
  directly with `tf2_msgs/msg/TFMessage` (from ROS, or generated into the venv by
  tools/build_tf2_msgs.sh, which `make setup` runs) and tf2's QoS: `/tf` reliable, volatile, keep
  last 100; `/tf_static` reliable, transient local, keep last 1, one message holding all the node's
  static transforms, re-sent whole when one is added (as tf2_ros's static broadcaster does), so a
  late subscriber (RViz started later) still gets them;
- where neither exists, TF is off and the node says so (`describe()`).
Same topics, type and QoS either way: RViz and tf2 on a ROS machine see the frames of a venv node.

`camera_frame_transforms` gives a camera's static frames as realsense-ros publishes them (REP-103/105):
``camera_link`` (x forward, y left, z up) -> ``camera_depth_frame`` -> ``camera_depth_optical_frame``
and ``camera_link`` -> ``camera_color_frame`` -> ``camera_color_optical_frame`` (optical: z forward,
x right, y down; rotation (x, y, z, w) = (-0.5, 0.5, -0.5, 0.5) from the non-optical frame).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from pose_ros.core.transforms import invert_T
from pose_ros.nodes.ros_conversions import T_to_transform

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
BASE_FRAME = "camera_link"
OPTICAL_SUFFIX = "_optical_frame"

# <x>_frame (REP-103 body: x forward, y left, z up) -> <x>_optical_frame (z forward, x right, y down):
# the optical frame's axes, as columns, in the body frame.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
T_BODY_OPTICAL = np.eye(4)
T_BODY_OPTICAL[:3, :3] = R_BODY_OPTICAL


def tf_qos() -> QoSProfile:
    """/tf: what tf2_ros's TransformBroadcaster and TransformListener use (reliable, volatile, depth 100)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def tf_static_qos() -> QoSProfile:
    """/tf_static: tf2_ros's StaticTransformBroadcaster (reliable, transient local, depth 1)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def transform_stamped(parent: str, child: str, T_parent_child: np.ndarray, stamp=None) -> TransformStamped:
    """`T_parent_child` (the child frame's pose in the parent frame) as a TransformStamped."""
    header = Header(frame_id=parent) if stamp is None else Header(stamp=stamp, frame_id=parent)
    return TransformStamped(header=header, child_frame_id=child, transform=T_to_transform(T_parent_child))


def non_optical_frame(optical_frame: str) -> str | None:
    """`camera_color_optical_frame` -> `camera_color_frame`; None for a name without `_optical_frame`."""
    if optical_frame.endswith(OPTICAL_SUFFIX) and len(optical_frame) > len(OPTICAL_SUFFIX):
        return optical_frame[: -len(OPTICAL_SUFFIX)] + "_frame"
    return None


def camera_frame_transforms(base_frame: str, color_optical_frame: str, depth_optical_frame: str = "",
                            stamp=None, T_depth_color: np.ndarray | None = None) -> list[TransformStamped]:
    """A camera's static frames as realsense-ros names them (module doc), for `/tf_static`.

    `base_frame` (camera_link) sits at the depth sensor, as in realsense-ros; `T_depth_color` is the
    colour optical frame's pose in the depth optical frame (the device's depth-to-colour extrinsics,
    identity for a camera whose depth is the colour camera's, e.g. rendered). An optical frame named
    `<x>_optical_frame` hangs below `<x>_frame`; any other name hangs directly below `base_frame`.
    An empty `depth_optical_frame` leaves the depth frames out; a frame named twice is sent once.
    """
    if not base_frame:
        raise ValueError("camera TF needs a base frame (e.g. camera_link)")
    T_depth_color = np.eye(4) if T_depth_color is None else np.asarray(T_depth_color, dtype=np.float64)
    out: dict[str, TransformStamped] = {}

    def add(optical: str, T_base_optical: np.ndarray) -> None:
        body = non_optical_frame(optical)
        if body is None:
            out.setdefault(optical, transform_stamped(base_frame, optical, T_base_optical, stamp))
            return
        T_base_body = T_base_optical @ invert_T(T_BODY_OPTICAL)
        out.setdefault(body, transform_stamped(base_frame, body, T_base_body, stamp))
        out.setdefault(optical, transform_stamped(body, optical, T_BODY_OPTICAL, stamp))

    if depth_optical_frame:
        add(depth_optical_frame, T_BODY_OPTICAL)
    if color_optical_frame:
        add(color_optical_frame, T_BODY_OPTICAL @ T_depth_color)
    out.pop(base_frame, None)    # a frame is never its own child
    return list(out.values())


class TfPublisher:
    """/tf and /tf_static for one node, through tf2_ros when it is there, else directly (module doc)."""

    def __init__(self, node) -> None:
        self._node = node
        self._static: dict[str, TransformStamped] = {}
        self._dynamic_broadcaster = self._static_broadcaster = None
        self._tf_pub = self._static_pub = None
        self._message = None
        self.backend = ""
        try:
            from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster
        except ImportError:
            pass
        else:
            self._dynamic_broadcaster = TransformBroadcaster(node)
            self._static_broadcaster = StaticTransformBroadcaster(node)
            self.backend = "tf2_ros"
            return
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            node.get_logger().warning(
                "TF off: neither tf2_ros nor tf2_msgs is importable; in a venv, `make setup` "
                "(tools/build_tf2_msgs.sh) generates tf2_msgs")
            return
        self._message = TFMessage
        self._tf_pub = node.create_publisher(TFMessage, TF_TOPIC, tf_qos())
        self._static_pub = node.create_publisher(TFMessage, TF_STATIC_TOPIC, tf_static_qos())
        self.backend = "tf2_msgs"

    @property
    def available(self) -> bool:
        return bool(self.backend)

    def describe(self) -> str:
        if self.backend == "tf2_ros":
            return "TF on (tf2_ros)"
        if self.backend == "tf2_msgs":
            return "TF on (/tf, /tf_static with tf2_msgs/TFMessage; no tf2_ros here)"
        return "TF off (no tf2_ros, no tf2_msgs)"

    def has_listeners(self) -> bool:
        """Whether anything subscribes to /tf (a TF listener, RViz, a bag recorder): a caller can
        skip computing transforms that would reach nobody (/tf is volatile)."""
        if not self.backend:
            return False
        pub = self._tf_pub if self._dynamic_broadcaster is None else getattr(self._dynamic_broadcaster, "pub_tf", None)
        return pub is None or pub.get_subscription_count() > 0   # unknown broadcaster internals: assume yes

    def send(self, transforms: Sequence[TransformStamped]) -> None:
        """Transforms that change (object poses): /tf."""
        if not transforms or not self.backend or not self._node.context.ok():
            return
        if self._dynamic_broadcaster is not None:
            self._dynamic_broadcaster.sendTransform(list(transforms))
        else:
            self._tf_pub.publish(self._message(transforms=list(transforms)))

    def send_static(self, transforms: Iterable[TransformStamped]) -> None:
        """Fixed transforms (camera frames): /tf_static, latched; a child frame sent again replaces
        its transform, and every static transform of this node goes out in one message."""
        transforms = list(transforms)
        if not transforms or not self.backend:
            return
        for t in transforms:
            self._static[t.child_frame_id] = t
        if self._static_broadcaster is not None:
            self._static_broadcaster.sendTransform(transforms)   # accumulates by child frame itself
        else:
            self._static_pub.publish(self._message(transforms=list(self._static.values())))

    @property
    def static_frames(self) -> list[str]:
        return sorted(self._static)
