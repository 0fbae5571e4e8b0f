"""false_positive_stats on hand-made class maps, plane_depth, and object-free frames from real photos."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.objects.false_positive_monitor import false_positive_stats, object_free_frames, plane_depth
from pose_ros.synth.photo_bank import is_held_out


def _maps():
    a = np.zeros((20, 30), np.int64)
    a[2:6, 2:6] = 1          # class 1, 16 px
    a[10:13, 10:15] = 1      # class 1, 15 px, separate blob
    a[15:17, 25:27] = 2      # class 2, 4 px (below the default 12)
    a[6:9, 6:10] = 3         # class 3, 12 px, touching class 1 diagonally: a blob of its own class
    b = np.zeros((20, 30), np.int64)
    b[0:4, 0:4] = 2          # 16 px
    b[4:8, 4:8] = 2          # 16 px, diagonal neighbour of the first: one 8-connected blob of 32 px
    b[19, 29] = 1            # a single stray pixel
    c = np.zeros((20, 30), np.int64)   # clean image
    return [a, b, c]


def test_false_positive_counts_exact():
    maps = _maps()
    st = false_positive_stats(maps)                      # min_pixels=12
    px = 16 + 15 + 4 + 12 + 32 + 1
    assert st["images"] == 3
    assert st["fp_pixel_share"] == pytest.approx(px / (3 * 20 * 30))
    # blobs >= 12 px: a: class1 x2, class3 x1; b: class2 x1 (diagonal join); c: none -> 4 over 3 images
    assert st["fp_blobs_per_image"] == pytest.approx(4 / 3)


def test_min_pixels_respected():
    maps = _maps()
    assert false_positive_stats(maps, min_pixels=1)["fp_blobs_per_image"] == pytest.approx(6 / 3)
    assert false_positive_stats(maps, min_pixels=4)["fp_blobs_per_image"] == pytest.approx(5 / 3)
    assert false_positive_stats(maps, min_pixels=13)["fp_blobs_per_image"] == pytest.approx(3 / 3)
    assert false_positive_stats(maps, min_pixels=16)["fp_blobs_per_image"] == pytest.approx(2 / 3)
    assert false_positive_stats(maps, min_pixels=17)["fp_blobs_per_image"] == pytest.approx(1 / 3)
    assert false_positive_stats(maps, min_pixels=33)["fp_blobs_per_image"] == 0.0
    # pixel share does not depend on min_pixels
    assert (false_positive_stats(maps, min_pixels=33)["fp_pixel_share"]
            == false_positive_stats(maps, min_pixels=1)["fp_pixel_share"])


def test_clean_and_empty_inputs():
    clean = false_positive_stats([np.zeros((8, 8), np.int64)] * 2)
    assert clean == {"fp_pixel_share": 0.0, "fp_blobs_per_image": 0.0, "images": 2}
    full = false_positive_stats([np.full((8, 8), 2, np.int64)])
    assert full["fp_pixel_share"] == 1.0 and full["fp_blobs_per_image"] == 1.0
    none = false_positive_stats([])
    assert none["images"] == 0 and math.isnan(none["fp_pixel_share"]) and math.isnan(none["fp_blobs_per_image"])


@pytest.mark.parametrize("seed", range(5))
def test_plane_depth_positive_finite(seed):
    K = np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1]])
    d = plane_depth(K, 320, 240, np.random.default_rng(seed))
    assert d.shape == (240, 320) and d.dtype == np.float32
    assert np.all(np.isfinite(d)) and np.all(d > 0)
    assert d.min() >= 0.2 and d.max() <= 8.0
    # a plane: the depth varies smoothly (tilted) and is the sampled distance at the principal point
    assert 0.6 <= d[120, 160] <= 1.5
    # 1/z of a plane is affine in the pixel coordinates (where not clipped)
    inv = 1.0 / d[100:140, 140:180].astype(np.float64)
    gy, gx = np.gradient(inv)
    assert np.allclose(gx, gx.mean(), atol=1e-6) and np.allclose(gy, gy.mean(), atol=1e-6)


def test_plane_depth_fixed_distance_at_principal_point():
    K = np.array([[500.0, 0, 50.0], [0, 480.0, 40.0], [0, 0, 1]])
    d = plane_depth(K, 100, 80, np.random.default_rng(1), distance_range_m=(1.25, 1.25))
    assert d[40, 50] == pytest.approx(1.25, abs=1e-6)


def test_object_free_frames_from_held_out_real_photos():
    folder = shared_data_path("photos", "imagenet_sample")
    K = np.array([[270.0, 0, 159.5], [0, 270.0, 119.5], [0, 0, 1]])
    frames = object_free_frames([str(folder)], K, 160, 120, count=4, seed=0)
    assert len(frames) == 4
    for f in frames:
        assert is_held_out(f.name)
        assert f.rgb.shape == (120, 160, 3) and f.rgb.dtype == np.uint8
        assert f.depth_m.shape == (120, 160) and np.all(np.isfinite(f.depth_m)) and np.all(f.depth_m > 0)
    assert len({f.name for f in frames}) == 4
