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


def shared_data_path(*parts: str) -> Path:
    """Path into ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set POSE_ROS_SHARED_DATA or provide ../shared/data)")
    return path


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
