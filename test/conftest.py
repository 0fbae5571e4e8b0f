"""Shared fixtures: where the real data lives, and an isolated DDS domain per test run."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# rclpy before anything can import pyrealsense2: the pyrealsense2 2.59 wheel exports its own
# Fast DDS symbols, and a process that loads it first segfaults at exit once rclpy is loaded.
import rclpy  # noqa: F401,E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("POSE_ROS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Each pytest run gets its own DDS domain so parallel runs (CI, a developer) never cross-talk.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="module")
def demo_estimator():
    """A PoseEstimator of the shipped demo model and meshes (one torch thread), or skip when absent."""
    model = REPO_ROOT / "models" / "demo_objects.pt"
    if not model.is_file():
        pytest.skip(f"shipped model missing: {model} (train it with `pose-ros train --meshes meshes --out {model}`)")
    import torch

    from pose_ros.objects.estimator import PoseEstimator

    torch.set_num_threads(1)
    return PoseEstimator(model, meshes=REPO_ROOT / "meshes")


def shared_data_path(*parts: str) -> Path:
    """Path into ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set POSE_ROS_SHARED_DATA or provide ../shared/data)")
    return path


def load_ycbv(keep=None):
    """(frames, {obj_id: model}) of the real YCB-Video frames, ``keep(frame)`` filtering them;
    models with 1500 surface points, only the objects the kept frames show."""
    from pose_ros.core.object_model import load_bop_models
    from pose_ros.eval.ycbv_refine_bench import iter_ycbv_frames

    root = shared_data_path("ycbv_real")
    frames = [f for f in iter_ycbv_frames(root) if keep is None or keep(f)]
    ids = sorted({g.obj_id for f in frames for g in f.gt})
    models = {m.obj_id: m for m in load_bop_models(root / "models_bop_ycbv", obj_ids=ids, num_points=1500)}
    return frames, models


def demo_table_frame(models, camera, seed: int):
    """(models, scene, render, noisy depth_m) of a table scene with the three demo objects (``models``:
    name -> ObjectModel) through ``camera`` at 0.5-0.8 m: a real render with sensor-noise depth."""
    import numpy as np

    from pose_ros.synth.noise import DepthNoiseModel
    from pose_ros.synth.renderer import RgbdRenderer
    from pose_ros.synth.scene_sampler import TabletopSceneSampler

    ms = [models[n] for n in ("mug", "box", "bottle")]
    rng = np.random.default_rng(seed)
    sc = TabletopSceneSampler(ms, camera, rng=rng, distance_m=(0.5, 0.8), n_distractors=(0, 0)).sample(
        3, model_indices=[0, 1, 2])
    r = RgbdRenderer(camera).render(sc.render_list(ms), rng=rng, table=sc.table)
    depth = DepthNoiseModel().apply(r.depth_m, r.normals_cam, rng=rng, K=camera.K)
    return ms, sc, r, depth


def bad_icp_input(case: str, frame, gt, mask):
    """(depth_m, mask, T_init) of a real frame spoilt one way (``case``), for the ICP's soft-failure tests."""
    import numpy as np

    depth, T0 = frame.depth_m, gt.T_cam_obj.copy()
    if case == "zeros":
        depth = np.zeros_like(frame.depth_m)
    elif case == "nan":
        depth = np.full_like(frame.depth_m, np.nan)
    elif case == "wrong_shape":
        depth = frame.depth_m[::2, ::2]
    elif case == "empty_mask":
        mask = np.zeros(frame.depth_m.shape, bool)
    elif case == "int_depth":
        depth = (frame.depth_m * 1000).astype(np.uint16)
    elif case == "instance_mask":
        mask = np.where(gt.mask_visib, 0, -1).astype(np.int32)   # forgot "== k"
    elif case == "mask_shape":
        mask = gt.mask_visib[::2]
    elif case == "no_depth":
        depth = None
    elif case == "far_away":
        T0[:3, 3] += [0.0, 0.0, 3.0]  # no depth anywhere near 3.6 m
    else:
        raise ValueError(f"unknown bad-input case {case!r}")
    return depth, mask, T0


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def ros():
    """Global rclpy context + a spinning executor; yields `add(node)` which spins a node until teardown."""
    import threading

    from rclpy.executors import MultiThreadedExecutor

    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=3)
    thread = threading.Thread(target=executor.spin, daemon=True)
    nodes = []

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    thread.start()
    yield add
    executor.shutdown()  # stop spinning before destroying nodes the executor still holds
    thread.join(5)
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown()


def pytest_runtest_logreport(report) -> None:
    """A failed attempt that pytest-rerunfailures retries is reported only by name; print its traceback
    so the CI log says what to fix (a flaky test is fixed at the cause, not rerun)."""
    if report.outcome != "rerun":
        return
    import sys

    text = report.longreprtext or ""
    sys.__stderr__.write(f"\n--- failed attempt of {report.nodeid} ({report.when}), rerun; why:\n"
                         f"{text[-6000:]}\n--- end of failed attempt\n")
    sys.__stderr__.flush()
