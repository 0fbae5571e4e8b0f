"""Demo meshes: load through load_object_dir with sane sizes, and regenerate byte-identically."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose_ros.cli import main as cli_main
from pose_ros.core.object_model import load_object_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    return {m.name: m for m in load_object_dir(REPO / "meshes")}


def test_demo_objects_load_with_sane_sizes(models):
    assert sorted((m.obj_id, n) for n, m in models.items()) == [(1, "mug"), (2, "box"), (3, "bottle")]
    ext = {n: m.mesh.bounds[1] - m.mesh.bounds[0] for n, m in models.items()}
    assert ext["mug"][2] == pytest.approx(0.095, abs=1e-3)
    assert ext["mug"][1] == pytest.approx(0.080, abs=1e-3)  # body diameter; handle extends along +x
    assert 0.10 < ext["mug"][0] < 0.13
    assert np.allclose(ext["box"], [0.15, 0.10, 0.05], atol=1e-6)
    assert ext["bottle"][2] == pytest.approx(0.22, abs=1e-3)
    for n, m in models.items():
        assert abs(m.mesh.bounds[0][2]) < 1e-9, f"{n}: model origin must be at the bottom"
        assert 0.05 < m.diameter_m < 0.3
        assert np.allclose(m.mesh.bounds[:, :2].sum(0)[1], 0, atol=1e-6)  # centred in y


def test_symmetry_and_colours(models):
    assert not models["mug"].is_symmetric and not models["box"].is_symmetric
    bottle = models["bottle"]
    assert bottle.is_symmetric
    axis, offset = bottle.symmetry.continuous[0]
    assert np.allclose(axis, [0, 0, 1]) and np.allclose(offset, 0)
    # The bottle really is symmetric: rotating its vertices about z maps them onto the surface.
    from scipy.spatial import cKDTree

    v = np.asarray(bottle.mesh.vertices)
    c, s = np.cos(0.37), np.sin(0.37)
    rot = v @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T
    r_src, r_rot = np.hypot(v[:, 0], v[:, 1]), np.hypot(rot[:, 0], rot[:, 1])
    tree = cKDTree(np.stack([r_src, v[:, 2]], 1))
    assert tree.query(np.stack([r_rot, rot[:, 2]], 1))[0].max() < 1e-6
    for n, m in models.items():
        vc = np.asarray(m.mesh.visual.vertex_colors)[:, :3]
        assert len(vc) == len(m.mesh.vertices)
        assert len(np.unique(vc, axis=0)) >= 4, f"{n} has no colour pattern"
    # The box print differs per face: mean colours of the six faces are distinct.
    box = models["box"]
    v = np.asarray(box.mesh.vertices)
    vc = np.asarray(box.mesh.visual.vertex_colors)[:, :3].astype(float)
    half = np.array([0.075, 0.05, 0.025])
    means = []
    for axis in range(3):
        for sign in (-1, 1):
            on = np.abs((v[:, axis] - (0.025 if axis == 2 else 0)) - sign * half[axis]) < 1e-6
            means.append(vc[on].mean(0))
    d = np.linalg.norm(np.array(means)[:, None] - np.array(means)[None], axis=-1)
    assert d[np.triu_indices(6, 1)].min() > 5


def test_make_demo_meshes_is_deterministic_and_in_sync(tmp_path):
    assert cli_main(["make-demo-meshes", "--out", str(tmp_path)]) == 0
    for name in ("mug", "box", "bottle"):
        for f in (f"{name}.ply", "object.yaml"):
            new, committed = (tmp_path / name / f).read_bytes(), (REPO / "meshes" / name / f).read_bytes()
            assert new == committed, f"meshes/{name}/{f} is stale; run `pose-ros make-demo-meshes`"
        assert (tmp_path / name / f"{name}.ply").stat().st_size < 400_000
        assert (tmp_path / name / f"{name}.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
