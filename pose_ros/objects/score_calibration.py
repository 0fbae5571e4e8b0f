"""A pose score that is a probability of being right, fitted for each model on its own renders.

Why: the hand-set score (``scoring.pose_score``: depth agreement, ICP fitness, PnP inliers) says
how well a pose fits the depth inside the instance mask. On real clutter a wrong object can fit
the depth in its own (wrong) mask just as well: a false "can" scored 0.97. Evidence that clutter
rarely fakes is in the render-and-compare check: the model's silhouette against the mask, its
absolute colour (chromaticity) and texture against the image, whether the region stands out of
the scene's large planes (``depth_objectness``). A logistic model over all of it, fitted on
estimator outputs on scenes rendered like the training data (real photo backgrounds,
photo-textured clutter, the user's camera) and labelled right/wrong by ADD(-S) < 0.1 d, turns
them into one number whose threshold means the same for every object and model.

The calibration is stored in the model file (``score_calibration``); without one the estimator
keeps ``scoring.pose_score``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["FEATURES", "ScoreCalibration", "fit_score_calibration", "feature_vector"]

# Feature, value used when it is missing (no verdict: no texture, no support plane, no PnP).
FEATURES: dict[str, float] = {
    "depth_agreement": 0.0,
    "icp_fitness": 0.0,
    "pnp_inlier_ratio": 0.0,
    "vote_inlier_ratio": 0.0,
    "silhouette_iou": 0.0,
    "render_depth": 0.0,          # appearance.Verification.depth: confirmed minus seen-through pixels
    "colour_correlation": 0.0,
    "chroma_distance": 0.15,
    "protruding_fraction": 1.0,
    "log_mask_pixels": 4.0,
    "crop_agreement": 0.0,        # correspondence_pose.correspondence_agreement; no crop stage: no verdict
}


def feature_vector(values: Mapping[str, float], names: Sequence[str] = tuple(FEATURES)) -> np.ndarray:
    """Features in ``names`` order, missing or non-finite ones replaced by their neutral value."""
    out = np.empty(len(names), np.float64)
    for i, k in enumerate(names):
        v = values.get(k)
        v = float(v) if v is not None else float("nan")
        out[i] = v if math.isfinite(v) else FEATURES[k]
    return out


@dataclass
class ScoreCalibration:
    features: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: float
    fitted_on: dict | None = None           # what it was fitted on (scenes, poses, right share, held-out figures)

    def score(self, values: Mapping[str, float]) -> float:
        x = (feature_vector(values, self.features) - self.mean) / self.std
        z = float(self.bias + x @ self.weights)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def to_dict(self) -> dict:
        return {"features": list(self.features), "mean": self.mean.tolist(), "std": self.std.tolist(),
                "weights": self.weights.tolist(), "bias": float(self.bias), "fitted_on": self.fitted_on or {}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ScoreCalibration":
        names = tuple(d["features"])
        unknown = [n for n in names if n not in FEATURES]
        if unknown:
            raise ValueError(f"score calibration uses unknown features {unknown}; update pose_ros")
        arrs = [np.asarray(d[k], np.float64) for k in ("mean", "std", "weights")]
        if any(a.shape != (len(names),) or not np.all(np.isfinite(a)) for a in arrs) or not np.all(arrs[1] > 0):
            raise ValueError("score calibration arrays do not match its feature list")
        return cls(names, arrs[0], arrs[1], arrs[2], float(d["bias"]), dict(d.get("fitted_on") or {}))


def fit_score_calibration(X: np.ndarray, y: np.ndarray, names: Sequence[str] = tuple(FEATURES),
                          l2: float = 1.0, iterations: int = 50) -> ScoreCalibration:
    """L2-regularised logistic regression (Newton / IRLS) on standardised features.

    X: (N, F) from :func:`feature_vector`; y: (N,) 1 = right pose. Needs both classes.
    """
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64).ravel()
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != len(names):
        raise ValueError(f"X must be (N, {len(names)}) matching y; got {X.shape} and {y.shape}")
    if not (0 < y.sum() < len(y)):
        raise ValueError(f"need right and wrong poses to fit a calibration; got {int(y.sum())} right of {len(y)}")
    mean = X.mean(0)
    std = X.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    Z = np.hstack([np.ones((len(X), 1)), (X - mean) / std])
    w = np.zeros(Z.shape[1])
    reg = np.full(Z.shape[1], float(l2))
    reg[0] = 1e-6                                  # no shrinkage of the bias
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -50, 50)))
        g = Z.T @ (p - y) + reg * w
        H = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(reg)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return ScoreCalibration(tuple(names), mean, std, w[1:].copy(), float(w[0]))


def collect_calibration_samples(estimator: object, models: Sequence[object], scene_config: object, scenes: int,
                                seed: int = 3_000_017, progress: bool = True) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray, np.ndarray]:
    """Run ``estimator`` (score threshold 0, ``collect_features`` on) on ``scenes`` renders of the
    training generator at the camera's full resolution; returns (X features, y right, scene index,
    uncalibrated score) for every pose it outputs. A pose is right when ADD(-S) < 0.1 d against an
    instance of its object (each instance matched once, best score first); poses of objects not in
    the scene are wrong."""
    from tqdm import tqdm

    from pose_ros.core.camera import PinholeCamera
    from pose_ros.eval.pose_metrics import add_s_error
    from pose_ros.objects.training_data import SceneRenderer

    ren = SceneRenderer(list(models), scene_config, seed=seed)
    X, y, idx, raw = [], [], [], []
    for i in tqdm(range(int(scenes)), desc="calibration scenes", unit="scene", disable=not progress):
        s = ren.render(np.random.default_rng([seed, i]))
        cam = PinholeCamera(s.K, s.rgb.shape[1], s.rgb.shape[0])
        results = estimator.estimate(s.rgb, s.depth_m, cam)
        gts = [(int(c), T) for c, T in zip(s.cls, s.T_cam_obj) if c >= 0]
        used: set[int] = set()
        for r in sorted(results, key=lambda r: -r.score):
            m = models[r.class_id - 1]
            best, best_d = None, np.inf
            for k, (c, T) in enumerate(gts):
                if c == r.class_id - 1 and k not in used:
                    d = float(np.linalg.norm(T[:3, 3] - r.T_cam_obj[:3, 3]))
                    if d < best_d:
                        best, best_d = k, d
            right = False
            if best is not None:
                used.add(best)
                right = add_s_error(m, r.T_cam_obj, gts[best][1]) < 0.1 * m.diameter_m
            X.append(feature_vector(r.stats.features))
            y.append(float(right))
            idx.append(i)
            raw.append(r.stats.uncalibrated_score if math.isfinite(r.stats.uncalibrated_score) else r.score)
    return np.array(X).reshape(-1, len(FEATURES)), np.array(y), np.array(idx), np.array(raw)


def threshold_table(score: np.ndarray, y: np.ndarray, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> list[dict]:
    """Per threshold: poses kept, right among them (precision), right ones kept (recall)."""
    rows = []
    for t in thresholds:
        keep = score >= t
        rows.append({"threshold": float(t), "kept": int(keep.sum()),
                     "precision": float(y[keep].mean()) if keep.any() else float("nan"),
                     "recall": float(y[keep].sum() / max(1.0, y.sum())),
                     "wrong_kept": int((keep & (y < 0.5)).sum())})
    return rows
