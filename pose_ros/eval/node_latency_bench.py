"""End-to-end benchmark of the object pose node as it runs on a robot: separate processes, real DDS.

Starts, through `pose_ros.cli.launcher` and the `object_pose` launch spec, a synthetic camera with
1 or 3 of the demo objects, the object pose node and the topic monitor, runs them for a set time,
stops them with SIGINT and reads the monitor's JSON summary:

- end-to-end latency: pose message receive time minus the input colour stamp. The synthetic camera
  stamps a frame before rendering it (like a driver stamping at exposure), so this includes
  render + transport + sync + estimation + publish; the p95 includes the start-up frames;
- sustained pose rate: the monitor's rate over its last 100 pose messages (steady state), and
  the camera rate it actually achieved next to it;
- ADD(-S) < 0.1 d recall over ground-truth instances >= 30% visible (the monitor's rule), counting
  a missed instance as a failure;
- appearance latency (``eval/appearance_latency.py``): from an object coming into view (out of the
  frame, from behind the passing arm) to the first pose message that has it right.

With `depth_only` the node runs without a network: it ICP-refines the camera's ground truth
(`init_poses_topic`), which measures the transport + ICP path; its recall is not an accuracy
figure then (the seeds are exact).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pose_ros.eval.appearance_latency import describe_appearances

DEMO_OBJECTS_BY_COUNT = {1: ["mug"], 2: ["mug", "box"], 3: ["mug", "box", "bottle"]}
GROUND_TRUTH_TOPIC = "/camera/ground_truth/objects"


@dataclass
class NodeBenchConfig:
    objects: list[str] = field(default_factory=lambda: list(DEMO_OBJECTS_BY_COUNT[3]))
    duration_s: float = 30.0
    rate_hz: float = 15.0
    model: str = "models/demo_objects.pt"
    depth_only: bool = False
    width: int = 640
    height: int = 480
    search_hypotheses: int | None = None     # the node's search_max_hypotheses; None = its config's
    node_params: dict = field(default_factory=dict)   # other object_pose parameters to set

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError("objects must name at least one demo object")
        if self.duration_s < 5.0:
            raise ValueError(f"duration must be >= 5 s to measure anything; got {self.duration_s}")
        if not 0.1 <= self.rate_hz <= 120.0:
            raise ValueError(f"rate must be in [0.1, 120] Hz; got {self.rate_hz}")


@dataclass
class NodeBenchResult:
    config: dict
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_samples: int
    pose_rate_hz: float
    camera_rate_hz: float
    pose_messages: int
    gt_instances_scored: int
    gt_instances_found: int
    add_s_recall: float | None            # found with ADD(-S) < 0.1 d / scored
    add_s_recall_of_found: float | None   # ADD(-S) < 0.1 d among the found ones
    appearance: dict                      # AppearanceLatency.summary() of the monitor
    machine: dict
    summary_file: str
    log_file: str
    exit_code: int

    def format(self) -> str:
        c = self.config
        mode = "depth-only ICP of ground-truth seeds" if c["depth_only"] else f"model {c['model']}"
        if not c["depth_only"] and c.get("search_hypotheses") is not None:
            mode += f", search_max_hypotheses {c['search_hypotheses']}"
        if c.get("node_params"):
            mode += ", " + ", ".join(f"{k} {v}" for k, v in c["node_params"].items())
        lines = [
            f"== object pose node, end to end over DDS: {len(c['objects'])} object(s) {c['objects']}, "
            f"{c['width']}x{c['height']} synthetic camera at {c['rate_hz']:g} Hz, {c['duration_s']:g} s, {mode}",
            f"machine: {self.machine['cpus']} CPU(s), load average {self.machine['load_before']} before / "
            f"{self.machine['load_after']} after (1/5/15 min), {self.machine['platform']}, torch device "
            f"{self.machine['device']}",
        ]
        if self.latency_samples:
            lines.append(f"latency camera stamp -> pose received: p50 {self.latency_p50_ms:.0f} ms, "
                         f"p95 {self.latency_p95_ms:.0f} ms ({self.latency_samples} pose messages)")
        else:
            lines.append("latency: no pose messages received")
        lines.append(f"sustained pose rate {self.pose_rate_hz:.1f} Hz (camera delivered {self.camera_rate_hz:.1f} Hz)")
        if self.add_s_recall is not None:
            lines.append(f"ADD(-S) < 0.1 d: {self.add_s_recall:.1%} of {self.gt_instances_scored} visible GT instances "
                         f"(found {self.gt_instances_found}; {self.add_s_recall_of_found:.1%} of the found ones)"
                         + (" [seeds are the exact GT: not an accuracy figure]" if c["depth_only"] else ""))
        else:
            lines.append("ADD(-S): no ground-truth instance could be scored")
        lines.append(describe_appearances(self.appearance))
        lines.append(f"monitor summary: {self.summary_file}; node output: {self.log_file}")
        return "\n".join(lines)


def _machine(load_before: tuple[float, ...]) -> dict:
    device = "cpu"
    try:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        pass
    return {"cpus": os.cpu_count(), "ros_domain_id": os.environ.get("ROS_DOMAIN_ID", "0"),
            "load_before": [round(x, 1) for x in load_before],
            "load_after": [round(x, 1) for x in os.getloadavg()], "platform": platform.platform(terse=True),
            "python": platform.python_version(), "device": device}


def launch_plan(cfg: NodeBenchConfig, summary_file: Path) -> tuple[dict[str, str], dict[str, dict[str, object]]]:
    """Launch-argument overrides and per-node parameters for the `object_pose` system."""
    from pose_ros.resources import meshes_dir, resolve

    overrides = {"camera": "synthetic", "rate": str(float(cfg.rate_hz)), "monitor": "true"}  # "15" would be an int
    node_params: dict[str, dict[str, object]] = {
        "synthetic_camera": {"objects": list(cfg.objects), "width": cfg.width, "height": cfg.height},
        "topic_monitor": {"summary_file": str(summary_file), "report_period_s": 5.0},
    }
    if cfg.depth_only:
        node_params["object_pose"] = {"model_file": "''", "meshes_dir": str(meshes_dir()),
                                      "init_poses_topic": GROUND_TRUTH_TOPIC}
    else:
        model = resolve(cfg.model)
        if not model.is_file():
            raise FileNotFoundError(f"model file {model} not found: train it (pose-ros train --meshes meshes "
                                    f"--out {cfg.model}) or run with --depth-only")
        overrides["model"] = str(model)
        node_params["object_pose"] = dict(cfg.node_params)
        if cfg.search_hypotheses is not None:
            node_params["object_pose"]["search_max_hypotheses"] = int(cfg.search_hypotheses)
    return overrides, node_params


def run_node_bench(cfg: NodeBenchConfig, out_dir: str | Path | None = None, verbose: bool = False,
                   domain_id: int | None = None) -> NodeBenchResult:
    """Run camera + object pose node + monitor for `cfg.duration_s` and summarise what the monitor saw.

    `domain_id` sets ROS_DOMAIN_ID for the nodes (default: the environment's), so that another
    camera on the default topics in the same domain cannot feed the benchmark.
    """
    from pose_ros.cli.launcher import run
    from pose_ros.launch_specs import SYSTEMS

    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="pose_ros_bench_node_"))
    out.mkdir(parents=True, exist_ok=True)
    summary_file, log_file = out / "monitor_summary.json", out / "nodes.log"
    overrides, node_params = launch_plan(cfg, summary_file)
    if domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(int(domain_id))
    load_before = os.getloadavg()
    with open(log_file, "w") as log:
        redirect = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(log)
        with redirect:
            code = run(SYSTEMS["object_pose"], overrides, duration_s=cfg.duration_s, node_params=node_params)
    machine = _machine(load_before)
    deadline = time.monotonic() + 10.0
    while not summary_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not summary_file.is_file():
        raise RuntimeError(f"the topic monitor wrote no summary ({summary_file}); see {log_file}")
    s = json.loads(summary_file.read_text())
    lat = s.get("latency_ms", {})
    scored, found = int(s.get("gt_instances_scored", 0)), int(s.get("gt_instances_found", 0))
    of_found = s.get("add_s_recall_0.1d")
    recall = (of_found * found / scored) if (of_found is not None and scored) else None
    return NodeBenchResult(
        config=asdict(cfg), latency_p50_ms=lat.get("p50"), latency_p95_ms=lat.get("p95"),
        latency_samples=int(lat.get("n", 0)), pose_rate_hz=float(s.get("rates_hz", {}).get("object_poses", 0.0)),
        camera_rate_hz=float(s.get("rates_hz", {}).get("color", 0.0)),
        pose_messages=int(s.get("counts", {}).get("object_poses", 0)), gt_instances_scored=scored,
        gt_instances_found=found, add_s_recall=recall, add_s_recall_of_found=of_found,
        appearance=dict(s.get("appearance", {})), machine=machine,
        summary_file=str(summary_file), log_file=str(log_file), exit_code=int(code))
