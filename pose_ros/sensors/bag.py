"""ROS 2 bags in MCAP, in the layout ``ros2 bag`` writes and reads, without rosbag2.

Why our own: the PyPI ROS 2 wheels carry no rosbag2, yet users must be able to record camera
streams here and replay them on a robot (and vice versa). A bag is a folder holding
``metadata.yaml`` and ``<name>_0.mcap``; each topic is an MCAP channel whose schema is the full
``ros2msg`` definition text (top-level .msg followed by every dependency after a ``MSG:`` line,
the format rosbag2's MCAP plugin writes) and whose messages are CDR bytes from rclpy's own
serialiser, so ``ros2 bag info/play`` and Foxglove open them too.

Layout checked against rosbag2 (rosbag2_storage yaml.hpp / qos.cpp and rosbag2_storage_mcap
mcap_storage.cpp; metadata version 9 as in Jazzy's rosbag2_storage BagMetadata):
- metadata.yaml: ``rosbag2_bagfile_information`` with version, storage_identifier ``mcap``, duration,
  starting_time, message_count, topics_with_message_count (topic_metadata: name, type,
  serialization_format ``cdr``, offered_qos_profiles as a YAML string with policy names
  (``keep_last``, ``reliable``...; version >= 9) and {sec, nsec} durations, type_description_hash),
  compression_format/mode, relative_file_paths, files, custom_data, ros_distro: rosbag2's key order.
- each channel's metadata: ``offered_qos_profiles`` and ``topic_type_hash`` (empty when unknown, as
  rosbag2 writes it);
- an MCAP metadata record ``rosbag2`` holding ``serialized_metadata`` (the same BagMetadata YAML), as
  rosbag2's MCAP plugin writes it: rosbag2 reads the metadata version from that record and, without it,
  assumes version 8 and would parse the QoS policies as integers.

This module needs rclpy only for (de)serialisation; it creates no nodes.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

__all__ = ["BagError", "BagWriter", "BagReader", "BagMessage", "TopicInfo", "message_definition",
           "type_hash", "message_class", "type_name_of", "qos_to_yaml"]

_SEPARATOR = "=" * 80
_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64", "string", "wstring"}
METADATA_VERSION = 9


class BagError(ValueError):
    """A bag folder or message type problem; the message names the file/type and the fix."""


@dataclass
class TopicInfo:
    name: str
    type: str                      # "sensor_msgs/msg/Image"
    serialization_format: str = "cdr"
    offered_qos_profiles: str = ""  # rosbag2's YAML string of the publishers' QoS
    type_description_hash: str = ""
    message_count: int = 0


@dataclass
class BagMessage:
    topic: str
    type: str
    data: bytes                    # CDR bytes, exactly as received on the wire
    log_time_ns: int               # when the recorder received it (rosbag2 "recv" time)
    publish_time_ns: int           # when it was published (same as log time if unknown)

    def deserialize(self) -> Any:
        from rclpy.serialization import deserialize_message

        return deserialize_message(self.data, message_class(self.type))


# ----------------------------------------------------------------------------- message types
def _split_type(type_name: str) -> tuple[str, str, str]:
    parts = type_name.split("/")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return parts[0], "msg", parts[1]
    raise BagError(f"message type {type_name!r} must look like 'pkg/msg/Name'")


def message_class(type_name: str) -> type:
    """'sensor_msgs/msg/Image' -> the Python class (imports the interface package)."""
    pkg, kind, name = _split_type(type_name)
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {type_name!r} is not available in this environment: {exc}; "
                       "install/source the package that defines it") from exc


def type_name_of(msg_or_class: Any) -> str:
    """Message instance or class -> 'pkg/msg/Name'."""
    cls = msg_or_class if isinstance(msg_or_class, type) else type(msg_or_class)
    pkg, kind = cls.__module__.split(".")[:2]
    return f"{pkg}/{kind}/{cls.__name__}"


def _share_dirs(pkg: str) -> list[Path]:
    roots = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    roots += [sys.prefix]
    dirs = [Path(r) / "share" / pkg for r in roots]
    try:  # the package's own Python location: <prefix>/lib/pythonX/site-packages/<pkg> -> <prefix>/share/<pkg>
        mod = importlib.import_module(pkg)
        for loc in list(getattr(mod, "__path__", [])):
            p = Path(loc).resolve()
            dirs.append(p.parent / "share" / pkg)
            for anc in p.parents:
                dirs.append(anc / "share" / pkg)
                if anc.name == "lib":
                    dirs.append(anc.parent / "share" / pkg)
                    break
    except ImportError:
        pass
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _interface_file(pkg: str, kind: str, name: str, ext: str) -> Path:
    searched = []
    for d in _share_dirs(pkg):
        f = d / kind / f"{name}.{ext}"
        searched.append(str(f))
        if f.is_file():
            return f
    raise BagError(f"cannot find the definition of {pkg}/{kind}/{name} (.{ext}); searched: {searched[:6]}. "
                   "Set AMENT_PREFIX_PATH to the install prefix that holds share/" + pkg)


def _field_types(msg_text: str, pkg: str) -> list[str]:
    """Non-primitive field types of a .msg as 'pkg/Name' (order of first use)."""
    out: list[str] = []
    for line in msg_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 2 or "=" in tokens[1] or (len(tokens) > 2 and tokens[2].startswith("=")):
            continue  # constant definitions are primitive-only
        base = re.sub(r"\[.*\]$", "", tokens[0])
        base = re.sub(r"<=\d+$", "", base)
        if base in _PRIMITIVES:
            continue
        if base == "Header":
            base = "std_msgs/Header"
        if "/" not in base:
            base = f"{pkg}/{base}"
        base = base.replace("/msg/", "/")
        if base not in out:
            out.append(base)
    return out


def message_definition(type_name: str) -> str:
    """Full ``ros2msg`` schema text: the type's .msg, then each dependency after a ``MSG:`` header."""
    pkg, kind, name = _split_type(type_name)
    top = _interface_file(pkg, kind, name, "msg").read_text()
    parts = [top.rstrip("\n")]
    seen = {f"{pkg}/{name}"}
    queue = _field_types(top, pkg)
    while queue:
        dep = queue.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        dpkg, dname = dep.split("/")
        text = _interface_file(dpkg, "msg", dname, "msg").read_text()
        parts.append(f"{_SEPARATOR}\nMSG: {dep}\n{text.rstrip(chr(10))}")
        queue.extend(t for t in _field_types(text, dpkg) if t not in seen)
    return "\n".join(parts) + "\n"


def type_hash(type_name: str) -> str:
    """RIHS01 type hash from the installed type description (.json), '' when unavailable."""
    pkg, kind, name = _split_type(type_name)
    try:
        data = json.loads(_interface_file(pkg, kind, name, "json").read_text())
    except (BagError, ValueError):
        return ""
    full = f"{pkg}/{kind}/{name}"
    for entry in data.get("type_hashes", []):
        if entry.get("type_name") == full:
            return str(entry.get("hash_string", ""))
    return ""


def qos_to_yaml(qos_profiles: list[Any]) -> str:
    """rclpy QoSProfiles -> rosbag2's ``offered_qos_profiles`` YAML string."""
    def dur(d: Any) -> dict:
        ns = int(getattr(d, "nanoseconds", 0))
        if ns >= 9223372036854775807 or ns < 0:  # RMW_DURATION_INFINITE, written as rosbag2 does
            return {"sec": 9223372036, "nsec": 854775807}
        return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}  # 0 = "default"

    items = []
    for q in qos_profiles:
        items.append({
            "history": str(q.history.name).lower(), "depth": int(q.depth),
            "reliability": str(q.reliability.name).lower(), "durability": str(q.durability.name).lower(),
            "deadline": dur(q.deadline), "lifespan": dur(q.lifespan),
            "liveliness": str(q.liveliness.name).lower(), "liveliness_lease_duration": dur(q.liveliness_lease_duration),
            "avoid_ros_namespace_conventions": bool(q.avoid_ros_namespace_conventions),
        })
    return yaml.safe_dump(items, sort_keys=False) if items else ""


# ----------------------------------------------------------------------------- writing
class BagWriter:
    """Write a rosbag2-compatible MCAP bag folder.

    >>> with BagWriter("out_bag") as bag:
    ...     bag.write("/chatter", msg, log_time_ns)
    """

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, ros_distro: str = "kilted") -> None:
        from mcap.writer import CompressionType, Writer

        self.folder = Path(folder)
        if self.folder.exists():
            if not overwrite:
                raise BagError(f"bag folder {self.folder} already exists; choose a new name or pass overwrite=True")
            if not self.folder.is_dir():
                raise BagError(f"{self.folder} exists and is not a folder")
            for f in self.folder.iterdir():
                if f.suffix in (".mcap", ".yaml"):
                    f.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file_name = f"{self.folder.name}_0.mcap"
        self._fh = open(self.folder / self.file_name, "wb")
        self._writer = Writer(self._fh, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="pose_ros bag writer")
        self.ros_distro = ros_distro
        self.topics: dict[str, TopicInfo] = {}
        self._channel_ids: dict[str, int] = {}
        self._schema_ids: dict[str, int] = {}
        self._sequence = 0
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.closed = False

    def add_topic(self, topic: str, type_name: str, offered_qos_profiles: str = "") -> None:
        """Declare a topic (done implicitly by ``write`` for message objects)."""
        if topic in self.topics:
            if self.topics[topic].type != type_name:
                raise BagError(f"topic {topic} already recorded as {self.topics[topic].type}, not {type_name}")
            return
        if not topic.startswith("/"):
            raise BagError(f"topic {topic!r} must be absolute (start with '/')")
        if type_name not in self._schema_ids:
            self._schema_ids[type_name] = self._writer.register_schema(
                name=type_name, encoding="ros2msg", data=message_definition(type_name).encode())
        thash = type_hash(type_name)
        # rosbag2_storage_mcap writes both keys on every channel (the hash empty when unknown).
        metadata = {"offered_qos_profiles": offered_qos_profiles, "topic_type_hash": thash}
        self._channel_ids[topic] = self._writer.register_channel(
            topic=topic, message_encoding="cdr", schema_id=self._schema_ids[type_name], metadata=metadata)
        self.topics[topic] = TopicInfo(topic, type_name, "cdr", offered_qos_profiles, thash)

    def write(self, topic: str, msg: Any, log_time_ns: int, publish_time_ns: int | None = None,
              type_name: str | None = None) -> None:
        """Append one message: a message object, or CDR ``bytes`` with ``type_name`` (or a declared topic)."""
        if self.closed:
            raise BagError("bag is closed")
        if isinstance(msg, (bytes, bytearray, memoryview)):
            data = bytes(msg)
            if topic not in self.topics:
                if type_name is None:
                    raise BagError(f"raw bytes for undeclared topic {topic}: call add_topic(topic, type) first "
                                   "or pass type_name")
                self.add_topic(topic, type_name)
        else:
            from rclpy.serialization import serialize_message

            if topic not in self.topics:
                self.add_topic(topic, type_name or type_name_of(msg))
            data = serialize_message(msg)
        log_time_ns = int(log_time_ns)
        publish_time_ns = log_time_ns if publish_time_ns is None else int(publish_time_ns)
        if log_time_ns < 0:
            raise BagError(f"log_time_ns must be >= 0; got {log_time_ns}")
        self._writer.add_message(channel_id=self._channel_ids[topic], log_time=log_time_ns, data=data,
                                 publish_time=publish_time_ns, sequence=self._sequence)
        self._sequence += 1
        self.topics[topic].message_count += 1
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = log_time_ns if self.end_ns is None else max(self.end_ns, log_time_ns)

    @property
    def message_count(self) -> int:
        return sum(t.message_count for t in self.topics.values())

    def close(self) -> None:
        if self.closed:
            return
        info = self._metadata()
        # rosbag2_storage_mcap's update_metadata(): the bag metadata inside the MCAP file too, as YAML of
        # rosbag2's BagMetadata (what metadata.yaml holds under rosbag2_bagfile_information).
        self._writer.add_metadata("rosbag2", {"serialized_metadata": yaml.safe_dump(info, sort_keys=False)})
        self._writer.finish()
        self._fh.close()
        self.closed = True
        with open(self.folder / "metadata.yaml", "w") as fh:
            yaml.safe_dump({"rosbag2_bagfile_information": info}, fh, sort_keys=False)

    def _metadata(self) -> dict:
        """rosbag2's BagMetadata (version 9), keys in the order rosbag2_storage's YAML encoder writes them."""
        start = self.start_ns or 0
        duration = (self.end_ns - start) if self.end_ns is not None else 0
        info = {
            "version": METADATA_VERSION,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": self.message_count,
            "topics_with_message_count": [
                {"topic_metadata": {"name": t.name, "type": t.type, "serialization_format": t.serialization_format,
                                    "offered_qos_profiles": t.offered_qos_profiles,
                                    "type_description_hash": t.type_description_hash},
                 "message_count": t.message_count} for t in self.topics.values()],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [self.file_name],
            "files": [{"path": self.file_name, "starting_time": {"nanoseconds_since_epoch": start},
                       "duration": {"nanoseconds": duration}, "message_count": self.message_count}],
            "custom_data": {},
            "ros_distro": self.ros_distro,
        }
        return info

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- reading
class BagReader:
    """Read a bag folder (or a single .mcap file) written by us or by ``ros2 bag record -s mcap``."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if not path.exists():
            raise BagError(f"bag {path} does not exist")
        self.metadata: dict = {}
        if path.is_dir():
            meta = path / "metadata.yaml"
            if meta.is_file():
                self.metadata = (yaml.safe_load(meta.read_text()) or {}).get("rosbag2_bagfile_information", {})
                storage = self.metadata.get("storage_identifier", "mcap")
                if storage != "mcap":
                    raise BagError(f"bag {path} uses storage '{storage}'; only mcap is supported "
                                   "(convert with `ros2 bag convert` to mcap)")
                files = [path / f for f in self.metadata.get("relative_file_paths", [])]
            else:
                files = sorted(path.glob("*.mcap"))
            if not files:
                raise BagError(f"bag folder {path} holds no .mcap file")
        elif path.suffix == ".mcap":
            files = [path]
        else:
            raise BagError(f"{path} is neither a bag folder nor an .mcap file")
        for f in files:
            if not f.is_file():
                raise BagError(f"bag file {f} listed in metadata.yaml is missing")
        self.path = path
        self.files = files
        self.topics = self._scan_topics()

    def _scan_topics(self) -> dict[str, TopicInfo]:
        from mcap.reader import make_reader

        topics: dict[str, TopicInfo] = {}
        for f in self.files:
            with open(f, "rb") as fh:
                reader = make_reader(fh)
                summary = reader.get_summary()
                if summary is None:
                    continue
                counts = summary.statistics.channel_message_counts if summary.statistics else {}
                for cid, ch in summary.channels.items():
                    schema = summary.schemas.get(ch.schema_id)
                    if ch.message_encoding != "cdr":
                        raise BagError(f"topic {ch.topic} in {f} has message encoding {ch.message_encoding!r}; "
                                       "only cdr (ROS 2) is supported")
                    info = topics.setdefault(ch.topic, TopicInfo(
                        ch.topic, schema.name if schema else "", "cdr", ch.metadata.get("offered_qos_profiles", ""),
                        ch.metadata.get("topic_type_hash", "")))
                    info.message_count += int(counts.get(cid, 0))
        return topics

    @property
    def message_count(self) -> int:
        return sum(t.message_count for t in self.topics.values())

    def messages(self, topics: list[str] | None = None) -> Iterator[BagMessage]:
        """Messages in log-time order (CDR bytes untouched)."""
        from mcap.reader import make_reader

        unknown = set(topics or []) - set(self.topics)
        if unknown:
            raise BagError(f"topics {sorted(unknown)} are not in bag {self.path}; it has {sorted(self.topics)}")
        for f in self.files:
            with open(f, "rb") as fh:
                reader = make_reader(fh)
                for schema, channel, message in reader.iter_messages(topics=topics, log_time_order=True):
                    yield BagMessage(channel.topic, schema.name if schema else self.topics[channel.topic].type,
                                     bytes(message.data), int(message.log_time), int(message.publish_time))

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
