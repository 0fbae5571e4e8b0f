"""Folding BatchNorms into convolutions: same outputs as the unfolded networks, no BatchNorm left,
the original untouched (it can still train)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pose_ros.objects.batchnorm_folding import fold_batch_norms
from pose_ros.objects.correspondence_net import CorrespondenceConfig, CorrespondenceNet
from pose_ros.objects.network import KeypointNet, NetworkConfig

REPO = Path(__file__).resolve().parents[1]


def _with_running_stats(net: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine terms, as after training (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return net.eval()


def _batch_norms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_first_stage_network_folds_to_the_same_maps():
    torch.manual_seed(0)
    net = _with_running_stats(KeypointNet(NetworkConfig(num_classes=2, num_keypoints=4, input_width=64,
                                                        input_height=48, widths=(8, 12, 16, 24),
                                                        decoder_width=12)), seed=1)
    folded = fold_batch_norms(net)
    assert _batch_norms(folded) == 0 and _batch_norms(net) > 10
    x = torch.randn(2, net.config.in_channels, 48, 64)
    with torch.no_grad():
        a, b = net(x), folded(x)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-4), k
    net.train()                                                  # the original still trains
    net(x)["seg"].sum().backward()
    assert any(m.weight.grad is not None for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_crop_network_with_class_film_folds_to_the_same_maps():
    torch.manual_seed(0)
    net = _with_running_stats(CorrespondenceNet(CorrespondenceConfig(num_classes=3, crop_size=32, widths=(8, 16, 24),
                                                                     decoder_width=12, class_film=True)), seed=2)
    with torch.no_grad():
        for e in (net.film3, net.film1):
            e.weight.normal_(0, 0.3)
    folded = fold_batch_norms(net)
    assert _batch_norms(folded) == 0
    x, cls = torch.randn(3, 4, 32, 32), torch.tensor([0, 2, 1])
    with torch.no_grad():
        a, b = net(x, cls), folded(x, cls)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-4), k


def test_shipped_model_maps_unchanged_by_folding():
    model = REPO / "models" / "demo_objects.pt"
    if not model.is_file():
        pytest.skip(f"shipped model missing: {model}")
    from pose_ros.objects.model_file import load_model_file

    loaded = load_model_file(model)
    x = torch.randn(1, loaded.config.in_channels, loaded.config.input_height, loaded.config.input_width)
    with torch.no_grad():
        a, b = loaded.network(x), fold_batch_norms(loaded.network)(x)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-3, rtol=1e-4), (k, float((a[k] - b[k]).abs().max()))
