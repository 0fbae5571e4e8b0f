"""How much the depth image supports an object pose, and one confidence number per pose.

Why depth agreement: the keypoint network and PnP can be confidently wrong (a flipped box, a
neighbour's keypoints). The depth image is independent evidence: at a correct pose the visible
model surface coincides with the measured surface; at a wrong one we see *through* where the
object should be (free-space violation) or the surface sits at a different depth. Points hidden
behind something closer (occlusion) are weak evidence either way and are down-weighted, not
counted as errors, so an occluded but correct pose still scores well.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pose_ros.objects.visibility import visible_model_points

__all__ = ["DepthAgreement", "depth_agreement", "mask_depth_agreement", "pose_score", "ScoreWeights",
           "OCCLUDED_WEIGHT"]

# Weight of an occluded model point in the agreement denominator: small, so occlusion lowers
# confidence a little (less is seen) but a pose is never rejected just for being occluded.
OCCLUDED_WEIGHT = 0.25


@dataclass
class DepthAgreement:
    """Counts of visible model points by what the depth image says about them."""

    agree: int          # |depth - model z| <= tolerance (and inside the mask, if any)
    free_space: int     # depth further than the model surface: we see through the object
    occluded: int       # depth closer than the model surface: something in front
    outside_mask: int   # projects outside the given instance mask (and not occluded)
    no_depth: int       # invalid depth at the pixel: no evidence
    visible: int        # visible model points considered

    @property
    def score(self) -> float:
        """agree / (agree + free_space + outside_mask + OCCLUDED_WEIGHT * occluded), in [0, 1]."""
        den = self.agree + self.free_space + self.outside_mask + OCCLUDED_WEIGHT * self.occluded
        return float(self.agree / den) if den > 0 else 0.0


def _check_inputs(depth_m, camera, mask):
    depth = np.asarray(depth_m)
    if depth.shape != (camera.height, camera.width):
        raise ValueError(f"depth_m shape {depth.shape} does not match camera (H,W)=({camera.height},{camera.width}); "
                         "register/resize the depth to the colour camera")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != depth.shape:
            raise ValueError(f"mask shape {mask.shape} does not match depth shape {depth.shape}")
    return depth, mask


def depth_agreement(model, T_cam_obj: np.ndarray, depth_m: np.ndarray, camera, mask: np.ndarray | None = None,
                    tolerance_m: float = 0.01) -> DepthAgreement:
    """Classify the model points visible at ``T_cam_obj`` against ``depth_m`` (see module doc)."""
    if not tolerance_m > 0:
        raise ValueError(f"tolerance_m must be > 0; got {tolerance_m}")
    depth, mask = _check_inputs(depth_m, camera, mask)
    vis = visible_model_points(model, T_cam_obj, camera)
    n = int(vis.index.size)
    if n == 0:
        return DepthAgreement(0, 0, 0, 0, 0, 0)
    u = np.clip(np.rint(vis.uv[:, 0]).astype(np.int64), 0, camera.width - 1)
    v = np.clip(np.rint(vis.uv[:, 1]).astype(np.int64), 0, camera.height - 1)
    d = depth[v, u].astype(np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0)
        r = d - vis.points_cam_m[:, 2]
        occluded = valid & (r < -tolerance_m)
        near = valid & (np.abs(r) <= tolerance_m)
        behind = valid & (r > tolerance_m)
    if mask is not None:
        inside = mask[v, u]
        outside = ~inside & ~occluded
        agree = near & inside
        free = behind & inside
    else:
        outside = np.zeros(n, bool)
        agree = near
        free = behind
    return DepthAgreement(agree=int(agree.sum()), free_space=int(free.sum()), occluded=int(occluded.sum()),
                          outside_mask=int(outside.sum()), no_depth=int((~valid).sum()), visible=n)


def mask_depth_agreement(model, T_cam_obj: np.ndarray, depth_m: np.ndarray, camera,
                         mask: np.ndarray | None = None, tolerance_m: float = 0.01) -> float:
    """Fraction in [0,1] of the visible model surface that the depth (and mask) confirm.

    0 when nothing is visible or no depth covers the object. Raises ``ValueError`` only for
    shape mismatches (a wiring bug, not bad sensor data).
    """
    return depth_agreement(model, T_cam_obj, depth_m, camera, mask, tolerance_m).score


@dataclass
class ScoreWeights:
    """Logistic model turning evidence into a probability that the pose is correct.

    p = sigmoid(bias + w_agree * agreement + w_fit * fitness + w_pnp * (pnp_ratio - pnp_mean)),
    a missing fitness taking ``fit_mean`` and a missing PnP ratio ``pnp_mean`` (a neutral term).

    Defaults fitted by ``pose-ros bench-refine --calibrate`` (logistic regression, label =
    ADD(-S) < 0.1 d, 2448 ICP outputs on the real YCB-V frames from perturbations of 1-10 cm and
    5-90 deg, GT visible masks; log-loss 0.106, Brier 0.023). The fit gives ICP fitness almost
    no weight once depth agreement is known, so agreement carries the score. ``w_pnp`` is a
    prior, not fitted (that benchmark has no PnP); it is centred so it only moves the score when
    the inlier ratio differs from typical.
    """

    bias: float = -3.389
    w_agree: float = 9.905
    w_fit: float = 0.041
    w_pnp: float = 2.0
    fit_mean: float = 0.743    # ICP fitness assumed when ICP did not run (calibration-set mean)
    pnp_mean: float = 0.75     # typical PnP inlier ratio (prior)


DEFAULT_WEIGHTS = ScoreWeights()


def pose_score(agreement: float, icp_fitness: float | None = None, pnp_inlier_ratio: float | None = None,
               weights: ScoreWeights = DEFAULT_WEIGHTS) -> float:
    """Calibrated confidence in [0,1] that a pose is correct (ADD(-S) < 0.1 d).

    ``agreement`` from :func:`mask_depth_agreement` (tolerance 1 cm, with the instance mask when
    there is one: that is how it was calibrated), ``icp_fitness`` from ``IcpResult.fitness`` when
    ICP was applied (else None), ``pnp_inlier_ratio`` = RANSAC inliers / keypoints (None without
    PnP). Inputs outside [0,1] or non-finite raise ``ValueError``.
    """
    vals = {}
    for name, val in (("agreement", agreement), ("icp_fitness", icp_fitness), ("pnp_inlier_ratio", pnp_inlier_ratio)):
        if val is None:
            if name == "agreement":
                raise ValueError("agreement is required; compute it with mask_depth_agreement()")
            continue
        x = float(val)
        if not (math.isfinite(x) and -1e-9 <= x <= 1.0 + 1e-9):
            raise ValueError(f"{name} must be in [0,1]; got {val}")
        vals[name] = x
    fit = vals.get("icp_fitness", weights.fit_mean)
    pnp = vals.get("pnp_inlier_ratio", weights.pnp_mean)
    z = weights.bias + weights.w_agree * vals["agreement"] + weights.w_fit * fit + weights.w_pnp * (pnp - weights.pnp_mean)
    return float(1.0 / (1.0 + math.exp(-z)))
