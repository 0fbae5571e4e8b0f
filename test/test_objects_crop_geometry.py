"""Object-centric square crops: the box from a mask, the crop <-> image pixel maps, resampling, jitter."""
from __future__ import annotations

import numpy as np
import pytest

from pose_ros.objects.crop_geometry import (CropBox, crop_box_from_mask, crop_image, crop_to_image_px,
                                            image_to_crop_px, jitter_box)


def _mask(h=240, w=320, u0=100, u1=159, v0=50, v1=79):
    """Mask whose bounding box spans columns u0..u1 and rows v0..v1 (inclusive), with a hole."""
    m = np.zeros((h, w), bool)
    m[v0:v1 + 1, u0:u1 + 1] = True
    m[v0 + 5:v1 - 5, u0 + 5:u1 - 5] = False            # the box depends on the extent only
    return m


def test_box_from_mask_centre_and_padded_side():
    box = crop_box_from_mask(_mask(), pad=1.4)
    assert box.cu == pytest.approx((100 + 159) / 2) and box.cv == pytest.approx((50 + 79) / 2)
    assert box.side_px == pytest.approx(1.4 * 60)        # larger side: 60 columns (vs 30 rows)
    tall = crop_box_from_mask(_mask(u0=10, u1=19, v0=20, v1=119), pad=2.0)
    assert (tall.cu, tall.cv) == pytest.approx((14.5, 69.5))
    assert tall.side_px == pytest.approx(2.0 * 100)      # larger side: 100 rows
    assert crop_box_from_mask(_mask(), pad=1.0).side_px == pytest.approx(60)


def test_box_from_mask_min_side_and_empty():
    one = np.zeros((48, 64), bool)
    one[7, 30] = True
    box = crop_box_from_mask(one, pad=1.4, min_side_px=16.0)
    assert (box.cu, box.cv, box.side_px) == pytest.approx((30.0, 7.0, 16.0))
    assert crop_box_from_mask(one, pad=1.4, min_side_px=0.5).side_px == pytest.approx(1.4)
    assert crop_box_from_mask(np.zeros((48, 64), bool)) is None
    assert crop_box_from_mask(np.zeros((48, 64), np.uint8)) is None


def test_affine_maps_box_centre_to_crop_centre():
    box = CropBox(123.25, 77.5, 90.0)
    for size in (32, 64):
        c = image_to_crop_px(np.array([[box.cu, box.cv]]), box, size)[0]
        assert c == pytest.approx([(size - 1) / 2] * 2)
        # the box's edges land half a crop wide either side of the centre
        e = image_to_crop_px(np.array([[box.cu - box.side_px / 2, box.cv + box.side_px / 2]]), box, size)[0]
        assert e == pytest.approx([(size - 1) / 2 - size / 2, (size - 1) / 2 + size / 2])


@pytest.mark.parametrize("box", [CropBox(160.0, 120.0, 200.0), CropBox(10.3, 300.7, 17.0), CropBox(-40, 5, 1000.0)])
@pytest.mark.parametrize("size", [32, 64])
def test_crop_and_image_pixel_maps_are_inverse(box, size):
    rng = np.random.default_rng(3)
    q = rng.uniform(-10, size + 10, (50, 2))
    p = crop_to_image_px(q, box, size)
    assert p.shape == (50, 2)
    assert np.allclose(image_to_crop_px(p, box, size), q, atol=1e-9)
    p2 = rng.uniform(-100, 700, (50, 2))
    assert np.allclose(crop_to_image_px(image_to_crop_px(p2, box, size), box, size), p2, atol=1e-9)
    # one crop pixel spans side / size image pixels
    d = crop_to_image_px(np.array([[0.0, 0.0], [1.0, 1.0]]), box, size)
    assert d[1] - d[0] == pytest.approx([box.side_px / size] * 2)


def _dot_image(u: int, v: int, h: int = 240, w: int = 320, r: int = 1) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[v - r:v + r + 1, u - r:u + r + 1] = 255
    return img


def _peak(crop: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (u, v) of the crop's bright blob."""
    g = crop.astype(np.float64).sum(2) if crop.ndim == 3 else crop.astype(np.float64)
    assert g.max() > 0, "the dot did not make it into the crop"
    g = np.where(g >= 0.3 * g.max(), g, 0.0)
    vv, uu = np.mgrid[0:g.shape[0], 0:g.shape[1]]
    return np.array([(g * uu).sum(), (g * vv).sum()]) / g.sum()


@pytest.mark.parametrize("side", [
    300.0,     # shrinking: 300 image px -> 64 crop px (anti-aliased path)
    100.0,     # shrinking less than 2x (no blur)
    24.0,      # enlarging: 24 image px -> 64 crop px
])
@pytest.mark.parametrize("dot", [(150, 100), (171, 133)])
def test_crop_image_puts_image_pixel_at_its_crop_position(side, dot):
    size = 64
    u, v = dot
    box = CropBox(u + 0.23 * side + 0.3, v - 0.17 * side + 0.7, side)     # dot off the crop centre
    img = _dot_image(u, v, r=1 if side < 200 else 3)
    crop = crop_image(img, box, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    want = image_to_crop_px(np.array([[u, v]], np.float64), box, size)[0]
    assert np.all((want >= 2) & (want <= size - 3)), "test setup: the dot must be inside the crop"
    got = _peak(crop)
    assert np.abs(got - want).max() < 1.0, f"dot at crop {got}, expected {want}"


def test_crop_image_enlarged_dot_centre_is_exact():
    """A single pixel enlarged 8x: its interpolated bump is centred on image_to_crop_px exactly."""
    box = CropBox(100.0, 60.0, 8.0)
    img = np.zeros((120, 200), np.float32)
    img[61, 102] = 1.0
    crop = crop_image(img, box, 64)
    want = image_to_crop_px(np.array([[102.0, 61.0]]), box, 64)[0]
    vv, uu = np.mgrid[0:64, 0:64]
    got = np.array([(crop * uu).sum(), (crop * vv).sum()]) / crop.sum()
    assert np.abs(got - want).max() < 0.15


def test_nearest_keeps_source_values_and_zero_outside():
    rng = np.random.default_rng(0)
    h, w = 120, 160
    depth = np.zeros((h, w), np.float32)
    depth[30:90, 40:120] = rng.choice(np.array([0.5, 0.731, 1.25], np.float32), (60, 80))
    labels = np.full((h, w), 255, np.uint8)
    labels[20:70, 20:100] = 3
    labels[60:110, 90:150] = 7
    values_d = set(np.unique(depth).tolist())
    values_l = set(np.unique(labels).tolist()) | {0}
    # shrinking, enlarging, and boxes hanging over the image border
    for box in (CropBox(80, 60, 150), CropBox(75.3, 58.9, 20), CropBox(5, 110, 90), CropBox(150, 5, 300)):
        for size in (32, 64):
            dc = crop_image(depth, box, size, nearest=True)
            lc = crop_image(labels, box, size, nearest=True)
            assert dc.dtype == np.float32 and lc.dtype == np.uint8 and dc.shape == (size, size)
            assert set(np.unique(dc).tolist()) <= values_d
            assert set(np.unique(lc).tolist()) <= values_l
            # every crop pixel whose source lies outside the image is 0
            jj, ii = np.mgrid[0:size, 0:size]
            p = crop_to_image_px(np.stack([ii.ravel(), jj.ravel()], 1), box, size)
            outside = ((p[:, 0] < -0.5) | (p[:, 0] > w - 0.5) | (p[:, 1] < -0.5) | (p[:, 1] > h - 0.5))
            outside = outside.reshape(size, size)
            assert np.all(lc[outside] == 0)
            # inside, nearest sampling returns the label of the rounded source pixel
            inside = (p[:, 0] > 0.01) & (p[:, 0] < w - 1.01) & (p[:, 1] > 0.01) & (p[:, 1] < h - 1.01)
            inside = inside.reshape(size, size)
            r = np.rint(p).astype(int).reshape(size, size, 2)
            frac = np.abs(p - np.rint(p)).reshape(size, size, 2).max(2)
            sure = inside & (frac < 0.45)                    # away from rounding ties
            assert np.array_equal(lc[sure], labels[r[..., 1][sure], r[..., 0][sure]])
    # a box completely outside the image gives an all-zero crop
    assert not crop_image(labels, CropBox(-500, -500, 50), 32, nearest=True).any()
    assert not crop_image(np.full((h, w, 3), 200, np.uint8), CropBox(1000, 60, 50), 32).any()


def test_linear_crop_mixes_values_where_nearest_does_not():
    """The reason for ``nearest``: linear sampling of a depth edge invents in-between depths."""
    depth = np.zeros((100, 100), np.float32)
    depth[:, 50:] = 1.0
    box = CropBox(50.2, 50.0, 10.0)
    lin = crop_image(depth, box, 64)
    near = crop_image(depth, box, 64, nearest=True)
    assert np.any((lin > 0.05) & (lin < 0.95))
    assert set(np.unique(near).tolist()) <= {0.0, 1.0}


def test_jitter_box_within_bounds():
    rng = np.random.default_rng(11)
    box = CropBox(200.0, 150.0, 80.0)
    shift, scale = 0.12, (0.8, 1.25)
    du, dv, k = [], [], []
    for _ in range(3000):
        j = jitter_box(box, rng, shift=shift, scale=scale)
        du.append((j.cu - box.cu) / box.side_px)
        dv.append((j.cv - box.cv) / box.side_px)
        k.append(j.side_px / box.side_px)
    du, dv, k = map(np.asarray, (du, dv, k))
    assert np.abs(du).max() <= shift and np.abs(dv).max() <= shift
    assert k.min() >= scale[0] and k.max() <= scale[1]
    # and it really uses the range (not a constant or a tiny fraction of it)
    assert np.abs(du).max() > 0.9 * shift and np.abs(dv).max() > 0.9 * shift
    assert k.min() < 0.82 and k.max() > 1.22
    assert abs(du.mean()) < 0.01 and abs(dv.mean()) < 0.01
    assert np.corrcoef(du, dv)[0, 1] == pytest.approx(0.0, abs=0.1)     # independent axes
    # other bounds are honoured; seeded draws are reproducible
    j = [jitter_box(box, rng, shift=0.02, scale=(1.0, 1.1)) for _ in range(500)]
    assert max(abs(b.cu - box.cu) for b in j) <= 0.02 * box.side_px
    assert all(box.side_px <= b.side_px <= 1.1 * box.side_px for b in j)
    assert jitter_box(box, np.random.default_rng(5)) == jitter_box(box, np.random.default_rng(5))
    assert jitter_box(box, np.random.default_rng(0), shift=0.0, scale=(1.0, 1.0)) == box
