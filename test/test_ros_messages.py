"""Every custom interface makes a round trip between two nodes over real DDS."""
# float32 fields use values exactly representable in float32, so equality after DDS is exact.
from __future__ import annotations

import math

import pytest
from geometry_msgs.msg import Point
from std_msgs.msg import Header
from builtin_interfaces.msg import Time

from pose_ros.msg import (HumanHand, HumanKeypoint, HumanSkeleton, HumanSkeletonArray, ObjectPose,
                          ObjectPoseArray, PoseRefinementStats, TeleopStatus)
from pose_ros.srv import SetObjectEnabled
from ros_helpers import SpinThread, ros_context, wait_for
from pose_ros.nodes.qos import result_qos

pytestmark = pytest.mark.ros


def _stats() -> PoseRefinementStats:
    return PoseRefinementStats(source=PoseRefinementStats.SOURCE_TRACKING, pnp_num_keypoints=9,
                               pnp_num_inliers=7, pnp_reprojection_error_px=1.25, icp_applied=True,
                               icp_fitness=0.875, icp_inlier_rmse_m=0.001953125, icp_iterations=17,
                               icp_correction_translation_m=0.00390625, icp_correction_rotation_rad=0.03125,
                               mask_depth_agreement=0.90625, time_network_ms=30.5, time_pnp_ms=1.5,
                               time_icp_ms=8.0)


def _object_pose(i: int) -> ObjectPose:
    msg = ObjectPose(class_name=f"mug{i}", class_id=3, instance_id=i, score=0.75, refinement=_stats())
    msg.pose.pose.position.x = 0.1 * i
    msg.pose.pose.position.z = 0.6
    msg.pose.pose.orientation.z = math.sqrt(0.5)
    msg.pose.pose.orientation.w = math.sqrt(0.5)
    msg.pose.covariance = [float(k) * 1e-4 for k in range(36)]
    return msg


def _keypoint(i: int) -> HumanKeypoint:
    return HumanKeypoint(name=f"kp{i}", position=Point(x=0.1 * i, y=-0.2, z=2.0), u=320.5 + i,
                         v=240.25, confidence=0.5, source=HumanKeypoint.SOURCE_DEPTH if i % 2 else HumanKeypoint.SOURCE_MODEL)


def _hand(side: str) -> HumanHand:
    return HumanHand(side=side, convention="hand21", score=0.875, handedness_score=0.96875,
                     keypoints=[_keypoint(i) for i in range(21)])


def _header() -> Header:
    return Header(stamp=Time(sec=1234, nanosec=5678), frame_id="camera_color_optical_frame")


SAMPLES = {
    "object_pose": (ObjectPose, lambda: _object_pose(1)),
    "refinement_stats": (PoseRefinementStats, _stats),
    "object_pose_array": (ObjectPoseArray, lambda: ObjectPoseArray(header=_header(), objects=[_object_pose(i) for i in range(3)])),
    "human_keypoint": (HumanKeypoint, lambda: _keypoint(4)),
    "human_hand": (HumanHand, lambda: _hand("right")),
    "human_skeleton": (HumanSkeleton, lambda: HumanSkeleton(track_id=7, convention="coco17", is_operator=True, score=0.8125,
                                                             keypoints=[_keypoint(i) for i in range(17)],
                                                             hands=[_hand("left"), _hand("right")])),
    "human_skeleton_array": (HumanSkeletonArray, lambda: HumanSkeletonArray(header=_header(), skeletons=[
        HumanSkeleton(track_id=t, convention="blazepose33", keypoints=[_keypoint(i) for i in range(33)]) for t in range(2)])),
    "teleop_status": (TeleopStatus, lambda: TeleopStatus(header=_header(), state=TeleopStatus.STATE_HOLDING, state_name="HOLDING",
                                                          tracking=False, input_age_s=0.5, command_age_s=0.1875, solve_time_ms=0.6875, ik_residual_rad=0.046875,
                                                          position_limit_clamps=1, velocity_limit_clamps=2, acceleration_limit_clamps=3,
                                                          invalid_inputs=4, stale_inputs=5, stale_commands=8, tracking_losses=6, watchdog_trips=7,
                                                          message="operator lost")),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_message_round_trip(name: str) -> None:
    msg_type, make = SAMPLES[name]
    sent = make()
    received: list = []
    with ros_context() as context:
        pub_node = rclpy_node("pub_" + name, context)
        sub_node = rclpy_node("sub_" + name, context)
        pub = pub_node.create_publisher(msg_type, f"/test/{name}", result_qos())
        sub_node.create_subscription(msg_type, f"/test/{name}", received.append, result_qos())
        with SpinThread(context, pub_node, sub_node):
            assert wait_for(lambda: pub.get_subscription_count() > 0, 10.0), "no DDS discovery"
            def publish_until_received() -> bool:
                pub.publish(sent)
                return wait_for(lambda: bool(received), 0.2)
            assert wait_for(publish_until_received, 10.0, period_s=0.0)
        assert received[0] == sent
        assert received[0] is not sent


def test_set_object_enabled_service_round_trip() -> None:
    with ros_context() as context:
        server = rclpy_node("srv_server", context)
        client_node = rclpy_node("srv_client", context)
        def handle(request, response):
            response.success = request.enabled and request.class_name == "mug"
            response.message = f"{request.class_name}={'on' if request.enabled else 'off'}"
            return response
        server.create_service(SetObjectEnabled, "/test/set_object_enabled", handle)
        client = client_node.create_client(SetObjectEnabled, "/test/set_object_enabled")
        with SpinThread(context, server, client_node):
            assert client.wait_for_service(timeout_sec=10.0)
            future = client.call_async(SetObjectEnabled.Request(class_name="mug", enabled=True))
            assert wait_for(future.done, 10.0)
        assert future.result().success is True
        assert future.result().message == "mug=on"


def rclpy_node(name: str, context):
    import rclpy
    return rclpy.create_node(name, context=context)
