"""`pose-ros retarget`: retarget a BVH clip onto a URDF through the IK and the safety layer.

Offline replay of exactly what the retarget node does per frame (the same Retargeter and
SafetyLayer objects), so the printed numbers are the ones the robot would see. Besides limits and
limb-direction error it reports the hand-position error (the commanded pose against the operator's
hands scaled segment by segment to the robot) and the operator's measured segment lengths;
--directions-only gives the direction-matching baseline on the same targets.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class OfflineRun:
    t_s: np.ndarray                 # (T,)
    joint_names: list[str]
    q_cmd: np.ndarray               # (T,n) commanded after the safety layer
    qd_cmd: np.ndarray
    q_ik: np.ndarray                # (T,n) raw IK solution
    state: np.ndarray               # (T,) TeleopState values
    ik_residual_rad: np.ndarray     # (T,)
    direction_error_rad: np.ndarray  # (T,S) of the commanded pose
    segment_names: list[str]
    solve_time_ms: np.ndarray
    counters: dict
    position_error_m: np.ndarray | None = None     # (T,P) |achieved - scaled target| of the commanded pose
    target_names: list[str] = field(default_factory=list)
    ik_position_error_m: np.ndarray | None = None  # (T,P) of the raw IK solution
    limb_lengths_m: dict[str, float] = field(default_factory=dict)   # operator estimate at the clip's end
    targets_clamped: int = 0                       # frames x targets pulled onto the robot's reach


def run_retarget(keypoints_cam_m: np.ndarray, names, t_s: np.ndarray, retargeter, safety) -> OfflineRun:
    """Engage at t=0 (ramp from the home pose as the measured state), then feed every frame to
    the retargeter and the safety layer at the clip's own rate."""
    from tqdm import tqdm

    T, n = len(t_s), len(retargeter.joint_names)
    q_cmd, qd_cmd, q_ik = np.zeros((T, n)), np.zeros((T, n)), np.zeros((T, n))
    state = np.zeros(T, dtype=np.int64)
    resid, st = np.full(T, np.nan), np.full(T, np.nan)
    derr = np.full((T, len(retargeter.segments)), np.nan)
    P = len(retargeter.position_targets)
    perr, perr_ik = np.full((T, P), np.nan), np.full((T, P), np.nan)
    clamped = 0
    safety.set_measured(safety.config.home, float(t_s[0]))
    for i in tqdm(range(T), desc="retarget", unit="frame", disable=not sys.stderr.isatty()):
        now = float(t_s[i])
        res = retargeter.solve(keypoints_cam_m[i], names)
        st[i], q_ik[i] = res.solve_time_ms, res.q
        if res.valid:
            resid[i] = res.residual_rad
            perr_ik[i] = res.position_errors_m
            clamped += res.targets_clamped
            safety.submit_target(res.q, stamp_s=now, now_s=now, hands_up=res.hands_up)
        else:
            safety.submit_tracking_lost(now)
        if i == 0:
            safety.engage(now)
        out = safety.step(now)
        q_cmd[i], qd_cmd[i], state[i] = out.q, out.qd, int(out.state)
        dirs, observed, _ = retargeter.target_directions(keypoints_cam_m[i], names)
        if observed.any():
            u = retargeter.segment_directions(out.q)
            derr[i, observed] = np.arccos(np.clip(np.einsum("si,si->s", u[observed], dirs[observed]), -1, 1))
        if P:
            x, seen = retargeter.target_positions(keypoints_cam_m[i], names)
            perr[i, seen] = np.linalg.norm(retargeter.achieved_positions(out.q)[seen] - x[seen], axis=1)
    return OfflineRun(t_s=np.asarray(t_s, float), joint_names=list(retargeter.joint_names), q_cmd=q_cmd,
                      qd_cmd=qd_cmd, q_ik=q_ik, state=state, ik_residual_rad=resid, direction_error_rad=derr,
                      segment_names=[s.name for s in retargeter.segments], solve_time_ms=st,
                      counters=safety.counters.as_dict(), position_error_m=perr,
                      target_names=retargeter.position_target_names, ik_position_error_m=perr_ik,
                      limb_lengths_m=retargeter.limb_lengths_m, targets_clamped=clamped)


def _write_outputs(out_dir: Path, run: OfflineRun, lower, upper, plot: bool) -> list[Path]:
    from pose_ros.human.safety import TeleopState

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    csv_path = out_dir / "joint_trajectory.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "state"] + run.joint_names)
        for i in range(len(run.t_s)):
            w.writerow([f"{run.t_s[i]:.6f}", TeleopState(run.state[i]).name] + [f"{v:.6f}" for v in run.q_cmd[i]])
    written.append(csv_path)
    npz_path = out_dir / "joint_trajectory.npz"
    np.savez(npz_path, time_s=run.t_s, joint_names=np.array(run.joint_names), q=run.q_cmd, qd=run.qd_cmd,
             q_ik=run.q_ik, state=run.state, ik_residual_rad=run.ik_residual_rad,
             direction_error_rad=run.direction_error_rad, segment_names=np.array(run.segment_names),
             solve_time_ms=run.solve_time_ms, lower=lower, upper=upper,
             position_error_m=run.position_error_m, ik_position_error_m=run.ik_position_error_m,
             position_target_names=np.array(run.target_names, dtype=str),
             limb_names=np.array(list(run.limb_lengths_m), dtype=str),
             limb_lengths_m=np.array(list(run.limb_lengths_m.values()), dtype=float))
    written.append(npz_path)
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        n = len(run.joint_names)
        cols = 4
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.2 * rows), sharex=True, squeeze=False)
        for k, ax in enumerate(axes.flat):
            if k >= n:
                ax.axis("off")
                continue
            ax.plot(run.t_s, run.q_ik[:, k], color="0.7", lw=0.8, label="IK")
            ax.plot(run.t_s, run.q_cmd[:, k], color="C0", lw=1.0, label="command")
            for lim in (lower[k], upper[k]):
                if np.isfinite(lim):
                    ax.axhline(lim, color="C3", lw=0.8, ls="--")
            ax.set_title(run.joint_names[k], fontsize=8)
            ax.tick_params(labelsize=7)
        axes.flat[0].legend(fontsize=6, loc="upper right")
        fig.supxlabel("time (s)")
        fig.supylabel("joint position (rad); dashed = URDF limits")
        fig.tight_layout()
        png = out_dir / "joint_limits.png"
        fig.savefig(png, dpi=90)
        plt.close(fig)
        written.append(png)
    return written


def _directions_only(mapping):
    """The same mapping with every position target at weight 0: targets are still measured (so the
    hand-position error is comparable) but the IK matches directions only, as before issue #5."""
    import dataclasses
    return dataclasses.replace(mapping, position_targets=[
        dataclasses.replace(t, weight=0.0) for t in mapping.position_targets])


def _cmd(args: argparse.Namespace) -> int:
    from pose_ros.eval.retarget_metrics import compute_retarget_metrics, format_metrics
    from pose_ros.human.bvh import bvh_to_camera_skeletons, frame_times_s, load_bvh
    from pose_ros.human.conventions import BLAZEPOSE33_NAMES
    from pose_ros.human.retarget_mapping import default_mapping_path, load_mapping
    from pose_ros.human.retargeter import Retargeter
    from pose_ros.human.safety import SafetyConfig, SafetyLayer, TeleopState

    try:
        mapping = load_mapping(args.mapping or default_mapping_path(), urdf_path=args.robot)
        clip = load_bvh(args.bvh, scale_to_m=args.bvh_scale if args.bvh_scale else "auto")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.directions_only:
        mapping = _directions_only(mapping)
    frames = slice(0, args.max_frames) if args.max_frames else None
    kp_cam, _ = bvh_to_camera_skeletons(clip, distance_m=args.distance, frames=frames)
    t_s = frame_times_s(clip)[: kp_cam.shape[0]]
    retargeter = Retargeter(mapping, full_body=args.full_body)
    config = SafetyConfig.from_mapping(mapping, full_body=args.full_body)
    safety = SafetyLayer(config, initial_q=config.home)
    run = run_retarget(kp_cam, BLAZEPOSE33_NAMES, t_s, retargeter, safety)
    lims = [mapping.model.limits_of(j) for j in run.joint_names]
    lower = np.array([lim.lower for lim in lims])
    upper = np.array([lim.upper for lim in lims])
    vmax = np.array([lim.velocity for lim in lims])
    engaged = run.state == int(TeleopState.ENGAGED)
    metrics = compute_retarget_metrics(run.t_s, run.q_cmd, run.joint_names, lower, upper, vmax,
                                       run.direction_error_rad, run.segment_names, run.solve_time_ms,
                                       ik_residual_rad=run.ik_residual_rad, amax=config.max_acceleration,
                                       mask=engaged if engaged.any() else None,
                                       position_errors_m=run.position_error_m, target_names=run.target_names)
    out_dir = Path(args.out) if args.out else Path("out") / "retarget" / f"{Path(args.bvh).stem}_{mapping.model.name}"
    written = _write_outputs(out_dir, run, lower, upper, plot=not args.no_plot)
    (out_dir / "metrics.json").write_text(metrics.to_json())
    first_engaged = float(run.t_s[np.argmax(engaged)]) if engaged.any() else float("nan")
    print(f"robot: {mapping.model.name} ({mapping.urdf_path}), {len(run.joint_names)} teleoperated joints"
          f"{' (full body)' if args.full_body else ''}")
    print(f"clip: {args.bvh}, {clip.num_frames} frames at {1.0 / clip.frame_time_s:.1f} Hz; engaged after "
          f"{first_engaged:.2f} s ramp; error stats over {int(engaged.sum())} engaged frames")
    print(format_metrics(metrics))
    if run.limb_lengths_m:
        scales = retargeter.segment_scales()
        print("operator segment lengths (m, x robot/operator scale): " + ", ".join(
            f"{k} {v:.3f} (x{scales[k]:.2f})" for k, v in run.limb_lengths_m.items()))
        print(f"position targets clamped to the robot's reach: {run.targets_clamped} (frames x targets)")
    print("safety interventions: " + ", ".join(f"{k} {v}" for k, v in run.counters.items()))
    print("wrote: " + ", ".join(str(p) for p in written + [out_dir / 'metrics.json']))
    return 0 if metrics.joint_limit_violations == 0 and metrics.velocity_limit_violations == 0 else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("retarget", help="retarget a BVH mocap clip onto a humanoid URDF (offline)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bvh", help="BVH file (CMU joint names), metres or CMU units")
    p.add_argument("--robot", default=None, help="URDF path (default: the mapping's robot.urdf)")
    p.add_argument("--mapping", default=None, help="mapping YAML (default: config/robots/pose_ros_humanoid.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: out/retarget/<clip>_<robot>)")
    p.add_argument("--full-body", action="store_true", help="also retarget the legs (full_body_groups)")
    p.add_argument("--bvh-scale", type=float, default=None, help="BVH units -> metres (default: auto)")
    p.add_argument("--distance", type=float, default=2.5, help="virtual camera distance to the subject, m")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--directions-only", action="store_true",
                   help="IK on limb directions only (position targets weighted 0, still measured): the baseline")
    p.set_defaults(func=_cmd)
