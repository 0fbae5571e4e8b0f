"""Object pose node under faults, over real DDS (depth-only mode: no trained model needed).

1. The camera process is killed mid-run and started again: the node survives and poses resume.
2. This test is the camera and publishes malformed frames between good ones (unsupported
   encodings, truncated data, colour/depth size mismatch, camera_info with zero K, all-zero depth,
   stamps going backwards a little and a lot): the node keeps running, every good frame after a bad
   one is processed, and /diagnostics counts each drop under its reason.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from pose_ros.msg import ObjectPose, ObjectPoseArray
from pose_ros.nodes.image_conversions import (camera_to_camera_info, depth_m_to_image, ns_to_stamp, numpy_to_image,
                                              stamp_to_ns)
from pose_ros.nodes.qos import camera_publisher_qos, result_qos
from pose_ros.nodes.ros_conversions import T_to_pose
from ros_helpers import SpinThread, ros_context, start_node_process, stop_process, wait_for

pytestmark = pytest.mark.ros

OPTICAL_FRAME = "camera_color_optical_frame"


def camera_topics(prefix: str) -> dict[str, str]:
    return {"color_topic": f"{prefix}/color/image_raw", "depth_topic": f"{prefix}/aligned_depth_to_color/image_raw",
            "info_topic": f"{prefix}/color/camera_info"}


class NodeOutputs:
    """Poses (with receive times) and the latest /diagnostics status of one object pose node."""

    def __init__(self, node, node_name: str) -> None:
        self.lock = threading.Lock()
        self.poses: list[ObjectPoseArray] = []
        self.diag: DiagnosticStatus | None = None
        self.diag_count = 0
        self._status_name = f"pose_ros: {node_name}"
        node.create_subscription(ObjectPoseArray, f"/{node_name}/poses", self._on_poses, result_qos(depth=50))
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, result_qos())

    def _on_poses(self, msg: ObjectPoseArray) -> None:
        with self.lock:
            self.poses.append(msg)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name == self._status_name:
                with self.lock:
                    self.diag = s
                    self.diag_count += 1

    def value(self, key: str, default: str = "0") -> str:
        with self.lock:
            if self.diag is None:
                return default
            return next((kv.value for kv in self.diag.values if kv.key == key), default)

    def count(self, key: str) -> int:
        return int(self.value(key))

    def poses_at(self, stamp_ns: int) -> list[ObjectPoseArray]:
        with self.lock:
            return [m for m in self.poses if stamp_to_ns(m.header.stamp) == stamp_ns]

    def poses_after(self, stamp_ns: int) -> list[ObjectPoseArray]:
        with self.lock:
            return [m for m in self.poses if stamp_to_ns(m.header.stamp) > stamp_ns]


def log_text(*paths) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in paths if p.exists())


# --------------------------------------------------------------------------- 1. camera restart
def test_poses_resume_after_the_camera_process_is_killed_and_restarted(tmp_path):
    tag = f"fr{os.getpid()}"
    prefix, node_name, gt_topic = f"/{tag}/camera", f"object_pose_{tag}", f"/{tag}/ground_truth"
    cam_params = {"rate_hz": 5.0, "width": 320, "height": 240, "seed": 5, "ground_truth_topic": gt_topic,
                  **camera_topics(prefix)}
    logs = [tmp_path / "camera1.log", tmp_path / "camera2.log", tmp_path / "object_pose.log"]
    camera = start_node_process("synthetic_camera_node", name=f"synthetic_camera_{tag}", params=cam_params,
                                log_path=logs[0])
    # The camera's ground truth is the init-poses topic: depth-only ICP of the true poses.
    pose_node = start_node_process("object_pose_node", name=node_name, log_path=logs[2],
                                   params={"model_file": "''", "meshes_dir": "meshes", "init_poses_topic": gt_topic,
                                           **camera_topics(prefix)})
    camera2 = None
    try:
        with ros_context() as context:
            import rclpy
            node = rclpy.create_node(f"fault_test_{tag}", context=context)
            out = NodeOutputs(node, node_name)
            refined = lambda msgs: [m for m in msgs if any(o.refinement.icp_applied for o in m.objects)]  # noqa: E731
            with SpinThread(context, node):
                assert wait_for(lambda: len(refined(out.poses_after(0))) >= 3 or pose_node.poll() is not None, 240.0), \
                    log_text(*logs)
                camera.kill()  # no clean shutdown: like a driver crash or an unplugged camera
                camera.wait(timeout=10)
                t_kill = time.time_ns()
                time.sleep(3.0)
                with out.lock:
                    last_stamp = max(stamp_to_ns(m.header.stamp) for m in out.poses)
                assert last_stamp < t_kill, "poses with stamps after the camera died"
                assert pose_node.poll() is None, "object pose node died with the camera\n" + log_text(*logs)
                processed_before = out.count("frames_processed")

                camera2 = start_node_process("synthetic_camera_node", name=f"synthetic_camera_{tag}",
                                             params=cam_params, log_path=logs[1])
                t_restart = time.time_ns()
                assert wait_for(lambda: len(refined(out.poses_after(t_restart))) >= 3, 180.0), \
                    "poses did not resume after the camera restarted\n" + log_text(*logs)
                assert wait_for(lambda: out.count("frames_processed") > processed_before + 2, 10.0)
                assert pose_node.poll() is None
                m = refined(out.poses_after(t_restart))[-1]
                assert m.header.frame_id == OPTICAL_FRAME
                assert {o.class_name for o in m.objects} <= {"mug", "box", "bottle"}
    finally:
        stop_process(camera)
        if camera2 is not None:
            stop_process(camera2)
        assert stop_process(pose_node) in (0, -2), log_text(*logs)


# --------------------------------------------------------------------------- 2. malformed frames
class FakeCamera:
    """Publishes one rendered frame (or a broken variant of it) with any stamp, plus its ground truth seeds."""

    def __init__(self, node, prefix: str, init_topic: str) -> None:
        from pose_ros.core.camera import PinholeCamera
        from pose_ros.core.object_model import load_object_dir
        from pose_ros.resources import meshes_dir
        from pose_ros.synth.stream import SyntheticSceneStream

        self.camera = PinholeCamera.from_fov(320, 240, 69.0)
        render, depth_m, truth = SyntheticSceneStream(load_object_dir(meshes_dir()), self.camera, seed=2,
                                                      noise=False).frame(0.0)
        self.rgb, self.depth_m, self.truth = render.rgb, np.where(depth_m > 0, depth_m, 0).astype(np.float32), truth
        topics = camera_topics(prefix)
        qos = camera_publisher_qos(depth=5)
        self.pubs = [node.create_publisher(Image, topics["color_topic"], qos),
                     node.create_publisher(Image, topics["depth_topic"], qos),
                     node.create_publisher(CameraInfo, topics["info_topic"], qos)]
        self.seed_pub = node.create_publisher(ObjectPoseArray, init_topic, result_qos())

    def connected(self) -> bool:
        return all(p.get_subscription_count() >= 1 for p in (*self.pubs, self.seed_pub))

    def publish_seeds(self) -> None:
        msg = ObjectPoseArray(header=Header(frame_id=OPTICAL_FRAME))
        for i, g in enumerate(self.truth):
            o = ObjectPose(class_name=g.name, class_id=int(g.obj_id), instance_id=i, score=1.0)
            o.pose.pose = T_to_pose(g.T_cam_obj)
            msg.objects.append(o)
        self.seed_pub.publish(msg)

    def frame(self, stamp_ns: int) -> tuple[Image, Image, CameraInfo]:
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=OPTICAL_FRAME)
        return (numpy_to_image(self.rgb, "rgb8", header), depth_m_to_image(self.depth_m, "16UC1", header),
                camera_to_camera_info(self.camera, header))

    def publish(self, colour: Image, depth: Image, info: CameraInfo) -> None:
        for pub, msg in zip(self.pubs, (colour, depth, info)):
            pub.publish(msg)


def test_malformed_frames_are_dropped_by_reason_and_good_frames_resume(tmp_path):
    tag = f"fm{os.getpid()}"
    prefix, node_name, init_topic = f"/{tag}/camera", f"object_pose_{tag}", f"/{tag}/init_poses"
    log = tmp_path / "object_pose.log"
    pose_node = start_node_process("object_pose_node", name=node_name, log_path=log,
                                   params={"model_file": "''", "meshes_dir": "meshes", "init_poses_topic": init_topic,
                                           **camera_topics(prefix)})
    try:
        with ros_context() as context:
            import rclpy
            node = rclpy.create_node(f"fake_camera_{tag}", context=context)
            out = NodeOutputs(node, node_name)
            cam = FakeCamera(node, prefix, init_topic)
            with SpinThread(context, node):
                assert wait_for(lambda: cam.connected() or pose_node.poll() is not None, 180.0) and \
                    pose_node.poll() is None, log_text(log)
                cam.publish_seeds()
                time.sleep(0.5)
                stamp = [time.time_ns()]

                def next_stamp(step_ns: int = 100_000_000) -> int:
                    stamp[0] += step_ns
                    return stamp[0]

                def good_frame_processed(timeout_s: float = 60.0) -> None:
                    s = next_stamp()
                    cam.publish(*cam.frame(s))
                    assert wait_for(lambda: any(o.refinement.icp_applied for m in out.poses_at(s) for o in m.objects),
                                    timeout_s), "a good frame after the fault produced no refined poses\n" + log_text(log)
                    assert pose_node.poll() is None

                def dropped(key: str, expected: int, timeout_s: float = 20.0) -> None:
                    assert wait_for(lambda: out.count(key) >= expected, timeout_s), \
                        f"/diagnostics '{key}' = {out.count(key)}, expected {expected}: " + \
                        str([(kv.key, kv.value) for kv in (out.diag.values if out.diag else [])])
                    assert pose_node.poll() is None, "node died\n" + log_text(log)

                good_frame_processed(120.0)  # first frame: warm-up (imports, ICP set-up)
                assert out.count("drop: bad image") == 0

                # Unsupported colour encoding.
                c, d, i = cam.frame(next_stamp())
                c.encoding = "yuv422"
                cam.publish(c, d, i)
                dropped("drop: bad image", 1)
                good_frame_processed()

                # Depth in an encoding that is not depth.
                c, d, i = cam.frame(next_stamp())
                d = numpy_to_image((cam.depth_m * 50).astype(np.uint8), "mono8", d.header)
                cam.publish(c, d, i)
                dropped("drop: bad image", 2)
                good_frame_processed()

                # Truncated colour data (size disagrees with step * height).
                c, d, i = cam.frame(next_stamp())
                c.data = bytes(c.data)[: len(c.data) // 2]
                cam.publish(c, d, i)
                dropped("drop: bad image", 3)
                good_frame_processed()

                # Colour and depth of different sizes (depth not aligned to colour).
                c, d, i = cam.frame(next_stamp())
                d = depth_m_to_image(cam.depth_m[::2, ::2], "16UC1", d.header)
                cam.publish(c, d, i)
                dropped("drop: colour/depth size mismatch", 1)
                good_frame_processed()

                # camera_info without intrinsics (uncalibrated driver): K all zero.
                c, d, i = cam.frame(next_stamp())
                i.k = [0.0] * 9
                cam.publish(c, d, i)
                dropped("drop: bad camera_info", 1)
                good_frame_processed()

                # All-zero depth: counted, nothing can be refined on it, the node carries on.
                s_zero = next_stamp()
                c, d, i = cam.frame(s_zero)
                d = depth_m_to_image(np.zeros_like(cam.depth_m), "16UC1", d.header)
                cam.publish(c, d, i)
                dropped("drop: depth all zero (PnP only, lowered score)", 1)
                assert not any(o.refinement.icp_applied for m in out.poses_at(s_zero) for o in m.objects)
                good_frame_processed()

                # Stamps going back a little: an out-of-order frame, refused by the synchroniser.
                out_of_order_before = out.count("sync_dropped_out_of_order")
                s_back = stamp[0] - 500_000_000
                cam.publish(*cam.frame(s_back))
                dropped("sync_dropped_out_of_order", out_of_order_before + 3)
                good_frame_processed()
                assert not out.poses_at(s_back), "a frame older than the last processed one was processed"

                # Stamps jumping back a lot (camera restarted with a new clock, a looping replay):
                # the synchroniser starts over and the frame is processed.
                stamp[0] -= 30_000_000_000
                s_jump = stamp[0]
                cam.publish(*cam.frame(s_jump))
                dropped("sync_time_jumps", 1)
                assert wait_for(lambda: any(o.refinement.icp_applied for m in out.poses_at(s_jump) for o in m.objects),
                                30.0), "the frame after a large time jump was not processed"
                good_frame_processed()

                # Every reason is still counted once (nothing was double counted or reset), and
                # the status is WARN while bad inputs have been seen.
                assert out.count("drop: bad image") == 3
                assert out.count("drop: colour/depth size mismatch") == 1
                assert out.count("drop: bad camera_info") == 1
                assert out.count("drop: estimator error") == 0, str(out.diag)
                with out.lock:
                    assert out.diag.level == DiagnosticStatus.WARN
                # Processed: the 9 good frames, the all-zero-depth one and the one after the jump;
                # none of the dropped ones.
                assert wait_for(lambda: out.count("frames_processed") >= 11, 10.0), out.value("frames_processed")
                time.sleep(1.5)
                assert out.count("frames_processed") == 11
                assert pose_node.poll() is None
    finally:
        assert stop_process(pose_node) in (0, -2), log_text(log)
