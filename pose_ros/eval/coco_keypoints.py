"""COCO person-keypoint evaluation of a `KeypointBackend` with ground-truth person boxes.

MediaPipe Pose finds one person per image, so each annotated person is evaluated on its own
crop: the GT box enlarged by `margin` of its size on every side (BlazePose's detector wants some
context around the body), clipped to the image. This is a top-down protocol with oracle boxes:
the AP it gives measures keypoint quality, not person detection. Annotations with no labelled
keypoints (num_keypoints == 0) are ignored by COCOeval anyway and are not run.

Metrics: OKS AP/AR from pycocotools COCOeval (iouType 'keypoints'), plus per-keypoint accuracy
on the matched pairs: mean OKS term exp(-d^2 / (2 s^2 k^2)) per keypoint (s^2 = GT area,
k = 2 sigma) over GT-labelled keypoints, and the share of those with a term >= 0.5. A person the
backend misses counts as 0 for all its labelled keypoints.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from pose_ros.human.conventions import COCO17_NAMES, COCO17_SIGMAS, blazepose_to_coco17
from pose_ros.human.keypoint_backend import Detection2D, KeypointBackend

AP_NAMES = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75", "AR_medium", "AR_large")


class CocoDataError(ValueError):
    """Missing or malformed COCO annotation / image files."""


def enlarged_crop(bbox_xywh: Iterable[float], image_w: int, image_h: int,
                  margin: float = 0.25) -> tuple[int, int, int, int]:
    """Integer crop (x0, y0, x1, y1), exclusive end, of a COCO box grown by margin * size per side."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    if not (w > 0 and h > 0):
        raise CocoDataError(f"person box {bbox_xywh} has no area: fix the annotation or skip it")
    x0 = int(np.floor(max(0.0, x - margin * w)))
    y0 = int(np.floor(max(0.0, y - margin * h)))
    x1 = int(np.ceil(min(float(image_w), x + w + margin * w)))
    y1 = int(np.ceil(min(float(image_h), y + h + margin * h)))
    return x0, y0, x1, y1


def detect_in_box(backend: KeypointBackend, rgb: np.ndarray, bbox_xywh: Iterable[float],
                  margin: float = 0.25) -> Detection2D | None:
    """Run the backend on the enlarged crop of one person; keypoints back in image pixels."""
    x0, y0, x1, y1 = enlarged_crop(bbox_xywh, rgb.shape[1], rgb.shape[0], margin)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    dets = backend.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    if not dets:
        return None
    det = max(dets, key=lambda d: d.score)
    offset = np.array([x0, y0], dtype=np.float64)
    return Detection2D(uv_px=det.uv_px + offset, confidence=det.confidence, world_m=det.world_m,
                       bbox_xyxy_px=det.bbox_xyxy_px + np.concatenate([offset, offset]))


def coco_result(det: Detection2D, image_id: int) -> dict:
    """COCO results-format entry (category 1 = person) from a BlazePose detection."""
    uv = blazepose_to_coco17(det.uv_px)
    conf = blazepose_to_coco17(det.confidence)
    kpts = np.concatenate([uv, np.ones((17, 1))], axis=1).ravel()
    return {"image_id": int(image_id), "category_id": 1,
            "keypoints": [round(float(v), 2) for v in kpts], "score": float(np.mean(conf))}


def keypoint_oks_terms(gt_keypoints: Iterable[float], area: float, dt_uv_px: np.ndarray | None) -> np.ndarray:
    """(17,) per-keypoint OKS terms for one GT person; NaN where the GT keypoint is unlabelled,
    0 for labelled keypoints when there is no detection."""
    gt = np.asarray(list(gt_keypoints), dtype=np.float64).reshape(17, 3)
    labelled = gt[:, 2] > 0
    terms = np.full(17, np.nan)
    if dt_uv_px is None:
        terms[labelled] = 0.0
        return terms
    d2 = np.sum((np.asarray(dt_uv_px, dtype=np.float64) - gt[:, :2]) ** 2, axis=1)
    k2 = (2.0 * COCO17_SIGMAS) ** 2
    e = d2 / k2 / (float(area) + np.spacing(1)) / 2.0
    terms[labelled] = np.exp(-e[labelled])
    return terms


def person_oks(terms: np.ndarray) -> float:
    """OKS of one person: mean of its labelled keypoint terms (NaN if none labelled)."""
    labelled = np.isfinite(terms)
    return float(np.mean(terms[labelled])) if np.any(labelled) else float("nan")


@dataclass
class CocoKeypointReport:
    stats: dict[str, float]                   # COCOeval AP/AR (keys AP_NAMES)
    per_keypoint_oks: dict[str, float]        # mean OKS term per COCO keypoint
    per_keypoint_acc: dict[str, float]        # share of labelled keypoints with term >= 0.5
    person_oks: list[float]                   # per evaluated GT person (0 when missed)
    person_ann_ids: list[int]                 # COCO annotation id of each person_oks entry
    num_people: int
    num_detected: int
    num_images: int
    results: list[dict] = field(default_factory=list)
    seconds_per_crop: float = float("nan")

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "results"}


def load_coco(ann_path: Path):
    """pycocotools COCO object for a person-keypoint annotation file, quietly."""
    from pycocotools.coco import COCO

    ann_path = Path(ann_path)
    if not ann_path.is_file():
        raise CocoDataError(f"annotation file {ann_path} not found: pass --ann <person_keypoints_*.json>")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_path))
    if not coco.getAnnIds(catIds=[1]):
        raise CocoDataError(f"{ann_path} has no person (category 1) annotations")
    return coco


def coco_eval_stats(coco_gt, results: list[dict]) -> dict[str, float]:
    """OKS AP/AR with pycocotools (all images of coco_gt). Empty results give zeros."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {name: 0.0 for name in AP_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(AP_NAMES, ev.stats)}


def evaluate_backend(coco_gt, images_dir: Path, backend: KeypointBackend, margin: float = 0.25,
                     limit: int | None = None, progress: bool = True) -> CocoKeypointReport:
    """Run the backend on every labelled GT person crop and score it."""
    import time

    import cv2
    from tqdm import tqdm

    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise CocoDataError(f"image folder {images_dir} not found: pass --images <dir with the jpgs>")
    img_ids = sorted(coco_gt.getImgIds())
    if limit is not None:
        img_ids = img_ids[:limit]
    anns = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=img_ids, catIds=[1], iscrowd=False))
            if a.get("num_keypoints", 0) > 0]
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)

    results, terms_all, ann_ids = [], [], []
    detected, crop_time, crops = 0, 0.0, 0
    bar = tqdm(total=len(anns), desc="people", unit="crop", disable=not progress)
    for img_id in img_ids:
        if img_id not in by_image:
            continue
        info = coco_gt.loadImgs([img_id])[0]
        path = images_dir / info["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CocoDataError(f"cannot read image {path}: check --images points at the annotation's images")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        for ann in by_image[img_id]:
            t0 = time.perf_counter()
            det = detect_in_box(backend, rgb, ann["bbox"], margin)
            crop_time += time.perf_counter() - t0
            crops += 1
            uv17 = None
            if det is not None:
                detected += 1
                results.append(coco_result(det, img_id))
                uv17 = blazepose_to_coco17(det.uv_px)
            terms_all.append(keypoint_oks_terms(ann["keypoints"], ann["area"], uv17))
            ann_ids.append(int(ann["id"]))
            bar.update(1)
    bar.close()

    terms = np.array(terms_all).reshape(-1, 17)
    with np.errstate(invalid="ignore"):
        labelled = np.isfinite(terms)
        count = labelled.sum(axis=0)
        mean_oks = np.where(count > 0, np.nansum(terms, axis=0) / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, np.sum(np.nan_to_num(terms, nan=0.0) >= 0.5, axis=0) / np.maximum(count, 1),
                       np.nan)
    gt_eval = coco_gt
    if limit is not None:
        from pycocotools.coco import COCO

        gt_eval = COCO()
        gt_eval.dataset = {"images": coco_gt.loadImgs(img_ids), "categories": coco_gt.loadCats([1]),
                           "annotations": coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=img_ids))}
        with contextlib.redirect_stdout(io.StringIO()):
            gt_eval.createIndex()
    return CocoKeypointReport(
        stats=coco_eval_stats(gt_eval, results),
        per_keypoint_oks={n: float(v) for n, v in zip(COCO17_NAMES, mean_oks)},
        per_keypoint_acc={n: float(v) for n, v in zip(COCO17_NAMES, acc)},
        person_oks=[person_oks(t) for t in terms], person_ann_ids=ann_ids,
        num_people=len(terms_all), num_detected=detected, num_images=len(by_image),
        results=results, seconds_per_crop=crop_time / max(crops, 1))


def format_report(report: CocoKeypointReport, title: str = "") -> str:
    """Plain-text tables: AP/AR, then per-keypoint mean OKS and accuracy."""
    lines = [f"== COCO keypoints {title}".rstrip(),
             f"images {report.num_images}, people {report.num_people}, detected {report.num_detected}, "
             f"{1000 * report.seconds_per_crop:.1f} ms per crop"]
    lines += [f"  {name:<10} {report.stats[name]:.3f}" for name in AP_NAMES]
    lines.append(f"  {'keypoint':<16} {'mean OKS':>8} {'OKS>=0.5':>9}")
    for name in COCO17_NAMES:
        lines.append(f"  {name:<16} {report.per_keypoint_oks[name]:>8.3f} {report.per_keypoint_acc[name]:>9.3f}")
    return "\n".join(lines)


def save_bar_plot(report: CocoKeypointReport, path: Path, title: str = "") -> Path:
    """Bar plot PNG of per-keypoint mean OKS and accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(COCO17_NAMES))
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(x - 0.2, [report.per_keypoint_oks[n] for n in COCO17_NAMES], 0.4, label="mean OKS term")
    ax.bar(x + 0.2, [report.per_keypoint_acc[n] for n in COCO17_NAMES], 0.4, label="share OKS >= 0.5")
    ax.set_xticks(x, COCO17_NAMES, rotation=45, ha="right")
    ax.set_ylim(0, 1.15)
    ax.set_title(f"{title}  AP {report.stats['AP']:.3f}  ({report.num_people} people)".strip())
    ax.legend(loc="upper right", ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(report: CocoKeypointReport, out_dir: Path, stem: str) -> list[Path]:
    """results json (COCO format), metrics json and the bar plot, under out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = out_dir / f"{stem}_results.json"
    res.write_text(json.dumps(report.results))
    met = out_dir / f"{stem}_metrics.json"
    met.write_text(json.dumps(report.to_json(), indent=2))
    png = save_bar_plot(report, out_dir / f"{stem}_per_keypoint.png", stem)
    return [res, met, png]
