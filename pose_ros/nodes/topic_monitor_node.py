"""Live monitor: what is arriving, how fast, how late, and how right.

Subscribes to the camera topics, the ground truth and (when present) the object poses, and
prints a compact report every few seconds: rates, frame sizes/encodings, objects in view,
pose error against ground truth (translation, rotation, ADD(-S) / diameter) and end-to-end
latency (receive time - input stamp), and how long an object coming into view waits for its first
right pose (``eval/appearance_latency.py``). With `summary_file` it also writes the totals as JSON on
exit, which is what the latency benchmark and the tests read. /diagnostics: the rates it measures and
the pose score so far. `report_period_s` is applied live (`ros2 param set`); the other parameters are read
at start-up and a set is refused with that reason.
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from pose_ros.core.transforms import rotation_angle_rad
from pose_ros.eval.appearance_latency import AppearanceLatency
from pose_ros.msg import ObjectPoseArray
from pose_ros.nodes.diagnostics import OK, WARN, DiagnosticReport, NodeDiagnostics
from pose_ros.nodes.image_conversions import stamp_to_ns
from pose_ros.nodes.params import ParamSpec, declare_parameters
from pose_ros.nodes.qos import CameraSubscriptions, image_qos_mode, result_qos
from pose_ros.nodes.ros_conversions import pose_to_T
from pose_ros.nodes.runner import run_node
from pose_ros.nodes.topics import COLOR_TOPIC, DEPTH_TOPIC, GROUND_TRUTH_TOPIC, INFO_TOPIC

PARAMETERS = [
    ParamSpec("color_topic", COLOR_TOPIC, "colour image topic"),
    ParamSpec("depth_topic", DEPTH_TOPIC, "aligned depth topic"),
    ParamSpec("info_topic", INFO_TOPIC, "camera_info topic"),
    ParamSpec("ground_truth_topic", GROUND_TRUTH_TOPIC, "ground-truth poses (pose_ros/ObjectPoseArray)"),
    ParamSpec("object_poses_topic", "", "estimated poses to score (pose_ros/ObjectPoseArray); empty = none"),
    ParamSpec("meshes_dir", "", "object meshes for ADD(-S); empty = demo objects; missing = translation/rotation only"),
    ParamSpec("report_period_s", 5.0, "seconds between printed reports", min=0.5, max=3600.0, live=True),
    ParamSpec("summary_file", "", "write totals as JSON here on exit (and at each report)"),
    ParamSpec("errors_file", "", "append one JSON line per scored ground-truth instance here (stamp, class, "
              "found, errors): the run's timeline, e.g. how long a wrong first pose lasted"),
    ParamSpec("image_qos", "auto", "camera subscription reliability: auto (match the publisher: best_effort if "
              "it publishes best-effort, else reliable) | reliable | best_effort"),
]


class _Rate:
    """Messages per second over a sliding window of arrival times."""

    def __init__(self, window: int = 100) -> None:
        self.times: deque[float] = deque(maxlen=window)
        self.count = 0

    def tick(self) -> None:
        self.times.append(time.monotonic())
        self.count += 1

    def hz(self) -> float:
        if len(self.times) < 2 or self.times[-1] == self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def _per_class(errors: list[dict]) -> dict:
    """{class: "found/scored, ADD(-S) recall of the found"}: one object's wrong pose shows by name."""
    out = {}
    for name in sorted({e["class"] for e in errors}):
        mine = [e for e in errors if e["class"] == name]
        add = [e["add_over_d"] < 0.1 for e in mine if e.get("found") and "add_over_d" in e]
        recall = f"{np.mean(add):.0%} right" if add else "n/a"
        out[name] = f"found {sum(e.get('found', False) for e in mine)}/{len(mine)}, {recall}"
    return out


class TopicMonitorNode(Node):
    def __init__(self) -> None:
        super().__init__("topic_monitor")
        self.p = declare_parameters(self, PARAMETERS, apply=self._apply_parameter)
        image_qos_mode(self.p["image_qos"])
        self.rates: dict[str, _Rate] = defaultdict(_Rate)
        self.last_image: dict[str, str] = {}
        self.objects_in_view: list[str] = []
        self.gt_by_stamp: dict[int, ObjectPoseArray] = {}
        self.poses_waiting_for_gt: dict[int, tuple[ObjectPoseArray, int]] = {}   # arrived before their truth (+ when)
        self.appearance = AppearanceLatency()     # object coming into view -> its first right pose
        self.latencies_ms: list[float] = []
        self.errors: list[dict] = []
        self.unmatched_gt = 0
        self._errors_out = self._open_errors_file()
        self.models = self._load_models()
        self.camera_subs = CameraSubscriptions(self, self.p["image_qos"])
        self.camera_subs.add(Image, self.p["color_topic"], lambda m: self._on_image("color", m))
        self.camera_subs.add(Image, self.p["depth_topic"], lambda m: self._on_image("depth", m))
        self.camera_subs.add(CameraInfo, self.p["info_topic"], lambda m: self.rates["camera_info"].tick())
        self.create_subscription(ObjectPoseArray, self.p["ground_truth_topic"], self._on_gt, result_qos())
        if self.p["object_poses_topic"]:
            self.create_subscription(ObjectPoseArray, self.p["object_poses_topic"], self._on_poses, result_qos())
        self._report_timer = self.create_timer(float(self.p["report_period_s"]), self.report)
        self.diagnostics = NodeDiagnostics(self, self._diagnostics)

    def _apply_parameter(self, name: str, value) -> None:
        if name == "report_period_s":
            self._report_timer.timer_period_ns = int(float(value) * 1e9)
            self._report_timer.reset()

    def _diagnostics(self) -> DiagnosticReport:
        rates = {k: round(v.hz(), 2) for k, v in list(self.rates.items())}
        found = sum(1 for e in self.errors if e.get("found"))
        values = {**{f"rate_hz: {k}": v for k, v in sorted(rates.items())},
                  **{f"count: {k}": v.count for k, v in sorted(list(self.rates.items()))},
                  "gt_instances_scored": len(self.errors), "gt_instances_found": found,
                  "report_period_s": self._report_timer.timer_period_ns * 1e-9,
                  "camera_qos": self.camera_subs.summary()}
        colour = self.rates.get("color")
        if colour is None or not colour.times or time.monotonic() - colour.times[-1] > 3.0:
            return DiagnosticReport(f"no colour frames on {self.p['color_topic']} (for 3 s or more)", values, WARN)
        return DiagnosticReport(f"colour {rates.get('color', 0.0):.1f} Hz" + (
            f", found {found}/{len(self.errors)} ground-truth instances" if self.p["object_poses_topic"] else ""),
            values, OK)

    def _open_errors_file(self):
        """The timeline file, opened once (an entry per scored instance, ~30/s in the demo), line-buffered
        so that it can be read while the monitor runs; None when not asked for."""
        if not self.p["errors_file"]:
            return None
        try:
            return open(self.p["errors_file"], "a", buffering=1)
        except OSError as exc:
            raise ValueError(f"errors_file {self.p['errors_file']!r} cannot be opened: {exc}") from exc

    def _load_models(self) -> dict:
        """{class name: ObjectModel} for ADD(-S), if the meshes load."""
        try:
            from pose_ros.core.object_model import load_object_dir
            from pose_ros.resources import meshes_dir
            root = Path(self.p["meshes_dir"]) if self.p["meshes_dir"] else meshes_dir()
            return {m.name: m for m in load_object_dir(root)}
        except Exception as exc:  # ADD needs meshes; without them translation/rotation still work
            self.get_logger().warn(f"no meshes for ADD(-S) ({exc}); reporting translation/rotation error only")
            return {}

    def _on_image(self, kind: str, msg: Image) -> None:
        self.rates[kind].tick()
        self.last_image[kind] = f"{msg.width}x{msg.height} {msg.encoding}"

    def _on_gt(self, msg: ObjectPoseArray) -> None:
        self.rates["ground_truth"].tick()
        self.objects_in_view = [f"{o.class_name}({o.score:.0%} visible)" for o in msg.objects]
        stamp_ns = stamp_to_ns(msg.header.stamp)
        self.gt_by_stamp[stamp_ns] = msg
        while len(self.gt_by_stamp) > 200:
            self.gt_by_stamp.pop(next(iter(self.gt_by_stamp)))
        self.appearance.observe_truth(stamp_ns, {o.class_name: float(o.score) for o in msg.objects})
        waiting = self.poses_waiting_for_gt.pop(stamp_ns, None)
        if waiting is not None:
            self._score(*waiting, msg)

    def _on_poses(self, msg: ObjectPoseArray) -> None:
        self.rates["object_poses"].tick()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        receive_ns = self.get_clock().now().nanoseconds
        self.latencies_ms.append((receive_ns - stamp_ns) / 1e6)
        gt = self.gt_by_stamp.get(stamp_ns)
        if gt is None:
            # The two topics are separate DDS streams: a frame's estimate can overtake its truth.
            self.poses_waiting_for_gt[stamp_ns] = (msg, receive_ns)
            while len(self.poses_waiting_for_gt) > 200:
                self.poses_waiting_for_gt.pop(next(iter(self.poses_waiting_for_gt)))
            return
        self._score(msg, receive_ns, gt)

    def _score(self, msg: ObjectPoseArray, receive_ns: int, gt: ObjectPoseArray) -> None:
        """One error entry per ground-truth instance that is at least 30% visible."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        right: set[str] = set()
        for g in gt.objects:
            if g.score < 0.3:  # mostly hidden objects are not expected to be found
                continue
            T_gt = pose_to_T(g.pose.pose)
            cands = [o for o in msg.objects if o.class_name == g.class_name]
            if not cands:
                self.unmatched_gt += 1
                self._scored({"stamp_ns": stamp_ns, "class": g.class_name, "found": False})
                continue
            best = min(cands, key=lambda o: np.linalg.norm(pose_to_T(o.pose.pose)[:3, 3] - T_gt[:3, 3]))
            err = self._error(g.class_name, pose_to_T(best.pose.pose), T_gt)
            self._scored({"stamp_ns": stamp_ns, "class": g.class_name, "found": True, **err})
            if err.get("add_over_d", np.inf) < 0.1:
                right.add(g.class_name)
        self.appearance.observe_poses(stamp_ns, receive_ns, right)

    def _scored(self, entry: dict) -> None:
        self.errors.append(entry)
        if self._errors_out is not None:
            self._errors_out.write(json.dumps(entry) + "\n")

    def _error(self, name: str, T_est: np.ndarray, T_gt: np.ndarray) -> dict:
        t_err = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))
        r_err = float(np.degrees(rotation_angle_rad(T_est[:3, :3], T_gt[:3, :3])))
        out = {"t_err_m": t_err, "r_err_deg": r_err}
        model = self.models.get(name)
        if model is not None:
            from pose_ros.eval.pose_metrics import add_s_error
            out["add_over_d"] = add_s_error(model, T_est, T_gt) / model.diameter_m
        return out

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.inf])
        found = [e for e in self.errors if e.get("found")]
        add = [e["add_over_d"] for e in found if "add_over_d" in e]
        return {
            "rates_hz": {k: round(v.hz(), 2) for k, v in self.rates.items()},
            "counts": {k: v.count for k, v in self.rates.items()},
            "images": dict(self.last_image),
            "objects_in_view": self.objects_in_view,
            "latency_ms": {"p50": float(np.percentile(lat, 50)) if self.latencies_ms else None,
                           "p95": float(np.percentile(lat, 95)) if self.latencies_ms else None,
                           "n": len(self.latencies_ms)},
            "gt_instances_scored": len(self.errors),
            "gt_instances_found": len(found),
            "add_s_recall_0.1d": float(np.mean(np.array(add) < 0.1)) if add else None,
            "median_t_err_m": float(np.median([e["t_err_m"] for e in found])) if found else None,
            "median_r_err_deg": float(np.median([e["r_err_deg"] for e in found])) if found else None,
            "per_class": _per_class(self.errors),
            "appearance": self.appearance.summary(),
        }

    def report(self) -> None:
        s = self.summary()
        rates = ", ".join(f"{k} {v:.1f} Hz" for k, v in s["rates_hz"].items()) or "nothing received yet"
        lines = [f"rates: {rates}"]
        if s["images"]:
            lines.append("frames: " + ", ".join(f"{k} {v}" for k, v in s["images"].items()))
        lines.append(f"objects in view: {', '.join(s['objects_in_view']) or 'none'}")
        if self.p["object_poses_topic"]:
            lat = s["latency_ms"]
            rec = s["add_s_recall_0.1d"]
            lat_text = f"p50 {lat['p50']:.0f} ms p95 {lat['p95']:.0f} ms" if lat["n"] else "n/a"
            lines.append(
                f"poses: latency {lat_text}; found {s['gt_instances_found']}/"
                f"{s['gt_instances_scored']} GT instances; ADD(-S)<0.1d {('%.0f%%' % (100 * rec)) if rec is not None else 'n/a'}; "
                f"median error {s['median_t_err_m'] * 100 if s['median_t_err_m'] is not None else float('nan'):.1f} cm / "
                f"{s['median_r_err_deg'] if s['median_r_err_deg'] is not None else float('nan'):.1f} deg")
            if s["per_class"]:
                lines.append("per object: " + "; ".join(f"{k} {v}" for k, v in s["per_class"].items()))
            a = s["appearance"]
            if a["posed"]:
                lines.append(f"into view -> right pose: {a['posed']}/{a['appearances']}, p50 {a['delay_ms_p50']:.0f} ms")
        self.get_logger().info(" | ".join(lines))
        self.write_summary(s)

    def write_summary(self, s: dict | None = None) -> None:
        if self.p["summary_file"]:
            Path(self.p["summary_file"]).write_text(json.dumps(s or self.summary(), indent=2))

    def destroy_node(self) -> None:
        try:
            self.write_summary()
        finally:
            if getattr(self, "_errors_out", None) is not None:
                self._errors_out.close()
            super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(TopicMonitorNode, args)


if __name__ == "__main__":
    sys.exit(main())
