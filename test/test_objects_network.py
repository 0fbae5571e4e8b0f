"""Keypoint network: output shapes, input preparation, and a short overfit on real renders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pose_ros.objects.network import (CENTRE_OFFSET_SCALE_PX, KeypointNet, NetworkConfig, prepare_input,
                                      split_vector_channels)

REPO = Path(__file__).resolve().parents[1]


def test_forward_shapes_multi_class():
    cfg = NetworkConfig(num_classes=5, num_keypoints=9, input_width=160, input_height=120)
    net = KeypointNet(cfg).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, 4, 120, 160))
    assert out["seg"].shape == (2, 6, 60, 80)
    assert out["vec"].shape == (2, 5 * 9 * 2, 60, 80)
    assert out["centre"].shape == (2, 2, 60, 80)
    assert split_vector_channels(out["vec"], 5, 9).shape == (2, 5, 9, 2, 60, 80)


def test_rgb_only_config_and_bad_input():
    cfg = NetworkConfig(num_classes=1, use_depth=False, input_width=64, input_height=48)
    net = KeypointNet(cfg).eval()
    assert cfg.in_channels == 3
    with pytest.raises(ValueError, match="input must be"):
        net(torch.zeros(1, 4, 48, 64))
    with pytest.raises(ValueError, match="multiple of 8"):
        NetworkConfig(num_classes=1, input_width=100)
    with pytest.raises(ValueError, match="num_classes"):
        NetworkConfig(num_classes=0)


def test_prepare_input_resizes_and_normalises_depth():
    cfg = NetworkConfig(num_classes=1, input_width=64, input_height=48)
    rgb = np.full((96, 128, 3), 128, np.uint8)
    depth = np.full((96, 128), 1.0, np.float32)
    depth[:32] = 1.5                       # top third farther; median stays 1.0
    depth[0, 0] = np.nan
    x = prepare_input(rgb, depth, cfg)
    assert x.shape == (4, 48, 64) and x.dtype == np.float32
    assert np.isfinite(x).all()
    d = x[3]
    assert np.allclose(d[2:14], 0.5 / 0.25) and np.allclose(d[18:], 0.0)   # (z - median) / 0.25 m
    assert np.allclose(prepare_input(rgb, None, cfg)[3], 0.0)      # missing depth -> zeros
    with pytest.raises(ValueError, match="rgb must be"):
        prepare_input(rgb[..., 0], depth, cfg)


def test_overfit_on_rendered_scenes_reduces_loss():
    """A few real renders of the demo meshes: 40 steps must cut the loss substantially."""
    from pose_ros.core.object_model import load_object_dir
    from pose_ros.objects.train import compute_loss
    from pose_ros.objects.training_data import SceneConfig, SceneRenderer, sample_to_tensors

    models = load_object_dir(REPO / "meshes")
    scfg = SceneConfig(width=160, height=120, fx_range=(130.0, 160.0), objects_range=(2, 3), distance_range_m=(0.35, 0.6))
    ren = SceneRenderer(models, scfg, seed=3)
    samples = [ren.render(np.random.default_rng([5, i])) for i in range(4)]
    cfg = NetworkConfig(num_classes=len(models), input_width=160, input_height=120)
    kps = [m.keypoints_m for m in models]
    batch_np = [sample_to_tensors(s, kps, cfg, None) for s in samples]
    assert any((b["seg"] > 0).any() for b in batch_np)
    batch = {k: torch.from_numpy(np.stack([b[k] for b in batch_np])) for k in batch_np[0]}
    # Vector targets are unit length on object pixels; centre offsets point at the projected centre.
    fg = batch["seg"] > 0
    norms = batch["vec"].norm(dim=2)                        # (B,K,h,w)
    assert torch.allclose(norms.permute(0, 2, 3, 1)[fg], torch.ones(1), atol=1e-4)
    assert batch["centre"].abs().max() * CENTRE_OFFSET_SCALE_PX < 400
    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = KeypointNet(cfg).train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss, parts = compute_loss(net(batch["input"]), batch, cfg.num_classes, cfg.num_keypoints)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts)
    first = np.mean([p["loss"] for p in losses[:3]])
    last = np.mean([p["loss"] for p in losses[-3:]])
    assert last < 0.6 * first, (first, last)
    assert np.mean([p["vec"] for p in losses[-3:]]) < np.mean([p["vec"] for p in losses[:3]])
