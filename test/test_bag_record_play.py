"""Record the camera trio from a live RealSense node into a bag, read it back, replay it to a subscriber."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

# rclpy before pyrealsense2: the pyrealsense2 2.59 wheel exports its own Fast DDS symbols, and
# loaded first it captures rclpy's (segfault at interpreter exit).
rclpy = pytest.importorskip("rclpy")
pytest.importorskip("pyrealsense2")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from pose_ros.core.camera import PinholeCamera  # noqa: E402
from pose_ros.nodes.bag_tools import BagPlayer, BagRecorder  # noqa: E402
from pose_ros.nodes.qos import sensor_qos  # noqa: E402
from pose_ros.nodes.realsense_camera_node import RealSenseCameraNode  # noqa: E402
from pose_ros.nodes.topics import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC  # noqa: E402
from pose_ros.sensors.bag import BagReader, BagWriter  # noqa: E402
from pose_ros.sensors.software_device import SoftwareRealSense  # noqa: E402
from ros_helpers import wait_for  # noqa: E402

pytestmark = pytest.mark.ros

CAM = PinholeCamera(np.array([[80.0, 0, 39.5], [0, 80.0, 29.5], [0, 0, 1]]), 80, 60)
CLI = [sys.executable, "-c", "import sys; from pose_ros.cli import main; sys.exit(main())"]
TRIO = {COLOR_TOPIC: Image, DEPTH_TOPIC: Image, INFO_TOPIC: CameraInfo}


def _content(n: int):
    rng = np.random.default_rng(n)
    return (rng.integers(0, 256, (60, 80, 3), dtype=np.uint8),
            rng.integers(300, 3000, (60, 80), dtype=np.uint16))


class Capture:
    """Live subscriber keeping the raw CDR bytes of every message (best-effort sensor QoS).

    Raw, because CDR alignment padding is not defined by the message: only bytes taken off the
    wire can be compared byte for byte with what the recorder stored.
    """

    def __init__(self, name: str, topics: dict[str, type]) -> None:
        self.node = rclpy.create_node(name)
        self.msgs: dict[str, list[bytes]] = {t: [] for t in topics}
        self.types = dict(topics)
        self.lock = threading.Lock()
        for t, cls in topics.items():
            self.node.create_subscription(cls, t, lambda m, t=t: self._add(t, m), sensor_qos(depth=100), raw=True)

    def _add(self, topic, msg):
        with self.lock:
            self.msgs[topic].append(msg)

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.msgs[topic])





@pytest.fixture
def camera(ros):
    """A RealSense node streaming a software device at 30 Hz."""
    sw = SoftwareRealSense(CAM, CAM)
    params = [Parameter(k, value=v) for k, v in dict(color_width=80, color_height=60, depth_width=80,
                                                     depth_height=60).items()]
    node = ros(RealSenseCameraNode(device=sw.device, parameter_overrides=params))
    sw.start_stream(_content, rate_hz=30)
    yield node
    sw.stop_stream()


def _key(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def test_record_read_back_and_replay(ros, camera, tmp_path):
    live = Capture("live_listener", TRIO)
    ros(live.node)
    rec_node = ros(rclpy.create_node("test_recorder"))
    recorder = BagRecorder(rec_node, BagWriter(tmp_path / "trio"), list(TRIO))
    assert wait_for(lambda: all(recorder.counts[t] >= 15 for t in TRIO), 15.0), recorder.counts
    recorder.close()
    assert recorder.missing == [] and recorder.errors == 0

    reader = BagReader(tmp_path / "trio")
    assert {t: reader.topics[t].type for t in TRIO} == {
        COLOR_TOPIC: "sensor_msgs/msg/Image", DEPTH_TOPIC: "sensor_msgs/msg/Image",
        INFO_TOPIC: "sensor_msgs/msg/CameraInfo"}
    assert "reliability: reliable" in reader.topics[COLOR_TOPIC].offered_qos_profiles
    recorded = list(reader.messages())
    assert len(recorded) == recorder.message_count >= 45
    log_times = [m.log_time_ns for m in recorded]
    assert log_times == sorted(log_times)
    # Every recorded message is byte-identical to what the live subscriber received with that stamp.
    with live.lock:
        live_bytes = {(t, _key(deserialize_message(b, TRIO[t]))): b for t, bs in live.msgs.items() for b in bs}
    compared = 0
    for m in recorded:
        key = (m.topic, _key(m.deserialize()))
        if key in live_bytes:
            assert live_bytes[key] == m.data
            compared += 1
    assert compared >= 30
    # Colour, depth and info recorded with one stamp per frameset.
    stamps = {t: {_key(m.deserialize()) for m in recorded if m.topic == t} for t in TRIO}
    assert len(stamps[COLOR_TOPIC] & stamps[DEPTH_TOPIC] & stamps[INFO_TOPIC]) >= 10

    # Replay on the original topic names, with the camera stopped.
    camera.supervisor.stop()
    replay = Capture("replay_listener", TRIO)
    ros(replay.node)
    play_node = ros(rclpy.create_node("test_player"))
    player = BagPlayer(play_node, reader, rate=2.0, start_delay_s=0.5).start()
    assert player.done.wait(30)
    assert player.published == len(recorded)
    assert wait_for(lambda: replay.count(COLOR_TOPIC) >= len(stamps[COLOR_TOPIC]) - 1, 5)
    with replay.lock:
        got = list(replay.msgs[COLOR_TOPIC])
    want = [m.data for m in recorded if m.topic == COLOR_TOPIC]
    # Best-effort delivery on one host: allow one lost frame, but order and bytes must hold.
    assert len(got) >= len(want) - 1
    it = iter(want)
    assert all(any(g == w for w in it) for g in got), "replayed messages must be recorded bytes, in order"


def test_cli_record_and_play_between_processes(ros, camera, tmp_path):
    env = dict(os.environ)
    out = tmp_path / "cli_bag"
    res = subprocess.run([*CLI, "record", str(out), "--duration", "4"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    reader = BagReader(out)
    assert set(reader.topics) == set(TRIO)
    # The machine may be heavily loaded: any few messages per topic prove the cross-process path.
    assert all(reader.topics[t].message_count >= 3 for t in TRIO), {t: i.message_count for t, i in reader.topics.items()}
    camera.supervisor.stop()

    replay = Capture("cli_replay_listener", {COLOR_TOPIC: Image})
    ros(replay.node)
    res = subprocess.run([*CLI, "play", str(out), "--rate", "1",
                          "--start-delay", "1.5"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    n_rec = reader.topics[COLOR_TOPIC].message_count
    # Real-time replay of large frames to a subscriber in a loaded CI process may lose a few (the
    # exact, in-order comparison is test_record_read_back_and_replay); most must arrive, all must match.
    assert wait_for(lambda: replay.count(COLOR_TOPIC) >= 0.8 * n_rec, 10), (replay.count(COLOR_TOPIC), n_rec)
    recorded = {m.data for m in reader.messages([COLOR_TOPIC])}
    with replay.lock:
        assert all(b in recorded for b in replay.msgs[COLOR_TOPIC])

    bad = subprocess.run([*CLI, "play", str(tmp_path / "nope")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "does not exist" in bad.stdout
