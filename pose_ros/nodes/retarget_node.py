"""Retarget node: operator skeleton in, safe humanoid joint commands out.

Thin: the IK is `pose_ros.human.retargeter.Retargeter`, every command passes
`pose_ros.human.safety.SafetyLayer` (the same objects `pose-ros retarget` runs offline).
Skeletons are retargeted as they arrive and an accepted target is stepped through the safety layer
and published at once (event-driven: a fresh camera frame does not wait for the next control tick).
A fixed-rate timer steps and publishes whenever no command went out for a control period, so the
watchdog, hold and return-home run even when no input comes. Every command, from either path,
passes the same rate-limited `SafetyLayer.step`, whose limits hold for any step length.

Subscribes `skeletons` (pose_ros/HumanSkeletonArray: the one with is_operator, else the first)
and `/joint_states` (measured, for the engage ramp). Publishes `~/joint_states`
(sensor_msgs/JointState, for robot_state_publisher/RViz), `~/joint_trajectory`
(trajectory_msgs/JointTrajectory for a ros2_control joint_trajectory_controller: see
`trajectory_command`), `~/forward_command` (std_msgs/Float64MultiArray in the mapping's command
order, for a ros2_control forward_command_controller, which listens on `/<controller>/commands`;
the teleop launch remaps both with `forward_controller:=` / `trajectory_controller:=`) and `~/status`
(pose_ros/TeleopStatus: state, interventions, IK residuals and the operator's measured limb
lengths). Services `~/engage`, `~/disengage` (std_srvs/Trigger) and
`~/set_engaged` (std_srvs/SetBool). With `grippers` (default on), one gripper command per hand
from the operator's hand keypoints (HumanSkeleton.hands): `~/gripper_left`, `~/gripper_right`
(std_msgs/Float64, open fraction 0 closed .. 1 open) and `~/gripper_commands` (Float64MultiArray
[left, right], for a forward_command_controller over the two gripper joints), each through its own
one-joint safety layer with the arm's timing (human/gripper_command.py: rate limit, stale inputs
dropped, hold on loss then home); they follow the hands only while the arm is engaged.
`~/robot_markers` (visualization_msgs/MarkerArray) draws the commanded robot as a stick figure
standing in the operator's place, in the skeleton's camera frame: visible in RViz with no
robot_state_publisher or TF. With `robot_tf` (default on) the same placement goes on /tf as
`<skeleton frame> -> <URDF root link>` (nodes/tf_publisher.py), so RViz's RobotModel
(robot_state_publisher on ~/joint_states) stands there too, in the TF tree of the camera frames and
the objects. /diagnostics: safety state, input and command rates, interventions.
`stamp_source`, `publish_all_joints` and `status_period_s` are applied live (`ros2 param set`);
the other parameters are read at start-up and a set is refused with that reason.

Latency under load (issue #20 part 1), what runs where and why:
- The IK solve runs in the skeleton subscription callback and its command is published from there
  (`publish_on_input`), not on the next timer tick: a frame never waits up to a control period.
- The skeleton and measured-state subscriptions are keep-last depth 1 (`LATEST_ONLY_DEPTH`): a
  node that fell behind solves the newest skeleton, never a backlog of older ones.
- A solve is submitted to the safety layer with the time it finished; one whose command would be
  older than `max_command_age_s` after its colour frame is a stale solve: not followed, counted,
  the robot holds (TeleopStatus.command_age_s / stale_commands, /diagnostics command_age_ms_last).
- Each command, status and overlay message is built and written only while its topic has a
  subscriber (`_subscribed`; the topics are volatile, so nobody misses one): with none, a control
  cycle took 0.23 ms of CPU instead of 0.66 ms.
- One executor thread (`main`): every callback serialises on the safety layer's lock anyway, so
  rclpy's MultiThreadedExecutor or separate callback groups would add its pure-Python scheduling
  cost (runner.py: ~20% of a core more) without letting a command out earlier; the other
  callbacks are short (control tick ~1 ms, overlay ~2 ms at 10 Hz, measured with cProfile).
"""
from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, Float64, Float64MultiArray, Header, MultiArrayDimension
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from pose_ros.msg import HumanSkeletonArray, TeleopStatus
from pose_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticReport, NodeDiagnostics, RateMeter
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.process_priority import apply_process_priority, priority_parameters
from pose_ros.nodes.qos import result_qos
from pose_ros.nodes.runner import run_node
from pose_ros.nodes.tf_publisher import TfPublisher, transform_stamped

PARAMETERS = [
    *priority_parameters(),
    ParamSpec("robot_urdf", "", "humanoid URDF; empty = the mapping's robot (default: pose_ros_humanoid)"),
    ParamSpec("mapping_file", "", "retargeting mapping YAML; empty = config/robots/pose_ros_humanoid.yaml"),
    ParamSpec("full_body", False, "also command the legs (the mapping's full_body_groups)"),
    ParamSpec("rate_hz", 50.0, "control loop rate: safety step + command publish when no fresh skeleton "
              "triggered one within a period", min=1.0, max=1000.0),
    ParamSpec("publish_on_input", True, "step and publish as soon as a skeleton is accepted (lowest latency); "
              "false = only on the control timer"),
    ParamSpec("max_command_age_s", 0.15, "a solve whose command would leave more than this after its colour frame "
              "(header stamp, or arrival with stamp_source arrival) is stale: not followed, counted "
              "(TeleopStatus.stale_commands), the robot holds then returns home; overrides the mapping's "
              "safety.max_command_age_s (3x the 50 ms p95 latency target)", min=0.01, max=5.0),
    ParamSpec("skeletons_topic", "skeletons", "input pose_ros/HumanSkeletonArray"),
    ParamSpec("measured_joint_states_topic", "/joint_states", "robot's measured sensor_msgs/JointState"),
    ParamSpec("joint_states_topic", "~/joint_states", "commanded sensor_msgs/JointState (robot_state_publisher)"),
    ParamSpec("trajectory_topic", "~/joint_trajectory", "commanded trajectory_msgs/JointTrajectory"),
    ParamSpec("trajectory_horizon_s", 0.0, "time_from_start of the ~/joint_trajectory point (header stamp 0 = "
              "start on receipt, final velocity 0): the controller reaches each command this long after it "
              "arrives and stops there if no newer one comes; 0 = 3 control periods (60 ms at 50 Hz), "
              "otherwise at least one period (1/rate_hz)", min=0.0, max=5.0),
    ParamSpec("forward_command_topic", "~/forward_command",
              "commanded std_msgs/Float64MultiArray in command order (ros2_control forward controller)"),
    ParamSpec("status_topic", "~/status", "pose_ros/TeleopStatus every cycle"),
    ParamSpec("publish_all_joints", True,
              "~/joint_states also lists the URDF's other movable joints at home, so RViz shows the whole robot",
              live=True),
    ParamSpec("stamp_source", "header", "input age from the skeleton 'header' stamp or its 'arrival' time "
              "(use arrival when the camera clock differs from this node's)", live=True),
    ParamSpec("engage_on_start", False, "engage as soon as the node starts (otherwise call ~/engage)"),
    ParamSpec("gesture_enabled", False, "both hands above the head for gesture_hold_s toggles engagement "
              "(overrides the mapping's safety.gesture)"),
    ParamSpec("gesture_hold_s", 1.5, "how long the hands-up gesture must be held", min=0.2, max=10.0),
    ParamSpec("markers_topic", "~/robot_markers",
              "visualization_msgs/MarkerArray: the commanded robot overlaid on the operator (camera frame)"),
    ParamSpec("marker_rate_hz", 10.0, "robot overlay rate: ~/robot_markers (skipped while nobody subscribes) and "
              "the robot_tf transform (0 = both off)", min=0.0, max=100.0),
    ParamSpec("robot_tf", True, "publish TF <skeleton frame> -> <URDF root link>: the commanded robot standing in "
              "the operator's place, as ~/robot_markers draws it, so RViz's RobotModel (robot_state_publisher on "
              "~/joint_states) shows it with the camera frames and objects; false where the robot's own TF tree "
              "already holds these links"),
    ParamSpec("status_period_s", 10.0, "period of the status log line", min=0.5, max=3600.0, live=True),
    ParamSpec("grippers", True, "publish a gripper command per hand from the operator's hand keypoints "
              "(human_pose `hands`): open fraction, through a one-joint safety layer each"),
    ParamSpec("gripper_left_topic", "~/gripper_left", "left gripper std_msgs/Float64 (0 closed .. 1 open)"),
    ParamSpec("gripper_right_topic", "~/gripper_right", "right gripper std_msgs/Float64 (0 closed .. 1 open)"),
    ParamSpec("gripper_commands_topic", "~/gripper_commands",
              "std_msgs/Float64MultiArray [left, right] for a forward_command_controller over the gripper joints"),
    ParamSpec("gripper_closed_ratio", 0.35, "hand aperture (thumb tip-index tip over wrist-middle knuckle) at or "
              "below which the gripper is closed (0)", min=0.0, max=3.0),
    ParamSpec("gripper_open_ratio", 0.9, "hand aperture at or above which the gripper is open (1)", min=0.0, max=3.0),
    ParamSpec("gripper_hysteresis_ratio", 0.05, "aperture changes smaller than this never move the command "
              "(backlash on the smoothed aperture: no chatter)", min=0.0, max=1.0),
    ParamSpec("gripper_min_hand_score", 0.5, "hands with a lower presence score count as not seen", min=0.0, max=1.0),
    ParamSpec("gripper_max_rate_per_s", 2.0, "rate limit of the command (fraction per second)", min=0.01, max=100.0),
    ParamSpec("gripper_max_accel_per_s2", 40.0, "acceleration limit of the command (fraction/s^2)",
              min=0.1, max=10000.0),
    ParamSpec("gripper_home", 1.0, "command when disengaged and after a lost hand's hold (1 = open: an object held "
              "is released then; 0 keeps the gripper closed)", min=0.0, max=1.0),
    ParamSpec("gripper_hold_time_s", 0.0, "hold the last command this long after the hand is lost, then move to "
              "gripper_home; 0 = the mapping's safety.hold_time_s (the arm's)", min=0.0, max=60.0),
]


DEFAULT_HORIZON_PERIODS = 3

# Why depth 1 for the skeleton and measured-state subscriptions: only the newest one matters, and a
# deeper queue turns a momentary stall into permanent latency. With depth 10 (the results' QoS),
# once the node fell behind under CPU load it worked through up to 10 queued skeletons in order,
# each one a frame older than it needed to be, and the backlog never drained while input kept
# coming at camera rate. Issue #20 measured skeleton -> command p50 237 ms with one busy core
# (~7 frames at 30 Hz) while the solve itself took 2.4 ms: waiting, the size of such a backlog
# (an inference; not re-measured before/after on an idle machine). Keep-last 1 drops the superseded
# skeletons in the DDS reader instead, so every solve starts from the newest frame (reliable
# delivery still matches the reliable publishers).
LATEST_ONLY_DEPTH = 1


def trajectory_horizon(horizon_s: float, rate_hz: float) -> float:
    """The `trajectory_horizon_s` parameter resolved against the control rate: 0 -> 3 periods.

    Shorter than one control period is refused: the trajectory would end (and the joints stop) before
    the next command arrives, every period."""
    period_s = 1.0 / rate_hz
    if horizon_s == 0.0:
        return DEFAULT_HORIZON_PERIODS * period_s
    if not math.isfinite(horizon_s):
        raise ValueError(f"parameter 'trajectory_horizon_s' = {horizon_s} must be a finite number of seconds")
    if horizon_s < period_s * (1 - 1e-9):
        raise ValueError(f"parameter 'trajectory_horizon_s' = {horizon_s:g} s is shorter than one control period "
                         f"({period_s:g} s at rate_hz {rate_hz:g}): the joint_trajectory_controller would stop "
                         f"between commands; use at least {2 * period_s:g} s, or 0 for "
                         f"{DEFAULT_HORIZON_PERIODS} periods")
    return float(horizon_s)


def trajectory_command(joint_names: list[str], q, horizon_s: float) -> JointTrajectory:
    """The `~/joint_trajectory` message for command `q`: one that ros2_control's
    joint_trajectory_controller (Jazzy/Kilted) accepts and follows while the robot moves.

    Its rules (control.ros.org, joint_trajectory_controller: "Trajectory Representation" /
    "Trajectory Replacement", the `allow_nonzero_velocity_at_trajectory_end` parameter):
    - a header stamp of zero (the default) means "start now", on receipt; a non-zero stamp whose
      stamp + last point's `time_from_start` lies in the past when the message is processed is
      rejected. Stamp 0 makes the command independent of transport latency and of clock offsets.
    - `allow_nonzero_velocity_at_trajectory_end` is false by default since Jazzy: a trajectory whose
      last point has a non-zero velocity is rejected. The point carries velocities of exactly 0: the
      controller interpolates from its state at receipt to `q` at rest (a cubic spline, velocity-
      continuous across replacements, when that state has velocities; linear otherwise).
    - `time_from_start` strictly increasing and > 0 (0 would be a step, no interpolation): one
      point at `horizon_s`. Each new command replaces the running trajectory from its receipt on, so
      the joints follow the commands with about one horizon of smoothing lag, and stop (at the last
      command, not beyond: the safety layer's limits hold) when commands stop for longer.
    - `joint_names` lists every controller joint (unless `allow_partial_joints_goal`), positions and
      velocities in that order.
    """
    q = [float(v) for v in q]
    if len(q) != len(joint_names):
        raise ValueError(f"{len(q)} positions for {len(joint_names)} joints")
    if not horizon_s > 0.0:
        raise ValueError(f"trajectory horizon must be > 0 s; got {horizon_s}")
    ns = int(round(horizon_s * 1e9))
    return JointTrajectory(
        header=Header(),                      # stamp 0: start on receipt
        joint_names=list(joint_names),
        points=[JointTrajectoryPoint(positions=q, velocities=[0.0] * len(q),
                                     time_from_start=Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))])


def _subscribed(publisher) -> bool:
    """Whether any subscription is matched to `publisher` (a DDS graph query, no message built)."""
    return publisher.get_subscription_count() > 0


def _resolve_path(value: str) -> Path:
    """Absolute, relative to the working directory, or relative to the package (config/...)."""
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    from pose_ros.human.urdf_model import default_robot_dir
    pkg_root = default_robot_dir().parents[1]
    return pkg_root / p if (pkg_root / p).exists() else p


class RetargetNode(Node):
    def __init__(self, node_name: str = "retarget", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_parameters(self, PARAMETERS, check=self._check_parameter, apply=self._apply_parameter)
        self.process_priority = apply_process_priority(self, self.p["process_realtime_priority"],
                                                       self.p["process_nice"])
        from pose_ros.human.retarget_mapping import default_mapping_path, load_mapping
        from pose_ros.human.retargeter import Retargeter
        from pose_ros.human.safety import SafetyConfig, SafetyLayer

        reason = self._check_parameter("stamp_source", self.p["stamp_source"])
        if reason:
            raise ValueError(reason)
        self.trajectory_horizon_s = trajectory_horizon(float(self.p["trajectory_horizon_s"]), float(self.p["rate_hz"]))
        mapping_path = _resolve_path(self.p["mapping_file"]) if self.p["mapping_file"] else default_mapping_path()
        urdf = _resolve_path(self.p["robot_urdf"]) if self.p["robot_urdf"] else None
        self.mapping = load_mapping(mapping_path, urdf_path=urdf)
        full_body = bool(self.p["full_body"])
        self.retargeter = Retargeter(self.mapping, full_body=full_body)
        self.config = SafetyConfig.from_mapping(self.mapping, full_body=full_body, overrides={
            "gesture": {"enabled": bool(self.p["gesture_enabled"]), "hold_s": float(self.p["gesture_hold_s"])},
            "max_command_age_s": float(self.p["max_command_age_s"])})
        self.safety = SafetyLayer(self.config)
        self.grippers = self._make_grippers() if self.p["grippers"] else None
        self.joint_names = list(self.config.joint_names)
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        # Guards the safety layer and keeps step + publish atomic, so commands leave in stamp order
        # whichever path (skeleton callback or timer) produced them.
        self._lock = threading.RLock()
        self._set_extra_joints(bool(self.p["publish_all_joints"]))
        self._last_solve_ms = math.nan
        self._last_residual = math.nan
        self._last_position_residual_m = math.nan
        self._limb_names = list(self.retargeter.limbs.names)   # TeleopStatus.limb_names, fixed order
        self._partial_js_warned = False
        self._period_s = 1.0 / float(self.p["rate_hz"])
        self._period_ns = int(round(self._period_s * 1e9))
        self._last_cycle_ns = -1              # ROS time of the last published command (both paths)
        self._publish_on_input = bool(self.p["publish_on_input"])
        # Safety-layer time is seconds since start: float64 keeps sub-microsecond resolution.
        self._t0_ns = self.get_clock().now().nanoseconds

        qos = result_qos()
        self.js_pub = self.create_publisher(JointState, self.p["joint_states_topic"], qos)
        self.traj_pub = self.create_publisher(JointTrajectory, self.p["trajectory_topic"], qos)
        self.fwd_pub = self.create_publisher(Float64MultiArray, self.p["forward_command_topic"], qos)
        self.status_pub = self.create_publisher(TeleopStatus, self.p["status_topic"], qos)
        self.marker_pub = self.create_publisher(MarkerArray, self.p["markers_topic"], qos)
        if self.grippers is not None:
            self.gripper_pubs = {side: self.create_publisher(Float64, self.p[f"gripper_{side}_topic"], qos)
                                 for side in self.grippers.sides}
            self.grippers_pub = self.create_publisher(Float64MultiArray, self.p["gripper_commands_topic"], qos)
        self._T_cam_body: np.ndarray | None = None
        self._camera_frame = ""
        self.tf = TfPublisher(self) if self.p["robot_tf"] else None
        self._skeleton_rate, self._command_rate = RateMeter(), RateMeter()
        # Latest-only inputs: keep-last depth 1 (see `LATEST_ONLY_DEPTH`).
        latest = result_qos(depth=LATEST_ONLY_DEPTH)
        self.create_subscription(HumanSkeletonArray, self.p["skeletons_topic"], self._on_skeletons, latest)
        self.create_subscription(JointState, self.p["measured_joint_states_topic"], self._on_measured, latest)
        self.create_service(Trigger, "~/engage", self._srv_engage)
        self.create_service(Trigger, "~/disengage", self._srv_disengage)
        self.create_service(SetBool, "~/set_engaged", self._srv_set_engaged)
        self.create_timer(self._period_s, self._on_timer)
        self._status_timer = self.create_timer(float(self.p["status_period_s"]), self._log_status)
        if float(self.p["marker_rate_hz"]) > 0:
            self.create_timer(1.0 / float(self.p["marker_rate_hz"]), self._publish_overlay)
        self.diagnostics = NodeDiagnostics(self, self._diagnostics, hardware_id=self.mapping.model.name)
        if self.p["engage_on_start"]:
            self.safety.engage(self._now())
        self.get_logger().info(
            f"retargeting onto {self.mapping.model.name} ({len(self.joint_names)} joints: "
            f"{', '.join(self.joint_names)}) at {self.p['rate_hz']:.0f} Hz; call ~/engage to start; "
            + (f"{self.tf.describe()}: <skeleton frame> -> {self.mapping.model.root}" if self.tf else "robot_tf off"))

    def _make_grippers(self):
        """One gripper per hand with the arm's timing (hold, timeouts) and the gripper_* parameters."""
        from pose_ros.human.gripper_command import GripperCommander, GripperConfig

        p = self.p
        overrides = dict(closed_ratio=float(p["gripper_closed_ratio"]), open_ratio=float(p["gripper_open_ratio"]),
                         hysteresis_ratio=float(p["gripper_hysteresis_ratio"]),
                         min_hand_score=float(p["gripper_min_hand_score"]),
                         max_rate_per_s=float(p["gripper_max_rate_per_s"]),
                         max_accel_per_s2=float(p["gripper_max_accel_per_s2"]), home=float(p["gripper_home"]))
        if float(p["gripper_hold_time_s"]) > 0:
            overrides["hold_time_s"] = float(p["gripper_hold_time_s"])
        return GripperCommander(GripperConfig.from_safety(self.config, **overrides))

    # -- live parameters, diagnostics ------------------------------------------------------
    def _set_extra_joints(self, publish_all: bool) -> None:
        extra = [j for j in self.mapping.model.actuated_joint_names if j not in self._index] if publish_all else []
        with self._lock:
            self._extra_names = extra
            self._extra_q = [self.mapping.home.get(j, 0.0) for j in extra]

    @staticmethod
    def _check_parameter(name: str, value) -> str | None:
        if name == "stamp_source" and value not in ("header", "arrival"):
            return f"stamp_source '{value}' is not valid; use 'header' or 'arrival'"
        return None

    def _apply_parameter(self, name: str, value) -> None:
        if name == "publish_all_joints":
            self._set_extra_joints(bool(value))
        elif name == "status_period_s":
            self._status_timer.timer_period_ns = int(float(value) * 1e9)
            self._status_timer.reset()

    def _diagnostics(self) -> DiagnosticReport:
        with self._lock:
            c = self.safety.counters.as_dict()
            state, message = self.safety.state, self.safety.message
            command_age_s = self.safety.command_age_s
        values = {"state": state.name, "skeleton_rate_hz": round(self._skeleton_rate.rate_hz(), 2),
                  "command_rate_hz": round(self._command_rate.rate_hz(), 2), "solve_ms_last": self._last_solve_ms,
                  "command_age_ms_last": round(command_age_s * 1e3, 1) if math.isfinite(command_age_s) else "n/a",
                  "max_command_age_ms": round(self.config.max_command_age_s * 1e3, 1),
                  "ik_residual_deg": math.degrees(self._last_residual) if math.isfinite(self._last_residual) else "n/a",
                  "stamp_source": self.p["stamp_source"], **c}
        level = ERROR if state.name == "FAULT" else WARN if state.name in ("HOLDING", "RETURNING_HOME") else OK
        return DiagnosticReport(f"{state.name}: {message}", values, level)

    def _now(self) -> float:
        return self._to_s(self.get_clock().now().nanoseconds)

    def _to_s(self, ns: int) -> float:
        return (ns - self._t0_ns) * 1e-9

    # -- inputs ----------------------------------------------------------------------------
    def _on_skeletons(self, msg: HumanSkeletonArray) -> None:
        self._skeleton_rate.tick()
        now = self._now()
        with self._lock:
            if not msg.skeletons:
                self.safety.submit_tracking_lost(now)
                self.retargeter.notify_tracking_lost()   # counts towards re-measuring the operator
                if self.grippers is not None:
                    self.grippers.submit_lost(now)
                return
            sk = next((s for s in msg.skeletons if s.is_operator), msg.skeletons[0])
            n = len(sk.keypoints)
            pts = np.empty((n, 3))
            conf = np.empty(n)
            names = []
            for i, kp in enumerate(sk.keypoints):
                pts[i] = (kp.position.x, kp.position.y, kp.position.z)
                conf[i] = kp.confidence
                names.append(kp.name)
            if n == 0 or np.any(np.isinf(pts)) or not np.all(np.isfinite(conf)) or len(set(names)) != n:
                self.safety.submit_invalid(now)      # malformed: counted, dropped
                if self.grippers is not None:
                    self.grippers.submit_invalid(now)
                return
            stamp = self._to_s(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
            if self.p["stamp_source"] == "arrival":
                stamp = now
            self._submit_hands(sk, stamp, now)
            # a new track id is a new operator: limb lengths are re-measured
            res = self.retargeter.solve(pts, names, conf, operator_id=int(sk.track_id))
            self._last_solve_ms = res.solve_time_ms
            self._last_position_residual_m = res.position_residual_m
            if not res.valid:
                self.safety.submit_tracking_lost(now)
                return
            self._last_residual = res.residual_rad
            self._T_cam_body, self._camera_frame = res.T_cam_body, msg.header.frame_id
            # Submitted at the time the solve finished, which is when its command goes out: the
            # safety layer checks that command age (max_command_age_s), not just the arrival age.
            accepted = self.safety.submit_target(res.q, stamp_s=stamp, now_s=self._now(), hands_up=res.hands_up)
            if accepted and self._publish_on_input:
                self._cycle()

    def _submit_hands(self, sk, stamp_s: float, now_s: float) -> None:
        """The operator's hands -> gripper targets; a side without a hand this frame counts as lost."""
        if self.grippers is None:
            return
        from pose_ros.human.conventions import HAND21, HAND21_NAMES

        by_side = {}
        for hand in sk.hands:
            by_side.setdefault(hand.side, hand)          # at most one per side; the first wins
        for side in self.grippers.sides:
            hand = by_side.get(side)
            if hand is None:
                self.grippers.submit(side, None, stamp_s, now_s)
            elif hand.convention != HAND21 or len(hand.keypoints) != len(HAND21_NAMES):
                self.grippers.submit_invalid(now_s, side)
            else:
                pts = np.array([(k.position.x, k.position.y, k.position.z) for k in hand.keypoints])
                self.grippers.submit(side, pts, stamp_s, now_s, score=float(hand.score))

    def _on_measured(self, msg: JointState) -> None:
        q = np.full(len(self.joint_names), np.nan)
        for name, pos in zip(msg.name, msg.position):
            i = self._index.get(name)
            if i is not None:
                q[i] = pos
        if np.isnan(q).any():
            if not self._partial_js_warned:
                missing = [self.joint_names[i] for i in np.flatnonzero(np.isnan(q))]
                self.get_logger().warning(f"{self.p['measured_joint_states_topic']} lacks {missing}; "
                                          "those messages are ignored for the engage ramp")
                self._partial_js_warned = True
            return
        with self._lock:
            self.safety.set_measured(q, self._now())

    # -- services --------------------------------------------------------------------------
    def _srv_engage(self, request, response):
        with self._lock:
            response.success, response.message = self.safety.engage(self._now())
        self.get_logger().info(f"engage: {response.message}")
        return response

    def _srv_disengage(self, request, response):
        with self._lock:
            response.success, response.message = self.safety.disengage(self._now())
        self.get_logger().info(f"disengage: {response.message}")
        return response

    def _srv_set_engaged(self, request, response):
        with self._lock:
            response.success, response.message = self.safety.set_engaged(bool(request.data), self._now())
        return response

    # -- control loop ----------------------------------------------------------------------
    def _on_timer(self) -> None:
        """Keeps the command stream and the safety state machine going without input."""
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            # Skip the tick when a fresh skeleton produced a command recently (within ~one
            # period, with slack for timer jitter): the stream never pauses for two periods.
            if self._last_cycle_ns >= 0 and now_ns - self._last_cycle_ns < 0.75 * self._period_ns:
                return
            self._cycle()

    def _cycle(self) -> None:
        """One safety step at the current time, published on every command topic (lock held)."""
        if not self.context.ok():      # shutting down (Ctrl-C): nothing to publish to
            return
        with self._lock:
            now_msg = self.get_clock().now()
            if now_msg.nanoseconds <= self._last_cycle_ns:
                return  # same clock reading as the previous command: nothing new to send
            self._last_cycle_ns = now_msg.nanoseconds
            out = self.safety.step(self._to_s(now_msg.nanoseconds))
            solve_ms, residual = self._last_solve_ms, self._last_residual
            header = Header(stamp=now_msg.to_msg())
            q, qd = out.q.tolist(), out.qd.tolist()
            # Each message is built and written only for a topic with a subscriber: the topics are
            # volatile, so one written with none matched reaches nobody, and the building (message
            # field checks) and the DDS write are most of a control cycle's CPU after the step.
            if _subscribed(self.js_pub):
                self.js_pub.publish(JointState(header=header, name=self.joint_names + self._extra_names,
                                               position=q + self._extra_q,
                                               velocity=qd + [0.0] * len(self._extra_names)))
            if _subscribed(self.traj_pub):
                self.traj_pub.publish(trajectory_command(self.joint_names, q, self.trajectory_horizon_s))
            if _subscribed(self.fwd_pub):
                fwd = Float64MultiArray(data=q)
                fwd.layout.dim = [MultiArrayDimension(label="joints", size=len(q), stride=len(q))]
                self.fwd_pub.publish(fwd)
            self._command_rate.tick()
            grip = {}
            if self.grippers is not None:
                from pose_ros.human.safety import TeleopState

                grip = self.grippers.step(self._to_s(now_msg.nanoseconds),
                                          follow=out.state in (TeleopState.ENGAGING, TeleopState.ENGAGED))
                for side, g in grip.items():
                    if _subscribed(self.gripper_pubs[side]):
                        self.gripper_pubs[side].publish(Float64(data=g.command))
                if _subscribed(self.grippers_pub):
                    cmd = [grip[side].command for side in self.grippers.sides]
                    arr = Float64MultiArray(data=cmd)
                    arr.layout.dim = [MultiArrayDimension(label="grippers", size=len(cmd), stride=len(cmd))]
                    self.grippers_pub.publish(arr)
            if not _subscribed(self.status_pub):
                return
            c = out.counters
            limbs = self.retargeter.limb_lengths_m      # measured ones only
            self.status_pub.publish(TeleopStatus(
                header=header, state=int(out.state), state_name=out.state_name, tracking=bool(out.tracking),
                input_age_s=float(out.input_age_s), command_age_s=float(out.command_age_s),
                solve_time_ms=float(solve_ms),
                ik_residual_rad=float(residual), ik_position_residual_m=float(self._last_position_residual_m),
                limb_names=self._limb_names, limb_lengths_m=[limbs.get(n, math.nan) for n in self._limb_names],
                position_limit_clamps=c.position_limit_clamps,
                velocity_limit_clamps=c.velocity_limit_clamps, acceleration_limit_clamps=c.acceleration_limit_clamps,
                invalid_inputs=c.invalid_inputs, stale_inputs=c.stale_inputs, stale_commands=c.stale_commands,
                tracking_losses=c.tracking_losses, watchdog_trips=c.watchdog_trips,
                gripper_names=list(grip), gripper_commands=[float(g.command) for g in grip.values()],
                gripper_states=[int(g.state) for g in grip.values()],
                gripper_tracking=[bool(g.tracking) for g in grip.values()],
                gripper_aperture_ratios=[float(g.aperture_ratio) for g in grip.values()], message=out.message))

    def _publish_overlay(self) -> None:
        """The commanded robot at the operator's pelvis (robot base = body frame): its root link on /tf
        (robot_tf) and a stick figure on ~/robot_markers, each only while someone subscribes (the
        forward kinematics and the transform cost ~2 ms a call, on the teleop node's core)."""
        from pose_ros.human.kinematics import all_link_poses

        markers = _subscribed(self.marker_pub)
        send_tf = self.tf is not None and self.tf.has_listeners()
        if not markers and not send_tf:
            return
        with self._lock:
            T_cam_body, frame = self._T_cam_body, self._camera_frame
            q = self.safety.q_command
            extra = dict(zip(self._extra_names, self._extra_q))
        if T_cam_body is None or q is None or not self.context.ok():
            return
        poses = all_link_poses(self.mapping.model, {**extra, **dict(zip(self.joint_names, q))})
        T_cam_base = T_cam_body @ np.linalg.inv(poses[self.mapping.base_link])
        stamp = self.get_clock().now().to_msg()
        if send_tf and frame:
            self.tf.send([transform_stamped(frame, self.mapping.model.root, T_cam_base, stamp)])
        if markers:
            self._publish_markers(frame, poses, T_cam_base, stamp)

    def _publish_markers(self, frame: str, poses: dict, T_cam_base: np.ndarray, stamp) -> None:
        """Stick figure of the commanded robot: `poses` (T_root_link), the root at `T_cam_base`."""
        origin = {link: T_cam_base[:3, :3] @ T[:3, 3] + T_cam_base[:3, 3] for link, T in poses.items()}
        header = Header(stamp=stamp, frame_id=frame)
        bones = Marker(header=header, ns="robot_bones", id=0, type=Marker.LINE_LIST, action=Marker.ADD)
        bones.scale.x = 0.015
        bones.color = ColorRGBA(r=0.2, g=0.6, b=1.0, a=1.0)
        bones.pose.orientation.w = 1.0
        for j in self.mapping.model.joints.values():
            a, b = origin[j.parent], origin[j.child]
            if np.linalg.norm(a - b) > 1e-6:
                bones.points += [Point(x=float(a[0]), y=float(a[1]), z=float(a[2])),
                                 Point(x=float(b[0]), y=float(b[1]), z=float(b[2]))]
        joints = Marker(header=header, ns="robot_joints", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
        joints.scale.x = joints.scale.y = joints.scale.z = 0.03
        joints.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        joints.pose.orientation.w = 1.0
        for j in self.mapping.model.joints.values():
            if j.movable:
                c = origin[j.child]
                joints.points.append(Point(x=float(c[0]), y=float(c[1]), z=float(c[2])))
        self.marker_pub.publish(MarkerArray(markers=[bones, joints]))

    def _log_status(self) -> None:
        with self._lock:
            c = self.safety.counters
            state, msg = self.safety.state.name, self.safety.message
            limbs = self.retargeter.limb_lengths_m
            grip = "" if self.grippers is None else "; grippers: " + ", ".join(
                f"{side} {layer.state.name} {(layer.q_command if layer.q_command is not None else [math.nan])[0]:.2f}"
                for side, layer in self.grippers.layers.items())
        limb_text = ", ".join(f"{k} {v:.2f}" for k, v in limbs.items() if math.isfinite(v)) or "not measured yet"
        self.get_logger().info(f"{state} ({msg}); solve {self._last_solve_ms:.2f} ms, residual "
                               f"{math.degrees(self._last_residual) if math.isfinite(self._last_residual) else float('nan'):.1f} deg, "
                               f"hand/elbow position {self._last_position_residual_m * 100:.1f} cm; operator limbs [m]: "
                               f"{limb_text}; " + ", ".join(f"{k} {v}" for k, v in c.as_dict().items()) + grip)


def main(args: list[str] | None = None) -> int:
    # One executor thread: the multi-threaded executor cost ~20% of a core more (see the runner).
    return run_node(RetargetNode, args, threads=1)


if __name__ == "__main__":
    sys.exit(main())
