"""Retargeting metrics: limit violations of a joint trajectory, direction and position error, solve time.

Violations are checked against the robot's own URDF limits (not the safety layer's tighter
ones), from the trajectory actually commanded, so "0" means the robot was never asked for
something it cannot do. Velocities and accelerations are finite differences of the commanded
positions. Position errors are |achieved - scaled target| of the position targets (hands, elbows,
feet relative to their anchors), reported in centimetres; "hand" error averages the targets whose
name contains "hand" or "wrist" (the end effectors a teleoperator watches).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class RetargetMetrics:
    num_frames: int
    duration_s: float
    joint_limit_violations: int            # (sample, joint) pairs outside [lower, upper]
    velocity_limit_violations: int         # (step, joint) pairs with |dq/dt| > URDF velocity
    acceleration_limit_violations: int     # (step, joint) pairs with |d2q/dt2| > acc limit (if given)
    mean_direction_error_deg: float        # commanded pose vs human segment directions
    p95_direction_error_deg: float
    mean_ik_residual_deg: float            # the IK's own residual (before the safety layer)
    solve_time_ms_mean: float
    solve_time_ms_median: float
    solve_time_ms_p95: float
    solve_time_ms_max: float
    max_abs_velocity_rad_s: float
    per_segment_error_deg: dict[str, float] = field(default_factory=dict)
    worst_joints: list[str] = field(default_factory=list)   # joints with violations
    mean_position_error_cm: float = float("nan")           # all position targets, commanded pose
    mean_hand_position_error_cm: float = float("nan")      # hand/wrist targets only
    p95_hand_position_error_cm: float = float("nan")
    per_target_position_error_cm: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def limit_violations(q: np.ndarray, lower: np.ndarray, upper: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Boolean (T,n): sample outside its limits."""
    return (q < lower[None] - tol) | (q > upper[None] + tol)


def velocity_violations(t_s: np.ndarray, q: np.ndarray, vmax: np.ndarray, rel_tol: float = 1e-6) -> np.ndarray:
    """Boolean (T-1,n): finite-difference speed above the limit."""
    dt = np.diff(t_s)
    if np.any(dt <= 0):
        raise ValueError("trajectory times must be strictly increasing")
    v = np.diff(q, axis=0) / dt[:, None]
    return np.abs(v) > vmax[None] * (1 + rel_tol) + 1e-12


def compute_retarget_metrics(t_s: np.ndarray, q: np.ndarray, joint_names: list[str], lower: np.ndarray,
                             upper: np.ndarray, vmax: np.ndarray, direction_errors_rad: np.ndarray,
                             segment_names: list[str], solve_time_ms: np.ndarray,
                             ik_residual_rad: np.ndarray | None = None, amax: np.ndarray | None = None,
                             mask: np.ndarray | None = None, position_errors_m: np.ndarray | None = None,
                             target_names: list[str] | None = None) -> RetargetMetrics:
    """`direction_errors_rad` (T,S) and `position_errors_m` (T,P) NaN where unobserved; `mask` (T,)
    selects frames for the error statistics (e.g. engaged frames); limits are checked on every frame."""
    t_s, q = np.asarray(t_s, float), np.asarray(q, float)
    if q.ndim != 2 or q.shape != (t_s.shape[0], len(joint_names)):
        raise ValueError(f"q must be (T, {len(joint_names)}) matching t_s ({t_s.shape[0]}), got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("trajectory contains NaN/inf joint positions")
    pos_bad = limit_violations(q, lower, upper)
    vel_bad = velocity_violations(t_s, q, vmax) if len(t_s) > 1 else np.zeros((0, q.shape[1]), bool)
    acc_bad = np.zeros((0, q.shape[1]), bool)
    if amax is not None and len(t_s) > 2:
        v = np.diff(q, axis=0) / np.diff(t_s)[:, None]
        acc = np.diff(v, axis=0) / np.diff(t_s)[1:, None]
        acc_bad = np.abs(acc) > amax[None] * (1 + 1e-6) + 1e-9
    mask = np.ones(len(t_s), bool) if mask is None else np.asarray(mask, bool)
    err = np.asarray(direction_errors_rad, float)[mask]
    flat = err[np.isfinite(err)]
    per_seg = {name: float(np.degrees(np.nanmean(err[:, k]))) if np.any(np.isfinite(err[:, k])) else float("nan")
               for k, name in enumerate(segment_names)}
    st = np.asarray(solve_time_ms, float)
    st = st[np.isfinite(st)]
    ik = np.asarray(ik_residual_rad, float)[mask] if ik_residual_rad is not None else np.array([np.nan])
    speeds = np.abs(np.diff(q, axis=0) / np.diff(t_s)[:, None]) if len(t_s) > 1 else np.zeros((1, 1))
    bad_cols = pos_bad.any(0) | (vel_bad.any(0) if len(vel_bad) else False)
    pos = position_stats_cm(position_errors_m, target_names, mask)
    return RetargetMetrics(
        **pos,
        num_frames=int(len(t_s)), duration_s=float(t_s[-1] - t_s[0]) if len(t_s) else 0.0,
        joint_limit_violations=int(pos_bad.sum()), velocity_limit_violations=int(vel_bad.sum()),
        acceleration_limit_violations=int(acc_bad.sum()),
        mean_direction_error_deg=float(np.degrees(flat.mean())) if flat.size else float("nan"),
        p95_direction_error_deg=float(np.degrees(np.percentile(flat, 95))) if flat.size else float("nan"),
        mean_ik_residual_deg=float(np.degrees(np.nanmean(ik))) if np.any(np.isfinite(ik)) else float("nan"),
        solve_time_ms_mean=float(st.mean()) if st.size else float("nan"),
        solve_time_ms_median=float(np.median(st)) if st.size else float("nan"),
        solve_time_ms_p95=float(np.percentile(st, 95)) if st.size else float("nan"),
        solve_time_ms_max=float(st.max()) if st.size else float("nan"),
        max_abs_velocity_rad_s=float(speeds.max()) if speeds.size else 0.0,
        per_segment_error_deg=per_seg,
        worst_joints=[joint_names[i] for i in np.nonzero(bad_cols)[0]] if np.ndim(bad_cols) else [])


def is_hand_target(name: str) -> bool:
    return "hand" in name or "wrist" in name


def position_stats_cm(position_errors_m: np.ndarray | None, target_names: list[str] | None,
                      mask: np.ndarray | None = None) -> dict:
    """Mean over all targets, mean/p95 over hand targets, per-target mean, in cm (NaN if none)."""
    nan = float("nan")
    out = dict(mean_position_error_cm=nan, mean_hand_position_error_cm=nan, p95_hand_position_error_cm=nan,
               per_target_position_error_cm={})
    if position_errors_m is None:
        return out
    err = np.asarray(position_errors_m, float).reshape(len(position_errors_m), -1)
    names = list(target_names or [f"target_{k}" for k in range(err.shape[1])])
    if len(names) != err.shape[1]:
        raise ValueError(f"target_names has {len(names)} names for {err.shape[1]} position-error columns")
    if mask is not None:
        err = err[np.asarray(mask, bool)]
    cm = 100.0 * err
    finite = cm[np.isfinite(cm)]
    hands = cm[:, [is_hand_target(n) for n in names]]
    hands = hands[np.isfinite(hands)]
    out["mean_position_error_cm"] = float(finite.mean()) if finite.size else nan
    out["mean_hand_position_error_cm"] = float(hands.mean()) if hands.size else nan
    out["p95_hand_position_error_cm"] = float(np.percentile(hands, 95)) if hands.size else nan
    out["per_target_position_error_cm"] = {
        n: float(np.nanmean(cm[:, k])) if np.any(np.isfinite(cm[:, k])) else nan for k, n in enumerate(names)}
    return out


def format_metrics(m: RetargetMetrics) -> str:
    lines = [
        f"frames: {m.num_frames} ({m.duration_s:.2f} s)",
        f"joint-limit violations: {m.joint_limit_violations}",
        f"velocity-limit violations: {m.velocity_limit_violations}",
        f"acceleration-limit violations: {m.acceleration_limit_violations}",
        f"mean limb-direction error: {m.mean_direction_error_deg:.2f} deg (p95 {m.p95_direction_error_deg:.2f}, "
        f"IK residual {m.mean_ik_residual_deg:.2f})",
        f"solve time per frame: mean {m.solve_time_ms_mean:.3f} ms, median {m.solve_time_ms_median:.3f} ms, "
        f"p95 {m.solve_time_ms_p95:.3f} ms, "
        f"max {m.solve_time_ms_max:.3f} ms",
        f"max joint speed: {m.max_abs_velocity_rad_s:.2f} rad/s",
        "per segment (deg): " + ", ".join(f"{k} {v:.1f}" for k, v in m.per_segment_error_deg.items()),
    ]
    if m.per_target_position_error_cm:
        lines.insert(5, f"hand position error (scaled target vs commanded): mean {m.mean_hand_position_error_cm:.2f} cm "
                        f"(p95 {m.p95_hand_position_error_cm:.2f}); all position targets {m.mean_position_error_cm:.2f} cm")
        lines.append("per position target (cm): " + ", ".join(
            f"{k} {v:.1f}" for k, v in m.per_target_position_error_cm.items()))
    if m.worst_joints:
        lines.append("joints with violations: " + ", ".join(m.worst_joints))
    return "\n".join(lines)
