"""Score calibration: the logistic fit, its dict form, the model-file entry and the estimator using
it; the chroma term of the render-and-compare check (real renders and real model files)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pose_ros.core.camera import PinholeCamera
from pose_ros.objects.score_calibration import (FEATURES, ScoreCalibration, feature_vector, fit_score_calibration,
                                                threshold_table)

REPO = Path(__file__).resolve().parents[1]
CAM = PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)

RIGHT = {"depth_agreement": 0.95, "icp_fitness": 0.95, "pnp_inlier_ratio": 0.8, "vote_inlier_ratio": 0.8,
         "silhouette_iou": 0.9, "render_depth": 0.9, "colour_correlation": 0.7, "chroma_distance": 0.02,
         "protruding_fraction": 0.95, "log_mask_pixels": 7.0}
WRONG = {"depth_agreement": 0.3, "icp_fitness": 0.4, "pnp_inlier_ratio": 0.1, "vote_inlier_ratio": 0.3,
         "silhouette_iou": 0.2, "render_depth": -0.2, "colour_correlation": 0.0, "chroma_distance": 0.25,
         "protruding_fraction": 0.2, "log_mask_pixels": 5.0}


def _synthetic_samples(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right poses: high depth agreement and silhouette IoU, low chroma distance; wrong ones low,
    with overlap (separable-ish); some features missing (NaN) as in real estimator output."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    X = []
    for right in y:
        c = 1.0 if right else 0.0
        f = {"depth_agreement": rng.normal(0.45 + 0.45 * c, 0.12),
             "icp_fitness": rng.normal(0.6 + 0.3 * c, 0.15),
             "pnp_inlier_ratio": rng.uniform(0, 1),                       # uninformative
             "vote_inlier_ratio": rng.normal(0.4 + 0.3 * c, 0.15),
             "silhouette_iou": rng.normal(0.35 + 0.5 * c, 0.12),
             "render_depth": rng.normal(0.2 + 0.6 * c, 0.2),
             "colour_correlation": rng.normal(0.2 + 0.4 * c, 0.2) if rng.random() < 0.7 else float("nan"),
             "chroma_distance": rng.normal(0.15 - 0.1 * c, 0.04),
             "protruding_fraction": rng.normal(0.5 + 0.4 * c, 0.2),
             "log_mask_pixels": rng.normal(6.0, 0.8)}
        X.append(feature_vector(f))
    return np.array(X), y


@pytest.fixture(scope="module")
def calibration() -> ScoreCalibration:
    X, y = _synthetic_samples()
    return fit_score_calibration(X, y)


def test_fit_separates_right_from_wrong(calibration):
    assert calibration.features == tuple(FEATURES)
    assert calibration.score(RIGHT) > 0.8
    assert calibration.score(WRONG) < 0.2
    # The weights point the expected way on the informative features.
    w = dict(zip(calibration.features, calibration.weights))
    assert w["depth_agreement"] > 0 and w["silhouette_iou"] > 0 and w["chroma_distance"] < 0
    # Held-out samples: ranked well, and the mean score tracks the right share.
    Xt, yt = _synthetic_samples(300, seed=1)
    s = np.array([calibration.score(dict(zip(FEATURES, x))) for x in Xt])
    assert np.all((s >= 0) & (s <= 1))
    assert s[yt == 1].mean() > 0.8 and s[yt == 0].mean() < 0.2
    assert abs(s.mean() - yt.mean()) < 0.05
    # A score is monotonic in a positively weighted feature.
    better = dict(WRONG, depth_agreement=0.9)
    assert calibration.score(better) > calibration.score(WRONG)


def test_dict_round_trip_and_validation(calibration):
    d = json.loads(json.dumps(calibration.to_dict()))          # plain JSON-able, as stored in the model file
    back = ScoreCalibration.from_dict(d)
    assert back.features == calibration.features
    for f in (RIGHT, WRONG, {}, {"depth_agreement": 0.6}):
        assert back.score(f) == calibration.score(f)
    d2 = dict(d, fitted_on={"scenes": 40, "right_share": 0.4})
    assert ScoreCalibration.from_dict(d2).to_dict()["fitted_on"] == {"scenes": 40, "right_share": 0.4}
    # A subset of the features (an older calibration) is fine and scores on its own names.
    sub = ScoreCalibration.from_dict({"features": ["depth_agreement"], "mean": [0.5], "std": [0.2],
                                      "weights": [4.0], "bias": 0.0})
    assert sub.score({"depth_agreement": 0.5}) == pytest.approx(0.5)
    assert sub.score({"depth_agreement": 0.7, "silhouette_iou": 0.0}) == pytest.approx(1 / (1 + math.exp(-4.0)))
    with pytest.raises(ValueError, match="unknown features"):
        ScoreCalibration.from_dict(dict(d, features=list(d["features"][:-1]) + ["teapot_likeness"]))
    with pytest.raises(ValueError, match="do not match"):
        ScoreCalibration.from_dict(dict(d, mean=d["mean"][:-1]))
    with pytest.raises(ValueError, match="do not match"):
        ScoreCalibration.from_dict(dict(d, weights=d["weights"] + [1.0]))
    with pytest.raises(ValueError, match="do not match"):
        ScoreCalibration.from_dict(dict(d, std=[0.0] * len(d["std"])))
    with pytest.raises(ValueError, match="do not match"):
        ScoreCalibration.from_dict(dict(d, weights=[float("nan")] * len(d["weights"])))


def test_fit_refuses_single_class_and_bad_shapes():
    X, y = _synthetic_samples(50)
    with pytest.raises(ValueError, match="need right and wrong"):
        fit_score_calibration(X, np.ones(len(X)))
    with pytest.raises(ValueError, match="need right and wrong"):
        fit_score_calibration(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="must be"):
        fit_score_calibration(X[:, :3], y)
    with pytest.raises(ValueError, match="must be"):
        fit_score_calibration(X, y[:-1])
    # A constant feature (std 0) does not break the fit.
    Xc = X.copy()
    Xc[:, 0] = 0.5
    cal = fit_score_calibration(Xc, y)
    assert cal.std[0] == 1.0 and np.all(np.isfinite(cal.weights))


def test_feature_vector_fills_missing_with_neutral_values():
    names = tuple(FEATURES)
    v = feature_vector({})
    assert v.shape == (len(FEATURES),)
    assert v.tolist() == [FEATURES[k] for k in names]
    vals = {"depth_agreement": 0.7, "silhouette_iou": float("nan"), "chroma_distance": float("inf"),
            "protruding_fraction": None, "colour_correlation": 0.25, "ignored_extra": 9.0}
    v = feature_vector(vals)
    expect = dict(FEATURES, depth_agreement=0.7, colour_correlation=0.25)
    assert v.tolist() == [expect[k] for k in names]
    assert feature_vector(vals, names=("colour_correlation", "chroma_distance")).tolist() == [0.25, FEATURES["chroma_distance"]]
    # The neutral values: no texture verdict = 0.15 chroma distance, no support plane = standing out.
    assert FEATURES["chroma_distance"] == 0.15 and FEATURES["protruding_fraction"] == 1.0


def test_threshold_table_counts():
    score = np.array([0.9, 0.8, 0.6, 0.4, 0.35, 0.1])
    y = np.array([1, 0, 1, 1, 0, 0], float)
    rows = threshold_table(score, y, (0.3, 0.5, 0.6, 0.7, 0.95))
    assert [r["threshold"] for r in rows] == [0.3, 0.5, 0.6, 0.7, 0.95]
    assert [r["kept"] for r in rows] == [5, 3, 3, 2, 0]
    assert [r["wrong_kept"] for r in rows] == [2, 1, 1, 1, 0]
    assert rows[0]["precision"] == pytest.approx(3 / 5) and rows[0]["recall"] == pytest.approx(1.0)
    assert rows[1]["precision"] == pytest.approx(2 / 3) and rows[1]["recall"] == pytest.approx(2 / 3)
    assert rows[2] == rows[1] | {"threshold": 0.6}                 # score == threshold is kept
    assert rows[3]["precision"] == pytest.approx(0.5) and rows[3]["recall"] == pytest.approx(1 / 3)
    assert math.isnan(rows[4]["precision"]) and rows[4]["recall"] == 0.0
    assert threshold_table(score, np.zeros(6), (0.5,))[0]["recall"] == 0.0      # no right poses: no 0/0
    assert len(threshold_table(score, y)) == 3


# --------------------------------------------------------------------------- model file and estimator
@pytest.fixture(scope="module")
def demo_models():
    from pose_ros.core.object_model import load_object_dir

    return load_object_dir(REPO / "meshes")


@pytest.fixture
def tiny_model_file(tmp_path, demo_models) -> Path:
    """A real (untrained, tiny) model file of the three demo objects, written as `pose-ros train` does."""
    from pose_ros.objects.model_file import object_spec_from_model, save_model_file
    from pose_ros.objects.network import KeypointNet, NetworkConfig

    net = KeypointNet(NetworkConfig(num_classes=len(demo_models), input_width=64, input_height=48))
    return save_model_file(tmp_path / "tiny.pt", net, [object_spec_from_model(m) for m in demo_models],
                           metrics=[{"epoch": 1}])


def test_store_calibration_in_model_file(tiny_model_file, calibration):
    import torch

    from pose_ros.objects.estimator import PoseEstimator
    from pose_ros.objects.model_file import ModelFileError, load_model_file, store_in_model_file

    before = load_model_file(tiny_model_file)
    assert "score_calibration" not in before.raw
    est = PoseEstimator(tiny_model_file, use_icp=False, appearance_check=False)
    assert est.calibration is None
    d = dict(calibration.to_dict(), fitted_on={"scenes": 12})
    store_in_model_file(tiny_model_file, "score_calibration", d)
    assert not tiny_model_file.with_name(tiny_model_file.name + ".tmp").exists()
    loaded = load_model_file(tiny_model_file)
    assert loaded.raw["score_calibration"] == d
    assert loaded.raw["metrics"] == [{"epoch": 1}]                 # the rest of the file is untouched
    for k, v in before.network.state_dict().items():
        assert torch.equal(v, loaded.network.state_dict()[k])
    est = PoseEstimator(tiny_model_file, use_icp=False, appearance_check=False)
    assert isinstance(est.calibration, ScoreCalibration)
    assert est.calibration.score(RIGHT) == calibration.score(RIGHT)
    assert est.calibration.fitted_on == {"scenes": 12}
    assert PoseEstimator(tiny_model_file, use_icp=False, appearance_check=False,
                         use_score_calibration=False).calibration is None
    # Replacing the entry works; a calibration with unknown features is refused at start-up.
    store_in_model_file(tiny_model_file, "score_calibration", dict(d, features=["depth_agreement", "magic"],
                                                                   mean=[0, 0], std=[1, 1], weights=[1, 1]))
    with pytest.raises(ValueError, match="unknown features"):
        PoseEstimator(tiny_model_file, use_icp=False, appearance_check=False)
    # Not a model file: refused, left as it was.
    other = tiny_model_file.with_name("other.pt")
    torch.save({"hello": 1}, other)
    with pytest.raises(ModelFileError, match="not a pose_ros model file"):
        store_in_model_file(other, "score_calibration", d)
    assert torch.load(other, weights_only=False) == {"hello": 1}
    notdict = tiny_model_file.with_name("list.pt")
    torch.save([1, 2, 3], notdict)
    with pytest.raises(ModelFileError):
        store_in_model_file(notdict, "score_calibration", d)


def _tabletop_scene(models, seed=424242):
    from pose_ros.synth.noise import DepthNoiseModel
    from pose_ros.synth.renderer import RgbdRenderer
    from pose_ros.synth.scene_sampler import TabletopSceneSampler

    rng = np.random.default_rng(seed)
    sampler = TabletopSceneSampler(models, CAM, rng=rng, distance_m=(0.5, 0.9), n_distractors=(0, 1))
    sc = sampler.sample(3, model_indices=[0, 1, 2])
    r = RgbdRenderer(CAM).render(sc.render_list(models), rng=rng, table=sc.table)
    depth = DepthNoiseModel().apply(r.depth_m, r.normals_cam, rng=rng, K=CAM.K)
    return r, depth, sc


def test_estimator_scores_with_the_stored_calibration(tmp_path, calibration):
    """The shipped demo model with a calibration stored in a copy: every pose's score is the
    calibration of its features; without it (collect_features) the features are the same kind and
    the score is the hand-set one."""
    import torch

    from pose_ros.objects.estimator import PoseEstimator
    from pose_ros.objects.model_file import store_in_model_file

    src = REPO / "models" / "demo_objects.pt"
    if not src.is_file():
        pytest.skip(f"shipped model missing: {src}")
    torch.set_num_threads(1)
    path = tmp_path / "demo_calibrated.pt"
    shutil.copy(src, path)
    store_in_model_file(path, "score_calibration", calibration.to_dict())
    est = PoseEstimator(path, meshes=REPO / "meshes", score_threshold=0.0)
    assert est.calibration is not None
    models = [est.models[c] for c in sorted(est.models)]
    r, depth, sc = _tabletop_scene(models)
    results = est.estimate(r.rgb, depth, CAM)
    assert len(results) >= 2
    for res in results:
        f = res.stats.features
        assert set(f) == set(FEATURES), res.class_name
        assert math.isfinite(res.stats.uncalibrated_score)
        assert res.score == pytest.approx(est.calibration.score(f))
        assert f["protruding_fraction"] == res.stats.protruding_fraction
        assert 0.0 <= f["silhouette_iou"] <= 1.0
        # the shipped model has a crop stage: the final pose's agreement with its correspondences
        assert f["crop_agreement"] == res.stats.crop_agreement and 0.0 <= f["crop_agreement"] <= 1.0
        if res.stats.correspondences == "crop" and res.stats.method.startswith("pnp"):
            assert f["crop_agreement"] >= 0.5, (res.class_name, f["crop_agreement"])   # posed from them
    assert any(r.stats.correspondences == "crop" for r in results)
    plain = PoseEstimator(path, meshes=REPO / "meshes", score_threshold=0.0, use_score_calibration=False)
    assert plain.calibration is None
    assert all(p.stats.features == {} for p in plain.estimate(r.rgb, depth, CAM))
    plain.collect_features = True
    for res in plain.estimate(r.rgb, depth, CAM):
        assert set(res.stats.features) == set(FEATURES)
        assert res.score == res.stats.uncalibrated_score


def test_pose_features_of_a_right_and_a_shifted_pose(tiny_model_file, demo_models):
    """``_pose_features`` on a rendered box: the right pose fits the silhouette and the colour, a
    pose 3 cm to the side much less; the calibration's inputs are all there."""
    from pose_ros.core.transforms import R_from_axis_angle, make_T
    from pose_ros.objects.estimator import PoseEstimator, PoseStats
    from pose_ros.synth.renderer import RgbdRenderer

    est = PoseEstimator(tiny_model_file, meshes=demo_models, appearance_check=False)
    box = next(m for m in demo_models if m.name == "box")
    T = make_T(R_from_axis_angle(np.array([1.0, 0.3, 0.0]), 2.2), [0.02, -0.01, 0.6])
    r = RgbdRenderer(CAM).render([(box, T)], background=np.full((480, 640, 3), 90, np.uint8))
    mask = r.instance_mask == 0
    stats = PoseStats(mask_pixels=800, vote_inlier_ratio=0.7, depth_agreement=0.9, icp_applied=True,
                      icp_fitness=0.95, method="pnp+icp", protruding_fraction=0.9)
    f = est._pose_features(box, T, r.rgb, r.depth_m, CAM, mask, stats, 0.75)
    assert set(f) == set(FEATURES)
    assert f["pnp_inlier_ratio"] == 0.75 and f["icp_fitness"] == 0.95 and f["protruding_fraction"] == 0.9
    assert f["log_mask_pixels"] == pytest.approx(np.log(800))
    assert f["silhouette_iou"] > 0.9 and f["render_depth"] > 0.9 and f["chroma_distance"] < 0.05
    T_off = T.copy()
    T_off[0, 3] += 0.03
    g = est._pose_features(box, T_off, r.rgb, r.depth_m, CAM, mask,
                           PoseStats(method="depth_search+icp", icp_applied=False, icp_fitness=0.9), 0.75)
    assert g["pnp_inlier_ratio"] == 0.0 and g["icp_fitness"] == 0.0      # not from PnP, no ICP
    assert g["silhouette_iou"] < f["silhouette_iou"] - 0.2
    assert g["render_depth"] < f["render_depth"]


def test_chroma_distance_of_the_verification(demo_models):
    """Verification.chroma_distance: ~0 for the model's own colours, large for the same image with
    its colour channels rotated (same brightness pattern, other hue), NaN without overlap."""
    from pose_ros.core.transforms import R_from_axis_angle, make_T
    from pose_ros.objects.appearance import AppearanceScorer
    from pose_ros.synth.renderer import RgbdRenderer

    box = next(m for m in demo_models if m.name == "box")
    T = make_T(R_from_axis_angle(np.array([1.0, 0.3, 0.0]), 2.2), [0.02, -0.01, 0.6])
    r = RgbdRenderer(CAM).render([(box, T)], background=np.full((480, 640, 3), 90, np.uint8))
    mask = r.instance_mask == 0
    sc = AppearanceScorer()
    right = sc.verify(box, T, r.rgb, r.depth_m, mask, CAM)
    assert right.chroma_distance < 0.05
    rotated = np.ascontiguousarray(r.rgb[..., [1, 2, 0]])
    swapped = AppearanceScorer().verify(box, T, rotated, r.depth_m, mask, CAM)
    assert swapped.chroma_distance > 0.1 and swapped.chroma_distance > 3 * right.chroma_distance
    assert swapped.silhouette_iou == pytest.approx(right.silhouette_iou)   # geometry is unchanged
    far = np.zeros_like(mask)
    far[:40, :40] = True
    none = AppearanceScorer().verify(box, T, r.rgb, r.depth_m, far, CAM)
    assert math.isnan(none.chroma_distance)
