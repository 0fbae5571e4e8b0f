"""The launches' Fast DDS profile (config/fastdds_images.xml) and BLAS thread setting: applied unless
the user names their own, the profile accepted by Fast DDS, and whole 640x480 frames cross processes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# Publishes N colour frames from one process to a subscriber in another (this file, run twice).
_PEER = r"""
import sys, time
import rclpy
from sensor_msgs.msg import Image
from rclpy.qos import QoSProfile, ReliabilityPolicy
role, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rclpy.init()
node = rclpy.create_node(f"profile_{role}")
qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
got = []
if role == "sub":
    node.create_subscription(Image, topic, lambda m: got.append(len(m.data)), qos)
    deadline = time.monotonic() + 40.0
    while len(got) < n and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(f"received {len(got)} sizes {sorted(set(got))}")
    sys.exit(0 if len(got) >= n else 1)
pub = node.create_publisher(Image, topic, qos)
msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=bytes(640 * 480 * 3))
deadline = time.monotonic() + 40.0
while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
end = time.monotonic() + 6.0
while time.monotonic() < end:
    pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.03)
"""


def test_profile_applied_unless_the_user_names_one(tmp_path):
    from pose_ros.launch_specs import DDS_PROFILE_ENV, SYSTEMS, dds_environment
    from pose_ros.resources import config_dir

    env = dds_environment(SYSTEMS["teleop"], {}, str(config_dir()))
    assert env == {DDS_PROFILE_ENV: str(config_dir() / "fastdds_images.xml")}
    assert dds_environment(SYSTEMS["teleop"], {DDS_PROFILE_ENV: "/mine.xml"}, str(config_dir())) == {}
    assert dds_environment(SYSTEMS["teleop"], {}, str(tmp_path)) == {}     # no such file there: defaults
    for name in ("object_pose", "demo", "camera"):       # every system moving camera images uses it
        assert dds_environment(SYSTEMS[name], {}, str(config_dir())) == env


@pytest.mark.ros
def test_fast_dds_accepts_the_profile_and_frames_cross_processes(tmp_path):
    from pose_ros.launch_specs import DDS_PROFILE_ENV
    from pose_ros.resources import config_dir

    script = tmp_path / "peer.py"
    script.write_text(_PEER)
    topic = f"/dds_profile_{os.getpid()}"
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env[DDS_PROFILE_ENV] = str(config_dir() / "fastdds_images.xml")
    sub = subprocess.Popen([sys.executable, str(script), "sub", topic, "20"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env, text=True)
    pub = subprocess.Popen([sys.executable, str(script), "pub", topic, "0"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env, text=True)
    sub_out, _ = sub.communicate(timeout=90)
    pub_out, _ = pub.communicate(timeout=90)
    assert sub.returncode == 0, sub_out + pub_out
    assert "sizes [921600]" in sub_out, sub_out
    # Fast DDS reports a profile it cannot parse (or a transport it cannot build) as an Error line
    for out in (sub_out, pub_out):
        assert "Error" not in out and "XMLPARSER" not in out, out
