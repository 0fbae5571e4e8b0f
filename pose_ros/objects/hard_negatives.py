"""Hard negative photos: whole real photos without any object, drawn where the network is most wrong.

Why: trained over real photo backgrounds, the YCB-Video network still labelled 3-5% of the pixels of
held-out object-free photos as an object, in a few blobs per photo (printed packaging, text, shiny
or saturated things). Rendered scenes show each background photo only behind objects and clutter,
and only some of the photos confuse the network. Replacing a share of the training samples by a
whole training-split photo (depth of a tilted plane, every pixel background), drawn in proportion to
how much of that photo the current network labels as an object (re-measured every epoch), spends
the training on the confusions it still makes: hard negative mining at the level of photos.
Only the training split of the photo folders is used; the held-out split stays the measurement.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pose_ros.objects.false_positive_monitor import ObjectFreeFrame, network_class_maps, plane_depth
from pose_ros.objects.training_data import RawSample, sample_to_tensors

__all__ = ["negative_sample", "photo_object_shares", "HardNegativeDataset"]


def negative_sample(rgb: np.ndarray, K: np.ndarray, rng: np.random.Generator) -> RawSample:
    """A sample with no object: ``rgb`` (H,W,3) on the depth of a tilted plane, every pixel background."""
    h, w = rgb.shape[:2]
    return RawSample(rgb=rgb, depth_m=plane_depth(K, w, h, rng), inst=np.full((h, w), -1, np.int16),
                     cls=np.zeros(0, np.int16), T_cam_obj=np.zeros((0, 4, 4)), K=np.asarray(K, np.float64).copy())


def photo_object_shares(net: Any, bank: Any, K: np.ndarray, width: int, height: int, seed: int = 0,
                        device: str = "cpu") -> np.ndarray:
    """Share of each photo's pixels that the network labels as an object (argmax), photo resized to
    (width, height) on a plane's depth: (len(bank),) in [0, 1]."""
    import cv2

    rng = np.random.default_rng(seed)
    shares = np.zeros(len(bank))
    for i in range(len(bank)):
        rgb = cv2.resize(bank.read(i), (width, height), interpolation=cv2.INTER_AREA)
        frame = ObjectFreeFrame(rgb, plane_depth(K, width, height, rng), bank.paths[i].name)
        shares[i] = float(np.mean(network_class_maps(net, [frame], device)[0] > 0))
    return shares


class HardNegativeDataset:
    """A training dataset in which a share of the samples is a hard negative photo.

    Sample ``i`` of epoch ``e`` is, with probability ``share``, a random window of a photo drawn with
    the weights of ``set_weights`` (deterministic in seed, epoch and i, like the wrapped dataset);
    otherwise it is the wrapped dataset's sample ``i``.
    """

    def __init__(self, base: Any, bank: Any, K: np.ndarray, share: float, seed: int = 0,
                 floor: float = 0.2) -> None:
        if not 0.0 < share < 1.0:
            raise ValueError(f"hard negative share {share} must lie in (0, 1)")
        self.base, self.bank, self.K = base, bank, np.asarray(K, np.float64)
        self.share, self.seed, self.floor = float(share), int(seed), float(floor)
        self.epoch = 0
        self.weights = np.full(len(bank), 1.0 / len(bank))

    def set_weights(self, object_shares: np.ndarray) -> None:
        """Draw photos in proportion to their object share, plus ``floor`` x the mean share for every
        photo (a photo the network gets right now is still seen now and then)."""
        s = np.asarray(object_shares, np.float64)
        if s.shape != (len(self.bank),) or not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError(f"need {len(self.bank)} finite non-negative shares, got shape {s.shape}")
        w = s + self.floor * max(float(s.mean()), 1e-6)
        self.weights = w / w.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def photo_for(self, i: int) -> int | None:
        """Index of the photo sample ``i`` of this epoch shows, or None: the wrapped dataset's sample."""
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if rng.random() >= self.share:
            return None
        return int(rng.choice(len(self.bank), p=self.weights))

    def __getitem__(self, i: int) -> dict[str, Any]:
        photo = self.photo_for(i)
        if photo is None:
            return self.base[i]
        rng = np.random.default_rng([self.seed, self.epoch, i, 2])
        h, w = self.base.net_cfg.input_height, self.base.net_cfg.input_width
        rgb = self.bank.random_crop(rng, w, h, index=photo)
        return sample_to_tensors(negative_sample(rgb, self.K, rng), self.base.keypoints_m, self.base.net_cfg,
                                 rng, self.base.crop)
