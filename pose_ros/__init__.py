"""pose_ros: 6DoF object pose and humanoid teleoperation from one RGB-D camera."""
from pkgutil import extend_path

# The generated ROS interfaces (pose_ros.msg, pose_ros.srv) may live in another directory
# than this source package (a venv build, or a colcon install space): merge them in.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
