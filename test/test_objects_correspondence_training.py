"""Training of the crop correspondence stage on a tiny crop bank (real renders, real files).

The banks are rendered by ``train_correspondence`` itself, as ``pose-ros train-crops`` does, for the
demo meshes at 640x480 with noise-free depth. The model file is a copy of the shipped
models/demo_objects.pt in a temporary directory. The crops' geometry is tested in
test_objects_crop_rendering.py, their storage in test_objects_crop_bank.py.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pose_ros.core.camera import PinholeCamera
from pose_ros.objects.correspondence_training import (CropTrainConfig, crop_batch, crop_loss,
                                                      evaluate_correspondence, train_correspondence)
from pose_ros.objects.crop_bank import load_crop_bank
from pose_ros.objects.training_data import SceneConfig, full_resolution_scene_config

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "demo_objects.pt"
TRAIN_CFG = dict(batch_size=8, widths=(12, 16, 24), decoder_width=12, crop_size=64, warmup_steps=2, lr=3e-3,
                 crops=40, val_crops=12, render_workers=1, threads=1, seed=0)
SCENES = full_resolution_scene_config(SceneConfig(depth_noise=False))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models():
    from pose_ros.core.object_model import load_object_dir

    return load_object_dir(REPO / "meshes")      # mug, box, bottle: the demo model's class order


@pytest.fixture(scope="module")
def trained(tmp_path_factory, models):
    """Copy of the demo model: one epoch, then resumed to two; what each run left behind."""
    if not MODEL.is_file():
        pytest.skip(f"shipped model missing: {MODEL}")
    from pose_ros.objects.model_file import load_model_file

    d = tmp_path_factory.mktemp("crop_model")
    path = d / "demo_objects.pt"
    shutil.copyfile(MODEL, path)
    ckpt = d / "demo_objects.pt.crops.ckpt"
    bank = d / "demo_objects.crops"
    r1 = train_correspondence(path, models, SCENES, bank, CropTrainConfig(epochs=1, **TRAIN_CFG), ckpt,
                              command="pytest", progress=False)
    after1 = load_model_file(path).raw["correspondence"]
    ck1 = torch.load(ckpt, weights_only=False)
    # mark the checkpoint: training is deterministic, so only a marker tells "resumed" from "redone"
    marked = {**ck1, "history": [{**ck1["history"][0], "marker": "from the checkpoint"}],
              "progress": {**ck1["progress"], "train_time_s": ck1["progress"]["train_time_s"] + 1000.0}}
    torch.save(marked, ckpt)
    bank_mtime = (bank / "train" / "crops_00000.npz").stat().st_mtime_ns
    r2 = train_correspondence(path, models, SCENES, bank, CropTrainConfig(epochs=2, **TRAIN_CFG), ckpt, resume=True,
                              command="pytest", progress=False)
    return {"path": path, "ckpt": ckpt, "bank": bank, "r1": r1, "after1": after1, "ck1": ck1, "r2": r2,
            "bank_mtime": bank_mtime}


@pytest.fixture(scope="module")
def train_bank(trained):
    return load_crop_bank(trained["bank"] / "train")


def test_banks_rendered_for_training(trained, train_bank):
    val = load_crop_bank(trained["bank"] / "val")
    assert len(train_bank) == 40 and len(val) == 12
    assert val.render_depth_m is not None and train_bank.render_depth_m is None   # only held-out crops keep it
    assert not np.array_equal(train_bank.rgb[:12], val.rgb)                        # another seed
    # the resumed run reused the bank
    assert (trained["bank"] / "train" / "crops_00000.npz").stat().st_mtime_ns == trained["bank_mtime"]


def test_crop_batch(train_bank, models):
    d = [m.diameter_m for m in models]
    S, s = 64, 32
    b = crop_batch(train_bank, [0, 1, 2], d, np.random.default_rng(1))
    assert b["input"].shape == (3, 4, S, S) and b["input"].dtype == torch.float32
    assert b["cls"].shape == (3,) and b["cls"].dtype == torch.int64
    assert b["xyz"].shape == (3, 3, s, s) and b["mask"].shape == (3, s, s) and b["valid"].shape == (3, s, s)
    assert set(np.unique(b["mask"].numpy())) <= {0.0, 1.0} and torch.all(b["valid"] <= b["mask"])
    # without rng (validation) as rendered and deterministic; with a seeded rng reproducible, augmented
    a0, a1 = crop_batch(train_bank, [3], d, None), crop_batch(train_bank, [3], d, None)
    assert all(torch.equal(a0[k], a1[k]) for k in a0)
    r0, r1 = crop_batch(train_bank, [3], d, np.random.default_rng(9)), crop_batch(train_bank, [3], d, np.random.default_rng(9))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert not torch.equal(r0["input"], a0["input"]) and torch.equal(r0["xyz"], a0["xyz"])   # targets untouched


def test_crop_loss_parts(train_bank, models):
    b = crop_batch(train_bank, range(8), [m.diameter_m for m in models], None)
    B, s = b["mask"].shape[0], b["mask"].shape[1]
    xyz = b["xyz"].clone().requires_grad_(True)
    out = {"mask": torch.where(b["mask"] > 0.5, 20.0, -20.0), "xyz": xyz, "log_sigma": torch.full((B, s, s), -7.0)}
    loss, parts = crop_loss(out, b)
    assert parts["mask"] < 1e-6 and parts["xyz"] == 0.0          # perfect prediction
    assert torch.isfinite(loss)
    # coordinates count on valid pixels only; the uncertainty term does not pull on them
    off = b["xyz"] + 0.1 * (1 - b["valid"])[:, None]
    l2, p2 = crop_loss({**out, "xyz": off}, b)
    assert p2["xyz"] == 0.0 and float(l2.detach()) == pytest.approx(float(loss.detach()))
    xyz2 = (b["xyz"] + 0.05).requires_grad_(True)
    l3, p3 = crop_loss({**out, "xyz": xyz2}, b)
    assert p3["xyz"] == pytest.approx(0.15, rel=1e-4)             # L1 over 3 coordinates
    l3.backward()
    nv = float(b["valid"].sum())
    assert torch.allclose(xyz2.grad, 3.0 * b["valid"][:, None].expand_as(xyz2) / nv, atol=1e-6)
    # all-negative batch: finite, no coordinate term
    neg = {k: v for k, v in b.items()}
    neg["mask"], neg["valid"] = torch.zeros_like(b["mask"]), torch.zeros_like(b["valid"])
    ln, pn = crop_loss({**out, "mask": torch.full_like(b["mask"], -20.0)}, neg)
    assert torch.isfinite(ln) and pn["xyz"] == 0.0 and pn["mask"] < 1e-6


def test_crop_loss_decreases_on_a_fixed_batch(train_bank, models):
    from pose_ros.objects.correspondence_net import CorrespondenceConfig, CorrespondenceNet

    torch.manual_seed(0)
    net = CorrespondenceNet(CorrespondenceConfig(num_classes=3, crop_size=64, widths=(12, 16, 24), decoder_width=12))
    b = crop_batch(train_bank, range(8), [m.diameter_m for m in models], np.random.default_rng(2))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses, xyz = [], []
    net.train()
    for _ in range(30):
        loss, parts = crop_loss(net(b["input"], b["cls"]), b)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        xyz.append(parts["xyz"])
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    assert np.mean(xyz[-5:]) < 0.8 * np.mean(xyz[:3]), xyz


def test_train_stores_the_stage_in_the_model_file(trained, models):
    from pose_ros.objects.correspondence_net import CorrespondenceConfig
    from pose_ros.objects.model_file import load_model_file

    r1, e1 = trained["r1"], trained["after1"]
    assert r1["progress"]["epoch"] == 1 and len(r1["history"]) == 1
    h = r1["history"][0]
    assert h["epoch"] == 1 and h["instances"] >= 3
    assert 0.0 <= h["mask_iou"] <= 1.0 and 0.0 <= h["pnp_add_s"] <= 1.0 and np.isfinite(h["xyz_err_mm"])
    assert np.isfinite(h["train_loss"])
    cfg = CorrespondenceConfig.from_dict(e1["config"])
    assert cfg.num_classes == 3 and cfg.widths == (12, 16, 24) and cfg.crop_size == 64
    assert e1["training"]["epochs_done"] == 1 and e1["training"]["command"] == "pytest"
    assert e1["training"]["history"] == r1["history"]
    # the first stage of the file is untouched
    orig, new = load_model_file(MODEL), load_model_file(trained["path"], meshes=models)
    # the shipped stage (its own widths) was replaced by this run's
    assert CorrespondenceConfig.from_dict(orig.raw["correspondence"]["config"]).widths != (12, 16, 24)
    for k, v in orig.raw["state_dict"].items():
        assert torch.equal(v, new.raw["state_dict"][k])
    assert new.raw["objects"] == orig.raw["objects"]
    assert not trained["path"].with_name(trained["path"].name + ".tmp").exists()


def test_resume_continues_from_the_checkpoint(trained, models):
    r1, r2, ck1 = trained["r1"], trained["r2"], trained["ck1"]
    steps = r1["progress"]["step"]
    assert steps >= 1 and ck1["progress"]["epoch"] == 1
    assert r2["progress"]["epoch"] == 2 and r2["progress"]["step"] == 2 * steps
    assert [h["epoch"] for h in r2["history"]] == [1, 2]
    # epoch 1 taken over from the checkpoint, not trained again; the time goes on from it
    assert r2["history"][0] == {**r1["history"][0], "marker": "from the checkpoint"}
    assert "marker" not in r2["history"][1]
    assert r2["progress"]["train_time_s"] >= r1["progress"]["train_time_s"] + 1000.0
    ck2 = torch.load(trained["ckpt"], weights_only=False)
    assert ck2["progress"]["epoch"] == 2
    assert {int(s["step"]) for s in ck2["optimizer"]["state"].values()} == {2 * steps}
    from pose_ros.objects.model_file import load_model_file

    e2 = load_model_file(trained["path"]).raw["correspondence"]
    assert e2["training"]["epochs_done"] == 2 and len(e2["training"]["history"]) == 2
    changed = [k for k, v in e2["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, trained["after1"]["state_dict"][k])]
    assert changed                                       # the second epoch trained the weights
    # resuming a finished run trains nothing more and leaves the files alone
    mtime = trained["path"].stat().st_mtime_ns
    r3 = train_correspondence(trained["path"], models, SCENES, trained["bank"], CropTrainConfig(epochs=2, **TRAIN_CFG),
                              trained["ckpt"], resume=True, progress=False)
    assert r3["progress"] == r2["progress"] and r3["history"] == r2["history"]
    assert trained["path"].stat().st_mtime_ns == mtime


def _frame(models, seed=5):
    from pose_ros.synth.renderer import RgbdRenderer
    from pose_ros.synth.scene_sampler import TabletopSceneSampler

    cam = PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)
    rng = np.random.default_rng(seed)
    sc = TabletopSceneSampler(models, cam, rng=rng, distance_m=(0.5, 0.7), n_distractors=(0, 0)).sample(
        3, model_indices=[0, 1, 2])
    r = RgbdRenderer(cam).render(sc.render_list(models), rng=rng, table=sc.table)
    return cam, r, sc


def test_stage_from_trained_file_infers_on_a_rendered_frame(trained, models):
    from pose_ros.objects.correspondence_pose import (CorrespondenceStage, instance_depth_reference,
                                                      stage_from_model)
    from pose_ros.objects.model_file import load_model_file

    stage = stage_from_model(load_model_file(trained["path"]))
    assert isinstance(stage, CorrespondenceStage)
    assert stage.training_info["epochs_done"] == 2
    cam, r, sc = _frame(models)
    masks = [r.instance_mask == k for k in range(len(sc.model_indices))]
    boxes = stage.boxes(masks)
    assert all(b is not None for b in boxes)
    classes = [m + 1 for m in sc.model_indices]
    maps = stage.infer(r.rgb, r.depth_m, boxes, classes, [instance_depth_reference(r.depth_m, m) for m in masks],
                       [models[m].diameter_m for m in sc.model_indices])
    assert len(maps) == 3
    for m in maps:
        assert m.mask_prob.shape == (32, 32) and m.xyz.shape == (3, 32, 32) and m.log_sigma.shape == (32, 32)
        assert np.isfinite(m.xyz).all() and np.abs(m.xyz).max() <= 0.75


@pytest.mark.parametrize("use_stage", [True, False])
def test_estimator_uses_the_stage_of_the_model_file(trained, models, use_stage):
    from pose_ros.objects.correspondence_pose import CorrespondenceStage
    from pose_ros.objects.estimator import PoseEstimator

    est = PoseEstimator(trained["path"], meshes=REPO / "meshes", use_correspondence_stage=use_stage, threads=1,
                        depth_search=False, score_threshold=0.0)
    cam, r, sc = _frame(models)
    res = est.estimate(r.rgb, r.depth_m, cam)
    t = est.last_timing_ms
    assert "crop_network" in t and "crop_pnp" in t
    assert res                                         # every posed instance is kept at threshold 0
    if use_stage:
        assert isinstance(est.correspondence, CorrespondenceStage)
        assert est.correspondence.config.widths == (12, 16, 24)
        assert t["crop_network"] > 0.0                 # it ran on the frame's instances
    else:
        assert est.correspondence is None
        assert t["crop_network"] == 0.0 and t["crop_pnp"] == 0.0
        assert all(p.stats.correspondences == "votes" for p in res)
    for p in res:
        assert p.T_cam_obj.shape == (4, 4) and np.isfinite(p.T_cam_obj).all() and 0.0 <= p.score <= 1.0
        assert p.stats.correspondences in ("crop", "votes")
        assert (p.stats.correspondences == "crop") == np.isfinite(p.stats.crop_visible_fraction)


def test_evaluate_correspondence_reports_ranges(trained, models):
    from pose_ros.objects.correspondence_pose import stage_from_model
    from pose_ros.objects.model_file import load_model_file

    stage = stage_from_model(load_model_file(trained["path"]))
    val = load_crop_bank(trained["bank"] / "val")
    args = (models, [m.keypoints_m[-1] for m in models], [m.diameter_m for m in models], 1.4)
    m = evaluate_correspondence(stage.net, val, *args)
    assert m["instances"] == int(val.positive.sum()) >= 8
    assert 0.0 <= m["mask_iou"] <= 1.0 and 0.0 <= m["pnp_add_s"] <= 1.0 and 0.0 <= m["rgbd_add_s"] <= 1.0
    assert np.isfinite(m["xyz_err_mm"]) and m["xyz_err_mm"] > 0
    assert m == evaluate_correspondence(stage.net, val, *args)   # deterministic
