"""Training of the crop correspondence stage on the first stage's pre-rendered scenes.

Why reuse those renders: they already hold what makes renders look real (photo backgrounds and
clutter, camera photometry, noisy depth through the user's camera), the poses and the instance masks.
One crop per visible instance (box from its visible mask, jittered like a detector's), and its
targets at the output resolution come from the scene itself: the rendered depth back-projected
through the camera and moved into the object's frame gives the model point each pixel shows. The
poses in the shards are already the canonical ones for symmetric objects, so the targets are
consistent across symmetric views. Some crops are negatives: a distractor, or an object asked for
as the wrong class, with an empty target mask, so that the mask head also says "not this object".

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

from pose_ros.objects.crop_geometry import crop_box_from_mask, crop_image, crop_to_image_px, jitter_box

__all__ = ["CropTrainConfig", "CropDataset", "train_correspondence", "evaluate_correspondence"]

log = logging.getLogger(__name__)


@dataclass
class CropTrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    crop_size: int = 64
    widths: tuple[int, int, int] = (32, 64, 128)
    decoder_width: int = 48
    pad: float = 1.4
    min_visible_px: int = 80          # instance pixels at the render resolution
    wrong_class_share: float = 0.05   # object crops asked for as another class (target mask empty);
    #                                   distractor crops (kind 1) are negatives too, at their natural share
    seed: int = 0
    threads: int | None = None
    val_images: int = 64
    time_budget_s: float | None = None


class CropDataset:
    """(image, instance) crops of a pre-rendered data dir with their targets (module doc)."""

    def __init__(self, data_dir: str | Path, centres_m: Sequence[np.ndarray], diameters_m: Sequence[float],
                 cfg: CropTrainConfig, augment_data: bool = True, limit_images: int | None = None,
                 half_extents_m: Sequence[np.ndarray] | None = None) -> None:
        from tqdm import tqdm

        from pose_ros.objects.training_data import PrerenderedDataset

        self.images = PrerenderedDataset(data_dir, [np.zeros((4, 3))], None, augment_data=False, limit=limit_images)
        self.centres = [np.asarray(c, np.float64) for c in centres_m]
        self.diameters = [float(d) for d in diameters_m]
        # targets outside the model's box (+5 mm) come from noisy or mixed depth at edges: not trained on
        self.limits = [np.asarray(h, np.float64) + 0.005 if half_extents_m is not None else np.full(3, 0.6 * d)
                       for h, d in zip(half_extents_m if half_extents_m is not None else self.diameters, self.diameters)]
        self.cfg = cfg
        self.augment = augment_data
        self.epoch = 0
        self.items: list[tuple[int, int, int]] = []      # (image, instance, kind) kind 0 object, 1 distractor
        for i in tqdm(range(len(self.images)), desc="index crops", unit="img", leave=False, mininterval=2.0):
            si, j = self.images.index[i]
            inst = np.asarray(self.images._arr("inst", si)[j])
            cls = self.images.metas[si]["cls"][j]
            counts = np.bincount(inst.ravel().astype(np.int64) + 1, minlength=len(cls) + 1)[1:]
            for k, n in enumerate(counts[:len(cls)]):
                if n >= cfg.min_visible_px and cls[k] >= -1:
                    self.items.append((i, k, 0 if cls[k] >= 0 else 1))
        if not any(kind == 0 for _, _, kind in self.items):
            raise ValueError(f"{data_dir}: no object instance with >= {cfg.min_visible_px} visible pixels")

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def sample(self, idx: int, rng: np.random.Generator | None) -> dict[str, np.ndarray] | None:
        """Input and targets of one crop; None for an item that cannot be cut (empty mask)."""
        from pose_ros.objects.correspondence_net import crop_input
        from pose_ros.objects.training_data import augment

        i, k, kind = self.items[idx]
        raw = self.images.raw(i)
        C = len(self.centres)
        vis_img = raw.inst == k
        box = crop_box_from_mask(vis_img, self.cfg.pad)
        if box is None:
            return None
        if rng is not None:
            box = jitter_box(box, rng)
        c = int(raw.cls[k])
        negative = kind == 1
        if rng is not None and not negative and rng.random() < self.cfg.wrong_class_share and C > 1:
            c = int((c + rng.integers(1, C)) % C)                  # asked for the wrong class
            negative = True
        if c < 0:
            c = int(rng.integers(0, C)) if rng is not None else 0
        S, s = self.cfg.crop_size, self.cfg.crop_size // 2
        rgb_c = crop_image(raw.rgb, box, S)
        dep_c = crop_image(raw.depth_m, box, S, nearest=True)
        d_vis = raw.depth_m[vis_img]
        d_vis = d_vis[d_vis > 0]
        z_ref = float(np.median(d_vis)) if len(d_vis) >= 10 else 0.0
        if rng is not None:
            rgb_c, dep_c = augment(rgb_c, dep_c, rng)
            z_ref += float(rng.normal(0, 0.08)) * self.diameters[c]
        x = crop_input(rgb_c, dep_c, z_ref, self.diameters[c])
        # targets at the output resolution, sampled at the output pixels' centres
        inst_t = crop_image((raw.inst + 1).astype(np.uint8), box, s, nearest=True).astype(np.int16) - 1
        mask_t = (inst_t == k) & (not negative)
        xyz_t = np.zeros((3, s, s), np.float32)
        valid = np.zeros((s, s), bool)
        if mask_t.any():
            z = crop_image(raw.depth_m, box, s, nearest=True)
            jj, ii = np.mgrid[0:s, 0:s]
            uv = crop_to_image_px(np.stack([ii.ravel(), jj.ravel()], 1), box, s)
            K = raw.K
            zz = z.ravel().astype(np.float64)
            X_cam = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * zz, (uv[:, 1] - K[1, 2]) / K[1, 1] * zz, zz], 1)
            T = raw.T_cam_obj[k]
            X_obj = (X_cam - T[:3, 3]) @ T[:3, :3]
            inside = (np.abs(X_obj - self.centres[c]) <= self.limits[c]).all(1).reshape(s, s)
            n = ((X_obj - self.centres[c]) / self.diameters[c]).reshape(s, s, 3).transpose(2, 0, 1)
            valid = mask_t & (z > 0) & inside
            xyz_t = np.where(valid[None], n, 0.0).astype(np.float32)
        return {"input": x, "cls": np.int64(c), "mask": mask_t.astype(np.float32), "xyz": xyz_t,
                "valid": valid.astype(np.float32)}

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None) -> dict[str, Any]:
        import torch

        got = [b for b in (self.sample(int(i), rng) for i in indices) if b is not None]
        if not got:
            raise ValueError("no crop could be cut for this batch (every mask empty)")
        return {k: torch.from_numpy(np.stack([g[k] for g in got])) for k in got[0]}


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


def evaluate_correspondence(net: Any, ds: CropDataset, models: Sequence[Any], max_items: int = 200) -> dict[str, float]:
    """Held-out figures: coordinate error (mm) on visible pixels, mask IoU, and the share of objects
    whose pose from these correspondences alone (no ICP) is within 0.1 d ADD(-S): by PnP and, with the
    scene's depth, by 3D-3D RANSAC."""
    import torch

    from pose_ros.core.camera import PinholeCamera
    from pose_ros.eval.pose_metrics import add_s_error
    from pose_ros.objects.correspondence_pose import (CropMaps, correspondences_from_maps, pnp_from_correspondences,
                                                      pose_from_correspondences)

    net.eval()
    errs_mm, ious, ok, ok3d = [], [], [], []
    items = [n for n, it in enumerate(ds.items) if it[2] == 0][:max_items]
    for start in range(0, len(items), 32):
        idx = items[start:start + 32]
        b = ds.batch(idx, None)
        with torch.no_grad():
            out = net(b["input"], b["cls"])
        prob = torch.sigmoid(out["mask"]).numpy()
        for r, n in enumerate(idx):
            i, k, _ = ds.items[n]
            raw = ds.images.raw(i)
            c = int(b["cls"][r])
            d = ds.diameters[c]
            m_t = b["mask"][r].numpy() > 0.5
            m_p = prob[r] > 0.5
            ious.append((m_t & m_p).sum() / max(1, (m_t | m_p).sum()))
            v = b["valid"][r].numpy() > 0.5
            if v.any():
                e = np.abs(out["xyz"][r].numpy() - b["xyz"][r].numpy()).sum(0)[v] * d * 1e3 / 3
                errs_mm.append(float(np.median(e)))
            box = crop_box_from_mask(raw.inst == k, ds.cfg.pad)
            H, W = raw.rgb.shape[:2]
            cam = PinholeCamera(raw.K, W, H)
            cm = CropMaps(prob[r], out["xyz"][r].numpy(), out["log_sigma"][r].numpy())
            corr = correspondences_from_maps(cm, box, ds.centres[c], d, ds.cfg.pad)
            res = pnp_from_correspondences(corr, ds.centres[c], cam, d) if len(corr.uv) >= 8 else None
            good = False
            if res is not None and res.ok:
                good = add_s_error(models[c], res.T_cam_obj, raw.T_cam_obj[k]) < 0.1 * d
            ok.append(good)
            res = pose_from_correspondences(corr, ds.centres[c], cam, d, raw.depth_m) if len(corr.uv) >= 8 else None
            ok3d.append(res is not None and res.ok and
                        add_s_error(models[c], res.T_cam_obj, raw.T_cam_obj[k]) < 0.1 * d)
    return {"xyz_err_mm": float(np.median(errs_mm)) if errs_mm else float("nan"),
            "mask_iou": float(np.mean(ious)) if ious else 0.0,
            "pnp_add_s": float(np.mean(ok)) if ok else 0.0, "rgbd_add_s": float(np.mean(ok3d)) if ok3d else 0.0,
            "instances": len(ok)}


def train_correspondence(model_file: str | Path, models: Sequence[Any], data_dir: str | Path, cfg: CropTrainConfig,
                         checkpoint: str | Path, resume: bool = False, command: str = "",
                         progress: bool = True) -> dict[str, Any]:
    """Train the crop stage for the objects of ``model_file`` and store it in that file
    (key ``correspondence``) after every epoch; ``checkpoint`` keeps the optimizer for ``resume``."""
    import torch
    from tqdm import tqdm

    from pose_ros.objects.correspondence_net import CorrespondenceConfig, CorrespondenceNet
    from pose_ros.objects.model_file import load_model_file, store_in_model_file
    from pose_ros.objects.train import lr_at

    torch.set_num_threads(int(cfg.threads or 1))      # one core: the other keeps the machine usable
    loaded = load_model_file(model_file)
    specs = loaded.objects
    if len(models) != len(specs):
        raise ValueError(f"{model_file} has {len(specs)} objects but {len(models)} meshes were given")
    centres = [s.keypoints_m[-1] for s in specs]
    diameters = [s.diameter_m for s in specs]
    data_dir = Path(data_dir)
    halves = [(m.points_m.max(0) - m.points_m.min(0)) / 2 for m in models]
    train_ds = CropDataset(data_dir / "train", centres, diameters, cfg, half_extents_m=halves)
    val_ds = CropDataset(data_dir / "val", centres, diameters, cfg, augment_data=False, limit_images=cfg.val_images,
                         half_extents_m=halves)
    net_cfg = CorrespondenceConfig(num_classes=len(specs), crop_size=cfg.crop_size, widths=cfg.widths,
                                   decoder_width=cfg.decoder_width, pad=cfg.pad)
    torch.manual_seed(cfg.seed)
    net = CorrespondenceNet(net_cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_ds) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_ds)} training crops are fewer than one batch of {cfg.batch_size}")
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
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_ds))
        net.train()
        bar = tqdm(range(steps_per_epoch), desc=f"crop stage epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not progress, dynamic_ncols=True, mininterval=5.0)
        run: dict[str, float] = {}
        for b in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(prog["step"], total, cfg)
            rng = np.random.default_rng([cfg.seed, epoch, b])
            batch = train_ds.batch(order[b * cfg.batch_size:(b + 1) * cfg.batch_size], rng)
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
        m = evaluate_correspondence(net, val_ds, models)
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
                         "command": command, "data_dir": str(data_dir), "history": history,
                         "epochs_done": prog["epoch"], "train_time_s": round(prog["train_time_s"], 1)}})
        if cfg.time_budget_s is not None and time.time() - t_call >= cfg.time_budget_s:
            break
    return {"progress": prog, "history": history}
