"""QoS profiles for camera streams.

Subscribers use best-effort, keep-last: it matches both best-effort publishers and
realsense-ros's default (reliable) ones, and never queues stale frames. Our camera publishers
default to reliable so RViz and tools with default (reliable) subscriptions also connect.
"""
from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)


def sensor_qos(depth: int = 5) -> QoSProfile:
    """Best-effort keep-last: for subscribing to camera streams."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def camera_publisher_qos(depth: int = 2, reliable: bool = True) -> QoSProfile:
    """For publishing camera streams; reliable by default like realsense-ros."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def result_qos(depth: int = 10) -> QoSProfile:
    """Reliable keep-last: for poses, skeletons, commands and status."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Transient-local depth 1: for slowly changing data late joiners need (e.g. robot model)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
