"""Training of the crop correspondence stage on a tiny pre-rendered data dir (real renders, real files).

The data dir is rendered once per module with ``prerender`` as ``pose-ros train`` does (320x240, no
photo dirs). Depth noise is off so that the coordinate targets can be checked against the meshes'
surfaces. The model file is a copy of the shipped models/demo_objects.pt in tmp_path.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pose_ros.core.camera import PinholeCamera
from pose_ros.objects.correspondence_training import (CropDataset, CropTrainConfig, crop_loss,
                                                      evaluate_correspondence, train_correspondence)
from pose_ros.objects.crop_geometry import crop_box_from_mask, crop_to_image_px

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "demo_objects.pt"
TRAIN_CFG = dict(batch_size=8, widths=(12, 16, 24), decoder_width=12, crop_size=64, warmup_steps=2, lr=3e-3,
                 val_images=3, threads=1, seed=0)


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
def data_dir(tmp_path_factory, models):
    from pose_ros.objects.training_data import SceneConfig, prerender

    d = tmp_path_factory.mktemp("crop_data")
    cfg = SceneConfig(width=320, height=240, depth_noise=False)
    prerender(models, d / "train", 6, seed=0, cfg=cfg, workers=1, progress=False)
    prerender(models, d / "val", 3, seed=1_000_003, cfg=cfg, workers=1, progress=False)
    return d


@pytest.fixture(scope="module")
def dataset(data_dir, models):
    return CropDataset(data_dir / "train", [m.keypoints_m[-1] for m in models], [m.diameter_m for m in models],
                       CropTrainConfig(**TRAIN_CFG))


def _surface_distance(model, pts):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(model.mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(model.mesh.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(pts, np.float32))).numpy()


def test_dataset_items(dataset):
    ds = dataset
    assert len(ds) == len(ds.items) >= 10
    kinds = [kind for _, _, kind in ds.items]
    assert kinds.count(0) >= 8 and kinds.count(1) >= 1     # objects and distractors
    for i, k, kind in ds.items:
        raw = ds.images.raw(i)
        assert 0 <= k < len(raw.cls)
        assert (raw.inst == k).sum() >= ds.cfg.min_visible_px
        assert (kind == 0) == (raw.cls[k] >= 0) and (kind == 1) == (raw.cls[k] == -1)
    # every visible enough instance of every image is an item
    n = 0
    for i in range(len(ds.images)):
        raw = ds.images.raw(i)
        n += sum(int((raw.inst == k).sum()) >= ds.cfg.min_visible_px for k in range(len(raw.cls)))
    assert n == len(ds)
    with pytest.raises(ValueError, match="visible pixels"):
        CropDataset(ds.images.dir, ds.centres, ds.diameters, CropTrainConfig(min_visible_px=10 ** 7))


def test_sample_shapes(dataset):
    S, s = dataset.cfg.crop_size, dataset.cfg.crop_size // 2
    for rng in (None, np.random.default_rng(0)):
        out = dataset.sample(0, rng)
        assert out["input"].shape == (4, S, S) and out["input"].dtype == np.float32
        assert out["mask"].shape == (s, s) and out["valid"].shape == (s, s) and out["xyz"].shape == (3, s, s)
        assert out["xyz"].dtype == np.float32 and out["cls"].dtype == np.int64
        assert set(np.unique(out["mask"])) <= {0.0, 1.0} and set(np.unique(out["valid"])) <= {0.0, 1.0}
        assert np.all(out["valid"] <= out["mask"])                 # valid pixels are object pixels
        assert np.all(out["xyz"][:, out["valid"] == 0] == 0)
        assert np.abs(out["xyz"]).max() <= 0.6                     # inside the network's tanh range
    b = dataset.batch([0, 1, 2], np.random.default_rng(1))
    assert b["input"].shape == (3, 4, S, S) and b["cls"].shape == (3,) and b["xyz"].shape == (3, 3, s, s)
    assert b["cls"].dtype == torch.int64
    # without rng (validation) the sample is deterministic; with a seeded rng, reproducible
    a0, a1 = dataset.sample(3, None), dataset.sample(3, None)
    assert all(np.array_equal(a0[k], a1[k]) for k in a0)
    r0, r1 = dataset.sample(3, np.random.default_rng(9)), dataset.sample(3, np.random.default_rng(9))
    assert all(np.array_equal(r0[k], r1[k]) for k in r0)
    assert not np.array_equal(r0["input"], a0["input"])            # jitter + augmentation change the crop


def _projected_targets(ds, n, out):
    """Model points of the valid target pixels, moved by the GT pose T_cam_obj and projected with K
    (the caller checks that they land on those output pixels' image positions)."""
    i, k, _ = ds.items[n]
    raw = ds.images.raw(i)
    c = int(out["cls"])
    assert c == raw.cls[k]
    s = out["mask"].shape[0]
    v = out["valid"] > 0.5
    assert v.sum() >= 0.5 * out["mask"].sum() > 0
    jj, ii = np.nonzero(v)
    X = out["xyz"][:, jj, ii].T.astype(np.float64) * ds.diameters[c] + ds.centres[c]
    T, K = raw.T_cam_obj[k], raw.K
    Xc = X @ T[:3, :3].T + T[:3, 3]
    uv = np.stack([K[0, 0] * Xc[:, 0] / Xc[:, 2] + K[0, 2], K[1, 1] * Xc[:, 1] / Xc[:, 2] + K[1, 2]], 1)
    return raw, c, uv, X, (ii, jj), s


@pytest.mark.parametrize("augmented", [False, True])
def test_targets_are_geometrically_consistent(dataset, models, augmented):
    ds = dataset
    checked = 0
    for n, (i, k, kind) in enumerate(ds.items):
        if kind != 0:
            continue
        rng = np.random.default_rng([4, n]) if augmented else None
        out = ds.sample(n, rng)
        if not out["mask"].any():
            continue                                               # a wrong-class draw (own test)
        raw, c, uv, X, (ii, jj), s = _projected_targets(ds, n, out)
        # the box: the instance's box (jittered when augmented); recover it from the unjittered one
        # for the validation samples, and via the target's own pixel grid for the augmented ones
        if not augmented:
            box = crop_box_from_mask(raw.inst == k, ds.cfg.pad)
            want = crop_to_image_px(np.stack([ii, jj], 1).astype(np.float64), box, s)
            assert np.abs(uv - want).max() < 0.75, np.abs(uv - want).max()
            # the mask target is the instance's label at the nearest image pixel of each output pixel
            JJ, II = np.mgrid[0:s, 0:s]
            p = np.rint(crop_to_image_px(np.stack([II.ravel(), JJ.ravel()], 1), box, s)).astype(int)
            H, W = raw.inst.shape
            ok = (p[:, 0] >= 0) & (p[:, 0] < W) & (p[:, 1] >= 0) & (p[:, 1] < H)
            lab = np.full(len(p), -1)
            lab[ok] = raw.inst[p[ok, 1], p[ok, 0]]
            agree = (lab == k).reshape(s, s) == (out["mask"] > 0.5)
            assert agree.mean() > 0.98                              # rounding ties only
        else:
            # projected targets form the regular grid of the output pixels: a square lattice
            # whose spacing is the (jittered) box side / s, within the bounds of jitter_box
            cell = np.polyfit(ii, uv[:, 0], 1)[0]
            assert np.polyfit(jj, uv[:, 1], 1)[0] == pytest.approx(cell, rel=1e-6)
            u0, v0 = uv[:, 0] - cell * ii, uv[:, 1] - cell * jj
            assert np.ptp(u0) < 0.75 and np.ptp(v0) < 0.75          # one affine map for all pixels
            box0 = crop_box_from_mask(raw.inst == k, ds.cfg.pad)
            assert 0.8 - 1e-9 <= cell * s / box0.side_px <= 1.25 + 1e-9
            cu, cv = np.median(u0) + (s - 1) / 2 * cell, np.median(v0) + (s - 1) / 2 * cell   # box centre
            assert abs(cu - box0.cu) <= 0.12 * box0.side_px + 0.5 and abs(cv - box0.cv) <= 0.12 * box0.side_px + 0.5
        d = _surface_distance(models[c], X)
        assert np.median(d) < 0.0015 and d.max() < 0.006, (np.median(d), d.max())   # on the mesh (depth is noise-free)
        checked += 1
    assert checked >= 6


def test_negative_samples_have_empty_targets(dataset):
    ds = dataset
    distractors = [n for n, it in enumerate(ds.items) if it[2] == 1]
    assert distractors
    C = len(ds.centres)
    for n in distractors:
        for rng in (None, np.random.default_rng(n)):
            out = ds.sample(n, rng)
            assert not out["mask"].any() and not out["valid"].any() and not out["xyz"].any()
            assert 0 <= int(out["cls"]) < C
            assert out["input"][:3].std() > 0                      # a real crop of the distractor
    # wrong-class draws: an object crop asked for another class has an empty target
    wrong = 0
    for n, (i, k, kind) in enumerate(ds.items):
        if kind != 0:
            continue
        true_c = int(ds.images.raw(i).cls[k])
        for seed in range(40):
            out = ds.sample(n, np.random.default_rng([seed, n]))
            if int(out["cls"]) != true_c:
                assert not out["mask"].any() and not out["valid"].any()
                wrong += 1
            else:
                assert out["mask"].any()
    # wrong_class_share (5%) of the object draws
    n_obj = sum(kind == 0 for _, _, kind in ds.items) * 40
    assert 0.01 < wrong / n_obj < 0.12


def test_crop_loss_parts(dataset):
    b = dataset.batch(range(min(8, len(dataset))), None)
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


def test_crop_loss_decreases_on_a_fixed_batch(dataset):
    from pose_ros.objects.correspondence_net import CorrespondenceConfig, CorrespondenceNet

    torch.manual_seed(0)
    net = CorrespondenceNet(CorrespondenceConfig(num_classes=3, crop_size=64, widths=(12, 16, 24), decoder_width=12))
    b = dataset.batch(range(min(8, len(dataset))), np.random.default_rng(2))
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir, models):
    """Copy of the demo model: one epoch, then resumed to two; what each run left behind."""
    if not MODEL.is_file():
        pytest.skip(f"shipped model missing: {MODEL}")
    from pose_ros.objects.model_file import load_model_file

    d = tmp_path_factory.mktemp("crop_model")
    path = d / "demo_objects.pt"
    shutil.copyfile(MODEL, path)
    ckpt = d / "demo_objects.pt.crops.ckpt"
    r1 = train_correspondence(path, models, data_dir, CropTrainConfig(epochs=1, **TRAIN_CFG), ckpt,
                              command="pytest", progress=False)
    after1 = load_model_file(path).raw["correspondence"]
    ck1 = torch.load(ckpt, weights_only=False)
    # mark the checkpoint: training is deterministic, so only a marker tells "resumed" from "redone"
    marked = {**ck1, "history": [{**ck1["history"][0], "marker": "from the checkpoint"}],
              "progress": {**ck1["progress"], "train_time_s": ck1["progress"]["train_time_s"] + 1000.0}}
    torch.save(marked, ckpt)
    r2 = train_correspondence(path, models, data_dir, CropTrainConfig(epochs=2, **TRAIN_CFG), ckpt, resume=True,
                              command="pytest", progress=False)
    return {"path": path, "ckpt": ckpt, "r1": r1, "after1": after1, "ck1": ck1, "r2": r2}


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
    assert orig.raw.get("correspondence") is None
    for k, v in orig.raw["state_dict"].items():
        assert torch.equal(v, new.raw["state_dict"][k])
    assert new.raw["objects"] == orig.raw["objects"]
    assert not trained["path"].with_name(trained["path"].name + ".tmp").exists()


def test_resume_continues_from_the_checkpoint(trained, models, data_dir):
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
    r3 = train_correspondence(trained["path"], models, data_dir, CropTrainConfig(epochs=2, **TRAIN_CFG),
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
    assert stage_from_model(load_model_file(MODEL)) is None


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


def test_evaluate_correspondence_reports_ranges(trained, data_dir, models):
    from pose_ros.objects.correspondence_pose import stage_from_model
    from pose_ros.objects.model_file import load_model_file

    stage = stage_from_model(load_model_file(trained["path"]))
    val = CropDataset(data_dir / "val", [m.keypoints_m[-1] for m in models], [m.diameter_m for m in models],
                      CropTrainConfig(**TRAIN_CFG), augment_data=False)
    m = evaluate_correspondence(stage.net, val, models, max_items=4)
    assert m["instances"] == min(4, sum(kind == 0 for _, _, kind in val.items))
    assert 0.0 <= m["mask_iou"] <= 1.0 and 0.0 <= m["pnp_add_s"] <= 1.0 and 0.0 <= m["rgbd_add_s"] <= 1.0
    assert np.isfinite(m["xyz_err_mm"]) and m["xyz_err_mm"] > 0
    assert m == evaluate_correspondence(stage.net, val, models, max_items=4)   # deterministic
