"""Object 6DoF pose node: RGB-D in, poses a grasp planner can consume out.

Colour + aligned depth + camera_info are paired by the approximate-time synchroniser; the newest
complete frame is handed to one worker thread running the library's PoseEstimator (keypoint
network -> PnP-RANSAC -> ICP -> scoring). The executor never blocks: while the worker is busy,
newer frames replace the pending one and the replaced ones are counted as dropped.
With tracking on, the worker tracks every frame (ICP from the last poses) and full detections run
in a detector process beside it (``detect_aside``, objects/detection_worker.py), so a detection
does not stall the pose stream; its results join the tracks a detection time later.

Outputs (all stamped with the colour image's stamp and frame):
  ~/poses          pose_ros/ObjectPoseArray   class, instance, score, pose+covariance, stage stats
  ~/pose_array     geometry_msgs/PoseArray    all poses, for generic tools
  ~/<class>/pose   geometry_msgs/PoseStamped  best instance of each class (<class> = the class name made a
                   valid ROS name, nodes/names.py: `002_master_chef_can` -> `obj_002_master_chef_can`)
  ~/markers        visualization_msgs/MarkerArray  mesh + label per instance, deleted when gone
  ~/debug_image    sensor_msgs/Image          colour with model contours and axes
  /diagnostics     diagnostic_msgs/DiagnosticArray  rates, drops by reason, stage times (nodes/diagnostics.py)
  /tf              one frame per published object, <frame_prefix><class>_<instance> (<class> as in the topic),
                   child of the colour image's optical frame; tf2_ros where installed, else tf2_msgs/TFMessage
                   directly (nodes/tf_publisher.py), so the frames reach RViz/tf2 from a plain venv too
Camera subscriptions match the publishers' reliability (image_qos: auto, nodes/qos.py). Colour and depth
arrive raw or compressed (image_transport: compressed -> <color_topic>/compressed, depth_image_transport:
compressedDepth -> <depth_topic>/compressedDepth; nodes/image_conversions.py), e.g. over Wi-Fi.
Services: ~/reset_tracking (std_srvs/Trigger), ~/set_object_enabled (pose_ros/SetObjectEnabled).
Parameters marked live below take effect on `ros2 param set`; the others are read at start-up and a set is
refused with that reason (nodes/params.py).
"""
from __future__ import annotations

import re
import sys
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from pose_ros.msg import ObjectPose, ObjectPoseArray, PoseRefinementStats
from pose_ros.nodes.image_conversions import (CameraInfoError, ImageConversionError, camera_info_to_camera,
                                              decode_depth_m, decode_rgb, image_transport_name, numpy_to_image,
                                              stamp_to_ns, transport_topic)
from pose_ros.nodes.diagnostics import OK, WARN, DiagnosticReport, NodeDiagnostics, RateMeter, drop_values
from pose_ros.nodes.drop_log import DropLog
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.names import unique_ros_name_tokens
from pose_ros.nodes.qos import CameraSubscriptions, image_qos_mode, result_qos, sensor_qos
from pose_ros.nodes.ros_conversions import T_to_pose, T_to_transform
from pose_ros.nodes.runner import run_node
from pose_ros.nodes.sync import ApproximateTimeSync
from pose_ros.nodes.tf_publisher import TfPublisher
from pose_ros.nodes.topics import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC
from pose_ros.srv import SetObjectEnabled

PARAMETERS = [
    ParamSpec("model_file", "models/demo_objects.pt",
              "trained model file (pose-ros train); relative = package share; empty = depth-only refinement "
              "of poses from init_poses_topic"),
    ParamSpec("meshes_dir", "", "meshes for ICP/markers: meshes/<name>/object.yaml or a BOP models/ dir (mm); "
              "empty = the mesh paths recorded in the model file"),
    ParamSpec("init_poses_topic", "", "initial poses (pose_ros/ObjectPoseArray) to refine on depth when "
              "model_file is empty, e.g. from another detector"),
    ParamSpec("enabled_objects", [], "object names to estimate; empty = all objects in the model (applied "
              "live; the ~/set_object_enabled service switches single objects without changing this parameter)",
              live=True),
    ParamSpec("score_threshold", 0.3, "poses scoring below this are not published", min=0.0, max=1.0),
    ParamSpec("use_icp", True, "refine poses with ICP on the depth image"),
    ParamSpec("appearance_check", True, "render-and-compare check (texture, silhouette, depth) ranking the "
              "depth-search hypotheses and near-symmetric twins; off = faster, geometry only"),
    ParamSpec("depth_objectness", True, "drop instances that do not stand out of the scene's large planes (print, "
              "screens, boards) or are much larger than the object in depth, and propose objects where depth "
              "says something stands out (objects/depth_objectness.py)"),
    ParamSpec("score_calibration", True, "use the pose score calibration stored in the model file (probability of a "
              "right pose; `pose-ros calibrate-score`); off = the uncalibrated depth score"),
    ParamSpec("class_hypotheses", 2, "classes tried per found object: its fragments as the network names them, "
              "and the whole object as its most likely classes when they disagree (real images); 1 = the "
              "network's class split only", min=1, max=5),
    ParamSpec("search_max_hypotheses", 24, "full detection: most rotation hypotheses the depth search refines "
              "and render-and-compares for one instance while none looks right (8 = faster, less accurate)",
              min=1, max=240),
    ParamSpec("icp_max_correspondence_m", 0.02, "coarsest ICP correspondence distance", min=0.001, max=0.2),
    ParamSpec("tracking", True, "refine from the previous poses (skip detection while tracks hold)"),
    ParamSpec("detect_aside", True, "with tracking: full detections run in a separate process while every frame "
              "is tracked, so poses keep the camera rate (new objects appear after one detection time); "
              "false = detect in line, stalling the pose stream for each detection"),
    ParamSpec("tracking_lost_in_line", False, "with detect_aside: a frame that lost a track is re-detected in "
              "line, so the object is not missing for a detection time, at the cost of stalling the pose stream "
              "for it; false = every detection aside (camera-rate poses; a lost object returns a detection later)"),
    ParamSpec("tracking_lost_search_jobs", 4, "with detect_aside: the class of a lost track (or of a detection that "
              "could not be carried onto the newest frame) is looked for alone, between the periodic full detections, "
              "until found or this many detections missed it: one class takes a fraction of a full detection's time; "
              "0 = off (only full detections)", min=0, max=1000),
    ParamSpec("tracking_hold_lost_frames", 0, "with tracking: a lost track is held (not published) this many "
              "frames and revived with its id when ICP from its pose finds the object again (an occluder passed); "
              "0 = off (default: it made the node's poses worse where frames are dropped)", min=0, max=10000),
    ParamSpec("tracking_max_gap_s", 0.0, "with tracking and detect_aside: poses older than this (stamps of the "
              "frames processed) are not refined by ICP but re-detected: after a stall the objects have moved; 0 = off "
              "(default: where merging a detection takes longer than this, tracks never survive it)",
              min=0.0, max=3600.0),
    ParamSpec("tracking_predict_motion", True, "with tracking: ICP starts from each track's pose moved at its "
              "velocity (measured on the frame stamps), not from its last pose: with a moving camera and dropped "
              "frames the objects are centimetres away by the next processed frame"),
    ParamSpec("tracking_redetect_every", 15, "with tracking: run the network at least every N frames (new objects)",
              min=1, max=10000),
    ParamSpec("tracking_twin_check_every", 3, "with tracking and appearance_check: render-and-compare one track's "
              "near-symmetric twins every N frames (fixes a wrong turn, catches drift); 0 = off", min=0, max=10000),
    ParamSpec("status_period_s", 10.0, "period of the status log line (frames, time per frame, tracking losses "
              "by reason, drops)", min=0.5, max=3600.0, live=True),
    ParamSpec("max_rate_hz", 30.0, "upper bound on processed frames per second", min=0.1, max=1000.0, live=True),
    ParamSpec("device", "auto", "network device: auto | cpu | cuda"),
    ParamSpec("frame_prefix", "", "prefix of the TF child frames <prefix><class>_<instance> (<class>: the class "
              "name as a valid ROS name, as in the ~/<class>/pose topics)", live=True),
    ParamSpec("color_topic", COLOR_TOPIC, "colour image (rgb8/bgr8)"),
    ParamSpec("depth_topic", DEPTH_TOPIC, "depth aligned to colour (16UC1 mm or 32FC1 m)"),
    ParamSpec("info_topic", INFO_TOPIC, "colour camera_info"),
    ParamSpec("image_transport", "raw", "colour transport: raw (sensor_msgs/Image on color_topic) | compressed "
              "(JPEG/PNG sensor_msgs/CompressedImage on <color_topic>/compressed, as image_transport names it; "
              "for remote operation over Wi-Fi)"),
    ParamSpec("depth_image_transport", "raw", "depth transport: raw (Image on depth_topic) | compressedDepth "
              "(image_transport's PNG CompressedImage on <depth_topic>/compressedDepth; 16UC1 exact, 32FC1 quantised)"),
    ParamSpec("image_qos", "auto", "camera subscription reliability: auto (match the publisher: best_effort if "
              "it publishes best-effort, else reliable) | reliable | best_effort"),
    ParamSpec("sync_slop_s", 0.02, "max stamp difference between colour, depth and camera_info", min=0.0, max=1.0),
    ParamSpec("sync_queue_size", 5, "per-topic synchroniser queue length", min=1, max=100),
    ParamSpec("publish_markers", True, "publish ~/markers (mesh + label per instance; off deletes the shown ones)",
              live=True),
    ParamSpec("publish_debug_image", True, "publish ~/debug_image (contours and axes)", live=True),
    ParamSpec("marker_mesh_scheme", "file", "mesh marker resource scheme: file (absolute path) | package", live=True),
]

CLASS_COLOURS = [(0.9, 0.3, 0.2), (0.2, 0.7, 0.3), (0.2, 0.4, 0.9), (0.9, 0.8, 0.2), (0.7, 0.3, 0.8),
                 (0.2, 0.8, 0.8), (0.9, 0.5, 0.1), (0.5, 0.5, 0.5)]


def _finite(x: float, default: float = 0.0) -> float:
    """Message fields get 0 instead of NaN/inf (e.g. no ICP ran): consumers gate on icp_applied."""
    x = float(x)
    return x if np.isfinite(x) else default


class ObjectPoseNode(Node):
    def __init__(self) -> None:
        super().__init__("object_pose")
        self.p = declare_parameters(self, PARAMETERS, check=self._check_parameter, apply=self._apply_parameter)
        _check_frame_prefix(self.p["frame_prefix"])
        image_qos_mode(self.p["image_qos"])   # a wrong value stops the node before the model loads
        color_type, self.color_in = transport_topic(self.p["color_topic"], image_transport_name(self.p["image_transport"]))
        depth_type, self.depth_in = transport_topic(
            self.p["depth_topic"], image_transport_name(self.p["depth_image_transport"], depth=True))
        self.drops = DropLog(self.get_logger(), "/diagnostics")
        self.processed = 0
        self.stage_ms: deque[dict] = deque(maxlen=100)
        self.refiner = None
        self.recipe = None
        self.estimator = self._load_estimator()
        self._seeds: list = []
        self._seeds_fresh = False
        self.enabled = set(self.p["enabled_objects"]) or set(self.estimator.class_names)
        unknown = self.enabled - set(self.estimator.class_names)
        if unknown:
            raise ValueError(f"enabled_objects names {sorted(unknown)} that are not in the model "
                             f"(it has {self.estimator.class_names})")
        self.colour_of = {n: CLASS_COLOURS[i % len(CLASS_COLOURS)] for i, n in enumerate(self.estimator.class_names)}
        # Class names as topic and TF frame names: any name is valid, no two classes share one (names.py).
        # Colliding names get their class_id (1-based position, the class_id field of ~/poses) appended.
        self.ros_name = unique_ros_name_tokens(self.estimator.class_names)
        renamed = {n: t for n, t in self.ros_name.items() if n != t}
        if renamed:
            self.get_logger().info(f"class names made valid ROS names for topics and TF frames: {renamed}")
        self._tracks = None
        self.tracker = None
        self.detector = None
        if self.refiner is None and self.p["tracking"]:
            from pose_ros.objects.detection_worker import ProcessDetector
            from pose_ros.objects.tracking import PoseTracker, TrackingConfig
            self.detector = ProcessDetector(self.recipe) if self.p["detect_aside"] else None
            self.tracker = PoseTracker(self.estimator, TrackingConfig(
                redetect_every=int(self.p["tracking_redetect_every"]),
                twin_check_every=int(self.p["tracking_twin_check_every"]),
                lost_in_line=bool(self.p["tracking_lost_in_line"]),
                lost_search_jobs=int(self.p["tracking_lost_search_jobs"]),
                hold_lost_frames=int(self.p["tracking_hold_lost_frames"]),
                max_gap_s=float(self.p["tracking_max_gap_s"]),
                predict_motion=bool(self.p["tracking_predict_motion"])), detector=self.detector)
        self._reset_requested = False

        out_qos = result_qos()
        self.poses_pub = self.create_publisher(ObjectPoseArray, "~/poses", out_qos)
        self.pose_array_pub = self.create_publisher(PoseArray, "~/pose_array", out_qos)
        self.class_pubs = {n: self.create_publisher(PoseStamped, f"~/{self.ros_name[n]}/pose", out_qos)
                           for n in self.estimator.class_names}
        self.markers_pub = self.create_publisher(MarkerArray, "~/markers", out_qos)
        self.debug_pub = self.create_publisher(Image, "~/debug_image", sensor_qos(depth=1))
        self.tf = TfPublisher(self)
        self._marker_ids: set[tuple[str, int]] = set()

        self.sync = ApproximateTimeSync(3, int(self.p["sync_slop_s"] * 1e9), self._on_frame,
                                        queue_size=int(self.p["sync_queue_size"]))
        self.camera_subs = CameraSubscriptions(self, self.p["image_qos"], depth=5)
        self.camera_subs.add(color_type, self.color_in, lambda m: self._offer(0, m))
        self.camera_subs.add(depth_type, self.depth_in, lambda m: self._offer(1, m))
        self.camera_subs.add(CameraInfo, self.p["info_topic"], lambda m: self._offer(2, m))
        if self.p["init_poses_topic"]:
            self.create_subscription(ObjectPoseArray, self.p["init_poses_topic"], self._on_init_poses, out_qos)
        self.create_service(Trigger, "~/reset_tracking", self._on_reset)
        self.create_service(SetObjectEnabled, "~/set_object_enabled", self._on_set_enabled)

        self._pending: tuple | None = None
        self._pending_lock = threading.Condition()
        self._last_process_start = 0.0
        self._stop = False
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        self._last_info_ns = time.monotonic_ns()
        self._rate = RateMeter()
        self.diagnostics = NodeDiagnostics(self, self._diagnostics)
        self.create_timer(5.0, self._check_inputs)
        self._period_ms: list[float] = []           # frame times and losses since the last status line:
        self._lost_by_reason: Counter = Counter()   # written by the worker, read by the timer (_status_lock)
        self._status_lock = threading.Lock()
        self._status_timer = self.create_timer(float(self.p["status_period_s"]), self._status)
        self.get_logger().info(
            f"object pose: model {self.model_path}, objects {sorted(self.enabled)}, ICP {'on' if self.p['use_icp'] else 'off'}, "
            f"tracking {'on' if self.p['tracking'] else 'off'}, {self.tf.describe()}; "
            f"listening on {self.color_in} + {self.depth_in} (image_qos {self.p['image_qos']})")

    # ------------------------------------------------------------------ setup
    def _meshes_root(self) -> Path:
        from pose_ros.resources import resolve
        root = resolve(self.p["meshes_dir"])
        if not root.is_dir():
            raise FileNotFoundError(f"meshes_dir {root} is not a folder")
        return root

    def _load_models(self) -> list:
        from pose_ros.core.object_model import load_bop_models, load_object_dir
        root = self._meshes_root()
        return load_bop_models(root) if (root / "models_info.json").is_file() else load_object_dir(root)

    def _recorded_mesh_roots(self, model_path: Path) -> list[str]:
        """meshes_dir empty: the folders holding the training meshes at the mesh_source paths the model
        file records (meshes/<name> folders or BOP obj_XXXXXX.ply files; relative = package share)."""
        from pose_ros.objects.model_file import load_model_file
        from pose_ros.resources import resolve
        roots: list[str] = []
        for spec in load_model_file(model_path).objects:
            src = resolve(spec.mesh_source) if spec.mesh_source else None
            if src is not None and ((src / "object.yaml").is_file() or src.is_file()) and str(src.parent) not in roots:
                roots.append(str(src.parent))
        return roots

    def _load_estimator(self):
        from pose_ros.resources import resolve

        if not self.p["model_file"]:
            if not (self.p["meshes_dir"] and self.p["init_poses_topic"]):
                raise ValueError("model_file is empty: depth-only refinement needs meshes_dir and init_poses_topic")
            from pose_ros.objects.depth_refiner import DepthRefiner
            self.model_path = None
            self.refiner = DepthRefiner(self._load_models(), use_icp=bool(self.p["use_icp"]),
                                        score_threshold=float(self.p["score_threshold"]))
            self._models_by_name = dict(self.refiner.models)
            return self.refiner

        path = resolve(self.p["model_file"])
        if not path.is_file():
            raise FileNotFoundError(
                f"model file '{self.p['model_file']}' not found (looked at {path}); train one with "
                "`pose-ros train --meshes meshes --out models/demo_objects.pt` or set model_file")
        self.model_path = path
        from pose_ros.objects.depth_search import DepthSearchConfig
        from pose_ros.objects.detection_worker import EstimatorRecipe
        from pose_ros.objects.icp import IcpConfig

        device = self.p["device"]
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        steps = len(IcpConfig().max_correspondence_m)
        coarse = float(self.p["icp_max_correspondence_m"])
        kwargs = {"use_icp": bool(self.p["use_icp"]), "score_threshold": float(self.p["score_threshold"]),
                  "device": device, "appearance_check": bool(self.p["appearance_check"]),
                  "depth_objectness": bool(self.p["depth_objectness"]),
                  "use_score_calibration": bool(self.p["score_calibration"]),
                  "class_hypotheses": int(self.p["class_hypotheses"]),
                  "depth_search_config": DepthSearchConfig(max_verified=int(self.p["search_max_hypotheses"])),
                  "icp_config": IcpConfig(max_correspondence_m=tuple(coarse / (2 ** i) for i in range(steps)))}
        if self.p["tracking"] and self.p["detect_aside"]:
            kwargs["threads"] = 1      # the detector process keeps to one core, tracking has the other
        meshes = [str(self._meshes_root())] if self.p["meshes_dir"] else self._recorded_mesh_roots(path)
        self.recipe = EstimatorRecipe(str(path), meshes, kwargs)
        estimator = self.recipe.build()
        self._models_by_name = {o.name: estimator.models[i + 1] for i, o in enumerate(estimator.objects)
                                if (i + 1) in estimator.models}
        return estimator

    def frame_id(self, class_name: str, instance_id: int) -> str:
        """TF child frame of one object instance: <frame_prefix><class as ROS name>_<instance>."""
        token = self.ros_name.get(class_name) or unique_ros_name_tokens([class_name])[class_name]
        return f"{self.p['frame_prefix']}{token}_{int(instance_id)}"

    # ------------------------------------------------------------------ live parameters
    def _check_parameter(self, name: str, value) -> str | None:
        """Why a live parameter's new value is refused (None = accepted); type and range are checked already."""
        if name == "enabled_objects":
            unknown = sorted(set(value) - set(self.estimator.class_names))
            if unknown:
                return f"enabled_objects names {unknown}, which are not in the model (it has {self.estimator.class_names})"
        elif name == "marker_mesh_scheme" and value not in ("file", "package"):
            return f"marker_mesh_scheme must be file or package, got {value!r}"
        elif name == "frame_prefix":
            try:
                _check_frame_prefix(value)
            except ValueError as exc:
                return str(exc)
        return None

    def _apply_parameter(self, name: str, value) -> None:
        """Live parameters the node does not simply read from self.p while it runs."""
        if name == "enabled_objects":
            self.enabled = set(value) or set(self.estimator.class_names)
        elif name == "status_period_s":
            self._status_timer.timer_period_ns = int(float(value) * 1e9)
            self._status_timer.reset()

    # ------------------------------------------------------------------ input
    def _offer(self, index: int, msg) -> None:
        if index == 2:
            self._last_info_ns = time.monotonic_ns()
        self.sync.add(index, stamp_to_ns(msg.header.stamp), msg)

    def _on_init_poses(self, msg: ObjectPoseArray) -> None:
        from pose_ros.nodes.ros_conversions import pose_to_T
        from pose_ros.objects.depth_refiner import PoseSeed
        seeds = []
        for o in msg.objects:
            try:
                seeds.append(PoseSeed(o.class_name, o.instance_id, pose_to_T(o.pose.pose)))
            except ValueError as exc:
                self.drops.record("bad initial pose", str(exc))
        self._seeds = seeds
        self._seeds_fresh = True

    def _on_frame(self, colour: Image | CompressedImage, depth: Image | CompressedImage, info: CameraInfo) -> None:
        with self._pending_lock:
            if self._pending is not None:
                self.drops["superseded (processing slower than camera)"] += 1
            self._pending = (colour, depth, info)
            self._pending_lock.notify()

    def _check_inputs(self) -> None:
        counts = self.sync.stats.received
        if counts[0] > 0 and counts[2] == 0:
            self.drops.record("no camera_info", f"no messages on {self.p['info_topic']}; is the driver publishing it?")
        if counts[0] > 0 and counts[1] == 0:
            self.drops.record("no depth", f"no messages on {self.depth_in}; enable aligned depth in the driver"
                              + (" and its compressedDepth transport" if self.depth_in != self.p["depth_topic"] else ""))

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while not self._stop:
            with self._pending_lock:
                while self._pending is None and not self._stop:
                    self._pending_lock.wait(timeout=0.5)
                if self._stop:
                    return
                frame, self._pending = self._pending, None
            min_period = 1.0 / float(self.p["max_rate_hz"])
            wait = self._last_process_start + min_period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_process_start = time.monotonic()
            try:
                self._process(*frame)
            except Exception as exc:  # never let one bad frame kill the node
                if not self.context.ok():  # shutting down: publishers are gone, not an estimator fault
                    return
                self.drops.record("estimator error", repr(exc))

    def _decode(self, colour: Image | CompressedImage, depth: Image | CompressedImage, info: CameraInfo):
        try:
            rgb = decode_rgb(colour)
            depth_m = decode_depth_m(depth)
        except ImageConversionError as exc:
            self.drops.record("bad image", str(exc))
            return None
        try:
            camera = camera_info_to_camera(info)
        except CameraInfoError as exc:
            self.drops.record("bad camera_info", str(exc))
            return None
        if rgb.shape[:2] != depth_m.shape:
            self.drops.record("colour/depth size mismatch",
                       f"colour {rgb.shape[1]}x{rgb.shape[0]} vs depth {depth_m.shape[1]}x{depth_m.shape[0]}: "
                       "subscribe to depth aligned to colour")
            return None
        if (camera.width, camera.height) != (rgb.shape[1], rgb.shape[0]):
            self.drops.record("camera_info size mismatch",
                       f"camera_info {camera.width}x{camera.height} vs image {rgb.shape[1]}x{rgb.shape[0]}")
            return None
        if not np.any(depth_m > 0):
            self.drops["depth all zero (PnP only, lowered score)"] += 1
        return rgb, depth_m, camera

    def _process(self, colour: Image | CompressedImage, depth: Image | CompressedImage, info: CameraInfo) -> None:
        decoded = self._decode(colour, depth, info)
        if decoded is None:
            return
        rgb, depth_m, camera = decoded
        if self._reset_requested:
            self._tracks = None
            if self.tracker is not None:
                self.tracker.reset()
            self._reset_requested = False
        t0 = time.perf_counter()
        prev = self._tracks if self.p["tracking"] else None
        if self.refiner is not None:
            from pose_ros.objects.depth_refiner import PoseSeed
            seeds, fresh = self._seeds, self._seeds_fresh
            self._seeds_fresh = False
            if prev:  # track from the last refined poses; a fresh seed for an instance replaces its track
                tracks = {(r.class_name, r.instance_id): PoseSeed(r.class_name, r.instance_id, r.T_cam_obj)
                          for r in prev}
                by_key = {(sd.class_name, sd.instance_id): sd for sd in seeds}
                merged = {**by_key, **tracks} if not fresh else {**tracks, **by_key}
                seeds = list(merged.values())
            results = self.refiner.refine(depth_m, camera, seeds, enabled_classes=sorted(self.enabled))
        elif self.tracker is not None:  # ICP from the last poses; the network runs when a track is lost
            results = self.tracker.update(rgb, depth_m, camera, enabled_classes=sorted(self.enabled),
                                          stamp_s=stamp_to_ns(colour.header.stamp) * 1e-9)
            with self._status_lock:
                self._lost_by_reason.update(_reason_kind(r) for r in self.tracker.last_lost_reasons)
        else:
            results = self.estimator.estimate(rgb, depth_m, camera, enabled_classes=sorted(self.enabled), prev=prev)
        total_ms = (time.perf_counter() - t0) * 1e3
        self._tracks = results if self.p["tracking"] else None
        self.processed += 1
        self._rate.tick()
        self.stage_ms.append({"total": total_ms})
        with self._status_lock:
            self._period_ms.append(total_ms)
        self._publish(colour.header, results, rgb, camera)

    # ------------------------------------------------------------------ output
    def _result_msg(self, r) -> ObjectPose:
        msg = ObjectPose(class_name=r.class_name, class_id=int(r.class_id), instance_id=int(r.instance_id),
                         score=float(r.score))
        msg.pose.pose = T_to_pose(r.T_cam_obj)
        from pose_ros.objects.covariance import to_ros_covariance
        msg.pose.covariance = to_ros_covariance(r.covariance)
        s = r.stats
        t = s.time_ms or {}
        st = PoseRefinementStats(
            source=PoseRefinementStats.SOURCE_TRACKING if s.source == "tracking" else PoseRefinementStats.SOURCE_DETECTION,
            pnp_num_keypoints=int(s.pnp_keypoints), pnp_num_inliers=int(s.pnp_inliers),
            pnp_reprojection_error_px=_finite(s.reprojection_error_px), icp_applied=bool(s.icp_applied),
            icp_fitness=_finite(s.icp_fitness), icp_inlier_rmse_m=_finite(s.icp_rmse_m),
            icp_iterations=int(s.icp_iterations), icp_correction_translation_m=_finite(s.icp_correction_translation_m),
            icp_correction_rotation_rad=_finite(s.icp_correction_rotation_rad),
            mask_depth_agreement=_finite(s.depth_agreement), time_network_ms=_finite(t.get("network", 0.0)),
            time_pnp_ms=_finite(t.get("pnp", 0.0)), time_icp_ms=_finite(t.get("icp", 0.0)))
        msg.refinement = st
        return msg

    def _publish(self, header: Header, results, rgb: np.ndarray, camera) -> None:
        out = ObjectPoseArray(header=header, objects=[self._result_msg(r) for r in results])
        self.poses_pub.publish(out)
        self.pose_array_pub.publish(PoseArray(header=header, poses=[o.pose.pose for o in out.objects]))
        best: dict[str, ObjectPose] = {}
        for o in out.objects:
            if o.class_name not in best or o.score > best[o.class_name].score:
                best[o.class_name] = o
        for name, o in best.items():
            if name in self.class_pubs:
                self.class_pubs[name].publish(PoseStamped(header=header, pose=o.pose.pose))
        if results:
            from geometry_msgs.msg import TransformStamped
            self.tf.send([TransformStamped(header=header, child_frame_id=self.frame_id(r.class_name, r.instance_id),
                                           transform=T_to_transform(r.T_cam_obj)) for r in results])
        if self.p["publish_markers"]:
            self.markers_pub.publish(self._markers(header, results))
        elif self._marker_ids:   # switched off while running: remove the markers shown
            self.markers_pub.publish(MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)]))
            self._marker_ids = set()
        if self.p["publish_debug_image"] and self.debug_pub.get_subscription_count() > 0:
            self.debug_pub.publish(numpy_to_image(self._debug_image(rgb, camera, results), "rgb8", header))

    def _mesh_uri(self, name: str) -> str:
        model = self._models_by_name.get(name)
        path = getattr(model, "source_path", None) if model is not None else None
        if not path and self.refiner is None:
            spec = next((o for o in self.estimator.objects if o.name == name), None)
            path = spec.mesh_source if spec is not None else None
        if not path or not Path(path).is_file():
            return ""
        path = Path(path).resolve()
        if self.p["marker_mesh_scheme"] == "package":
            from pose_ros.resources import share_dir
            try:
                return f"package://pose_ros/{path.relative_to(share_dir())}"
            except ValueError:
                pass
        return f"file://{path}"

    def _markers(self, header: Header, results) -> MarkerArray:
        arr = MarkerArray()
        current = set()
        for r in results:
            key = (r.class_name, int(r.instance_id))
            current.add(key)
            mid = self.estimator.class_names.index(r.class_name) * 1000 + int(r.instance_id)
            colour = self.colour_of.get(r.class_name, (0.8, 0.8, 0.8))
            mesh = Marker(header=header, ns=f"{r.class_name}/mesh", id=mid, action=Marker.ADD)
            uri = self._mesh_uri(r.class_name)
            if uri:
                mesh.type = Marker.MESH_RESOURCE
                mesh.mesh_resource = uri
                model = self._models_by_name.get(r.class_name)
                mesh.scale.x = mesh.scale.y = mesh.scale.z = float(model.source_scale) if model is not None else 1.0
                mesh.mesh_use_embedded_materials = True
            else:
                mesh.type = Marker.SPHERE
                d = self._diameter(r.class_name)
                mesh.scale.x = mesh.scale.y = mesh.scale.z = d
            mesh.pose = T_to_pose(r.T_cam_obj)
            mesh.color.r, mesh.color.g, mesh.color.b = colour
            mesh.color.a = 0.8
            text = Marker(header=header, ns=f"{r.class_name}/label", id=mid, action=Marker.ADD, type=Marker.TEXT_VIEW_FACING)
            text.pose = T_to_pose(r.T_cam_obj)
            text.pose.position.y -= 0.08  # above the object in the optical frame (y down)
            text.scale.z = 0.03
            text.color.r = text.color.g = text.color.b = text.color.a = 1.0
            text.text = f"{r.class_name} #{r.instance_id} {r.score:.2f}"
            arr.markers += [mesh, text]
        for name, inst in self._marker_ids - current:
            mid = self.estimator.class_names.index(name) * 1000 + inst
            for ns in (f"{name}/mesh", f"{name}/label"):
                arr.markers.append(Marker(header=header, ns=ns, id=mid, action=Marker.DELETE))
        self._marker_ids = current
        return arr

    def _debug_image(self, rgb: np.ndarray, camera, results) -> np.ndarray:
        from pose_ros.objects.pose_overlay import draw_poses

        return draw_poses(rgb, camera, results, self._models_by_name, self.colour_of)

    def _diameter(self, name: str) -> float:
        model = self._models_by_name.get(name)
        return float(model.diameter_m) if model is not None else 0.1

    # ------------------------------------------------------------------ services, diagnostics
    def _on_reset(self, request, response):
        self._reset_requested = True
        response.success = True
        response.message = "tracking reset: the next frame is detected from scratch"
        return response

    def _on_set_enabled(self, request, response):
        names = self.estimator.class_names
        targets = names if request.class_name == "*" else [request.class_name]
        if request.class_name != "*" and request.class_name not in names:
            response.success = False
            response.message = f"unknown object '{request.class_name}'; the model has {names}"
            return response
        for n in targets:
            (self.enabled.add if request.enabled else self.enabled.discard)(n)
        response.success = True
        response.message = f"enabled: {sorted(self.enabled)}"
        return response

    def _status(self) -> None:
        """What a user watching the log needs: is it keeping up, and why are objects dropping out."""
        with self._status_lock:
            ms, self._period_ms = sorted(self._period_ms), []
            lost_by_reason = self._lost_by_reason.most_common()
        timing = f"{len(ms)} frames, p50 {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} ms" if ms else "no frames"
        tracking = ""
        if self.tracker is not None:
            c = dict(self.tracker.counters)
            lost = ", ".join(f"{k} {v}" for k, v in lost_by_reason) or "none"
            rest = "".join(f", {k} {v}" for k, v in sorted(c.items()) if v and k not in ("tracked", "detect", "lost"))
            tracking = (f"; tracking: {c.get('tracked', 0)} poses tracked, {c.get('detect', 0)} detections, "
                        f"{c.get('lost', 0)} lost ({lost}){rest}")
        drops = self.drops.summary()
        self.get_logger().info(f"processed {self.processed} ({timing}){tracking}; drops: {drops}")

    def _diagnostics(self) -> DiagnosticReport:
        stats = self.sync.stats
        times = sorted(s["total"] for s in list(self.stage_ms)) or [float("nan")]
        rate = self._rate.rate_hz()
        drops = dict(self.drops)
        values = {"frames_processed": self.processed, "rate_hz": round(rate, 2),
                  "frames_received": " / ".join(str(n) for n in stats.received) + " (colour / depth / camera_info)",
                  "sync_matched_sets": stats.matched_sets,
                  "sync_dropped_unmatched": stats.dropped_unmatched, "sync_dropped_out_of_order": stats.dropped_out_of_order,
                  "sync_time_jumps": stats.time_jumps, "estimate_ms_p50": round(times[len(times) // 2], 1),
                  **({f"tracking_{k}": v for k, v in self.tracker.counters.items()} if self.tracker else {}),
                  **({"detector_ready": self.detector.ready, "detector_busy": self.detector.busy,
                      "detector_restarts": self.detector.restarts, "detector_errors": self.detector.errors,
                      "detector_last_error": self.detector.last_error or ""} if self.detector else {}),
                  "objects_enabled": ", ".join(sorted(self.enabled)), "tf": self.tf.backend or "off",
                  **drop_values(drops)}
        level = WARN if any(k.startswith(("bad", "no ", "colour/depth", "camera_info")) for k in drops) else OK
        return DiagnosticReport(f"{self.processed} frames processed ({rate:.1f} Hz), {sum(drops.values())} dropped",
                                values, level)

    def destroy_node(self) -> None:
        # Also called by rclpy.shutdown() on a node whose constructor failed (a bad parameter): only
        # what was built is stopped.
        self._stop = True
        if hasattr(self, "_pending_lock"):
            with self._pending_lock:
                self._pending_lock.notify_all()
            self._worker.join(timeout=5.0)
        if getattr(self, "detector", None) is not None:
            self.detector.close()
        super().destroy_node()


def _check_frame_prefix(prefix: str) -> None:
    """TF frame ids: tf2 refuses a leading '/', and a space would make names no tool can type."""
    if prefix.startswith("/") or any(c.isspace() for c in prefix):
        raise ValueError(f"frame_prefix {prefix!r} must not start with '/' or contain spaces (TF frame ids)")


def _reason_kind(reason: str) -> str:
    """'jump 0.061 m' -> 'jump': loss reasons counted by kind, not by value."""
    return re.match(r"[^\d]*", reason).group().strip(" :->") or reason


def main(args: list[str] | None = None) -> int:
    return run_node(ObjectPoseNode, args, threads=3)


if __name__ == "__main__":
    sys.exit(main())
