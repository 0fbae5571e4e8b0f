"""The correspondence stage's training crops, rendered once into shards on disk and read back whole.

Why a bank rather than rendering during training: a crop costs 20-60 ms to render (scene sampling,
photo-textured clutter, two ray-cast passes, sensor noise) against ~10 ms of a training step's share
per crop on one core, so rendering on the fly would leave the network waiting; rendered once on both
cores, the crops are revisited over several epochs with fresh photometric augmentation each time
(``correspondence_training``). Deterministic: shard i comes from rng([seed, i]), so an interrupted
run resumes where it stopped and the same seed gives the same crops. Depth is kept in 0.1 mm steps
(uint16), coordinates as float16 (1e-3 of a diameter at worst).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["CropBank", "CropBankError", "render_crop_bank", "load_crop_bank"]

SHARD = 256


class CropBankError(ValueError):
    """A crop bank directory for other objects or settings, or an incomplete one."""


@dataclass
class CropBank:
    """All crops of a bank as arrays (field meanings: ``crop_rendering.CropSample``)."""

    rgb: np.ndarray               # (N,S,S,3) uint8
    depth_m: np.ndarray           # (N,S,S) float32
    z_ref_m: np.ndarray           # (N,)
    cls: np.ndarray               # (N,) int64
    mask: np.ndarray              # (N,s,s) bool
    xyz: np.ndarray               # (N,3,s,s) float32
    valid: np.ndarray             # (N,s,s) bool
    K_crop: np.ndarray            # (N,3,3)
    T_cam_obj: np.ndarray         # (N,4,4), NaN for negatives
    render_depth_m: np.ndarray | None   # (N,R,R) float32 when kept

    def __len__(self) -> int:
        return len(self.cls)

    @property
    def positive(self) -> np.ndarray:
        return np.isfinite(self.T_cam_obj[:, 0, 0])


def _to_mm10(d: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(d) * 1e4), 0, 65535).astype(np.uint16)


def _render_shard(args: tuple) -> int:
    out_dir, shard, count, seed, renderer_args = args
    import torch

    from pose_ros.objects.crop_rendering import CropRenderer

    torch.set_num_threads(1)
    ren = CropRenderer(**renderer_args)
    crops = ren.crops(np.random.default_rng([seed, shard]), count)
    keep = crops[0].render_depth_m is not None
    arrays = {
        "rgb": np.stack([c.rgb for c in crops]), "depth": _to_mm10(np.stack([c.depth_m for c in crops])),
        "z_ref": np.array([c.z_ref_m for c in crops], np.float32), "cls": np.array([c.cls for c in crops], np.int16),
        "mask": np.stack([c.mask for c in crops]), "xyz": np.stack([c.xyz for c in crops]).astype(np.float16),
        "valid": np.stack([c.valid for c in crops]), "K": np.stack([c.K_crop for c in crops]),
        "T": np.stack([c.T_cam_obj if c.T_cam_obj is not None else np.full((4, 4), np.nan) for c in crops])}
    if keep:
        arrays["render_depth"] = _to_mm10(np.stack([c.render_depth_m for c in crops]))
    tmp = Path(out_dir) / f"crops_{shard:05d}.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(Path(out_dir) / f"crops_{shard:05d}.npz")
    return count


def _shard_count(path: Path) -> int:
    """Crops in a shard file (0 when it is not there)."""
    if not path.is_file():
        return 0
    with np.load(path) as z:
        return len(z["cls"])


def render_crop_bank(out_dir: str | Path, num_crops: int, seed: int, renderer_args: dict[str, Any],
                     identity: dict[str, Any], workers: int = 2, progress: bool = True) -> Path:
    """Render ``num_crops`` crops with ``CropRenderer(**renderer_args)`` into ``out_dir`` (shards of
    256), skipping shards already there. ``identity`` (objects, settings) must match an existing bank."""
    from pose_ros.objects.shard_jobs import run_shard_jobs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads(json.dumps({"format": "pose_ros.crop_bank", "version": 1, "num_crops": int(num_crops),
                                  "seed": int(seed), "shard_size": SHARD, **identity}))
    meta_path = out / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: v for k, v in old.items() if k != "num_crops"} != {k: v for k, v in meta.items() if k != "num_crops"}:
            raise CropBankError(f"{out} holds crops of other objects or settings; choose another directory or delete it")
    meta_path.write_text(json.dumps(meta, indent=1))
    jobs = []
    for shard, start in enumerate(range(0, num_crops, SHARD)):
        count = min(SHARD, num_crops - start)
        if _shard_count(out / f"crops_{shard:05d}.npz") != count:      # missing, or the short last shard of a smaller bank
            jobs.append((str(out), shard, count, seed, renderer_args))
    run_shard_jobs(_render_shard, jobs, num_crops, num_crops - sum(j[2] for j in jobs), workers, progress,
                   desc=f"render crops ({out.name})", unit="crop", dynamic_ncols=True, mininterval=5.0)
    return out


def load_crop_bank(out_dir: str | Path, num_crops: int | None = None) -> CropBank:
    """Every shard of a bank (the first ``num_crops`` crops when given) as one ``CropBank``."""
    out = Path(out_dir)
    if not (out / "meta.json").is_file():
        raise CropBankError(f"{out}: no crop bank (meta.json missing)")
    meta = json.loads((out / "meta.json").read_text())
    n = int(meta["num_crops"] if num_crops is None else num_crops)
    shards = [out / f"crops_{i:05d}.npz" for i in range(-(-n // SHARD))]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise CropBankError(f"{out}: {len(missing)} shards missing ({missing[0]} ...); render the bank again to finish it")
    parts: dict[str, list] = {}
    for p in shards:
        with np.load(p) as z:
            for k in z.files:
                parts.setdefault(k, []).append(z[k])
    a = {k: np.concatenate(v)[:n] for k, v in parts.items()}
    return CropBank(rgb=a["rgb"], depth_m=a["depth"].astype(np.float32) * 1e-4, z_ref_m=a["z_ref"].astype(np.float64),
                    cls=a["cls"].astype(np.int64), mask=a["mask"], xyz=a["xyz"].astype(np.float32), valid=a["valid"],
                    K_crop=a["K"], T_cam_obj=a["T"],
                    render_depth_m=a["render_depth"].astype(np.float32) * 1e-4 if "render_depth" in a else None)
