"""End-to-end object pose estimator: network -> instances (class hypotheses) -> PnP -> ICP -> scoring.

Why one object: the ROS node, the CLI (`eval`, `bench`) and the tests all call exactly this, so what
is measured offline is what runs on the robot. The estimator is stateless between frames except for
counters (drops by reason, last per-stage timings); ``tracking.PoseTracker`` adds state.

Depth-driven search: when PnP fails or its pose is probably wrong (calibrated score below
``search_below_probability``; without a calibration, pose score below ``depth_search_below``), the
instance's mask, depth and 2D evidence (the crop stage's correspondences, else the first stage's
voted keypoints) drive ``depth_search.depth_pose_search`` (rotation grid scored against depth, mask
and that evidence, then ICP); the better-scoring pose wins. With a weak
network this is what finds most poses; with a good one PnP+ICP scores high and the search is
skipped (it costs 0.3-1.5 s per instance on one CPU core).

Class hypotheses (``class_hypotheses``): an object whose pixels the network splits between classes is
also tried whole as its likeliest classes (``_instances``); the pose check picks the reading.

Crop correspondence stage (when the model file has one, ``correspondence_pose``): the instances' crops go
through one batch and their dense 2D-3D correspondences give the pose (3D-3D RANSAC with depth, PnP
without) instead of the voted keypoints; the depth search stays the fallback, counted in
``stage_counts``.

Camera handling: any input resolution. The image is letterboxed into the network input (uniform
scale, padding bottom/right), so the network always sees undistorted aspect ratios; keypoints are
mapped back to the input image pixels and PnP runs with the input camera's own K and distortion.

Covariance (6x6, ROS order [x y z rx ry rz], camera frame, rotation as a left-applied small
rotation vector): PnP gives ``(J^T Sigma^-1 J)^-1`` from the voted keypoint covariances (vote
spread). When ICP is applied, an ICP covariance ``diag(rmse^2 * 3, (rmse / (d/2))^2 * 3)`` (d =
object diameter; the residual RMSE taken as an error that does not average out over correlated
points) is fused with the PnP covariance as two independent estimates: ``(P^-1 + I^-1)^-1``.

Score: ``objects.scoring.pose_score`` (depth/mask agreement, ICP fitness, PnP inlier ratio). With no
usable depth for the instance the PnP pose is returned with a lowered score
``NO_DEPTH_SCORE_CAP * pnp_inlier_ratio * vote_inlier_ratio`` (never above the cap).
"""
from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.objects.correspondence_pose import (MIN_CORRESPONDENCES, correspondence_agreement,
                                                  instance_depth_reference)
from pose_ros.objects.covariance import fuse_icp_covariance, icp_covariance
from pose_ros.objects.pnp import PnpConfig, solve_pnp
from pose_ros.objects.voting import VotingConfig, split_instances, vote_keypoints

__all__ = ["PoseResult", "PoseStats", "PoseEstimator", "NetworkMaps", "EstimatorInputError", "NO_DEPTH_SCORE_CAP",
           "load_meshes_for_model"]

log = logging.getLogger(__name__)

NO_DEPTH_SCORE_CAP = 0.5
APPEARANCE_MARGIN = 0.05        # render-and-compare gain a near-symmetric twin needs to replace a pose
APPEARANCE_SCORE_SLACK = 0.1    # depth-score loss tolerated for that switch
APPEARANCE_REFINE_TWINS = 6     # best-looking twins refined by ICP before that comparison
APPEARANCE_TWIN_ROUNDS = 2      # after a switch, the new pose's twins are compared again (appearance.pick_twin)
# The crop stage's correspondences tell a pose from its near-symmetric twins when the pose explains at least
# TWIN_AGREEMENT_MIN of them and every twin TWIN_AGREEMENT_MARGIN fewer: the rendered twin check is skipped.
TWIN_AGREEMENT_MIN = 0.7
TWIN_AGREEMENT_MARGIN = 0.4


def _reason_kind(reason: str) -> str:
    """A reason without its numbers ("translation correction # mm exceeds # mm"): drop counters
    (and the node's /diagnostics keys) stay a short fixed set instead of one key per value."""
    return re.sub(r"[-+]?\d+(?:\.\d+)?", "#", reason.split(" (")[0])[:60]


def _disc_coverage(mask: np.ndarray, diameter_m: float, z_m: float, camera: PinholeCamera) -> float:
    """Mask pixels over the area of a disc of the object's diameter at depth ``z_m``: how much of
    the object a region can show (an unoccluded compact object covers ~0.5-0.8 of that disc)."""
    r_px = 0.5 * camera.fx * diameter_m / z_m
    return float(np.count_nonzero(mask)) / max(np.pi * r_px * r_px, 1.0)


class EstimatorInputError(ValueError):
    """Invalid arguments to PoseEstimator.estimate (shapes, dtypes, camera/image mismatch)."""


@dataclass
class PoseStats:
    pnp_inliers: int = 0
    pnp_keypoints: int = 0
    reprojection_error_px: float = float("nan")
    vote_inlier_ratio: float = 0.0
    mask_pixels: int = 0                   # instance pixels at the network output resolution
    icp_applied: bool = False
    icp_fitness: float = 0.0
    icp_rmse_m: float = float("inf")
    icp_iterations: int = 0
    icp_correction_translation_m: float = 0.0
    icp_correction_rotation_rad: float = 0.0
    icp_reason: str = ""
    depth_agreement: float = float("nan")
    appearance: float = float("nan")      # rendered-texture vs image correlation of the final pose
    appearance_flipped: bool = False      # the appearance check replaced the pose by a near-symmetric twin
    protruding_fraction: float = float("nan")  # instance pixels standing out of the scene's large planes
    correspondences: str = "votes"        # what PnP ran on: "crop" (second stage) | "votes" (first stage)
    crop_visible_fraction: float = float("nan")  # crop pixels the second stage calls this object
    crop_agreement: float = float("nan")  # crop correspondences the final pose reprojects (``correspondence_agreement``)
    features: dict[str, float] = field(default_factory=dict)   # score_calibration inputs (when calibrated)
    uncalibrated_score: float = float("nan")  # scoring.pose_score before the calibration replaced it
    source: str = "network"               # "network" | "tracking"
    method: str = ""                      # "pnp" | "pnp+icp" | "depth_search+icp" | "icp_tracking"
    depth_searched: bool = False          # the depth-search fallback ran for this hypothesis (won or not)
    time_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class PoseResult:
    class_name: str
    class_id: int                         # 1-based index into the model file's objects
    obj_id: int
    instance_id: int
    T_cam_obj: np.ndarray                 # 4x4, metres
    score: float                          # [0,1]
    covariance: np.ndarray                # 6x6 (module doc)
    stats: PoseStats
    T_pnp_cam_obj: np.ndarray | None = None   # pose before ICP
    keypoints_uv: np.ndarray | None = None    # (K+1,2) voted keypoints, image pixels
    mask: np.ndarray | None = field(default=None, repr=False)   # (H,W) bool instance mask, image pixels


def describe_stage_counts(counts: dict[str, int]) -> str:
    """One line on how pose hypotheses were found and checked (``PoseEstimator.stage_counts``): what
    `pose-ros eval` and `pose-ros bench` print, so the fallback's and the twin check's use is seen."""
    return (f"pose hypotheses: crop stage {counts.get('crop_pnp', 0)}, voted keypoints {counts.get('votes_pnp', 0)}; "
            f"depth-search fallback ran {counts.get('depth_search', 0)} times, its pose kept "
            f"{counts.get('depth_search_won', 0)}, not run for {counts.get('depth_search_too_small', 0)} too small to "
            f"pin a pose down; near-symmetric twins rendered and compared "
            f"{counts.get('twin_check', 0)} times, told apart by the crop stage {counts.get('twin_check_skipped', 0)}")


def load_meshes_for_model(meshes: Any, obj_ids: Iterable[int]) -> list[Any]:
    """ObjectModels from a list, a meshes/ folder (object.yaml) or a BOP models folder."""
    from pose_ros.core.object_model import load_bop_models, load_object_dir

    if meshes is None:
        return []
    if isinstance(meshes, (str, Path)):
        p = Path(meshes)
        if (p / "models_info.json").is_file():
            return load_bop_models(p, [i for i in obj_ids])
        return load_object_dir(p)
    return list(meshes)


@dataclass
class NetworkMaps:
    """Network outputs for one frame at the output resolution (letterboxed)."""

    seg_logits: np.ndarray        # (C+1, h, w)
    vectors: np.ndarray           # (C, K+1, 2, h, w)
    centre: np.ndarray            # (2, h, w) offsets / CENTRE_OFFSET_SCALE_PX
    scale: float                  # image -> network input scale (letterbox)
    content_size: tuple[int, int]  # (w, h) of the image inside the network input
    time_ms: dict[str, float] = field(default_factory=dict)


class PoseEstimator:
    """RGB-D -> list[PoseResult] for every enabled class and instance (see module doc)."""

    def __init__(self, model_file: str | Path, meshes: Any = None, device: str = "cpu", use_icp: bool = True,
                 score_threshold: float = 0.3, icp_config: Any = None, pnp_config: PnpConfig | None = None,
                 voting_config: VotingConfig | None = None, min_instance_pixels: int = 12,
                 allow_mesh_mismatch: bool = False, threads: int | None = None, seed: int = 0,
                 depth_search: bool = True, depth_search_below: float = 0.8,
                 search_below_probability: float = 0.5, search_min_coverage: float = 0.05,
                 appearance_check: bool = True,
                 depth_search_config: Any = None, depth_objectness: bool = True, objectness_config: Any = None,
                 use_score_calibration: bool = True, use_correspondence_stage: bool = True,
                 class_hypotheses: int = 2, min_class_share: float = 0.2,
                 background_offset: float | None = None):
        import torch

        from pose_ros.objects.batchnorm_folding import fold_batch_norms
        from pose_ros.objects.model_file import check_meshes, load_model_file

        if threads:
            torch.set_num_threads(int(threads))
        self.loaded = load_model_file(model_file, device=device)
        self.device = device
        self.net = fold_batch_norms(self.loaded.network)     # inference copy: same maps, ~30% faster on CPU
        self.cfg = self.loaded.config
        self.objects = self.loaded.objects
        models = load_meshes_for_model(meshes, [o.obj_id for o in self.objects])
        self.models: dict[int, Any] = check_meshes(self.loaded, models, allow_mismatch=allow_mesh_mismatch) if models else {}
        missing = [o.name for i, o in enumerate(self.objects) if i + 1 not in self.models]
        if missing and use_icp:
            log.warning("no mesh for %s: ICP and depth scoring disabled for them", missing)
        self.use_icp = bool(use_icp)
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be in [0,1]; got {score_threshold}")
        self.score_threshold = float(score_threshold)
        if icp_config is None:
            from pose_ros.objects.icp import IcpConfig
            icp_config = IcpConfig()
        self.icp_config = icp_config
        self.pnp_config = pnp_config or PnpConfig()
        self.voting_config = voting_config or VotingConfig()
        self.min_instance_pixels = int(min_instance_pixels)
        self.depth_search = bool(depth_search)
        self.depth_search_below = float(depth_search_below)          # pose score, models without a calibration
        self.search_below_probability = float(search_below_probability)  # calibrated score, models with one
        self.search_min_coverage = float(search_min_coverage)     # ``_disc_coverage`` an instance needs for the search
        self.depth_search_config = depth_search_config      # None: DepthSearchConfig() defaults
        self.appearance_check = bool(appearance_check)
        self.depth_objectness = bool(depth_objectness)
        self.class_hypotheses = int(class_hypotheses)        # classes tried per instance (``_instances``)
        self.min_class_share = float(min_class_share)
        # Margin over the background logit required of regions that do not stand out in depth
        # (``_class_map``): None = the model file's own (``pose-ros calibrate-score`` chooses it on
        # object-free training photos), 0 = plain argmax.
        self.background_offset = float(self.loaded.raw.get("background_logit_offset", 0.0)
                                        if background_offset is None else background_offset)
        if not self.background_offset >= 0.0:
            raise ValueError(f"background_offset must be >= 0; got {self.background_offset}")
        self.calibration: Any = None
        if use_score_calibration and self.loaded.raw.get("score_calibration"):
            from pose_ros.objects.score_calibration import ScoreCalibration

            self.calibration = ScoreCalibration.from_dict(self.loaded.raw["score_calibration"])
        if objectness_config is None:
            from pose_ros.objects.depth_objectness import ObjectnessConfig
            objectness_config = ObjectnessConfig()
        self.objectness_config = objectness_config
        self._appearance: Any = None
        self._near_syms: dict[int, list[np.ndarray]] = {}
        if self.appearance_check and self.use_icp:
            from pose_ros.objects.appearance import AppearanceScorer
            from pose_ros.objects.model_file import near_symmetries_for

            self._appearance = AppearanceScorer()
            self._near_syms = {c: near_symmetries_for(self.objects[c - 1], m) if self._appearance.is_textured(m) else []
                               for c, m in self.models.items()}
        self._turn_axes: dict[int, np.ndarray | None] = {}
        self._symmetry_cache: dict[int, list[np.ndarray]] = {}
        self._verifier: Any = None
        self.last_class_map: np.ndarray | None = None
        self.last_seg_logits: np.ndarray | None = None
        # (H, W) image pixels of the instances that passed the depth gate and went on to posing: what the
        # whole front end (network + depth objectness) takes for an object, the figure eval-photos reports
        self.last_object_mask: np.ndarray | None = None
        self.collect_features = False     # fill stats.features without a calibration (to fit one)
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.drops: Counter[str] = Counter()
        # how hypotheses were posed: crop_pnp / votes_pnp (PnP ok on the crop stage's correspondences / the
        # voted keypoints), depth_search (the fallback ran), depth_search_won (its pose was kept),
        # depth_search_too_small (not run: the instance covers too little of the object); twin_check /
        # twin_check_skipped (near-symmetric twins rendered and compared / told apart by the correspondences)
        self.stage_counts: Counter[str] = Counter()
        self.correspondence = None
        if use_correspondence_stage:
            from pose_ros.objects.correspondence_pose import stage_from_model

            self.correspondence = stage_from_model(self.loaded, device)
        self.last_timing_ms: dict[str, float] = {}
        self._next_instance = 0

    # ------------------------------------------------------------------ helpers
    @property
    def class_names(self) -> list[str]:
        return [o.name for o in self.objects]

    def _resolve_classes(self, enabled: Iterable[str | int] | None) -> set[int]:
        if enabled is None:
            return set(range(1, len(self.objects) + 1))
        return {self.loaded.class_id(e) for e in enabled}

    def _check_inputs(self, rgb: Any, depth_m: Any, camera: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if not isinstance(camera, PinholeCamera):
            raise EstimatorInputError(f"camera must be a PinholeCamera; got {type(camera).__name__} "
                                      "(build one from camera_info K, width, height)")
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise EstimatorInputError(f"rgb must be (H,W,3); got shape {rgb.shape}")
        if rgb.dtype != np.uint8:
            raise EstimatorInputError(f"rgb must be uint8 RGB; got {rgb.dtype} (convert with (img*255).astype(np.uint8))")
        if rgb.shape[:2] != (camera.height, camera.width):
            raise EstimatorInputError(f"rgb is {rgb.shape[1]}x{rgb.shape[0]} but the camera is {camera.width}x{camera.height}; "
                                      "use the camera_info of this image (or camera.scaled())")
        if depth_m is None:
            return rgb, None
        d = np.asarray(depth_m)
        if d.shape != rgb.shape[:2]:
            raise EstimatorInputError(f"depth_m shape {d.shape} must match rgb {rgb.shape[:2]}; register depth to colour first")
        if not np.issubdtype(d.dtype, np.floating):
            raise EstimatorInputError(f"depth_m must be float metres; got {d.dtype} (16UC1 mm: multiply by 0.001)")
        d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
        return rgb, d

    def _letterbox(self, rgb: np.ndarray, depth: np.ndarray | None) -> tuple[np.ndarray, float, tuple[int, int]]:
        import cv2

        from pose_ros.objects.network import RGB_MEAN, RGB_STD, depth_channel

        Wn, Hn = self.cfg.input_width, self.cfg.input_height
        H, W = rgb.shape[:2]
        s = min(Wn / W, Hn / H)
        w, h = max(1, min(Wn, int(round(W * s)))), max(1, min(Hn, int(round(H * s))))
        img = rgb if (w, h) == (W, H) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        x = np.zeros((self.cfg.in_channels, Hn, Wn), np.float32)
        xi = (img.astype(np.float32) / 255.0 - np.asarray(RGB_MEAN, np.float32)) / np.asarray(RGB_STD, np.float32)
        x[:3, :h, :w] = xi.transpose(2, 0, 1)
        if self.cfg.use_depth:
            x[3, :h, :w] = depth_channel(depth, w, h)
        return x, s, (w, h)

    # ------------------------------------------------------------------ main entry
    def infer_maps(self, rgb: np.ndarray, depth: np.ndarray | None) -> NetworkMaps:
        """Letterbox + network forward (validated inputs); the per-pixel maps as numpy."""
        import torch

        from pose_ros.objects.network import split_vector_channels

        t0 = time.perf_counter()
        x, s, content = self._letterbox(rgb, depth)
        t1 = time.perf_counter()
        with torch.no_grad():
            out = self.net(torch.from_numpy(x)[None].to(self.device))
        seg = out["seg"][0].float().cpu().numpy()
        vec = split_vector_channels(out["vec"], self.cfg.num_classes, self.cfg.num_keypoints)[0].float().cpu().numpy()
        ctr = out["centre"][0].float().cpu().numpy()
        t2 = time.perf_counter()
        return NetworkMaps(seg, vec, ctr, s, content, {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3})

    def estimate(self, rgb: np.ndarray, depth_m: np.ndarray | None, camera: PinholeCamera,
                 enabled_classes: Iterable[str | int] | None = None, prev: Sequence[PoseResult] | None = None,
                 ) -> list[PoseResult]:
        """Poses of all enabled objects in one frame; ``prev`` keeps instance ids stable across frames."""
        t_all = time.perf_counter()
        rgb, depth = self._check_inputs(rgb, depth_m, camera)
        classes = self._resolve_classes(enabled_classes)
        maps = self.infer_maps(rgb, depth)
        return self.decode(maps, depth, camera, classes, prev, t_all, rgb=rgb)

    def decode(self, maps: NetworkMaps, depth: np.ndarray | None, camera: PinholeCamera, classes: set[int],
               prev: Sequence[PoseResult] | None = None, t_start: float | None = None,
               rgb: np.ndarray | None = None) -> list[PoseResult]:
        """Everything after the network: instances, voting, PnP, ICP, scoring (``depth`` validated).

        ``rgb`` (the validated colour image) enables the appearance check among near-symmetric poses.
        """
        import cv2

        from pose_ros.objects.network import CENTRE_OFFSET_SCALE_PX

        t_all = t_start if t_start is not None else time.perf_counter()
        self.rng = np.random.default_rng(self.seed)      # same frame -> same result (RANSAC voting)
        timing: dict[str, float] = dict(maps.time_ms)
        seg, vec, ctr, s = maps.seg_logits, maps.vectors, maps.centre, maps.scale
        w_c, h_c = maps.content_size
        t0 = time.perf_counter()
        st = self.cfg.output_stride
        ho, wo = int(np.ceil(h_c / st)), int(np.ceil(w_c / st))
        gv, gu = np.mgrid[0:ho, 0:wo]
        fs = st / s
        v_img = np.clip(np.rint((gv + 0.5) * fs - 0.5).astype(int), 0, camera.height - 1)
        u_img = np.clip(np.rint((gu + 0.5) * fs - 0.5).astype(int), 0, camera.width - 1)
        objectness = None
        if self.depth_objectness and depth is not None and bool(np.any(depth > 0)):
            from pose_ros.objects.depth_objectness import analyse_depth_objectness

            t_obj = time.perf_counter()
            objectness = analyse_depth_objectness(depth, camera, self.objectness_config)
            timing["objectness"] = (time.perf_counter() - t_obj) * 1e3
        class_map = self._class_map(seg[:, :ho, :wo], classes,
                                    None if objectness is None or not objectness.has_support
                                    else objectness.objectness[v_img, u_img])
        self.last_class_map = class_map          # (h, w) output-resolution classes: debug images, false-positive checks
        self.last_seg_logits = seg[:, :ho, :wo]  # the logits it came from (plain-argmax figures beside it)
        votes = np.stack([gu + ctr[0, :ho, :wo] * CENTRE_OFFSET_SCALE_PX,
                          gv + ctr[1, :ho, :wo] * CENTRE_OFFSET_SCALE_PX], -1)
        dmap = None               # depth at the map's pixel centres: parts same-class objects one behind another
        if depth is not None:
            dmap = depth[v_img, u_img]
        instances = self._instances(class_map, votes, dmap, seg[:, :ho, :wo], classes)
        timing["instances"] = (time.perf_counter() - t0) * 1e3 - timing.get("objectness", 0.0)

        has_depth = depth is not None and bool(np.any(depth > 0))
        results: list[PoseResult] = []
        acc = Counter()
        f = st / s                                             # output px -> image px
        kept = []                    # instances that pass the objectness gate: (cls, m_out, mask, stats)
        object_mask = np.zeros((camera.height, camera.width), bool)
        self.last_object_mask = object_mask
        group_of: list[int] = []     # the object instance each class hypothesis belongs to
        merged_of: list[bool] = []
        result_group: list[int] = []
        result_merged: list[bool] = []
        for group, cls, m_out, is_merged in instances:
            spec = self.objects[cls - 1]
            stats = PoseStats(mask_pixels=int(m_out.sum()))
            mask_img = cv2.resize(m_out[:ho, :wo].astype(np.uint8), (int(round(wo * f)), int(round(ho * f))),
                                  interpolation=cv2.INTER_NEAREST)
            mask = np.zeros((camera.height, camera.width), bool)
            hh, ww = min(camera.height, mask_img.shape[0]), min(camera.width, mask_img.shape[1])
            mask[:hh, :ww] = mask_img[:hh, :ww] > 0
            if objectness is not None:
                verdict = objectness.instance(mask, depth, camera, spec.diameter_m, self.objectness_config)
                stats.protruding_fraction = verdict.protruding_fraction
                if not verdict.keep:
                    self.drops[f"objectness:{verdict.reason}"] += 1
                    continue
            kept.append((cls, m_out, mask, stats))
            object_mask |= mask
            group_of.append(group)
            merged_of.append(is_merged)
        crop_pnp, crop_corrs = self._crop_pnp(kept, rgb, depth, camera, acc)
        for n, (cls, m_out, mask, stats) in enumerate(kept):
            spec = self.objects[cls - 1]
            model = self.models.get(cls)
            depth_here = has_depth and model is not None and bool(np.count_nonzero(depth[mask] > 0) >= 20)
            pnp = crop_pnp[n]
            vr = kp_uv = kp_cov = None
            # The first stage's keypoint votes: for PnP when the crop stage gave no pose, for the depth
            # search's hints and the depth-free score; skipped while the crop pose carries (~15 ms each).
            if pnp is None or not pnp.ok or not depth_here:
                vr, kp_uv, kp_cov = self._votes(vec[cls - 1], m_out, f, stats, acc)
            if pnp is not None and pnp.ok:
                stats.correspondences = "crop"
                stats.crop_visible_fraction = crop_corrs[n].visible_fraction
            else:
                tp = time.perf_counter()
                pnp = solve_pnp(spec.keypoints_m, kp_uv, camera, kp_cov, vr.valid, spec.diameter_m, self.pnp_config)
                acc["pnp"] += (time.perf_counter() - tp) * 1e3
                if pnp.ok:
                    self.stage_counts["votes_pnp"] += 1
            stats.pnp_keypoints = pnp.num_keypoints_used
            stats.pnp_inliers = int(len(pnp.inliers))
            stats.reprojection_error_px = pnp.reprojection_error_px
            if not pnp.ok:
                self.drops[f"pnp:{pnp.reason.split(' ')[0]}"] += 1
            inlier_ratio = stats.pnp_inliers / max(1, min(stats.pnp_keypoints, len(spec.keypoints_m))
                                                   if stats.correspondences == "votes" else stats.pnp_keypoints) \
                if pnp.ok else 0.0
            scene = None                 # the instance's ICP scene, prepared once for every refinement
            if self.use_icp and depth_here:
                from pose_ros.objects.icp_scene import prepare_icp_scene

                scene = prepare_icp_scene(depth, camera, mask, self.icp_config)
            best = None                  # (score, T, cov, method, icp result or None, depth agreement)
            if pnp.ok:
                T = pnp.T_cam_obj
                cov = pnp.covariance if pnp.covariance is not None else np.eye(6)
                icp = None
                ti = time.perf_counter()
                if self.use_icp and depth_here:
                    from pose_ros.objects.icp import refine_pose_icp

                    icp = refine_pose_icp(model, T, depth, camera, mask=mask, config=self.icp_config, scene=scene)
                    if icp.applied:
                        T = icp.T_cam_obj
                        cov = fuse_icp_covariance(cov, icp.inlier_rmse_m, spec.diameter_m)
                    else:
                        self.drops[f"icp_not_applied:{_reason_kind(icp.reason)}"] += 1
                acc["icp"] += (time.perf_counter() - ti) * 1e3
                tsc = time.perf_counter()
                sc, ag = self._score(model, T, depth, camera, mask, icp, inlier_ratio, stats.vote_inlier_ratio, depth_here)
                best = (sc, T, cov, "pnp+icp" if icp is not None and icp.applied else "pnp", icp, ag)
                acc["scoring"] += (time.perf_counter() - tsc) * 1e3
            searchable = self.use_icp and self.depth_search and depth_here
            # With a calibration the PnP pose's probability of being right decides on the search (a search run
            # beside poses it trusts replaced right ones more often than wrong ones: docs/training.md); the
            # features computed for it serve the final score too when the pose stays.
            scored, p_right = None, float("nan")
            if searchable and best is not None and self.calibration is not None:
                tc = time.perf_counter()
                scored, p_right = best, self._calibrated_score(cls, model, best, rgb, depth, camera, mask, stats,
                                                               inlier_ratio, crop_corrs[n])
                acc["scoring"] += (time.perf_counter() - tc) * 1e3
            run_search = searchable and (best is None or (p_right < self.search_below_probability if scored is not None
                                                          else best[0] < self.depth_search_below))
            if run_search:
                # A fragment covering a few percent of the object's size cannot pin a pose down (BOP does not
                # count objects under 10% visible); searching such clutter was most of the fallback's runs.
                z = max(instance_depth_reference(depth, mask), 0.1)      # (depth_here: >= 20 valid pixels)
                if _disc_coverage(mask, spec.diameter_m, z, camera) < self.search_min_coverage:
                    run_search = False
                    self.stage_counts["depth_search_too_small"] += 1
            if run_search:
                from pose_ros.objects.depth_search import depth_pose_search

                crop_hints = crop_corrs[n] is not None and len(crop_corrs[n].uv) >= MIN_CORRESPONDENCES
                if vr is None and not crop_hints:
                    vr, kp_uv, kp_cov = self._votes(vec[cls - 1], m_out, f, stats, acc)
                ts = time.perf_counter()
                self.stage_counts["depth_search"] += 1
                stats.depth_searched = True
                extra = [pnp.T_cam_obj[:3, :3]] if pnp.ok else None
                # 2D evidence for the search's hypotheses: the crop stage's correspondences (up to 150
                # points, a median 5-15 mm off on held-out crops, against 30-55 px for the first
                # stage's votes), else those votes; sigma at least 10% of the object's projected size
                floor = 0.1 * camera.fx * spec.diameter_m / z
                kps = None
                if crop_hints:
                    c = crop_corrs[n]
                    kps = (c.X_m, c.uv, np.maximum(c.sigma_px, floor))
                elif vr.valid.any():
                    sig = np.sqrt(np.maximum(np.trace(kp_cov, axis1=1, axis2=2) / 2, floor ** 2))
                    kps = (spec.keypoints_m[vr.valid], kp_uv[vr.valid], sig[vr.valid])
                verify = None
                if self._appearance is not None and rgb is not None:
                    verify = partial(self._verification, model, rgb, depth, mask, camera)
                for T0, icp in depth_pose_search(model, mask, depth, camera, self.icp_config, extra_rotations=extra,
                                                 keypoints=kps, rgb=rgb if self.appearance_check else None,
                                                 verify=verify, icp_scene=scene, config=self.depth_search_config,
                                                 twins=self._near_syms.get(cls) if self._appearance is not None else None):
                    sc, ag = self._score(model, icp.T_cam_obj, depth, camera, mask, icp, None, None, True)
                    if best is None or sc > best[0]:
                        best = (sc, icp.T_cam_obj, icp_covariance(icp.inlier_rmse_m, spec.diameter_m),
                                "depth_search+icp", icp, ag)
                if best is not None and best[3] == "depth_search+icp":
                    self.stage_counts["depth_search_won"] += 1
                acc["depth_search"] += (time.perf_counter() - ts) * 1e3
            if best is None:
                continue
            if (self._appearance is not None and rgb is not None and best[4] is not None and best[4].applied
                    and self._near_syms.get(cls)):
                ta = time.perf_counter()
                if self._twins_told_apart(cls, best[1], crop_corrs[n], camera):
                    self.stage_counts["twin_check_skipped"] += 1
                else:
                    self.stage_counts["twin_check"] += 1
                    best = self._check_appearance(cls, model, best, rgb, depth, camera, mask, stats, scene)
                acc["appearance"] += (time.perf_counter() - ta) * 1e3
            score, T = best[0], best[1]
            self._describe(stats, best)
            if depth_here and (self.calibration is not None or self.collect_features):
                tc = time.perf_counter()
                if scored is not best:
                    p_right = self._calibrated_score(cls, model, best, rgb, depth, camera, mask, stats, inlier_ratio,
                                                     crop_corrs[n])
                stats.uncalibrated_score = float(score)
                if self.calibration is not None:
                    score = p_right
                acc["scoring"] += (time.perf_counter() - tc) * 1e3
            if score < self.score_threshold:
                self.drops["low_score"] += 1
                continue
            results.append(PoseResult(spec.name, cls, spec.obj_id, -1, T, float(score), best[2], stats,
                                      T_pnp_cam_obj=pnp.T_cam_obj if pnp.ok else None, keypoints_uv=kp_uv,
                                      mask=mask))
            result_group.append(group_of[n])
            result_merged.append(merged_of[n])
        results = self._merged_or_fragments(results, result_group, result_merged)
        results = self._suppress_duplicates(results)
        self._assign_ids(results, prev)
        timing.update({k: float(v) for k, v in acc.items()})
        for k in ("voting", "pnp", "crop_network", "crop_pnp", "icp", "depth_search", "appearance", "scoring"):
            timing.setdefault(k, 0.0)
        timing["total"] = (time.perf_counter() - t_all) * 1e3
        for r in results:
            r.stats.time_ms = dict(timing)
        self.last_timing_ms = timing
        return results

    def _votes(self, vec: np.ndarray, m_out: np.ndarray, f: float, stats: PoseStats, acc: Counter,
               ) -> tuple[Any, np.ndarray, np.ndarray]:
        """One instance's voted keypoints (image pixels) and their covariances; the vote inlier ratio
        goes into ``stats``."""
        tv = time.perf_counter()
        vs, us = np.nonzero(m_out)
        v = vec[:, :, vs, us].transpose(2, 0, 1)
        vr = vote_keypoints(np.stack([us, vs], 1).astype(np.float64), v, self.voting_config, self.rng)
        stats.vote_inlier_ratio = float(vr.inlier_ratio[vr.valid].mean()) if vr.valid.any() else 0.0
        acc["voting"] += (time.perf_counter() - tv) * 1e3
        return vr, (vr.keypoints_uv + 0.5) * f - 0.5, vr.covariance * f * f

    def _crop_pnp(self, kept: list, rgb: np.ndarray | None, depth: np.ndarray | None, camera: PinholeCamera,
                  acc: Counter) -> tuple[list[Any], list[Any]]:
        """Second stage for every kept instance in one batch: pose results and correspondences (None
        where it did not run)."""
        from pose_ros.objects.correspondence_pose import correspondences_from_maps, pose_from_correspondences

        out: list[Any] = [None] * len(kept)
        corrs: list[Any] = [None] * len(kept)
        if self.correspondence is None or rgb is None or not kept:
            return out, corrs
        t0 = time.perf_counter()
        stage = self.correspondence
        boxes = stage.boxes([m for _, _, m, _ in kept])
        use = [i for i, b in enumerate(boxes) if b is not None]
        specs = [self.objects[kept[i][0] - 1] for i in use]
        maps = stage.infer(rgb, depth, [boxes[i] for i in use], [kept[i][0] for i in use],
                           [instance_depth_reference(depth, kept[i][2]) for i in use], [s.diameter_m for s in specs])
        t1 = time.perf_counter()
        acc["crop_network"] += (t1 - t0) * 1e3
        for i, spec, m in zip(use, specs, maps):
            corr = correspondences_from_maps(m, boxes[i], spec.keypoints_m[-1], spec.diameter_m, stage.config.pad)
            corrs[i] = corr
            if len(corr.uv) < MIN_CORRESPONDENCES:
                self.drops["crop:too_few_correspondences"] += 1
                continue
            out[i] = pose_from_correspondences(corr, spec.keypoints_m[-1], camera, spec.diameter_m, depth,
                                               self.pnp_config, wide_band=self._twin_free(kept[i][0]))
            if out[i].ok:
                self.stage_counts["crop_pnp"] += 1
        acc["crop_pnp"] += (time.perf_counter() - t1) * 1e3
        return out, corrs

    def _describe(self, stats: PoseStats, best: tuple) -> None:
        """Copy how a pose was found (method, depth agreement, ICP outcome) into its stats."""
        _, _, _, method, icp, agree = best
        stats.method = method
        stats.depth_agreement = float(agree)
        if icp is not None:
            stats.icp_applied = bool(icp.applied)
            stats.icp_fitness = float(icp.fitness)
            stats.icp_rmse_m = float(icp.inlier_rmse_m)
            stats.icp_iterations = int(icp.iterations)
            stats.icp_correction_translation_m = float(icp.correction_translation_m)
            stats.icp_correction_rotation_rad = float(icp.correction_rotation_rad)
            stats.icp_reason = icp.reason

    def _calibrated_score(self, cls: int, model: Any, best: tuple, rgb: np.ndarray | None, depth: np.ndarray,
                          camera: PinholeCamera, mask: np.ndarray, stats: PoseStats, inlier_ratio: float,
                          corr: Any) -> float:
        """Fill ``stats`` (how the pose was found, crop agreement, calibration features) for the pose in
        ``best``; returns its calibrated probability of being right (NaN without a calibration)."""
        self._describe(stats, best)
        if corr is not None:
            stats.crop_agreement = correspondence_agreement(corr, best[1], camera, self.objects[cls - 1].diameter_m,
                                                            self._symmetries(cls))
        stats.features = self._pose_features(model, best[1], rgb, depth, camera, mask, stats, inlier_ratio)
        return self.calibration.score(stats.features) if self.calibration is not None else float("nan")

    def _symmetries(self, cls: int) -> list[np.ndarray]:
        """The object's symmetry transforms (identity first), as the crop stage's training saw them."""
        if cls not in self._symmetry_cache:
            model = self.models.get(cls)
            self._symmetry_cache[cls] = model.symmetry.transforms(72) if model is not None else [np.eye(4)]
        return self._symmetry_cache[cls]

    def _pose_features(self, model: Any, T: np.ndarray, rgb: np.ndarray | None, depth: np.ndarray,
                       camera: PinholeCamera, mask: np.ndarray, stats: PoseStats, inlier_ratio: float) -> dict[str, float]:
        """The evidence ``score_calibration`` weighs for one final pose (render-and-compare included)."""
        feats = {"depth_agreement": stats.depth_agreement, "icp_fitness": stats.icp_fitness if stats.icp_applied else 0.0,
                 "pnp_inlier_ratio": float(inlier_ratio) if stats.method.startswith("pnp") else 0.0,
                 "vote_inlier_ratio": stats.vote_inlier_ratio, "protruding_fraction": stats.protruding_fraction,
                 "log_mask_pixels": float(np.log(max(1, stats.mask_pixels))), "crop_agreement": stats.crop_agreement}
        if rgb is not None and model is not None:
            if self._verifier is None:
                from pose_ros.objects.appearance import AppearanceScorer

                self._verifier = self._appearance or AppearanceScorer()
            v = self._verifier.verify(model, T, rgb, depth, mask, camera)
            feats.update({"silhouette_iou": v.silhouette_iou, "render_depth": v.depth,
                          "colour_correlation": v.colour, "chroma_distance": v.chroma_distance})
        return feats

    def _class_map(self, seg_logits: np.ndarray, classes: set[int], objectness: np.ndarray | None) -> np.ndarray:
        """Per-pixel class (0 = background) over the enabled classes: the network's argmax; a region of it
        that depth does not show standing out of the large planes keeps only the pixels where the network
        beats the background by more than ``background_offset`` (``objects.background_offset``: clutter on
        a table, wall or screen needs that margin, a real object standing on the table keeps the plain
        argmax); and where depth says something stands out, the network gives objects together
        ``fg_prob_on_objectness`` but found nothing near, a new object region (depth-driven proposals)."""
        import cv2

        class_map = seg_logits.argmax(0)
        if self.background_offset:
            from pose_ros.objects.background_offset import object_margin

            unsure = object_margin(seg_logits) <= self.background_offset
            if objectness is not None:
                # Region by region, as the depth gate judges instances: pixel by pixel, the rims and
                # the depth holes of real objects lost their labels (potted meat can, 91 -> 82% of its
                # pixels on the real YCB-V frames; measured).
                n, lab = cv2.connectedComponents((class_map > 0).astype(np.uint8), connectivity=8)
                share = np.bincount(lab.ravel(), objectness.ravel().astype(np.float64), n) / \
                    np.maximum(np.bincount(lab.ravel(), minlength=n), 1)
                standing = share >= self.objectness_config.min_protruding_fraction
                standing[0] = False
                unsure &= ~standing[lab]
            class_map[unsure] = 0
        off = [c for c in range(1, self.cfg.num_classes + 1) if c not in classes]
        class_map[np.isin(class_map, off)] = 0
        thr = self.objectness_config.fg_prob_on_objectness
        if objectness is not None and thr is not None:
            p = np.exp(seg_logits - seg_logits.max(0, keepdims=True))
            p /= p.sum(0, keepdims=True)
            p[off] = 0.0
            fg = p[1:].sum(0)
            boost = objectness & (class_map == 0) & (fg > thr)
            if boost.any():
                # New instances only: a proposal touching an object the network found would just blur
                # that object's mask with unsure pixels (measured: worse masks, worse poses).
                _, lab = cv2.connectedComponents(boost.astype(np.uint8), connectivity=8)
                found = cv2.dilate((class_map > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                new = boost & ~np.isin(lab, np.unique(lab[found & boost]))
                class_map[new] = (p[1:].argmax(0) + 1)[new]
        return class_map

    def _twin_free(self, class_id: int) -> bool:
        """No near-symmetric twins for the appearance check to tell apart (known only with the check on):
        the crop stage's RANSAC may then use its wide band (``pose_from_correspondences``)."""
        return self._appearance is not None and not self._near_syms.get(class_id)

    def has_twins(self, class_id: int) -> bool:
        """True if the appearance check applies to this class (textured, near-symmetric shape)."""
        return self._appearance is not None and bool(self._near_syms.get(class_id))

    def turn_axis(self, class_id: int) -> np.ndarray | None:
        """Model-frame axis a textured near-symmetric model turns about (the mug), else None: depth
        barely sees a small turn about it, so the tracker checks that turn by appearance."""
        from pose_ros.objects.depth_search import model_turn_axis

        if not self.has_twins(class_id):
            return None
        if class_id not in self._turn_axes:
            axis = model_turn_axis(self.models[class_id], self._near_syms[class_id])
            self._turn_axes[class_id] = None if axis is None or axis[1] else axis[0]
        return self._turn_axes[class_id]

    def twin_appearance(self, class_id: int, T_cam_obj: np.ndarray, rgb: np.ndarray, depth: np.ndarray | None,
                        camera: PinholeCamera, mask: np.ndarray | None = None
                        ) -> tuple[list[np.ndarray], np.ndarray] | None:
        """(twins, scores): render-and-compare evidence for the pose (scores[0]) and each near-symmetric
        twin ``T @ twins[k]`` (scores[k+1]); None when the check does not apply (no texture, no twins,
        appearance check off). Without a ``mask`` (tracking has no segmentation) the whole image
        counts: the colour and depth terms carry the evidence, the silhouette term is ~constant.
        """
        from pose_ros.objects.appearance import twin_verifications

        if not self.has_twins(class_id):
            return None
        twins = self._near_syms[class_id]
        m = mask if mask is not None else np.ones((camera.height, camera.width), bool)
        vs = twin_verifications(self._appearance, self.models[class_id], T_cam_obj, twins, rgb, depth, m, camera)
        return twins, np.array([v.combined() for v in vs])

    def appearance_evidence(self, class_id: int, T_cam_obj: np.ndarray, rgb: np.ndarray, depth: np.ndarray,
                            camera: PinholeCamera) -> float | None:
        """Render-and-compare evidence for one pose without a mask (tracking has none; the silhouette
        term is then ~constant, colour and depth carry it); None when the check is off or no mesh."""
        model = self.models.get(class_id)
        if self._appearance is None or model is None:
            return None
        whole = np.ones((camera.height, camera.width), bool)
        return self._verification(model, rgb, depth, whole, camera, T_cam_obj)

    def _verification(self, model: Any, rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray,
                      camera: PinholeCamera, T_cam_obj: np.ndarray) -> float:
        """Combined render-and-compare evidence for one hypothesis (the depth search's ``verify``)."""
        return self._appearance.verify(model, T_cam_obj, rgb, depth, mask, camera).combined()

    def _check_appearance(self, cls: int, model: Any, best: tuple, rgb: np.ndarray, depth: np.ndarray,
                          camera: PinholeCamera, mask: np.ndarray, stats: PoseStats, scene: Any = None) -> tuple:
        """Among the pose and its near-symmetric twins, keep the one the render-and-compare check prefers.

        Every twin is rendered and compared (colour correlation + depth consistency + silhouette
        IoU, ``appearance.Verification``); the ``APPEARANCE_REFINE_TWINS`` best are refined by ICP
        and compared again, and one replaces the pose only if it is better by ``APPEARANCE_MARGIN``
        and its depth score stays within ``APPEARANCE_SCORE_SLACK`` of the original, so a flip never
        trades away clear geometric evidence.
        """
        from pose_ros.objects.appearance import pick_twin
        from pose_ros.objects.icp import refine_pose_icp

        score, T, cov, method, icp, agree = best
        twins = self._near_syms[cls]

        def refine(T_twin: np.ndarray) -> tuple[np.ndarray, Any] | None:
            r = refine_pose_icp(model, T_twin, depth, camera, mask=mask, config=self.icp_config, scene=scene)
            return (r.T_cam_obj, r) if r.applied else None

        choice = pick_twin(self._appearance, model, T, twins, rgb, depth, mask, camera, APPEARANCE_MARGIN,
                           refine=refine, refine_top=APPEARANCE_REFINE_TWINS,
                           rounds=APPEARANCE_TWIN_ROUNDS)
        stats.appearance = choice.pose_verification.colour
        if choice.index < 0:
            return best
        icp1 = choice.refined
        sc1, ag1 = self._score(model, icp1.T_cam_obj, depth, camera, mask, icp1, None, None, True)
        if sc1 < score - APPEARANCE_SCORE_SLACK:
            return best
        stats.appearance = choice.verification.colour
        stats.appearance_flipped = True
        d = self.objects[cls - 1].diameter_m
        cov1 = fuse_icp_covariance(cov, icp1.inlier_rmse_m, d) if method.startswith("pnp") \
            else icp_covariance(icp1.inlier_rmse_m, d)
        return (sc1, icp1.T_cam_obj, cov1, method + "+appearance", icp1, ag1)

    def _twins_told_apart(self, cls: int, T_cam_obj: np.ndarray, corr: Any, camera: PinholeCamera) -> bool:
        """True when the crop stage's correspondences already prefer the pose to each near-symmetric twin by
        ``TWIN_AGREEMENT_MARGIN`` (the stage saw the handle or the print that tells them apart), so the
        rendered twin check (~50 ms an instance) has nothing left to decide."""
        if corr is None or len(corr.uv) < MIN_CORRESPONDENCES:
            return False
        d, syms = self.objects[cls - 1].diameter_m, self._symmetries(cls)
        a_pose = correspondence_agreement(corr, T_cam_obj, camera, d, syms)
        if a_pose < TWIN_AGREEMENT_MIN:
            return False
        a_twin = max(correspondence_agreement(corr, T_cam_obj @ S, camera, d, syms) for S in self._near_syms[cls])
        return a_pose - a_twin >= TWIN_AGREEMENT_MARGIN

    def _score(self, model: Any, T: np.ndarray, depth: np.ndarray | None, camera: PinholeCamera, mask: np.ndarray,
               icp: Any, inlier_ratio: float | None, vote_ratio: float | None, depth_here: bool) -> tuple[float, float]:
        """(score, depth agreement): pose_score with depth evidence; the capped PnP-only score without."""
        if depth_here:
            from pose_ros.objects.scoring import mask_depth_agreement, pose_score

            agree = mask_depth_agreement(model, T, depth, camera, mask=mask)
            fit = float(icp.fitness) if icp is not None and icp.applied else None
            return pose_score(agree, fit, None if inlier_ratio is None else float(np.clip(inlier_ratio, 0, 1))), agree
        return NO_DEPTH_SCORE_CAP * float(inlier_ratio or 0.0) * max(float(vote_ratio or 0.0), 0.0), float("nan")

    def _instances(self, class_map: np.ndarray, votes: np.ndarray, dmap: np.ndarray | None,
                   seg_logits: np.ndarray, classes: set[int]) -> list[tuple[int, int, np.ndarray, bool]]:
        """(object, class hypothesis, mask, is_merged) at the output resolution.

        The network's class-by-class instances (its fragments) always come first. With
        ``class_hypotheses`` > 1, the foreground of all classes is also split into objects, and each
        object whose fragments disagree on the class, or whose pixels give another class a mean
        probability of at least ``min_class_share``, is also tried whole, as its most likely classes.
        Why: on real images the network finds an object far more reliably than it names it (a red
        gelatin box labelled two thirds cracker box, a pudding box mostly gelatin box); split by
        class, such an object is fragments that no mesh fits. ``_merged_or_fragments`` keeps, per
        object, whichever reading scores better, so touching objects that the network names right stay
        apart (merging alone cost 3 points on the demo test set).
        """
        fragments = split_instances(class_map, votes, min_pixels=self.min_instance_pixels, depth_m=dmap)
        if self.class_hypotheses <= 1:
            return [(n, c, m, False) for n, (c, m) in enumerate(fragments)]
        objects = [m for _, m in split_instances((class_map > 0).astype(np.int64), votes,
                                                 min_pixels=self.min_instance_pixels, depth_m=dmap)]
        owner = np.full(class_map.shape, -1, np.int64)
        for n, m in enumerate(objects):
            owner[m] = n
        out: list[tuple[int, int, np.ndarray, bool]] = []
        inside: dict[int, list[int]] = {}
        for c, m in fragments:
            o = owner[m]
            o = o[o >= 0]
            g = int(np.bincount(o).argmax()) if len(o) else len(objects) + len(out)
            out.append((g, c, m, False))
            inside.setdefault(g, []).append(c)
        p = np.exp(seg_logits - seg_logits.max(0, keepdims=True))[1:]
        off = [c - 1 for c in range(1, self.cfg.num_classes + 1) if c not in classes]
        p[off] = 0.0
        p /= np.maximum(p.sum(0, keepdims=True), 1e-12)           # object classes only
        for n, m in enumerate(objects):
            mean = p[:, m].mean(1)
            top = [int(k) + 1 for k in np.argsort(-mean)[:self.class_hypotheses]]
            own = inside.get(n, [])
            whole = [c for i, c in enumerate(top) if i == 0 or mean[c - 1] >= self.min_class_share]
            if len(own) == 1 and whole == own:
                continue                             # one fragment, named the same: nothing new to try
            out.extend((n, c, m, True) for c in whole)
        return out

    def _merged_or_fragments(self, results: list[PoseResult], groups: list[int], merged: list[bool],
                             ) -> list[PoseResult]:
        """Per object: its fragments' poses, plus its best whole-object pose if that outscores them all
        (``_instances``); where the whole pose and a fragment's pose are the same object,
        ``_suppress_duplicates`` keeps the better one. Measured: replacing the fragments by the whole
        reading instead lost a right box touching a mug on the demo test set."""
        by_group: dict[int, tuple[list[PoseResult], list[PoseResult]]] = {}
        for r, g, mg in zip(results, groups, merged):
            by_group.setdefault(g, ([], []))[1 if mg else 0].append(r)
        out: list[PoseResult] = []
        for frag, whole in by_group.values():
            out.extend(frag)
            best = max(whole, key=lambda r: r.score) if whole else None
            if best is not None and (not frag or best.score > max(r.score for r in frag)):
                out.append(best)
                self.drops["other_class_hypothesis"] += len(whole) - 1
            else:
                self.drops["other_class_hypothesis"] += len(whole)
        return out

    def _suppress_duplicates(self, results: list[PoseResult]) -> list[PoseResult]:
        """Centres closer than a third of the (smaller) diameter: keep the higher score. Whatever the
        classes: two solid objects cannot share that space, so one of them is a second reading
        (another class hypothesis, another fragment) of the same object."""
        results = sorted(results, key=lambda r: -r.score)
        keep: list[PoseResult] = []
        for r in results:
            d = self.objects[r.class_id - 1].diameter_m
            if any(np.linalg.norm(k.T_cam_obj[:3, 3] - r.T_cam_obj[:3, 3])
                   < min(d, self.objects[k.class_id - 1].diameter_m) / 3 for k in keep):
                self.drops["duplicate"] += 1
                continue
            keep.append(r)
        return keep

    def _assign_ids(self, results: list[PoseResult], prev: Sequence[PoseResult] | None) -> None:
        """Inherit ids from the nearest previous result of the same class (within half a diameter)."""
        used: set[int] = set()
        for r in results:
            best, best_d = None, np.inf
            for p in prev or ():
                if p.class_id != r.class_id or p.instance_id in used or p.instance_id < 0:
                    continue
                d = float(np.linalg.norm(p.T_cam_obj[:3, 3] - r.T_cam_obj[:3, 3]))
                if d < best_d:
                    best, best_d = p, d
            if best is not None and best_d < 0.5 * self.objects[r.class_id - 1].diameter_m:
                r.instance_id = best.instance_id
                used.add(best.instance_id)
        taken = {p.instance_id for p in prev or ()} | used
        for r in results:
            if r.instance_id < 0:
                while self._next_instance in taken:
                    self._next_instance += 1
                r.instance_id = self._next_instance
                taken.add(self._next_instance)
                self._next_instance += 1
