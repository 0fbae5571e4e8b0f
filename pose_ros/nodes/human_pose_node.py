"""Human pose node: colour + aligned depth + camera_info in, 3D skeletons out.

Thin: all perception is `pose_ros.human.skeleton_estimator.SkeletonEstimator`. The node pairs
colour and depth with the approximate-time synchroniser, keeps the newest camera_info, and hands
the newest pair to one worker thread. It never blocks the subscription callbacks: when the worker
is busy, a newer pair replaces the waiting one (newest frame wins) and the replaced one is
counted as dropped. Bad input (unsupported encoding, size mismatch, no camera_info yet) drops
the frame; each kind is logged the first time and its count is repeated in the periodic status.

Publishes ~/skeletons (pose_ros/HumanSkeletonArray, header = colour stamp and frame; with `hands`
the operator's hands in HumanSkeleton.hands), ~/markers (LINE_LIST bones, hands included, +
SPHERE_LIST joints per person, deleted when the person leaves) and ~/debug_image (overlay, only
while someone subscribes). Camera subscriptions match the publishers'
reliability (image_qos: auto, nodes/qos.py). Colour and depth arrive raw or compressed (image_transport:
compressed -> <color_topic>/compressed, depth_image_transport: compressedDepth -> <depth_topic>/compressedDepth;
nodes/image_conversions.py), e.g. over Wi-Fi. /diagnostics: processing rate, people, drops (nodes/diagnostics.py).
Parameters marked live take effect on `ros2 param set`; the others are read at start-up (a set is refused).
"""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from pose_ros.msg import HumanHand, HumanKeypoint, HumanSkeleton, HumanSkeletonArray
from pose_ros.nodes.image_conversions import (camera_info_to_camera, decode_depth_m, decode_rgb,
                                              image_transport_name, numpy_to_image, stamp_to_ns, transport_topic)
from pose_ros.nodes.diagnostics import OK, WARN, DiagnosticReport, NodeDiagnostics, RateMeter, drop_values
from pose_ros.nodes.drop_log import DropLog
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.process_priority import apply_process_priority, priority_parameters
from pose_ros.nodes.qos import CameraSubscriptions, camera_publisher_qos, image_qos_mode, result_qos
from pose_ros.nodes.runner import run_node
from pose_ros.nodes.sync import ApproximateTimeSync
from pose_ros.nodes.topics import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC

PARAMETERS = [
    *priority_parameters(),
    ParamSpec("color_topic", COLOR_TOPIC, "colour image topic (rgb8/bgr8)"),
    ParamSpec("depth_topic", DEPTH_TOPIC, "depth aligned to colour (16UC1 mm or 32FC1 m)"),
    ParamSpec("info_topic", INFO_TOPIC, "colour camera_info topic"),
    ParamSpec("image_transport", "raw", "colour transport: raw (sensor_msgs/Image on color_topic) | compressed "
              "(JPEG/PNG sensor_msgs/CompressedImage on <color_topic>/compressed, as image_transport names it; "
              "for remote operation over Wi-Fi)"),
    ParamSpec("depth_image_transport", "raw", "depth transport: raw (Image on depth_topic) | compressedDepth "
              "(image_transport's PNG CompressedImage on <depth_topic>/compressedDepth; 16UC1 exact, 32FC1 quantised)"),
    ParamSpec("use_depth", True, "lift keypoints with depth; false = colour only (model landmarks placed by PnP)"),
    ParamSpec("depth_scale_m", 0.001, "metres per 16UC1 depth unit (RealSense: 0.001)", min=1e-6, max=1.0,
              live=True),
    ParamSpec("sync_slop_s", 0.03, "max colour/depth stamp difference to pair them", min=0.0, max=1.0),
    ParamSpec("max_rate_hz", 30.0, "process at most this many frames per second on average (0 = as fast as "
              "possible); camera jitter around the cap does not delay a frame", min=0.0, max=1000.0, live=True),
    ParamSpec("image_qos", "auto", "camera subscription reliability: auto (match the publisher: best_effort if "
              "it publishes best-effort, else reliable) | reliable | best_effort"),
    ParamSpec("image_queue_depth", 2, "colour/depth subscription history: small = only the newest frames wait "
              "(newest frame wins; a deeper queue makes a slow node work through stale frames)", min=1, max=100),
    ParamSpec("convention", "blazepose33", "output keypoint convention: blazepose33 or coco17"),
    ParamSpec("operator_only", False, "publish only the operator's skeleton"),
    ParamSpec("operator_selection", "largest", "how to choose the operator: largest, closest or roi"),
    ParamSpec("operator_roi", [0.0, 0.0, 1.0, 1.0],
              "x0, y0, x1, y1 normalised image rectangle for operator_selection=roi"),
    ParamSpec("max_missed_frames", 5, "frames without the operator before the track is declared lost",
              min=0, max=1000),
    ParamSpec("min_detection_confidence", 0.5, "MediaPipe person detection threshold", min=0.0, max=1.0),
    ParamSpec("min_tracking_confidence", 0.5, "MediaPipe landmark tracking threshold", min=0.0, max=1.0),
    ParamSpec("min_score", 0.3, "drop people whose mean keypoint confidence is below this", min=0.0, max=1.0),
    ParamSpec("filter_enabled", True, "One-Euro smoothing of 3D keypoints per track"),
    ParamSpec("filter_min_cutoff", 1.0, "One-Euro min cutoff (Hz): lower = smoother at rest", min=1e-3, max=100.0),
    ParamSpec("filter_beta", 0.5, "One-Euro speed coefficient: higher = less lag when moving", min=0.0, max=100.0),
    ParamSpec("filter_d_cutoff", 1.0, "One-Euro derivative cutoff (Hz)", min=1e-3, max=100.0),
    ParamSpec("body_extent_m", 1.0, "reject keypoint depths farther than this from the torso depth",
              min=0.05, max=5.0),
    ParamSpec("model_depth_tolerance_m", 0.4,
              "reject keypoint depths disagreeing with the model's relative depth by more", min=0.01, max=5.0),
    ParamSpec("joint_depth_offset_m", 0.0, "added to depth-lifted keypoints (skin surface -> joint centre)",
              min=-0.2, max=0.2),
    ParamSpec("hands", False, "21 keypoints per hand of the operator (MediaPipe hand landmarks in crops at the body's "
              "wrists, 3D from depth like the body) in HumanSkeleton.hands, for the retarget node's grippers; off by "
              "default: it about doubles the time per frame (README, measured results)"),
    ParamSpec("hand_model_complexity", 1, "hand landmark model: 1 = full, 0 = lite (faster, less accurate); both "
              "bundled", min=0, max=1),
    ParamSpec("hand_min_presence", 0.5, "hand landmark model's hand presence threshold", min=0.0, max=1.0),
    ParamSpec("hand_min_handedness", 0.3, "drop a hand whose own left/right classifier gives its side (the body "
              "wrist it was found at) a lower probability: the crop caught the other hand", min=0.0, max=1.0),
    ParamSpec("marker_joint_size_m", 0.04, "joint sphere diameter in ~/markers", min=0.001, max=1.0, live=True),
    ParamSpec("status_period_s", 10.0, "period of the status log line (rate, latency, drops)", min=0.5, max=3600.0,
              live=True),
]


def _keypoint_msgs(points) -> list[HumanKeypoint]:
    """HumanKeypoint list of a Skeleton3D or Hand3D (names, 3D, pixels, confidence, source)."""
    out = []
    for i, name in enumerate(points.names):
        kp = HumanKeypoint(name=name, confidence=float(points.confidence[i]), source=int(points.source[i]))
        x, y, z = (float(v) for v in points.positions_cam_m[i])
        kp.position = Point(x=x, y=y, z=z)
        kp.u, kp.v = float(points.uv_px[i, 0]), float(points.uv_px[i, 1])
        out.append(kp)
    return out


class RateLimiter:
    """Token bucket holding at most `burst` frames: the long-run rate stays <= rate_hz, but a frame
    that arrives a little early (camera jitter at a rate equal to the cap) starts at once instead
    of sleeping out the rest of a fixed period, which added up to a period of latency."""

    def __init__(self, rate_hz: float, burst: float = 2.0) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz={rate_hz} must be > 0 (no limiter: don't build one)")
        self.period_s, self.burst = 1.0 / rate_hz, float(burst)
        self._tokens, self._t = self.burst, None

    def _refill(self, now_s: float) -> None:
        if self._t is not None:
            self._tokens = min(self.burst, self._tokens + (now_s - self._t) / self.period_s)
        self._t = now_s

    def wait_s(self, now_s: float) -> float:
        """Seconds to wait before the next frame may start (0 = now)."""
        self._refill(now_s)
        return max(0.0, (1.0 - self._tokens) * self.period_s)

    def take(self, now_s: float) -> None:
        self._refill(now_s)
        self._tokens -= 1.0


def _limiter(rate_hz: float) -> RateLimiter | None:
    return RateLimiter(rate_hz) if rate_hz > 0 else None


class HumanPoseNode(Node):
    def __init__(self, node_name: str = "human_pose", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_parameters(self, PARAMETERS, apply=self._apply_parameter)
        self.process_priority = apply_process_priority(self, self.p["process_realtime_priority"],
                                                       self.p["process_nice"])
        image_qos_mode(self.p["image_qos"])   # a wrong value stops the node before MediaPipe loads
        color_type, self.color_in = transport_topic(self.p["color_topic"], image_transport_name(self.p["image_transport"]))
        depth_type, self.depth_in = transport_topic(
            self.p["depth_topic"], image_transport_name(self.p["depth_image_transport"], depth=True))
        from pose_ros.human.keypoint_backend import MediaPipePoseBackend
        from pose_ros.human.lifting import LiftingConfig
        from pose_ros.human.one_euro import OneEuroConfig
        from pose_ros.human.operator_tracking import TrackerConfig
        from pose_ros.human.skeleton_estimator import SkeletonEstimator, SkeletonEstimatorConfig

        p = self.p
        config = SkeletonEstimatorConfig(
            convention=str(p["convention"]), operator_only=bool(p["operator_only"]),
            min_score=float(p["min_score"]), filter_enabled=bool(p["filter_enabled"]),
            lifting=LiftingConfig(body_extent_m=float(p["body_extent_m"]),
                                  model_depth_tolerance_m=float(p["model_depth_tolerance_m"]),
                                  joint_depth_offset_m=float(p["joint_depth_offset_m"])),
            tracking=TrackerConfig(selection=str(p["operator_selection"]),
                                   roi=tuple(float(v) for v in p["operator_roi"]),
                                   max_missed_frames=int(p["max_missed_frames"])),
            filter=OneEuroConfig(min_cutoff=float(p["filter_min_cutoff"]), beta=float(p["filter_beta"]),
                                 d_cutoff=float(p["filter_d_cutoff"])),
        )
        backend = MediaPipePoseBackend(min_detection_confidence=float(p["min_detection_confidence"]),
                                       min_tracking_confidence=float(p["min_tracking_confidence"]),
                                       static_image_mode=False)
        hand_backend = None
        if p["hands"]:
            from pose_ros.human.hand_keypoints import MediaPipeHandBackend

            hand_backend = MediaPipeHandBackend(model_complexity=int(p["hand_model_complexity"]),
                                                min_presence=float(p["hand_min_presence"]),
                                                min_handedness=float(p["hand_min_handedness"]))
        self.estimator = SkeletonEstimator(backend, config, hand_backend=hand_backend)

        self.skeleton_pub = self.create_publisher(HumanSkeletonArray, "~/skeletons", result_qos())
        self.marker_pub = self.create_publisher(MarkerArray, "~/markers", result_qos())
        self.debug_pub = self.create_publisher(Image, "~/debug_image", camera_publisher_qos(depth=1))

        self._camera_info: CameraInfo | None = None
        self._pending: tuple | None = None   # colour, depth or None (Image or CompressedImage), pairing time (ns)
        self._camera_key: tuple | None = None
        self._camera = None
        self._cond = threading.Condition()
        self._running = True
        self.drops = DropLog(self.get_logger(), "the status line and /diagnostics")
        self.processed = 0
        self._rate = RateMeter()
        self._people = 0
        self._limiter = _limiter(float(self.p["max_rate_hz"]))   # the worker takes the current one each frame
        self._proc_ms: list[float] = []
        # Per processed frame (ms): colour stamp -> paired, paired -> worker start, start -> published.
        self._stage_ms: list[tuple[float, float, float]] = []
        self._last_marker_ids: set[int] = set()
        self._last_frame_id = ""

        self.camera_subs = CameraSubscriptions(self, p["image_qos"], depth=int(p["image_queue_depth"]))
        self.camera_subs.add(CameraInfo, p["info_topic"], self._on_info)
        if p["use_depth"]:
            self._sync = ApproximateTimeSync(2, int(float(p["sync_slop_s"]) * 1e9), self._on_pair, queue_size=5)
            self.camera_subs.add(color_type, self.color_in, lambda m: self._sync.add(0, stamp_to_ns(m.header.stamp), m))
            self.camera_subs.add(depth_type, self.depth_in, lambda m: self._sync.add(1, stamp_to_ns(m.header.stamp), m))
        else:
            self._sync = None
            self.camera_subs.add(color_type, self.color_in, lambda m: self._on_pair(m, None))

        self._worker = threading.Thread(target=self._work, name="human_pose_worker", daemon=True)
        self._worker.start()
        self._status_timer = self.create_timer(float(p["status_period_s"]), self._status)
        self.diagnostics = NodeDiagnostics(self, self._diagnostics)
        self.get_logger().info(
            f"human pose: {self.color_in} + {self.depth_in if p['use_depth'] else '(no depth)'} -> "
            f"{self.skeleton_pub.topic_name} ({p['convention']}, operator: {p['operator_selection']}, "
            f"hands: {'on' if p['hands'] else 'off'})")

    # ------------------------------------------------------------------ live parameters, diagnostics
    def _apply_parameter(self, name: str, value) -> None:
        """Live parameters the node does not simply read from self.p while it runs (max_rate_hz: the worker
        reads the new limiter at its next frame)."""
        if name == "max_rate_hz":
            self._limiter = _limiter(float(value))
        elif name == "status_period_s":
            self._status_timer.timer_period_ns = int(float(value) * 1e9)
            self._status_timer.reset()

    def _diagnostics(self) -> DiagnosticReport:
        rate = self._rate.rate_hz()
        drops = dict(self.drops)
        limiter = self._limiter
        values = {"frames_processed": self.processed, "rate_hz": round(rate, 2), "people": self._people,
                  "max_rate_hz": 1.0 / limiter.period_s if limiter is not None else 0.0,
                  "camera_info": "received" if self._camera_info is not None else "waiting",
                  "camera_qos": self.camera_subs.summary(), **drop_values(drops)}
        if self._sync is not None:
            st = self._sync.stats
            values.update({"frames_received": " / ".join(str(n) for n in st.received) + " (colour / depth)",
                           "sync_matched_sets": st.matched_sets, "sync_dropped_unmatched": st.dropped_unmatched})
        bad = [k for k in drops if not k.startswith("overrun")]
        return DiagnosticReport(f"{self.processed} frames processed ({rate:.1f} Hz), {self._people} people, "
                                f"{sum(drops.values())} dropped", values, WARN if bad else OK)

    # ------------------------------------------------------------------ callbacks (never block)
    def _on_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_pair(self, color: Image | CompressedImage, depth: Image | CompressedImage | None) -> None:
        t_pair = self.get_clock().now().nanoseconds
        with self._cond:
            if self._pending is not None:
                self.drops["overrun (newest frame wins)"] += 1
            self._pending = (color, depth, t_pair)
            self._cond.notify()

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            limiter = self._limiter   # replaced when max_rate_hz is set live
            with self._cond:
                while self._running and self._pending is None:
                    self._cond.wait(timeout=0.5)
                if not self._running:
                    return
            if limiter is not None:
                wait = limiter.wait_s(time.monotonic())
                if wait > 0:
                    time.sleep(wait)  # newer frames may replace the pending one meanwhile
            with self._cond:
                pending, self._pending = self._pending, None
            if pending is None:
                continue
            if limiter is not None:
                limiter.take(time.monotonic())
            try:
                self._process(*pending)
            except ValueError as exc:  # bad input: every library error is a ValueError subclass
                self.drops.record(type(exc).__name__, str(exc))
            except Exception as exc:  # never let the worker die silently
                if not self.context.ok():  # shutting down mid-frame (Ctrl-C): nothing to publish to
                    return
                self.drops.record(f"unexpected {type(exc).__name__}", str(exc))

    def _process(self, color: Image | CompressedImage, depth: Image | CompressedImage | None, t_pair_ns: int) -> None:
        t_start_ns = self.get_clock().now().nanoseconds
        t0 = time.perf_counter()
        info = self._camera_info
        if info is None:
            self.drops.record("no camera_info", f"nothing received on {self.p['info_topic']} yet")
            return
        key = (info.width, info.height, info.distortion_model, tuple(info.k), tuple(info.d))
        if key != self._camera_key:  # the intrinsics rarely change: validate and build them once
            self._camera = camera_info_to_camera(info)
            self._camera_key = key
        camera = self._camera
        rgb = decode_rgb(color)
        depth_m = None
        if depth is not None:
            depth_m = decode_depth_m(depth, float(self.p["depth_scale_m"]))
            if depth_m.shape != rgb.shape[:2]:
                self.drops.record("depth size mismatch",
                           f"depth {depth_m.shape[1]}x{depth_m.shape[0]} vs colour {rgb.shape[1]}x{rgb.shape[0]}: "
                           "subscribe to the depth aligned to colour")
                return
        stamp_ns = stamp_to_ns(color.header.stamp)
        skeletons = self.estimator.process(rgb, depth_m, camera, stamp_ns * 1e-9)
        self.processed += 1
        self._rate.tick()
        self._people = len(skeletons)
        self._proc_ms.append((time.perf_counter() - t0) * 1e3)
        self._publish(color.header, skeletons)
        t_pub_ns = self.get_clock().now().nanoseconds
        self._stage_ms.append(((t_pair_ns - stamp_ns) * 1e-6, (t_start_ns - t_pair_ns) * 1e-6,
                               (t_pub_ns - t_start_ns) * 1e-6))
        if self.marker_pub.get_subscription_count() > 0:  # markers cost ~1 ms: only for a listener
            self.marker_pub.publish(self._markers(color.header, skeletons))
        if self.debug_pub.get_subscription_count() > 0:
            from pose_ros.human.skeleton_estimator import draw_skeletons

            self.debug_pub.publish(numpy_to_image(draw_skeletons(rgb, skeletons), "rgb8", color.header))

    # ------------------------------------------------------------------ output
    def _publish(self, header: Header, skeletons: list) -> None:
        out = HumanSkeletonArray(header=header)
        for s in skeletons:
            msg = HumanSkeleton(track_id=int(s.track_id), convention=s.convention, is_operator=bool(s.is_operator),
                                score=float(s.score))
            msg.keypoints = _keypoint_msgs(s)
            for h in s.hands:
                msg.hands.append(HumanHand(side=h.side, convention=h.convention, score=float(h.presence),
                                           handedness_score=float(h.handedness_score), keypoints=_keypoint_msgs(h)))
            out.skeletons.append(msg)
        self.skeleton_pub.publish(out)

    def _markers(self, header: Header, skeletons: list) -> MarkerArray:
        from pose_ros.human.conventions import HAND21_EDGES, edges_for

        arr = MarkerArray()
        size = float(self.p["marker_joint_size_m"])
        ids = set()
        for s in skeletons:
            colour = ColorRGBA(r=0.1, g=0.9, b=0.1, a=1.0) if s.is_operator else ColorRGBA(r=1.0, g=0.55, b=0.0, a=1.0)
            ok = np.isfinite(s.positions_cam_m).all(axis=1)
            pts = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in s.positions_cam_m]
            bones = Marker(header=header, ns="bones", id=int(s.track_id), type=Marker.LINE_LIST, action=Marker.ADD)
            bones.scale.x = size / 2
            bones.color = colour
            bones.pose.orientation.w = 1.0
            for a, b in edges_for(s.convention):
                if ok[a] and ok[b]:
                    bones.points += [pts[a], pts[b]]
            for h in s.hands:   # hand bones in the same marker: deleted with the person
                h_ok = np.isfinite(h.positions_cam_m).all(axis=1)
                h_pts = [Point(x=float(q[0]), y=float(q[1]), z=float(q[2])) for q in h.positions_cam_m]
                for a, b in HAND21_EDGES:
                    if h_ok[a] and h_ok[b]:
                        bones.points += [h_pts[a], h_pts[b]]
            joints = Marker(header=header, ns="joints", id=int(s.track_id), type=Marker.SPHERE_LIST,
                            action=Marker.ADD)
            joints.scale.x = joints.scale.y = joints.scale.z = size
            joints.color = colour
            joints.pose.orientation.w = 1.0
            joints.points = [pts[i] for i in np.flatnonzero(ok)]
            arr.markers += [bones, joints]
            ids.add(int(s.track_id))
        for gone in sorted(self._last_marker_ids - ids):  # the person left: remove their markers
            for ns in ("bones", "joints"):
                arr.markers.append(Marker(header=header, ns=ns, id=gone, action=Marker.DELETE))
        self._last_marker_ids = ids
        return arr

    def _status(self) -> None:
        ms = sorted(self._proc_ms)
        self._proc_ms.clear()
        timing = f"{len(ms)} frames, p50 {ms[len(ms) // 2]:.1f} ms, max {ms[-1]:.1f} ms" if ms else "no frames"
        stages = ""
        if self._stage_ms:
            # Where a frame's latency goes: transport + sync, waiting for the worker, the work itself.
            a = np.asarray(self._stage_ms)
            self._stage_ms.clear()
            p50 = np.percentile(a, 50, axis=0)
            p95 = np.percentile(a, 95, axis=0)
            stages = ("; from colour stamp p50/p95 ms: paired " f"{p50[0]:.1f}/{p95[0]:.1f}, worker wait "
                      f"{p50[1]:.1f}/{p95[1]:.1f}, process+publish {p50[2]:.1f}/{p95[2]:.1f}")
        drops = self.drops.summary()
        sync = ""
        if self._sync is not None:
            st = self._sync.stats
            sync = f"; sync matched {st.matched_sets}, unmatched {st.dropped_unmatched}"
        self.get_logger().info(f"processed {self.processed} ({timing}{stages}); drops: {drops}{sync}")

    def destroy_node(self) -> None:
        # Also called (by rclpy.shutdown) on a node whose constructor was interrupted, e.g. a Ctrl-C
        # while the models load: only what was built is stopped.
        if hasattr(self, "_cond"):
            with self._cond:
                self._running = False
                self._cond.notify_all()
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.is_alive():
            worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    # One executor thread: the multi-threaded executor cost ~20% of a core more (see the runner).
    return run_node(HumanPoseNode, args, threads=1)


if __name__ == "__main__":
    sys.exit(main())
