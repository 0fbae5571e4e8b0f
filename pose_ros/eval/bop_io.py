"""BOP scene reading/writing (and the raw YCB-Video layout) as metre-based BopFrames.

Why: synthetic training data, LM-O/YCB-V evaluation and the real-data tests all go through one
frame type and one file format, so millimetres and row-major rotations are handled only here.

Standard BOP scene folder::

    scene_camera.json   {im_id: {cam_K: [9], depth_scale: mm per depth unit}}
    scene_gt.json       {im_id: [{obj_id, cam_R_m2c: [9 row-major], cam_t_m2c: [3 mm]}, ...]}
    scene_gt_info.json  optional {im_id: [{bbox_obj, bbox_visib, px_count_*, visib_fract}, ...]}
    rgb/{im:06d}.png|jpg   depth/{im:06d}.png (uint16)   mask_visib/{im:06d}_{inst:06d}.png

The reader also accepts the layout of ``../shared/data/ycbv_real``: ``scene_camera_bop.json`` /
``scene_gt_bop.json`` beside ``{im:06d}-color.png`` / ``-depth.png`` / ``-label.png``; there the
visible masks come from the label image (YCB-V class index == BOP obj_id, one instance each).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import cv2
import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.config_file import read_config_file
from pose_ros.core.transforms import make_T, orthonormalize, transform_points

__all__ = [
    "GtInstance", "BopFrame", "BopFormatError", "BopSceneReader", "BopSceneWriter", "YcbvRawSceneReader",
    "iter_bop_dataset", "iter_dataset_frames", "load_bop_camera_json", "bbox_from_mask",
]

log = logging.getLogger(__name__)


class BopFormatError(ValueError):
    """A BOP/YCB-V file is missing or malformed; the message names the file and field."""


@dataclass
class GtInstance:
    """One ground-truth object instance in a frame (metres)."""

    obj_id: int
    T_cam_obj: np.ndarray
    mask_visib: np.ndarray | None = None     # (H,W) bool, visible pixels
    visib_fract: float | None = None         # visible / all projected pixels, from scene_gt_info
    bbox_visib: tuple[int, int, int, int] | None = None  # x, y, w, h
    bbox_obj: tuple[int, int, int, int] | None = None    # x, y, w, h of the unoccluded silhouette
    mask_full: np.ndarray | None = None      # (H,W) bool unoccluded silhouette (synthetic data only)


@dataclass
class BopFrame:
    """One RGB-D frame with camera and GT; depth_m float32 metres, 0 = invalid."""

    scene_id: int
    im_id: int
    rgb: np.ndarray
    depth_m: np.ndarray
    camera: PinholeCamera
    gt: list[GtInstance] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
def _read_json(path: Path) -> Any:
    return read_config_file(path, BopFormatError, missing=f"missing file {path}")


def _first_existing(*paths: Path) -> Path | None:
    for p in paths:
        if p.is_file():
            return p
    return None


def _numbers(value: Any, n: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise BopFormatError(f"{where} must be {n} numbers; got {value!r}") from exc
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise BopFormatError(f"{where} must be {n} finite numbers; got {np.asarray(value).tolist()}")
    return arr


def _T_from_bop(entry: Mapping[str, Any], where: str) -> np.ndarray:
    R = _numbers(entry.get("cam_R_m2c"), 9, f"{where} cam_R_m2c").reshape(3, 3)
    t_mm = _numbers(entry.get("cam_t_m2c"), 3, f"{where} cam_t_m2c")
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-2 or np.linalg.det(R) < 0:
        raise BopFormatError(f"{where} cam_R_m2c is not a rotation matrix")
    return make_T(orthonormalize(R), t_mm * 1e-3)


def _read_rgb(path: Path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if im is None:
        raise BopFormatError(f"could not read image {path}")
    if im.ndim == 2:
        return np.repeat(im[:, :, None], 3, axis=2).astype(np.uint8)
    if im.shape[2] == 4:
        im = im[:, :, :3]
    if im.dtype != np.uint8:
        im = (im / 257).astype(np.uint8) if im.dtype == np.uint16 else im.astype(np.uint8)
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def _read_depth_m(path: Path, metres_per_unit: float) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise BopFormatError(f"could not read depth image {path}")
    if raw.ndim != 2:
        raise BopFormatError(f"depth image {path} must be single-channel; got shape {raw.shape}")
    return (raw.astype(np.float32) * np.float32(metres_per_unit))


def _read_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise BopFormatError(f"could not read mask {path}")
    return (m if m.ndim == 2 else m[:, :, 0]) > 0


def bbox_from_mask(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the True pixels, BOP convention; (-1,-1,-1,-1) when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (-1, -1, -1, -1)
    return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))


def load_bop_camera_json(path: str | Path) -> tuple[PinholeCamera, float]:
    """Dataset-level BOP camera.json (fx, fy, cx, cy, width, height, depth_scale) -> (camera, depth_scale)."""
    path = Path(path)
    d = _read_json(path)
    try:
        K = np.array([[d["fx"], 0.0, d["cx"]], [0.0, d["fy"], d["cy"]], [0.0, 0.0, 1.0]], dtype=np.float64)
        return PinholeCamera(K, int(d["width"]), int(d["height"])), float(d.get("depth_scale", 1.0))
    except KeyError as exc:
        raise BopFormatError(f"{path}: missing key {exc}; need fx, fy, cx, cy, width, height") from exc


def _scene_id_from_dir(scene_dir: Path) -> int:
    return int(scene_dir.name) if scene_dir.name.isdigit() else 0


# ----------------------------------------------------------------------------- reader
class BopSceneReader:
    """Iterate the frames of one BOP scene folder (standard or ycbv_real layout) as BopFrames."""

    def __init__(self, scene_dir: str | Path, load_masks: bool = True, scene_id: int | None = None) -> None:
        self.scene_dir = Path(scene_dir)
        if not self.scene_dir.is_dir():
            raise BopFormatError(f"scene folder not found: {self.scene_dir}")
        d = self.scene_dir
        cam_path = _first_existing(d / "scene_camera.json", d / "scene_camera_bop.json")
        if cam_path is None:
            raise BopFormatError(f"{d}: no scene_camera.json (or scene_camera_bop.json); is this a BOP scene folder?")
        self._cam = {int(k): v for k, v in _read_json(cam_path).items()}
        gt_path = _first_existing(d / "scene_gt.json", d / "scene_gt_bop.json")
        self._gt = {int(k): v for k, v in _read_json(gt_path).items()} if gt_path else {}
        info_path = _first_existing(d / "scene_gt_info.json", d / "scene_gt_info_bop.json")
        self._info = {int(k): v for k, v in _read_json(info_path).items()} if info_path else {}
        self.scene_id = _scene_id_from_dir(d) if scene_id is None else int(scene_id)
        self.load_masks = load_masks
        self.im_ids: list[int] = sorted(self._cam)

    def __len__(self) -> int:
        return len(self.im_ids)

    def __iter__(self) -> Iterator[BopFrame]:
        for im_id in self.im_ids:
            yield self.frame(im_id)

    def _image_path(self, im_id: int, kind: str) -> Path:
        d = self.scene_dir
        if kind == "rgb":
            cands = [d / "rgb" / f"{im_id:06d}.png", d / "rgb" / f"{im_id:06d}.jpg", d / "gray" / f"{im_id:06d}.png",
                     d / f"{im_id:06d}-color.png", d / f"{im_id:06d}-color.jpg"]
        else:
            cands = [d / "depth" / f"{im_id:06d}.png", d / f"{im_id:06d}-depth.png"]
        p = _first_existing(*cands)
        if p is None:
            raise BopFormatError(f"{d}: no {kind} image for im_id {im_id} (looked for {[c.name for c in cands]})")
        return p

    def camera_entry(self, im_id: int) -> tuple[np.ndarray, float]:
        """(K 3x3, depth_scale mm per unit) of a frame from scene_camera.json, without reading images."""
        if im_id not in self._cam:
            raise BopFormatError(f"{self.scene_dir}: im_id {im_id} not in scene_camera.json (has {self.im_ids[:5]}...)")
        c = self._cam[im_id]
        K = _numbers(c.get("cam_K"), 9, f"scene_camera.json im {im_id} cam_K").reshape(3, 3)
        return K, float(c.get("depth_scale", 1.0))

    def frame(self, im_id: int) -> BopFrame:
        """Load one frame: images, camera, GT poses (metres) and visible masks if available."""
        K, depth_scale = self.camera_entry(im_id)
        rgb = _read_rgb(self._image_path(im_id, "rgb"))
        depth_m = _read_depth_m(self._image_path(im_id, "depth"), depth_scale * 1e-3)
        h, w = depth_m.shape
        if rgb.shape[:2] != (h, w):
            raise BopFormatError(f"{self.scene_dir} im {im_id}: rgb {rgb.shape[:2]} and depth {(h, w)} sizes differ")
        camera = PinholeCamera(K, w, h)
        infos = self._info.get(im_id, [])
        label = None
        gt: list[GtInstance] = []
        for inst, entry in enumerate(self._gt.get(im_id, [])):
            where = f"{self.scene_dir.name} im {im_id} inst {inst}"
            if "obj_id" not in entry:
                raise BopFormatError(f"{where}: missing obj_id")
            g = GtInstance(obj_id=int(entry["obj_id"]), T_cam_obj=_T_from_bop(entry, where))
            if inst < len(infos):
                info = infos[inst]
                g.visib_fract = float(info["visib_fract"]) if "visib_fract" in info else None
                g.bbox_visib = tuple(int(v) for v in info["bbox_visib"]) if "bbox_visib" in info else None
                g.bbox_obj = tuple(int(v) for v in info["bbox_obj"]) if "bbox_obj" in info else None
            if self.load_masks:
                mpath = self.scene_dir / "mask_visib" / f"{im_id:06d}_{inst:06d}.png"
                if mpath.is_file():
                    g.mask_visib = _read_mask(mpath)
                else:
                    lpath = self.scene_dir / f"{im_id:06d}-label.png"
                    if lpath.is_file():
                        if label is None:
                            label = cv2.imread(str(lpath), cv2.IMREAD_UNCHANGED)
                        g.mask_visib = label == g.obj_id
            gt.append(g)
        return BopFrame(self.scene_id, im_id, rgb, depth_m, camera, gt)


def iter_bop_dataset(split_dir: str | Path, load_masks: bool = True) -> Iterator[BopFrame]:
    """All frames of all scene folders (those with a scene_camera*.json) in a split folder, sorted."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise BopFormatError(f"split folder not found: {split_dir}")
    scenes = sorted(p for p in split_dir.iterdir()
                    if p.is_dir() and _first_existing(p / "scene_camera.json", p / "scene_camera_bop.json"))
    if not scenes:
        raise BopFormatError(f"{split_dir}: no scene folders with scene_camera.json")
    for s in scenes:
        yield from BopSceneReader(s, load_masks=load_masks)


def iter_dataset_frames(path: str | Path, layout: str = "auto", load_masks: bool = True) -> Iterator[BopFrame]:
    """Frames of a split folder or of one scene folder, BOP or raw YCB-Video layout.

    ``layout``: "bop" (scene_camera.json / scene_gt.json, or their ``*_bop.json`` twins), "ycbv-raw"
    (``*-meta.mat`` poses: the frame of the ``models_ycbv`` meshes) or "auto": raw where a folder has
    ``*-meta.mat`` files (real YCB-Video recordings carry both; their raw poses go with the coloured
    ``models_ycbv`` meshes), else BOP.
    """
    if layout not in ("auto", "bop", "ycbv-raw"):
        raise ValueError(f"layout must be auto, bop or ycbv-raw; got {layout!r}")
    path = Path(path)
    if not path.is_dir():
        raise BopFormatError(f"folder not found: {path}")

    def is_raw(d: Path) -> bool:
        return any(YcbvRawSceneReader._META_RE.match(p.name) for p in d.iterdir())

    def is_bop(d: Path) -> bool:
        return _first_existing(d / "scene_camera.json", d / "scene_camera_bop.json") is not None

    def usable(d: Path) -> bool:
        return is_raw(d) if layout == "ycbv-raw" else is_bop(d) if layout == "bop" else (is_raw(d) or is_bop(d))

    scenes = [path] if usable(path) else sorted(p for p in path.iterdir() if p.is_dir() and usable(p))
    if not scenes:
        raise BopFormatError(f"{path}: no scene folders ({'*-meta.mat' if layout == 'ycbv-raw' else 'scene_camera.json'}"
                             f"{'' if layout != 'auto' else ' or *-meta.mat'})")
    for s in scenes:
        raw = layout == "ycbv-raw" or (layout == "auto" and is_raw(s))
        yield from (YcbvRawSceneReader(s, load_masks=load_masks) if raw else BopSceneReader(s, load_masks=load_masks))


# ----------------------------------------------------------------------------- writer
class BopSceneWriter:
    """Write BopFrames as a standard BOP scene (PNG rgb/depth/masks + scene_*.json).

    Depth is stored as uint16 with ``depth_scale`` mm per unit (0.1 -> 0.1 mm steps, max 6.55 m);
    depths beyond that range are written as 0 (invalid) and counted in ``dropped_depth_px``.
    ``models`` ({obj_id: ObjectModel}) lets the writer compute bbox_obj by projecting model points
    when an instance has no ``mask_full``. JSON files are rewritten every ``flush_every`` frames
    (so a crashed long generation run keeps what it made) and on ``close()`` (or ``with``).
    """

    def __init__(self, scene_dir: str | Path, depth_scale: float = 0.1, rgb_ext: str = "png",
                 models: Mapping[int, Any] | None = None, overwrite: bool = False, flush_every: int = 50) -> None:
        if not depth_scale > 0:
            raise ValueError(f"depth_scale must be > 0 (mm per depth unit); got {depth_scale}")
        if rgb_ext not in ("png", "jpg"):
            raise ValueError(f"rgb_ext must be 'png' or 'jpg'; got {rgb_ext!r}")
        self.scene_dir = Path(scene_dir)
        if (self.scene_dir / "scene_gt.json").exists() and not overwrite:
            raise FileExistsError(f"{self.scene_dir} already holds a BOP scene; pass overwrite=True or use a new folder")
        for sub in ("rgb", "depth", "mask_visib"):
            (self.scene_dir / sub).mkdir(parents=True, exist_ok=True)
        self.depth_scale = float(depth_scale)
        self.rgb_ext = rgb_ext
        self.models = dict(models) if models else {}
        self._cam: dict[str, Any] = {}
        self._gt: dict[str, Any] = {}
        self._info: dict[str, Any] = {}
        self.dropped_depth_px = 0
        self.flush_every = max(1, int(flush_every))
        self._closed = False

    def __enter__(self) -> "BopSceneWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def add(self, frame: BopFrame) -> None:
        """Write one frame's images and masks; its JSON entries are kept until close()."""
        if self._closed:
            raise RuntimeError("BopSceneWriter is closed")
        im_id = int(frame.im_id)
        if str(im_id) in self._cam:
            raise ValueError(f"im_id {im_id} was already added to {self.scene_dir}; use unique im_ids")
        cam = frame.camera
        h, w = cam.height, cam.width
        if cam.has_distortion:
            raise ValueError("BOP has no distortion model; undistort the images first (camera.has_distortion is True)")
        rgb = np.asarray(frame.rgb)
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be ({h},{w},3) uint8 to match the camera; got {rgb.shape} {rgb.dtype}")
        depth_m = np.asarray(frame.depth_m, dtype=np.float64)
        if depth_m.shape != (h, w):
            raise ValueError(f"depth_m must be ({h},{w}) to match the camera; got {depth_m.shape}")
        units = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m * 1000.0 / self.depth_scale, 0.0)
        units = np.rint(units)
        over = units > 65535
        if over.any():
            n = int(over.sum())
            self.dropped_depth_px += n
            log.warning("im %d: %d depth pixels beyond %.2f m written as invalid", im_id, n,
                        65535 * self.depth_scale / 1000)
            units[over] = 0
        stem = f"{im_id:06d}"
        rgb_path = self.scene_dir / "rgb" / f"{stem}.{self.rgb_ext}"
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        ok = cv2.imwrite(str(rgb_path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95] if self.rgb_ext == "jpg" else [])
        ok &= cv2.imwrite(str(self.scene_dir / "depth" / f"{stem}.png"), units.astype(np.uint16))
        if not ok:
            raise OSError(f"could not write images for im {im_id} under {self.scene_dir}")
        self._cam[str(im_id)] = {"cam_K": cam.K.ravel().tolist(), "depth_scale": self.depth_scale}
        gts, infos = [], []
        valid_depth = units > 0
        for inst, g in enumerate(frame.gt):
            T = np.asarray(g.T_cam_obj, dtype=np.float64)
            gts.append({"cam_R_m2c": T[:3, :3].ravel().tolist(), "cam_t_m2c": (T[:3, 3] * 1000.0).tolist(),
                        "obj_id": int(g.obj_id)})
            infos.append(self._instance_info(g, cam, valid_depth, im_id, inst))
        self._gt[str(im_id)] = gts
        self._info[str(im_id)] = infos
        if len(self._cam) % self.flush_every == 0:
            self.flush()

    def _instance_info(self, g: GtInstance, cam: PinholeCamera, valid_depth: np.ndarray, im_id: int,
                       inst: int) -> dict[str, Any]:
        info: dict[str, Any] = {}
        px_all = -1
        if g.mask_full is not None:
            full = np.asarray(g.mask_full, bool)
            info["bbox_obj"] = list(bbox_from_mask(full))
            px_all = int(full.sum())
        elif g.bbox_obj is not None:
            info["bbox_obj"] = list(g.bbox_obj)
        elif g.obj_id in self.models:
            pts = transform_points(g.T_cam_obj, self.models[g.obj_id].points_m)
            uv = cam.project(pts)
            uv = uv[np.isfinite(uv).all(axis=1)]
            if len(uv):
                x0, y0 = np.floor(uv.min(0)).astype(int)
                x1, y1 = np.floor(uv.max(0)).astype(int)
                info["bbox_obj"] = [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]
        info.setdefault("bbox_obj", [-1, -1, -1, -1])
        if g.mask_visib is not None:
            vis = np.asarray(g.mask_visib, bool)
            if vis.shape != valid_depth.shape:
                raise ValueError(f"im {im_id} inst {inst}: mask_visib shape {vis.shape} != image {valid_depth.shape}")
            cv2.imwrite(str(self.scene_dir / "mask_visib" / f"{im_id:06d}_{inst:06d}.png"), vis.astype(np.uint8) * 255)
            info["bbox_visib"] = list(bbox_from_mask(vis))
            info["px_count_visib"] = int(vis.sum())
            info["px_count_valid"] = int((vis & valid_depth).sum())
        else:
            info["bbox_visib"] = list(g.bbox_visib) if g.bbox_visib is not None else [-1, -1, -1, -1]
        info["px_count_all"] = px_all
        if g.visib_fract is not None:
            info["visib_fract"] = float(g.visib_fract)
        elif px_all > 0 and "px_count_visib" in info:
            info["visib_fract"] = info["px_count_visib"] / px_all
        else:
            info["visib_fract"] = -1.0
        return info

    def flush(self) -> None:
        """(Re)write scene_camera.json, scene_gt.json, scene_gt_info.json, sorted by im_id."""
        for name, data in (("scene_camera.json", self._cam), ("scene_gt.json", self._gt),
                           ("scene_gt_info.json", self._info)):
            ordered = {k: data[k] for k in sorted(data, key=int)}
            tmp = self.scene_dir / (name + ".tmp")
            tmp.write_text(json.dumps(ordered, indent=1))
            tmp.replace(self.scene_dir / name)  # atomic: readers never see a half-written file

    def close(self) -> None:
        """Flush the JSON files; further add() calls raise."""
        if self._closed:
            return
        self.flush()
        self._closed = True


# ----------------------------------------------------------------------------- raw YCB-Video
class YcbvRawSceneReader:
    """Raw YCB-Video scene folder (``{im:06d}-color/-depth/-label.png``, ``-meta.mat``) as BopFrames.

    obj_id = YCB-V class index (1-based, same ids as BOP ycbv). NOTE: ``poses`` in meta.mat refer to
    the original YCB-Video model frame (``models_points_xyz``), which is offset from the BOP ycbv
    meshes' frame; use BopSceneReader on the ``scene_gt_bop.json`` beside it for BOP meshes.
    """

    _META_RE = re.compile(r"^(\d+)-meta\.mat$")

    def __init__(self, scene_dir: str | Path, load_masks: bool = True) -> None:
        self.scene_dir = Path(scene_dir)
        if not self.scene_dir.is_dir():
            raise BopFormatError(f"scene folder not found: {self.scene_dir}")
        ids = [int(m.group(1)) for p in self.scene_dir.iterdir() if (m := self._META_RE.match(p.name))]
        if not ids:
            raise BopFormatError(f"{self.scene_dir}: no *-meta.mat files; is this a raw YCB-Video scene?")
        self.im_ids = sorted(ids)
        self.scene_id = _scene_id_from_dir(self.scene_dir)
        self.load_masks = load_masks

    def __len__(self) -> int:
        return len(self.im_ids)

    def __iter__(self) -> Iterator[BopFrame]:
        for im_id in self.im_ids:
            yield self.frame(im_id)

    def frame(self, im_id: int) -> BopFrame:
        from scipy.io import loadmat

        stem = self.scene_dir / f"{im_id:06d}"
        meta_path = Path(f"{stem}-meta.mat")
        if not meta_path.is_file():
            raise BopFormatError(f"missing {meta_path}")
        meta = loadmat(str(meta_path))
        for key in ("poses", "cls_indexes", "intrinsic_matrix", "factor_depth"):
            if key not in meta:
                raise BopFormatError(f"{meta_path}: missing field '{key}'")
        K = np.asarray(meta["intrinsic_matrix"], dtype=np.float64)
        factor = float(np.asarray(meta["factor_depth"]).ravel()[0])
        if not factor > 0:
            raise BopFormatError(f"{meta_path}: factor_depth must be > 0; got {factor}")
        cls = np.asarray(meta["cls_indexes"]).ravel().astype(int)
        poses = np.asarray(meta["poses"], dtype=np.float64)
        if poses.ndim == 2:
            poses = poses[:, :, None]
        if poses.shape[:2] != (3, 4) or poses.shape[2] != len(cls):
            raise BopFormatError(f"{meta_path}: poses shape {poses.shape} does not match {len(cls)} cls_indexes")
        rgb = _read_rgb(Path(f"{stem}-color.png"))
        depth_m = _read_depth_m(Path(f"{stem}-depth.png"), 1.0 / factor)
        h, w = depth_m.shape
        label = None
        lpath = Path(f"{stem}-label.png")
        if self.load_masks and lpath.is_file():
            label = cv2.imread(str(lpath), cv2.IMREAD_UNCHANGED)
        gt = []
        for i, c in enumerate(cls):
            T = make_T(orthonormalize(poses[:, :3, i]), poses[:, 3, i])
            gt.append(GtInstance(obj_id=int(c), T_cam_obj=T, mask_visib=None if label is None else label == c))
        return BopFrame(self.scene_id, im_id, rgb, depth_m, PinholeCamera(K, w, h), gt)
