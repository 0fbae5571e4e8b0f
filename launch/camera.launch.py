"""ros2 launch pose_ros camera.launch.py  (see pose_ros/launch_specs.py, or: pose-ros launch camera --show)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pose_ros_launch import generate  # noqa: E402


def generate_launch_description():
    return generate("camera")
