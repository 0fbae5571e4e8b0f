"""TabletopSceneSampler: resting contact, footprints, camera ranges, reproducibility."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.object_model import load_object_dir
from pose_ros.core.transforms import invert_T, transform_points
from pose_ros.synth.renderer import RgbdRenderer
from pose_ros.synth.scene_sampler import SceneSamplingError, TabletopSceneSampler

REPO = Path(__file__).resolve().parents[1]
CAM = PinholeCamera(np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1]]), 640, 480)


@pytest.fixture(scope="module")
def models():
    return load_object_dir(REPO / "meshes")


@pytest.fixture(scope="module")
def scenes(models):
    sampler = TabletopSceneSampler(models, CAM, rng=11, n_distractors=(1, 3))
    return [sampler.sample(4) for _ in range(12)]


def _hull_xy(points: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull

    h = ConvexHull(points[:, :2])
    return points[h.vertices, :2]


def _polygons_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons (vertices in order)."""
    for poly in (a, b):
        for i in range(len(poly)):
            e = poly[(i + 1) % len(poly)] - poly[i]
            axis = np.array([-e[1], e[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def test_objects_rest_on_the_table_without_overlap(models, scenes):
    for sc in scenes:
        footprints = []
        for m, T_table_obj, T_cam_obj in zip(sc.model_indices, sc.T_table_obj, sc.T_cam_obj):
            assert np.allclose(sc.T_cam_table @ T_table_obj, T_cam_obj, atol=1e-9)
            pts = transform_points(T_table_obj, np.asarray(models[m].mesh.vertices))
            assert abs(pts[:, 2].min()) < 1e-3, f"{models[m].name} floats/sinks by {pts[:, 2].min() * 1000:.2f} mm"
            footprints.append(_hull_xy(pts))
        T_table_cam = invert_T(sc.T_cam_table)
        for mesh, T_cam_d in sc.distractors:
            pts = transform_points(T_table_cam @ T_cam_d, np.asarray(mesh.mesh.vertices))
            assert abs(pts[:, 2].min()) < 1e-3
            footprints.append(_hull_xy(pts))
        for i in range(len(footprints)):
            for j in range(i + 1, len(footprints)):
                assert not _polygons_overlap(footprints[i], footprints[j]), "footprints interpenetrate"


def test_resting_poses_are_physically_stable(models, scenes):
    by_name = {m.name: i for i, m in enumerate(models)}
    seen_upright = False
    for sc in scenes:
        for m, T in zip(sc.model_indices, sc.T_table_obj):
            if m == by_name["bottle"]:
                assert T[2, 2] > 0.999  # a bottle only stands upright (quasi-static analysis)
                seen_upright = True
            if m == by_name["box"]:
                # a box lies on one of its faces: one model axis is vertical
                assert np.max(np.abs(T[2, :3])) > 0.999
    assert seen_upright


def test_camera_ranges(scenes):
    for sc in scenes:
        T_table_cam = invert_T(sc.T_cam_table)
        eye = T_table_cam[:3, 3]
        fwd = T_table_cam[:3, 2]
        # target: where the optical axis meets the table plane
        s = -eye[2] / fwd[2]
        target = eye + s * fwd
        dist = np.linalg.norm(eye - target)
        elev = np.degrees(np.arcsin((eye[2] - target[2]) / dist))
        assert 0.4 - 1e-6 <= dist <= 1.2 + 1e-6
        assert 20 - 1e-6 <= elev <= 80 + 1e-6
        assert np.linalg.norm(target[:2]) < 0.3


def test_reproducible_with_seed_and_renders(models):
    a = TabletopSceneSampler(models, CAM, rng=5).sample(3)
    b = TabletopSceneSampler(models, CAM, rng=5).sample(3)
    c = TabletopSceneSampler(models, CAM, rng=6).sample(3)
    assert a.model_indices == b.model_indices
    assert all(np.array_equal(x, y) for x, y in zip(a.T_cam_obj, b.T_cam_obj))
    assert np.array_equal(a.T_cam_table, b.T_cam_table)
    assert not np.allclose(a.T_cam_table, c.T_cam_table)
    res = RgbdRenderer(CAM).render(a.render_list(models), rng=np.random.default_rng(0), table=a.table)
    assert res.visible_fraction.shape == (3 + len(a.distractors),)
    # Objects rest on the table: no object pixel is farther than the table behind it.
    assert (res.depth_m > 0).mean() > 0.3


def test_bad_requests(models):
    with pytest.raises(SceneSamplingError, match="at least one model"):
        TabletopSceneSampler([], CAM)
    with pytest.raises(SceneSamplingError, match="out of range"):
        TabletopSceneSampler(models, CAM, rng=0).sample(1, model_indices=[7])
    crowded = TabletopSceneSampler(models, CAM, rng=0, table_size_xy_m=(0.3, 0.3), n_distractors=(0, 0))
    with pytest.raises(SceneSamplingError, match="could not place"):
        crowded.sample(60)
