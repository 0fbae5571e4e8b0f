"""MCAP bag files in the rosbag2 layout: round trip, independent decoding, metadata, errors."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

pytest.importorskip("mcap")
pytest.importorskip("rclpy")

from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from pose_ros.sensors.bag import (BagError, BagReader, BagWriter, message_definition,  # noqa: E402
                                  type_hash, type_name_of)


def _image(n: int) -> Image:
    rng = np.random.default_rng(n)
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000 + n, 123456789
    msg.header.frame_id = "camera_color_optical_frame"
    msg.height, msg.width, msg.encoding, msg.step = 4, 5, "rgb8", 15
    msg.data = rng.integers(0, 256, 60, dtype=np.uint8).tobytes()
    return msg


def _info(n: int) -> CameraInfo:
    msg = CameraInfo()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000 + n, 123456789
    msg.header.frame_id = "camera_color_optical_frame"
    msg.width, msg.height, msg.distortion_model = 640, 480, "plumb_bob"
    msg.k = [600.0 + n, 0.0, 320.0, 0.0, 601.0, 240.0, 0.0, 0.0, 1.0]
    msg.d = [0.1, -0.2, 0.001, 0.0, 0.05]
    msg.roi.width, msg.roi.do_rectify = 7, True
    return msg


def _write_sample(folder):
    sent = []
    with BagWriter(folder) as bag:
        for n in range(5):
            t = 1_700_000_000_000_000_000 + n * 33_000_000
            for topic, msg in (("/camera/camera/color/image_raw", _image(n)),
                               ("/camera/camera/color/camera_info", _info(n))):
                bag.write(topic, msg, t, publish_time_ns=t - 1000)
                sent.append((topic, serialize_message(msg), t, t - 1000, msg))
    return sent


def test_round_trip_bytes_times_and_messages(tmp_path):
    folder = tmp_path / "rgbd"
    sent = _write_sample(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.yaml", "rgbd_0.mcap"]
    reader = BagReader(folder)
    assert set(reader.topics) == {"/camera/camera/color/image_raw", "/camera/camera/color/camera_info"}
    assert reader.topics["/camera/camera/color/image_raw"].type == "sensor_msgs/msg/Image"
    assert reader.message_count == 10
    got = list(reader.messages())
    assert len(got) == len(sent)
    for m, (topic, data, t, pt, msg) in zip(got, sent):
        assert (m.topic, m.data, m.log_time_ns, m.publish_time_ns) == (topic, data, t, pt)
        assert m.deserialize() == msg
    only = list(reader.messages(["/camera/camera/color/camera_info"]))
    assert len(only) == 5 and all(m.type == "sensor_msgs/msg/CameraInfo" for m in only)
    # A single .mcap file opens too (e.g. copied out of the folder).
    assert BagReader(folder / "rgbd_0.mcap").message_count == 10


def test_independent_decoder_reads_our_schema_and_cdr(tmp_path):
    """mcap_ros2 parses our ros2msg schema text itself and decodes the CDR with it."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    sent = _write_sample(tmp_path / "b")
    with open(tmp_path / "b" / "b_0.mcap", "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        assert header.profile == "ros2"
        decoded = list(reader.iter_decoded_messages())
    assert len(decoded) == len(sent)
    for (schema, channel, message, obj), (_, _, _, _, msg) in zip(decoded, sent):
        assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
        assert channel.metadata["topic_type_hash"].startswith("RIHS01_")
        assert obj.header.stamp.sec == msg.header.stamp.sec and obj.header.frame_id == msg.header.frame_id
        if schema.name == "sensor_msgs/msg/Image":
            assert bytes(obj.data) == bytes(msg.data) and obj.encoding == "rgb8"
        else:
            assert list(obj.k) == list(msg.k) and list(obj.d) == list(msg.d)
            assert obj.roi.width == 7 and obj.roi.do_rectify is True


def test_metadata_yaml_has_the_rosbag2_fields(tmp_path):
    _write_sample(tmp_path / "m")
    meta = yaml.safe_load((tmp_path / "m" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and meta["version"] >= 5
    assert meta["message_count"] == 10
    assert meta["relative_file_paths"] == ["m_0.mcap"]
    assert meta["starting_time"]["nanoseconds_since_epoch"] == 1_700_000_000_000_000_000
    assert meta["duration"]["nanoseconds"] == 4 * 33_000_000
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    image = topics["/camera/camera/color/image_raw"]
    assert image["message_count"] == 5
    assert image["topic_metadata"]["type"] == "sensor_msgs/msg/Image"
    assert image["topic_metadata"]["serialization_format"] == "cdr"
    assert image["topic_metadata"]["type_description_hash"] == type_hash("sensor_msgs/msg/Image")
    assert meta["files"][0]["message_count"] == 10


def test_message_definition_includes_every_nested_type():
    text = message_definition("sensor_msgs/msg/CameraInfo")
    assert text.startswith("# This message defines meta information for a camera")
    for dep in ("MSG: std_msgs/Header", "MSG: builtin_interfaces/Time", "MSG: sensor_msgs/RegionOfInterest"):
        assert dep in text
    assert text.count("MSG: ") == 3
    own = message_definition("pose_ros/msg/ObjectPoseArray")
    assert "MSG: pose_ros/ObjectPose" in own and "MSG: geometry_msgs/PoseWithCovariance" in own
    assert type_name_of(Image) == "sensor_msgs/msg/Image" and type_name_of(_info(0)) == "sensor_msgs/msg/CameraInfo"


def test_custom_message_round_trip(tmp_path):
    from pose_ros.msg import ObjectPose, ObjectPoseArray

    arr = ObjectPoseArray()
    arr.header.frame_id = "cam"
    arr.objects.append(ObjectPose(class_name="ape", class_id=1, instance_id=0, score=0.9))
    with BagWriter(tmp_path / "c") as bag:
        bag.write("/poses", arr, 5)
    (m,) = list(BagReader(tmp_path / "c").messages())
    assert m.type == "pose_ros/msg/ObjectPoseArray" and m.data == serialize_message(arr)
    back = m.deserialize()  # float32 fields come back rounded, so compare field by field
    assert back.header.frame_id == "cam" and back.objects[0].class_name == "ape"
    assert back.objects[0].score == pytest.approx(0.9, abs=1e-6)


def test_errors_name_the_problem(tmp_path):
    _write_sample(tmp_path / "x")
    with pytest.raises(BagError, match="already exists"):
        BagWriter(tmp_path / "x")
    with BagWriter(tmp_path / "x", overwrite=True) as bag:
        with pytest.raises(BagError, match="must be absolute"):
            bag.add_topic("relative", "std_msgs/msg/String")
        with pytest.raises(BagError, match="add_topic"):
            bag.write("/raw", b"\x00\x01\x00\x00", 1)
        with pytest.raises(BagError, match="cannot find the definition of no_such_pkg"):
            bag.add_topic("/nope", "no_such_pkg/msg/Thing")
        bag.write("/img", _image(0), 1)
        with pytest.raises(BagError, match="already recorded as sensor_msgs/msg/Image"):
            bag.add_topic("/img", "sensor_msgs/msg/CameraInfo")
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "missing")
    with pytest.raises(BagError, match="not in bag"):
        list(BagReader(tmp_path / "x").messages(["/other"]))
    meta = tmp_path / "x" / "metadata.yaml"
    meta.write_text(meta.read_text().replace("storage_identifier: mcap", "storage_identifier: sqlite3"))
    with pytest.raises(BagError, match="only mcap"):
        BagReader(tmp_path / "x")


def test_bag_layout_is_rosbag2s(tmp_path):
    """What rosbag2 (Jazzy/Kilted: metadata version 9, rosbag2_storage_mcap) writes and reads: every
    metadata.yaml field in its order, QoS policies by name, both channel metadata keys, and the `rosbag2`
    MCAP metadata record (serialized_metadata) from which rosbag2 takes the version when it opens the file."""
    from mcap.reader import make_reader
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from pose_ros.sensors.bag import qos_to_yaml

    with BagWriter(tmp_path / "l") as bag:
        qos = QoSProfile(depth=7, reliability=ReliabilityPolicy.BEST_EFFORT)
        bag.add_topic("/camera/camera/color/image_raw", "sensor_msgs/msg/Image", qos_to_yaml([qos]))
        for n in range(3):
            bag.write("/camera/camera/color/image_raw", _image(n), 1_700_000_000_000_000_000 + n * 10)
    meta = yaml.safe_load((tmp_path / "l" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert list(meta) == ["version", "storage_identifier", "duration", "starting_time", "message_count",
                          "topics_with_message_count", "compression_format", "compression_mode",
                          "relative_file_paths", "files", "custom_data", "ros_distro"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap" and meta["ros_distro"]
    assert meta["files"] == [{"path": "l_0.mcap", "starting_time": {"nanoseconds_since_epoch": 1_700_000_000_000_000_000},
                              "duration": {"nanoseconds": 20}, "message_count": 3}]
    topic = meta["topics_with_message_count"][0]
    assert list(topic) == ["topic_metadata", "message_count"]
    assert list(topic["topic_metadata"]) == ["name", "type", "serialization_format", "offered_qos_profiles",
                                             "type_description_hash"]
    offered = yaml.safe_load(topic["topic_metadata"]["offered_qos_profiles"])
    assert offered[0]["history"] == "keep_last" and offered[0]["depth"] == 7
    assert offered[0]["reliability"] == "best_effort" and offered[0]["durability"] == "volatile"
    assert offered[0]["liveliness"] in ("automatic", "system_default")
    assert set(offered[0]["deadline"]) == {"sec", "nsec"}
    with open(tmp_path / "l" / "l_0.mcap", "rb") as fh:
        reader = make_reader(fh)
        records = list(reader.iter_metadata())
        channels = reader.get_summary().channels
    assert [r.name for r in records] == ["rosbag2"]
    inner = yaml.safe_load(records[0].metadata["serialized_metadata"])
    assert inner == meta
    assert all(set(c.metadata) == {"offered_qos_profiles", "topic_type_hash"} for c in channels.values())


def test_play_publishes_the_bag_time_on_clock(ros, tmp_path):
    """`pose-ros play --clock`: /clock carries the recorded times while the bag plays, and a node with
    use_sim_time follows it."""
    import threading

    import rclpy
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock

    from pose_ros.cli.commands import play as play_cmd
    from pose_ros.nodes.bag_tools import BagPlayer, clock_qos
    from ros_helpers import wait_for

    start = 1_700_000_000_000_000_000
    with BagWriter(tmp_path / "c") as bag:
        for n in range(16):   # 1.5 s of bag time
            bag.write("/clock_test/info", _info(n), start + n * 100_000_000)
    end = start + 15 * 100_000_000
    lock = threading.Lock()
    clocks: list[int] = []
    listener = ros(rclpy.create_node(f"clock_listener_{id(clocks)}"))

    def on_clock(msg):
        with lock:
            clocks.append(msg.clock.sec * 1_000_000_000 + msg.clock.nanosec)
    listener.create_subscription(Clock, "/clock", on_clock, clock_qos())
    sim = ros(rclpy.create_node(f"sim_time_node_{id(clocks)}",
                                parameter_overrides=[Parameter("use_sim_time", value=True)]))
    player_node = ros(rclpy.create_node(f"clock_player_{id(clocks)}"))
    player = BagPlayer(player_node, BagReader(tmp_path / "c"), rate=1.0, start_delay_s=0.5, clock_hz=50.0)
    # discovery before the bag starts, so the clock's first ticks (held at the first message time) arrive
    assert wait_for(lambda: player_node.count_subscribers("/clock") >= 2, 20.0)
    player.start()
    sim_times: list[int] = []
    try:
        assert wait_for(lambda: (sim_times.append(sim.get_clock().now().nanoseconds) or player.done.is_set()), 30.0,
                        period_s=0.05)
    finally:
        player.stop()
    assert player.published == 16 and player.clock_published >= 10
    with lock:
        got = list(clocks)
    assert len(got) >= 10, got
    # a tick after the last message may run past it by a scheduling delay on a loaded machine
    assert all(start <= t <= end + 1_000_000_000 for t in got), (got[0], got[-1])
    assert got == sorted(got), "one pass: the bag time never goes back"
    assert got[-1] - got[0] >= 500_000_000, "the clock advanced with the bag (>= 0.5 of its 1.5 s)"
    followed = [t for t in sim_times if t >= start]
    assert followed and all(start <= t <= end + 1_000_000_000 for t in followed), "use_sim_time node follows /clock"
    # the CLI option: `--clock` alone is 40 Hz, as ros2 bag play; a value sets the rate; off by default
    import argparse
    parser = argparse.ArgumentParser()
    play_cmd.register(parser.add_subparsers())
    assert parser.parse_args(["play", "b", "--clock"]).clock == 40.0
    assert parser.parse_args(["play", "b", "--clock", "100"]).clock == 100.0
    assert parser.parse_args(["play", "b"]).clock == 0.0
