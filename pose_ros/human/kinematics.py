"""Forward kinematics and analytic point Jacobians over the part of a URDF tree that matters.

The retargeter calls this a few times per frame, so the tree is compiled once into flat arrays
(only the joints between the base link and the links that carry targets), and FK is one loop of
3x3 products. Jacobians are the analytic revolute/prismatic columns (axis x lever arm / axis),
so no finite differences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose_ros.human.urdf_model import UrdfError, UrdfModel


@dataclass(frozen=True)
class PointRef:
    """A point fixed to a robot link: `offset_link_m` expressed in the link frame."""
    link: str
    offset_link_m: tuple[float, float, float] = (0.0, 0.0, 0.0)


class KinematicTree:
    """FK/Jacobians of `points` relative to `base_link` as functions of `variables` (joint names).

    Movable joints that are not variables (and not mimics of one) stay at `fixed_q` (default 0).
    A mimic joint follows its source: `q = multiplier * q_src + offset`, and contributes
    `multiplier` times its column to the source's Jacobian column.
    """

    def __init__(self, model: UrdfModel, base_link: str, variables: list[str], points: list[PointRef],
                 fixed_q: dict[str, float] | None = None):
        self.model = model
        self.base_link = base_link
        self.variables = list(variables)
        self.points = list(points)
        fixed_q = dict(fixed_q or {})
        var_index = {}
        for i, name in enumerate(self.variables):
            j = model.require_joint(name)
            if not j.movable:
                raise UrdfError(f"joint '{name}' is {j.type}; only movable joints can be variables")
            if j.mimic is not None:
                raise UrdfError(f"joint '{name}' mimics '{j.mimic.joint}'; make the source joint the variable")
            var_index[name] = i
        # Collect the joints needed: union of chains base -> each point's link.
        needed: list = []
        seen = set()
        for p in self.points:
            for j in model.chain(base_link, p.link):
                if j.name not in seen:
                    seen.add(j.name)
                    needed.append(j)
        # Parents before children: sort by depth from the root.
        depth = {j.name: len(model.path_to_root(j.child)) for j in needed}
        needed.sort(key=lambda j: depth[j.name])
        frame_of_link = {base_link: 0}
        n = len(needed)
        self.n_frames = n + 1
        self._parent = np.zeros(n, dtype=np.int64)
        self._R0 = np.zeros((n, 3, 3))
        self._p0 = np.zeros((n, 3))
        self._axis = np.zeros((n, 3))
        self._K = np.zeros((n, 3, 3))
        self._K2 = np.zeros((n, 3, 3))
        self._kind = np.zeros(n, dtype=np.int64)      # 0 rigid, 1 revolute, 2 prismatic
        self._var = np.full(n, -1, dtype=np.int64)    # variable index or -1
        self._mult = np.ones(n)
        self._const = np.zeros(n)                     # q = mult * q[var] + const (or const)
        for k, j in enumerate(needed):
            self._parent[k] = frame_of_link[j.parent]
            frame_of_link[j.child] = k + 1
            self._R0[k] = j.T_parent_joint[:3, :3]
            self._p0[k] = j.T_parent_joint[:3, 3]
            a = j.axis
            self._axis[k] = a
            K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
            self._K[k], self._K2[k] = K, K @ K
            if not j.movable:
                continue
            self._kind[k] = 1 if j.type in ("revolute", "continuous") else 2
            src, mult, off = j.name, 1.0, 0.0
            if j.mimic is not None:
                src, mult, off = j.mimic.joint, j.mimic.multiplier, j.mimic.offset
            if src in var_index:
                self._var[k], self._mult[k], self._const[k] = var_index[src], mult, off
            else:
                self._const[k] = mult * fixed_q.get(src, 0.0) + off
        self._frame_of_link = frame_of_link
        self._point_frame = np.array([frame_of_link[p.link] for p in self.points], dtype=np.int64)
        self._point_offset = np.array([p.offset_link_m for p in self.points], dtype=np.float64).reshape(-1, 3)
        # ancestor[m, k]: joint k moves point m.
        self._ancestor = np.zeros((len(self.points), n), dtype=bool)
        for m, p in enumerate(self.points):
            f = frame_of_link[p.link]
            while f != 0:
                self._ancestor[m, f - 1] = True
                f = self._parent[f - 1]
        self._needed = needed
        depth_arr = np.array([depth[j.name] for j in needed], dtype=np.int64)
        self._levels = [(np.nonzero(depth_arr == d)[0] + 1, self._parent[depth_arr == d])
                        for d in sorted(set(depth_arr.tolist()))]
        self._is_rev = self._kind == 1
        self._is_pri = self._kind == 2
        self._R0K = self._R0 @ self._K
        self._R0K2 = self._R0 @ self._K2
        self._R0axis = np.einsum("kij,kj->ki", self._R0, self._axis)
        self._jac_mask = (self._ancestor & (self._kind > 0)[None, :])[:, :, None].astype(np.float64)
        # Selection matrix: J_vars = J_joints @ S (mimic multipliers folded in).
        self._select = np.zeros((n, len(self.variables)))
        for k in range(n):
            if self._var[k] >= 0 and self._kind[k] > 0:
                self._select[k, self._var[k]] = self._mult[k]

    @property
    def joint_names(self) -> list[str]:
        """All joints in the compiled tree (parents first)."""
        return [j.name for j in self._needed]

    def joint_values(self, q: np.ndarray) -> np.ndarray:
        """Value of every compiled joint for variables q (rigid joints 0)."""
        q = np.asarray(q, dtype=np.float64)
        vals = self._const.copy()
        has = self._var >= 0
        vals[has] += self._mult[has] * q[self._var[has]]
        return vals

    def frames(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R_base_frame (F,3,3), p_base_frame_m (F,3)); frame 0 is the base, frame k+1 the child
        link of compiled joint k. Joints at the same depth are composed in one batched product."""
        vals = self.joint_values(q)
        s = np.where(self._is_rev, np.sin(vals), 0.0)
        c1 = np.where(self._is_rev, 1.0 - np.cos(vals), 0.0)
        # R0 @ Rodrigues(axis, q) = R0 + sin q (R0 K) + (1 - cos q) (R0 K^2)
        R_local = self._R0 + s[:, None, None] * self._R0K + c1[:, None, None] * self._R0K2
        p_local = self._p0 + self._R0axis * np.where(self._is_pri, vals, 0.0)[:, None]
        R = np.empty((self.n_frames, 3, 3))
        p = np.empty((self.n_frames, 3))
        R[0] = np.eye(3)
        p[0] = 0.0
        for child, par in self._levels:
            Rp = R[par]
            R[child] = Rp @ R_local[child - 1]
            p[child] = p[par] + (Rp @ p_local[child - 1][:, :, None])[:, :, 0]
        return R, p

    def link_pose(self, q: np.ndarray, link: str) -> np.ndarray:
        """T_base_link 4x4 for a link in the compiled tree."""
        if link not in self._frame_of_link:
            raise UrdfError(f"link '{link}' is not in this kinematic tree; known: {sorted(self._frame_of_link)}")
        R, p = self.frames(q)
        T = np.eye(4)
        f = self._frame_of_link[link]
        T[:3, :3], T[:3, 3] = R[f], p[f]
        return T

    def points_and_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Point positions in the base frame (M,3) metres and d(points)/dq (M,3,n_vars)."""
        R, p = self.frames(q)
        pts = p[self._point_frame] + np.einsum("mij,mj->mi", R[self._point_frame], self._point_offset)
        axes = np.einsum("kij,kj->ki", R[1:], self._axis)            # joint axes in the base frame
        lever = pts[:, None, :] - p[None, 1:, :]                      # (M,n,3) joint origin -> point
        ax, ay, az = axes[None, :, 0], axes[None, :, 1], axes[None, :, 2]
        lx, ly, lz = lever[..., 0], lever[..., 1], lever[..., 2]
        cols = np.empty_like(lever)
        rev = self._is_rev[None, :]
        cols[..., 0] = np.where(rev, ay * lz - az * ly, ax)
        cols[..., 1] = np.where(rev, az * lx - ax * lz, ay)
        cols[..., 2] = np.where(rev, ax * ly - ay * lx, az)
        cols *= self._jac_mask
        J = np.einsum("mkc,kv->mcv", cols, self._select)
        return pts, J

    def point_positions(self, q: np.ndarray) -> np.ndarray:
        """Point positions (M,3) in the base frame, metres."""
        R, p = self.frames(q)
        return p[self._point_frame] + np.einsum("mij,mj->mi", R[self._point_frame], self._point_offset)


def all_link_poses(model: UrdfModel, q_by_name: dict[str, float]) -> dict[str, np.ndarray]:
    """T_root_link for every link (for drawing/exports); joints absent from q_by_name are 0."""
    out = {model.root: np.eye(4)}
    stack = [model.root]
    while stack:
        link = stack.pop()
        for j in model.child_joints(link):
            q = q_by_name.get(j.name, 0.0)
            if j.mimic is not None:
                q = j.mimic.multiplier * q_by_name.get(j.mimic.joint, 0.0) + j.mimic.offset
            M = np.eye(4)
            if j.type in ("revolute", "continuous"):
                a = j.axis
                K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
                M[:3, :3] = np.eye(3) + np.sin(q) * K + (1 - np.cos(q)) * K @ K
            elif j.type == "prismatic":
                M[:3, 3] = j.axis * q
            out[j.child] = out[link] @ j.T_parent_joint @ M
            stack.append(j.child)
    return out
