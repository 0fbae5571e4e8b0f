"""A smoothly moving synthetic RGB-D scene over time, for the live demo camera node.

Why: the pose node, tracker and RViz need a camera feed with ground truth and continuous motion
(tracking, temporal filtering) without hardware. The objects stand still on a table (one of each
model, plus distractors); the camera orbits the table while its elevation, distance and look-at
point drift, so objects sometimes slide partly or fully out of view; an "arm" (a long box)
periodically sweeps over the table and occludes objects. Everything is a pure function of
(seed, t_s): the same time always renders the same frame, whatever order frames are asked in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import trimesh

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.transforms import make_T
from pose_ros.synth.noise import DepthNoiseModel, DepthNoiseParams
from pose_ros.synth.renderer import RenderResult, RgbdRenderer, SceneMesh, TablePlane
from pose_ros.synth.scene_sampler import TabletopSceneSampler, camera_pose_on_table

__all__ = ["SyntheticSceneStream", "GroundTruthObject"]


@dataclass
class GroundTruthObject:
    name: str
    obj_id: int
    T_cam_obj: np.ndarray
    visible_fraction: float  # visible / rendered-alone pixels inside the image; 0 when out of view


class SyntheticSceneStream:
    """``frame(t_s) -> (RenderResult, depth_m, [GroundTruthObject])``, deterministic per seed."""

    ORBIT_PERIOD_S = 40.0
    ARM_PERIOD_S = 15.0

    def __init__(self, models: Sequence[Any], camera: PinholeCamera, seed: int = 0, noise: bool = True,
                 noise_params: DepthNoiseParams | None = None, n_distractors: int = 2,
                 occluder: bool = True):
        if len(models) == 0:
            raise ValueError("SyntheticSceneStream needs at least one model; load them with load_object_dir('meshes')")
        self.models = list(models)
        self.camera = camera
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0; got {seed}")
        self.noise = DepthNoiseModel(noise_params) if noise else None
        rng = np.random.default_rng(self.seed)
        sampler = TabletopSceneSampler(self.models, camera, rng, n_distractors=(n_distractors, n_distractors),
                                       distance_m=(0.6, 0.6))
        layout = sampler.sample(len(self.models), model_indices=list(range(len(self.models))))
        self._T_table_obj = layout.T_table_obj
        # Distractors are stored in the table frame (they were sampled relative to its camera).
        T_table_cam0 = np.linalg.inv(layout.T_cam_table)
        self._distractors = [(m, T_table_cam0 @ T) for m, T in layout.distractors]
        self._table_tex = layout.table.texture if layout.table is not None else None
        self._table_size = sampler.table_size_xy_m
        self._az0 = rng.uniform(0, 2 * np.pi)
        self._el0 = np.deg2rad(rng.uniform(45, 55))
        self._phase = rng.uniform(0, 2 * np.pi, 4)
        from pose_ros.synth.backgrounds import random_background

        self._background = random_background(camera.height, camera.width, rng)
        self._arm = SceneMesh("arm", self._arm_mesh())
        self._occluder = bool(occluder)
        self.renderer = RgbdRenderer(camera)

    @staticmethod
    def _arm_mesh() -> trimesh.Trimesh:
        m = trimesh.creation.box(extents=[0.05, 0.45, 0.05])
        m.visual = trimesh.visual.ColorVisuals(m, vertex_colors=np.tile([200, 160, 130, 255], (len(m.vertices), 1)))
        return m

    def camera_pose(self, t_s: float) -> np.ndarray:
        """T_cam_table at time t: orbit + elevation/distance/look-at drift (all smooth).

        Camera height stays >= 0.55 m * sin(35 deg) = 0.315 m, above the sweeping arm (top at
        0.285 m), which itself clears the tallest demo object (bottle, 0.22 m)."""
        p = self._phase
        az = self._az0 + 2 * np.pi * t_s / self.ORBIT_PERIOD_S
        el = self._el0 + np.deg2rad(10.0) * np.sin(2 * np.pi * t_s / 23.0 + p[0])
        dist = 0.65 + 0.10 * np.sin(2 * np.pi * t_s / 31.0 + p[1])
        target = np.array([0.14 * np.sin(2 * np.pi * t_s / 17.0 + p[2]),
                           0.14 * np.sin(2 * np.pi * t_s / 29.0 + p[3]), 0.03])
        roll = np.deg2rad(5.0) * np.sin(2 * np.pi * t_s / 13.0)
        return camera_pose_on_table(el, az, dist, target, roll)

    def arm_pose(self, t_s: float) -> np.ndarray | None:
        """T_table_arm: the arm sweeps across above the table for the first 60% of each period."""
        s = (t_s % self.ARM_PERIOD_S) / self.ARM_PERIOD_S
        if not self._occluder or s > 0.6:
            return None
        x = -0.5 + s / 0.6 * 1.0
        return make_T(np.eye(3), [x, 0.02 * np.sin(7 * t_s), 0.26])

    def frame(self, t_s: float) -> tuple[RenderResult, np.ndarray, list[GroundTruthObject]]:
        """Render the scene at time ``t_s`` (seconds); depth is noisy when noise was enabled."""
        t_s = float(t_s)
        if not np.isfinite(t_s):
            raise ValueError(f"t_s must be finite; got {t_s}")
        T_cam_table = self.camera_pose(t_s)
        objs: list[tuple[Any, np.ndarray]] = [(m, T_cam_table @ T) for m, T in zip(self.models, self._T_table_obj)]
        objs += [(m, T_cam_table @ T) for m, T in self._distractors]
        T_arm = self.arm_pose(t_s)
        if T_arm is not None:
            objs.append((self._arm, T_cam_table @ T_arm))
        light_cam = T_cam_table[:3, :3] @ np.array([0.3, -0.2, 1.0])  # a fixed ceiling light
        rng = np.random.default_rng([self.seed, int(round(t_s * 1e6)) & 0x7FFFFFFFFFFF])
        res = self.renderer.render(objs, background=self._background, light_dir_cam=light_cam, ambient=0.45,
                                   table=TablePlane(T_cam_table, self._table_size, self._table_tex))
        depth = (self.noise.apply(res.depth_m, res.normals_cam, rng, K=self.camera.K)
                 if self.noise is not None else res.depth_m.copy())
        gt = [GroundTruthObject(getattr(m, "name", f"obj{i}"), int(getattr(m, "obj_id", i)), objs[i][1],
                                float(res.visible_fraction[i])) for i, m in enumerate(self.models)]
        return res, depth, gt
