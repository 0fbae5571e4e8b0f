"""Hard negative photos: all-background samples on real photos, drawn by the network's object share,
and a real training step with them (real photos from ../shared/data, real network)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_data_path
from pose_ros.core.object_model import load_object_dir
from pose_ros.objects.false_positive_monitor import plane_depth
from pose_ros.objects.hard_negatives import HardNegativeDataset, negative_sample, photo_object_shares
from pose_ros.objects.network import KeypointNet, NetworkConfig, prepare_input
from pose_ros.objects.training_data import PrerenderedDataset, SceneConfig, prerender, sample_to_tensors
from pose_ros.synth.photo_bank import PhotoBank, is_held_out

REPO = Path(__file__).resolve().parents[1]
K = np.array([[150.0, 0.0, 80.0], [0.0, 150.0, 60.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def bank():
    return PhotoBank.from_dirs([shared_data_path("photos", "imagenet_sample")], split="train", check_readable=False)


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory):
    """A few real renders of the demo meshes at 160x120, as training reads them."""
    models = load_object_dir(REPO / "meshes")
    out = prerender(models, tmp_path_factory.mktemp("hn") / "train", 8, seed=5,
                    cfg=SceneConfig(width=160, height=120, fx_range=(125.0, 165.0)), progress=False)
    net_cfg = NetworkConfig(num_classes=len(models), input_width=160, input_height=120)
    return PrerenderedDataset(out, [m.keypoints_m for m in models], net_cfg, augment_data=True, seed=1, crop=(96, 72))


def test_negative_sample_is_all_background_on_a_plane(bank, base_dataset):
    rng = np.random.default_rng(0)
    rgb = bank.random_crop(rng, 160, 120, index=3)
    s = negative_sample(rgb, K, rng)
    assert s.rgb is rgb and s.inst.shape == (120, 160) and np.all(s.inst == -1) and len(s.cls) == 0
    assert np.all(np.isfinite(s.depth_m)) and s.depth_m.min() > 0.1
    t = sample_to_tensors(s, base_dataset.keypoints_m, base_dataset.net_cfg, rng, None)
    assert t["seg"].max() == 0 and not t["vec"].any() and not t["centre"].any()
    assert t["input"].shape == (4, 120, 160)


def test_photos_are_drawn_by_how_much_the_network_labels_on_them(bank, base_dataset):
    hn = HardNegativeDataset(base_dataset, bank, K, share=0.25, seed=3)
    n = 2000
    picks = [hn.photo_for(i) for i in range(n)]
    negatives = [p for p in picks if p is not None]
    assert abs(len(negatives) / n - 0.25) < 0.03
    assert len(set(negatives)) > 300                    # uniform before the first measurement
    assert picks == [hn.photo_for(i) for i in range(n)]  # deterministic per (seed, epoch, i)
    shares = np.zeros(len(bank))
    shares[7] = 0.5                                     # only photo 7 fools the network
    hn.set_weights(shares)
    negatives = [p for p in (hn.photo_for(i) for i in range(n)) if p is not None]
    # weight 0.5 vs the floor 0.2 x mean share for every photo: 0.5 / (0.5 + 0.2 x 0.5) = 83%
    assert abs(np.mean(np.array(negatives) == 7) - 0.5 / 0.6) < 0.05
    assert len(set(negatives)) > 20                     # the others still come now and then
    hn.set_epoch(1)
    assert [hn.photo_for(i) for i in range(50)] != picks[:50]
    assert base_dataset.epoch == 1                      # passed on to the renders
    # a negative is all background, the rest are the renders themselves
    i_neg = next(i for i in range(n) if hn.photo_for(i) is not None)
    i_pos = next(i for i in range(n) if hn.photo_for(i) is None and base_dataset[i]["seg"].max() > 0)
    assert hn[i_neg]["seg"].max() == 0 and hn[i_neg]["input"].shape == (4, 72, 96)
    assert np.array_equal(hn[i_pos]["seg"], base_dataset[i_pos]["seg"])


def test_bad_share_and_weights_are_refused(bank, base_dataset):
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="share"):
            HardNegativeDataset(base_dataset, bank, K, share=share)
    hn = HardNegativeDataset(base_dataset, bank, K, share=0.2)
    for bad in (np.zeros(3), np.full(len(bank), np.nan), -np.ones(len(bank))):
        with pytest.raises(ValueError, match="finite non-negative"):
            hn.set_weights(bad)


def test_object_shares_are_the_networks_argmax_labels(bank):
    torch.manual_seed(0)
    net = KeypointNet(NetworkConfig(num_classes=3, input_width=160, input_height=120))
    small = PhotoBank(bank.paths[:4])
    shares = photo_object_shares(net, small, K, 160, 120, seed=9)
    assert shares.shape == (4,) and np.all((shares >= 0) & (shares <= 1))
    import cv2

    rng = np.random.default_rng(9)
    net.eval()
    for i in range(4):
        rgb = cv2.resize(small.read(i), (160, 120), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(prepare_input(rgb, plane_depth(K, 160, 120, rng), net.config))[None]
        with torch.no_grad():
            assert shares[i] == pytest.approx(float((net(x)["seg"][0].argmax(0) > 0).float().mean()))
    assert not any(is_held_out(p) for p in bank.paths)  # the measurement's photos never train


def test_training_with_hard_negatives_runs_and_needs_photos(tmp_path, capsys):
    from pose_ros.objects.train import TrainConfig, train

    photos = shared_data_path("photos", "imagenet_sample")
    models = load_object_dir(REPO / "meshes")
    cfg = TrainConfig(epochs=1, images=8, val_images=4, batch_size=4, input_width=160, input_height=120,
                      crop_width=96, crop_height=72, workers=0, warmup_steps=2, stop_after_steps=2, device="cpu",
                      photo_dirs=(str(photos),), fp_monitor_images=4, hard_negatives=0.5)
    r = train(models, tmp_path / "m.pt", cfg, tmp_path / "data", progress=True)
    assert r["progress"]["step"] == 2
    assert "hard negatives: the network labels" in capsys.readouterr().out
    with pytest.raises(ValueError, match="hard negatives need real photos"):
        train(models, tmp_path / "n.pt", TrainConfig(**{**cfg.to_dict(), "photo_dirs": ()}), tmp_path / "data2")
    assert not (tmp_path / "data2").exists() and not (tmp_path / "n.pt").exists()
