"""Real photographs for training renders: backgrounds, table tops, backdrops, distractor textures.

Why real photos: a network trained on procedural backgrounds learns "anything not a gradient or a
stripe is an object" and labels real clutter (cables, monitors, print) as objects. Real photos of
rooms and things that are not the target objects teach it what real background looks like.

Why a held-out part: the false-positive figure (share of pixels labelled as an object on real
object-free photos) must come from photos the network never saw. The split is a fixed function of
each file's name (CRC32), so training, the per-epoch monitor and ``pose-ros eval`` agree on it
without storing a list, and adding photos to a folder never moves an old photo across the split.
"""
from __future__ import annotations

import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

__all__ = ["PhotoBank", "PhotoFolderError", "PHOTO_SUFFIXES", "is_held_out", "default_photo_dirs"]

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
HOLDOUT_MODULUS = 10          # 1 photo in 10 is held out of training (by name)
MIN_PHOTOS = 20               # fewer photos than this give too little variety to train on


class PhotoFolderError(ValueError):
    """A backgrounds folder that cannot be used: missing, empty, unreadable images, too few photos."""


def is_held_out(path: str | Path) -> bool:
    """True for the photos kept out of training (fixed by the file name, not by a random draw)."""
    return zlib.crc32(Path(path).name.encode()) % HOLDOUT_MODULUS == 0


def default_photo_dirs() -> list[Path]:
    """The real photos beside this checkout (``../shared/data/photos/imagenet_sample``), if present.

    Only the ImageNet sample: its classes resembling the YCB-Video, LM-O and demo objects were
    removed, while the kitchen video shows cups, bowls and bottles (like several target objects).
    """
    from pose_ros.resources import share_dir

    p = share_dir().parent / "shared" / "data" / "photos" / "imagenet_sample"
    return [p] if p.is_dir() else []


class PhotoBank:
    """Photos from one or more folders, validated at construction; decoded on demand (small cache)."""

    def __init__(self, paths: Sequence[Path], cache_size: int = 64) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise PhotoFolderError("no photos")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = int(cache_size)

    @classmethod
    def from_dirs(cls, dirs: Iterable[str | Path], split: str = "train", min_photos: int = MIN_PHOTOS,
                  check_readable: bool = True) -> "PhotoBank":
        """All photos under ``dirs`` (recursively), ``split`` = "train" | "heldout" | "all".

        Raises PhotoFolderError naming the folder and the fix for: a missing folder, a folder without
        images, images OpenCV cannot decode, or fewer than ``min_photos`` photos in the split.
        """
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be train, heldout or all; got {split!r}")
        dirs = [Path(d).expanduser() for d in dirs]
        if not dirs:
            raise PhotoFolderError("no backgrounds folder given")
        found: list[Path] = []
        for d in dirs:
            if not d.is_dir():
                raise PhotoFolderError(f"backgrounds folder {d} does not exist (or is not a folder)")
            imgs = sorted(p for p in d.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
            if not imgs:
                raise PhotoFolderError(f"backgrounds folder {d} has no images ({', '.join(PHOTO_SUFFIXES)}); "
                                       "export frames of your workspace (without the objects) into it")
            found += imgs
        if check_readable:
            bad = [p for p in found if cv2.imread(str(p), cv2.IMREAD_REDUCED_COLOR_8) is None]
            if bad:
                names = ", ".join(str(p) for p in bad[:5]) + (" ..." if len(bad) > 5 else "")
                raise PhotoFolderError(f"{len(bad)} of {len(found)} background images cannot be read: {names}; "
                                       "remove or re-save them")
        if split != "all":
            found = [p for p in found if is_held_out(p) == (split == "heldout")]
        if len(found) < min_photos:
            raise PhotoFolderError(f"{len(found)} photos in the {split} part of {', '.join(map(str, dirs))}; "
                                   f"at least {min_photos} are needed (1 in {HOLDOUT_MODULUS} is held out for the "
                                   "false-positive check): add more photos of scenes without your objects")
        return cls(found)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> np.ndarray:
        """Photo ``i`` as (H,W,3) uint8 RGB."""
        i = int(i) % len(self.paths)
        img = self._cache.get(i)
        if img is None:
            bgr = cv2.imread(str(self.paths[i]), cv2.IMREAD_COLOR)
            if bgr is None:
                raise PhotoFolderError(f"cannot read {self.paths[i]} (was readable when the folder was checked)")
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self._cache[i] = img
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return img

    def random_crop(self, rng: np.random.Generator, width: int, height: int, min_scale: float = 0.35,
                    index: int | None = None) -> np.ndarray:
        """A random window of photo ``index`` (default: a random photo) (area share >= ``min_scale``^2,
        any aspect near the target's), resized to (height, width), flipped half the time: (H,W,3) uint8."""
        img = self.read(int(rng.integers(0, len(self.paths))) if index is None else int(index))
        H, W = img.shape[:2]
        aspect = width / height * float(np.exp(rng.uniform(-0.2, 0.2)))
        s = float(rng.uniform(min_scale, 1.0))
        cw = min(W, max(8, int(round(s * min(W, H * aspect)))))
        ch = min(H, max(8, int(round(cw / aspect))))
        x0 = int(rng.integers(0, W - cw + 1))
        y0 = int(rng.integers(0, H - ch + 1))
        crop = img[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        interp = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
        return np.ascontiguousarray(cv2.resize(np.ascontiguousarray(crop), (int(width), int(height)),
                                               interpolation=interp))
