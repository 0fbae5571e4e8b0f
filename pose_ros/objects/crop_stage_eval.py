"""The crop correspondence stage alone on annotated frames: crops from the true visible masks.

Why: the full pipeline's figures mix the detector (which pixels, which class) with the crop stage.
Cut from each instance's *true* visible mask, the crop is what a perfect detector would hand the
stage, so what is measured is the stage's own transfer to these frames (real ones above all, the
stage being trained on renders only): how much of its correspondences the true pose explains
(``correspondence_pose.correspondence_agreement``), how often its correspondences alone pose the
object before ICP (3D-3D RANSAC on the frame's depth, PnP without it), and whether asking for
another object's class is refused (the training shows it such crops with an empty target).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from pose_ros.eval.bop_io import BopFrame
from pose_ros.eval.pose_metrics import add_s_error
from pose_ros.objects.correspondence_pose import (MIN_CORRESPONDENCES, CorrespondenceStage, correspondence_agreement,
                                                  correspondences_from_maps, instance_depth_reference,
                                                  pose_from_correspondences)

__all__ = ["CropStageRecord", "evaluate_crop_stage", "summarise_crop_stage"]

@dataclass
class CropStageRecord:
    """One annotated instance."""

    obj_id: int
    visible_px: int
    correspondences: int            # with its true class
    agreement: float                # share of them the true pose reprojects within 0.1 d
    agreement_shifted: float        # the same for the true pose moved 0.3 d sideways (no information: ~0)
    posed: bool                     # the correspondences alone give a pose within 0.1 d ADD(-S)
    wrong_class_correspondences: int  # asked as another (random) object of the model


def evaluate_crop_stage(stage: CorrespondenceStage, specs: Sequence[Any], models: Sequence[Any],
                        frames: Iterable[BopFrame], min_visible_px: int = 300, seed: int = 0) -> list[CropStageRecord]:
    """Records for every instance of ``frames`` whose object the model knows and whose visible mask
    has at least ``min_visible_px`` pixels; ``specs``/``models`` in class order (class = index + 1)."""
    cls_of = {int(s.obj_id): i + 1 for i, s in enumerate(specs)}
    syms = [m.symmetry.transforms(72) for m in models]
    rng = np.random.default_rng(seed)
    out: list[CropStageRecord] = []
    for fr in frames:
        for g in fr.gt:
            c = cls_of.get(int(g.obj_id))
            m = g.mask_visib
            if c is None or m is None or int(m.sum()) < min_visible_px:
                continue
            box = stage.boxes([m])[0]
            if box is None:
                continue
            spec = specs[c - 1]
            wrong = int(rng.choice([k for k in range(1, len(specs) + 1) if k != c])) if len(specs) > 1 else c
            z_ref = instance_depth_reference(fr.depth_m, m)
            maps = stage.infer(fr.rgb, fr.depth_m, [box, box], [c, wrong], [z_ref, z_ref],
                               [spec.diameter_m, specs[wrong - 1].diameter_m])
            centre = spec.keypoints_m[-1]
            corr = correspondences_from_maps(maps[0], box, centre, spec.diameter_m, stage.config.pad)
            wrong_corr = correspondences_from_maps(maps[1], box, specs[wrong - 1].keypoints_m[-1],
                                                   specs[wrong - 1].diameter_m, stage.config.pad)
            shifted = g.T_cam_obj.copy()
            shifted[0, 3] += 0.3 * spec.diameter_m
            posed = False
            if len(corr.uv) >= MIN_CORRESPONDENCES:
                res = pose_from_correspondences(corr, centre, fr.camera, spec.diameter_m, fr.depth_m)
                posed = bool(res.ok) and add_s_error(models[c - 1], res.T_cam_obj, g.T_cam_obj) < 0.1 * spec.diameter_m
            out.append(CropStageRecord(
                obj_id=int(g.obj_id), visible_px=int(m.sum()), correspondences=len(corr.uv),
                agreement=correspondence_agreement(corr, g.T_cam_obj, fr.camera, spec.diameter_m, syms[c - 1]),
                agreement_shifted=correspondence_agreement(corr, shifted, fr.camera, spec.diameter_m, syms[c - 1]),
                posed=posed, wrong_class_correspondences=len(wrong_corr.uv) if wrong != c else -1))
    return out


def summarise_crop_stage(records: Sequence[CropStageRecord]) -> dict[str, Any]:
    """Overall and per-object figures (medians of agreement, shares in [0, 1])."""
    def figures(rs: Sequence[CropStageRecord]) -> dict[str, float]:
        wrong = [r.wrong_class_correspondences for r in rs if r.wrong_class_correspondences >= 0]
        return {"instances": len(rs),
                "agreement_median": float(np.median([r.agreement for r in rs])),
                "agreement_shifted_median": float(np.median([r.agreement_shifted for r in rs])),
                "posed_before_icp": float(np.mean([r.posed for r in rs])),
                "no_pose_share": float(np.mean([r.correspondences < MIN_CORRESPONDENCES for r in rs])),
                "wrong_class_refused": float(np.mean([w < MIN_CORRESPONDENCES for w in wrong])) if wrong else float("nan")}

    if not records:
        return {"all": {"instances": 0}, "per_object": {}}
    ids = sorted({r.obj_id for r in records})
    return {"all": figures(records), "per_object": {i: figures([r for r in records if r.obj_id == i]) for i in ids}}
