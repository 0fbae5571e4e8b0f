"""Skeleton -> humanoid joint positions by direction-matching IK with joint limits.

Why directions: a segment direction (upper arm, forearm, torso, head) is independent of the
operator's size and of the robot's proportions, so no per-person scaling is needed and the
same mapping serves every operator (this is the per-segment normalisation of GMR-style
retargeting, applied to every segment). The IK is a few projected Gauss-Newton steps:

    min_q  sum_s w_s |u_s(q) - d_s|^2 + w_prev |q - q_prev|^2 + w_home |q - q_home|^2
    s.t.   lower + margin <= q <= upper - margin

u_s is the robot segment's unit direction in the base frame (analytic Jacobian
(I - u u^T)/L * (J_to - J_from)), d_s the human's in the body frame. Warm-started from the
previous solution, so 4 iterations suffice at camera rate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pose_ros.human.kinematics import KinematicTree
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


class Retargeter:
    """Holds the compiled kinematics and the warm start; call `solve` once per skeleton."""

    def __init__(self, mapping: RetargetMapping, full_body: bool = False):
        self.mapping = mapping
        self.params = mapping.solver
        self.joint_names = mapping.command_joints(full_body)
        self.segments = mapping.active_segments(full_body)
        if not self.segments:
            raise ValueError(f"{mapping.path}: no segments in the teleoperated groups {mapping.groups(full_body)}; "
                             "add segments or groups")
        model = mapping.model
        points = []
        index = {}
        for s in self.segments:
            for p in (s.robot_from, s.robot_to):
                if p not in index:
                    index[p] = len(points)
                    points.append(p)
        self._seg_a = np.array([index[s.robot_from] for s in self.segments])
        self._seg_b = np.array([index[s.robot_to] for s in self.segments])
        self._weights = np.array([s.weight for s in self.segments])
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
        self._names_cache: tuple[tuple[str, ...], dict] | None = None
        self.reset()

    # -- state ---------------------------------------------------------------------------
    def reset(self, q: np.ndarray | None = None) -> None:
        """Forget the warm start (next solve runs init_iterations from q or home)."""
        self.q_prev = self.q_home.copy() if q is None else np.clip(np.asarray(q, float), self.lower, self.upper)
        self._fresh = True

    # -- human side ------------------------------------------------------------------------
    def _lookup(self, names: Sequence[str]) -> dict:
        key = tuple(names)
        if self._names_cache is None or self._names_cache[0] != key:
            idx = {n: i for i, n in enumerate(key)}
            self._names_cache = (key, idx)
        return self._names_cache[1]

    def _keypoint(self, name: str, idx: dict, pts: np.ndarray, conf: np.ndarray) -> np.ndarray | None:
        parts = self.mapping.virtual_keypoints.get(name)
        if parts is None:
            i = idx.get(name)
            if i is None or conf[i] < self.params.min_confidence or not np.all(np.isfinite(pts[i])):
                return None
            return pts[i]
        vals = [self._keypoint(p, idx, pts, conf) for p in parts]
        if any(v is None for v in vals):
            return None
        return np.mean(vals, axis=0)

    def body_frame(self, keypoints_cam_m: np.ndarray, names: Sequence[str],
                   confidence: np.ndarray | None = None) -> np.ndarray | None:
        """T_cam_body 4x4 (rotation columns: forward, left, up in the camera frame; origin midway
        between the body frame's `left` keypoints, i.e. mid-hips), or None if unobservable."""
        pts, conf = self._inputs(keypoints_cam_m, names, confidence)
        idx = self._lookup(names)
        R = self._body_frame(idx, pts, conf)
        if R is None:
            return None
        bf = self.mapping.body_frame
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = 0.5 * (self._keypoint(bf.left_from, idx, pts, conf) + self._keypoint(bf.left_to, idx, pts, conf))
        return T

    def _body_frame(self, idx, pts, conf) -> np.ndarray | None:
        bf = self.mapping.body_frame
        a, b = self._keypoint(bf.left_from, idx, pts, conf), self._keypoint(bf.left_to, idx, pts, conf)
        if a is None or b is None:
            return None
        if bf.up == "camera":
            z = np.asarray(bf.up_vector_cam, dtype=np.float64)
        else:
            t0, t1 = self._keypoint(bf.torso_from, idx, pts, conf), self._keypoint(bf.torso_to, idx, pts, conf)
            if t0 is None or t1 is None:
                return None
            z = t1 - t0
            nz = np.linalg.norm(z)
            if nz < 1e-6:
                return None
            z = z / nz
        y = b - a
        y = y - z * (y @ z)
        ny = np.linalg.norm(y)
        if ny < 1e-3:   # hips collapsed or aligned with up: no heading
            return None
        y /= ny
        x = np.cross(y, z)
        return np.column_stack([x, y, z])

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

    def target_directions(self, keypoints_cam_m: np.ndarray, names: Sequence[str],
                          confidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(directions (S,3) unit in the body frame, observed mask (S,), hands_up)."""
        pts, conf = self._inputs(keypoints_cam_m, names, confidence)
        idx = self._lookup(names)
        S = len(self.segments)
        dirs = np.zeros((S, 3))
        observed = np.zeros(S, dtype=bool)
        R_cam_body = self._body_frame(idx, pts, conf)
        if R_cam_body is None:
            return dirs, observed, False
        for k, s in enumerate(self.segments):
            a, b = self._keypoint(s.human_from, idx, pts, conf), self._keypoint(s.human_to, idx, pts, conf)
            if a is None or b is None:
                continue
            d = b - a
            n = np.linalg.norm(d)
            if n < 1e-4:
                continue
            dirs[k] = R_cam_body.T @ (d / n)
            observed[k] = True
        return dirs, observed, self._hands_up(idx, pts, conf, R_cam_body)

    def _hands_up(self, idx, pts, conf, R_cam_body) -> bool:
        nose = self._keypoint("nose", idx, pts, conf)
        lw, rw = self._keypoint("left_wrist", idx, pts, conf), self._keypoint("right_wrist", idx, pts, conf)
        if nose is None or lw is None or rw is None:
            return False
        up = R_cam_body[:, 2]
        h = self.params.hands_up_height_m
        return bool((lw - nose) @ up > h and (rw - nose) @ up > h)

    # -- solve -----------------------------------------------------------------------------
    def segment_directions(self, q: np.ndarray) -> np.ndarray:
        """Robot segment unit directions (S,3) in the base frame at q."""
        pts = self.tree.point_positions(q)
        d = pts[self._seg_b] - pts[self._seg_a]
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def solve(self, keypoints_cam_m: np.ndarray, names: Sequence[str],
              confidence: np.ndarray | None = None) -> RetargetResult:
        """Retarget one skeleton (camera frame, metres). Invalid input -> valid=False and the
        previous solution (never NaN)."""
        t0 = time.perf_counter()
        dirs, observed, hands_up = self.target_directions(keypoints_cam_m, names, confidence)
        n_obs = int(observed.sum())
        if n_obs < self.params.min_segments:
            why = "body frame not observable (hips missing)" if n_obs == 0 else f"only {n_obs} segments observed"
            return RetargetResult(self.q_prev.copy(), self.joint_names, False, float("nan"),
                                  np.full(len(self.segments), np.nan), (time.perf_counter() - t0) * 1e3,
                                  hands_up, why)
        iters = self.params.init_iterations if self._fresh else self.params.iterations
        q = self._iterate(self.q_prev.copy(), dirs[observed], observed, iters)
        u = self.segment_directions(q)
        err = np.full(len(self.segments), np.nan)
        cosang = np.clip(np.einsum("si,si->s", u[observed], dirs[observed]), -1.0, 1.0)
        err[observed] = np.arccos(cosang)
        self.q_prev = q
        self._fresh = False
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        return RetargetResult(q.copy(), self.joint_names, True, float(np.mean(err[observed])), err, elapsed_ms,
                              hands_up, T_cam_body=self.body_frame(keypoints_cam_m, names, confidence))

    def _iterate(self, q: np.ndarray, d: np.ndarray, observed: np.ndarray, iters: int) -> np.ndarray:
        p = self.params
        a, b = self._seg_a[observed], self._seg_b[observed]
        w = self._weights[observed]
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
            e = u - d                                                   # (S,3)
            Jw = Js * np.sqrt(w)[:, None, None]
            Jf = Jw.reshape(-1, n)
            H = Jf.T @ Jf + reg
            g = Jf.T @ (e * np.sqrt(w)[:, None]).reshape(-1) + p.w_previous * (q - q_prev) \
                + p.w_home * (q - self.q_home)
            dq = np.linalg.solve(H, g)
            big = np.max(np.abs(dq))
            if big > p.max_step_rad:      # trust region: no branch flips in one iteration
                dq *= p.max_step_rad / big
            q = np.clip(q - dq, self.lower, self.upper)
        return q
