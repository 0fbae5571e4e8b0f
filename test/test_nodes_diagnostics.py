"""Every pose_ros node over real DDS: its /diagnostics arrive, and `ros2 param set` either takes effect or is
refused with a reason (nodes/diagnostics.py, nodes/params.py).

One graph of node processes, started together: synthetic camera -> object_pose (depth-only, refining the
camera's ground truth), human_pose and topic_monitor; dataset camera (real YCB-Video frames);
skeleton_replay -> retarget; realsense_camera with no device (it keeps retrying, and says so on
/diagnostics). The test process only subscribes and calls the nodes' parameter services, as `ros2 param`
and rqt_robot_monitor do.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import REPO_ROOT, SHARED_DATA
from pose_ros.nodes.diagnostics import (ERROR, OK, WARN, DiagnosticReport, NodeDiagnostics, RateMeter, drop_values,
                                        level_name)
from ros_helpers import (SpinThread, get_remote_parameter, ros_context, set_remote_parameter, start_node_process,
                         stop_process, wait_for)

pytestmark = pytest.mark.ros

TAG = f"dg{os.getpid()}"
CAMERA = f"/{TAG}/camera"
CAMERA_TOPICS = {"color_topic": f"{CAMERA}/color/image_raw", "depth_topic": f"{CAMERA}/aligned_depth_to_color/image_raw",
                 "info_topic": f"{CAMERA}/color/camera_info"}
GT_TOPIC = f"/{TAG}/ground_truth"
BVH = SHARED_DATA / "mocap_cmu131" / "resources" / "scaled_131_01.bvh"
YCBV_SCENE = SHARED_DATA / "ycbv_real" / "data" / "0000"


def _nodes() -> dict[str, tuple[str, dict, str | None]]:
    """{node key: (module, parameters, why it cannot run here or None)}."""
    synthetic_frames = {"base_frame_id": f"{TAG}_camera_link", "frame_id": f"{TAG}_camera_color_optical_frame",
                        "depth_frame_id": f"{TAG}_camera_depth_optical_frame"}
    return {
        "synthetic_camera": ("synthetic_camera_node", {"rate_hz": 2.0, "width": 320, "height": 240, "noise": False,
                                                       "seed": 2, "ground_truth_topic": GT_TOPIC, **synthetic_frames,
                                                       **CAMERA_TOPICS}, None),
        "object_pose": ("object_pose_node", {"model_file": "''", "meshes_dir": str(REPO_ROOT / "meshes"),
                                             "init_poses_topic": GT_TOPIC, "tracking": False, "max_rate_hz": 2.0,
                                             "publish_debug_image": False, **CAMERA_TOPICS}, None),
        "human_pose": ("human_pose_node", {"max_rate_hz": 2.0, **CAMERA_TOPICS}, None),
        "topic_monitor": ("topic_monitor_node", {"ground_truth_topic": GT_TOPIC, "report_period_s": 30.0,
                                                 **CAMERA_TOPICS}, None),
        "dataset_camera": ("dataset_camera_node", {
            "dataset_path": str(YCBV_SCENE), "rate_hz": 1.0, "ground_truth_topic": f"/{TAG}/dataset/ground_truth",
            "color_topic": f"/{TAG}/dataset/color", "depth_topic": f"/{TAG}/dataset/depth",
            "info_topic": f"/{TAG}/dataset/info", "base_frame_id": f"{TAG}_dataset_link",
            "frame_id": f"{TAG}_dataset_color_optical_frame", "depth_frame_id": f"{TAG}_dataset_depth_optical_frame"},
            None if YCBV_SCENE.is_dir() else f"real data not available: {YCBV_SCENE}"),
        "skeleton_replay": ("skeleton_replay_node", {"bvh_file": str(BVH), "rate_hz": 10.0, "topic": f"/{TAG}/skeletons",
                                                     "frame_id": f"{TAG}_replay_optical_frame",
                                                     "base_frame_id": f"{TAG}_replay_link"},
                            None if BVH.is_file() else f"real data not available: {BVH}"),
        "retarget": ("retarget_node", {"skeletons_topic": f"/{TAG}/skeletons", "rate_hz": 20.0,
                                       "measured_joint_states_topic": f"/{TAG}/joint_states"}, None),
        "realsense_camera": ("realsense_camera_node", {"serial_no": "'000000000000'", "retry_period_s": 0.5,
                                                       "color_topic": f"/{TAG}/rs/color", "depth_topic": f"/{TAG}/rs/depth",
                                                       "info_topic": f"/{TAG}/rs/info",
                                                       "depth_info_topic": f"/{TAG}/rs/depth_info",
                                                       "base_frame_id": f"{TAG}_rs_link"}, None),
    }


NODES = _nodes()


def node_name(key: str) -> str:
    return f"{key}_{TAG}"


class DiagnosticsListener:
    """The latest /diagnostics status of each node (by status name) and how many arrived."""

    def __init__(self, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from pose_ros.nodes.qos import result_qos
        self.lock = threading.Lock()
        self.latest: dict[str, object] = {}
        self.count: dict[str, int] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, result_qos(depth=100))

    def _on(self, msg) -> None:
        with self.lock:
            for status in msg.status:
                self.latest[status.name] = status
                self.count[status.name] = self.count.get(status.name, 0) + 1

    def status(self, key: str):
        with self.lock:
            return self.latest.get(f"pose_ros: {node_name(key)}")

    def values(self, key: str) -> dict[str, str]:
        status = self.status(key)
        return {kv.key: kv.value for kv in status.values} if status is not None else {}

    def n(self, key: str) -> int:
        with self.lock:
            return self.count.get(f"pose_ros: {node_name(key)}", 0)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    import rclpy

    from pose_ros.msg import ObjectPoseArray
    from pose_ros.nodes.qos import result_qos

    tmp = tmp_path_factory.mktemp("diagnostics")
    procs, logs = {}, {}
    try:
        for key, (module, params, skip) in NODES.items():
            if skip is None:
                logs[key] = tmp / f"{key}.log"
                procs[key] = start_node_process(module, name=node_name(key), params=params, log_path=logs[key])
        with ros_context() as context:
            node = rclpy.create_node(f"diagnostics_test_{TAG}", context=context)
            listener = DiagnosticsListener(node)
            lock, gt, poses = threading.Lock(), [], []

            def keep(store):
                def cb(msg):
                    with lock:
                        store.append((time.monotonic(), msg))
                return cb
            node.create_subscription(ObjectPoseArray, GT_TOPIC, keep(gt), result_qos(depth=50))
            node.create_subscription(ObjectPoseArray, f"/{node_name('object_pose')}/poses", keep(poses),
                                     result_qos(depth=50))
            with SpinThread(context, node):
                yield {"node": node, "listener": listener, "procs": procs, "logs": logs, "lock": lock, "gt": gt,
                       "poses": poses}
    finally:
        for proc in procs.values():
            stop_process(proc)


def _require(graph, key: str):
    module, params, skip = NODES[key]
    if skip is not None:
        pytest.skip(skip)
    proc, log = graph["procs"][key], graph["logs"][key]
    assert proc.poll() is None, f"{key} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
    return proc, log


def _log_tail(graph, key: str) -> str:
    return graph["logs"][key].read_text()[-3000:] if key in graph["logs"] else ""


# --------------------------------------------------------------------------- /diagnostics
# What each node's status must show once it runs (keys of its values), and the level it must reach.
EXPECTED = {
    "synthetic_camera": ({"frames_published", "rate_hz", "render_ms_last"}, OK),
    "object_pose": ({"frames_processed", "rate_hz", "frames_received", "objects_enabled", "tf"}, None),
    "human_pose": ({"frames_processed", "rate_hz", "people", "max_rate_hz"}, None),
    "topic_monitor": ({"gt_instances_scored", "report_period_s", "camera_qos"}, None),
    "dataset_camera": ({"frames_published", "rate_hz", "position", "skipped_frames"}, OK),
    "skeleton_replay": ({"messages_published", "rate_hz", "clip_frame"}, OK),
    "retarget": ({"state", "skeleton_rate_hz", "command_rate_hz", "invalid_inputs", "watchdog_trips"}, OK),
    "realsense_camera": ({"connected", "opens", "open_failures", "last_error"}, ERROR),
}


@pytest.mark.parametrize("key", list(NODES))
def test_every_node_publishes_its_diagnostics(graph, key):
    _require(graph, key)
    listener = graph["listener"]
    keys, level = EXPECTED[key]
    ok = wait_for(lambda: listener.n(key) >= 2 and keys <= set(listener.values(key))
                  and (level is None or listener.status(key).level == level), 240.0, period_s=0.2)
    status = listener.status(key)
    assert ok, (f"{key}: {listener.n(key)} statuses, last {status}", _log_tail(graph, key))
    assert status.message, status
    if key == "realsense_camera":   # no device: says so, and keeps retrying
        assert status.message.startswith("no camera") and listener.values(key)["connected"] == "False"
        assert "no device matching serial_no '000000000000'" in listener.values(key)["last_error"]
    if key in ("synthetic_camera", "object_pose"):
        counter = "frames_published" if key == "synthetic_camera" else "frames_processed"
        assert wait_for(lambda: int(listener.values(key).get(counter, 0)) > 0, 240.0, period_s=0.2), \
            (listener.status(key), _log_tail(graph, key))


# --------------------------------------------------------------------------- ros2 param set
# A parameter each node reads only at start-up, and a value to try.
STARTUP_SET = {"synthetic_camera": ("seed", 7), "object_pose": ("use_icp", False), "human_pose": ("convention", "coco17"),
               "topic_monitor": ("meshes_dir", "/tmp"), "dataset_camera": ("dataset_path", "/tmp"),
               "skeleton_replay": ("speed", 2.0), "retarget": ("rate_hz", 10.0),
               "realsense_camera": ("serial_no", "123")}


@pytest.mark.parametrize("key", list(NODES))
def test_a_startup_parameter_set_is_refused_with_the_reason(graph, key):
    _require(graph, key)
    name, value = STARTUP_SET[key]
    node, target = graph["node"], f"/{node_name(key)}"
    before = get_remote_parameter(node, target, name, timeout_s=240.0)
    res = set_remote_parameter(node, target, name, value, timeout_s=240.0)
    assert not res.successful, f"{key}: setting {name} succeeded although it is read at start-up"
    assert res.reason.startswith(f"{name} is read at start-up; restart the node to change it"), res.reason
    if key == "realsense_camera":
        assert "none of this node's parameters is applied live" in res.reason
    else:
        assert "parameters applied live: " in res.reason
    assert get_remote_parameter(node, target, name) == before


def _frozen(graph, since: float) -> bool:
    """Two ground-truth messages after `since` with the same object poses: the scene stands still."""
    with graph["lock"]:
        msgs = [m for t, m in graph["gt"] if t > since]
    if len(msgs) < 2:
        return False
    poses = [[(o.class_name, round(o.pose.pose.position.x, 9), round(o.pose.pose.position.z, 9)) for o in m.objects]
             for m in msgs[-2:]]
    return poses[0] == poses[1]


def _moving(graph) -> bool:
    with graph["lock"]:
        msgs = [m for _, m in graph["gt"]][-2:]
    return len(msgs) == 2 and [o.pose.pose.position.x for o in msgs[0].objects] != \
        [o.pose.pose.position.x for o in msgs[1].objects]


def _only_class(graph, since: float, name: str) -> bool:
    """The last two pose messages after `since` hold objects of class `name` only (a frame whose
    processing began before the set may still publish the others once)."""
    with graph["lock"]:
        msgs = [m for t, m in graph["poses"] if t > since and m.objects][-2:]
    return len(msgs) == 2 and all(o.class_name == name for m in msgs for o in m.objects)


@pytest.mark.parametrize("key", [k for k in NODES if k != "realsense_camera"])
def test_a_live_parameter_set_takes_effect(graph, key):
    """Each node's live parameter, set as `ros2 param set` does, changes what the node does (seen on its
    outputs or in its own /diagnostics), not only the stored value."""
    _require(graph, key)
    node, target, listener = graph["node"], f"/{node_name(key)}", graph["listener"]

    def set_(name, value):
        res = set_remote_parameter(node, target, name, value, timeout_s=240.0)
        assert res.successful, f"{key}: {name} := {value!r} refused: {res.reason}"
        assert get_remote_parameter(node, target, name) == value
        return time.monotonic()

    def diag_says(name, text):
        return wait_for(lambda: listener.values(key).get(name) == text, 60.0, period_s=0.2), listener.status(key)

    if key == "synthetic_camera":   # time_scale 0: the scene (and its ground truth) stands still
        assert wait_for(lambda: _moving(graph), 240.0, period_s=0.2), "the scene never moved"
        t = set_("time_scale", 0.0)
        assert wait_for(lambda: _frozen(graph, t + 0.1), 60.0, period_s=0.2), "the scene kept moving"
        set_("time_scale", 1.0)
    elif key == "object_pose":      # enabled_objects: only that class is estimated from then on
        assert wait_for(lambda: any(m.objects for _, m in list(graph["poses"])), 240.0, period_s=0.2), \
            _log_tail(graph, key)
        with graph["lock"]:
            names = sorted({o.class_name for _, m in graph["poses"] for o in m.objects})
        assert len(names) >= 2, f"only {names} estimated: switching all but one off would show nothing"
        t = set_("enabled_objects", [names[0]])
        assert wait_for(lambda: _only_class(graph, t, names[0]), 120.0, period_s=0.2), \
            (names, _log_tail(graph, key))
        assert listener.values(key).get("objects_enabled") == names[0] or diag_says("objects_enabled", names[0])[0]
        res = set_remote_parameter(node, target, "enabled_objects", ["no_such_object"])
        assert not res.successful and "not in the model" in res.reason, res.reason
        set_("enabled_objects", [])
    elif key == "human_pose":       # max_rate_hz: the worker's rate limiter is replaced
        set_("max_rate_hz", 3.0)
        ok, status = diag_says("max_rate_hz", "3")
        assert ok, status
    elif key == "topic_monitor":    # report_period_s: the report timer's period changes
        set_("report_period_s", 2.5)
        ok, status = diag_says("report_period_s", "2.5")
        assert ok, status
    elif key == "dataset_camera":   # rate_hz: the publishing timer's period changes
        set_("rate_hz", 2.0)
        ok, status = diag_says("rate_set_hz", "2")
        assert ok, status
    elif key == "skeleton_replay":  # loop: read at the end of the clip
        set_("loop", False)
        ok, status = diag_says("loop", "False")
        assert ok, status
        set_("loop", True)
    elif key == "retarget":         # stamp_source: read per skeleton; a value it does not know is refused
        set_("stamp_source", "arrival")
        ok, status = diag_says("stamp_source", "arrival")
        assert ok, status
        res = set_remote_parameter(node, target, "stamp_source", "camera")
        assert not res.successful and "use 'header' or 'arrival'" in res.reason, res.reason
    else:
        raise AssertionError(f"no live-parameter check for {key}")


# --------------------------------------------------------------------------- the helper itself
def test_diagnostics_helper_reports_rates_drops_and_survives_a_failing_collect():
    import rclpy

    meter = RateMeter()
    meter.tick(5)
    time.sleep(0.1)
    assert 5 < meter.rate_hz() < 60 and meter.rate_hz() == 0.0
    assert drop_values({"b": 2, "a": 1}) == {"drop: a": 1, "drop: b": 2}
    assert level_name(WARN) == "WARN"
    with ros_context() as context:
        node = rclpy.create_node(f"diag_helper_{TAG}", context=context)
        calls = []

        def collect():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return DiagnosticReport("fine", {"x": 1.23456, "n": 3}, OK)
        diag = NodeDiagnostics(node, collect, period_s=3600.0, hardware_id=lambda: "dev-1")
        bad = diag.status()
        assert bad.level == ERROR and bad.message == "diagnostics failed: RuntimeError: boom"
        good = diag.status()
        assert good.name == f"pose_ros: diag_helper_{TAG}" and good.hardware_id == "dev-1" and good.level == OK
        assert {kv.key: kv.value for kv in good.values} == {"x": "1.235", "n": "3"}
        node.destroy_node()
