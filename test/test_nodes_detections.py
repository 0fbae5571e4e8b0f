"""vision_msgs/Detection3DArray beside pose_ros's own array (nodes/ros_conversions.py, object_pose_node).

1. The conversion: class id = class name, score, pose with covariance, bbox centre moved by the pose and
   size = the mesh's box, id = instance id; boxes from the mesh, the trained keypoints or the diameter.
2. The generated vision_msgs (tools/build_std_interfaces.sh) has the wire type hashes of ROS 2's vision_msgs 4.x.
3. Over real DDS: a plain subscriber of Detection3DArray receives the object node's ~/detections on a
   synthetic camera, at the true poses, with the mesh's box.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from conftest import REPO_ROOT
from pose_ros.core.transforms import T_from_pos_quat
from pose_ros.nodes.ros_conversions import T_to_pose, detection3d_array, object_box, pose_to_T
from ros_helpers import SpinThread, ros_context, start_ground_truth_object_chain, stop_process, wait_for

vision_msgs = pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated: run `make setup` "
                                                            "(tools/build_std_interfaces.sh)")

# Generated C type support of ROS 2's vision_msgs 4.x (a colcon build of ros-perception/vision_msgs; see the
# report of issue 19 item 3): the hashes RViz plugins and FoundationPose/DOPE consumers on a ROS install match.
VISION_MSGS_TYPE_HASHES = {
    "Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "Detection3D": "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "BoundingBox3D": "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
}


def _pose_array(objects):
    from std_msgs.msg import Header

    from pose_ros.msg import ObjectPose, ObjectPoseArray
    out = ObjectPoseArray(header=Header(frame_id="camera_color_optical_frame"))
    out.header.stamp.sec, out.header.stamp.nanosec = 12, 345
    for name, inst, score, T in objects:
        o = ObjectPose(class_name=name, class_id=1, instance_id=inst, score=score)
        o.pose.pose = T_to_pose(T)
        o.pose.covariance = [float(i) for i in range(36)]
        out.objects.append(o)
    return out


# --------------------------------------------------------------------------- 1. conversion
def test_detection3d_array_carries_class_score_pose_covariance_box_and_instance():
    from scipy.spatial.transform import Rotation

    T = T_from_pos_quat(np.array([0.1, -0.05, 0.6]), Rotation.from_euler("xyz", [0.3, -0.2, 1.0]).as_quat())
    centre, size = np.array([0.0, 0.01, 0.02]), np.array([0.05, 0.06, 0.10])
    poses = _pose_array([("002_master_chef_can", 3, 0.8, T), ("mug", 0, 0.5, np.eye(4))])
    det = detection3d_array(poses, {"002_master_chef_can": (centre, size)})
    assert det.header == poses.header and len(det.detections) == 2
    d = det.detections[0]
    assert d.header == poses.header and d.id == "3" and len(d.results) == 1
    h = d.results[0]
    assert h.hypothesis.class_id == "002_master_chef_can" and h.hypothesis.score == pytest.approx(0.8)
    assert np.allclose(pose_to_T(h.pose.pose), T) and list(h.pose.covariance) == [float(i) for i in range(36)]
    # the box centre is the model-frame box centre carried by the pose, oriented as the object
    assert np.allclose(pose_to_T(d.bbox.center), T @ np.block([[np.eye(3), centre[:, None]], [np.zeros((1, 3)), 1]]))
    assert np.allclose([d.bbox.size.x, d.bbox.size.y, d.bbox.size.z], size)
    # a class without a box: centre at the object pose, zero size
    d = det.detections[1]
    assert d.id == "0" and np.allclose(pose_to_T(d.bbox.center), np.eye(4)) and d.bbox.size.x == 0.0
    assert len(detection3d_array(_pose_array([]), {}).detections) == 0


def test_object_box_from_mesh_keypoints_or_diameter():
    from pose_ros.core.object_model import load_object_dir
    from pose_ros.objects.model_file import ObjectSpec

    model = load_object_dir(REPO_ROOT / "meshes")[0]
    c, s = object_box(model)
    assert np.allclose(c, 0.5 * (model.mesh.bounds[0] + model.mesh.bounds[1]))
    assert np.allclose(s, model.mesh.bounds[1] - model.mesh.bounds[0]) and np.all(s > 0.01)
    kp = np.array([[-0.02, -0.03, 0.0], [0.02, 0.03, 0.1], [0.0, 0.0, 0.05]])   # last = box centre
    c, s = object_box(spec=ObjectSpec(name="x", obj_id=1, keypoints_m=kp, diameter_m=0.12))
    assert np.allclose(c, [0.0, 0.0, 0.05]) and np.allclose(s, [0.04, 0.06, 0.1])
    c, s = object_box(spec=ObjectSpec(name="x", obj_id=1, keypoints_m=np.zeros((0, 3)), diameter_m=0.12))
    assert np.allclose(s, 0.12)
    with pytest.raises(ValueError):
        object_box()


# --------------------------------------------------------------------------- 2. wire type
@pytest.mark.parametrize("name", sorted(VISION_MSGS_TYPE_HASHES))
def test_generated_vision_msgs_has_ros_type_hashes(name):
    from pose_ros.sensors.bag import type_hash
    got = type_hash(f"vision_msgs/msg/{name}")
    if not got:
        pytest.skip("no type description (.json) installed for vision_msgs")
    assert got == VISION_MSGS_TYPE_HASHES[name]


# --------------------------------------------------------------------------- 3. over DDS
def _log(*paths) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in paths if p.exists())


def test_object_node_detections_reach_a_plain_subscriber(tmp_path):
    """Synthetic camera (frozen scene) -> object_pose refining the ground truth on depth -> ~/detections
    (Detection3DArray) at the true poses, the mesh box's size, and the same objects as ~/poses."""
    import rclpy

    from pose_ros.core.object_model import load_object_dir
    from pose_ros.msg import ObjectPoseArray
    from pose_ros.nodes.qos import result_qos

    tag = f"det{os.getpid()}"
    node_name = f"object_pose_{tag}"
    cam_log, node_log = tmp_path / "camera.log", tmp_path / "object_pose.log"
    camera, pose_node, gt_topic = start_ground_truth_object_chain(tag, tmp_path, node_params={"publish_markers": False})
    boxes = {m.name: object_box(m) for m in load_object_dir(REPO_ROOT / "meshes")}
    lock = threading.Lock()
    got: dict[str, object] = {}
    try:
        with ros_context() as context:
            node = rclpy.create_node(f"det_test_{tag}", context=context)

            def keep(key):
                def cb(msg):
                    with lock:
                        got[key] = msg
                return cb
            node.create_subscription(ObjectPoseArray, gt_topic, keep("truth"), result_qos())
            node.create_subscription(vision_msgs.Detection3DArray, f"/{node_name}/detections", keep("det"), result_qos())
            node.create_subscription(ObjectPoseArray, f"/{node_name}/poses", keep("poses"), result_qos())
            with SpinThread(context, node):
                assert wait_for(lambda: "truth" in got and got["truth"].objects or camera.poll() is not None, 180.0), \
                    _log(cam_log)
                truth = got["truth"]
                expected = {(o.class_name, o.instance_id): pose_to_T(o.pose.pose) for o in truth.objects if o.score >= 0.5}
                assert expected, "no object at least half visible in the frozen scene"

                def complete() -> bool:
                    with lock:
                        det = got.get("det")
                    return det is not None and {(d.results[0].hypothesis.class_id, int(d.id))
                                                for d in det.detections if d.results} >= set(expected)
                ok = wait_for(lambda: complete() or pose_node.poll() is not None, 240.0)
                assert ok and pose_node.poll() is None, _log(cam_log, node_log)
                with lock:
                    det = got["det"]
                assert det.header.frame_id and det.header.frame_id == det.detections[0].header.frame_id
                for d in det.detections:
                    key = (d.results[0].hypothesis.class_id, int(d.id))
                    if key not in expected:
                        continue
                    T_true = expected[key]
                    T = pose_to_T(d.results[0].pose.pose)
                    assert np.linalg.norm(T[:3, 3] - T_true[:3, 3]) < 0.02, key
                    assert 0.0 < d.results[0].hypothesis.score <= 1.0
                    centre, size = boxes[key[0]]
                    assert np.allclose([d.bbox.size.x, d.bbox.size.y, d.bbox.size.z], size, atol=1e-6)
                    assert np.allclose(pose_to_T(d.bbox.center)[:3, 3], (T @ np.append(centre, 1.0))[:3], atol=1e-6)
                infos = node.get_publishers_info_by_topic(f"/{node_name}/detections")
                assert [i.topic_type for i in infos] == ["vision_msgs/msg/Detection3DArray"]
                type_hash = getattr(infos[0], "topic_type_hash", None)
                if type_hash is not None:
                    assert str(type_hash) == VISION_MSGS_TYPE_HASHES["Detection3DArray"]
    finally:
        stop_process(camera)
        stop_process(pose_node)
