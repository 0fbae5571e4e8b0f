"""skeleton_replay_node -> retarget_node -> a test subscriber, over real DDS.

Checks the command joint order, limits and rate limiting of everything published, the engage
ramp from the measured /joint_states, disengage, and that NaN / malformed skeletons never move
the robot.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_data_path
from ros_helpers import SpinThread, ros_context, wait_for

pytestmark = pytest.mark.ros

MAPPING = REPO_ROOT / "config" / "robots" / "pose_ros_humanoid.yaml"


class Recorder:
    """Test-side node: records commands and status, publishes measured joint states."""

    def __init__(self, context, suffix: str, ns: str):
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import Trigger

        from pose_ros.msg import TeleopStatus
        from pose_ros.nodes.qos import result_qos

        self.node = Node(f"retarget_test_probe_{suffix}", context=context)
        self.lock = threading.Lock()
        self.js, self.fwd, self.status, self.traj = [], [], [], []
        qos = result_qos(depth=200)
        n = self.node
        n.create_subscription(JointState, f"{ns}/joint_states", lambda m: self._add(self.js, m), qos)
        n.create_subscription(Float64MultiArray, f"{ns}/forward_command", lambda m: self._add(self.fwd, m), qos)
        n.create_subscription(TeleopStatus, f"{ns}/status", lambda m: self._add(self.status, m), qos)
        from trajectory_msgs.msg import JointTrajectory
        from visualization_msgs.msg import MarkerArray
        n.create_subscription(JointTrajectory, f"{ns}/joint_trajectory", lambda m: self._add(self.traj, m), qos)
        self.markers = []
        n.create_subscription(MarkerArray, f"{ns}/robot_markers", lambda m: self._add(self.markers, m), qos)
        self.measured_pub = n.create_publisher(JointState, f"/joint_states_{suffix}", result_qos())
        self.engage = n.create_client(Trigger, f"{ns}/engage")
        self.disengage = n.create_client(Trigger, f"{ns}/disengage")
        from std_srvs.srv import SetBool
        self.set_engaged = n.create_client(SetBool, f"{ns}/set_engaged")

    def _add(self, store, msg):
        with self.lock:
            store.append((time.monotonic(), msg))

    def last_status(self):
        with self.lock:
            return self.status[-1][1] if self.status else None

    def call(self, client, request=None):
        """A service call and its response; generous limits: the spin thread shares a loaded CPU."""
        from std_srvs.srv import Trigger
        assert client.wait_for_service(timeout_sec=30.0), client.srv_name
        fut = client.call_async(request if request is not None else Trigger.Request())
        assert wait_for(fut.done, 30.0), f"{client.srv_name} did not answer in 30 s"
        return fut.result()


class MeasuredStream:
    """The robot's /joint_states publisher (a joint_state_broadcaster publishes ~50-100 Hz): a fixed
    measured pose, from a thread, while the `with` block lasts.

    Why a stream and not a few messages: the node takes the measured state as fresh for
    safety.measured_timeout_s (0.5 s) after it took the message; a burst followed by a service call
    that reached the node later than that ramped from the last command instead."""

    def __init__(self, publisher, clock, names: list[str], q: np.ndarray, rate_hz: float = 50.0) -> None:
        from sensor_msgs.msg import JointState

        self.pub, self.clock, self.period_s = publisher, clock, 1.0 / rate_hz
        self.msg = JointState(name=list(names), position=[float(v) for v in q])
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.msg.header.stamp = self.clock.now().to_msg()
            self.pub.publish(self.msg)
            self.sent += 1
            self._stop.wait(self.period_s)

    def __enter__(self) -> "MeasuredStream":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _params(d: dict):
    from rclpy.parameter import Parameter
    return [Parameter(k, value=v) for k, v in d.items()]


def test_replay_to_retarget_over_dds():
    bvh = shared_data_path("mocap_cmu131", "resources", "scaled_131_01.bvh")
    from pose_ros.human.retarget_mapping import load_mapping
    from pose_ros.human.safety import SafetyConfig, TeleopState
    from pose_ros.nodes.retarget_node import RetargetNode
    from pose_ros.nodes.skeleton_replay_node import SkeletonReplayNode

    mapping = load_mapping(MAPPING)
    cfg = SafetyConfig.from_mapping(mapping)
    suffix = f"{os.getpid()}_{int(time.time() * 1000) % 100000}"
    ns = f"/retarget_{suffix}"
    skel_topic = f"skeletons_{suffix}"
    with ros_context() as ctx:
        replay = SkeletonReplayNode(f"skeleton_replay_{suffix}", context=ctx, parameter_overrides=_params(
            {"bvh_file": str(bvh), "rate_hz": 30.0, "topic": skel_topic}))
        retarget = RetargetNode(f"retarget_{suffix}", context=ctx, parameter_overrides=_params(
            {"mapping_file": str(MAPPING), "rate_hz": 50.0, "skeletons_topic": skel_topic,
             "measured_joint_states_topic": f"/joint_states_{suffix}", "status_period_s": 60.0,
             # wiring and limits under test, not the stale-solve hold (its own test below): under CPU
             # load this process's skeletons can reach the solve later than the 0.15 s default
             "max_command_age_s": 2.0}))
        probe = Recorder(ctx, suffix, ns)
        with SpinThread(ctx, replay, retarget, probe.node, single_threaded=True):
            # Disengaged but tracking: the robot holds still.
            assert wait_for(lambda: (s := probe.last_status()) is not None and s.tracking, 15.0), \
                "no tracking status from the retarget node"
            assert probe.last_status().state == TeleopState.DISENGAGED

            # The robot reports a measured pose away from home; engaging must ramp from there.
            from rclpy.duration import Duration
            measured = cfg.home.copy()
            measured[cfg.joint_names.index("left_elbow_joint")] = 1.2
            measured[cfg.joint_names.index("torso_yaw_joint")] = -0.4
            with MeasuredStream(probe.measured_pub, probe.node.get_clock(), cfg.joint_names, measured) as robot:
                # Delivered, not just sent: the node's reader matched and acknowledged the stream (the
                # node takes what it holds before a service request of the same wait).
                assert wait_for(lambda: probe.measured_pub.get_subscription_count() > 0 and robot.sent > 0, 30.0)
                assert probe.measured_pub.wait_for_all_acked(Duration(seconds=30)), "measured states not acked"
                res = probe.call(probe.engage)
            # The stream stops here (the measured state goes stale after 0.5 s): the later engages
            # below ramp from the last command, so the rate limits hold from this engage on.
            assert res.success and "measured joint state" in res.message, res.message
            assert wait_for(lambda: probe.last_status().state == TeleopState.ENGAGED, 30.0), \
                probe.last_status().message
            time.sleep(1.0)                    # follow the operator a while (commands recorded)
            res = probe.call(probe.disengage)
            assert res.success
            assert wait_for(lambda: probe.last_status().state == TeleopState.HOLDING, 10.0)
            from std_srvs.srv import SetBool
            res = probe.call(probe.set_engaged, SetBool.Request(data=True))
            assert res.success and "last command" in res.message, res.message    # the stream stopped
            assert wait_for(lambda: probe.last_status().state != TeleopState.HOLDING, 10.0)
            res = probe.call(probe.set_engaged, SetBool.Request(data=False))
            assert res.success and wait_for(lambda: probe.last_status().state == TeleopState.HOLDING, 10.0)

            # Malformed and NaN skeletons from another publisher on the same topic: dropped, no jump.
            from geometry_msgs.msg import Point
            from pose_ros.msg import HumanKeypoint, HumanSkeleton, HumanSkeletonArray
            bad_pub = probe.node.create_publisher(HumanSkeletonArray, skel_topic, 10)
            for timer in replay.timers:        # stop the real stream first
                timer.cancel()
            invalid0 = probe.last_status().invalid_inputs
            res = probe.call(probe.engage)
            for k in range(10):
                sk = HumanSkeleton(is_operator=True, convention="blazepose33")
                val = float("inf") if k % 2 else float("nan")
                for name in ("left_hip", "right_hip", "left_shoulder", "right_shoulder"):
                    sk.keypoints.append(HumanKeypoint(name=name, position=Point(x=val, y=val, z=val), confidence=1.0))
                arr = HumanSkeletonArray(skeletons=[sk])
                arr.header.stamp = probe.node.get_clock().now().to_msg()
                bad_pub.publish(arr)
                time.sleep(0.03)
                if k % 2:
                    # the node keeps only the newest skeleton (depth 1): under CPU load a message sent
                    # before the previous one was taken replaces it, so each inf one is awaited
                    n_inf = (k + 1) // 2
                    assert wait_for(lambda: probe.last_status().invalid_inputs >= invalid0 + n_inf, 10.0)
            assert wait_for(lambda: probe.last_status().invalid_inputs >= invalid0 + 5, 10.0)
            time.sleep(0.3)
        for node in (replay, retarget, probe.node):
            node.destroy_node()

    # ---- everything published, checked after the fact ----
    with probe.lock:
        js = list(probe.js)
        fwd = list(probe.fwd)
        status = list(probe.status)
        traj = list(probe.traj)
        markers = list(probe.markers)
    assert len(fwd) > 100 and len(js) > 100
    names = list(js[-1][1].name)
    assert names[:len(cfg.joint_names)] == cfg.joint_names == mapping.command_joints()
    assert set(names[len(cfg.joint_names):]) == set(mapping.model.actuated_joint_names) - set(cfg.joint_names)
    assert len(traj) > 100 and list(traj[-1][1].joint_names) == cfg.joint_names
    # robot overlay: one bone per URDF joint with distinct parent/child origins, in the skeleton's camera frame, standing where
    # the replayed operator stands (~2.5 m in front of the virtual camera)
    assert len(markers) > 10
    bones = markers[-1][1].markers[0]
    assert bones.header.frame_id == "camera_color_optical_frame" and len(bones.points) >= 2 * 20
    z = np.array([p.z for p in bones.points])
    assert 0.5 < z.min() and z.max() < 5.0
    # joint_trajectory_controller accepts every trajectory as it arrives (test_retarget_commands.jtc_rejection):
    # stamp 0 = start on receipt, one point at the default horizon (3 periods at 50 Hz), final velocity 0
    from test_retarget_commands import jtc_rejection
    receipt_ns = probe.node.get_clock().now().nanoseconds      # later than every arrival: the worst case
    for _, m in traj:
        assert jtc_rejection(m, cfg.joint_names, receipt_ns) is None
        assert (m.header.stamp.sec, m.header.stamp.nanosec) == (0, 0) and len(m.points) == 1
        assert (m.points[0].time_from_start.sec, m.points[0].time_from_start.nanosec) == (0, 60_000_000)
        assert list(m.points[0].velocities) == [0.0] * len(cfg.joint_names)
    q_traj = np.array([m.points[0].positions for _, m in traj])
    assert np.all(q_traj >= cfg.cmd_lower - 1e-9) and np.all(q_traj <= cfg.cmd_upper + 1e-9)
    assert np.ptp(q_traj, axis=0).max() > 0.2                  # it carried the motion, not a held pose
    q = np.array([m.data for _, m in fwd])
    q_js = np.array([m.position[:len(cfg.joint_names)] for _, m in js])
    assert q.shape[1] == len(cfg.joint_names)
    assert np.all(np.isfinite(q)) and np.all(np.isfinite(q_js))
    assert np.all(q >= cfg.cmd_lower - 1e-9) and np.all(q <= cfg.cmd_upper + 1e-9)
    # rate-limited: stamps of the JointState carry the control time; each step within vmax * dt
    t_ns = np.array([m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for _, m in js], dtype=np.int64)
    dt = np.diff(t_ns) * 1e-9
    assert np.all(dt > 0)
    step = np.abs(np.diff(q_js, axis=0))
    # The engage tick: the first status saying ENGAGING; its JointState carries the same stamp.
    # Engaging re-bases the command on the measured state (where the robot is), so rate limits are
    # checked from that tick on.
    engage_stamp = next(m.header.stamp for _, m in status if m.state == TeleopState.ENGAGING)
    engage_idx = next(i for i, (_, m) in enumerate(js) if m.header.stamp == engage_stamp)
    ok = step[engage_idx:] <= cfg.max_velocity[None] * np.minimum(dt[engage_idx:], cfg.max_dt_s)[:, None] * (1 + 1e-6) + 1e-9
    bad = np.argwhere(~ok)[:5]
    assert ok.all(), [(i, j, step[engage_idx + i, j], dt[engage_idx + i], cfg.max_velocity[j]) for i, j in bad]
    # the ramp starts from the measured state (one control step away at most), not from home
    first_after = q_js[engage_idx]
    assert np.abs(first_after - measured).max() <= cfg.max_velocity.max() * 0.05
    assert np.abs(first_after - cfg.home).max() > 0.3
    states = [m.state for _, m in status]
    assert TeleopState.ENGAGING in states and TeleopState.ENGAGED in states and TeleopState.HOLDING in states
    # the robot really moved while engaged (it followed the operator)
    assert np.ptp(q, axis=0).max() > 0.2
    # NaN/inf inputs at the end: the commands did not jump
    tail = q_js[-15:]
    assert np.abs(np.diff(tail, axis=0)).max() <= cfg.max_velocity.max() * 0.1
    assert status[-1][1].invalid_inputs >= 5
    # operator limb lengths and the IK position residual are published with every status
    tracked = [m for _, m in status if m.tracking and m.state == TeleopState.ENGAGED]
    last = tracked[-1]
    segment_names = {s.name for s in mapping.segments}
    assert len(last.limb_names) == len(last.limb_lengths_m) > 0 and set(last.limb_names) <= segment_names
    limbs = dict(zip(last.limb_names, last.limb_lengths_m))
    for arm in ("left_upper_arm", "left_forearm", "right_upper_arm", "right_forearm"):
        assert 0.1 < limbs[arm] < 0.6, limbs                   # the replayed mocap actor's arms
    assert 0.0 <= last.ik_position_residual_m < 0.5, last.ik_position_residual_m


def test_node_parameters_are_validated_and_g1_mapping_loads():
    bvh = shared_data_path("mocap_cmu131", "resources", "scaled_131_02.bvh")
    shared_data_path("robots", "unitree_g1")
    from pose_ros.nodes.retarget_node import RetargetNode
    from pose_ros.nodes.skeleton_replay_node import SkeletonReplayNode

    suffix = f"{os.getpid()}_{int(time.time() * 1000) % 100000}"
    with ros_context() as ctx:
        with pytest.raises(ValueError, match="stamp_source"):
            RetargetNode(f"rt_bad_{suffix}", context=ctx, parameter_overrides=_params({"stamp_source": "camera"}))
        with pytest.raises(ValueError, match="not found"):
            RetargetNode(f"rt_bad2_{suffix}", context=ctx,
                         parameter_overrides=_params({"mapping_file": "/nonexistent/map.yaml"}))
        # the trajectory horizon: a number, in range, at least one control period (start-up errors)
        from rclpy.exceptions import InvalidParameterValueException
        for value, match in ((-0.1, "trajectory_horizon_s out of range"), (-1, r"'trajectory_horizon_s' = -1 is outside"),
                             ("long", "'trajectory_horizon_s' must be a number"),
                             (0.01, "'trajectory_horizon_s' = 0.01 s is shorter than one control period")):
            with pytest.raises((ValueError, InvalidParameterValueException), match=match):
                RetargetNode(f"rt_bad_h_{suffix}", context=ctx, parameter_overrides=_params(
                    {"trajectory_horizon_s": value, "rate_hz": 50.0}))
        # the teleop launch's controller remappings, applied by rclpy to this node's default topics
        from pose_ros.launch_specs import SYSTEMS, remappings_for, resolve_args
        teleop = SYSTEMS["teleop"]
        spec = next(s for s in teleop.nodes if s.name == "retarget")
        rules = remappings_for(spec, resolve_args(teleop, {"forward_controller": f"fwd_{suffix}",
                                                           "trajectory_controller": f"jtc_{suffix}",
                                                           "gripper_controller": f"grip_{suffix}"}))
        wired = RetargetNode(f"rt_wired_{suffix}", context=ctx, cli_args=[
            "--ros-args", *[a for src, dst in rules for a in ("-r", f"{src}:={dst}")]],
            parameter_overrides=_params({"trajectory_horizon_s": 0.1, "skeletons_topic": f"sk_{suffix}"}))
        assert wired.fwd_pub.topic_name == f"/fwd_{suffix}/commands"
        assert wired.traj_pub.topic_name == f"/jtc_{suffix}/joint_trajectory"
        assert wired.grippers_pub.topic_name == f"/grip_{suffix}/commands"
        assert wired.gripper_pubs["left"].topic_name == f"/rt_wired_{suffix}/gripper_left"
        assert wired.js_pub.topic_name == f"/rt_wired_{suffix}/joint_states"     # not a controller topic
        assert wired.trajectory_horizon_s == 0.1
        wired.destroy_node()
        g1 = RetargetNode(f"rt_g1_{suffix}", context=ctx, parameter_overrides=_params(
            {"mapping_file": "config/robots/unitree_g1.yaml", "skeletons_topic": f"sk_{suffix}"}))
        assert g1.joint_names[:3] == ["waist_yaw_joint", "waist_roll_joint", "waist_pitch_joint"]
        assert len(g1.joint_names) == 17 and len(g1._extra_names) == 12      # legs shown at home in RViz
        with pytest.raises(ValueError, match="intrinsics"):
            SkeletonReplayNode(f"rp_bad_{suffix}", context=ctx, parameter_overrides=_params(
                {"bvh_file": str(bvh), "intrinsics": [0.0, 600.0, 320.0, 240.0]}))
        with pytest.raises(ValueError, match="BVH file not found"):
            SkeletonReplayNode(f"rp_bad2_{suffix}", context=ctx, parameter_overrides=_params(
                {"bvh_file": "/nonexistent/clip.bvh"}))
        coco = SkeletonReplayNode(f"rp_coco_{suffix}", context=ctx, parameter_overrides=_params(
            {"bvh_file": str(bvh), "convention": "coco17", "loop": False, "topic": f"sk_{suffix}"}))
        assert coco._kp.shape[1] == 17 and coco._names[0] == "nose"
        duration = coco._kp.shape[0] * coco._frame_time
        assert coco.frame_index(0.0) == 0 and coco.frame_index(duration + 1.0) is None
        # keypoints project inside a 640x480 image at 2.5 m
        uv = coco._uv[0]
        assert np.all((uv[:, 0] > 0) & (uv[:, 0] < 640) & (uv[:, 1] > 0) & (uv[:, 1] < 480))
        for node in (g1, coco):
            node.destroy_node()


def _hand_msg(side: str, ratio: float, wrist_cam_m: np.ndarray):
    """A HAND21 HumanHand whose thumb-index tip gap is `ratio` times its size (9 cm), at a wrist."""
    from geometry_msgs.msg import Point
    from pose_ros.human.conventions import HAND21, HAND21_NAMES
    from pose_ros.msg import HumanHand, HumanKeypoint

    p = np.tile(wrist_cam_m, (21, 1))
    p[9] += [0.0, -0.09, 0.0]
    p[4] += [-0.045 * ratio, -0.12, 0.0]
    p[8] += [0.045 * ratio, -0.12, 0.0]
    return HumanHand(side=side, convention=HAND21, score=0.9, handedness_score=0.95, keypoints=[
        HumanKeypoint(name=n, position=Point(x=float(x), y=float(y), z=float(z)), confidence=0.9, source=1)
        for n, (x, y, z) in zip(HAND21_NAMES, p)])


def test_gripper_commands_follow_the_hands_through_the_safety_layer_over_dds():
    """Real mocap body + hands of a set aperture -> retarget node -> ~/gripper_left/right and
    ~/gripper_commands: home while disengaged, rate-limited closing once engaged, held when the
    hand is lost, then back home slowly."""
    bvh = shared_data_path("mocap_cmu131", "resources", "scaled_131_01.bvh")
    from geometry_msgs.msg import Point
    from std_msgs.msg import Float64, Float64MultiArray
    from std_srvs.srv import Trigger

    from pose_ros.human.bvh import bvh_to_camera_skeletons, load_bvh
    from pose_ros.human.conventions import BLAZEPOSE33_NAMES
    from pose_ros.human.safety import TeleopState
    from pose_ros.msg import HumanKeypoint, HumanSkeleton, HumanSkeletonArray, TeleopStatus
    from pose_ros.nodes.qos import result_qos
    from pose_ros.nodes.retarget_node import RetargetNode

    body = bvh_to_camera_skeletons(load_bvh(bvh, scale_to_m="auto"))[0][0]    # one standing frame, camera frame
    wrists = {"left": body[BLAZEPOSE33_NAMES.index("left_wrist")], "right": body[BLAZEPOSE33_NAMES.index("right_wrist")]}
    rate, hold_s = 2.0, 0.5
    suffix = f"{os.getpid()}_{int(time.time() * 1000) % 100000}"
    ns, skel_topic = f"/rt_grip_{suffix}", f"sk_grip_{suffix}"
    got: dict[str, list] = {"left": [], "right": [], "both": [], "status": []}
    lock = threading.Lock()

    def keep(key):
        def cb(msg):
            with lock:
                got[key].append((time.monotonic(), msg))
        return cb

    with ros_context() as ctx:
        retarget = RetargetNode(f"rt_grip_{suffix}", context=ctx, parameter_overrides=_params(
            {"mapping_file": str(MAPPING), "skeletons_topic": skel_topic, "status_period_s": 60.0,
             "measured_joint_states_topic": f"/joint_states_{suffix}", "gripper_max_rate_per_s": rate,
             "gripper_hold_time_s": hold_s,
             # gripper behaviour under test, not the stale-solve hold (its own test below): under CPU
             # load this process's skeletons can reach the solve later than the 0.15 s default
             "max_command_age_s": 2.0}))
        from rclpy.node import Node
        probe = Node(f"grip_probe_{suffix}", context=ctx)
        qos = result_qos(depth=500)
        probe.create_subscription(Float64, f"{ns}/gripper_left", keep("left"), qos)
        probe.create_subscription(Float64, f"{ns}/gripper_right", keep("right"), qos)
        probe.create_subscription(Float64MultiArray, f"{ns}/gripper_commands", keep("both"), qos)
        probe.create_subscription(TeleopStatus, f"{ns}/status", keep("status"), qos)
        pub = probe.create_publisher(HumanSkeletonArray, skel_topic, qos)
        engage = probe.create_client(Trigger, f"{ns}/engage")

        def skeleton(left: float | None, right: float | None) -> HumanSkeletonArray:
            sk = HumanSkeleton(track_id=1, convention="blazepose33", is_operator=True, score=1.0, keypoints=[
                HumanKeypoint(name=n, position=Point(x=float(x), y=float(y), z=float(z)), confidence=1.0, source=2)
                for n, (x, y, z) in zip(BLAZEPOSE33_NAMES, body)])
            sk.hands = [_hand_msg(side, r, wrists[side]) for side, r in (("left", left), ("right", right))
                        if r is not None]
            msg = HumanSkeletonArray(skeletons=[sk])
            msg.header.frame_id = "camera_color_optical_frame"
            return msg

        # The camera stream, from its own thread at 30 Hz: the main thread only waits for conditions.
        # Each hand pose's message is built once and re-stamped (building ~80 keypoint messages per
        # frame in Python took the GIL from the spin thread under load).
        frames = {hands: skeleton(*hands) for hands in ((0.2, 1.2), (None, 1.2))}
        hands_now: list[tuple] = [(0.2, 1.2)]
        stop = threading.Event()

        def stream() -> None:
            while not stop.is_set():
                msg = frames[hands_now[0]]
                msg.header.stamp = probe.get_clock().now().to_msg()
                pub.publish(msg)
                stop.wait(1 / 30)

        def last(key):
            with lock:
                return got[key][-1][1] if got[key] else None

        def count(key) -> int:
            with lock:
                return len(got[key])

        feeder = threading.Thread(target=stream, daemon=True)
        with SpinThread(ctx, retarget, probe, single_threaded=True):
            feeder.start()
            try:
                assert wait_for(lambda: pub.get_subscription_count() > 0 and last("left") is not None, 30.0)
                # disengaged: the grippers stay home (open) however the hand pinches, over >= 30
                # commands (~0.6 s at 50 Hz; counted, not timed: the node may run slow under load)
                n0 = count("left")
                assert wait_for(lambda: count("left") >= n0 + 30, 30.0)
                assert last("status").state == TeleopState.DISENGAGED
                with lock:
                    t_engage = time.monotonic()
                    n_disengaged = len(got["left"])
                assert engage.wait_for_service(timeout_sec=30.0)
                fut = engage.call_async(Trigger.Request())
                assert wait_for(fut.done, 30.0) and fut.result().success, "~/engage did not answer"
                # engaged: the left gripper closes on the pinch (a 0.5 s stroke once following)
                assert wait_for(lambda: last("left").data == 0.0 and last("status").state == TeleopState.ENGAGED,
                                30.0), (last("left"), last("status"))
                n_closed = count("left")
                assert wait_for(lambda: count("left") >= n_closed + 10, 30.0)    # and stays closed
                with lock:
                    t_lost = time.monotonic()
                hands_now[0] = (None, 1.2)                                    # the left hand leaves the view
                # lost: held (tracking timeout 0.3 s + hold 0.5 s), then back home (open): wait until
                # it is on its way, then for a few more commands
                assert wait_for(lambda: last("left").data > 0.5, 30.0), last("left")
                n_open = count("left")
                assert wait_for(lambda: count("left") >= n_open + 5, 30.0)
            finally:
                stop.set()
                feeder.join(timeout=5.0)
        for node in (retarget, probe):        # after the executor stopped: no callback on a destroyed node
            node.destroy_node()

    with lock:
        left = [(t, m.data) for t, m in got["left"]]
        right = [(t, m.data) for t, m in got["right"]]
        both = [(t, list(m.data)) for t, m in got["both"]]
        status = [m for _, m in got["status"]]
    # TeleopStatus reports each gripper beside the arm: command, its safety state, hand seen, aperture
    assert all(list(m.gripper_names) == ["left", "right"] and len(m.gripper_commands) == len(m.gripper_states)
               == len(m.gripper_tracking) == len(m.gripper_aperture_ratios) == 2 for m in status)
    sent = np.array([v for _, v in left])
    assert all(np.abs(sent - m.gripper_commands[0]).min() < 1e-6 for m in status)    # float32 in the status
    pinched = [m for m in status if m.state == TeleopState.ENGAGED and m.gripper_tracking[0]]
    seen = [m.gripper_aperture_ratios for m in pinched if np.all(np.isfinite(m.gripper_aperture_ratios))]
    assert seen and all(r[0] < r[1] for r in seen)          # NaN: no hand in the latest skeleton
    assert any(m.gripper_commands[0] == 0.0 and m.gripper_states[0] == TeleopState.ENGAGED for m in pinched)
    assert any(not m.gripper_tracking[0] and m.gripper_tracking[1]
               and m.gripper_states[0] in (TeleopState.HOLDING, TeleopState.RETURNING_HOME) for m in status)
    values = np.array([v for _, v in left] + [v for _, v in right])
    assert np.all((values >= 0.0) & (values <= 1.0))
    assert all(v == 1.0 for _, v in left[:n_disengaged])          # home (open) while disengaged
    assert all(v == 1.0 for _, v in right)                         # the open right hand kept it open
    assert all(len(v) == 2 and v[1] == 1.0 for _, v in both)       # [left, right]
    assert sorted({round(v[0], 9) for _, v in both}) == sorted({round(v, 9) for _, v in left})
    # rate limited: the step between two commands is at most rate * the safety layer's longest step
    steps = np.abs(np.diff([v for _, v in left]))
    assert steps.max() <= rate * 0.1 + 1e-9
    t_start = next(t for t, v in left if t > t_engage and v < 1.0)
    t_closed = next(t for t, v in left if t > t_engage and v == 0.0)
    assert t_closed - t_start >= 0.8 / rate * 0.5      # a full stroke takes 1/rate = 0.5 s; arrival jitter margin
    # lost: held closed (tracking timeout 0.3 s + hold 0.5 s), then slowly back home, never a jump
    after = [(t - t_lost, v) for t, v in left if t > t_lost]
    t_open = next(t for t, v in after if v > 0.0)
    assert t_open >= 0.5, t_open
    assert after[-1][1] > 0.5                          # on its way home (open) or there



def test_replayed_operator_and_retargeted_robot_share_the_camera_tf_tree():
    """skeleton_replay's virtual camera frames on /tf_static (camera_link -> camera_color_frame -> optical frame)
    and retarget's robot root link on /tf below the skeleton's optical frame, where the operator stands:
    RViz's RobotModel (robot_state_publisher) and the camera frames then share the fixed frame camera_link.
    Received by a plain TFMessage subscriber. publish_all_joints, set live, changes ~/joint_states at once."""
    tf2_msgs = pytest.importorskip("tf2_msgs.msg")
    bvh = shared_data_path("mocap_cmu131", "resources", "scaled_131_01.bvh")
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from pose_ros.human.retarget_mapping import load_mapping
    from pose_ros.nodes.qos import result_qos
    from pose_ros.nodes.retarget_node import RetargetNode
    from pose_ros.nodes.skeleton_replay_node import SkeletonReplayNode
    from pose_ros.nodes.tf_publisher import tf_qos
    from ros_helpers import set_remote_parameter

    mapping = load_mapping(MAPPING)
    suffix = f"{os.getpid()}_{int(time.time() * 1000) % 100000}"
    base, optical = f"cam_{suffix}_link", f"cam_{suffix}_color_optical_frame"
    skel_topic = f"skeletons_tf_{suffix}"
    static, dynamic, js = {}, [], []
    lock = threading.Lock()

    def on_static(msg):
        with lock:
            static.update({t.child_frame_id: t for t in msg.transforms})

    def on_tf(msg):
        with lock:
            dynamic.extend(t for t in msg.transforms if t.header.frame_id == optical)

    def on_js(msg):
        with lock:
            js.append((time.monotonic(), msg))

    with ros_context() as ctx:
        replay = SkeletonReplayNode(f"skeleton_replay_tf_{suffix}", context=ctx, parameter_overrides=_params(
            {"bvh_file": str(bvh), "rate_hz": 30.0, "topic": skel_topic, "frame_id": optical, "base_frame_id": base}))
        retarget = RetargetNode(f"retarget_tf_{suffix}", context=ctx, parameter_overrides=_params(
            {"mapping_file": str(MAPPING), "skeletons_topic": skel_topic, "status_period_s": 60.0,
             "measured_joint_states_topic": f"/joint_states_tf_{suffix}"}))
        probe = Node(f"tf_probe_{suffix}", context=ctx)
        probe.create_subscription(tf2_msgs.TFMessage, "/tf_static", on_static, QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        probe.create_subscription(tf2_msgs.TFMessage, "/tf", on_tf, tf_qos())
        probe.create_subscription(JointState, f"/retarget_tf_{suffix}/joint_states", on_js, result_qos(depth=50))
        with SpinThread(ctx, replay, retarget, probe, single_threaded=True):
            assert wait_for(lambda: {f"cam_{suffix}_color_frame", optical} <= set(static), 30.0), sorted(static)
            assert wait_for(lambda: len(dynamic) >= 3, 60.0), "no robot transform on /tf"
            with lock:
                before = [m for _, m in js]
            res = set_remote_parameter(probe, f"/retarget_tf_{suffix}", "publish_all_joints", False)
            assert res.successful, res.reason
            t_set = time.monotonic()
            assert wait_for(lambda: any(t > t_set + 0.2 for t, _ in list(js)), 30.0)
            res = set_remote_parameter(probe, f"/retarget_tf_{suffix}", "rate_hz", 20.0)
            assert not res.successful and res.reason.startswith("rate_hz is read at start-up"), res.reason
        for node in (replay, retarget, probe):
            node.destroy_node()

    assert static[f"cam_{suffix}_color_frame"].header.frame_id == base
    assert static[optical].header.frame_id == f"cam_{suffix}_color_frame"
    t = dynamic[-1]
    assert t.child_frame_id == mapping.model.root
    z = t.transform.translation.z
    assert 1.0 < z < 4.0, f"robot root {z:.2f} m in front of the camera; the replayed operator stands ~2.5 m away"
    with lock:
        after = [m for when, m in js if when > t_set + 0.2]
    from pose_ros.human.safety import SafetyConfig
    assert before and len(before[-1].name) == len(mapping.model.actuated_joint_names) > len(after[-1].name)
    assert list(after[-1].name) == list(SafetyConfig.from_mapping(mapping).joint_names)


def test_status_reports_command_age_and_a_stale_solve_holds_over_dds(tmp_path):
    """Skeletons whose stamps fall further and further behind (an overloaded chain) -> the retarget
    node: TeleopStatus carries the command age (colour stamp -> command), solves older than
    max_command_age_s count as stale_commands, the engaged robot holds and the status says why;
    /diagnostics reports the age.

    Robust under CPU load: wide margins (max_command_age_s 1 s, the mapping's max_input_age_s
    raised to 5 s), and the lag grows by 20 ms per 33 ms frame, so stamps never go backwards
    (no out-of-order drops) and the operator stays tracked until the solves turn stale."""
    import yaml
    bvh = shared_data_path("mocap_cmu131", "resources", "scaled_131_01.bvh")
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point

    from pose_ros.human.bvh import bvh_to_camera_skeletons, load_bvh
    from pose_ros.human.conventions import BLAZEPOSE33_NAMES
    from pose_ros.human.safety import TeleopState
    from pose_ros.msg import HumanKeypoint, HumanSkeleton, HumanSkeletonArray
    from pose_ros.nodes.qos import result_qos
    from pose_ros.nodes.retarget_node import RetargetNode

    max_age_s, lag_step_s, max_lag_s = 1.0, 0.02, 3.0
    raw = yaml.safe_load(MAPPING.read_text())
    raw["safety"]["max_input_age_s"] = 5.0
    mapping_file = tmp_path / MAPPING.name           # its URDF resolves through config/robots
    mapping_file.write_text(yaml.safe_dump(raw))
    frames = bvh_to_camera_skeletons(load_bvh(bvh, scale_to_m="auto"))[0]
    suffix = f"{os.getpid()}_{int(time.time() * 1000) % 100000}"
    ns, skel_topic = f"/rt_age_{suffix}", f"sk_age_{suffix}"
    with ros_context() as ctx:
        retarget = RetargetNode(f"rt_age_{suffix}", context=ctx, parameter_overrides=_params(
            {"mapping_file": str(mapping_file), "skeletons_topic": skel_topic, "status_period_s": 60.0,
             "measured_joint_states_topic": f"/joint_states_{suffix}", "max_command_age_s": max_age_s,
             "grippers": False}))
        probe = Recorder(ctx, suffix, ns)
        pub = probe.node.create_publisher(HumanSkeletonArray, skel_topic, result_qos())
        stop, falling_behind, lag = threading.Event(), threading.Event(), [0.0]

        def stream() -> None:
            k = 0
            while not stop.is_set():
                body = frames[(k // 3) % len(frames)]
                sk = HumanSkeleton(track_id=1, convention="blazepose33", is_operator=True, score=1.0, keypoints=[
                    HumanKeypoint(name=n, position=Point(x=float(x), y=float(y), z=float(z)), confidence=1.0)
                    for n, (x, y, z) in zip(BLAZEPOSE33_NAMES, body)])
                msg = HumanSkeletonArray(skeletons=[sk])
                if falling_behind.is_set():
                    lag[0] = min(max_lag_s, lag[0] + lag_step_s)
                ns_now = probe.node.get_clock().now().nanoseconds - int(lag[0] * 1e9)
                msg.header.stamp = Time(sec=ns_now // 1_000_000_000, nanosec=ns_now % 1_000_000_000)
                msg.header.frame_id = "camera_color_optical_frame"
                pub.publish(msg)
                k += 1
                time.sleep(1 / 30)

        feeder = threading.Thread(target=stream, daemon=True)
        with SpinThread(ctx, retarget, probe.node, single_threaded=True):
            feeder.start()
            try:
                assert wait_for(lambda: (s := probe.last_status()) is not None and s.tracking, 30.0)
                res = probe.call(probe.engage)
                assert res.success, res.message
                assert wait_for(lambda: probe.last_status().state == TeleopState.ENGAGED, 30.0), \
                    probe.last_status().message
                fresh = probe.last_status()
                assert not fresh.gripper_names and not fresh.gripper_commands     # grippers off
                with probe.lock:
                    n_fresh = len(probe.status)
                falling_behind.set()                         # the chain falls behind
                assert wait_for(lambda: probe.last_status().stale_commands >= 3, 30.0), probe.last_status()
                held = probe.last_status()
                diag = {kv.key: kv.value for kv in retarget.diagnostics.status().values}
            finally:
                stop.set()
                feeder.join(timeout=5.0)
        for node in (retarget, probe.node):
            node.destroy_node()

    with probe.lock:
        status = [m for _, m in probe.status]
    # fresh: a real colour -> command age, under the limit (engaged, nothing counted)
    assert 0.0 <= fresh.command_age_s < max_age_s and fresh.stale_commands == 0
    # late: every status after the first stale solve carries that solve's age, over the limit
    stale = [m for m in status[n_fresh:] if m.stale_commands > 0]
    assert stale and all(max_age_s <= m.command_age_s < 5.0 for m in stale), [m.command_age_s for m in stale[:5]]
    assert held.stale_commands >= 3 and held.stale_inputs == fresh.stale_inputs     # none dropped as stale input
    assert stale[0].state == TeleopState.HOLDING, stale[0].state_name
    assert "stale solve" in stale[0].message and "max_command_age_s" in stale[0].message, stale[0].message
    # the robot did not follow a stale solve
    assert not any(m.state in (TeleopState.ENGAGED, TeleopState.ENGAGING) for m in stale)
    assert float(diag["command_age_ms_last"]) >= max_age_s * 1e3 and int(diag["stale_commands"]) >= 3
    assert float(diag["max_command_age_ms"]) == max_age_s * 1e3
