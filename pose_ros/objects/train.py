"""Training loop for the keypoint network on synthetic renders (CPU or CUDA).

Why this structure: training on a shared 2-core CPU must survive interruption and fit a time
budget, so everything that defines progress (weights, optimizer, LR schedule, epoch, batch within
the epoch, metric history) lives in the model file itself, written atomically at every checkpoint;
``resume=True`` continues exactly where it stopped (the per-epoch shuffle is seeded, so the
remaining batches of an interrupted epoch are the ones that were not seen). The validation set is
rendered with a disjoint seed.

Loss: cross-entropy + soft dice on the segmentation (objects are a few percent of the pixels),
smooth-L1 on the predicted vectors of the pixel's ground-truth class (PVNet), smooth-L1 on the
centre offsets; both regression terms only inside object masks.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["TrainConfig", "train", "compute_loss", "evaluate_network", "resolve_device"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 10
    images: int = 2000                 # training scenes (pre-rendered once)
    val_images: int = 64               # held-out scenes, seed disjoint from training
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    seed: int = 0
    workers: int = 1                   # DataLoader workers (augmentation + targets)
    device: str = "auto"
    use_depth: bool = True
    input_width: int = 320
    input_height: int = 240
    widths: tuple[int, int, int, int] = (24, 40, 64, 96)
    decoder_width: int = 40
    crop_width: int | None = 192             # train on random crops (None: whole frames)
    crop_height: int | None = 144
    w_dice: float = 0.5
    w_vec: float = 1.0
    w_centre: float = 0.5
    checkpoint_every_steps: int = 100
    stop_after_steps: int | None = None      # stop (checkpointed) after this many steps in this call
    time_budget_s: float | None = None       # stop (checkpointed) after this wall-clock time in this call
    threads: int | None = None               # torch CPU threads (None: torch default)
    photo_dirs: tuple[str, ...] = ()         # real photos: backgrounds/textures (train part), FP monitor (held out)
    camera_K: tuple[float, ...] | None = None    # the user's camera (9 numbers) at camera_size
    camera_size: tuple[int, int] | None = None
    distance_range_m: tuple[float, float] = (0.35, 1.4)
    fp_monitor_images: int = 60              # held-out object-free photos checked per epoch
    fp_penalty: float = 5.0                  # checkpoint choice: val seg IoU - fp_penalty * FP pixel share
    hard_negatives: float = 0.0              # share of samples replaced by a whole training photo, no object,
                                             # drawn by how much of it the network labels (objects.hard_negatives)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch.cuda.is_available() is False; use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N]; got {device!r}")
    return device


def compute_loss(out: dict[str, Any], batch: dict[str, Any], num_classes: int, num_keypoints: int,
                 cfg: TrainConfig | None = None) -> tuple[Any, dict[str, float]]:
    """Total loss and its parts (floats for logging)."""
    import torch.nn.functional as F

    from pose_ros.objects.network import split_vector_channels

    cfg = cfg or TrainConfig()
    seg_t = batch["seg"]
    logits = out["seg"]
    ce = F.cross_entropy(logits, seg_t)
    prob = logits.softmax(1)[:, 1:]                                         # (B,C,h,w)
    onehot = F.one_hot(seg_t, num_classes + 1).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    dice = 1.0 - ((2 * inter + 1.0) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1.0)).mean()
    fg = seg_t > 0
    n_fg = fg.sum().clamp(min=1).float()
    vec = split_vector_channels(out["vec"], num_classes, num_keypoints)     # (B,C,K,2,h,w)
    B, C, K, _, h, w = vec.shape
    idx = (seg_t - 1).clamp(min=0).view(B, 1, 1, 1, h, w).expand(B, 1, K, 2, h, w)
    vec_c = vec.gather(1, idx).squeeze(1)                                   # (B,K,2,h,w)
    l_vec = F.smooth_l1_loss(vec_c, batch["vec"], reduction="none", beta=0.1).sum((1, 2))
    l_vec = (l_vec * fg).sum() / (n_fg * K * 2)
    l_ctr = F.smooth_l1_loss(out["centre"], batch["centre"], reduction="none", beta=0.1).sum(1)
    l_ctr = (l_ctr * fg).sum() / (n_fg * 2)
    total = ce + cfg.w_dice * dice + cfg.w_vec * l_vec + cfg.w_centre * l_ctr
    parts = {"loss": float(total.detach()), "ce": float(ce.detach()), "dice": float(dice.detach()),
             "vec": float(l_vec.detach()), "centre": float(l_ctr.detach())}
    return total, parts


def evaluate_network(net: Any, samples: Sequence[Any], keypoints_m: Sequence[np.ndarray], device: str = "cpu",
                     min_pixels: int = 20) -> dict[str, float]:
    """Validation on raw samples: foreground seg IoU, keypoint error of voting inside GT masks.

    kp_err_px is the per-instance mean keypoint error (median over instances) expressed in pixels of a
    640-wide image (the usual camera), kp_acc5 the fraction of instances with error < 5 px.
    """
    import torch

    from pose_ros.objects.network import prepare_input, split_vector_channels
    from pose_ros.objects.training_data import make_targets
    from pose_ros.objects.voting import VotingConfig, vote_keypoints

    cfg = net.config
    net.eval()
    inter = np.zeros(cfg.num_classes)
    union = np.zeros(cfg.num_classes)
    errs: list[float] = []
    rng = np.random.default_rng(0)
    vcfg = VotingConfig()
    with torch.no_grad():
        for s in samples:
            t = make_targets(s, keypoints_m, cfg.output_stride)
            x = torch.from_numpy(prepare_input(s.rgb, s.depth_m if cfg.use_depth else None, cfg))[None].to(device)
            out = net(x)
            pred = out["seg"][0].argmax(0).cpu().numpy()
            vec = split_vector_channels(out["vec"], cfg.num_classes, cfg.num_keypoints)[0].cpu().numpy()
            for c in range(cfg.num_classes):
                p, g = pred == c + 1, t["seg"] == c + 1
                inter[c] += (p & g).sum()
                union[c] += (p | g).sum()
            scale = 640.0 / cfg.input_width * cfg.output_stride
            for m, c in enumerate(s.cls):
                if c < 0:
                    continue
                sel = (t["inst"] == m) & (pred == c + 1)
                if (t["inst"] == m).sum() < min_pixels:
                    continue
                vs, us = np.nonzero(sel)
                if len(vs) < 6:
                    errs.append(float("inf"))
                    continue
                v = vec[c][:, :, vs, us].transpose(2, 0, 1)                # (n,K,2)
                r = vote_keypoints(np.stack([us, vs], 1).astype(np.float64), v, vcfg, rng)
                e = np.linalg.norm(r.keypoints_uv - t["kp_uv"][m], axis=1)
                errs.append(float(np.nanmean(np.where(r.valid, e, np.inf))) * scale)
    iou = inter / np.maximum(union, 1)
    errs_a = np.asarray(errs) if errs else np.asarray([np.inf])
    return {"seg_iou": float(iou[union > 0].mean()) if (union > 0).any() else 0.0,
            "kp_err_px": float(np.median(errs_a)), "kp_acc5": float((errs_a < 5.0).mean()),
            "instances": len(errs)}


def lr_at(step: int, total: int, cfg: Any) -> float:
    """Linear warm-up over ``cfg.warmup_steps``, then cosine to 2% of ``cfg.lr`` at ``total`` steps
    (both training stages use it)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))


def train(models: Sequence[Any], out_path: str | Path, cfg: TrainConfig, data_dir: str | Path,
          resume: bool = False, command: str = "", progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None, init_from: str | Path | None = None) -> dict[str, Any]:
    """Train (or resume) a keypoint network for ``models``; returns the final progress/metrics dict.

    ``init_from`` (a model file for the same objects) starts from its weights, keypoints and network
    shape with a fresh optimizer and LR schedule: more training on more scenes (or on a GPU later)
    without paying again for what a CPU run already learned. Its training history is kept in the
    new file under ``training.init_from``.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from pose_ros.objects.model_file import (fill_near_symmetries, load_model_file, object_spec_from_model,
                                             save_model_file)
    from pose_ros.objects.network import KeypointNet, NetworkConfig
    from pose_ros.objects.training_data import PrerenderedDataset, SceneConfig, prerender

    device = resolve_device(cfg.device)
    # One intra-op thread by default on CPU: the DataLoader worker takes the other core, and on a
    # shared machine oversubscribed OpenMP threads were measured ~5x slower than a single thread.
    threads = cfg.threads if cfg.threads else (1 if device == "cpu" else None)
    if threads:
        torch.set_num_threads(int(threads))
    out_path = Path(out_path)
    data_dir = Path(data_dir)
    specs = [object_spec_from_model(m, getattr(m, "source", "") or "", with_near_symmetries=True) for m in models]
    keypoints = [s.keypoints_m for s in specs]

    metrics: list[dict] = []
    prog = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "images_seen": 0, "finished": False, "train_time_s": 0.0}
    carried: dict[str, Any] = {}     # the crop stage depends on the objects only, so it survives retraining
    if resume and out_path.exists():
        loaded = load_model_file(out_path, meshes=list(models))
        net_cfg = loaded.config
        net = loaded.network.train().to(device)
        raw = loaded.raw
        metrics = list(raw.get("metrics", []))
        prog.update(raw.get("progress", {}))
        old_cfg = raw.get("training", {}).get("config", {})
        for k in ("images", "val_images", "batch_size", "seed", "use_depth", "input_width", "input_height"):
            if k in old_cfg and old_cfg[k] != getattr(cfg, k):
                log.warning("resume: keeping %s=%s from the checkpoint (asked %s)", k, old_cfg[k], getattr(cfg, k))
                setattr(cfg, k, old_cfg[k])
        if [o.name for o in loaded.objects] != [s.name for s in specs]:
            raise ValueError(f"resume: {out_path} was trained for {[o.name for o in loaded.objects]}, "
                             f"not {[s.name for s in specs]}; use another --out")
        specs = loaded.objects                      # keypoints stay those the network learned
        keypoints = [s.keypoints_m for s in specs]
    elif init_from is not None:
        base = load_model_file(init_from, meshes=list(models))
        if [o.name for o in base.objects] != [s.name for s in specs]:
            raise ValueError(f"--init: {init_from} was trained for {[o.name for o in base.objects]}, "
                             f"not {[s.name for s in specs]}")
        net_cfg = base.config
        net = base.network.train().to(device)
        specs = base.objects
        keypoints = [s.keypoints_m for s in specs]
        if cfg.use_depth != net_cfg.use_depth or (cfg.input_width, cfg.input_height) != (
                net_cfg.input_width, net_cfg.input_height):
            log.warning("--init: keeping the network shape of %s (depth=%s, input %dx%d)", init_from,
                        net_cfg.use_depth, net_cfg.input_width, net_cfg.input_height)
            cfg.use_depth, cfg.input_width, cfg.input_height = (net_cfg.use_depth, net_cfg.input_width,
                                                                net_cfg.input_height)
        raw = {}
        carried = {"correspondence": base.raw["correspondence"]} if base.raw.get("correspondence") else {}
        init_info = {"path": str(init_from), "training": base.raw.get("training", {}),
                     "metrics": base.raw.get("metrics", [])[-1:], "progress": base.raw.get("progress", {})}
    else:
        if resume:
            log.warning("resume: %s does not exist; starting a new training", out_path)
        net_cfg = NetworkConfig(num_classes=len(models), num_keypoints=len(keypoints[0]), use_depth=cfg.use_depth,
                                input_width=cfg.input_width, input_height=cfg.input_height,
                                widths=tuple(cfg.widths), decoder_width=cfg.decoder_width)
        torch.manual_seed(cfg.seed)
        net = KeypointNet(net_cfg).to(device)
        raw = {}

    if resume and raw.get("correspondence"):
        carried = {"correspondence": raw["correspondence"]}
    fill_near_symmetries(specs, list(models))       # files from before they were stored (resume / --init)
    f = net_cfg.input_width / 320.0
    scene_cfg = SceneConfig(width=net_cfg.input_width, height=net_cfg.input_height,
                            fx_range=(250.0 * f, 330.0 * f), camera_K=cfg.camera_K, camera_size=cfg.camera_size,
                            photo_dirs=tuple(cfg.photo_dirs), distance_range_m=tuple(cfg.distance_range_m))
    if cfg.hard_negatives > 0 and not cfg.photo_dirs:
        raise ValueError("hard negatives need real photos (--backgrounds DIR)")
    from pose_ros.objects.training_data import render_cameras

    K_photos = render_cameras(scene_cfg, 1, cfg.seed)[0].K     # object-free photos: monitor and hard negatives
    fp_frames = []
    if cfg.photo_dirs and cfg.fp_monitor_images > 0:
        from pose_ros.objects.false_positive_monitor import object_free_frames

        fp_frames = object_free_frames(cfg.photo_dirs, K_photos, net_cfg.input_width, net_cfg.input_height,
                                       cfg.fp_monitor_images, seed=cfg.seed)
    train_dir, val_dir = data_dir / "train", data_dir / "val"
    prerender(models, train_dir, cfg.images, seed=cfg.seed, cfg=scene_cfg, progress=progress)
    prerender(models, val_dir, cfg.val_images, seed=cfg.seed + 1_000_003, cfg=scene_cfg, progress=progress)
    crop = (cfg.crop_width, cfg.crop_height) if cfg.crop_width and cfg.crop_height else None
    ds = PrerenderedDataset(train_dir, keypoints, net_cfg, augment_data=True, seed=cfg.seed, limit=cfg.images,
                            crop=crop)
    val_ds = PrerenderedDataset(val_dir, keypoints, net_cfg, augment_data=False, limit=cfg.val_images)
    if cfg.hard_negatives > 0:
        from pose_ros.objects.hard_negatives import HardNegativeDataset
        from pose_ros.synth.photo_bank import PhotoBank

        ds = HardNegativeDataset(ds, PhotoBank.from_dirs(cfg.photo_dirs, split="train", check_readable=False),
                                 K_photos, cfg.hard_negatives, seed=cfg.seed)
    val_samples = [val_ds.raw(i) for i in range(len(val_ds))]

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if raw.get("optimizer"):
        opt.load_state_dict(raw["optimizer"])
    steps_per_epoch = len(ds) // cfg.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"--images {len(ds)} is smaller than the batch size {cfg.batch_size}")
    total_steps = steps_per_epoch * cfg.epochs
    training_info = {"config": cfg.to_dict(), "command": command, "data_dir": str(data_dir),
                     "scene_config": scene_cfg.to_dict(), "device": device, "torch": torch.__version__}
    if resume and raw.get("training", {}).get("init_from"):
        training_info["init_from"] = raw["training"]["init_from"]
    elif init_from is not None:
        training_info["init_from"] = init_info

    def save(finished: bool = False) -> None:
        prog["finished"] = finished
        save_model_file(out_path, net, specs, training=training_info, metrics=metrics, progress=prog,
                        optimizer_state=opt.state_dict(), extra=carried)

    t_call = time.time()
    t_prev = prog.get("train_time_s", 0.0)
    steps_this_call = 0
    stopped = False
    try:
        while prog["epoch"] < cfg.epochs and not stopped:
            epoch = prog["epoch"]
            ds.set_epoch(epoch)
            if cfg.hard_negatives > 0:
                from pose_ros.objects.hard_negatives import photo_object_shares

                shares = photo_object_shares(net, ds.bank, ds.K, net_cfg.input_width, net_cfg.input_height,
                                             seed=cfg.seed + epoch, device=device)
                ds.set_weights(shares)
                if progress:
                    print(f"hard negatives: the network labels {100 * shares.mean():.2f}% of the {len(shares)} "
                          f"training photos' pixels as an object (max {100 * shares.max():.1f}%)", flush=True)
            perm = np.random.default_rng([cfg.seed, epoch]).permutation(len(ds))[:steps_per_epoch * cfg.batch_size]
            start_b = prog["batch_in_epoch"]
            order = perm[start_b * cfg.batch_size:]
            loader = DataLoader(torch.utils.data.Subset(ds, order.tolist()), batch_size=cfg.batch_size,
                                shuffle=False, num_workers=cfg.workers, drop_last=True,
                                persistent_workers=False)
            net.train()
            bar = tqdm(loader, total=steps_per_epoch, initial=start_b, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="batch", disable=not progress, dynamic_ncols=True)
            run: dict[str, float] = {}
            for batch in bar:
                for g in opt.param_groups:
                    g["lr"] = lr_at(prog["step"], total_steps, cfg)
                batch = {k: v.to(device) for k, v in batch.items()}
                out = net(batch["input"])
                loss, parts = compute_loss(out, batch, net_cfg.num_classes, net_cfg.num_keypoints, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                opt.step()
                prog["step"] += 1
                prog["batch_in_epoch"] += 1
                prog["images_seen"] += cfg.batch_size
                steps_this_call += 1
                for k, v in parts.items():
                    run[k] = 0.9 * run.get(k, v) + 0.1 * v
                bar.set_postfix(loss=f"{run['loss']:.3f}", vec=f"{run['vec']:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
                prog["train_time_s"] = t_prev + time.time() - t_call
                if prog["step"] % cfg.checkpoint_every_steps == 0:
                    save()
                if (cfg.stop_after_steps is not None and steps_this_call >= cfg.stop_after_steps) or \
                        (cfg.time_budget_s is not None and time.time() - t_call >= cfg.time_budget_s):
                    stopped = True
                    break
            bar.close()
            if prog["batch_in_epoch"] >= steps_per_epoch:
                m = evaluate_network(net, val_samples, keypoints, device)
                if fp_frames:
                    from pose_ros.objects.false_positive_monitor import false_positive_stats, network_class_maps

                    m.update(false_positive_stats(network_class_maps(net, fp_frames, device)))
                    m["selection"] = m["seg_iou"] - cfg.fp_penalty * m["fp_pixel_share"]
                m.update({"epoch": epoch + 1, "step": prog["step"], "images_seen": prog["images_seen"],
                          "train_time_s": round(prog["train_time_s"], 1),
                          **{f"train_{k}": round(v, 4) for k, v in run.items()}})
                metrics.append(m)
                log.info("epoch %d: %s", epoch + 1, m)
                best_path = out_path.with_name(out_path.stem + ".best" + out_path.suffix)
                is_best = "selection" in m and m["selection"] >= max(
                    (x.get("selection", -np.inf) for x in metrics[:-1]), default=-np.inf)
                if progress:
                    fp = (f" object-free photos: {100 * m['fp_pixel_share']:.2f}% px, "
                          f"{m['fp_blobs_per_image']:.2f} blobs/img{' (best)' if is_best else ''}") if "selection" in m else ""
                    tqdm.write(f"epoch {epoch + 1}: val seg_iou={m['seg_iou']:.3f} kp_err_px={m['kp_err_px']:.1f} "
                               f"kp_acc5={m['kp_acc5']:.2f} train_loss={run.get('loss', float('nan')):.3f}{fp}")
                if on_epoch:
                    on_epoch(m)
                prog["epoch"] += 1
                prog["batch_in_epoch"] = 0
                if is_best:        # the checkpoint chosen on real object-free photos + val IoU
                    prog["best_epoch"] = epoch + 1
                    save()
                    import shutil

                    shutil.copyfile(out_path, best_path)
            save()
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM handler, a dead DataLoader worker...): keep what was learned;
        # --resume continues from the last completed batch.
        save()
        raise
    finished = prog["epoch"] >= cfg.epochs
    save(finished=finished)
    return {"progress": dict(prog), "metrics": metrics, "path": str(out_path)}
