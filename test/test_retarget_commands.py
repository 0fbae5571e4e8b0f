"""The retarget node's joint_trajectory_controller command against the controller's rules (no DDS).

`jtc_rejection` restates what ros2_control's joint_trajectory_controller (Jazzy/Kilted) checks on a
trajectory that arrives on `/<controller>/joint_trajectory` (control.ros.org: "Trajectory
Representation", "Trajectory Replacement", parameter `allow_nonzero_velocity_at_trajectory_end`,
default false since Jazzy; the controller's `validate_trajectory_msg`):
- an empty trajectory is discarded;
- header stamp 0 = start on receipt; otherwise stamp + the last point's `time_from_start` before
  the time of receipt = "ends in the past", rejected;
- joint names: no duplicates, all known, all controller joints (no `allow_partial_joints_goal`);
- every point has one position per joint, velocities empty or one per joint, `time_from_start`
  strictly increasing;
- the last point's velocities within float epsilon of 0 unless `allow_nonzero_velocity_at_trajectory_end`.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO_ROOT

MAPPING = REPO_ROOT / "config" / "robots" / "pose_ros_humanoid.yaml"
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _ns(t) -> int:
    """builtin_interfaces Time or Duration -> integer nanoseconds."""
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


def jtc_rejection(msg, controller_joints: list[str], receipt_ns: int,
                  allow_nonzero_velocity_at_trajectory_end: bool = False) -> str | None:
    """Why joint_trajectory_controller would reject `msg` received at `receipt_ns` (its clock); None = accepted."""
    if not msg.points:
        return "empty trajectory"
    stamp_ns = _ns(msg.header.stamp)
    if stamp_ns != 0 and stamp_ns + _ns(msg.points[-1].time_from_start) < receipt_ns:
        return "non-zero start time that ends in the past"
    names = list(msg.joint_names)
    if len(set(names)) != len(names) or not set(names) <= set(controller_joints):
        return "unknown or duplicate joint names"
    if set(names) != set(controller_joints):
        return "partial joints goal"
    previous = None
    for p in msg.points:
        if len(p.positions) != len(names):
            return "positions size does not match joint names"
        if len(p.velocities) not in (0, len(names)):
            return "velocities size does not match joint names"
        if previous is not None and _ns(p.time_from_start) <= previous:
            return "time_from_start not strictly increasing"
        previous = _ns(p.time_from_start)
    if not allow_nonzero_velocity_at_trajectory_end and any(abs(v) > FLOAT32_EPS for v in msg.points[-1].velocities):
        return "non-zero velocity at the last point"
    return None


@pytest.fixture(scope="module")
def joints() -> list[str]:
    from pose_ros.human.retarget_mapping import load_mapping
    from pose_ros.human.safety import SafetyConfig

    mapping = load_mapping(MAPPING)
    names = list(SafetyConfig.from_mapping(mapping).joint_names)
    assert names == mapping.command_joints()           # what the node commands, in this order
    return names


def test_the_command_is_accepted_on_receipt_whatever_the_latency_or_clock(joints):
    from pose_ros.nodes.retarget_node import trajectory_command, trajectory_horizon

    horizon = trajectory_horizon(0.0, 50.0)
    assert horizon == pytest.approx(0.06)                # default: 3 periods at 50 Hz
    q = np.linspace(-0.5, 0.5, len(joints))
    msg = trajectory_command(joints, q, horizon)
    assert _ns(msg.header.stamp) == 0                    # start on receipt
    assert list(msg.joint_names) == joints
    assert len(msg.points) == 1
    point = msg.points[0]
    assert _ns(point.time_from_start) == 60_000_000 > 0
    assert np.array_equal(point.positions, q)
    assert list(point.velocities) == [0.0] * len(joints)
    sent_ns = 1_700_000_000 * 1_000_000_000
    # late by nothing, one command period, a second, an hour; or a controller clock that is
    # simulation time (near 0) or far ahead of ours: always accepted
    for receipt_ns in (sent_ns, sent_ns + 20_000_000, sent_ns + 1_000_000_000, sent_ns + 3600 * 10**9,
                       5_000_000, sent_ns * 2):
        assert jtc_rejection(msg, joints, receipt_ns) is None, receipt_ns


def test_the_rules_reject_what_the_node_used_to_send(joints):
    """Stamp = send time, one point 20 ms later, velocities = qd: both rules catch it."""
    from builtin_interfaces.msg import Duration, Time
    from std_msgs.msg import Header
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    sent_ns = 1_700_000_000 * 1_000_000_000
    n = len(joints)

    def old(velocities):
        return JointTrajectory(header=Header(stamp=Time(sec=sent_ns // 10**9, nanosec=sent_ns % 10**9)),
                               joint_names=joints, points=[JointTrajectoryPoint(
                                   positions=[0.1] * n, velocities=velocities,
                                   time_from_start=Duration(sec=0, nanosec=20_000_000))])

    moving = old([0.3] * n)
    assert jtc_rejection(moving, joints, sent_ns + 5_000_000) == "non-zero velocity at the last point"
    assert jtc_rejection(moving, joints, sent_ns + 5_000_000, allow_nonzero_velocity_at_trajectory_end=True) is None
    # a 30 ms transport + scheduling delay (issue 20 measured p95 up to 490 ms under load): in the past
    assert jtc_rejection(old([0.0] * n), joints, sent_ns + 30_000_000) == "non-zero start time that ends in the past"
    assert jtc_rejection(old([0.0] * n), joints[:-1] + ["other_joint"], sent_ns) == "unknown or duplicate joint names"


def test_horizon_is_validated_against_the_control_period(joints):
    from pose_ros.nodes.retarget_node import trajectory_command, trajectory_horizon

    assert trajectory_horizon(0.0, 10.0) == pytest.approx(0.3)
    assert trajectory_horizon(0.1, 50.0) == 0.1
    assert trajectory_horizon(0.02, 50.0) == 0.02            # one period: the shortest accepted
    for bad in (0.01, 0.019, -0.5):
        with pytest.raises(ValueError, match="trajectory_horizon_s.*shorter than one control period"):
            trajectory_horizon(bad, 50.0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="trajectory_horizon_s.*finite"):
            trajectory_horizon(bad, 50.0)
    msg = trajectory_command(joints, np.zeros(len(joints)), 1.5)
    assert (msg.points[0].time_from_start.sec, msg.points[0].time_from_start.nanosec) == (1, 500_000_000)
    with pytest.raises(ValueError, match="positions for"):
        trajectory_command(joints, np.zeros(len(joints) - 1), 0.06)
    with pytest.raises(ValueError, match="> 0"):
        trajectory_command(joints, np.zeros(len(joints)), 0.0)
