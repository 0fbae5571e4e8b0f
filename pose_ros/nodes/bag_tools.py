"""Record live topics into a ROS 2 MCAP bag and play bags back, without rosbag2.

Recording subscribes in *raw* mode, so the CDR bytes go to the file untouched (no decode /
re-encode), with the receive time as log time and the publisher's source timestamp as publish
time, like ``ros2 bag record``. The subscription QoS adapts to the publishers (best effort if
any publisher is best effort), so nothing is silently left unmatched. Playback publishes the
stored bytes with the recorded spacing divided by ``rate``; with ``clock_hz`` > 0 it also publishes
the bag's time on ``/clock`` (rosgraph_msgs/Clock, rclcpp's ClockQoS: best effort, keep last 1), as
``ros2 bag play --clock`` does: the recorded receive time (log time) of the playhead, advancing at
``rate``, so nodes with ``use_sim_time`` follow the bag (held at the first message's time during the
start delay, restarting with each loop).
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Callable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from pose_ros.sensors.bag import BagReader, BagWriter, message_class, qos_to_yaml

__all__ = ["BagRecorder", "BagPlayer", "record", "play", "DEFAULT_EXCLUDED", "CLOCK_TOPIC", "clock_qos"]

DEFAULT_EXCLUDED = ("/rosout", "/parameter_events")
CLOCK_TOPIC = "/clock"


def clock_qos() -> QoSProfile:
    """rclcpp::ClockQoS (what ros2 bag play --clock offers; rclpy's time source subscribes best effort, depth 1)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def _adapted_qos(publisher_qos: list[QoSProfile], depth: int = 100) -> QoSProfile:
    """Subscription QoS that matches every publisher (what rosbag2 does)."""
    reliable = bool(publisher_qos) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in publisher_qos)
    latched = bool(publisher_qos) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in publisher_qos)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class BagRecorder:
    """Subscribe (raw) to ``topics`` on ``node`` and write every message into ``writer``.

    ``topics=None`` records every topic except DEFAULT_EXCLUDED. Topics that appear later are
    picked up by a discovery timer; topics named but never seen are reported by ``missing``.
    """

    def __init__(self, node: Node, writer: BagWriter, topics: list[str] | None = None,
                 discovery_period_s: float = 0.2) -> None:
        if topics is not None:
            bad = [t for t in topics if not t.startswith("/")]
            if bad:
                raise ValueError(f"topics must be absolute names starting with '/': {bad}")
        self.node = node
        self.writer = writer
        self.topics = list(topics) if topics is not None else None
        self.counts: Counter[str] = Counter()
        self.errors = 0
        self._subs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._timer = node.create_timer(discovery_period_s, self.discover)
        self.discover()

    @property
    def missing(self) -> list[str]:
        return [t for t in (self.topics or []) if t not in self._subs]

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    def discover(self) -> None:
        for name, types in self.node.get_topic_names_and_types():
            if name in self._subs:
                continue
            if self.topics is None and name in DEFAULT_EXCLUDED:
                continue
            if self.topics is not None and name not in self.topics:
                continue
            if len(types) != 1:
                self.node.get_logger().warning(f"topic {name} has several types {types}; not recorded")
                continue
            pubs = self.node.get_publishers_info_by_topic(name)
            if not pubs:
                continue
            pub_qos = [p.qos_profile for p in pubs]
            try:
                cls = message_class(types[0])
                self.writer.add_topic(name, types[0], qos_to_yaml(pub_qos))
            except ValueError as exc:
                self.node.get_logger().error(f"cannot record {name}: {exc}")
                self._subs[name] = None
                continue
            self._subs[name] = self.node.create_subscription(
                cls, name, self._callback_for(name), _adapted_qos(pub_qos), raw=True)
            self.node.get_logger().info(f"recording {name} [{types[0]}]")

    def _callback_for(self, topic: str) -> Callable[[bytes, Any], None]:
        def on_message(data: bytes, info: Any) -> None:
            recv_ns = int(info.get("received_timestamp", 0)) or time.time_ns()
            src_ns = int(info.get("source_timestamp", 0)) or recv_ns
            with self._lock:
                if self._closed:
                    return
                try:
                    self.writer.write(topic, data, recv_ns, src_ns)
                    self.counts[topic] += 1
                except ValueError as exc:
                    self.errors += 1
                    self.node.get_logger().error(f"dropped a message on {topic}: {exc}")
        return on_message

    def close(self) -> None:
        """Stop recording and finalise the bag (metadata.yaml)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._timer.cancel()
            for sub in self._subs.values():
                if sub is not None:
                    self.node.destroy_subscription(sub)
            self.writer.close()


class BagPlayer:
    """Publish a bag's messages on ``node`` from a thread, keeping the recorded timing / ``rate``."""

    def __init__(self, node: Node, reader: BagReader, rate: float = 1.0, loop: bool = False,
                 topics: list[str] | None = None, qos: QoSProfile | None = None,
                 start_delay_s: float = 0.0, clock_hz: float = 0.0) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 (1.0 = recorded speed); got {rate}")
        if not clock_hz >= 0:
            raise ValueError(f"clock_hz must be >= 0 (0 = no /clock); got {clock_hz}")
        self.node, self.reader, self.rate, self.loop = node, reader, float(rate), bool(loop)
        self.topics = topics
        self.clock_hz = float(clock_hz)
        chosen = topics or list(reader.topics)
        if self.clock_hz > 0 and CLOCK_TOPIC in chosen:   # the bag's own /clock would fight the published one
            node.get_logger().warning(f"publishing {CLOCK_TOPIC} from the bag's time: its recorded {CLOCK_TOPIC} "
                                      "is not played")
            chosen = [t for t in chosen if t != CLOCK_TOPIC]
        qos = qos or QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        self._pubs = {t: node.create_publisher(message_class(reader.topics[t].type), t, qos) for t in chosen
                      if t in reader.topics}
        missing = [t for t in chosen if t not in reader.topics]
        if missing:
            raise ValueError(f"topics {missing} are not in the bag; it has {sorted(reader.topics)}")
        self.start_delay_s = start_delay_s
        self.published = 0
        self.clock_published = 0
        self.loops_done = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bag-player", daemon=True)
        # playhead: bag time t_bag0 at monotonic time t_wall0 (None: not started, the clock holds at t_bag0)
        self._time_lock = threading.Lock()
        self._t_bag0: int | None = None
        self._t_wall0: float | None = None
        self._clock_pub = None
        self._clock_thread = None
        if self.clock_hz > 0:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self._clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, clock_qos())
            first = next(iter(reader.messages(list(self._pubs))), None)
            self._t_bag0 = first.log_time_ns if first is not None else None
            self._clock_thread = threading.Thread(target=self._run_clock, name="bag-clock", daemon=True)

    def start(self) -> "BagPlayer":
        self._thread.start()
        if self._clock_thread is not None:
            self._clock_thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        for thread in (self._thread, self._clock_thread):
            if thread is not None and thread.is_alive():
                thread.join(timeout_s)

    def bag_time_ns(self) -> int | None:
        """The playhead's bag time (recorded log time), None before the bag's first message is known."""
        with self._time_lock:
            if self._t_bag0 is None:
                return None
            if self._t_wall0 is None:
                return self._t_bag0
            return self._t_bag0 + int((time.monotonic() - self._t_wall0) * self.rate * 1e9)

    def _run_clock(self) -> None:
        period = 1.0 / self.clock_hz
        while not self._stop.is_set() and not self.done.is_set():
            t = self.bag_time_ns()
            if t is not None:
                msg = self._clock_cls()
                msg.clock.sec, msg.clock.nanosec = divmod(int(t), 1_000_000_000)
                self._clock_pub.publish(msg)
                self.clock_published += 1
            self._stop.wait(period)

    def _run(self) -> None:
        if self.start_delay_s > 0 and self._stop.wait(self.start_delay_s):
            self.done.set()
            return
        try:
            while not self._stop.is_set():
                t_bag0 = None
                t_wall0 = time.monotonic()
                for m in self.reader.messages(list(self._pubs)):
                    if t_bag0 is None:
                        t_bag0 = m.log_time_ns
                        with self._time_lock:
                            self._t_bag0, self._t_wall0 = t_bag0, t_wall0
                    due = t_wall0 + (m.log_time_ns - t_bag0) / 1e9 / self.rate
                    wait = due - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
                    self._pubs[m.topic].publish(m.data)
                    self.published += 1
                self.loops_done += 1
                if not self.loop:
                    break
        finally:
            self.done.set()


def record(out: str, topics: list[str] | None = None, duration_s: float = 0.0, overwrite: bool = False,
           progress: bool = True, args: list[str] | None = None) -> int:
    """Record until ``duration_s`` elapses (0 = until Ctrl-C); returns an exit code."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from tqdm import tqdm

    writer = BagWriter(out, overwrite=overwrite)  # fails early (folder exists) before touching ROS
    rclpy.init(args=args)
    node = rclpy.create_node("pose_ros_bag_recorder")
    recorder = BagRecorder(node, writer, topics)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="recorder-spin", daemon=True)
    spinner.start()
    t0 = time.monotonic()
    bar = tqdm(total=duration_s if duration_s > 0 else None, unit="s" if duration_s > 0 else "msg",
               desc=f"recording {out}", disable=not progress)
    try:
        while rclpy.ok():
            elapsed = time.monotonic() - t0
            bar.n = min(elapsed, duration_s) if duration_s > 0 else recorder.message_count
            bar.set_postfix(messages=recorder.message_count, refresh=False)
            bar.refresh()
            if duration_s > 0 and elapsed >= duration_s:
                break
            time.sleep(min(0.2, max(0.01, duration_s - elapsed)) if duration_s > 0 else 0.2)
    except KeyboardInterrupt:
        pass
    finally:
        bar.close()
        recorder.close()
        executor.shutdown()
        spinner.join(5.0)  # a spinning thread alive at interpreter exit aborts the process
        missing = recorder.missing
        node.get_logger().info(f"wrote {recorder.message_count} messages on {len(recorder.counts)} topics to {out}")
        if missing:
            node.get_logger().warning(f"never saw publishers on {missing}")
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def play(bag: str, rate: float = 1.0, loop: bool = False, topics: list[str] | None = None,
         progress: bool = True, start_delay_s: float = 0.5, clock_hz: float = 0.0,
         args: list[str] | None = None) -> int:
    """Publish a bag (once, or looping until Ctrl-C), and the bag's time on /clock at ``clock_hz`` (0 = off);
    returns an exit code."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tqdm import tqdm

    reader = BagReader(bag)
    rclpy.init(args=args)
    node = rclpy.create_node("pose_ros_bag_player")
    player = BagPlayer(node, reader, rate=rate, loop=loop, topics=topics, start_delay_s=start_delay_s,
                       clock_hz=clock_hz)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="player-spin", daemon=True)
    spinner.start()
    total = sum(reader.topics[t].message_count for t in (topics or reader.topics))
    bar = tqdm(total=None if loop else total, unit="msg", desc=f"playing {bag}", disable=not progress)
    player.start()
    try:
        while rclpy.ok() and not player.done.wait(0.2):
            bar.n = player.published
            bar.refresh()
    except KeyboardInterrupt:
        pass
    finally:
        player.stop()
        executor.shutdown()
        spinner.join(5.0)  # a spinning thread alive at interpreter exit aborts the process
        bar.n = player.published
        bar.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
