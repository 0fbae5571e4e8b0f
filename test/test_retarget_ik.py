"""Retargeting IK: exact recovery on skeletons made by the robot itself, camera invariance,
bad input, and real CMU mocap through the IK + safety layer onto our humanoid and the G1."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_data_path

from pose_ros.cli.commands.retarget import run_retarget
from pose_ros.eval.retarget_metrics import compute_retarget_metrics
from pose_ros.human.bvh import bvh_to_camera_skeletons, frame_times_s, load_bvh
from pose_ros.human.conventions import BLAZEPOSE33_NAMES
from pose_ros.human.retarget_mapping import load_mapping
from pose_ros.human.retargeter import Retargeter
from pose_ros.human.safety import SafetyConfig, SafetyLayer, TeleopState

ROBOTS = REPO_ROOT / "config" / "robots"
NAMES = list(BLAZEPOSE33_NAMES)
IDX = {n: i for i, n in enumerate(NAMES)}


def _T_cam_base(yaw_rad: float = 0.0, distance_m: float = 2.5) -> np.ndarray:
    """Level camera looking at a robot that faces it: base x (forward) = -z_cam, z (up) = -y_cam."""
    R = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])    # columns: base x,y,z in cam
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    Ry = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])                      # about the camera's vertical
    T = np.eye(4)
    T[:3, :3] = Ry @ R
    T[:3, 3] = Ry @ np.array([0.0, 0.2, distance_m])
    return T


def _robot_made_skeleton(retargeter: Retargeter, q: np.ndarray, T_cam_base: np.ndarray) -> np.ndarray:
    """Keypoints placed on our humanoid's own segment points at q (what a perfect operator with the
    robot's proportions would look like)."""
    from pose_ros.human.kinematics import all_link_poses
    model = retargeter.mapping.model
    poses = all_link_poses(model, {**retargeter.mapping.home, **dict(zip(retargeter.joint_names, q))})

    def pt(link, off=(0.0, 0.0, 0.0)):
        return (T_cam_base @ poses[link] @ np.r_[off, 1.0])[:3]

    kp = np.full((33, 3), np.nan)
    y_cam = T_cam_base[:3, 1]
    hip_c = pt("torso_yaw_link")
    kp[IDX["left_hip"]], kp[IDX["right_hip"]] = hip_c + 0.1 * y_cam, hip_c - 0.1 * y_cam
    for side in ("left", "right"):
        kp[IDX[f"{side}_shoulder"]] = pt(f"{side}_shoulder_pitch_link")
        kp[IDX[f"{side}_elbow"]] = pt(f"{side}_forearm_link")
        kp[IDX[f"{side}_wrist"]] = pt(f"{side}_hand_link")
        kp[IDX[f"{side}_pinky"]] = pt(f"{side}_hand_link", (-0.04, 0.0, -0.08))
        kp[IDX[f"{side}_index"]] = pt(f"{side}_hand_link", (0.04, 0.0, -0.08))
    kp[IDX["left_ear"]] = pt("head_link", (0.0, 0.07, 0.11))
    kp[IDX["right_ear"]] = pt("head_link", (0.0, -0.07, 0.11))
    kp[IDX["nose"]] = pt("head_link", (0.10, 0.0, 0.09))
    conf = np.where(np.isfinite(kp[:, 0]), 1.0, 0.0)
    return kp, conf


@pytest.fixture(scope="module")
def ours():
    return load_mapping(ROBOTS / "pose_ros_humanoid.yaml")


def test_recovers_robot_made_poses_exactly(ours):
    r = Retargeter(ours)
    rng = np.random.default_rng(7)
    T = _T_cam_base()
    for trial in range(5):
        q_true = np.clip(r.q_home + rng.uniform(-0.6, 0.6, r.q_home.shape), r.lower + 0.1, r.upper - 0.1)
        kp, conf = _robot_made_skeleton(r, q_true, T)
        r.reset()
        for _ in range(5):    # a few frames of the same pose: warm start converges
            res = r.solve(kp, NAMES, conf)
        assert res.valid, res.reason
        assert np.degrees(res.residual_rad) < 0.5, (trial, np.degrees(res.segment_errors_rad))
        # the segment directions match, so the pose reproduces the skeleton
        dirs, observed, _ = r.target_directions(kp, NAMES, conf)
        assert observed.all()
        assert np.allclose(r.segment_directions(res.q), dirs, atol=2e-2)


def test_result_does_not_depend_on_camera_placement(ours):
    r1, r2 = Retargeter(ours), Retargeter(ours)
    q_true = r1.q_home + 0.3
    q_true = np.clip(q_true, r1.lower, r1.upper)
    kp1, conf = _robot_made_skeleton(r1, q_true, _T_cam_base(0.0, 2.5))
    kp2, _ = _robot_made_skeleton(r2, q_true, _T_cam_base(0.7, 3.4))     # camera elsewhere, same person
    assert not np.allclose(kp1[conf > 0], kp2[conf > 0])
    a, b = r1.solve(kp1, NAMES, conf), r2.solve(kp2, NAMES, conf)
    assert np.allclose(a.q, b.q, atol=1e-6)


def test_bad_keypoints_never_produce_nan(ours):
    r = Retargeter(ours)
    kp, conf = _robot_made_skeleton(r, r.q_home + 0.2, _T_cam_base())
    good = r.solve(kp, NAMES, conf)
    assert good.valid
    nan_hips = kp.copy()
    nan_hips[IDX["left_hip"]] = np.nan
    bad = r.solve(nan_hips, NAMES, conf)
    assert not bad.valid and np.array_equal(bad.q, good.q) and "body frame" in bad.reason
    # an unconfident left arm is dropped from the fit, the rest still solves
    conf_arm = conf.copy()
    conf_arm[IDX["left_elbow"]] = 0.05
    res = r.solve(kp, NAMES, conf_arm)
    names = [s.name for s in r.segments]
    assert res.valid and np.isnan(res.segment_errors_rad[names.index("left_upper_arm")])
    assert np.all(np.isfinite(res.q))
    with pytest.raises(ValueError, match="K = len"):
        r.solve(kp[:10], NAMES, conf)


def test_hands_up_gesture_detected(ours):
    r = Retargeter(ours)
    kp, conf = _robot_made_skeleton(r, r.q_home, _T_cam_base())
    assert not r.solve(kp, NAMES, conf).hands_up
    q_up = r.q_home.copy()
    for side in ("left", "right"):
        q_up[r.joint_names.index(f"{side}_shoulder_pitch_joint")] = -2.9   # arms straight up
        q_up[r.joint_names.index(f"{side}_elbow_joint")] = 0.05
    kp_up, conf = _robot_made_skeleton(r, q_up, _T_cam_base())
    assert r.solve(kp_up, NAMES, conf).hands_up


@pytest.mark.parametrize("mapping_name, ik_bound_deg", [("pose_ros_humanoid.yaml", 9.0), ("unitree_g1.yaml", 4.0)])
def test_cmu_clip_through_ik_and_safety(mapping_name, ik_bound_deg):
    clip = load_bvh(shared_data_path("mocap_cmu131", "resources", "scaled_131_01.bvh"))
    mapping = load_mapping(ROBOTS / mapping_name)
    frames = slice(0, 600)                                  # 5 s at 120 Hz
    kp, _ = bvh_to_camera_skeletons(clip, frames=frames)
    t = frame_times_s(clip)[frames]
    r = Retargeter(mapping)
    cfg = SafetyConfig.from_mapping(mapping)
    run = run_retarget(kp, NAMES, t, r, SafetyLayer(cfg, initial_q=cfg.home))
    lims = [mapping.model.limits_of(j) for j in run.joint_names]
    lower, upper = np.array([l.lower for l in lims]), np.array([l.upper for l in lims])
    engaged = run.state == int(TeleopState.ENGAGED)
    assert engaged[-100:].all(), "the engage ramp must finish"
    m = compute_retarget_metrics(run.t_s, run.q_cmd, run.joint_names, lower, upper,
                                 np.array([l.velocity for l in lims]), run.direction_error_rad, run.segment_names,
                                 run.solve_time_ms, ik_residual_rad=run.ik_residual_rad,
                                 amax=cfg.max_acceleration, mask=engaged)
    assert m.joint_limit_violations == 0
    assert m.velocity_limit_violations == 0
    assert m.acceleration_limit_violations == 0
    # also within the safety layer's own (tighter) limits
    assert np.all(run.q_cmd >= cfg.cmd_lower - 1e-9) and np.all(run.q_cmd <= cfg.cmd_upper + 1e-9)
    assert np.all(np.abs(np.diff(run.q_cmd, axis=0)) / np.diff(t)[:, None] <= cfg.max_velocity * (1 + 1e-6))
    assert m.mean_ik_residual_deg < ik_bound_deg
    assert m.mean_direction_error_deg < 25.0                 # commanded pose lags fast dance moves
    # the body and upper arms, which the robot can always follow, are tracked closely
    assert m.per_segment_error_deg["torso"] < 6.0 and m.per_segment_error_deg["left_upper_arm"] < 8.0


def test_full_body_g1_legs_follow_the_walk():
    clip = load_bvh(shared_data_path("mocap_cmu131", "resources", "scaled_131_02.bvh"))
    mapping = load_mapping(ROBOTS / "unitree_g1.yaml")
    frames = slice(0, 360)
    kp, _ = bvh_to_camera_skeletons(clip, frames=frames)
    r = Retargeter(mapping, full_body=True)
    assert len(r.joint_names) == 29
    cfg = SafetyConfig.from_mapping(mapping, full_body=True)
    run = run_retarget(kp, NAMES, frame_times_s(clip)[frames], r, SafetyLayer(cfg, initial_q=cfg.home))
    assert np.all(run.q_cmd >= cfg.cmd_lower - 1e-9) and np.all(run.q_cmd <= cfg.cmd_upper + 1e-9)
    names = run.segment_names
    ik_err = np.degrees(np.nanmean(run.direction_error_rad[run.state == int(TeleopState.ENGAGED)], axis=0))
    for seg in ("left_thigh", "left_shin", "right_thigh", "right_shin"):
        assert ik_err[names.index(seg)] < 10.0, (seg, ik_err[names.index(seg)])
    knee = run.q_cmd[:, run.joint_names.index("left_knee_joint")]
    assert np.ptp(knee) > 0.2          # the legs really move during the walk


def test_coco17_skeleton_drives_the_arms_without_hand_segments():
    from pose_ros.human.conventions import COCO17_FROM_BLAZEPOSE33, COCO17_NAMES
    clip = load_bvh(shared_data_path("mocap_cmu131", "resources", "scaled_131_01.bvh"))
    kp, _ = bvh_to_camera_skeletons(clip, frames=slice(0, 60))
    mapping = load_mapping(ROBOTS / "pose_ros_humanoid.yaml")
    r_blaze, r_coco = Retargeter(mapping), Retargeter(mapping)
    for f in range(60):
        a = r_blaze.solve(kp[f], NAMES)
        b = r_coco.solve(kp[f][COCO17_FROM_BLAZEPOSE33], list(COCO17_NAMES))
    names = [s.name for s in r_coco.segments]
    assert b.valid and np.isnan(b.segment_errors_rad[names.index("left_hand")])
    assert np.isfinite(b.segment_errors_rad[names.index("left_forearm")])
    # the joints the COCO keypoints determine agree with the full BlazePose solve
    for j in ("left_shoulder_pitch_joint", "left_elbow_joint", "torso_yaw_joint"):
        k = r_coco.joint_names.index(j)
        assert abs(a.q[k] - b.q[k]) < 0.1, j


def test_cli_writes_trajectories_plot_and_metrics(tmp_path, capsys):
    import json

    from pose_ros.cli import main
    bvh = shared_data_path("mocap_cmu131", "resources", "scaled_131_03.bvh")
    out = tmp_path / "out"
    code = main(["retarget", str(bvh), "--mapping", str(ROBOTS / "unitree_g1.yaml"), "--max-frames", "240",
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "joint-limit violations: 0" in text and "velocity-limit violations: 0" in text
    assert "mean limb-direction error" in text and "solve time per frame" in text
    assert "hand position error (scaled target vs commanded)" in text and "operator segment lengths" in text
    data = np.load(out / "joint_trajectory.npz")
    assert data["position_error_m"].shape == (240, 4)
    assert list(data["position_target_names"]) == ["left_elbow", "left_hand", "right_elbow", "right_hand"]
    assert 0.2 < dict(zip(data["limb_names"], data["limb_lengths_m"]))["left_upper_arm"] < 0.4
    assert data["q"].shape == (240, 17) and list(data["joint_names"])[0] == "waist_yaw_joint"
    assert np.allclose(np.diff(data["time_s"]), 1 / 120, rtol=1e-3)
    header = (out / "joint_trajectory.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["time_s", "state", "waist_yaw_joint"] and len(header) == 19
    assert (out / "joint_limits.png").stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["joint_limit_violations"] == 0 and metrics["num_frames"] == 240
    assert 0 < metrics["mean_hand_position_error_cm"] < 20
    assert main(["retarget", str(tmp_path / "missing.bvh"), "--out", str(out)]) == 2
