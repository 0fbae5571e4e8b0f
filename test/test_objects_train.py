"""Training loop resume and the model file: round trip and validation errors (real renders, real files)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from pose_ros.core.object_model import load_object_dir
from pose_ros.objects.model_file import (FORMAT_VERSION, ModelFileError, ModelMeshMismatchError, check_meshes,
                                         load_model_file, mesh_hash, object_spec_from_model, save_model_file)
from pose_ros.objects.network import KeypointNet, NetworkConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    return load_object_dir(REPO / "meshes")


def _small_net(n):
    return KeypointNet(NetworkConfig(num_classes=n, input_width=64, input_height=48))


def test_model_file_round_trip(tmp_path, models):
    net = _small_net(len(models))
    specs = [object_spec_from_model(m, f"meshes/{m.name}") for m in models]
    p = save_model_file(tmp_path / "m.pt", net, specs, training={"command": "pose-ros train ..."},
                        metrics=[{"epoch": 1, "seg_iou": 0.5}], progress={"epoch": 1, "step": 10})
    loaded = load_model_file(p, meshes=models)
    assert loaded.class_names == [m.name for m in models]
    assert loaded.class_id("box") == 2 and loaded.class_id(models[0].obj_id) == 1
    with pytest.raises(ValueError, match="unknown object"):
        loaded.class_id("teapot")
    for spec, m in zip(loaded.objects, models):
        assert np.allclose(spec.keypoints_m, m.keypoints_m)
        assert spec.diameter_m == pytest.approx(m.diameter_m)
        assert spec.is_symmetric == m.is_symmetric
        assert spec.mesh_hash == mesh_hash(m.mesh)
    x = torch.randn(1, 4, 48, 64)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x)["vec"], loaded.network(x)["vec"])
    assert loaded.raw["metrics"][0]["seg_iou"] == 0.5 and loaded.raw["progress"]["step"] == 10
    assert not (tmp_path / "m.pt.tmp").exists()              # atomic write left no temp file


def test_model_file_validation_errors(tmp_path, models):
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "nope.pt")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(ModelFileError, match="not a readable torch file"):
        load_model_file(bad)
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not a pose_ros keypoint model"):
        load_model_file(tmp_path / "foreign.pt")
    net = _small_net(len(models))
    specs = [object_spec_from_model(m) for m in models]
    p = save_model_file(tmp_path / "m.pt", net, specs)
    d = torch.load(p, weights_only=False)
    d2 = copy.deepcopy(d)
    d2["format_version"] = FORMAT_VERSION + 1
    torch.save(d2, tmp_path / "future.pt")
    with pytest.raises(ModelFileError, match="format_version"):
        load_model_file(tmp_path / "future.pt")
    d3 = copy.deepcopy(d)
    del d3["state_dict"]
    torch.save(d3, tmp_path / "incomplete.pt")
    with pytest.raises(ModelFileError, match="missing 'state_dict'"):
        load_model_file(tmp_path / "incomplete.pt")
    d4 = copy.deepcopy(d)
    d4["objects"] = d4["objects"][:2]
    torch.save(d4, tmp_path / "classes.pt")
    with pytest.raises(ModelFileError, match="3 classes but 2 objects"):
        load_model_file(tmp_path / "classes.pt")
    # A mesh that differs from the training mesh (scaled by 10%) is refused by default.
    loaded = load_model_file(p)
    other = copy.deepcopy(models[1])
    other.mesh = other.mesh.copy()
    other.mesh.apply_scale(1.1)
    with pytest.raises(ModelMeshMismatchError, match="box"):
        check_meshes(loaded, [models[0], other])
    assert set(check_meshes(loaded, [models[0], other], allow_mismatch=True)) == {1, 2}
    with pytest.raises(ValueError, match="objects but the network has"):
        save_model_file(tmp_path / "x.pt", net, specs[:1])


def test_training_interrupt_and_resume_continues_counters(tmp_path, models):
    from pose_ros.objects.train import TrainConfig, train

    cfg = TrainConfig(epochs=2, images=16, val_images=4, batch_size=4, input_width=160, input_height=120,
                      crop_width=96, crop_height=72, workers=0, warmup_steps=2, checkpoint_every_steps=2,
                      stop_after_steps=3, device="cpu")
    out = tmp_path / "tiny.pt"
    data = tmp_path / "data"
    r1 = train(models, out, cfg, data, progress=False)
    assert r1["progress"]["step"] == 3 and r1["progress"]["epoch"] == 0 and not r1["progress"]["finished"]
    assert r1["progress"]["batch_in_epoch"] == 3
    d1 = torch.load(out, weights_only=False)
    assert d1["progress"]["step"] == 3
    # "interrupted" here; resume with the rendered data reused (shards are not re-rendered)
    shard_mtime = (data / "train" / "rgb_00000.npy").stat().st_mtime
    cfg2 = TrainConfig(**{**cfg.to_dict(), "stop_after_steps": None})
    r2 = train(models, out, cfg2, data, resume=True, progress=False)
    p = r2["progress"]
    assert p["finished"] and p["epoch"] == 2
    assert p["step"] == 8 and p["images_seen"] == 32           # 2 epochs x 4 steps x 4 images, not restarted
    assert [m["epoch"] for m in r2["metrics"]] == [1, 2]
    assert all(0.0 <= m["seg_iou"] <= 1.0 for m in r2["metrics"])
    assert (data / "train" / "rgb_00000.npy").stat().st_mtime == shard_mtime
    d2 = torch.load(out, weights_only=False)
    steps = {int(s["step"]) for s in d2["optimizer"]["state"].values()}
    assert steps == {8}                                        # optimizer state carried over the interruption
    loaded = load_model_file(out, meshes=models)
    assert loaded.raw["training"]["config"]["images"] == 16


def test_near_symmetries_stored_in_the_model_file_and_reused_for_the_same_mesh(tmp_path, models):
    from pose_ros.objects.model_file import near_symmetries_for
    from pose_ros.objects.near_symmetry import near_symmetries

    box = models[1]
    specs = [object_spec_from_model(m, with_near_symmetries=(m is box)) for m in models]
    p = save_model_file(tmp_path / "m.pt", _small_net(len(models)), specs)
    loaded = load_model_file(p, meshes=models)
    stored = loaded.objects[1].near_symmetries
    fresh = near_symmetries(box)
    assert stored is not None and len(stored) == len(fresh) == 3        # the box's three half turns
    assert all(np.allclose(a, b) for a, b in zip(stored, fresh))
    assert loaded.objects[0].near_symmetries is None                     # not computed: field absent
    # The stored list is what the estimator gets for the training mesh (a marker proves it is not
    # recomputed); a different mesh gets its own, computed ones.
    spec = loaded.objects[1]
    marker = np.eye(4)
    marker[:3, 3] = [0.0, 0.0, 0.123]
    spec.near_symmetries = [marker]
    assert np.allclose(near_symmetries_for(spec, box)[0], marker)
    other = copy.deepcopy(box)
    other.mesh = other.mesh.copy()
    other.mesh.apply_scale(1.1)
    assert not any(np.allclose(S, marker) for S in near_symmetries_for(spec, other))
    d = torch.load(p, weights_only=False)
    d["objects"][1]["near_symmetries"] = [[[1.0, 0.0], [0.0, 1.0]]]
    torch.save(d, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="near_symmetries must be finite 4x4"):
        load_model_file(tmp_path / "bad.pt")


def test_init_from_a_model_starts_from_its_weights_with_a_fresh_schedule(tmp_path, models):
    from pose_ros.objects.train import TrainConfig, train

    cfg = TrainConfig(epochs=1, images=8, val_images=4, batch_size=4, input_width=160, input_height=120,
                      crop_width=96, crop_height=72, workers=0, warmup_steps=2, stop_after_steps=2, device="cpu")
    data = tmp_path / "data"
    base = tmp_path / "base.pt"
    train(models, base, cfg, data, progress=False)
    # A near-zero learning rate: after one step the convolution weights are still the base's.
    cfg2 = TrainConfig(**{**cfg.to_dict(), "lr": 1e-12, "stop_after_steps": 1})
    out = tmp_path / "fine.pt"
    r = train(models, out, cfg2, data, progress=False, init_from=base)
    assert r["progress"]["step"] == 1                                    # a fresh schedule, not the base's
    b = torch.load(base, weights_only=False)
    f = torch.load(out, weights_only=False)
    convs = [k for k, v in b["state_dict"].items() if v.ndim == 4]
    assert convs and all(torch.allclose(b["state_dict"][k], f["state_dict"][k], atol=1e-6) for k in convs)
    assert f["training"]["init_from"]["path"] == str(base)
    assert f["training"]["init_from"]["progress"]["step"] == 2
    assert len(f["objects"][1]["near_symmetries"]) == 3                 # stored by training
    # A model for other objects cannot seed this training.
    one = save_model_file(tmp_path / "one.pt", _small_net(1), [object_spec_from_model(models[0])])
    with pytest.raises(ValueError, match="--init: .* was trained for"):
        train(models, tmp_path / "x.pt", cfg2, data, progress=False, init_from=one)
