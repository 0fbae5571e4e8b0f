"""Training of the crop correspondence stage on crops rendered zoomed in (``crop_rendering``).

The crops are rendered once into a bank per object set (``crop_bank``: training crops and a held-out
set from another seed) and revisited over the epochs, each time under fresh camera-like photometric
and depth augmentation (``training_data.augment``) and a jittered depth origin, as the run-time
median of a detector's mask is off too.

Loss: binary cross-entropy on the visible mask; L1 on the coordinates of visible pixels with valid
depth; a Laplace negative log-likelihood that teaches ``log_sigma`` the size of that error (on the
detached error, so the uncertainty does not trade accuracy away).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pose_ros.objects.crop_bank import CropBank

__all__ = ["CropTrainConfig", "crop_bank_identity", "crop_batch", "train_correspondence", "evaluate_correspondence",
           "crop_renderer_args"]

log = logging.getLogger(__name__)


@dataclass
class CropTrainConfig:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    crop_size: int = 64
    widths: tuple[int, int, int] = (32, 64, 128)
    decoder_width: int = 48
    pad: float = 1.4
    class_film: bool = True           # class-conditioned features (``correspondence_net``)
    crops: int = 20000                # training crops rendered into the bank
    val_crops: int = 256              # held-out crops (another seed)
    render_workers: int = 2
    min_visible_px: int = 80          # instance pixels at the camera's resolution
    wrong_class_share: float = 0.05   # object crops asked for as another class (target mask empty)
    distractor_share: float = 0.08    # distractors cropped as if detected (negatives)
    seed: int = 0
    threads: int | None = None
    time_budget_s: float | None = None


def crop_renderer_args(models: Sequence[Any], scene_cfg: Any, centres_m: Sequence[np.ndarray],
                       diameters_m: Sequence[float], cfg: CropTrainConfig, keep_render_depth: bool = False) -> dict:
    """``CropRenderer`` keyword arguments for a training config (also what identifies a bank)."""
    return {"models": list(models), "scene_cfg": scene_cfg, "centres_m": [np.asarray(c) for c in centres_m],
            "diameters_m": [float(d) for d in diameters_m], "crop_size": cfg.crop_size, "pad": cfg.pad,
            "min_visible_px": cfg.min_visible_px, "wrong_class_share": cfg.wrong_class_share,
            "distractor_share": cfg.distractor_share, "keep_render_depth": keep_render_depth, "seed": cfg.seed}


def crop_bank_identity(specs: Sequence[Any], scene_cfg: Any, cfg: CropTrainConfig) -> dict:
    """What a bank's crops depend on (objects, scenes, the renderer's settings): a bank rendered for
    other values is refused rather than mixed in."""
    args = crop_renderer_args([], scene_cfg, [], [], cfg)
    return {"objects": [{"name": s.name, "obj_id": int(s.obj_id), "mesh_hash": s.mesh_hash} for s in specs],
            "scene_config": scene_cfg.to_dict(),
            **{k: args[k] for k in ("crop_size", "pad", "min_visible_px", "wrong_class_share", "distractor_share")}}


def crop_batch(bank: CropBank, indices: Sequence[int], diameters_m: Sequence[float],
               rng: np.random.Generator | None) -> dict[str, Any]:
    """Network inputs and targets of bank crops; ``rng`` augments (None: as rendered)."""
    import torch

    from pose_ros.objects.correspondence_net import crop_input
    from pose_ros.objects.training_data import augment

    xs = []
    for i in indices:
        rgb, dep, z_ref = bank.rgb[i], bank.depth_m[i], float(bank.z_ref_m[i])
        d = float(diameters_m[int(bank.cls[i])])
        if rng is not None:
            rgb, dep = augment(rgb, dep, rng)
            if z_ref > 0:
                z_ref += float(rng.normal(0, 0.08)) * d
        xs.append(crop_input(rgb, dep, z_ref, d))
    idx = np.asarray(indices, np.int64)
    return {"input": torch.from_numpy(np.stack(xs)), "cls": torch.from_numpy(bank.cls[idx]),
            "mask": torch.from_numpy(bank.mask[idx].astype(np.float32)), "xyz": torch.from_numpy(bank.xyz[idx]),
            "valid": torch.from_numpy(bank.valid[idx].astype(np.float32))}


def crop_loss(out: dict[str, Any], batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
    import torch
    import torch.nn.functional as F

    l_mask = F.binary_cross_entropy_with_logits(out["mask"], batch["mask"])
    v = batch["valid"]
    nv = v.sum().clamp(min=1.0)
    err = (out["xyz"] - batch["xyz"]).abs().sum(1)                     # (B,s,s) L1 over xyz
    l_xyz = (err * v).sum() / nv
    ls = out["log_sigma"]
    nll = (err.detach() * torch.exp(-ls) + ls) * v
    l_sig = nll.sum() / nv
    loss = l_mask + 3.0 * l_xyz + 0.1 * l_sig
    return loss, {"loss": float(loss.detach()), "mask": float(l_mask.detach()), "xyz": float(l_xyz.detach())}


def evaluate_correspondence(net: Any, bank: CropBank, models: Sequence[Any], centres_m: Sequence[np.ndarray],
                            diameters_m: Sequence[float], pad: float) -> dict[str, float]:
    """Held-out figures on a bank's object crops: coordinate error (mm) on visible pixels, mask IoU, and
    the share posed within 0.1 d ADD(-S) from these correspondences alone (no ICP): by PnP and, with
    the crop camera's depth (the bank keeps it), by 3D-3D RANSAC."""
    import torch

    from pose_ros.core.camera import PinholeCamera
    from pose_ros.eval.pose_metrics import add_s_error
    from pose_ros.objects.correspondence_pose import (MIN_CORRESPONDENCES, CropMaps, correspondences_from_maps,
                                                      pnp_from_correspondences,
                                                      pose_from_correspondences)
    from pose_ros.objects.crop_rendering import whole_render_box

    net.eval()
    errs_mm, ious, ok, ok3d = [], [], [], []
    items = np.flatnonzero(bank.positive)
    R = bank.render_depth_m.shape[1] if bank.render_depth_m is not None else None
    for start in range(0, len(items), 32):
        idx = items[start:start + 32]
        b = crop_batch(bank, idx, diameters_m, None)
        with torch.no_grad():
            out = net(b["input"], b["cls"])
        prob = torch.sigmoid(out["mask"]).numpy()
        for r, n in enumerate(idx):
            c = int(bank.cls[n])
            d = float(diameters_m[c])
            m_t, m_p = bank.mask[n], prob[r] > 0.5
            ious.append((m_t & m_p).sum() / max(1, (m_t | m_p).sum()))
            v = bank.valid[n]
            if v.any():
                e = np.abs(out["xyz"][r].numpy() - bank.xyz[n]).sum(0)[v] * d * 1e3 / 3
                errs_mm.append(float(np.median(e)))
            if R is None:
                continue
            cam = PinholeCamera(bank.K_crop[n], R, R, check_principal_point=False)
            cm = CropMaps(prob[r], out["xyz"][r].numpy(), out["log_sigma"][r].numpy())
            corr = correspondences_from_maps(cm, whole_render_box(R), centres_m[c], d, pad)
            T_true = bank.T_cam_obj[n]
            res = pnp_from_correspondences(corr, centres_m[c], cam, d) if len(corr.uv) >= MIN_CORRESPONDENCES else None
            ok.append(res is not None and res.ok and add_s_error(models[c], res.T_cam_obj, T_true) < 0.1 * d)
            res = (pose_from_correspondences(corr, centres_m[c], cam, d, bank.render_depth_m[n])
                   if len(corr.uv) >= MIN_CORRESPONDENCES else None)
            ok3d.append(res is not None and res.ok and add_s_error(models[c], res.T_cam_obj, T_true) < 0.1 * d)
    return {"xyz_err_mm": float(np.median(errs_mm)) if errs_mm else float("nan"),
            "mask_iou": float(np.mean(ious)) if ious else 0.0,
            "pnp_add_s": float(np.mean(ok)) if ok else 0.0, "rgbd_add_s": float(np.mean(ok3d)) if ok3d else 0.0,
            "instances": len(items)}


def train_correspondence(model_file: str | Path, models: Sequence[Any], scene_cfg: Any, bank_dir: str | Path,
                         cfg: CropTrainConfig, checkpoint: str | Path, resume: bool = False, command: str = "",
                         progress: bool = True) -> dict[str, Any]:
    """Render the crop banks (``bank_dir``/train, /val; kept for later runs), train the crop stage for
    the objects of ``model_file`` and store it in that file (key ``correspondence``) after every
    epoch; ``checkpoint`` keeps the optimizer for ``resume``."""
    import torch
    from tqdm import tqdm

    from pose_ros.objects.correspondence_net import CorrespondenceConfig, CorrespondenceNet
    from pose_ros.objects.crop_bank import load_crop_bank, render_crop_bank
    from pose_ros.objects.model_file import load_model_file, store_in_model_file
    from pose_ros.objects.train import lr_at

    loaded = load_model_file(model_file)
    specs = loaded.objects
    if len(models) != len(specs):
        raise ValueError(f"{model_file} has {len(specs)} objects but {len(models)} meshes were given")
    centres = [s.keypoints_m[-1] for s in specs]
    diameters = [s.diameter_m for s in specs]
    bank_dir = Path(bank_dir)
    identity = crop_bank_identity(specs, scene_cfg, cfg)
    render_crop_bank(bank_dir / "val", cfg.val_crops, cfg.seed + 1_000_003,
                     crop_renderer_args(models, scene_cfg, centres, diameters, cfg, keep_render_depth=True),
                     identity, workers=cfg.render_workers, progress=progress)
    render_crop_bank(bank_dir / "train", cfg.crops, cfg.seed, crop_renderer_args(models, scene_cfg, centres,
                     diameters, cfg), identity, workers=cfg.render_workers, progress=progress)
    train_bank = load_crop_bank(bank_dir / "train", cfg.crops)
    val_bank = load_crop_bank(bank_dir / "val", cfg.val_crops)

    torch.set_num_threads(int(cfg.threads or 1))      # one core: the other keeps the machine usable
    net_cfg = CorrespondenceConfig(num_classes=len(specs), crop_size=cfg.crop_size, widths=cfg.widths,
                                   decoder_width=cfg.decoder_width, pad=cfg.pad, class_film=cfg.class_film)
    torch.manual_seed(cfg.seed)
    net = CorrespondenceNet(net_cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_bank) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_bank)} training crops are fewer than one batch of {cfg.batch_size}")
    total = steps_per_epoch * cfg.epochs
    prog = {"epoch": 0, "step": 0, "train_time_s": 0.0}
    history: list[dict] = []
    checkpoint = Path(checkpoint)
    if resume and checkpoint.is_file():
        ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        prog, history = ck["progress"], ck["history"]
        log.info("resuming the crop stage at epoch %d", prog["epoch"] + 1)

    def save() -> None:
        tmp = checkpoint.with_name(checkpoint.name + ".tmp")
        torch.save({"state_dict": net.state_dict(), "optimizer": opt.state_dict(), "progress": prog,
                    "history": history, "config": asdict(cfg)}, tmp)
        tmp.replace(checkpoint)

    t_call, t_prev = time.time(), prog["train_time_s"]
    while prog["epoch"] < cfg.epochs:
        epoch = prog["epoch"]
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_bank))
        net.train()
        bar = tqdm(range(steps_per_epoch), desc=f"crop stage epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not progress, dynamic_ncols=True, mininterval=5.0)
        run: dict[str, float] = {}
        for b in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(prog["step"], total, cfg)
            rng = np.random.default_rng([cfg.seed, epoch, b])
            batch = crop_batch(train_bank, order[b * cfg.batch_size:(b + 1) * cfg.batch_size], diameters, rng)
            out = net(batch["input"], batch["cls"])
            loss, parts = crop_loss(out, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            prog["step"] += 1
            for k, v in parts.items():
                run[k] = 0.95 * run.get(k, v) + 0.05 * v
            bar.set_postfix(loss=f"{run['loss']:.3f}", xyz=f"{run['xyz']:.3f}")
        bar.close()
        prog["train_time_s"] = t_prev + time.time() - t_call
        m = evaluate_correspondence(net, val_bank, models, centres, diameters, cfg.pad)
        m.update({"epoch": epoch + 1, "train_time_s": round(prog["train_time_s"], 1),
                  **{f"train_{k}": round(v, 4) for k, v in run.items()}})
        history.append(m)
        prog["epoch"] += 1
        tqdm.write(f"crop stage epoch {epoch + 1}: val coordinate error {m['xyz_err_mm']:.1f} mm, mask IoU "
                   f"{m['mask_iou']:.3f}; before ICP, ADD(-S) of {m['instances']} objects: PnP "
                   f"{100 * m['pnp_add_s']:.1f}%, with depth (3D-3D) {100 * m['rgbd_add_s']:.1f}%")
        save()
        store_in_model_file(model_file, "correspondence", {
            "config": net_cfg.to_dict(), "state_dict": {k: v.clone() for k, v in net.state_dict().items()},
            "training": {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                         "command": command, "bank_dir": str(bank_dir), "history": history,
                         "epochs_done": prog["epoch"], "train_time_s": round(prog["train_time_s"], 1)}})
        if cfg.time_budget_s is not None and time.time() - t_call >= cfg.time_budget_s:
            break
    return {"progress": prog, "history": history}
