"""The crop correspondence network: config, output shapes, class-specific heads, and its input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pose_ros.objects.correspondence_net import CROP_DEPTH_CLIP, CorrespondenceConfig, CorrespondenceNet, crop_input
from pose_ros.objects.network import RGB_MEAN, RGB_STD


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _net(num_classes=3, crop_size=32, seed=0, **kw):
    torch.manual_seed(seed)
    net = CorrespondenceNet(CorrespondenceConfig(num_classes=num_classes, crop_size=crop_size,
                                                 widths=(8, 16, 24), decoder_width=12, **kw))
    return net.eval()


def test_config_validation_errors():
    with pytest.raises(ValueError, match="num_classes"):
        CorrespondenceConfig(num_classes=0)
    with pytest.raises(ValueError, match="crop_size"):
        CorrespondenceConfig(num_classes=2, crop_size=60)        # not a multiple of 8
    with pytest.raises(ValueError, match="crop_size"):
        CorrespondenceConfig(num_classes=2, crop_size=24)        # multiple of 8 but < 32
    c = CorrespondenceConfig(num_classes=1, crop_size=32)
    assert c.output_size == 16
    assert CorrespondenceConfig(num_classes=2).output_size == 32
    assert CorrespondenceConfig(num_classes=2, widths=[8, 16, 32]).widths == (8, 16, 32)


def test_config_dict_round_trip():
    c = CorrespondenceConfig(num_classes=5, crop_size=96, widths=(16, 24, 40), decoder_width=20, pad=1.7)
    d = c.to_dict()
    assert d == {"num_classes": 5, "crop_size": 96, "widths": [16, 24, 40], "decoder_width": 20, "pad": 1.7,
                 "class_film": False}
    assert isinstance(d["widths"], list)                          # plain types for the model file
    back = CorrespondenceConfig.from_dict(d)
    assert back == c and back.widths == (16, 24, 40)
    assert d["widths"] == [16, 24, 40]                            # from_dict does not modify its input
    # older/minimal dicts fall back to the defaults
    m = CorrespondenceConfig.from_dict({"num_classes": 2})
    assert m == CorrespondenceConfig(num_classes=2) and not m.class_film      # files from before FiLM
    with pytest.raises(ValueError, match="crop_size"):
        CorrespondenceConfig.from_dict({**d, "crop_size": 50})


@pytest.mark.parametrize("crop_size", [32, 64])
def test_forward_shapes(crop_size):
    net = _net(num_classes=2, crop_size=crop_size)
    x = torch.randn(3, 4, crop_size, crop_size)
    with torch.no_grad():
        out = net(x, torch.tensor([0, 1, 1]))
    s = crop_size // 2
    assert set(out) == {"mask", "xyz", "log_sigma"}
    assert out["mask"].shape == (3, s, s) and out["log_sigma"].shape == (3, s, s)
    assert out["xyz"].shape == (3, 3, s, s)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert (out["log_sigma"] >= -7.0).all() and (out["log_sigma"] <= 2.0).all()
    with pytest.raises(ValueError, match=r"\(B,4,S,S\)"):
        net(torch.randn(1, 3, crop_size, crop_size), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(B,4,S,S\)"):
        net(torch.randn(4, crop_size, crop_size), torch.tensor([0]))


def test_class_index_selects_its_head():
    net = _net(num_classes=3)
    x = torch.randn(1, 4, 32, 32).repeat(3, 1, 1, 1)              # the same crop three times
    with torch.no_grad():
        out = net(x, torch.tensor([0, 2, 0]))
        alone = [net(x[:1], torch.tensor([c])) for c in range(3)]
    for k in ("mask", "xyz", "log_sigma"):
        assert torch.equal(out[k][0], out[k][2]), k               # same class: identical maps
        assert not torch.allclose(out[k][0], out[k][1]), k        # other class: other maps
        # the batched result equals running each crop with its class alone
        assert torch.allclose(out[k][0], alone[0][k][0], atol=1e-5)
        assert torch.allclose(out[k][1], alone[2][k][0], atol=1e-5)
        assert not torch.allclose(alone[1][k][0], alone[0][k][0])
    # heads are the class's own channels of the shared 1x1 head: class 1 = channels 5..9
    with torch.no_grad():
        head = net.head
        w0 = head.weight.clone()
        head.weight[5:10] += 1.0                                  # perturb class 1 only
        out2 = net(x, torch.tensor([0, 2, 1]))
        head.weight.copy_(w0)
    assert torch.equal(out2["mask"][0], out["mask"][0]) and torch.equal(out2["mask"][1], out["mask"][1])
    assert not torch.allclose(out2["mask"][2], alone[1]["mask"][0])


def test_class_film_starts_as_identity_and_conditions_on_the_class():
    plain = _net(num_classes=3)
    film = _net(num_classes=3, class_film=True)
    assert set(film.state_dict()) - set(plain.state_dict()) == {"film3.weight", "film1.weight"}
    film.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 4, 32, 32).repeat(3, 1, 1, 1)
    cls = torch.tensor([0, 1, 2])
    with torch.no_grad():
        ref, out = plain(x, cls), film(x, cls)
        for k in ref:                                              # zero-initialised: the plain network's maps
            assert torch.allclose(ref[k], out[k], atol=1e-6), k
        film.film1.weight[1] += 0.5                                 # class 1's scale and shift only
        film.film3.weight[1] -= 0.3
        moved = film(x, cls)
    for k in ref:
        assert torch.allclose(moved[k][[0, 2]], out[k][[0, 2]], atol=1e-6), k
        assert not torch.allclose(moved[k][1], out[k][1], atol=1e-3), k
    # a file without FiLM loads into its own (plain) config and refuses a FiLM one
    with pytest.raises(RuntimeError, match="film"):
        _net(num_classes=3, class_film=True).load_state_dict(plain.state_dict())


def test_xyz_bounded_by_tanh_scale():
    net = _net(num_classes=2)
    with torch.no_grad():
        net.head.bias.fill_(0.0)
        net.head.bias[1:4] = 50.0                                 # class 0 xyz logits saturate high
        net.head.bias[6:9] = -50.0                                # class 1 low
        out = net(torch.randn(2, 4, 32, 32) * 10, torch.tensor([0, 1]))
    xyz = out["xyz"]
    assert xyz.abs().max() <= 0.75 + 1e-6
    assert torch.allclose(xyz[0], torch.full_like(xyz[0], 0.75), atol=1e-4)
    assert torch.allclose(xyz[1], torch.full_like(xyz[1], -0.75), atol=1e-4)
    with torch.no_grad():
        net.head.bias[4] = 100.0                                  # log sigma clamped to [-7, 2]
        net.head.bias[9] = -100.0
        ls = net(torch.randn(2, 4, 32, 32), torch.tensor([0, 1]))["log_sigma"]
    assert torch.all(ls[0] == 2.0) and torch.all(ls[1] == -7.0)


@pytest.mark.parametrize("class_film", [False, True])
def test_network_learns_a_per_class_mapping(class_film):
    """One tiny fit: the two heads of the same input learn different targets (gradients reach the right head)."""
    net = _net(num_classes=2, class_film=class_film).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    torch.manual_seed(1)
    x = torch.randn(2, 4, 32, 32)
    x[1] = x[0]
    cls = torch.tensor([0, 1])
    target = torch.stack([torch.full((16, 16), 5.0), torch.full((16, 16), -5.0)])
    for _ in range(40):
        loss = ((net(x, cls)["mask"] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        m = net(x, cls)["mask"]
    assert m[0].mean() > 2.0 and m[1].mean() < -2.0


def test_crop_input_rgb_normalisation():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = crop_input(rgb, None, 0.0, 0.1)
    assert x.shape == (4, 32, 32) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    for c in range(3):
        want = (rgb[..., c] / 255.0 - RGB_MEAN[c]) / RGB_STD[c]
        assert np.allclose(x[c], want, atol=1e-5)
    # channel order is RGB: a pure red crop is high in channel 0 only
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    xr = crop_input(red, None, 0.0, 0.1)
    assert xr[0].min() > 2.0 and xr[1].max() < -2.0 and xr[2].max() < -1.5
    assert not xr[3].any()


def test_crop_input_depth_channel():
    rgb = np.zeros((32, 32, 3), np.uint8)
    z_ref, diam = 0.8, 0.2
    depth = np.full((32, 32), 0.85, np.float32)          # +0.25 diameters
    depth[0, :] = 0.0                                    # missing
    depth[1, :] = 0.7                                    # -0.5 diameters
    depth[2, :] = 5.0                                    # far behind: clipped
    depth[3, :] = 0.1                                    # far in front: clipped
    depth[4, :] = np.nan                                 # invalid
    depth[5, :] = -1.0                                   # invalid
    d = crop_input(rgb, depth, z_ref, diam)[3]
    assert np.allclose(d[6:], 0.25, atol=1e-6)
    assert np.all(d[0] == 0.0) and np.all(d[4] == 0.0) and np.all(d[5] == 0.0)
    assert np.allclose(d[1], -0.5, atol=1e-6)
    assert np.all(d[2] == CROP_DEPTH_CLIP) and np.all(d[3] == -CROP_DEPTH_CLIP)
    assert np.isfinite(d).all()
    # units of the diameter: the same depth offset with half the diameter doubles
    assert np.allclose(crop_input(rgb, depth, z_ref, diam / 2)[3][6:], 0.5, atol=1e-6)
    # no depth at all, or no reference depth: the channel is zero
    assert not crop_input(rgb, None, z_ref, diam)[3].any()
    assert not crop_input(rgb, depth, 0.0, diam)[3].any()
    # the colour channels do not depend on depth
    assert np.array_equal(crop_input(rgb, depth, z_ref, diam)[:3], crop_input(rgb, None, z_ref, diam)[:3])
