"""TF in the plain venv (nodes/tf_publisher.py), received as any ROS tool receives it.

1. The camera frames follow realsense-ros (camera_link -> <x>_frame -> <x>_optical_frame, REP-103 optical
   rotation, device extrinsics), names from the node's frame-id parameters.
2. `TfPublisher` publishes /tf and /tf_static with tf2's QoS and the DDS type of ROS 2's tf2_msgs/TFMessage
   (same type hash as a ROS install), and a subscriber started later still gets every static frame.
3. Over real DDS between processes: a synthetic camera's static frames arrive on /tf_static and the object
   pose node's object frames on /tf, at the ground-truth poses, for a plain subscriber with the TFMessage
   type; `ros2 param set frame_prefix` renames the object frames live; a start-up parameter is refused.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from pose_ros.nodes.ros_conversions import pose_to_T
from pose_ros.nodes.tf_publisher import (T_BODY_OPTICAL, TF_STATIC_TOPIC, TF_TOPIC, TfPublisher,
                                         camera_frame_transforms, non_optical_frame, tf_qos)
from ros_helpers import (SpinThread, ros_context, set_remote_parameter, start_ground_truth_object_chain, start_node_process,
                         stop_process, wait_for)

tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not generated: run `make setup` "
                                                      "(tools/build_tf2_msgs.sh)")
TFMessage = tf2_msgs.TFMessage

# `ros2 topic info -v /tf` on ROS 2 Jazzy/Kilted (tf2_msgs 0.36+): the type hash a ROS tool matches.
TF_MESSAGE_TYPE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"


def transform_T(t) -> np.ndarray:
    from pose_ros.core.transforms import T_from_pos_quat
    tr, q = t.transform.translation, t.transform.rotation
    return T_from_pos_quat(np.array([tr.x, tr.y, tr.z]), np.array([q.x, q.y, q.z, q.w]))


def chain_T(transforms: dict, root: str, frame: str) -> np.ndarray:
    """T_root_frame through the parent links of `transforms` ({child: TransformStamped})."""
    T, seen = np.eye(4), frame
    while seen != root:
        assert seen in transforms, f"no transform to {seen} on the way from {root} to {frame}: {sorted(transforms)}"
        t = transforms[seen]
        T = transform_T(t) @ T
        seen = t.header.frame_id
    return T


class TfListener:
    """A plain subscriber of /tf and /tf_static with the TFMessage type, as tf2's listener subscribes."""

    def __init__(self, node) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.lock = threading.Lock()
        self.static: dict[str, object] = {}
        self.dynamic: list[tuple[float, object]] = []
        static_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)   # tf2_ros.StaticListenerQoS
        node.create_subscription(TFMessage, TF_STATIC_TOPIC, self._on_static, static_qos)
        node.create_subscription(TFMessage, TF_TOPIC, self._on_tf, tf_qos())

    def _on_static(self, msg) -> None:
        with self.lock:
            for t in msg.transforms:
                self.static[t.child_frame_id] = t

    def _on_tf(self, msg) -> None:
        with self.lock:
            self.dynamic += [(time.monotonic(), t) for t in msg.transforms]

    def static_frames(self) -> dict:
        with self.lock:
            return dict(self.static)

    def frames_since(self, t0: float) -> list:
        with self.lock:
            return [t for when, t in self.dynamic if when >= t0]


# --------------------------------------------------------------------------- 1. camera frames
def test_camera_frames_are_realsense_ros_frames_with_the_optical_rotation():
    ts = {t.child_frame_id: t for t in camera_frame_transforms("camera_link", "camera_color_optical_frame",
                                                               "camera_depth_optical_frame")}
    assert {c: t.header.frame_id for c, t in ts.items()} == {
        "camera_depth_frame": "camera_link", "camera_depth_optical_frame": "camera_depth_frame",
        "camera_color_frame": "camera_link", "camera_color_optical_frame": "camera_color_frame"}
    q = ts["camera_color_optical_frame"].transform.rotation
    assert np.allclose([q.x, q.y, q.z, q.w], [-0.5, 0.5, -0.5, 0.5])   # realsense-ros: RPY(-pi/2, 0, -pi/2)
    T = chain_T(ts, "camera_link", "camera_color_optical_frame")
    # REP-103: optical z (viewing direction) = body x (forward), optical x (right) = body -y, optical y (down) = body -z
    assert np.allclose(T[:3, :3] @ [0, 0, 1], [1, 0, 0]) and np.allclose(T[:3, :3] @ [1, 0, 0], [0, -1, 0])
    assert np.allclose(T[:3, :3] @ [0, 1, 0], [0, 0, -1])
    assert np.allclose(chain_T(ts, "camera_link", "camera_depth_optical_frame"), T_BODY_OPTICAL)


def test_camera_frames_place_colour_by_the_extrinsics_and_keep_any_frame_names():
    T_depth_color = np.eye(4)
    T_depth_color[:3, 3] = [0.015, 0.0, 0.0]   # colour sensor 15 mm to the right of depth (optical x)
    ts = {t.child_frame_id: t for t in camera_frame_transforms("rig", "cam1_color_optical_frame",
                                                               "cam1_depth_optical_frame", T_depth_color=T_depth_color)}
    T_color = chain_T(ts, "rig", "cam1_color_optical_frame")
    T_depth = chain_T(ts, "rig", "cam1_depth_optical_frame")
    assert np.allclose(np.linalg.inv(T_depth) @ T_color, T_depth_color)
    assert np.allclose(ts["cam1_color_frame"].transform.translation.y, -0.015)   # right = -y in camera_link
    # a name without `_optical_frame` hangs directly below the base; no depth frame when it is empty
    ts = {t.child_frame_id: t for t in camera_frame_transforms("camera_link", "virtual_cam")}
    assert list(ts) == ["virtual_cam"] and ts["virtual_cam"].header.frame_id == "camera_link"
    assert np.allclose(chain_T(ts, "camera_link", "virtual_cam"), T_BODY_OPTICAL)
    assert non_optical_frame("camera_color_optical_frame") == "camera_color_frame"
    assert non_optical_frame("_optical_frame") is None and non_optical_frame("camera") is None
    with pytest.raises(ValueError, match="base frame"):
        camera_frame_transforms("", "camera_color_optical_frame")


# --------------------------------------------------------------------------- 2. the publisher
def test_tf_publisher_uses_tf2_qos_and_type_and_latches_every_static_frame():
    import rclpy
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from pose_ros.nodes.tf_publisher import transform_stamped

    tag = f"tfp{os.getpid()}"
    with ros_context() as context:
        node = rclpy.create_node(f"{tag}_publisher", context=context)
        tf = TfPublisher(node)
        assert tf.available, tf.describe()
        tf.send_static(camera_frame_transforms(f"{tag}_link", f"{tag}_color_optical_frame"))
        tf.send_static([transform_stamped(f"{tag}_link", f"{tag}_mount", np.eye(4))])   # added later: both kept
        probe = rclpy.create_node(f"{tag}_probe", context=context)
        with SpinThread(context, node, probe):
            listener = TfListener(probe)    # subscribes after both static sends: transient local delivers them
            want = {f"{tag}_color_frame", f"{tag}_color_optical_frame", f"{tag}_mount"}
            assert wait_for(lambda: want <= set(listener.static_frames()), 60.0), sorted(listener.static_frames())
            T = np.eye(4)
            T[:3, 3] = [0.1, 0.2, 0.3]
            t0 = time.monotonic()
            ok = wait_for(lambda: (tf.send([transform_stamped(f"{tag}_color_optical_frame", f"{tag}_obj", T)])
                                   or any(t.child_frame_id == f"{tag}_obj" for t in listener.frames_since(t0))), 60.0,
                          period_s=0.2)
            assert ok, "no /tf message arrived"
            got = next(t for t in listener.frames_since(t0) if t.child_frame_id == f"{tag}_obj")
            assert got.header.frame_id == f"{tag}_color_optical_frame" and np.allclose(transform_T(got), T)
            for topic, durability in ((TF_TOPIC, DurabilityPolicy.VOLATILE),
                                      (TF_STATIC_TOPIC, DurabilityPolicy.TRANSIENT_LOCAL)):
                infos = [i for i in probe.get_publishers_info_by_topic(topic) if i.node_name == node.get_name()]
                assert len(infos) == 1, (topic, infos)
                info = infos[0]
                assert info.topic_type == "tf2_msgs/msg/TFMessage"
                assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                assert info.qos_profile.durability == durability
                type_hash = getattr(info, "topic_type_hash", None)
                if type_hash is not None:   # rclpy >= Jazzy reports it: the same type as ROS 2's tf2_msgs
                    assert str(type_hash) == TF_MESSAGE_TYPE_HASH, type_hash


# --------------------------------------------------------------------------- 3. nodes over DDS
def _log(*paths) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in paths if p.exists())


def test_camera_and_object_frames_reach_a_plain_tf_subscriber(tmp_path):
    """Synthetic camera (frozen scene) -> object_pose in depth-only mode, refining the ground truth it is
    given as initial poses -> its object frames on /tf at the true poses; the camera's frames on
    /tf_static; frame_prefix set live renames the frames; a start-up parameter set is refused."""
    import rclpy

    from pose_ros.msg import ObjectPoseArray
    from pose_ros.nodes.names import unique_ros_name_tokens
    from pose_ros.nodes.qos import result_qos

    tag = f"tf{os.getpid()}"
    base, color_frame, depth_frame = f"{tag}_camera_link", f"{tag}_camera_color_optical_frame", f"{tag}_depth_optical_frame"
    node_name = f"object_pose_{tag}"
    cam_log, node_log = tmp_path / "camera.log", tmp_path / "object_pose.log"
    camera, pose_node, gt_topic = start_ground_truth_object_chain(
        tag, tmp_path, camera_params={"frame_id": color_frame, "base_frame_id": base, "depth_frame_id": depth_frame},
        node_params={"frame_prefix": f"{tag}_"})
    try:
        with ros_context() as context:
            node = rclpy.create_node(f"tf_test_{tag}", context=context)
            listener = TfListener(node)
            truth: dict[int, object] = {}
            node.create_subscription(ObjectPoseArray, gt_topic, lambda m: truth.__setitem__(0, m), result_qos())
            with SpinThread(context, node):
                # /tf_static: the camera's frames, named by its frame-id parameters
                want = {f"{tag}_camera_color_frame", color_frame, f"{tag}_depth_frame", depth_frame}
                assert wait_for(lambda: want <= set(listener.static_frames()) or camera.poll() is not None, 180.0), \
                    (sorted(listener.static_frames()), _log(cam_log))
                static = listener.static_frames()
                for optical in (color_frame, depth_frame):
                    assert np.allclose(chain_T(static, base, optical), T_BODY_OPTICAL, atol=1e-9)

                # /tf: one frame per object, child of the colour optical frame, at the (true) pose
                assert wait_for(lambda: 0 in truth and truth[0].objects, 180.0), _log(cam_log)
                gt = truth[0]
                tokens = unique_ros_name_tokens(sorted({o.class_name for o in gt.objects}))
                expected = {f"{tag}_{tokens[o.class_name]}_{o.instance_id}": pose_to_T(o.pose.pose)
                            for o in gt.objects if o.score >= 0.5}
                assert expected, "no object at least half visible in the frozen scene"

                def object_frames(t0: float, prefix_: str) -> dict:
                    return {t.child_frame_id: t for t in listener.frames_since(t0)
                            if t.child_frame_id.startswith(prefix_)}

                ok = wait_for(lambda: set(expected) <= set(object_frames(0.0, f"{tag}_"))
                              or pose_node.poll() is not None, 240.0)
                assert ok and pose_node.poll() is None, (sorted(object_frames(0.0, f"{tag}_")), _log(cam_log, node_log))
                frames = object_frames(0.0, f"{tag}_")
                for name, T_true in expected.items():
                    t = frames[name]
                    assert t.header.frame_id == color_frame
                    err = np.linalg.norm(transform_T(t)[:3, 3] - T_true[:3, 3])
                    assert err < 0.02, f"{name}: {err * 100:.1f} cm from the true position"

                # live: the frames are renamed from the next processed frame on
                res = set_remote_parameter(node, f"/{node_name}", "frame_prefix", f"{tag}_live_")
                assert res.successful, res.reason
                t_set = time.monotonic()
                renamed = {f"{tag}_live_{n[len(tag) + 1:]}" for n in expected}
                assert wait_for(lambda: renamed <= set(object_frames(t_set, f"{tag}_live_")), 120.0), \
                    (sorted(object_frames(t_set, tag)), _log(node_log))
                # read at start-up: refused with the reason, nothing changes
                res = set_remote_parameter(node, f"/{node_name}", "use_icp", False)
                assert not res.successful
                assert res.reason.startswith("use_icp is read at start-up; restart the node to change it"), res.reason
                assert pose_node.poll() is None and camera.poll() is None
    finally:
        stop_process(camera)
        stop_process(pose_node)


def test_dataset_camera_publishes_its_frames_on_tf_static(tmp_path):
    """The recorded-data camera (real YCB-Video frames) has the same static camera frames as the others."""
    import rclpy

    from conftest import shared_data_path

    scene = shared_data_path("ycbv_real", "data", "0000")
    tag = f"tfd{os.getpid()}"
    log = tmp_path / "dataset.log"
    camera = start_node_process("dataset_camera_node", name=f"dataset_camera_{tag}", log_path=log, params={
        "dataset_path": str(scene), "rate_hz": 1.0, "base_frame_id": f"{tag}_link",
        "frame_id": f"{tag}_color_optical_frame", "depth_frame_id": f"{tag}_depth_optical_frame",
        "color_topic": f"/{tag}/color", "depth_topic": f"/{tag}/depth", "info_topic": f"/{tag}/info",
        "ground_truth_topic": f"/{tag}/ground_truth"})
    try:
        with ros_context() as context:
            node = rclpy.create_node(f"tf_dataset_test_{tag}", context=context)
            listener = TfListener(node)
            with SpinThread(context, node):
                want = {f"{tag}_color_frame", f"{tag}_color_optical_frame", f"{tag}_depth_frame",
                        f"{tag}_depth_optical_frame"}
                assert wait_for(lambda: want <= set(listener.static_frames()) or camera.poll() is not None, 180.0), \
                    (sorted(listener.static_frames()), _log(log))
                static = listener.static_frames()
                for optical in (f"{tag}_color_optical_frame", f"{tag}_depth_optical_frame"):
                    assert np.allclose(chain_T(static, f"{tag}_link", optical), T_BODY_OPTICAL, atol=1e-9)
    finally:
        stop_process(camera)
