"""draw_poses: what the node's debug image and `pose-ros eval --overlays` show."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.object_model import load_object_dir
from pose_ros.objects.pose_overlay import draw_poses
from pose_ros.resources import meshes_dir


def test_draws_outline_axes_and_ground_truth_where_the_pose_projects():
    box = {m.name: m for m in load_object_dir(meshes_dir())}["box"]
    cam = PinholeCamera(np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)
    T = np.eye(4)
    T[:3, 3] = [0.1, 0.0, 0.6]                                   # right of the image centre
    rgb = np.full((480, 640, 3), 40, np.uint8)
    result = SimpleNamespace(class_name="box", score=0.9, T_cam_obj=T)
    out = draw_poses(rgb, cam, [result], {"box": box}, {"box": (1.0, 1.0, 0.0)})
    assert (rgb == 40).all()                                     # the input is not drawn on
    changed = np.any(out != rgb, axis=2)
    u0, v0 = cam.project(T[:3, 3][None])[0]
    vs, us = np.nonzero(changed)
    assert abs(us.mean() - u0) < 80 and abs(vs.mean() - v0) < 80  # drawn around where the box is
    assert changed[:, : int(u0) - 150].sum() == 0                # and nowhere near the left edge
    assert (out[changed] == [255, 255, 0]).all(axis=1).any()     # the class colour (outline, label)
    assert (out[changed] == [255, 0, 0]).all(axis=1).any()       # the x axis
    gt = draw_poses(rgb, cam, [], {"box": box}, ground_truth=[(box, T)])
    drawn = gt[np.any(gt != rgb, axis=2)]                        # ground truth: a white (anti-aliased) outline
    assert len(drawn) and (drawn == drawn[:, :1]).all() and drawn.max() > 150
