"""DepthNoiseModel statistics and hole patterns on real renders."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.transforms import R_from_axis_angle, make_T
from pose_ros.synth.noise import DepthNoiseModel, DepthNoiseParams, depth_edges
from pose_ros.synth.renderer import RgbdRenderer, SceneMesh

CAM = PinholeCamera.from_fov(320, 240, 60.0)
GREY = np.zeros((240, 320, 3), np.uint8)
WALL = SceneMesh("wall", trimesh.Trimesh([[-5, -5, 0], [5, -5, 0], [5, 5, 0], [-5, 5, 0]], [[0, 1, 2], [0, 2, 3]]))


@pytest.fixture(scope="module")
def renderer() -> RgbdRenderer:
    return RgbdRenderer(CAM)


@pytest.mark.parametrize("z", [0.5, 1.0, 1.5, 2.5])
def test_axial_std_follows_sigma_z(renderer, z):
    res = renderer.render([(WALL, make_T(np.eye(3), [0, 0, z]))], background=GREY)
    assert np.all(res.depth_m == pytest.approx(z, abs=1e-6))
    model = DepthNoiseModel()
    rng = np.random.default_rng(0)
    samples = np.stack([model.apply(res.depth_m, res.normals_cam, rng, K=CAM.K) for _ in range(4)])
    valid = samples > 0
    assert 0.98 < valid.mean() < 1.0  # random dropout only
    vals = samples[valid]
    sigma = float(model.params.sigma_z(np.float32(z)))
    # 1 mm quantisation adds 1/12 mm^2 of variance; the model's sigma is the rest.
    expected = np.sqrt(sigma**2 + (1e-3) ** 2 / 12)
    assert vals.std() == pytest.approx(expected, rel=0.15), f"z={z}: std {vals.std() * 1e3:.2f} mm vs {expected * 1e3:.2f}"
    assert abs(vals.mean() - z) < 0.2 * sigma + 2e-4
    assert np.allclose(vals * 1000, np.rint(vals * 1000), atol=1e-3)  # quantised to mm


def test_sigma_grows_with_distance_and_angle():
    p = DepthNoiseParams()
    z = np.array([0.4, 1.0, 2.0, 3.0], np.float32)
    s = p.sigma_z(z)
    assert s[0] == pytest.approx(0.0012) and np.all(np.diff(s) > 0)
    assert p.sigma_z(np.float32(1.0), np.deg2rad(75)) > 1.5 * p.sigma_z(np.float32(1.0))


def test_edges_and_grazing_pixels_are_dropped(renderer):
    box = SceneMesh("box", trimesh.creation.box(extents=[0.2, 0.2, 0.2]))
    objs = [(WALL, make_T(np.eye(3), [0, 0, 1.5])), (box, make_T(np.eye(3), [0, 0, 0.8]))]
    res = renderer.render(objs, background=GREY)
    edge = depth_edges(res.depth_m, 0.01, 0.02)
    assert 200 < edge.sum() < 2000  # two thin rings at the box outline, not the flat areas
    params = DepthNoiseParams(edge_drop_prob=1.0, dropout_prob=0.0)
    noisy = DepthNoiseModel(params).apply(res.depth_m, res.normals_cam, np.random.default_rng(1), K=CAM.K)
    assert np.all(noisy[edge] == 0)
    assert (noisy[~edge] > 0).mean() > 0.99
    default = DepthNoiseModel().apply(res.depth_m, res.normals_cam, np.random.default_rng(2), K=CAM.K)
    assert (default[edge] == 0).mean() > 0.8

    # A wall at a steep angle: the view angle varies across the image (60 deg FOV). Pixels seen
    # beyond the 78 deg threshold (computed analytically here) vanish, those below 70 deg stay.
    n_wall = R_from_axis_angle(np.array([0.0, 1.0, 0.0]), np.deg2rad(72.0))[:, 2]
    T = make_T(R_from_axis_angle(np.array([0.0, 1.0, 0.0]), np.deg2rad(72.0)), [0, 0, 1.0])
    r = renderer.render([(WALL, T)], background=GREY)
    vv, uu = np.mgrid[0:240, 0:320]
    rays = np.stack([(uu - CAM.cx) / CAM.fx, (vv - CAM.cy) / CAM.fy, np.ones(uu.shape)], -1)
    angle = np.degrees(np.arccos(np.abs(rays @ n_wall) / np.linalg.norm(rays, axis=-1)))
    n = DepthNoiseModel(DepthNoiseParams(dropout_prob=0.0, max_range_m=50.0)).apply(
        r.depth_m, r.normals_cam, np.random.default_rng(3), K=CAM.K)
    ok = r.depth_m > 0
    steep, mild = ok & (angle > 78.5), ok & (angle < 70.0)
    assert steep.sum() > 1000 and mild.sum() > 1000
    assert np.all(n[steep] == 0)
    assert (n[mild] > 0).mean() > 0.99


def test_range_missing_input_reproducible_and_validation(renderer):
    res = renderer.render([(WALL, make_T(np.eye(3), [0, 0, 5.0]))], background=GREY)
    model = DepthNoiseModel()
    assert np.all(model.apply(res.depth_m, res.normals_cam, np.random.default_rng(0)) == 0)  # beyond 4 m
    d = np.full((240, 320), 0.9, np.float32)
    d[:, :100] = np.nan
    d[:, 100:120] = 0.0
    out = model.apply(d, rng=np.random.default_rng(0))
    assert out.dtype == np.float32 and np.all(out[:, :118] == 0) and np.all(np.isfinite(out))
    a = model.apply(d, rng=np.random.default_rng(7))
    b = model.apply(d, rng=np.random.default_rng(7))
    assert np.array_equal(a, b) and not np.array_equal(a, model.apply(d, rng=np.random.default_rng(8)))
    assert np.all(d[:, 130:] == np.float32(0.9))  # input untouched
    with pytest.raises(ValueError, match="dropout_prob"):
        DepthNoiseParams(dropout_prob=1.5)
    with pytest.raises(ValueError, match="max_range_m"):
        DepthNoiseParams(min_range_m=2.0, max_range_m=1.0)
    with pytest.raises(ValueError, match=r"\(H,W\)"):
        model.apply(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="normals_cam"):
        model.apply(d, normals_cam=np.zeros((5, 5, 3)))
