"""The render-and-compare check's lean box render agrees with a full RgbdRenderer render."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pose_ros.core.camera import PinholeCamera

REPO = Path(__file__).resolve().parents[1]
CAM = PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)


def _reference(model, T, rgb, depth, mask, camera, scale=0.5, min_pixels=30, min_std=0.03, tol=0.01):
    """The check computed from a full-frame render (what ``verify`` did before its lean render)."""
    import cv2

    from pose_ros.synth.renderer import RgbdRenderer

    cs = camera.scaled(scale)
    size = (cs.width, cs.height)
    obs = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    m = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    d = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
    ren = RgbdRenderer(cs).render([(model, T)], background=np.zeros((cs.height, cs.width, 3), np.uint8), ambient=1.0)
    drawn = ren.instance_mask == 0
    union = int((drawn | m).sum())
    iou = float((drawn & m).sum()) / union if union else 0.0
    valid = drawn & (d > 0)
    depth_term = float("nan")
    if valid.sum() >= min_pixels:
        r = d[valid] - ren.depth_m[valid]
        depth_term = float(np.mean(np.abs(r) <= tol) - np.mean(r > tol))
    colour = float("nan")
    sel = drawn & m
    if sel.sum() >= min_pixels:
        a = ren.rgb[sel].astype(np.float32) / 255.0
        b = obs[sel]
        a, b = a - a.mean(0), b - b.mean(0)
        sa, sb = np.sqrt((a * a).mean(0)), np.sqrt((b * b).mean(0))
        w = np.where(sa >= min_std, sa, 0.0)
        if w.sum() > 0:
            colour = float((w * ((a * b).mean(0) / np.maximum(sa * sb, 1e-6))).sum() / w.sum())
    return colour, depth_term, iou


@pytest.fixture(scope="module")
def scene():
    from pose_ros.core.object_model import load_object_dir
    from pose_ros.synth.noise import DepthNoiseModel
    from pose_ros.synth.renderer import RgbdRenderer
    from pose_ros.synth.scene_sampler import TabletopSceneSampler

    models = {m.name: m for m in load_object_dir(REPO / "meshes")}
    ms = [models["mug"], models["box"], models["bottle"]]
    rng = np.random.default_rng(11)
    sc = TabletopSceneSampler(ms, CAM, rng=rng, distance_m=(0.5, 0.8)).sample(3, model_indices=[0, 1, 2])
    r = RgbdRenderer(CAM).render(sc.render_list(ms), rng=rng, table=sc.table)
    return ms, sc, r, DepthNoiseModel().apply(r.depth_m, r.normals_cam, rng=rng, K=CAM.K)


def test_lean_render_matches_a_full_render(scene):
    """True poses, perturbed poses, twins turned half about an axis and a pose partly out of view:
    the same three numbers as the full-frame render."""
    from scipy.spatial.transform import Rotation

    from pose_ros.objects.appearance import AppearanceScorer

    ms, sc, r, depth = scene
    scorer = AppearanceScorer()
    rng = np.random.default_rng(2)
    checked = 0
    for k, (mi, T_gt) in enumerate(zip(sc.model_indices, sc.T_cam_obj)):
        mask = r.instance_mask == k
        poses = [T_gt]
        for _ in range(3):
            T = T_gt.copy()
            T[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix() @ T[:3, :3]
            T[:3, 3] += rng.normal(0, 0.01, 3)
            poses.append(T)
        T_edge = T_gt.copy()
        T_edge[0, 3] = T_edge[2, 3] * 0.55             # straddles the right image border
        poses.append(T_edge)
        for T in poses:
            v = scorer.verify(ms[mi], T, r.rgb, depth, mask, CAM)
            ref = _reference(ms[mi], T, r.rgb, depth, mask, CAM)
            got = (v.colour if scorer.is_textured(ms[mi]) else ref[0], v.depth, v.silhouette_iou)
            np.testing.assert_allclose(got, ref, atol=1e-6, equal_nan=True)
            checked += 1
    assert checked == 15


def test_verify_rejects_a_malformed_pose(scene):
    from pose_ros.objects.appearance import AppearanceScorer

    ms, sc, r, depth = scene
    with pytest.raises(ValueError, match="4x4"):
        AppearanceScorer().verify(ms[0], np.eye(3), r.rgb, depth, r.instance_mask == 0, CAM)
    with pytest.raises(ValueError, match="orthonormal"):
        AppearanceScorer().verify(ms[0], np.diag([2.0, 1, 1, 1]), r.rgb, depth, r.instance_mask == 0, CAM)
