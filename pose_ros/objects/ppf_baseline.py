"""Point-pair-feature baseline: OpenCV's PPF3DDetector (Drost et al. 2010) + ICP.

Why it is here: it is the classic depth-only, training-free 6DoF detector, the natural yardstick
for our refinement (DESIGN.md asks us to beat it on real YCB-V frames). It needs no initial pose,
but it is slow on full clouds, so we (1) crop the scene to a mask when one is given (the
benchmark uses the GT visible mask; without a mask the whole valid depth is used, subsampled),
(2) subsample the organised depth with a pixel stride to at most ``max_scene_points`` points
before OpenCV's own voxel sampling (``relative_scene_distance`` x diameter), and (3) use every
``1/relative_scene_sample_step``-th sampled point as a voting reference.

Units: OpenCV works in whatever unit the clouds are in; we pass metres (all PPF steps are
relative to the model diameter).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from pose_ros.objects.icp import organized_points_normals

log = logging.getLogger(__name__)

__all__ = ["PpfConfig", "PpfBaseline", "PpfHypothesis"]


@dataclass
class PpfConfig:
    # OpenCV's training time grows much faster than the pair count below a step of ~0.1: on this
    # machine a 2000-point sphere trains in 0.2 s at 0.15, ~2-8 s at 0.1 and > 60 s at 0.07.
    relative_sampling_step: float = 0.1        # model sampling, x diameter (training)
    relative_distance_step: float = 0.05       # PPF distance quantisation, x diameter
    num_angles: int = 30                       # PPF angle quantisation
    relative_scene_sample_step: float = 0.5    # fraction of sampled scene points used as references
    relative_scene_distance: float = 0.1       # scene voxel sampling, x diameter (= training step)
    max_scene_points: int = 8000               # organised-image stride subsampling cap
    num_hypotheses: int = 5                    # poses kept (and ICP-refined)
    icp: str = "opencv"                        # "opencv" | "ours" | "none"
    icp_iterations: int = 100
    icp_tolerance: float = 0.005
    icp_rejection_scale: float = 2.5
    icp_levels: int = 4
    mask_dilate_px: int = 2
    scene_normal_px: float = 6.0               # half-baseline of the depth-image normals (pixels);
                                               # PPF votes on normal angles, so they must be smooth
    model_points: int = 6000                   # surface samples used for training

    def __post_init__(self) -> None:
        if self.icp not in ("opencv", "ours", "none"):
            raise ValueError(f"PpfConfig.icp must be 'opencv', 'ours' or 'none'; got {self.icp!r}")
        if not (0 < self.relative_sampling_step < 1 and 0 < self.relative_scene_distance < 1):
            raise ValueError("PpfConfig relative steps must be in (0, 1) (fractions of the model diameter)")
        if self.num_hypotheses < 1:
            raise ValueError(f"PpfConfig.num_hypotheses must be >= 1; got {self.num_hypotheses}")


@dataclass
class PpfHypothesis:
    T_cam_obj: np.ndarray
    score: float          # PPF votes / scene reference points (after ICP the same, residual aside)
    votes: int
    residual: float       # OpenCV ICP residual (metres), nan when not refined by it


class PpfBaseline:
    """Train once per model (``__init__``), then ``estimate`` per frame."""

    def __init__(self, model, config: PpfConfig | None = None):
        import cv2

        self.model = model
        self.config = config or PpfConfig()
        c = self.config
        pts, nrm = self._model_cloud(model, c.model_points)
        self._model_pc = np.hstack([pts, nrm]).astype(np.float32)
        t0 = time.perf_counter()
        self._detector = cv2.ppf_match_3d_PPF3DDetector(c.relative_sampling_step, c.relative_distance_step,
                                                        c.num_angles)
        self._detector.trainModel(self._model_pc)
        self.train_time_s = time.perf_counter() - t0

    @staticmethod
    def _model_cloud(model, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Dense area-uniform samples with face normals (PPF quality depends on the normals)."""
        import trimesh

        mesh = getattr(model, "mesh", None)
        if mesh is not None and len(getattr(mesh, "faces", [])) > 0:
            pts, fi = trimesh.sample.sample_surface(mesh, int(n), seed=0)
            return np.asarray(pts, np.float64), np.asarray(mesh.face_normals[fi], np.float64)
        return np.asarray(model.points_m, np.float64), np.asarray(model.normals, np.float64)

    def _scene_cloud(self, depth_m: np.ndarray, camera, mask: np.ndarray | None) -> np.ndarray:
        import cv2

        depth = np.asarray(depth_m)
        if depth.shape != (camera.height, camera.width):
            raise ValueError(f"depth_m shape {depth.shape} does not match camera (H,W)=({camera.height},"
                             f"{camera.width})")
        with np.errstate(invalid="ignore"):
            roi = np.isfinite(depth) & (depth > 0)
        if mask is not None:
            m = np.asarray(mask).astype(np.uint8)
            if m.shape != depth.shape:
                raise ValueError(f"mask shape {m.shape} does not match depth shape {depth.shape}")
            if self.config.mask_dilate_px > 0:
                k = 2 * self.config.mask_dilate_px + 1
                m = cv2.dilate(m, np.ones((k, k), np.uint8))
            roi &= m.astype(bool)
        n = int(roi.sum())
        if n == 0:
            return np.zeros((0, 6), np.float32)
        stride = max(1, int(math.floor(math.sqrt(n / self.config.max_scene_points))))
        step = max(1, int(round(self.config.scene_normal_px / stride)))
        pts, nrm = organized_points_normals(depth, camera, roi, stride=stride, normal_step=step)
        return np.hstack([pts, nrm]).astype(np.float32)

    def estimate(self, depth_m: np.ndarray, camera, mask: np.ndarray | None = None) -> list[tuple[np.ndarray, float]]:
        """Up to ``num_hypotheses`` (T_cam_obj, score) pairs, best first; [] when the scene has
        too few points (logged)."""
        return [(h.T_cam_obj, h.score) for h in self.estimate_hypotheses(depth_m, camera, mask)]

    def estimate_hypotheses(self, depth_m: np.ndarray, camera, mask: np.ndarray | None = None) -> list[PpfHypothesis]:
        """PPF voting, then the configured ICP on each kept hypothesis; best (most votes) first."""
        hyps, scene = self.match(depth_m, camera, mask)
        if not hyps:
            return hyps
        if self.config.icp == "opencv":
            self.refine_opencv(hyps, scene)
        elif self.config.icp == "ours":
            self.refine_ours(hyps, depth_m, camera, mask)
        return hyps

    def match(self, depth_m: np.ndarray, camera, mask: np.ndarray | None = None
              ) -> tuple[list[PpfHypothesis], np.ndarray]:
        """Raw PPF hypotheses (no ICP) and the scene cloud (N,6) float32 they were matched in."""
        c = self.config
        scene = self._scene_cloud(depth_m, camera, mask)
        if scene.shape[0] < 30:
            log.info("PPF: only %d scene points, no estimate", scene.shape[0])
            return [], scene
        results = self._detector.match(scene, c.relative_scene_sample_step, c.relative_scene_distance)
        results = sorted(results or [], key=lambda r: -r.numVotes)[: c.num_hypotheses]
        n_ref = max(1.0, scene.shape[0] * c.relative_scene_sample_step)
        hyps = [PpfHypothesis(np.asarray(r.pose, np.float64).copy(), float(r.numVotes) / n_ref, int(r.numVotes),
                              float("nan")) for r in results]
        return [h for h in hyps if np.all(np.isfinite(h.T_cam_obj))], scene

    def refine_opencv(self, hyps: list[PpfHypothesis], scene: np.ndarray) -> list[PpfHypothesis]:
        """OpenCV's multi-level point-to-plane ICP (the matcher's own refinement), in place."""
        import cv2

        c = self.config
        if not hyps:
            return hyps
        poses = []
        for h in hyps:
            p = cv2.ppf_match_3d_Pose3D()
            p.updatePose(h.T_cam_obj.astype(np.float64))
            poses.append(p)
        icp = cv2.ppf_match_3d_ICP(c.icp_iterations, c.icp_tolerance, c.icp_rejection_scale, c.icp_levels)
        _, refined = icp.registerModelToScene(self._model_pc, scene, poses)
        for h, r in zip(hyps, refined):
            T = np.asarray(r.pose, np.float64)
            if np.all(np.isfinite(T)):
                h.T_cam_obj = T.copy()
                h.residual = float(r.residual)
        return hyps

    def refine_ours(self, hyps: list[PpfHypothesis], depth_m: np.ndarray, camera,
                    mask: np.ndarray | None = None) -> list[PpfHypothesis]:
        """Our depth ICP (``objects.icp``) on each hypothesis, in place (kept when not applied)."""
        from pose_ros.objects.icp import refine_pose_icp

        for h in hyps:
            res = refine_pose_icp(self.model, h.T_cam_obj, depth_m, camera, mask=mask)
            if res.applied:
                h.T_cam_obj = res.T_cam_obj
                h.residual = res.inlier_rmse_m
        return hyps
