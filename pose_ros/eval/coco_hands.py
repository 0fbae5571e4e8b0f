"""Hand keypoints on COCO person photos: how often a hand is found at an annotated visible wrist,
and how well its wrist agrees with the annotation.

COCO person annotations have no hand keypoints (COCO-WholeBody's are not in ../shared/data), so
the only ground truth here for the 21-keypoint hand is its wrist: the hand model's wrist (HAND21
index 0) against the annotated COCO wrist, as a pixel distance and as COCO's OKS term (wrist sigma,
person area), next to the body model's wrist for the same hands. The other 20 keypoints are not
measured by this. Protocol as `coco_keypoints`: each annotated person on its own crop (GT box
enlarged by `margin`), body backend first, then the hand backend at that body's wrists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pose_ros.eval.coco_keypoints import CocoDataError, detect_in_box, enlarged_crop
from pose_ros.human.conventions import BLAZEPOSE33_NAMES, COCO17_NAMES, COCO17_SIGMAS, HAND_SIDES
from pose_ros.human.hand_keypoints import HandBackend
from pose_ros.human.keypoint_backend import KeypointBackend


@dataclass
class HandWristReport:
    visible_wrists: int = 0            # annotated visible (v=2) wrists of the people run
    body_found: int = 0                # ... of people the body backend found
    hands_found: int = 0               # ... with a hand of that side found
    hand_error_px: list[float] = field(default_factory=list)   # per found hand: hand wrist vs GT
    body_error_px: list[float] = field(default_factory=list)   # same hands: body wrist vs GT
    hand_oks: list[float] = field(default_factory=list)
    body_oks: list[float] = field(default_factory=list)
    handedness_agrees: int = 0         # found hands whose own classifier says their side (p > 0.5)


def _oks_term(d_px: float, area: float, sigma: float) -> float:
    return float(np.exp(-d_px ** 2 / (2.0 * area * (2.0 * sigma) ** 2)))


def evaluate_hand_wrists(coco_gt, images_dir: Path, body: KeypointBackend, hands: HandBackend,
                         margin: float = 0.25, limit: int | None = None) -> HandWristReport:
    """Run body then hands on every annotated person crop with a visible wrist; score the wrists."""
    import cv2

    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise CocoDataError(f"image folder {images_dir} not found: pass --images <dir with the jpgs>")
    img_ids = sorted(coco_gt.getImgIds())[:limit]
    report = HandWristReport()
    for img_id in img_ids:
        anns = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[img_id], catIds=[1], iscrowd=False))
                if a.get("num_keypoints", 0) > 0]
        wrists = []
        for a in anns:
            kps = np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)
            vis = {s: kps[COCO17_NAMES.index(f"{s}_wrist")] for s in HAND_SIDES}
            vis = {s: k[:2] for s, k in vis.items() if k[2] == 2}
            if vis:
                wrists.append((a, vis))
        if not wrists:
            continue
        info = coco_gt.loadImgs([img_id])[0]
        bgr = cv2.imread(str(images_dir / info["file_name"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CocoDataError(f"cannot read image {images_dir / info['file_name']}: check --images")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        for ann, gt in wrists:
            report.visible_wrists += len(gt)
            det = detect_in_box(body, rgb, ann["bbox"], margin)
            if det is None:
                continue
            report.body_found += len(gt)
            x0, y0, x1, y1 = enlarged_crop(ann["bbox"], rgb.shape[1], rgb.shape[0], margin)
            offset = np.array([x0, y0], dtype=np.float64)
            found = hands.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1]), det.uv_px - offset, det.confidence)
            sigma = float(COCO17_SIGMAS[COCO17_NAMES.index("left_wrist")])
            for hand in found:
                if hand.side not in gt:
                    continue
                report.hands_found += 1
                d_hand = float(np.linalg.norm(hand.uv_px[0] + offset - gt[hand.side]))
                d_body = float(np.linalg.norm(det.uv_px[BLAZEPOSE33_NAMES.index(f"{hand.side}_wrist")] - gt[hand.side]))
                report.hand_error_px.append(d_hand)
                report.body_error_px.append(d_body)
                report.hand_oks.append(_oks_term(d_hand, ann["area"], sigma))
                report.body_oks.append(_oks_term(d_body, ann["area"], sigma))
                report.handedness_agrees += int(hand.handedness_score > 0.5)
    return report


def format_hand_report(r: HandWristReport, title: str = "") -> str:
    """Plain-text summary of a HandWristReport."""
    def med(v: list[float]) -> str:
        return f"{np.median(v):.1f}" if v else "-"

    def mean(v: list[float]) -> str:
        return f"{np.mean(v):.3f}" if v else "-"

    lines = [f"== hand wrists {title}".rstrip(),
             f"visible annotated wrists {r.visible_wrists}, of people the body model found {r.body_found}, "
             f"hand found {r.hands_found} ({100.0 * r.hands_found / max(r.body_found, 1):.0f}%), its own "
             f"handedness agreeing {r.handedness_agrees}/{r.hands_found}",
             f"  {'wrist of the found hands vs GT':<32} {'median px':>9} {'mean OKS':>9}",
             f"  {'hand model (HAND21 wrist)':<32} {med(r.hand_error_px):>9} {mean(r.hand_oks):>9}",
             f"  {'body model (BlazePose wrist)':<32} {med(r.body_error_px):>9} {mean(r.body_oks):>9}"]
    return "\n".join(lines)
