"""Retargeting with per-segment scaling: operator limb lengths, scaled position targets, the IK
reaching them within the joint limits, operator changes, the workspace clamp, mapping validation,
and real CMU mocap (hand-position error with and without position targets)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_data_path

from pose_ros.eval.retarget_metrics import compute_retarget_metrics, position_stats_cm
from pose_ros.human.conventions import BLAZEPOSE33_NAMES
from pose_ros.human.kinematics import all_link_poses
from pose_ros.human.limb_lengths import LimbLengthEstimator
from pose_ros.human.retarget_mapping import MappingError, load_mapping
from pose_ros.human.retargeter import Retargeter

ROBOTS = REPO_ROOT / "config" / "robots"
NAMES = list(BLAZEPOSE33_NAMES)
IDX = {n: i for i, n in enumerate(NAMES)}


def _T_cam_base(distance_m: float = 2.5) -> np.ndarray:
    """Level camera facing the robot: base x (forward) = -z_cam, y (left) = x_cam, z (up) = -y_cam."""
    T = np.eye(4)
    T[:3, :3] = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
    T[:3, 3] = (0.0, 0.2, distance_m)
    return T


def _operator(r: Retargeter, q: np.ndarray, arm_scale: float = 1.0, T_cam_base=None) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of an operator posed like our humanoid at q, with upper arms and forearms
    `arm_scale` times the robot's (torso, shoulders, hands as the robot's)."""
    T_cam_base = _T_cam_base() if T_cam_base is None else T_cam_base
    poses = all_link_poses(r.mapping.model, {**r.mapping.home, **dict(zip(r.joint_names, q))})

    def pt(link, off=(0.0, 0.0, 0.0)):
        return (T_cam_base @ poses[link] @ np.r_[off, 1.0])[:3]

    kp = np.full((33, 3), np.nan)
    hip_c = pt("torso_yaw_link")
    y_cam = T_cam_base[:3, 1]
    kp[IDX["left_hip"]], kp[IDX["right_hip"]] = hip_c + 0.1 * y_cam, hip_c - 0.1 * y_cam
    for side in ("left", "right"):
        s, e, w = pt(f"{side}_shoulder_pitch_link"), pt(f"{side}_forearm_link"), pt(f"{side}_hand_link")
        e2 = s + arm_scale * (e - s)
        w2 = e2 + arm_scale * (w - e)
        kp[IDX[f"{side}_shoulder"]], kp[IDX[f"{side}_elbow"]], kp[IDX[f"{side}_wrist"]] = s, e2, w2
        kp[IDX[f"{side}_pinky"]] = pt(f"{side}_hand_link", (-0.04, 0.0, -0.08)) + (w2 - w)
        kp[IDX[f"{side}_index"]] = pt(f"{side}_hand_link", (0.04, 0.0, -0.08)) + (w2 - w)
    kp[IDX["left_ear"]] = pt("head_link", (0.0, 0.07, 0.11))
    kp[IDX["right_ear"]] = pt("head_link", (0.0, -0.07, 0.11))
    kp[IDX["nose"]] = pt("head_link", (0.10, 0.0, 0.09))
    return kp, np.where(np.isfinite(kp[:, 0]), 1.0, 0.0)


def _robot_points(r: Retargeter, q: np.ndarray) -> dict[str, np.ndarray]:
    """Link origins in the base frame at q (independent FK: whole-tree all_link_poses)."""
    poses = all_link_poses(r.mapping.model, {**r.mapping.home, **dict(zip(r.joint_names, q))})
    return {k: v[:3, 3] for k, v in poses.items()}


@pytest.fixture(scope="module")
def ours():
    return load_mapping(ROBOTS / "pose_ros_humanoid.yaml")


def _random_pose(r: Retargeter, rng, spread: float = 0.6) -> np.ndarray:
    return np.clip(r.q_home + rng.uniform(-spread, spread, r.q_home.shape), r.lower + 0.1, r.upper - 0.1)


# -- limb lengths --------------------------------------------------------------------------------
def test_limb_length_median_ignores_outliers_and_restarts_a_wrongly_seeded_segment():
    rng = np.random.default_rng(0)
    est = LimbLengthEstimator(["upper_arm", "forearm"], window=50, min_samples=5, outlier_ratio=0.3)
    assert est.as_dict() == {} and np.all(np.isnan(est.lengths_m))
    for k in range(200):
        sample = np.array([0.30, 0.25]) + rng.normal(0, 0.01, 2)
        if k % 10 == 3:
            sample[0] = 0.9                       # a keypoint jumped: gated out
        est.update(sample, np.array([True, k % 2 == 0]))
    assert abs(est.lengths_m[0] - 0.30) < 0.005 and abs(est.lengths_m[1] - 0.25) < 0.005
    assert est.sample_counts.tolist() == [50, 50]
    est.update(np.array([np.nan, 0.0]), np.array([True, True]))      # unusable values are ignored
    assert abs(est.lengths_m[0] - 0.30) < 0.005
    # seeded on a wrong length, then only the true one arrives: the segment starts over
    est.reset()
    for _ in range(5):
        est.update(np.array([0.6, 0.25]), np.array([True, True]))
    for _ in range(60):
        est.update(np.array([0.3, 0.25]), np.array([True, True]))
    assert abs(est.lengths_m[0] - 0.3) < 1e-9


def test_operator_limb_lengths_are_measured_and_reset_on_operator_change_and_loss(ours):
    r = Retargeter(ours)
    robot_len = r.robot_segment_lengths_m
    q = r.q_home.copy()
    long_kp, conf = _operator(r, q, arm_scale=1.3)
    for _ in range(10):
        res = r.solve(long_kp, NAMES, conf, operator_id=1)
    assert res.valid
    for seg in ("left_upper_arm", "left_forearm", "right_upper_arm", "right_forearm"):
        assert r.limb_lengths_m[seg] == pytest.approx(1.3 * robot_len[seg], rel=0.02), seg
        assert r.segment_scales()[seg] == pytest.approx(1 / 1.3, rel=0.02)
    assert res.limb_lengths_m == r.limb_lengths_m
    assert r.limb_lengths_m["torso"] == pytest.approx(robot_len["torso"], rel=0.02)
    # same person id: the median holds the old lengths for a while
    short_kp, _ = _operator(r, q, arm_scale=1.0)
    r.solve(short_kp, NAMES, conf, operator_id=1)
    assert r.limb_lengths_m["left_forearm"] == pytest.approx(1.3 * robot_len["left_forearm"], rel=0.02)
    # a new operator is measured from scratch
    r.solve(short_kp, NAMES, conf, operator_id=2)
    assert r.limb_lengths_m["left_forearm"] == pytest.approx(robot_len["left_forearm"], rel=0.02)
    # tracking loss long enough forgets them too
    lost = short_kp.copy()
    lost[IDX["left_hip"]] = np.nan
    for _ in range(ours.solver.limb_reset_after_invalid - 1):
        assert not r.solve(lost, NAMES, conf).valid
    assert r.limb_lengths_m
    r.notify_tracking_lost()          # the node: an empty skeleton message
    assert r.limb_lengths_m == {}


# -- per-segment scaling ---------------------------------------------------------------------------
def test_longer_armed_operator_gives_hand_targets_at_the_robots_proportional_position(ours):
    r = Retargeter(ours)
    names = r.position_target_names
    assert {"left_hand", "right_hand", "left_elbow", "right_elbow"} <= set(names)
    rng = np.random.default_rng(3)
    for _ in range(4):
        q = _random_pose(r, rng)
        kp, conf = _operator(r, q, arm_scale=1.3)
        r.reset_operator()
        r.solve(kp, NAMES, conf)                 # measures the lengths
        x, seen = r.target_positions(kp, NAMES, conf)
        assert seen.all()
        p = _robot_points(r, q)
        for side in ("left", "right"):
            # elbow relative to the shoulder, hand relative to the pelvis anchor: where the robot's are
            assert np.allclose(x[names.index(f"{side}_elbow")],
                               p[f"{side}_forearm_link"] - p[f"{side}_shoulder_pitch_link"], atol=5e-3)
            assert np.allclose(x[names.index(f"{side}_hand")],
                               p[f"{side}_hand_link"] - p["torso_yaw_link"], atol=5e-3)
        # the unscaled human positions are 30% further out: the scaling is doing the work
        human_reach = np.linalg.norm(kp[IDX["left_wrist"]] - kp[IDX["left_shoulder"]])
        robot_reach = np.linalg.norm(p["left_hand_link"] - p["left_shoulder_pitch_link"])
        assert human_reach == pytest.approx(1.3 * robot_reach, rel=1e-6)


def test_ik_reaches_reachable_position_targets_within_limits(ours):
    r = Retargeter(ours)
    rng = np.random.default_rng(11)
    for trial in range(5):
        q_true = _random_pose(r, rng)
        kp, conf = _operator(r, q_true, arm_scale=1.3)
        r.reset_operator()
        for _ in range(6):
            res = r.solve(kp, NAMES, conf)
        assert res.valid, res.reason
        assert np.all(res.q >= r.lower - 1e-12) and np.all(res.q <= r.upper + 1e-12)
        assert np.nanmax(res.position_errors_m) < 0.01, (trial, res.position_errors_m)
        p = _robot_points(r, res.q)
        p_true = _robot_points(r, q_true)
        for side in ("left", "right"):      # independent FK agrees: the hand is where the robot's was
            assert np.linalg.norm(p[f"{side}_hand_link"] - p_true[f"{side}_hand_link"]) < 0.015


def test_position_targets_place_the_hand_when_the_torso_cannot_follow(ours):
    """Operator leans forward beyond the robot's torso-pitch limit: with directions only the hand
    follows the (clamped) torso, with the pelvis-anchored hand target the arms make up for it."""
    with_pos = Retargeter(ours)
    dirs_only = Retargeter(dataclasses.replace(ours, position_targets=[
        dataclasses.replace(t, weight=0.0) for t in ours.position_targets]))
    q = with_pos.q_home.copy()
    pitch = with_pos.joint_names.index("torso_pitch_joint")
    q[pitch] = 1.05                                          # URDF upper limit 0.8
    for side in ("left", "right"):                           # arms forward, elbows bent: slack to reach
        q[with_pos.joint_names.index(f"{side}_shoulder_pitch_joint")] = -0.8
        q[with_pos.joint_names.index(f"{side}_elbow_joint")] = 1.4
    kp, conf = _operator(with_pos, q)
    for _ in range(30):
        a, b = with_pos.solve(kp, NAMES, conf), dirs_only.solve(kp, NAMES, conf)
    assert a.q[pitch] <= with_pos.upper[pitch] + 1e-12 and b.q[pitch] <= with_pos.upper[pitch] + 1e-12
    k = with_pos.position_target_names.index("left_hand")
    assert b.position_errors_m[k] > 0.05                     # a real gap to close
    assert a.position_errors_m[k] < 0.7 * b.position_errors_m[k], (a.position_errors_m[k], b.position_errors_m[k])
    # the arm moved to do it: not the same pose with a different score
    assert np.abs(a.q - b.q).max() > 0.1
    # with the torso held at its limit, the direction-only arms still copy the operator's arm
    # directions (the IK re-solves the free joints instead of freezing at the bound)
    segs = [s.name for s in dirs_only.segments]
    for seg in ("left_upper_arm", "left_forearm", "right_upper_arm", "right_forearm"):
        assert np.degrees(b.segment_errors_rad[segs.index(seg)]) < 3.0, seg


def test_targets_beyond_the_robots_reach_are_clamped(ours):
    r = Retargeter(ours)
    q = r.q_home.copy()
    q[r.joint_names.index("left_elbow_joint")] = 0.0          # straight arm
    kp, conf = _operator(r, q)
    for _ in range(10):
        r.solve(kp, NAMES, conf)
    # this frame the wrist appears 40% further out (depth noise): the estimate keeps the old length
    far = kp.copy()
    far[IDX["left_wrist"]] = kp[IDX["left_elbow"]] + 1.4 * (kp[IDX["left_wrist"]] - kp[IDX["left_elbow"]])
    res = r.solve(far, NAMES, conf)
    assert res.targets_clamped >= 1
    x, seen = r.target_positions(far, NAMES, conf)
    names = r.position_target_names
    p = _robot_points(r, q)
    arm = x[names.index("left_hand")] - (p["left_shoulder_pitch_link"] - p["torso_yaw_link"])
    reach = r.robot_segment_lengths_m["left_upper_arm"] + r.robot_segment_lengths_m["left_forearm"]
    assert np.linalg.norm(arm) <= reach * ours.solver.reach_fraction + 1e-3
    assert np.linalg.norm(arm) > 0.95 * reach                 # pulled onto the boundary, not folded


# -- mapping validation --------------------------------------------------------------------------
def _write(tmp_path, text: str):
    text = text.replace("urdf: pose_ros_humanoid.urdf", f"urdf: {ROBOTS / 'pose_ros_humanoid.urdf'}")
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("old, new, message", [
    ("chain: [left_upper_arm]}", "chain: [left_uper_arm]}", "unknown segment 'left_uper_arm'"),
    ("chain: [torso, left_clavicle, left_upper_arm, left_forearm]", "chain: [torso, left_upper_arm, left_forearm]",
     "chain breaks between 'torso' and 'left_upper_arm'"),
    ("{name: left_elbow, group: left_arm, weight: 2.0,", "{name: left_elbow, group: left_arm, weight: -2.0,",
     "weight must be a finite number > 0"),
    ("{name: left_elbow, group: left_arm, weight: 2.0,", "{name: left_elbow, group: left_arm, weight: .nan,",
     "weight must be a finite number > 0"),
    ("{name: left_elbow, group: left_arm, weight: 2.0,", "{name: left_elbow, group: left_arm, weight: heavy,",
     "weight must be a finite number > 0"),
    ("{name: left_elbow, group: left_arm, weight: 2.0,", "{name: left_elbow, group: left_arms, weight: 2.0,",
     "group 'left_arms' is not in joint_groups"),
    ("{name: left_elbow, group: left_arm, weight: 2.0,", "{name: left_elbow, group: left_arm, wieght: 2.0,",
     "unknown key 'wieght'"),
    ("{name: left_elbow, group: left_arm, weight: 2.0,", "{name: left_elbow, group: left_arm, weight: 2.0, chain: [], x: 1,",
     "unknown key 'x'"),
    ("{name: torso, group: torso, weight: 1.5,", "{name: torso, group: torso, weight: 1.5, scale: 0,",
     "scale must be a finite number > 0"),
    ("{name: torso, group: torso, weight: 1.5,", "{name: torso, group: torso, weight: yes,",
     "weight must be a finite number > 0"),
    ("robot: [left_shoulder_pitch_link, left_forearm_link]", "robot: [left_shoulder_pitch_link, left_forarm_link]",
     "unknown robot link 'left_forarm_link'"),
    ("human: [left_shoulder, left_elbow]", "human: [left_shoulder, left_elbo]", "unknown keypoint 'left_elbo'"),
    ("  iterations: 4\n", "  iterations: 4.5\n", "solver.iterations: must be a finite int"),
    ("  iterations: 4\n", "  iterations: 4\n  reach_fraction: 1.5\n", "reach_fraction: must be in"),
    ("  iterations: 4\n", "  iterations: 4\n  limb_window: 0\n", "limb_window: must be >= 1"),
])
def test_mapping_errors_name_the_problem(tmp_path, old, new, message):
    text = (ROBOTS / "pose_ros_humanoid.yaml").read_text()
    assert old in text, old
    with pytest.raises(MappingError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_mapping(_write(tmp_path, text.replace(old, new, 1)))


def test_fixed_segment_scale_overrides_the_measured_ratio(tmp_path, ours):
    text = (ROBOTS / "pose_ros_humanoid.yaml").read_text()
    text = text.replace("{name: left_forearm, group: left_arm, weight: 1.0,",
                        "{name: left_forearm, group: left_arm, weight: 1.0, scale: 0.5,", 1)
    r = Retargeter(load_mapping(_write(tmp_path, text)))
    kp, conf = _operator(r, r.q_home, arm_scale=1.3)
    r.solve(kp, NAMES, conf)
    scales = r.segment_scales()
    assert scales["left_forearm"] == 0.5 and scales["right_forearm"] == pytest.approx(1 / 1.3, rel=0.02)
    x, _ = r.target_positions(kp, NAMES, conf)
    names = r.position_target_names
    # hand target = pelvis -> shoulder (robot, unscaled operator torso) + upper arm + 0.5 x forearm
    p = _robot_points(r, r.q_home)
    elbow_from_pelvis = p["left_shoulder_pitch_link"] - p["torso_yaw_link"] + x[names.index("left_elbow")]
    forearm_part = x[names.index("left_hand")] - elbow_from_pelvis
    human_forearm = np.linalg.norm(kp[IDX["left_wrist"]] - kp[IDX["left_elbow"]])
    assert np.linalg.norm(forearm_part) == pytest.approx(0.5 * human_forearm, rel=0.02)


def test_mapping_without_position_targets_still_loads_and_solves(tmp_path):
    text = (ROBOTS / "pose_ros_humanoid.yaml").read_text()
    start = text.index("position_targets:")
    end = text.index("\n\n", start)
    m = load_mapping(_write(tmp_path, text[:start] + text[end:]))
    assert m.position_targets == []
    r = Retargeter(m)
    kp, conf = _operator(r, r.q_home)
    res = r.solve(kp, NAMES, conf)
    assert res.valid and res.position_errors_m.shape == (0,) and np.isnan(res.position_residual_m)


# -- metrics and real mocap ------------------------------------------------------------------------
def test_position_stats_in_cm_and_hand_targets_only():
    err = np.array([[0.01, 0.02, np.nan], [0.03, 0.04, 0.10]])
    s = position_stats_cm(err, ["left_hand", "right_wrist", "left_elbow"])
    assert s["mean_hand_position_error_cm"] == pytest.approx(2.5)
    assert s["mean_position_error_cm"] == pytest.approx(4.0)
    assert s["per_target_position_error_cm"] == pytest.approx({"left_hand": 2.0, "right_wrist": 3.0,
                                                               "left_elbow": 10.0})
    masked = position_stats_cm(err, ["left_hand", "right_wrist", "left_elbow"], mask=np.array([False, True]))
    assert masked["mean_hand_position_error_cm"] == pytest.approx(3.5)
    with pytest.raises(ValueError, match="target_names"):
        position_stats_cm(err, ["a"])
    assert np.isnan(position_stats_cm(None, None)["mean_hand_position_error_cm"])


@pytest.mark.parametrize("mapping_name", ["pose_ros_humanoid.yaml", "unitree_g1.yaml"])
def test_cmu_clip_position_targets_bring_the_hands_closer(mapping_name):
    from pose_ros.cli.commands.retarget import _directions_only, run_retarget
    from pose_ros.human.bvh import bvh_to_camera_skeletons, frame_times_s, load_bvh
    from pose_ros.human.safety import SafetyConfig, SafetyLayer, TeleopState

    clip = load_bvh(shared_data_path("mocap_cmu131", "resources", "scaled_131_01.bvh"))
    frames = slice(0, 480)
    kp, _ = bvh_to_camera_skeletons(clip, frames=frames)
    t = frame_times_s(clip)[frames]
    mapping = load_mapping(ROBOTS / mapping_name)
    runs = {}
    for label, m in (("positions", mapping), ("directions", _directions_only(mapping))):
        r = Retargeter(m)
        cfg = SafetyConfig.from_mapping(m)
        runs[label] = run = run_retarget(kp, NAMES, t, r, SafetyLayer(cfg, initial_q=cfg.home))
        lims = [m.model.limits_of(j) for j in run.joint_names]
        engaged = run.state == int(TeleopState.ENGAGED)
        metrics = compute_retarget_metrics(
            run.t_s, run.q_cmd, run.joint_names, np.array([lim.lower for lim in lims]),
            np.array([lim.upper for lim in lims]), np.array([lim.velocity for lim in lims]),
            run.direction_error_rad, run.segment_names, run.solve_time_ms, amax=cfg.max_acceleration,
            mask=engaged, position_errors_m=run.position_error_m, target_names=run.target_names)
        assert metrics.joint_limit_violations == 0 and metrics.velocity_limit_violations == 0
        assert metrics.acceleration_limit_violations == 0
        assert np.isfinite(metrics.mean_hand_position_error_cm)
        # CMU subject 131: adult proportions, constant over the clip (a rigid mocap skeleton)
        limbs = run.limb_lengths_m
        assert 0.2 < limbs["left_upper_arm"] < 0.4 and 0.15 < limbs["left_forearm"] < 0.35
        assert 0.3 < limbs["left_thigh"] < 0.55 and 0.25 < limbs["shoulders"] < 0.5
    hands = [k for k, n in enumerate(runs["positions"].target_names) if "hand" in n]
    ik_pos = np.nanmean(runs["positions"].ik_position_error_m[:, hands])
    ik_dir = np.nanmean(runs["directions"].ik_position_error_m[:, hands])
    assert ik_pos < 0.8 * ik_dir, (ik_pos, ik_dir)
    # and the limb directions stay close to the direction-only solve
    d_pos = np.degrees(np.nanmean(runs["positions"].ik_residual_rad))
    d_dir = np.degrees(np.nanmean(runs["directions"].ik_residual_rad))
    assert d_pos < d_dir + 2.0, (d_pos, d_dir)
