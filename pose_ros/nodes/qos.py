"""QoS profiles for camera streams, results and latched data, and camera subscriptions that match
the publisher's reliability.

Camera subscribers are keep-last with a small depth so stale frames never queue. Their reliability
follows the `image_qos` parameter of the nodes that subscribe to cameras (object_pose, human_pose,
topic_monitor), handled by `CameraSubscriptions`:

- `auto` (default): each camera topic's subscription is created once a publisher of it is seen in
  the graph, best-effort if any publisher offers best-effort (a driver with sensor-data QoS), else
  reliable; it is re-made if the publishers change so that the choice changes (a driver restarted
  with other settings). A reliable subscription receives nothing from a best-effort publisher, so
  matching is what lets any driver connect.
- `reliable` / `best_effort`: fixed, as before `auto` existed (`best-effort` and `sensor_data` are
  accepted for `best_effort`). A fixed `reliable` subscription next to a best-effort publisher
  gets a warning naming the publisher: it would deliver nothing.

Why reliable whenever the publisher allows it: big images over DDS lose whole frames to dropped
fragments when the machine is loaded (measured here: best-effort delivered ~40% of 640x480 colour
frames under CPU load, reliable all of them). `auto` keeps that: a reliable publisher (realsense-ros
and our cameras by default) gets a reliable subscription. Under load, a best-effort driver's frames
can be lost (the driver's choice; switch the driver to reliable QoS to avoid it).

Our camera publishers default to reliable, like realsense-ros, so RViz and tools with default
subscriptions connect too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

IMAGE_QOS_MODES = ("auto", "reliable", "best_effort")
_IMAGE_QOS_ALIASES = {"best-effort": "best_effort", "besteffort": "best_effort", "sensor_data": "best_effort",
                      "sensor-data": "best_effort"}


def image_qos_mode(value: Any) -> str:
    """The `image_qos` parameter, normalised: auto | reliable | best_effort; else ValueError."""
    mode = str(value).strip().lower()
    mode = _IMAGE_QOS_ALIASES.get(mode, mode)
    if mode not in IMAGE_QOS_MODES:
        raise ValueError(f"image_qos must be one of auto | reliable | best_effort, got {value!r} "
                         "(auto = match the camera publisher's reliability)")
    return mode


def match_reliability(publisher_qos: Sequence[QoSProfile]) -> str | None:
    """What a subscription to these publishers should use: 'best_effort' if any publisher is not
    reliable (best-effort, or a policy the graph does not report), 'reliable' if all are, None if
    there are none. A best-effort subscription receives from reliable publishers too (without
    retransmissions); a reliable one receives nothing from a best-effort publisher."""
    if not publisher_qos:
        return None
    if all(q.reliability == ReliabilityPolicy.RELIABLE for q in publisher_qos):
        return "reliable"
    return "best_effort"


def sensor_qos(depth: int = 5, reliability: str = "reliable") -> QoSProfile:
    """Keep-last QoS for subscribing to camera streams with a fixed reliability.

    `reliable` (default) matches realsense-ros's default publishers and keeps whole 640x480
    frames from being lost to dropped UDP fragments on a loaded machine (see the module doc).
    `best_effort` receives from any publisher. The nodes use `CameraSubscriptions`, which picks
    one of the two from the publishers.
    """
    reliability = image_qos_mode(reliability)
    if reliability == "auto":
        raise ValueError("sensor_qos needs a fixed reliability (reliable | best_effort); 'auto' is "
                         "resolved by CameraSubscriptions from the publishers")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
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


@dataclass
class _CameraTopic:
    msg_type: Any
    topic: str
    callback: Callable[[Any], None]
    subscription: Any = None
    reliability: str | None = None          # what the current subscription uses
    reason: str = ""
    polls_without_publisher: int = 0
    warned: set = field(default_factory=set)  # fixed mode: publishers already warned about


class CameraSubscriptions:
    """Subscriptions to camera topics whose reliability follows `image_qos` (see the module doc).

    ``add(msg_type, topic, callback)`` per topic. In `auto` mode nothing is subscribed until a
    publisher of the topic is in the graph (checked at once and then every `poll_period_s`; at
    start-up discovery usually takes a fraction of a second), and the subscription is re-made when
    the publishers change the choice. Each choice is logged with its reason. `reliability(topic)`
    says what is in use (None = waiting for a publisher).
    """

    def __init__(self, node, mode: Any = "auto", depth: int = 5, poll_period_s: float = 0.5,
                 parameter: str = "image_qos") -> None:
        self.node = node
        self.mode = image_qos_mode(mode)
        self.depth = int(depth)
        self.parameter = parameter
        self._poll_period_s = float(poll_period_s)
        self._topics: list[_CameraTopic] = []
        # best_effort receives from every publisher: nothing to match or warn about.
        self._timer = node.create_timer(self._poll_period_s, self._poll) if self.mode != "best_effort" else None

    def add(self, msg_type, topic: str, callback: Callable[[Any], None]) -> None:
        entry = _CameraTopic(msg_type, topic, callback)
        self._topics.append(entry)
        if self.mode == "auto":
            self._match(entry)
        else:
            self._subscribe(entry, self.mode, f"{self.parameter}: {self.mode} (fixed)")
            self._warn_incompatible(entry)

    def reliability(self, topic: str) -> str | None:
        """The reliability of the subscription to `topic` (as given to `add`); None while waiting."""
        for entry in self._topics:
            if entry.topic == topic:
                return entry.reliability
        raise KeyError(f"no camera subscription for {topic}")

    def summary(self) -> str:
        """One line for logs: `<topic> reliable, <topic> waiting for a publisher`."""
        return ", ".join(f"{e.topic} {e.reliability or 'waiting for a publisher'}" for e in self._topics)

    # ------------------------------------------------------------------ internals
    def _publishers(self, entry: _CameraTopic) -> list:
        return [p for p in self.node.get_publishers_info_by_topic(entry.topic)
                if (p.node_name, p.node_namespace) != (self.node.get_name(), self.node.get_namespace())]

    def _poll(self) -> None:
        try:
            for entry in self._topics:
                if self.mode == "auto":
                    self._match(entry)
                else:
                    self._warn_incompatible(entry)
        except Exception as exc:
            # A poll racing the node's destruction at shutdown: nothing left to match.
            if "destruction was requested" in str(exc) or not self.node.context.ok():
                return
            raise

    def _match(self, entry: _CameraTopic) -> None:
        pubs = self._publishers(entry)
        choice = match_reliability([p.qos_profile for p in pubs])
        if choice is None:
            entry.polls_without_publisher += 1
            if entry.subscription is None and entry.polls_without_publisher == max(1, round(5.0 / self._poll_period_s)):
                self.node.get_logger().info(
                    f"no publisher on {entry.topic} yet: subscribing when one appears, with its QoS "
                    f"({self.parameter}: auto)")
            return
        entry.polls_without_publisher = 0
        if choice == entry.reliability:
            return
        names = sorted({_endpoint_name(p) for p in pubs})
        if choice == "best_effort":
            offering = sorted({_endpoint_name(p) for p in pubs
                               if p.qos_profile.reliability != ReliabilityPolicy.RELIABLE})
            reason = (f"{self.parameter}: auto; best-effort publisher {', '.join(offering)}: a reliable "
                      "subscription would receive nothing from it")
        else:
            reason = (f"{self.parameter}: auto; all {len(pubs)} publisher(s) reliable ({', '.join(names)}): "
                      "reliable keeps the frames best-effort loses under load")
        if entry.subscription is not None:
            reason += f"; was {entry.reliability} (publishers changed)"
        self._subscribe(entry, choice, reason)

    def _subscribe(self, entry: _CameraTopic, reliability: str, reason: str) -> None:
        if entry.subscription is not None:
            self.node.destroy_subscription(entry.subscription)
        # auto: no QoS event handlers. The subscription is re-made from the poll timer, on an executor
        # thread, while a multi-threaded executor's main thread may be adding the old one's event
        # handler to its wait set: rclpy then raised InvalidHandle ("cannot use Destroyable because
        # destruction was requested") out of spin and the node died. auto matches the publisher, so
        # the default handler's "incompatible QoS" warning cannot occur anyway; fixed modes keep it.
        events = SubscriptionEventCallbacks(use_default_callbacks=False) if self.mode == "auto" else None
        entry.subscription = self.node.create_subscription(
            entry.msg_type, entry.topic, entry.callback, sensor_qos(self.depth, reliability), event_callbacks=events)
        entry.reliability, entry.reason = reliability, reason
        self.node.get_logger().info(f"camera QoS: {entry.topic} {reliability} ({reason})")

    def _warn_incompatible(self, entry: _CameraTopic) -> None:
        if self.mode != "reliable":
            return   # best-effort receives from every publisher
        for p in self._publishers(entry):
            key = (_endpoint_name(p), tuple(p.endpoint_gid))
            if p.qos_profile.reliability != ReliabilityPolicy.RELIABLE and key not in entry.warned:
                entry.warned.add(key)
                self.node.get_logger().warn(
                    f"{self.parameter} is 'reliable' but {_endpoint_name(p)} publishes {entry.topic} best-effort: "
                    f"nothing from it arrives; set {self.parameter}: auto (or best_effort)")


def _endpoint_name(info) -> str:
    ns = info.node_namespace.rstrip("/")
    return f"{ns}/{info.node_name}" if info.node_name else "(unknown node)"
