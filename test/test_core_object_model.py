"""ObjectModel loading on real LM-O models: units, diameter, symmetries, keypoints, validation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import open3d as o3d
import pytest
import trimesh

from conftest import shared_data_path
from pose_ros.core.object_model import (MeshLoadError, MeshUnitsError, ModelInfoError, ObjectSymmetry,
                                        farthest_point_sampling, load_bop_models, load_models_info,
                                        load_object_dir, load_object_model, mesh_diameter)
from pose_ros.core.transforms import R_from_axis_angle, make_T, transform_points


def _surface_distance_m(mesh: trimesh.Trimesh, pts_m: np.ndarray) -> np.ndarray:
    """Unsigned distance from points to the mesh surface (Open3D, exact point-triangle)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(pts_m.astype(np.float32))).numpy()


@pytest.fixture(scope="module")
def lmo_dir():
    return shared_data_path("lmo_models", "models")


@pytest.fixture(scope="module")
def can(lmo_dir):
    return load_object_model(lmo_dir / "obj_000005.ply", units="mm", obj_id=5, num_points=1500, num_keypoints=8)


def test_lmo_model_units_and_diameter(can, lmo_dir):
    info = json.loads((lmo_dir / "models_info.json").read_text())
    d_ref_m = info["5"]["diameter"] / 1000.0
    assert abs(can.diameter_m - d_ref_m) < 0.01 * d_ref_m
    assert can.points_m.shape == (1500, 3) and can.normals.shape == (1500, 3)
    np.testing.assert_allclose(np.linalg.norm(can.normals, axis=1), 1.0, atol=1e-6)
    assert np.abs(can.mesh.vertices).max() < 0.2  # metres now
    assert can.mesh.visual.kind == "vertex"  # colours kept for the renderer
    assert len(np.unique(can.mesh.visual.vertex_colors[:, :3], axis=0)) > 10
    with pytest.raises(MeshUnitsError, match=r"units='mm'"):
        load_object_model(lmo_dir / "obj_000005.ply", units="m")


def test_keypoints_on_surface_and_spread(can):
    kp = can.keypoints_m
    assert kp.shape == (9, 3)
    np.testing.assert_allclose(kp[-1], can.bbox_center_m)
    assert _surface_distance_m(can.mesh, kp[:-1]).max() < 1e-4
    pair = np.linalg.norm(kp[:-1, None] - kp[None, :-1], axis=-1)
    min_sep = pair[~np.eye(8, dtype=bool)].min()
    # Random 8 surface points are typically far closer; FPS keeps them apart.
    rng = np.random.default_rng(0)
    rand_min = []
    for _ in range(20):
        r = can.points_m[rng.choice(len(can.points_m), 8, replace=False)]
        d = np.linalg.norm(r[:, None] - r[None], axis=-1)
        rand_min.append(d[~np.eye(8, dtype=bool)].min())
    assert min_sep > 0.25 * can.diameter_m
    assert min_sep > np.max(rand_min)
    # Deterministic.
    again = load_object_model(shared_data_path("lmo_models", "models", "obj_000005.ply"), units="mm",
                              num_points=1500, num_keypoints=8)
    np.testing.assert_allclose(again.keypoints_m, kp)


def test_farthest_point_sampling_basic():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0.1, 0, 0], [0, 1, 0], [0.5, 0.5, 0]], float)
    idx = farthest_point_sampling(pts, 3)
    assert len(set(idx.tolist())) == 3
    assert set(idx.tolist()) == {0, 1, 3}
    with pytest.raises(ValueError, match="k must be"):
        farthest_point_sampling(pts, 6)


@pytest.mark.parametrize("obj_id,name", [(10, "eggbox"), (11, "glue")])
def test_symmetries_map_model_onto_itself(lmo_dir, obj_id, name):
    (model,) = load_bop_models(lmo_dir, obj_ids=[obj_id], num_points=800)
    assert model.is_symmetric, name
    Ts = model.symmetry.transforms()
    assert len(Ts) == 2 and np.allclose(Ts[0], np.eye(4))
    for S in Ts[1:]:
        moved = transform_points(S, model.points_m)
        dist = _surface_distance_m(model.mesh, moved)
        assert np.median(dist) < 0.01 * model.diameter_m, (name, np.median(dist))  # scans are not perfectly symmetric
    # Control: a rotation that is not a symmetry moves points well off the surface.
    bad = make_T(R_from_axis_angle([0, 0, 1], np.pi / 2), np.zeros(3))
    assert np.median(_surface_distance_m(model.mesh, transform_points(bad, model.points_m))) > 0.02 * model.diameter_m


def test_continuous_symmetry_transforms():
    sym = ObjectSymmetry(discrete=[make_T(R_from_axis_angle([1, 0, 0], np.pi), [0, 0, 0.1])],
                         continuous=[(np.array([0.0, 0.0, 1.0]), np.array([0.01, 0.0, 0.0]))])
    Ts = sym.transforms(continuous_steps=12)
    assert len(Ts) == 24 and np.allclose(Ts[0], np.eye(4))
    # Every continuous-only rotation keeps the axis line (through the offset) fixed.
    on_axis = np.array([[0.01, 0.0, 0.3]])
    for T in Ts[::2]:
        np.testing.assert_allclose(transform_points(T, on_axis), on_axis, atol=1e-12)
    assert ObjectSymmetry().transforms() and len(ObjectSymmetry().transforms()) == 1


def _write_info(tmp_path, lmo_dir, mutate):
    info = json.loads((lmo_dir / "models_info.json").read_text())
    mutate(info)
    p = tmp_path / "models_info.json"
    p.write_text(json.dumps(info))
    return p


@pytest.mark.parametrize("mutate,match", [
    (lambda i: i["5"].pop("diameter"), r"obj 5: missing field 'diameter'"),
    (lambda i: i["5"].update(diameter="big"), r"obj 5: field 'diameter' must be numbers"),
    (lambda i: i["10"]["symmetries_discrete"][0].pop(), r"obj 10: field 'symmetries_discrete\[0\]' must have 16"),
    (lambda i: i["10"]["symmetries_discrete"][0].__setitem__(0, 3.0), r"obj 10: .*not orthonormal"),
    (lambda i: i["11"].update(symmetries_continuous=[{"axis": [0, 1], "offset": [0, 0, 0]}]),
     r"obj 11: field 'symmetries_continuous\[0\].axis' must have 3"),
    (lambda i: i["11"].update(symmetries_continuous=[{"axis": ["z", 0, 1], "offset": [0, 0, 0]}]),
     r"obj 11: field 'symmetries_continuous\[0\].axis' must be numbers"),
    (lambda i: i.update({"abc": {}}), r"not an integer object id"),
])
def test_malformed_models_info(tmp_path, lmo_dir, mutate, match):
    p = _write_info(tmp_path, lmo_dir, mutate)
    with pytest.raises(ModelInfoError, match=match):
        load_models_info(p)


def test_models_info_units_and_invalid_json(tmp_path, lmo_dir):
    info = load_models_info(lmo_dir / "models_info.json")
    assert abs(info[10].diameter_m - 0.164628) < 1e-9
    assert np.abs(info[10].symmetry.discrete[0][:3, 3]).max() < 0.001  # mm -> m
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelInfoError, match="not valid JSON"):
        load_models_info(tmp_path / "bad.json")


def test_mesh_errors(tmp_path):
    with pytest.raises(MeshLoadError, match="not found"):
        load_object_model(tmp_path / "nope.ply")
    (tmp_path / "a.fbx").write_text("x")
    with pytest.raises(MeshLoadError, match="unsupported mesh format"):
        load_object_model(tmp_path / "a.fbx")
    (tmp_path / "empty.obj").write_text("# nothing\n")
    with pytest.raises(MeshLoadError, match="no triangles"):
        load_object_model(tmp_path / "empty.obj")
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 0.1 0 0\nv 0.2 0 0\nf 1 2 3\n")
    with pytest.raises(MeshLoadError, match="degenerate"):
        load_object_model(tmp_path / "flat.obj")
    trimesh.creation.box(extents=(0.001, 0.001, 0.001)).export(tmp_path / "tiny.stl")
    with pytest.raises(MeshUnitsError, match="diameter"):
        load_object_model(tmp_path / "tiny.stl", units="mm")
    with pytest.raises(ValueError, match="units must be"):
        load_object_model(tmp_path / "tiny.stl", units="cm")


def test_mesh_diameter_exact():
    box = trimesh.creation.box(extents=(0.1, 0.2, 0.3))
    assert abs(mesh_diameter(box.vertices) - np.sqrt(0.01 + 0.04 + 0.09)) < 1e-12


def test_load_object_dir(tmp_path, lmo_dir):
    a = tmp_path / "meshes" / "eggbox"
    a.mkdir(parents=True)
    shutil.copy(lmo_dir / "obj_000010.ply", a / "eggbox.ply")  # test-time copy under tmp_path only
    info = json.loads((lmo_dir / "models_info.json").read_text())["10"]
    S = np.array(info["symmetries_discrete"][0]).reshape(4, 4)
    S[:3, 3] /= 1000.0
    (a / "object.yaml").write_text(
        f"name: eggbox\nobj_id: 10\nmesh: eggbox.ply\nunits: mm\nsymmetry:\n  discrete: [{S.tolist()}]\n")
    b = tmp_path / "meshes" / "cube"
    b.mkdir()
    trimesh.creation.box(extents=(0.05, 0.05, 0.05)).export(b / "cube.stl")
    (b / "object.yaml").write_text("name: cube\nobj_id: 2\nmesh: cube.stl\nunits: m\nsymmetry:\n"
                                   "  continuous: [{axis: [0, 0, 1], offset: [0, 0, 0]}]\n")
    models = load_object_dir(tmp_path / "meshes", num_points=300)
    assert [m.name for m in models] == ["cube", "eggbox"]
    assert models[0].symmetry.continuous and models[1].symmetry.discrete
    np.testing.assert_allclose(models[1].symmetry.discrete[0][:3, 3], S[:3, 3], atol=1e-9)
    # A single bare 4x4 (not wrapped in a list) is accepted too.
    (a / "object.yaml").write_text(
        f"name: eggbox\nobj_id: 10\nmesh: eggbox.ply\nunits: mm\nsymmetry:\n  discrete: {S.tolist()}\n")
    assert len(load_object_dir(tmp_path / "meshes", num_points=300)[1].symmetry.discrete) == 1
    (b / "object.yaml").write_text("name: cube\nmesh: cube.stl\nunits: m\n")
    with pytest.raises(ModelInfoError, match=r"missing key\(s\) \['obj_id'\]"):
        load_object_dir(tmp_path / "meshes")


def test_multi_part_obj_is_concatenated(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(extents=(0.05, 0.05, 0.05)), geom_name="a")
    scene.add_geometry(trimesh.creation.box(extents=(0.05, 0.05, 0.05),
                                            transform=trimesh.transformations.translation_matrix([0.1, 0, 0])),
                       geom_name="b")
    scene.export(tmp_path / "two.obj")
    m = load_object_model(tmp_path / "two.obj", units="m", num_points=200)
    assert len(m.mesh.faces) == 24
    assert abs(m.diameter_m - np.linalg.norm([0.15, 0.05, 0.05])) < 1e-6


def test_repo_demo_meshes_load(repo_root):
    """The demo objects shipped in meshes/ load through the documented object.yaml format."""
    if not any((repo_root / "meshes").glob("*/object.yaml")):
        pytest.skip("no demo meshes with object.yaml in meshes/ yet")
    models = load_object_dir(repo_root / "meshes", num_points=300)
    assert len({m.obj_id for m in models}) == len(models) >= 1
    for m in models:
        assert 0.005 <= m.diameter_m <= 3.0 and m.keypoints_m.shape == (9, 3)


def test_ycbv_symmetries_with_translation_in_mm():
    """YCB-V wood block (16, 7 discrete) and clamp (20, translation ~19 mm): the mm->m conversion
    of the symmetry translation matters; dropping it moves the clamp off its own surface."""
    models = load_bop_models(shared_data_path("ycbv_real", "models_bop_ycbv"), obj_ids=[16, 20], num_points=800)
    for model in models:
        Ts = model.symmetry.transforms()
        assert len(Ts) == {16: 8, 20: 2}[model.obj_id]
        for S in Ts[1:]:
            dist = _surface_distance_m(model.mesh, transform_points(S, model.points_m))
            assert np.median(dist) < 0.005 * model.diameter_m, (model.obj_id, np.median(dist))
    clamp = models[1]
    S = clamp.symmetry.transforms()[1].copy()
    S[:3, 3] = 0.0
    assert np.median(_surface_distance_m(clamp.mesh, transform_points(S, clamp.points_m))) > 0.015 * clamp.diameter_m
