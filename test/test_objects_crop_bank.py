"""Crop banks on disk: rendered once (real renders of the demo meshes), read back as rendered, resumed,
refused for other settings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose_ros.objects.crop_bank import SHARD, CropBankError, load_crop_bank, render_crop_bank
from pose_ros.objects.crop_rendering import CropRenderer
from pose_ros.objects.training_data import SceneConfig, full_resolution_scene_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def renderer_args():
    from pose_ros.core.object_model import load_object_dir

    models = load_object_dir(REPO / "meshes")
    return {"models": models, "scene_cfg": full_resolution_scene_config(SceneConfig()),
            "centres_m": [m.keypoints_m[-1] for m in models], "diameters_m": [m.diameter_m for m in models],
            "keep_render_depth": True, "seed": 0}


IDENTITY = {"objects": ["mug", "box", "bottle"], "crop_size": 64}


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory, renderer_args):
    d = tmp_path_factory.mktemp("bank") / "val"
    render_crop_bank(d, SHARD + 10, 4, renderer_args, IDENTITY, workers=1, progress=False)
    return d


def test_bank_holds_the_crops_as_rendered(bank_dir, renderer_args):
    bank = load_crop_bank(bank_dir)
    assert len(bank) == SHARD + 10
    assert sorted(p.name for p in bank_dir.glob("crops_*.npz")) == ["crops_00000.npz", "crops_00001.npz"]
    # shard 1 is rng([seed, 1]): the same crops as the renderer gives directly
    direct = CropRenderer(**renderer_args).crops(np.random.default_rng([4, 1]), 10)
    for j, c in enumerate(direct):
        i = SHARD + j
        assert np.array_equal(bank.rgb[i], c.rgb) and bank.cls[i] == c.cls
        assert np.array_equal(bank.mask[i], c.mask) and np.array_equal(bank.valid[i], c.valid)
        assert np.abs(bank.depth_m[i] - c.depth_m).max() <= 0.5e-4 + 1e-7          # 0.1 mm steps
        assert np.abs(bank.xyz[i] - c.xyz).max() <= 1e-3                             # float16
        assert np.allclose(bank.K_crop[i], c.K_crop)
        assert np.abs(bank.render_depth_m[i] - c.render_depth_m).max() <= 0.5e-4 + 1e-7
        if c.T_cam_obj is None:
            assert not bank.positive[i]
        else:
            assert bank.positive[i] and np.allclose(bank.T_cam_obj[i], c.T_cam_obj)
    assert bank.positive.sum() >= 0.8 * len(bank)
    # a prefix reads only what is asked
    assert len(load_crop_bank(bank_dir, 20)) == 20


def test_bank_resumes_and_refuses_other_settings(bank_dir, renderer_args):
    shard0 = bank_dir / "crops_00000.npz"
    mtime = shard0.stat().st_mtime_ns
    shard1 = bank_dir / "crops_00001.npz"
    shard1.unlink()                                         # an interrupted run
    with pytest.raises(CropBankError, match="missing"):
        load_crop_bank(bank_dir)
    render_crop_bank(bank_dir, SHARD + 10, 4, renderer_args, IDENTITY, workers=1, progress=False)
    assert shard0.stat().st_mtime_ns == mtime and shard1.is_file()   # only the missing shard rendered
    with pytest.raises(CropBankError, match="other objects or settings"):
        render_crop_bank(bank_dir, SHARD, 5, renderer_args, IDENTITY, workers=1, progress=False)
    with pytest.raises(CropBankError, match="other objects or settings"):
        render_crop_bank(bank_dir, SHARD, 4, renderer_args, {**IDENTITY, "crop_size": 48}, workers=1, progress=False)
    with pytest.raises(CropBankError, match="no crop bank"):
        load_crop_bank(bank_dir.parent / "nothing")


def test_a_grown_bank_completes_its_short_last_shard(bank_dir, renderer_args, tmp_path):
    import shutil

    grown = tmp_path / "grown"
    shutil.copytree(bank_dir, grown)
    before = load_crop_bank(grown)
    shard0 = grown / "crops_00000.npz"
    mtime = shard0.stat().st_mtime_ns
    render_crop_bank(grown, SHARD + 20, 4, renderer_args, IDENTITY, workers=1, progress=False)
    bank = load_crop_bank(grown)
    assert len(bank) == SHARD + 20 and len(load_crop_bank(grown, SHARD + 20)) == SHARD + 20
    assert shard0.stat().st_mtime_ns == mtime                          # full shards are kept
    # the short shard was rendered again from the same rng: its first 10 crops are the ones it had
    assert np.array_equal(bank.rgb[:SHARD + 10], before.rgb) and np.array_equal(bank.cls[:SHARD + 10], before.cls)
