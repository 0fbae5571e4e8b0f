"""PhotoBank: real JPEG folders, the name-based train/held-out split, crops, and the folder errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared_data_path
from pose_ros.synth.photo_bank import MIN_PHOTOS, PhotoBank, PhotoFolderError, is_held_out


def _write_photos(folder: Path, n: int, seed: int = 0, prefix: str = "photo") -> list[Path]:
    """``n`` real JPEG files (smooth gradients + noise, various sizes) written with cv2."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(60, 140)), int(rng.integers(60, 180))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w * 255, yy / h * 255, np.full((h, w), 40.0 + 5 * i)], -1)
        img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        p = folder / f"{prefix}_{i:03d}.jpg"
        assert cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / "photos"
    paths = _write_photos(folder, 60)
    # a nested folder is searched too
    paths += _write_photos(folder / "nested", 5, seed=1, prefix="sub")
    return folder, paths


def test_split_is_disjoint_and_covers_all(photo_dir):
    folder, paths = photo_dir
    train = PhotoBank.from_dirs([folder], split="train")
    held = PhotoBank.from_dirs([folder], split="heldout", min_photos=1)
    every = PhotoBank.from_dirs([folder], split="all")
    s_train, s_held, s_all = set(train.paths), set(held.paths), set(every.paths)
    assert s_all == set(paths)
    assert s_train.isdisjoint(s_held)
    assert s_train | s_held == s_all
    assert len(s_held) >= 1 and len(s_train) >= MIN_PHOTOS
    assert all(is_held_out(p) for p in s_held) and not any(is_held_out(p) for p in s_train)
    # the split is a function of the name only: the same name elsewhere lands on the same side
    assert all(is_held_out(Path("/elsewhere") / p.name) == is_held_out(p) for p in paths)


def test_read_gives_rgb_of_the_file(photo_dir):
    folder, _ = photo_dir
    bank = PhotoBank.from_dirs([folder], split="all")
    img = bank.read(0)
    bgr = cv2.imread(str(bank.paths[0]), cv2.IMREAD_COLOR)
    assert img.dtype == np.uint8 and img.shape == bgr.shape
    np.testing.assert_array_equal(img, bgr[:, :, ::-1])


@pytest.mark.parametrize("width,height", [(64, 48), (320, 240), (96, 96), (50, 120)])
def test_random_crop_shape_and_determinism(photo_dir, width, height):
    folder, _ = photo_dir
    bank = PhotoBank.from_dirs([folder], split="train")
    a = [bank.random_crop(np.random.default_rng(7), width, height) for _ in range(2)]
    other = PhotoBank.from_dirs([folder], split="train")          # fresh cache, same result
    b = other.random_crop(np.random.default_rng(7), width, height)
    for crop in a + [b]:
        assert crop.shape == (height, width, 3) and crop.dtype == np.uint8
        assert crop.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(a[0], a[1])
    np.testing.assert_array_equal(a[0], b)
    rng = np.random.default_rng(8)
    crops = [bank.random_crop(rng, width, height) for _ in range(5)]
    assert any(not np.array_equal(crops[0], c) for c in crops[1:]), "crops of one rng stream all identical"


def test_missing_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(PhotoFolderError, match="does not exist") as exc:
        PhotoBank.from_dirs([missing])
    assert str(missing) in str(exc.value)


def test_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    with pytest.raises(PhotoFolderError, match="has no images") as exc:
        PhotoBank.from_dirs([empty])
    assert str(empty) in str(exc.value)


def test_no_folders_given():
    with pytest.raises(PhotoFolderError, match="no backgrounds folder"):
        PhotoBank.from_dirs([])


def test_unreadable_image_is_named(tmp_path):
    folder = tmp_path / "photos"
    _write_photos(folder, 30)
    (folder / "x.jpg").write_bytes(b"\x00garbage, not a JPEG\xff" * 20)
    with pytest.raises(PhotoFolderError, match="cannot be read") as exc:
        PhotoBank.from_dirs([folder])
    assert "x.jpg" in str(exc.value)
    assert "photo_000.jpg" not in str(exc.value)


def test_too_few_photos(tmp_path):
    folder = tmp_path / "few"
    _write_photos(folder, 5)
    with pytest.raises(PhotoFolderError, match=f"at least {MIN_PHOTOS}") as exc:
        PhotoBank.from_dirs([folder], split="train")
    assert str(folder) in str(exc.value)


def test_bad_split_name(photo_dir):
    with pytest.raises(ValueError, match="split"):
        PhotoBank.from_dirs([photo_dir[0]], split="test")


def test_shared_imagenet_sample_holds_out_about_ten_percent():
    folder = shared_data_path("photos", "imagenet_sample")
    every = PhotoBank.from_dirs([folder], split="all", check_readable=False)
    held = PhotoBank.from_dirs([folder], split="heldout", min_photos=1, check_readable=False)
    train = PhotoBank.from_dirs([folder], split="train", check_readable=False)
    assert len(every) >= 100
    assert len(held) + len(train) == len(every)
    share = len(held) / len(every)
    assert 0.05 <= share <= 0.15, share
    img = held.read(0)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
