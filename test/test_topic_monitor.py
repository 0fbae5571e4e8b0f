"""The demo's live monitor, which is what `pose-ros demo` and `bench-node` report: a real
topic_monitor process scoring poses published over DDS against published ground truth.

Known answers: the mug's estimate is the truth (right), the box's is 10 cm off (wrong) and
missing in every other frame (not found), the bottle is 10% visible (not scored) until it comes into
view on frame 6 and is posed right from frame 8 on (its appearance latency: at least two frames).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from ros_helpers import SpinThread, ros_context, start_node_process, stop_process, wait_for

NS = f"/topic_monitor_{os.getpid()}"
FRAMES = 10


def _objects(pairs):
    from pose_ros.msg import ObjectPose
    from pose_ros.nodes.ros_conversions import T_to_pose

    out = []
    for name, T, score in pairs:
        o = ObjectPose(class_name=name, score=float(score))
        o.pose.pose = T_to_pose(T)
        out.append(o)
    return out


@pytest.mark.ros
def test_monitor_scores_each_object_and_writes_the_timeline(tmp_path):
    from pose_ros.msg import ObjectPoseArray
    from pose_ros.nodes.image_conversions import ns_to_stamp
    from pose_ros.nodes.qos import result_qos

    summary, errors = tmp_path / "summary.json", tmp_path / "errors.jsonl"
    proc = start_node_process("topic_monitor_node", params={
        "ground_truth_topic": f"{NS}/gt", "object_poses_topic": f"{NS}/poses", "color_topic": f"{NS}/color",
        "depth_topic": f"{NS}/depth", "info_topic": f"{NS}/info", "report_period_s": 0.5,
        "summary_file": str(summary), "errors_file": str(errors)}, name="monitor", log_path=tmp_path / "monitor.log")
    T_mug, T_box, T_bottle = np.eye(4), np.eye(4), np.eye(4)
    T_mug[:3, 3], T_box[:3, 3], T_bottle[:3, 3] = (0.0, 0.0, 0.6), (0.15, 0.0, 0.7), (-0.15, 0.0, 0.7)
    T_box_wrong = T_box.copy()
    T_box_wrong[0, 3] += 0.10
    try:
        with ros_context() as ctx:
            import rclpy

            node = rclpy.create_node("monitor_probe", context=ctx)
            gt_pub = node.create_publisher(ObjectPoseArray, f"{NS}/gt", result_qos())
            est_pub = node.create_publisher(ObjectPoseArray, f"{NS}/poses", result_qos())
            with SpinThread(ctx, node):
                assert wait_for(lambda: gt_pub.get_subscription_count() > 0 and est_pub.get_subscription_count() > 0,
                                30.0), (tmp_path / "monitor.log").read_text()[-1500:]
                t0 = time.time_ns()
                for k in range(FRAMES):
                    while time.time_ns() < t0 + k * 100_000_000:    # a frame is not sent before its stamp
                        time.sleep(0.005)
                    stamp = ns_to_stamp(t0 + k * 100_000_000)
                    gt = ObjectPoseArray(objects=_objects([("mug", T_mug, 1.0), ("box", T_box, 0.9),
                                                           ("bottle", T_bottle, 0.1 if k < 6 else 0.9)]))
                    gt.header.stamp = stamp
                    est = [("mug", T_mug, 0.9)] + ([("box", T_box_wrong, 0.8)] if k % 2 == 0 else []) \
                        + ([("bottle", T_bottle, 0.7)] if k >= 8 else [])
                    msg = ObjectPoseArray(objects=_objects(est))
                    msg.header.stamp = stamp
                    # the truth before the estimate, and in every third frame after it (separate
                    # streams: either may arrive first); both orders are scored
                    first, second = ((est_pub, msg), (gt_pub, gt)) if k % 3 == 2 else ((gt_pub, gt), (est_pub, msg))
                    first[0].publish(first[1])
                    time.sleep(0.05)
                    second[0].publish(second[1])
                assert wait_for(lambda: errors.is_file() and len(errors.read_text().splitlines()) >= 2 * FRAMES + 4,
                                15.0), \
                    (errors.read_text() if errors.is_file() else "no errors file") + \
                    (tmp_path / "monitor.log").read_text()[-1500:]
                time.sleep(0.6)                         # one more report after the last pose
    finally:
        rc = stop_process(proc)
    assert rc == 0, (tmp_path / "monitor.log").read_text()[-1500:]

    lines = [json.loads(x) for x in errors.read_text().splitlines()]
    assert len(lines) == 2 * FRAMES + 4                # mug and box per frame; the bottle once in view (6-9)
    assert {x["class"] for x in lines} == {"mug", "box", "bottle"}
    box = [x for x in lines if x["class"] == "box"]
    assert sum(x["found"] for x in box) == FRAMES // 2
    assert all(x["t_err_m"] == pytest.approx(0.10, abs=1e-6) for x in box if x["found"])
    assert all(x["add_over_d"] < 1e-6 for x in lines if x["class"] == "mug")
    assert len({x["stamp_ns"] for x in lines}) == FRAMES

    s = json.loads(summary.read_text())
    assert s["gt_instances_scored"] == 2 * FRAMES + 4 and s["gt_instances_found"] == FRAMES + FRAMES // 2 + 2
    assert s["add_s_recall_0.1d"] == pytest.approx((FRAMES + 2) / (FRAMES + FRAMES // 2 + 2))
    assert s["per_class"] == {"box": f"found {FRAMES // 2}/{FRAMES}, 0% right", "mug": f"found {FRAMES}/{FRAMES}, 100% right",
                              "bottle": "found 2/4, 100% right"}
    # mug and box were in view from the run's first frame (start-up, not counted); the bottle came into
    # view on frame 6 and frame 8's message, sent no earlier than its stamp, was the first to pose it right
    a = s["appearance"]
    assert (a["appearances"], a["posed"], a["missed"], a["open"]) == (1, 1, 0, 0)
    assert 200.0 <= a["delay_ms_p50"] < 5000.0
    assert "per object: box found" in (tmp_path / "monitor.log").read_text()
