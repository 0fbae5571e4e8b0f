"""Training crops rendered zoomed in (real ray-cast renders of the demo meshes, noise-free depth so that
the targets can be checked against the meshes' surfaces)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose_ros.objects.crop_geometry import CropBox, crop_image, crop_to_image_px
from pose_ros.objects.crop_rendering import CropRenderer, _zoomed_camera, whole_render_box
from pose_ros.objects.training_data import SceneConfig, full_resolution_scene_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    from pose_ros.core.object_model import load_object_dir

    return load_object_dir(REPO / "meshes")      # mug, box, bottle: the demo model's class order


def _renderer(models, **kw) -> CropRenderer:
    cfg = full_resolution_scene_config(SceneConfig(depth_noise=False))
    return CropRenderer(models, cfg, [m.keypoints_m[-1] for m in models], [m.diameter_m for m in models], **kw)


@pytest.fixture(scope="module")
def renderer(models):
    return _renderer(models, keep_render_depth=True)


@pytest.fixture(scope="module")
def crops(renderer):
    return renderer.crops(np.random.default_rng(3), 24)


def _surface_distance(model, pts):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(model.mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(model.mesh.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(pts, np.float32))).numpy()


def test_full_resolution_scene_config():
    cfg = full_resolution_scene_config(SceneConfig())
    assert (cfg.width, cfg.height) == (640, 480) and cfg.fx_range == (500.0, 660.0)
    K = (600.0, 0, 320, 0, 600.0, 240, 0, 0, 1)
    cam = full_resolution_scene_config(SceneConfig(camera_K=K, camera_size=(848, 480)))
    assert (cam.width, cam.height) == (848, 480) and cam.camera_K == K


def test_zoomed_camera_sees_the_box_of_the_full_camera():
    K = np.array([[610.0, 0, 321.3], [0, 605.0, 238.7], [0, 0, 1]])
    box = CropBox(512.4, 61.9, 87.3)                   # off-centre: the zoomed principal point is far outside
    cam = _zoomed_camera(K, box, 128)
    X = np.random.default_rng(0).uniform([-0.3, -0.3, 0.4], [0.3, 0.3, 1.2], (50, 3))
    uv_full = (X @ K.T)[:, :2] / X[:, 2:]
    uv_zoom = cam.project(X)
    q = uv_full * box.affine(128)[0, 0] + box.affine(128)[:, 2]
    assert np.allclose(uv_zoom, q, atol=1e-9)
    assert np.allclose(crop_to_image_px(uv_zoom, box, 128), uv_full, atol=1e-9)


def test_crop_samples_shapes_and_kinds(crops, renderer):
    S, s, R = renderer.S, renderer.S // 2, renderer.R
    assert len(crops) == 24
    sides = []
    for c in crops:
        assert c.rgb.shape == (S, S, 3) and c.rgb.dtype == np.uint8
        assert c.depth_m.shape == (S, S) and c.depth_m.dtype == np.float32
        assert c.mask.shape == (s, s) and c.mask.dtype == bool and c.valid.shape == (s, s)
        assert c.xyz.shape == (3, s, s) and c.xyz.dtype == np.float32
        assert c.render_depth_m.shape == (R, R) and c.K_crop.shape == (3, 3)
        assert 0 <= c.cls < 3
        assert np.all(c.valid <= c.mask) and np.all(c.xyz[:, ~c.valid] == 0)
        assert np.abs(c.xyz).max() <= 0.6                  # inside the network's tanh range
        if c.T_cam_obj is None:                            # negatives: nothing to find
            assert not c.mask.any() and not c.valid.any()
        else:
            assert c.valid.sum() >= 0.5 * c.mask.sum() > 0
            assert c.z_ref_m > 0
            vs, us = np.nonzero(c.mask)
            sides.append(max(np.ptp(us), np.ptp(vs)) + 1)
    assert sum(c.T_cam_obj is not None for c in crops) >= 18
    # the object fills the crop as a detector's padded box does: about 1/pad of its side (jittered;
    # smaller where an occluder splits the visible part the box was taken from)
    assert 0.55 * s <= np.median(sides) <= 0.85 * s and min(sides) >= 0.2 * s and max(sides) <= s


def test_targets_are_the_surface_points_each_pixel_shows(crops, renderer, models):
    """Each valid target, moved by the crop's pose and projected by its crop camera, lands on its own
    output pixel, and lies on the mesh (noise-free depth)."""
    s, R = renderer.S // 2, renderer.R
    checked = 0
    for c in crops:
        if c.T_cam_obj is None:
            continue
        jj, ii = np.nonzero(c.valid)
        X = c.xyz[:, jj, ii].T.astype(np.float64) * renderer.diameters[c.cls] + renderer.centres[c.cls]
        Xc = X @ c.T_cam_obj[:3, :3].T + c.T_cam_obj[:3, 3]
        uv = (Xc @ c.K_crop.T)[:, :2] / Xc[:, 2:]
        want = crop_to_image_px(np.stack([ii, jj], 1).astype(np.float64), whole_render_box(R), s)
        assert np.abs(uv - want).max() < 0.05, np.abs(uv - want).max()
        d = _surface_distance(models[c.cls], X)
        assert np.median(d) < 0.001 and d.max() < 0.005, (np.median(d), d.max())
        checked += 1
    assert checked >= 18


def test_a_zoomed_crop_matches_the_same_box_cut_from_the_full_frame(renderer, models):
    """What the run-time crop of a camera frame shows: the zoomed render's object mask equals the mask
    cut out of a full-resolution render of the same scene with that box."""
    rng = np.random.default_rng(11)
    draw = renderer.scenes.sample(rng, empty=False)
    objs = [(o, T) for _, o, T in draw.scene]
    full = renderer.scenes.renderers[draw.camera_index].render(objs, rng=np.random.default_rng(0), table=draw.table)
    k = int(np.argmax(np.bincount(full.instance_mask[full.instance_mask >= 0])))
    vs, us = np.nonzero(full.instance_mask == k)
    box = CropBox(float(us.mean()), float(vs.mean()), 1.4 * max(np.ptp(us), np.ptp(vs)) + 1)
    _, z = renderer.render_view(draw, box, np.random.default_rng(0))
    cut = crop_image((full.instance_mask == k).astype(np.uint8), box, 32, nearest=True).astype(bool)
    zoomed = crop_image((z.instance_mask == k).astype(np.uint8), whole_render_box(renderer.R), 32,
                        nearest=True).astype(bool)
    assert cut.sum() > 50
    assert (cut == zoomed).mean() > 0.97                 # edge pixels: sampled at other positions
    # depth agrees where both see the object
    dz = crop_image(z.depth_m, whole_render_box(renderer.R), 32, nearest=True)
    df = crop_image(full.depth_m, box, 32, nearest=True)
    both = cut & zoomed
    assert np.median(np.abs(dz[both] - df[both])) < 0.003


def test_negatives_and_wrong_classes(models):
    ren = _renderer(models, wrong_class_share=0.5, distractor_share=1.0)
    got = ren.crops(np.random.default_rng(5), 40)
    neg = [c for c in got if c.T_cam_obj is None]
    assert 5 <= len(neg) <= 35
    for c in neg:
        assert not c.mask.any() and not c.valid.any() and not c.xyz.any()
        assert c.rgb.std() > 0                             # a real crop of something
    none = _renderer(models, wrong_class_share=0.0, distractor_share=0.0).crops(np.random.default_rng(5), 12)
    assert all(c.T_cam_obj is not None for c in none)


def test_crops_are_reproducible(renderer, models):
    a = renderer.crops(np.random.default_rng(8), 6)
    b = _renderer(models, keep_render_depth=True).crops(np.random.default_rng(8), 6)
    for x, y in zip(a, b):
        assert np.array_equal(x.rgb, y.rgb) and np.array_equal(x.xyz, y.xyz) and x.cls == y.cls
    c = renderer.crops(np.random.default_rng(9), 6)
    assert not np.array_equal(a[0].rgb, c[0].rgb)


def test_user_camera_with_photos(models):
    """A model trained for a camera and photos renders its crops through that camera at its resolution."""
    from pose_ros.synth.photo_bank import default_photo_dirs

    dirs = [d for d in default_photo_dirs() if d.is_dir()]
    if not dirs:
        pytest.skip("no photos in ../shared/data/photos")
    K = (1066.778, 0.0, 312.9869, 0.0, 1067.487, 241.3109, 0.0, 0.0, 1.0)
    cfg = full_resolution_scene_config(SceneConfig(camera_K=K, camera_size=(640, 480), photo_dirs=tuple(map(str, dirs)),
                                                   depth_noise=True))
    ren = CropRenderer(models, cfg, [m.keypoints_m[-1] for m in models], [m.diameter_m for m in models])
    assert all(c.width == 640 and abs(c.K[0, 0] / 1066.778 - 1) <= 0.081 for c in ren.scenes.cameras)
    got = ren.crops(np.random.default_rng(0), 8)
    assert len(got) == 8 and all(np.isfinite(c.depth_m).all() for c in got)
