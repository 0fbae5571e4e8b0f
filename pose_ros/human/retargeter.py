"""Skeleton -> humanoid joint positions by IK on limb directions and scaled end-effector positions.

Directions: a segment direction (upper arm, forearm, torso, head) is independent of the
operator's size and of the robot's proportions, so it transfers to any robot without scaling.
Directions alone, though, spread the error over every segment when the robot cannot copy the
pose (joint limits, missing DoF), and the hand ends up wherever the angles leave it.

Positions (GMR-style per-segment scaling): a position target places a robot point (hand, elbow,
foot) relative to an anchor (shoulder, hip) at the sum of the operator's segment vectors along
the chain, each scaled by robot segment length / operator segment length. The operator's lengths
are a running median (limb_lengths.LimbLengthEstimator) reset when the operator changes or is
lost; the robot's come from URDF FK at home. A target beyond the chain's reach is pulled back
onto the workspace boundary (the limb part of the chain, shrunk to the limb's reach). The IK is a few projected Gauss-Newton steps:

    min_q  sum_s w_s |u_s(q) - d_s|^2 + sum_t w_t |p_t(q) - x_t|^2
           + w_prev |q - q_prev|^2 + w_home |q - q_home|^2
    s.t.   lower + margin <= q <= upper - margin

u_s is the robot segment's unit direction in the base frame (analytic Jacobian
(I - u u^T)/L * (J_to - J_from)), d_s the human's in the body frame; p_t = tip - anchor of the
robot (Jacobian J_tip - J_anchor), x_t the scaled human chain. Warm-started from the previous
solution, so 4 iterations suffice at camera rate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pose_ros.human.kinematics import KinematicTree
from pose_ros.human.limb_lengths import LimbLengthEstimator
from pose_ros.human.retarget_mapping import RetargetMapping


@dataclass
class RetargetResult:
    """One solve. `q` follows `joint_names` (the command order)."""
    q: np.ndarray
    joint_names: list[str]
    valid: bool                     # False: body frame or too few segments observed (tracking lost)
    residual_rad: float             # mean direction error over observed segments (NaN if invalid)
    segment_errors_rad: np.ndarray  # per active segment, NaN when unobserved
    solve_time_ms: float
    hands_up: bool = False
    reason: str = ""
    T_cam_body: np.ndarray | None = None   # human body frame in the camera (origin: mid-hips), for overlays
    # Per active position target (Retargeter.position_target_names): |achieved - scaled target|, NaN unobserved.
    position_errors_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position_residual_m: float = float("nan")   # mean of the observed position errors
    targets_clamped: int = 0                    # targets pulled back onto the robot's reach this frame
    limb_lengths_m: dict[str, float] = field(default_factory=dict)   # operator estimate after this frame


@dataclass
class _Observation:
    """One skeleton in the body frame: every mapping segment's vector (not only active ones, so
    all limb lengths are measured)."""
    R_cam_body: np.ndarray | None
    origin_cam_m: np.ndarray | None
    vec_body_m: np.ndarray          # (S_all,3)
    observed: np.ndarray            # (S_all,) keypoints >= min_confidence and non-degenerate
    confidence: np.ndarray          # (S_all,) min confidence of the segment's keypoints
    hands_up: bool


class Retargeter:
    """Holds the compiled kinematics, the warm start and the operator's limb lengths; call
    `solve` once per skeleton."""

    def __init__(self, mapping: RetargetMapping, full_body: bool = False):
        self.mapping = mapping
        self.params = mapping.solver
        self.joint_names = mapping.command_joints(full_body)
        self.segments = mapping.active_segments(full_body)
        if not self.segments:
            raise ValueError(f"{mapping.path}: no segments in the teleoperated groups {mapping.groups(full_body)}; "
                             "add segments or groups")
        self.all_segments = list(mapping.segments)
        self.position_targets = mapping.active_position_targets(full_body)
        seg_pos = {s.name: k for k, s in enumerate(self.all_segments)}
        self._active_in_all = np.array([seg_pos[s.name] for s in self.segments])
        model = mapping.model
        points = []
        index = {}

        def point(p) -> int:
            if p not in index:
                index[p] = len(points)
                points.append(p)
            return index[p]

        self._seg_a = np.array([point(s.robot_from) for s in self.segments])
        self._seg_b = np.array([point(s.robot_to) for s in self.segments])
        self._weights = np.array([s.weight for s in self.segments])
        self._tgt_anchor = np.array([point(t.anchor) for t in self.position_targets], dtype=np.int64)
        self._tgt_tip = np.array([point(t.tip) for t in self.position_targets], dtype=np.int64)
        self._tgt_weights = np.array([t.weight for t in self.position_targets], dtype=np.float64)
        # chain[t, k] = 1 when segment k (of all segments) is on target t's chain.
        self._chain = np.zeros((len(self.position_targets), len(self.all_segments)))
        for t, spec in enumerate(self.position_targets):
            self._chain[t, [seg_pos[c] for c in spec.chain]] = 1.0
        robot_len = mapping.robot_segment_lengths_m()
        self._robot_len_m = np.array([robot_len[s.name] for s in self.all_segments])
        self._fixed_scale = np.array([np.nan if s.scale is None else s.scale for s in self.all_segments])
        # The limb part of a chain (trailing segments in the target's own group: the arm of a hand
        # target anchored at the pelvis) is what the target's joints can stretch: clamp that part.
        self._limb = np.zeros_like(self._chain)
        for t, spec in enumerate(self.position_targets):
            tail = []
            for c in reversed(spec.chain):
                if mapping.segment(c).group != spec.group:
                    break
                tail.append(seg_pos[c])
            self._limb[t, tail or [seg_pos[c] for c in spec.chain]] = 1.0
        self._reach_m = self.params.reach_fraction * (self._limb @ self._robot_len_m)
        fixed = {j: v for j, v in mapping.home.items() if j not in self.joint_names}
        self.tree = KinematicTree(model, mapping.base_link, self.joint_names, points, fixed_q=fixed)
        lo, hi = [], []
        for j in self.joint_names:
            lim = model.joints[j].limits
            lo.append(lim.lower if lim else -np.inf)
            hi.append(lim.upper if lim else np.inf)
        margin = self.params.limit_margin_rad
        self.lower = np.array(lo) + margin
        self.upper = np.array(hi) - margin
        bad = self.lower > self.upper
        self.lower[bad] = self.upper[bad] = 0.5 * (np.array(lo) + np.array(hi))[bad]
        self.q_home = np.clip(mapping.home_vector(self.joint_names), self.lower, self.upper)
        self.limbs = LimbLengthEstimator([s.name for s in self.all_segments], window=self.params.limb_window,
                                         min_samples=self.params.limb_min_samples,
                                         outlier_ratio=self.params.limb_outlier_ratio)
        self._names_cache: tuple[tuple[str, ...], dict] | None = None
        self._operator_id: int | None = None
        self._invalid_run = 0
        self.reset()

    # -- state ---------------------------------------------------------------------------
    def reset(self, q: np.ndarray | None = None) -> None:
        """Forget the warm start (next solve runs init_iterations from q or home). The limb
        lengths are kept: same operator (see `reset_operator`)."""
        self.q_prev = self.q_home.copy() if q is None else np.clip(np.asarray(q, float), self.lower, self.upper)
        self._fresh = True

    def reset_operator(self) -> None:
        """A different person (or nobody): forget the limb lengths and the warm start."""
        self.limbs.reset()
        self._invalid_run = 0
        self.reset()

    def notify_tracking_lost(self) -> None:
        """Count a frame without an operator; `limb_reset_after_invalid` in a row re-measures."""
        self._invalid_run += 1
        if self._invalid_run >= self.params.limb_reset_after_invalid and self.limbs.sample_counts.any():
            self.limbs.reset()

    @property
    def limb_lengths_m(self) -> dict[str, float]:
        """Operator segment lengths (median estimate), metres, by mapping segment name."""
        return self.limbs.as_dict()

    @property
    def robot_segment_lengths_m(self) -> dict[str, float]:
        return {s.name: float(v) for s, v in zip(self.all_segments, self._robot_len_m)}

    @property
    def position_target_names(self) -> list[str]:
        return [t.name for t in self.position_targets]

    def segment_scales(self) -> dict[str, float]:
        """Robot/operator length ratio per segment now (fixed overrides included), NaN unmeasured."""
        return {s.name: float(v) for s, v in zip(self.all_segments, self._scales())}

    def _scales(self) -> np.ndarray:
        measured = self._robot_len_m / np.maximum(self.limbs.lengths_m, 1e-3)   # NaN stays NaN
        return np.where(np.isfinite(self._fixed_scale), self._fixed_scale, measured)

    # -- human side ------------------------------------------------------------------------
    def _lookup(self, names: Sequence[str]) -> dict:
        key = tuple(names)
        if self._names_cache is None or self._names_cache[0] != key:
            idx = {n: i for i, n in enumerate(key)}
            self._names_cache = (key, idx)
        return self._names_cache[1]

    def _kp(self, name: str, idx: dict, pts: np.ndarray, conf: np.ndarray,
            cache: dict) -> tuple[np.ndarray | None, float]:
        """(position or None below min_confidence / missing, confidence; min over a virtual's parts)."""
        hit = cache.get(name)
        if hit is not None:
            return hit
        parts = self.mapping.virtual_keypoints.get(name)
        if parts is None:
            i = idx.get(name)
            if i is None or not np.all(np.isfinite(pts[i])):
                out = (None, 0.0)
            else:
                c = float(conf[i])
                out = (pts[i] if c >= self.params.min_confidence else None, c)
        else:
            vals = [self._kp(p, idx, pts, conf, cache) for p in parts]
            c = min(v[1] for v in vals)
            out = (None, c) if any(v[0] is None for v in vals) else (np.mean([v[0] for v in vals], axis=0), c)
        cache[name] = out
        return out

    def body_frame(self, keypoints_cam_m: np.ndarray, names: Sequence[str],
                   confidence: np.ndarray | None = None) -> np.ndarray | None:
        """T_cam_body 4x4 (rotation columns: forward, left, up in the camera frame; origin midway
        between the body frame's `left` keypoints, i.e. mid-hips), or None if unobservable."""
        pts, conf = self._inputs(keypoints_cam_m, names, confidence)
        R, origin = self._body_frame(self._lookup(names), pts, conf, {})
        if R is None:
            return None
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, origin
        return T

    def _body_frame(self, idx, pts, conf, cache) -> tuple[np.ndarray | None, np.ndarray | None]:
        bf = self.mapping.body_frame
        a, b = self._kp(bf.left_from, idx, pts, conf, cache)[0], self._kp(bf.left_to, idx, pts, conf, cache)[0]
        if a is None or b is None:
            return None, None
        if bf.up == "camera":
            z = np.asarray(bf.up_vector_cam, dtype=np.float64)
        else:
            t0 = self._kp(bf.torso_from, idx, pts, conf, cache)[0]
            t1 = self._kp(bf.torso_to, idx, pts, conf, cache)[0]
            if t0 is None or t1 is None:
                return None, None
            z = t1 - t0
            nz = np.linalg.norm(z)
            if nz < 1e-6:
                return None, None
            z = z / nz
        y = b - a
        y = y - z * (y @ z)
        ny = np.linalg.norm(y)
        if ny < 1e-3:   # hips collapsed or aligned with up: no heading
            return None, None
        y /= ny
        x = np.cross(y, z)
        return np.column_stack([x, y, z]), 0.5 * (a + b)

    @staticmethod
    def _inputs(keypoints_cam_m, names, confidence):
        pts = np.asarray(keypoints_cam_m, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] != len(names):
            raise ValueError(f"keypoints must be (K,3) with K = len(names) = {len(names)}, got {pts.shape}")
        conf = np.ones(len(names)) if confidence is None else np.asarray(confidence, dtype=np.float64)
        if conf.shape != (len(names),):
            raise ValueError(f"confidence must be ({len(names)},), got {conf.shape}")
        conf = np.where(np.isfinite(conf), conf, 0.0)
        return pts, conf

    def _observe(self, keypoints_cam_m, names, confidence) -> _Observation:
        pts, conf = self._inputs(keypoints_cam_m, names, confidence)
        idx = self._lookup(names)
        cache: dict = {}
        S = len(self.all_segments)
        vec_cam = np.zeros((S, 3))
        observed = np.zeros(S, dtype=bool)
        seg_conf = np.zeros(S)
        R, origin = self._body_frame(idx, pts, conf, cache)
        if R is None:
            return _Observation(None, None, vec_cam, observed, seg_conf, False)
        for k, s in enumerate(self.all_segments):
            a, ca = self._kp(s.human_from, idx, pts, conf, cache)
            b, cb = self._kp(s.human_to, idx, pts, conf, cache)
            if a is None or b is None:
                continue
            vec_cam[k] = b - a
            seg_conf[k] = min(ca, cb)
        observed = np.linalg.norm(vec_cam, axis=1) >= 1e-4
        return _Observation(R, origin, vec_cam @ R, observed, seg_conf, self._hands_up(idx, pts, conf, R, cache))

    def target_directions(self, keypoints_cam_m: np.ndarray, names: Sequence[str],
                          confidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(directions (S,3) unit in the body frame, observed mask (S,), hands_up)."""
        obs = self._observe(keypoints_cam_m, names, confidence)
        dirs, observed = self._directions(obs)
        return dirs, observed, obs.hands_up

    def _directions(self, obs: _Observation) -> tuple[np.ndarray, np.ndarray]:
        v = obs.vec_body_m[self._active_in_all]
        observed = obs.observed[self._active_in_all]
        n = np.linalg.norm(v, axis=1)
        dirs = np.where(observed[:, None], v / np.maximum(n, 1e-12)[:, None], 0.0)
        return dirs, observed

    def target_positions(self, keypoints_cam_m: np.ndarray, names: Sequence[str],
                         confidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(targets (P,3) tip - anchor in the base/body frame, metres, observed (P,)) with the
        current limb lengths (does not update them)."""
        targets, observed, _ = self._positions(self._observe(keypoints_cam_m, names, confidence))
        return targets, observed

    def _positions(self, obs: _Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scaled chain sums, observed, clamped: (P,3), (P,), (P,)."""
        P = len(self.position_targets)
        if P == 0:
            return np.zeros((0, 3)), np.zeros(0, bool), np.zeros(0, bool)
        scale = self._scales()
        usable = obs.observed & np.isfinite(scale)
        scaled = np.where(usable[:, None], obs.vec_body_m * np.where(usable, scale, 0.0)[:, None], 0.0)
        limb = self._limb @ scaled
        targets = self._chain @ scaled - limb
        observed = (self._chain @ (~usable).astype(np.float64)) == 0
        n = np.linalg.norm(limb, axis=1)
        clamped = observed & (n > self._reach_m * (1.0 + 1e-9))
        limb[clamped] *= (self._reach_m[clamped] / n[clamped])[:, None]
        return targets + limb, observed, clamped

    def _hands_up(self, idx, pts, conf, R_cam_body, cache) -> bool:
        nose = self._kp("nose", idx, pts, conf, cache)[0]
        lw, rw = self._kp("left_wrist", idx, pts, conf, cache)[0], self._kp("right_wrist", idx, pts, conf, cache)[0]
        if nose is None or lw is None or rw is None:
            return False
        up = R_cam_body[:, 2]
        h = self.params.hands_up_height_m
        return bool((lw - nose) @ up > h and (rw - nose) @ up > h)

    # -- robot side ------------------------------------------------------------------------
    def segment_directions(self, q: np.ndarray) -> np.ndarray:
        """Robot segment unit directions (S,3) in the base frame at q."""
        pts = self.tree.point_positions(q)
        d = pts[self._seg_b] - pts[self._seg_a]
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def achieved_positions(self, q: np.ndarray) -> np.ndarray:
        """Robot tip - anchor (P,3) in the base frame at q, metres (what the targets are compared to)."""
        pts = self.tree.point_positions(q)
        return pts[self._tgt_tip] - pts[self._tgt_anchor]

    # -- solve -----------------------------------------------------------------------------
    def solve(self, keypoints_cam_m: np.ndarray, names: Sequence[str],
              confidence: np.ndarray | None = None, operator_id: int | None = None) -> RetargetResult:
        """Retarget one skeleton (camera frame, metres). Invalid input -> valid=False and the
        previous solution (never NaN). A new `operator_id` (e.g. the skeleton's track_id)
        re-measures the limb lengths and restarts the warm start."""
        t0 = time.perf_counter()
        if operator_id is not None and operator_id != self._operator_id:
            if self._operator_id is not None:
                self.reset_operator()
            self._operator_id = operator_id
        obs = self._observe(keypoints_cam_m, names, confidence)
        dirs, observed = self._directions(obs)
        n_obs = int(observed.sum()) if obs.R_cam_body is not None else 0
        P = len(self.position_targets)
        if n_obs < self.params.min_segments:
            self.notify_tracking_lost()
            why = "body frame not observable (hips missing)" if n_obs == 0 else f"only {n_obs} segments observed"
            return RetargetResult(self.q_prev.copy(), self.joint_names, False, float("nan"),
                                  np.full(len(self.segments), np.nan), (time.perf_counter() - t0) * 1e3,
                                  obs.hands_up, why, position_errors_m=np.full(P, np.nan),
                                  limb_lengths_m=self.limbs.as_dict())
        self._invalid_run = 0
        lengths = np.linalg.norm(obs.vec_body_m, axis=1)
        self.limbs.update(lengths, obs.observed & (obs.confidence >= self.params.limb_min_confidence))
        targets, t_obs, clamped = self._positions(obs)
        iters = self.params.init_iterations if self._fresh else self.params.iterations
        t_ik = t_obs & (self._tgt_weights > 0)     # weight 0: measured, not pursued (a baseline)
        q = self._iterate(self.q_prev.copy(), dirs[observed], observed, targets[t_ik], t_ik, iters)
        pts = self.tree.point_positions(q)
        u = pts[self._seg_b] - pts[self._seg_a]
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        err = np.full(len(self.segments), np.nan)
        cosang = np.clip(np.einsum("si,si->s", u[observed], dirs[observed]), -1.0, 1.0)
        err[observed] = np.arccos(cosang)
        perr = np.full(P, np.nan)
        if P:
            achieved = pts[self._tgt_tip] - pts[self._tgt_anchor]
            perr[t_obs] = np.linalg.norm(achieved[t_obs] - targets[t_obs], axis=1)
        self.q_prev = q
        self._fresh = False
        T_cam_body = np.eye(4)
        T_cam_body[:3, :3], T_cam_body[:3, 3] = obs.R_cam_body, obs.origin_cam_m
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        return RetargetResult(q.copy(), self.joint_names, True, float(np.mean(err[observed])), err, elapsed_ms,
                              obs.hands_up, T_cam_body=T_cam_body, position_errors_m=perr,
                              position_residual_m=float(np.mean(perr[t_obs])) if t_obs.any() else float("nan"),
                              targets_clamped=int(clamped.sum()), limb_lengths_m=self.limbs.as_dict())

    def _iterate(self, q: np.ndarray, d: np.ndarray, observed: np.ndarray, x: np.ndarray, t_obs: np.ndarray,
                 iters: int) -> np.ndarray:
        p = self.params
        a, b = self._seg_a[observed], self._seg_b[observed]
        sw = np.sqrt(self._weights[observed])
        ta, tb = self._tgt_anchor[t_obs], self._tgt_tip[t_obs]
        tw = np.sqrt(self._tgt_weights[t_obs])
        q_prev = self.q_prev
        n = q.shape[0]
        reg = (p.w_previous + p.w_home + p.damping) * np.eye(n)
        for _ in range(iters):
            pts, J = self.tree.points_and_jacobian(q)
            v = pts[b] - pts[a]
            L = np.linalg.norm(v, axis=1)
            L = np.maximum(L, 1e-6)
            u = v / L[:, None]
            P = (np.eye(3)[None] - u[:, :, None] * u[:, None, :]) / L[:, None, None]
            Js = np.einsum("sij,sjn->sin", P, J[b] - J[a])             # (S,3,n)
            Jf = (Js * sw[:, None, None]).reshape(-1, n)
            ef = ((u - d) * sw[:, None]).reshape(-1)
            if ta.size:
                Jp = ((J[tb] - J[ta]) * tw[:, None, None]).reshape(-1, n)
                ep = ((pts[tb] - pts[ta] - x) * tw[:, None]).reshape(-1)
                Jf = np.vstack([Jf, Jp])
                ef = np.concatenate([ef, ep])
            H = Jf.T @ Jf + reg
            g = Jf.T @ ef + p.w_previous * (q - q_prev) + p.w_home * (q - self.q_home)
            dq = np.linalg.solve(H, g)
            # Joints at a bound that the step pushes further out are held there and the step is
            # solved again without them: clipping them after the joint solve would leave the other
            # joints with a step that assumed the clipped ones moved (a torso at its pitch limit
            # then freezes the arms that should make up for it).
            for _ in range(2):
                blocked = ((q <= self.lower + 1e-9) & (dq > 0)) | ((q >= self.upper - 1e-9) & (dq < 0))
                if not blocked.any():
                    break
                free = ~blocked
                dq = np.zeros(n)
                dq[free] = np.linalg.solve(H[np.ix_(free, free)], g[free])
            big = np.max(np.abs(dq))
            if big > p.max_step_rad:      # trust region: no branch flips in one iteration
                dq *= p.max_step_rad / big
            q = np.clip(q - dq, self.lower, self.upper)
        return q
