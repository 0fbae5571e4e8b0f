"""Teleop chain latency: a moving real person as an RGB-D stream, and the latency bookkeeping.

Plain Python (no ROS): `PersonSequence` makes the frames the bench camera publishes, and
`TeleopLatencyTracker` turns what a probe received into latencies and rates. The ROS side
(publisher, probe, node processes) is `pose_ros.nodes.teleop_bench` and `pose-ros bench-teleop`.

How a command is traced back to its camera frame, without changing any node:
the human pose node stamps its skeletons with the colour image's stamp; the retarget node keeps
the newest accepted skeleton's stamp as the safety layer's target stamp and, every control
cycle, publishes the joint command and a TeleopStatus with the *same* header stamp (its clock)
and `input_age_s = cycle time - target stamp`. So `status.stamp - input_age_s` is the colour
stamp the command of that cycle was computed from (to float32 resolution of the age: a few
nanoseconds for ages under a second). The first cycle that carries a new colour stamp is the
first command reflecting that frame; its latency is the probe's receive time of that JointState
minus the colour stamp (one machine, one ROS clock).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pose_ros.core.camera import PinholeCamera

# A full-body person (17 labelled keypoints) in the COCO dev subset.
DEFAULT_IMAGE = "000000000785.jpg"


@dataclass
class PersonPhoto:
    rgb: np.ndarray        # (H, W, 3) uint8
    mask: np.ndarray       # (H, W) bool, the person (COCO polygon); all False when unknown


def load_coco_person(coco_dir: str | Path, file_name: str = DEFAULT_IMAGE) -> PersonPhoto:
    """A photo of `coco_dir/images` and the mask of its largest person from the COCO annotations
    (`person_keypoints_*.json` beside `images/`); the mask is empty when no annotation is found."""
    import cv2

    coco_dir = Path(coco_dir)
    path = coco_dir / "images" / file_name
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise ValueError(f"cannot read the person photo {path}; pass --images with a COCO-style folder "
                         "(images/ + person_keypoints_*.json)")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    mask = np.zeros(rgb.shape[:2], np.uint8)
    for ann_file in sorted(coco_dir.glob("person_keypoints_*.json")):
        data = json.loads(ann_file.read_text())
        ids = [im["id"] for im in data.get("images", []) if im.get("file_name") == file_name]
        anns = [a for a in data.get("annotations", []) if ids and a.get("image_id") == ids[0]
                and isinstance(a.get("segmentation"), list) and not a.get("iscrowd")]
        if anns:
            best = max(anns, key=lambda a: a.get("area", 0.0))
            for poly in best["segmentation"]:
                pts = np.round(np.asarray(poly, np.float64).reshape(-1, 2)).astype(np.int32)
                cv2.fillPoly(mask, [pts], 1)
            break
    return PersonPhoto(rgb=rgb, mask=mask.astype(bool))


@dataclass
class RgbdFrame:
    rgb: np.ndarray        # (H, W, 3) uint8
    depth_m: np.ndarray    # (H, W) float32


class PersonSequence:
    """A person swaying in front of a wall: frame k is the photo letterboxed to width x height,
    then shifted sideways (+-shift_px), rolled (+-roll_deg) and zoomed (+-zoom) on smooth periodic
    curves (period_frames). Depth: a wall at wall_m, the person (COCO mask) at person_m, a little
    closer towards the middle of the body; no mask -> the wall only (flat)."""

    def __init__(self, photo: PersonPhoto, width: int = 640, height: int = 480, fov_x_deg: float = 69.0,
                 person_m: float = 2.0, wall_m: float = 3.0, period_frames: int = 90, shift_px: float = 60.0,
                 roll_deg: float = 8.0, zoom: float = 0.08) -> None:
        import cv2

        if width < 32 or height < 32:
            raise ValueError(f"frame size {width}x{height} is too small; use at least 32x32 (default 640x480)")
        if not 0.1 < person_m < wall_m:
            raise ValueError(f"person_m={person_m} must be in (0.1, wall_m={wall_m})")
        self.width, self.height = width, height
        self.camera = PinholeCamera.from_fov(width, height, fov_x_deg)
        self.period = max(2, int(period_frames))
        self.shift_px, self.roll_deg, self.zoom = float(shift_px), float(roll_deg), float(zoom)
        h0, w0 = photo.rgb.shape[:2]
        s = min(width / w0, height / h0)
        w, h = int(round(w0 * s)), int(round(h0 * s))
        x0, y0 = (width - w) // 2, (height - h) // 2
        self._rgb = np.zeros((height, width, 3), np.uint8)
        self._rgb[y0:y0 + h, x0:x0 + w] = cv2.resize(photo.rgb, (w, h), interpolation=cv2.INTER_AREA)
        # Person depth: person_m at the silhouette, up to 8 cm closer inside (a rounded body).
        mask = np.zeros((height, width), np.uint8)
        mask[y0:y0 + h, x0:x0 + w] = cv2.resize(photo.mask.astype(np.uint8), (w, h),
                                                interpolation=cv2.INTER_NEAREST)
        bulge = cv2.distanceTransform(mask, cv2.DIST_L2, 3) if mask.any() else np.zeros((height, width), np.float32)
        self._person_depth = np.where(mask > 0, person_m - 0.08 * np.minimum(bulge / 25.0, 1.0), 0.0).astype(np.float32)
        self.has_mask = bool(mask.any())
        self.wall_m = float(wall_m)
        ys, xs = np.nonzero(mask) if mask.any() else (np.array([height / 2]), np.array([width / 2]))
        self._centre = (float(xs.mean()), float(ys.mean()))

    def affine(self, k: int) -> np.ndarray:
        """2x3 image warp of frame k."""
        import cv2

        phase = 2.0 * math.pi * (k % self.period) / self.period
        angle = self.roll_deg * math.sin(phase)
        scale = 1.0 + self.zoom * math.sin(2.0 * phase)
        A = cv2.getRotationMatrix2D(self._centre, angle, scale)
        A[0, 2] += self.shift_px * math.sin(phase + 0.7)
        return A

    def frame(self, k: int) -> RgbdFrame:
        import cv2

        A = self.affine(k)
        size = (self.width, self.height)
        rgb = cv2.warpAffine(self._rgb, A, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        person = cv2.warpAffine(self._person_depth, A, size, flags=cv2.INTER_NEAREST, borderValue=0.0)
        depth = np.where(person > 0, person, np.float32(self.wall_m)).astype(np.float32)
        return RgbdFrame(rgb=rgb, depth_m=depth)


# --------------------------------------------------------------------------------------- latency
@dataclass
class LatencyStats:
    n: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, values_ms) -> "LatencyStats":
        a = np.asarray(list(values_ms), np.float64)
        if a.size == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(int(a.size), float(np.percentile(a, 50)), float(np.percentile(a, 95)), float(a.max()),
                   float(a.mean()))


@dataclass
class TeleopLatencyTracker:
    """Bookkeeping of one bench run; every time is integer ROS-clock nanoseconds.

    Feed it `published(stamp)` for every colour frame, `skeleton(stamp, t_rx, has_person)` for
    every skeleton message, `command(cycle_stamp, t_rx)` for every JointState and
    `status(cycle_stamp, input_age_s, state_name)` for every TeleopStatus (in any order between
    the command and status of a cycle). Only events inside [t_start, t_end] are reported."""

    match_tolerance_ns: int = 100_000          # 0.1 ms; colour frames are >= 1 ms apart
    published_ns: list[int] = field(default_factory=list)
    skeleton_rx: dict[int, tuple[int, bool]] = field(default_factory=dict)
    command_rx: dict[int, int] = field(default_factory=dict)       # cycle stamp -> receive time
    cycle_input: dict[int, tuple[int, str]] = field(default_factory=dict)   # cycle stamp -> (input stamp, state)
    t_start: int = 0
    t_end: int = 2 ** 62

    def published(self, stamp_ns: int) -> None:
        self.published_ns.append(int(stamp_ns))

    def skeleton(self, stamp_ns: int, t_rx_ns: int, has_person: bool) -> None:
        self.skeleton_rx.setdefault(int(stamp_ns), (int(t_rx_ns), bool(has_person)))

    def command(self, cycle_stamp_ns: int, t_rx_ns: int) -> None:
        self.command_rx[int(cycle_stamp_ns)] = int(t_rx_ns)

    def status(self, cycle_stamp_ns: int, input_age_s: float, state_name: str) -> None:
        if not math.isfinite(input_age_s):
            return
        self.cycle_input[int(cycle_stamp_ns)] = (int(cycle_stamp_ns) - int(round(input_age_s * 1e9)), state_name)

    def _match(self, stamp_ns: int, published: np.ndarray) -> int | None:
        i = int(np.searchsorted(published, stamp_ns))
        best = None
        for j in (i - 1, i):
            if 0 <= j < published.size and abs(int(published[j]) - stamp_ns) <= self.match_tolerance_ns:
                best = int(published[j])
        return best

    def first_commands(self, states: tuple[str, ...] = ("ENGAGED",)) -> dict[int, tuple[int, int]]:
        """colour stamp -> (cycle stamp, command receive time) of the first command computed from
        it, for cycles in `states`. Cycles whose input matches no published frame are skipped
        (counted by `unmatched_cycles`)."""
        published = np.array(sorted(self.published_ns), np.int64)
        out: dict[int, tuple[int, int]] = {}
        self.unmatched_cycles = 0
        for cycle in sorted(self.cycle_input):
            input_ns, state = self.cycle_input[cycle]
            if state not in states or cycle not in self.command_rx:
                continue
            colour = self._match(input_ns, published)
            if colour is None:
                self.unmatched_cycles += 1
                continue
            if colour not in out:
                out[colour] = (cycle, self.command_rx[cycle])
        return out

    def report(self) -> dict:
        """Latencies (ms) and rates (Hz) over the measurement window."""
        lo, hi = self.t_start, self.t_end
        window_s = max(1e-9, (hi - lo) * 1e-9)
        pub = [s for s in self.published_ns if lo <= s <= hi]
        skel = {s: v for s, v in self.skeleton_rx.items() if lo <= s <= hi}
        person = {s: v for s, v in skel.items() if v[1]}
        first = {s: v for s, v in self.first_commands().items() if lo <= s <= hi}
        cmds_in = [c for c in self.command_rx if lo <= c <= hi]
        to_skel = [(t - s) * 1e-6 for s, (t, _) in person.items()]
        to_cmd = [(t - s) * 1e-6 for s, (_, t) in first.items()]
        skel_to_cmd = [(first[s][1] - person[s][0]) * 1e-6 for s in first if s in person]
        return {
            "window_s": window_s,
            "frames_published": len(pub),
            "camera_hz": len(pub) / window_s,
            "skeleton_msgs": len(skel),
            "skeleton_hz": len(skel) / window_s,
            "skeletons_with_person": len(person),
            "commands": len(cmds_in),
            "command_publish_hz": len(cmds_in) / window_s,
            "frames_reaching_commands": len(first),
            "fresh_command_hz": len(first) / window_s,
            "frames_dropped_before_command": len(pub) - len(first),
            "unmatched_cycles": getattr(self, "unmatched_cycles", 0),
            "colour_to_skeleton": LatencyStats.of(to_skel),
            "skeleton_to_command": LatencyStats.of(skel_to_cmd),
            "colour_to_command": LatencyStats.of(to_cmd),
        }


def format_report(r: dict, title: str) -> str:
    lines = [f"== {title}",
             f"  window {r['window_s']:.1f} s: camera {r['camera_hz']:.1f} Hz ({r['frames_published']} frames), "
             f"skeletons {r['skeleton_hz']:.1f} Hz ({r['skeletons_with_person']} with the person), "
             f"commands published {r['command_publish_hz']:.1f} Hz",
             f"  {'latency (ms)':<34} {'n':>6} {'p50':>8} {'p95':>8} {'max':>8} {'mean':>8}"]
    for key, label in (("colour_to_skeleton", "colour stamp -> skeleton received"),
                       ("skeleton_to_command", "skeleton received -> command rx"),
                       ("colour_to_command", "colour stamp -> joint command rx")):
        s: LatencyStats = r[key]
        lines.append(f"  {label:<34} {s.n:>6} {s.p50_ms:>8.1f} {s.p95_ms:>8.1f} {s.max_ms:>8.1f} {s.mean_ms:>8.1f}")
    lines.append(f"  sustained command rate from fresh camera frames: {r['fresh_command_hz']:.1f} Hz "
                 f"({r['frames_reaching_commands']} of {r['frames_published']} frames reached a command; "
                 f"{r['frames_dropped_before_command']} dropped on the way: newest frame wins)")
    return "\n".join(lines)
