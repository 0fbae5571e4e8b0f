"""Camera subscriptions that match the publisher's QoS (pose_ros/nodes/qos.py), over real DDS.

1. `CameraSubscriptions` in a small real node, publishers in another node of the same graph: auto
   picks best-effort for a best-effort publisher and reliable for a reliable one (seen in the graph,
   as `ros2 topic info -v` shows it) and receives from both; it waits for a publisher that is not
   there yet; it follows a publisher that changes; fixed values override (`reliable` next to a
   best-effort publisher receives nothing, `best-effort` receives from a reliable one).
2. The object pose node (a process, depth-only mode: no trained model) whose classes are named
   `002_master_chef_can`, `my-mug` and `my_mug`: it starts, publishes `~/obj_002_master_chef_can/pose`
   and the two colliding names apart, and refines poses from a best-effort camera, then from a
   reliable one replacing it; a second node with the override `image_qos: reliable` gets nothing
   from the best-effort camera (and says why in its log) and the frames of the reliable one.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from conftest import REPO_ROOT
from pose_ros.msg import ObjectPose, ObjectPoseArray
from pose_ros.nodes.image_conversions import camera_to_camera_info, depth_m_to_image, ns_to_stamp, numpy_to_image
from pose_ros.nodes.qos import (CameraSubscriptions, camera_publisher_qos, image_qos_mode, match_reliability,
                                result_qos, sensor_qos)
from pose_ros.nodes.ros_conversions import T_to_pose
from ros_helpers import SpinThread, ros_context, start_node_process, stop_process, wait_for

OPTICAL_FRAME = "camera_color_optical_frame"


# --------------------------------------------------------------------------- pure parts
def test_image_qos_values_and_the_matching_rule():
    assert [image_qos_mode(v) for v in ("auto", "reliable", "best_effort", "best-effort", "BEST_EFFORT",
                                        "sensor_data")] == ["auto", "reliable", "best_effort", "best_effort",
                                                            "best_effort", "best_effort"]
    with pytest.raises(ValueError, match="auto | reliable | best_effort"):
        image_qos_mode("fast")
    with pytest.raises(ValueError, match="fixed reliability"):
        sensor_qos(reliability="auto")
    rel, be = camera_publisher_qos(reliable=True), camera_publisher_qos(reliable=False)
    assert match_reliability([]) is None
    assert match_reliability([rel, rel]) == "reliable"
    assert match_reliability([rel, be]) == "best_effort"   # any best-effort publisher
    assert match_reliability([be]) == "best_effort"


# --------------------------------------------------------------------------- 1. the helper in a real node
def _image(stamp_ns: int = 0) -> Image:
    return numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8", Header(stamp=ns_to_stamp(stamp_ns)))


class Received:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, msg) -> None:
        with self.lock:
            self.count += 1


def _graph_reliability(node, topic: str, node_name: str):
    """The reliability of `node_name`'s subscription to `topic`, as the graph reports it."""
    infos = [i for i in node.get_subscriptions_info_by_topic(topic) if i.node_name == node_name]
    return infos[0].qos_profile.reliability if infos else None


def _receives(pub, received: Received, n: int = 3, timeout_s: float = 10.0) -> bool:
    start = received.count

    def publish_and_check() -> bool:
        pub.publish(_image())
        return received.count >= start + n
    return wait_for(publish_and_check, timeout_s, period_s=0.05)


@pytest.mark.ros
def test_camera_subscriptions_match_follow_and_override_the_publishers():
    tag = f"q{os.getpid()}"
    t = {k: f"/{tag}/{k}" for k in ("be", "rel", "late", "change", "fixed_rel", "fixed_be")}
    with ros_context() as context:
        import rclpy
        cam = rclpy.create_node(f"camera_{tag}", context=context)
        sub_node = rclpy.create_node(f"subscriber_{tag}", context=context)
        be_pub = cam.create_publisher(Image, t["be"], camera_publisher_qos(reliable=False))
        rel_pub = cam.create_publisher(Image, t["rel"], camera_publisher_qos(reliable=True))
        with SpinThread(context, cam, sub_node):
            auto = CameraSubscriptions(sub_node, "auto", depth=5, poll_period_s=0.1)
            got = {k: Received() for k in t}
            for k in ("be", "rel", "late", "change"):
                auto.add(Image, t[k], got[k])
            fixed_rel = CameraSubscriptions(sub_node, "reliable", poll_period_s=0.1)
            fixed_rel.add(Image, t["fixed_rel"], got["fixed_rel"])
            fixed_be = CameraSubscriptions(sub_node, "best-effort", poll_period_s=0.1)  # alias of best_effort
            fixed_be.add(Image, t["fixed_be"], got["fixed_be"])

            # Publishers already there: matched, as the graph shows, and both deliver.
            assert wait_for(lambda: auto.reliability(t["be"]) == "best_effort"
                            and auto.reliability(t["rel"]) == "reliable", 10.0), auto.summary()
            assert wait_for(lambda: _graph_reliability(cam, t["be"], sub_node.get_name()) == ReliabilityPolicy.BEST_EFFORT
                            and _graph_reliability(cam, t["rel"], sub_node.get_name()) == ReliabilityPolicy.RELIABLE, 5.0)
            assert _receives(be_pub, got["be"]), "best-effort publisher did not reach the auto subscription"
            assert _receives(rel_pub, got["rel"]), "reliable publisher did not reach the auto subscription"

            # No publisher yet: no subscription; one appears: subscribed with its QoS, data flows.
            time.sleep(0.5)
            assert auto.reliability(t["late"]) is None
            assert _graph_reliability(cam, t["late"], sub_node.get_name()) is None
            late_pub = cam.create_publisher(Image, t["late"], camera_publisher_qos(reliable=False))
            assert wait_for(lambda: auto.reliability(t["late"]) == "best_effort", 10.0), auto.summary()
            assert _receives(late_pub, got["late"])

            # A reliable publisher replaced by a best-effort one (driver restarted with sensor-data QoS).
            # destroyed below while the spin thread runs: no QoS event handlers (see FakeCamera.use)
            no_events = PublisherEventCallbacks(use_default_callbacks=False)
            change_pub = cam.create_publisher(Image, t["change"], camera_publisher_qos(reliable=True),
                                              event_callbacks=no_events)
            assert wait_for(lambda: auto.reliability(t["change"]) == "reliable", 10.0)
            assert _receives(change_pub, got["change"])
            cam.destroy_publisher(change_pub)
            change_pub = cam.create_publisher(Image, t["change"], camera_publisher_qos(reliable=False),
                                              event_callbacks=no_events)
            assert wait_for(lambda: auto.reliability(t["change"]) == "best_effort", 10.0), auto.summary()
            assert _receives(change_pub, got["change"]), "no data after the publisher changed its QoS"

            # Overrides: fixed reliable never receives from a best-effort publisher (the auto subscription
            # on the same topic does); fixed best-effort receives from a reliable one.
            fixed_rel_pub = cam.create_publisher(Image, t["fixed_rel"], camera_publisher_qos(reliable=False))
            probe = Received()
            probe_subs = CameraSubscriptions(sub_node, "auto", poll_period_s=0.1)
            probe_subs.add(Image, t["fixed_rel"], probe)
            assert _receives(fixed_rel_pub, probe), "best-effort publisher reached no auto subscription"
            assert fixed_rel.reliability(t["fixed_rel"]) == "reliable" and got["fixed_rel"].count == 0
            fixed_be_pub = cam.create_publisher(Image, t["fixed_be"], camera_publisher_qos(reliable=True))
            assert fixed_be.reliability(t["fixed_be"]) == "best_effort"
            assert _receives(fixed_be_pub, got["fixed_be"])
            assert wait_for(lambda: _graph_reliability(cam, t["fixed_be"], sub_node.get_name())
                            == ReliabilityPolicy.BEST_EFFORT, 5.0)


# --------------------------------------------------------------------------- 2. the object pose node
CLASS_NAMES = {"mug": "002_master_chef_can", "box": "my-mug", "bottle": "my_mug"}   # demo mesh -> class name


def _renamed_meshes(root: Path) -> Path:
    """The demo meshes under new class names (obj_id order kept: mug 1, box 2, bottle 3)."""
    out = root / "meshes"
    for folder, name in CLASS_NAMES.items():
        shutil.copytree(REPO_ROOT / "meshes" / folder, out / name.replace(" ", "_"))
        cfg_path = out / name.replace(" ", "_") / "object.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["name"] = name
        cfg_path.write_text(yaml.safe_dump(cfg))
    return out


class FakeCamera:
    """One rendered frame of the renamed objects, published at 10 Hz with fresh stamps on publishers
    of a chosen reliability (swappable), plus the true poses as seeds."""

    def __init__(self, node, prefix: str, init_topic: str, meshes: Path) -> None:
        from pose_ros.core.camera import PinholeCamera
        from pose_ros.core.object_model import load_object_dir
        from pose_ros.synth.stream import SyntheticSceneStream

        self.node, self.prefix = node, prefix
        self.camera = PinholeCamera.from_fov(320, 240, 69.0)
        render, depth_m, truth = SyntheticSceneStream(load_object_dir(meshes), self.camera, seed=2, noise=False,
                                                      n_distractors=0, occluder=False).frame(0.0)
        self.rgb, self.depth_m, self.truth = render.rgb, np.where(depth_m > 0, depth_m, 0).astype(np.float32), truth
        self.seed_pub = node.create_publisher(ObjectPoseArray, init_topic, result_qos())
        self.lock = threading.Lock()
        self.pubs: list = []
        self.reliable: bool | None = None
        node.create_timer(0.1, self._tick)

    def use(self, reliable: bool) -> None:
        """(Re)create the three camera publishers with this reliability."""
        with self.lock:
            for p in self.pubs:
                self.node.destroy_publisher(p)
            qos = camera_publisher_qos(depth=2, reliable=reliable)
            # No QoS event handlers: these publishers are destroyed here while the spin thread may be
            # adding their handlers to its wait set (rclpy then raises InvalidHandle there, which ends
            # the spin thread and with it all reception in this test).
            events = PublisherEventCallbacks(use_default_callbacks=False)
            self.pubs = [self.node.create_publisher(Image, f"{self.prefix}/color/image_raw", qos,
                                                    event_callbacks=events),
                         self.node.create_publisher(Image, f"{self.prefix}/aligned_depth_to_color/image_raw", qos,
                                                    event_callbacks=events),
                         self.node.create_publisher(CameraInfo, f"{self.prefix}/color/camera_info", qos,
                                                    event_callbacks=events)]
            self.reliable = reliable

    def _tick(self) -> None:
        header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id=OPTICAL_FRAME)
        msgs = (numpy_to_image(self.rgb, "rgb8", header), depth_m_to_image(self.depth_m, "16UC1", header),
                camera_to_camera_info(self.camera, header))
        with self.lock:
            for pub, msg in zip(self.pubs, msgs):
                pub.publish(msg)
        seeds = ObjectPoseArray(header=header)
        for i, g in enumerate(self.truth):
            o = ObjectPose(class_name=g.name, class_id=int(g.obj_id), instance_id=i, score=1.0)
            o.pose.pose = T_to_pose(g.T_cam_obj)
            seeds.objects.append(o)
        self.seed_pub.publish(seeds)


class Diagnostics:
    """frames_processed of each object pose node, from /diagnostics."""

    def __init__(self, node) -> None:
        self.processed: dict[str, int] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, result_qos())

    def _on(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            for kv in s.values:
                if kv.key == "frames_processed":
                    self.processed[s.name.removeprefix("pose_ros: ")] = int(kv.value)


@pytest.mark.ros
def test_object_pose_node_with_digit_and_colliding_class_names_takes_any_camera_qos(tmp_path):
    tag = f"oq{os.getpid()}"
    prefix, init_topic = f"/{tag}/camera", f"/{tag}/init_poses"
    auto_name, fixed_name = f"object_pose_auto_{tag}", f"object_pose_fixed_{tag}"
    color_topic = f"{prefix}/color/image_raw"
    meshes = _renamed_meshes(tmp_path)
    common = {"model_file": "''", "meshes_dir": str(meshes), "init_poses_topic": init_topic, "tracking": False,
              "publish_debug_image": False, "publish_markers": False, "max_rate_hz": 5.0, "status_period_s": 60.0,
              "color_topic": color_topic, "depth_topic": f"{prefix}/aligned_depth_to_color/image_raw",
              "info_topic": f"{prefix}/color/camera_info"}
    logs = {auto_name: tmp_path / "auto.log", fixed_name: tmp_path / "fixed.log"}
    procs = {auto_name: start_node_process("object_pose_node", name=auto_name, params=common, log_path=logs[auto_name]),
             fixed_name: start_node_process("object_pose_node", name=fixed_name, log_path=logs[fixed_name],
                                            params={**common, "image_qos": "reliable"})}

    def log_text() -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in logs.items() if p.exists())

    def alive() -> bool:
        return all(p.poll() is None for p in procs.values())

    try:
        with ros_context() as context:
            import rclpy
            node = rclpy.create_node(f"qos_test_{tag}", context=context)
            diag = Diagnostics(node)
            class_poses: list[PoseStamped] = []
            node.create_subscription(PoseStamped, f"/{auto_name}/obj_002_master_chef_can/pose",
                                     class_poses.append, result_qos(depth=20))
            poses: list[ObjectPoseArray] = []
            node.create_subscription(ObjectPoseArray, f"/{auto_name}/poses", poses.append, result_qos(depth=20))
            cam = FakeCamera(node, prefix, init_topic, meshes)
            with SpinThread(context, node):
                # Class names: valid topics, the two colliding names apart (class ids 2 and 3 appended).
                def topics() -> set[str]:
                    return {n for n, _ in node.get_topic_names_and_types()}
                expected = {f"/{auto_name}/obj_002_master_chef_can/pose", f"/{auto_name}/my_mug_2/pose",
                            f"/{auto_name}/my_mug_3/pose"}
                assert wait_for(lambda: expected <= topics() or not alive(), 60.0) and alive(), \
                    f"class topics missing: {sorted(t for t in topics() if auto_name in t)}\n{log_text()}"

                # Best-effort camera: the auto node matches it and refines poses; the reliable override gets nothing.
                cam.use(reliable=False)
                assert wait_for(lambda: diag.processed.get(auto_name, 0) >= 2 or not alive(), 60.0) and alive(), \
                    f"no frames from a best-effort camera\n{log_text()}"
                # The graph reports another process's subscription once discovery has carried it here.
                assert wait_for(lambda: _graph_reliability(node, color_topic, auto_name) == ReliabilityPolicy.BEST_EFFORT
                                and _graph_reliability(node, color_topic, fixed_name) == ReliabilityPolicy.RELIABLE,
                                10.0)
                assert wait_for(lambda: any(o.class_name == "002_master_chef_can" and o.refinement.icp_applied
                                            for m in list(poses) for o in m.objects), 30.0), log_text()
                assert wait_for(lambda: len(class_poses) >= 1, 10.0), "nothing on ~/obj_002_master_chef_can/pose"
                assert class_poses[-1].header.frame_id == OPTICAL_FRAME
                assert wait_for(lambda: fixed_name in diag.processed, 10.0)
                assert diag.processed[fixed_name] == 0, "a reliable subscription received best-effort frames?"
                assert wait_for(lambda: "publishes" in logs[fixed_name].read_text(), 10.0), log_text()
                assert "best-effort" in logs[fixed_name].read_text()

                # The camera comes back reliable: the auto node switches to reliable, both nodes get frames.
                done_before = diag.processed[auto_name]
                cam.use(reliable=True)
                assert wait_for(lambda: _graph_reliability(node, color_topic, auto_name) == ReliabilityPolicy.RELIABLE,
                                15.0), log_text()
                assert wait_for(lambda: diag.processed.get(auto_name, 0) >= done_before + 2
                                and diag.processed.get(fixed_name, 0) >= 1 or not alive(), 60.0) and alive(), \
                    f"no frames from the reliable camera: {diag.processed}\n{log_text()}"
                auto_log = logs[auto_name].read_text()
                assert "camera QoS" in auto_log and "best_effort" in auto_log and "publishers changed" in auto_log
    finally:
        codes = {n: stop_process(p) for n, p in procs.items()}
        assert all(c in (0, -2) for c in codes.values()), f"{codes}\n{log_text()}"


# --------------------------------------------------------------------------- 3. every camera-subscribing node
@pytest.mark.ros
def test_human_pose_and_topic_monitor_nodes_match_a_best_effort_camera(tmp_path):
    """The other nodes that subscribe to cameras use the same matching (seen in the graph)."""
    tag = f"oh{os.getpid()}"
    prefix = f"/{tag}/camera"
    topics = {"color_topic": f"{prefix}/color/image_raw", "depth_topic": f"{prefix}/aligned_depth_to_color/image_raw",
              "info_topic": f"{prefix}/color/camera_info"}
    names = {"human_pose_node": f"human_pose_{tag}", "topic_monitor_node": f"topic_monitor_{tag}"}
    logs = {m: tmp_path / f"{m}.log" for m in names}
    with ros_context() as context:
        import rclpy
        node = rclpy.create_node(f"camera_{tag}", context=context)
        qos = camera_publisher_qos(reliable=False)
        for key, topic in topics.items():
            node.create_publisher(CameraInfo if key == "info_topic" else Image, topic, qos)
        procs = {m: start_node_process(m, name=n, params={**topics, "report_period_s": 60.0} if m == "topic_monitor_node"
                                       else {**topics, "status_period_s": 60.0}, log_path=logs[m])
                 for m, n in names.items()}
        try:
            with SpinThread(context, node):
                for module, name in names.items():
                    assert wait_for(lambda: all(_graph_reliability(node, t, name) == ReliabilityPolicy.BEST_EFFORT
                                                for t in topics.values()) or procs[module].poll() is not None, 60.0), \
                        f"{module}: {[_graph_reliability(node, t, name) for t in topics.values()]}\n" + \
                        logs[module].read_text()[-3000:]
                    assert "best_effort (image_qos: auto; best-effort publisher" in logs[module].read_text()
        finally:
            codes = {m: stop_process(p) for m, p in procs.items()}
        assert all(c in (0, -2) for c in codes.values()), codes


@pytest.mark.ros
def test_a_wrong_image_qos_value_stops_the_node_with_one_clear_line():
    import subprocess
    import sys
    procs = {m: subprocess.Popen([sys.executable, "-m", f"pose_ros.nodes.{m}", "--ros-args", "-p", "image_qos:=fast"],
                                 cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for m in ("object_pose_node", "human_pose_node", "topic_monitor_node")}
    for module, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, (module, out[-2000:])
        assert "startup failed: image_qos must be one of auto | reliable | best_effort, got 'fast'" in out, out[-2000:]
        assert "Traceback" not in out
