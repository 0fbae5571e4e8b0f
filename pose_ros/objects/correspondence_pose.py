"""Second stage at run time: crops of one frame's instances -> one forward pass -> a pose per instance.

Why one pass: the crops of a frame all have the same size, so every detected instance costs one row
of a batch instead of a network call. Each crop's confident object pixels become correspondences
(image pixel, model point), the most certain ``max_points`` of them. With depth under them, the pixels
are back-projected and ``rigid_ransac`` solves 3D-3D (errors in metres); without depth ``pnp.solve_pnp``
(EPnP in RANSAC, then LM weighted by the predicted uncertainty, with the plausibility checks of the
keypoint path). The uncertainty is the network's Laplace scale of the model-coordinate error, turned
into pixels with the object's projected size. A pose that explains too few of the correspondences is
refused, so an untrained or confused stage hands the instance to the fallback instead of a guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.objects.crop_geometry import CropBox, crop_box_from_mask, crop_image, crop_to_image_px
from pose_ros.objects.pnp import PnpConfig, PnpResult, check_plausible, solve_pnp

MIN_INLIER_SHARE = 0.35      # of a crop's correspondences a pose must explain

__all__ = ["MIN_CORRESPONDENCES", "CorrespondenceStage", "Correspondences", "CropMaps", "correspondences_from_maps", "correspondence_agreement",
           "pnp_from_correspondences", "pose_from_correspondences", "instance_depth_reference"]


@dataclass
class CropMaps:
    """The network's maps for one crop (numpy, output resolution)."""

    mask_prob: np.ndarray         # (s,s)
    xyz: np.ndarray               # (3,s,s) (X - centre) / diameter
    log_sigma: np.ndarray         # (s,s)


@dataclass
class Correspondences:
    uv: np.ndarray                # (N,2) image pixels
    X_m: np.ndarray               # (N,3) model frame, metres
    sigma_px: np.ndarray          # (N,) isotropic std of the image-space error
    visible_fraction: float       # of the crop's output pixels the network calls object
    cell_px: float                # image pixels per output pixel


MIN_CORRESPONDENCES = 8       # fewer confident crop pixels and the stage gives no pose


def instance_depth_reference(depth_m: np.ndarray | None, mask: np.ndarray) -> float:
    """Median valid depth under the instance mask (0 without depth): the crop's depth origin."""
    if depth_m is None:
        return 0.0
    d = depth_m[mask]
    d = d[d > 0]
    return float(np.median(d)) if len(d) >= 10 else 0.0


def correspondences_from_maps(maps: CropMaps, box: CropBox, centre_m: np.ndarray, diameter_m: float,
                              pad: float, max_points: int = 150, min_prob: float = 0.5) -> Correspondences:
    """Confident object pixels of one crop as image-pixel <-> model-point pairs, most certain first."""
    s = maps.mask_prob.shape[0]
    vs, us = np.nonzero(maps.mask_prob > min_prob)
    vis = len(us) / float(s * s)
    if len(us) == 0:
        return Correspondences(np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0), 0.0, box.side_px / s)
    ls = maps.log_sigma[vs, us]
    order = np.argsort(ls)[:max_points]
    vs, us, ls = vs[order], us[order], ls[order]
    uv = crop_to_image_px(np.stack([us, vs], 1).astype(np.float64), box, s)
    X = maps.xyz[:, vs, us].T.astype(np.float64) * diameter_m + centre_m[None, :]
    size_px = box.side_px / pad                                   # ~ projected object size
    cell_px = box.side_px / s
    sigma = np.exp(ls.astype(np.float64)) * size_px + 0.5 * cell_px
    return Correspondences(uv, X, sigma, vis, cell_px)


def correspondence_agreement(c: Correspondences, T_cam_obj: np.ndarray, camera: PinholeCamera, diameter_m: float,
                             symmetries: Sequence[np.ndarray] = ()) -> float:
    """Share of the crop stage's correspondences that a pose reprojects within 0.1 diameter (the
    ADD(-S) tolerance, in pixels at the object's depth), best over the object's symmetries (the stage
    learned canonical coordinates). Evidence for a final pose however it was found (crop PnP, depth
    search): the stage sees the crop and its class, so a wrong class or a wrong turn agrees with few."""
    if len(c.uv) == 0:
        return 0.0
    z = float(T_cam_obj[2, 3])
    if z <= 0:
        return 0.0
    tol_px = max(2.0, 0.1 * diameter_m * camera.fx / z)
    Ss = np.asarray(list(symmetries) or [np.eye(4)])                       # (n,4,4), identity included
    X = np.einsum("nij,kj->nki", Ss[:, :3, :3], c.X_m) + Ss[:, None, :3, 3]  # (n,N,3) symmetric readings
    uv = camera.project((X @ T_cam_obj[:3, :3].T + T_cam_obj[:3, 3]).reshape(-1, 3)).reshape(len(Ss), -1, 2)
    err = np.linalg.norm(uv - c.uv[None], axis=2)                            # NaN behind the camera
    return float((np.nan_to_num(err, nan=np.inf) < tol_px).mean(1).max())


def pnp_from_correspondences(c: Correspondences, centre_m: np.ndarray, camera: PinholeCamera, diameter_m: float,
                             config: PnpConfig | None = None, min_inlier_share: float = MIN_INLIER_SHARE) -> PnpResult:
    """PnP-RANSAC + weighted LM; the RANSAC threshold scales with the crop's pixel size; rejected
    below ``min_inlier_share`` inliers (see ``pose_from_correspondences``)."""
    cfg = config or PnpConfig()
    cell_px = c.cell_px
    cfg = PnpConfig(**{**cfg.__dict__, "ransac_reprojection_px": max(cfg.ransac_reprojection_px, 1.5 * cell_px),
                       "max_mean_reprojection_px": max(cfg.max_mean_reprojection_px, 2.0 * cell_px),
                       "max_keypoint_std_px": max(cfg.max_keypoint_std_px, 8 * cell_px),
                       "min_inliers": max(cfg.min_inliers, 8), "ransac_iterations": max(cfg.ransac_iterations, 150)})
    n = len(c.uv)
    X = np.vstack([c.X_m, centre_m[None]])                       # centre last: solve_pnp's plausibility check
    uv = np.vstack([c.uv, np.full((1, 2), np.nan)])
    cov = np.zeros((n + 1, 2, 2))
    cov[:n] = np.eye(2)[None] * (c.sigma_px ** 2)[:, None, None]
    cov[n] = np.eye(2)
    valid = np.r_[np.ones(n, bool), False]
    res = solve_pnp(X, uv, camera, cov, valid, diameter_m, cfg)
    if res.ok and len(res.inliers) < min_inlier_share * n:
        res.ok, res.reason = False, f"too_few_inliers ({len(res.inliers)} of {n} correspondences)"
    return res


def pose_from_correspondences(c: Correspondences, centre_m: np.ndarray, camera: PinholeCamera, diameter_m: float,
                              depth_m: np.ndarray | None, config: PnpConfig | None = None,
                              min_depth_points: int = 12, min_inlier_share: float = MIN_INLIER_SHARE,
                              wide_band: bool = False) -> PnpResult:
    """With depth under enough correspondences: 3D-3D RANSAC (``rigid_ransac``, errors in metres);
    otherwise PnP. Either way a ``PnpResult`` (the estimator's pose-hypothesis record). A pose that
    explains less than ``min_inlier_share`` of the correspondences is rejected: random coordinates
    (an untrained or confused network) still put 8-20 of 150 points within a centimetre.

    ``wide_band``: the RANSAC band is at least the stage's own median predicted error (sigma in metres at
    the instance's depth), so a noisy stage's pose averages its many points instead of fitting the
    luckiest few (LM-O test set, through the pipeline: 39.4 -> 45.7% before ICP). For objects with
    near-symmetric twins the caller keeps the narrow band: the few points that tell the twins apart
    decide there, and a wide fit settled between readings (two right demo poses turned wrong). The
    returned inliers are those within the narrow band either way (their share is a score feature)."""
    from pose_ros.objects.rigid_ransac import rigid_ransac

    if depth_m is not None and len(c.uv) >= min_depth_points:
        ui = np.clip(np.rint(c.uv[:, 0]).astype(int), 0, camera.width - 1)
        vi = np.clip(np.rint(c.uv[:, 1]).astype(int), 0, camera.height - 1)
        z = depth_m[vi, ui].astype(np.float64)
        ok = z > 0
        if ok.sum() >= min_depth_points:
            P = camera.backproject(c.uv[ok], z[ok])
            cell_m = c.cell_px * float(np.median(z[ok])) / camera.fx
            thr = max(0.01, 0.08 * diameter_m, 1.5 * cell_m)
            band = max(thr, float(np.median(c.sigma_px[ok] * z[ok])) / camera.fx) if wide_band else thr   # metres
            r = rigid_ransac(c.X_m[ok], P, band, weights=1.0 / c.sigma_px[ok],
                             min_inliers=max(8, int(np.ceil(min_inlier_share * ok.sum()))))
            if r.ok:
                from pose_ros.objects.covariance import icp_covariance

                inliers = r.inliers
                if band > thr:           # inliers at the narrow band: their share is a calibrated-score feature
                    resid = np.linalg.norm(c.X_m[ok] @ r.T_cam_obj[:3, :3].T + r.T_cam_obj[:3, 3] - P, axis=1)
                    inliers = np.nonzero(resid < thr)[0]
                res = PnpResult(True, "ok", r.T_cam_obj, np.nonzero(ok)[0][inliers],
                                float("nan"), icp_covariance(r.rmse_m, diameter_m), int(ok.sum()))
                reason = check_plausible(r.T_cam_obj, camera, np.vstack([c.X_m, centre_m[None]]), diameter_m,
                                         config or PnpConfig())
                if reason:
                    res.ok, res.reason = False, reason
                return res
    return pnp_from_correspondences(c, centre_m, camera, diameter_m, config)


class CorrespondenceStage:
    """The crop network of a model file, ready to run on the instances of a frame."""

    def __init__(self, raw_entry: dict, device: str = "cpu") -> None:
        from pose_ros.objects.batchnorm_folding import fold_batch_norms
        from pose_ros.objects.correspondence_net import CorrespondenceConfig, CorrespondenceNet

        self.config = CorrespondenceConfig.from_dict(raw_entry["config"])
        net = CorrespondenceNet(self.config)
        net.load_state_dict(raw_entry["state_dict"])
        self.net = fold_batch_norms(net).to(device)             # inference only: BatchNorms folded
        self.device = device
        self.training_info = dict(raw_entry.get("training", {}))

    def boxes(self, masks: Sequence[np.ndarray]) -> list[CropBox | None]:
        return [crop_box_from_mask(m, self.config.pad) for m in masks]

    def infer(self, rgb: np.ndarray, depth_m: np.ndarray | None, boxes: Sequence[CropBox], classes: Sequence[int],
              z_refs: Sequence[float], diameters: Sequence[float]) -> list[CropMaps]:
        """One batched forward pass over the crops (``classes`` 1-based, as the estimator's)."""
        import torch

        from pose_ros.objects.correspondence_net import crop_input

        if not boxes:
            return []
        S = self.config.crop_size
        xs = []
        for box, z, d in zip(boxes, z_refs, diameters):
            rc = crop_image(rgb, box, S)
            dc = crop_image(depth_m, box, S, nearest=True) if depth_m is not None else None
            xs.append(crop_input(rc, dc, z, d))
        with torch.no_grad():
            out = self.net(torch.from_numpy(np.stack(xs)).to(self.device),
                           torch.as_tensor([c - 1 for c in classes], device=self.device))
        prob = torch.sigmoid(out["mask"]).cpu().numpy()
        xyz = out["xyz"].cpu().numpy()
        ls = out["log_sigma"].cpu().numpy()
        return [CropMaps(prob[i], xyz[i], ls[i]) for i in range(len(boxes))]


def stage_from_model(loaded: Any, device: str = "cpu") -> CorrespondenceStage | None:
    """The model file's correspondence stage, or None for a file trained without one."""
    entry = loaded.raw.get("correspondence")
    return CorrespondenceStage(entry, device) if entry else None
