"""ROS side of the teleop chain bench and test: a camera that publishes a moving real person,
and a probe that receives skeletons, joint commands and TeleopStatus and engages the robot.

Both attach to a node the caller owns (composition, no Node subclass), so `pose-ros bench-teleop`
and test/test_teleop_chain.py run exactly the same publisher and receiver. `PersonCameraNode`
wraps the camera as a node of its own, so the bench can put it in the same process as
human_pose and retarget (`pose_ros.nodes.container`, `bench-teleop --composed`). The latency
bookkeeping is `pose_ros.eval.teleop_latency_bench.TeleopLatencyTracker`.
"""
from __future__ import annotations

import threading
import time

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from pose_ros.eval.teleop_latency_bench import PersonSequence, TeleopLatencyTracker
from pose_ros.msg import HumanSkeletonArray, TeleopStatus
from pose_ros.nodes.image_conversions import camera_to_camera_info, depth_m_to_image, numpy_to_image, stamp_to_ns
from pose_ros.nodes.qos import camera_publisher_qos, result_qos
from pose_ros.nodes.topics import COLOR_OPTICAL_FRAME, COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC


class PersonCameraSource:
    """Publishes `sequence` like realsense-ros (rgb8 colour, 16UC1 aligned depth, camera_info, one
    stamp) at `rate_hz`. Each frame is stamped with the node's ROS time immediately before it is
    published; the messages of one period are built once and reused, so publishing costs only
    the DDS write. `on_publish(stamp_ns)` is called for every frame.

    Frames are published from a thread of their own on a fixed schedule, like a camera driver,
    not from an executor timer: rclpy's MultiThreadedExecutor in the probe's process fell behind
    under load (measured: >100 pending callbacks, 100% CPU, the "30 Hz" camera at 6 Hz with the
    G1 mapping), which measured the harness instead of the chain."""

    def __init__(self, node: Node, sequence: PersonSequence, rate_hz: float, color_topic: str = COLOR_TOPIC,
                 depth_topic: str = DEPTH_TOPIC, info_topic: str = INFO_TOPIC,
                 frame_id: str = COLOR_OPTICAL_FRAME, on_publish=None) -> None:
        if not 0.1 <= rate_hz <= 200.0:
            raise ValueError(f"camera rate {rate_hz} Hz is out of range; use 0.1 .. 200 Hz")
        self.node, self.sequence, self.rate_hz = node, sequence, float(rate_hz)
        qos = camera_publisher_qos()
        self.color_pub = node.create_publisher(Image, color_topic, qos)
        self.depth_pub = node.create_publisher(Image, depth_topic, qos)
        self.info_pub = node.create_publisher(CameraInfo, info_topic, qos)
        self.frame_id = frame_id
        self.on_publish = on_publish
        self.published = 0
        self._cache: dict[int, tuple[Image, Image]] = {}
        self._info = camera_to_camera_info(sequence.camera, Header(frame_id=frame_id))
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _messages(self, k: int) -> tuple[Image, Image]:
        i = k % self.sequence.period
        if i not in self._cache:
            f = self.sequence.frame(i)
            self._cache[i] = (numpy_to_image(f.rgb, "rgb8", Header(frame_id=self.frame_id)),
                              depth_m_to_image(f.depth_m, "16UC1", Header(frame_id=self.frame_id)))
        return self._cache[i]

    def prepare(self) -> None:
        """Build every frame of one period now (about 10 ms each), not while publishing."""
        for k in range(self.sequence.period):
            self._messages(k)

    def publish_one(self) -> int:
        with self._lock:
            color, depth = self._messages(self.published)
            stamp = self.node.get_clock().now()
            msg_stamp = stamp.to_msg()
            for m in (color, depth, self._info):
                m.header.stamp = msg_stamp
            self.color_pub.publish(color)
            self.depth_pub.publish(depth)
            self.info_pub.publish(self._info)
            self.published += 1
        if self.on_publish is not None:
            self.on_publish(stamp.nanoseconds)
        return stamp.nanoseconds

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="person_camera", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """Publish at rate_hz on an absolute schedule; a late frame does not shift later ones,
        and after a long stall the schedule restarts instead of bursting."""
        import time

        period = 1.0 / self.rate_hz
        due = time.monotonic()
        while not self._stop.is_set():
            if not self.node.context.ok():
                return
            self.publish_one()
            due += period
            now = time.monotonic()
            if due < now - period:
                due = now
            self._stop.wait(max(0.0, due - now))

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None


class PersonCameraNode(Node):
    """The bench camera as a node (parameters below), publishing from construction on: the
    stand-in for the RealSense node when the bench composes the chain into one process."""

    def __init__(self, node_name: str = "bench_camera", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        from pose_ros.eval.teleop_latency_bench import DEFAULT_IMAGE, load_coco_person

        decl = {"images": "", "image": DEFAULT_IMAGE, "width": 640, "height": 480, "rate_hz": 30.0,
                "color_topic": COLOR_TOPIC, "depth_topic": DEPTH_TOPIC, "info_topic": INFO_TOPIC}
        p = {k: self.declare_parameter(k, v).value for k, v in decl.items()}
        if not p["images"]:
            raise ValueError("bench_camera needs the 'images' parameter: a COCO-style folder (images/ + annotations)")
        sequence = PersonSequence(load_coco_person(p["images"], p["image"]), int(p["width"]), int(p["height"]))
        self.source = PersonCameraSource(self, sequence, float(p["rate_hz"]), p["color_topic"], p["depth_topic"],
                                         p["info_topic"])
        self.source.prepare()
        self.source.start()

    def destroy_node(self) -> None:
        self.source.stop()
        super().destroy_node()


class TeleopProbe:
    """Receives the chain's outputs and keeps everything (receive time = the node's ROS time):
    `skeletons`, `joint_states`, `status` and, with `all_commands`, `trajectories` and `forward`,
    as lists of (t_rx_ns, msg); feeds `tracker` when given. `retarget_ns` is the retarget node's
    name (`/retarget`).

    The latency bench needs only JointState + TeleopStatus (+ skeletons): by default the probe
    does not subscribe to the two redundant command topics, because on a 2-core machine their
    extra 100 messages/s through a Python executor take CPU from the nodes being measured (a
    robot's controller also listens to one command topic). Tests that check every command topic
    pass `all_commands=True`.

    With `frames_topic` (a camera_info topic) the probe feeds `tracker.published` from the
    camera_info stamps it receives: for a camera in another process (the composed chain), whose
    publish calls this process cannot see; camera_info carries the frame's stamp and is small."""

    def __init__(self, node: Node, skeleton_topic: str = "/human_pose/skeletons", retarget_ns: str = "/retarget",
                 tracker: TeleopLatencyTracker | None = None, depth: int = 500, all_commands: bool = False,
                 frames_topic: str | None = None) -> None:
        self.node, self.tracker = node, tracker
        self.lock = threading.RLock()
        self.skeletons: list = []
        self.joint_states: list = []
        self.trajectories: list = []
        self.forward: list = []
        self.status: list = []
        qos = result_qos(depth=depth)
        node.create_subscription(HumanSkeletonArray, skeleton_topic, self._on_skeletons, qos)
        node.create_subscription(JointState, f"{retarget_ns}/joint_states", self._on_js, qos)
        if all_commands:
            node.create_subscription(JointTrajectory, f"{retarget_ns}/joint_trajectory",
                                     lambda m: self._keep(self.trajectories, m), qos)
            node.create_subscription(Float64MultiArray, f"{retarget_ns}/forward_command",
                                     lambda m: self._keep(self.forward, m), qos)
        node.create_subscription(TeleopStatus, f"{retarget_ns}/status", self._on_status, qos)
        self.frames = 0
        if frames_topic:
            node.create_subscription(CameraInfo, frames_topic, self._on_frame, qos)
        self.engage_client = node.create_client(Trigger, f"{retarget_ns}/engage")
        self.disengage_client = node.create_client(Trigger, f"{retarget_ns}/disengage")

    def _now(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _keep(self, store: list, msg) -> int:
        t = self._now()
        with self.lock:
            store.append((t, msg))
        return t

    def _on_skeletons(self, msg: HumanSkeletonArray) -> None:
        t = self._keep(self.skeletons, msg)
        if self.tracker is not None:
            with self.lock:
                self.tracker.skeleton(stamp_to_ns(msg.header.stamp), t, bool(msg.skeletons))

    def _on_frame(self, msg: CameraInfo) -> None:
        with self.lock:
            self.frames += 1
            if self.tracker is not None:
                self.tracker.published(stamp_to_ns(msg.header.stamp))

    def _on_js(self, msg: JointState) -> None:
        t = self._keep(self.joint_states, msg)
        if self.tracker is not None:
            with self.lock:
                self.tracker.command(stamp_to_ns(msg.header.stamp), t)

    def _on_status(self, msg: TeleopStatus) -> None:
        self._keep(self.status, msg)
        if self.tracker is not None:
            with self.lock:
                self.tracker.status(stamp_to_ns(msg.header.stamp), float(msg.input_age_s), msg.state_name)

    def last_status(self) -> TeleopStatus | None:
        with self.lock:
            return self.status[-1][1] if self.status else None

    def call(self, client, timeout_s: float = 10.0) -> Trigger.Response:
        """Call a Trigger service from a thread other than the executor's; raises on timeout."""
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {client.srv_name} not available after {timeout_s:.0f} s")
        fut = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout_s
        while not fut.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {client.srv_name} did not answer within {timeout_s:.0f} s")
            time.sleep(0.01)
        return fut.result()

    def engage(self, timeout_s: float = 10.0) -> Trigger.Response:
        return self.call(self.engage_client, timeout_s)
