"""Tracking mode: refine last frame's poses with ICP on the new depth, re-detect only when needed.

Why: between consecutive frames objects move little, so ICP from the previous pose is cheaper
than the network + voting + PnP and gives temporally stable poses and instance ids. A track is
*lost* when its score or its ICP fitness drops (fast motion, object removed, mostly hidden); the
fitness is taken over the surface not hidden by something in front, so an occluder passing over
part of the object does not lose a track whose visible part still fits. Then the full estimator
runs in the same frame, with the surviving tracks passed as ``prev`` so that re-detected objects
keep their ids. The network also runs every ``redetect_every`` frames to
pick up objects that entered the view.

Near-symmetric twins: ICP from the previous pose keeps whatever turn a detection chose, so a
wrong turn of a near-symmetric shape (a printed box half-turned, a mug turned about its axis)
would ride along until the next detection, and might be chosen again there. The tracker therefore
re-runs the render-and-compare check on one track every ``twin_check_every`` frames and keeps a
running average of its evidence for the pose and each twin: views change as the camera or the
object moves (the handle comes into sight), and evidence gathered over them outweighs one
ambiguous frame. A twin whose running evidence beats the pose's by ``twin_switch_margin``
replaces it after ICP from the twin, unless its depth score is clearly worse. The same check
catches drift that depth cannot see (a box sliding over its own top face): when the pose's
evidence (and every twin's) falls ``appearance_drop`` below the best the track has shown, it is lost
and the next frame runs the detector.

Detection off the tracking path: given a ``detector`` (``objects/detection_worker.py``), the
tracker never waits for a detection. Every frame tracks the current poses; when a detection is due
(no tracks, a track lost, ``redetect_every``) the frame is submitted to the detector, which works
in another process while the following frames are tracked. Its results, some frames old when they
arrive, are moved onto the newest frame (ICP from the detected pose moved as the instance's track,
or the steadiest track, moved meanwhile; failing that, ICP hops through the frames seen since)
and replace the track of the same instance (a detection is also what corrects a wrong track) or
start new tracks. Carried forward, a detection must still look on the newest frame about as it did
on its own (render-and-compare evidence within ``appearance_drop``): hops through frames where a box
shows one face slid it along that face, a fit to depth 0.13 d off. A hop that finds nothing (the
object hidden for a frame) is skipped; only the newest frame must confirm the pose.

Lost objects: the periodic detection looks for every class, but the class of a lost track (or of a
detection that could not be carried forward) is looked for alone in the jobs between, until a
detection finds it or ``lost_search_jobs`` missed it. The per-instance depth search is most of a
detection's time, so one class comes back in about a third of a full detection's time with three
objects; a job asked on the frame the object was lost often finds nothing (the occluder still in
front), hence the repeats. Without a detector, every detection runs in line in the frame that needs
it. Either way a re-detection replaces a track only if the render-and-compare check does not clearly
prefer the track (``keep_track_margin``).

Start-up: while the detector process loads (seconds; up to ~10 s on a fresh 2-core machine), frames
with nothing tracked are detected in line, so a still scene has poses after one detection. When the
poses of such a detection are all lost on the next frame (the detection took seconds and the objects
moved: `make demo` on a fresh clone lost every track made from four in-line detections of 1.6-4.9 s,
which also slowed the detector process's start), the tracker stops detecting in line and waits for the
detector process, which then detects the newest frame.

Motion: ICP starts from the track's pose moved at its velocity (``objects/motion_model.py``),
measured from its last poses on the frames' stamps when given: with the camera moving and frames
dropped by a busy node, the object is centimetres from its last pose by the next processed frame.
A freshly detected pose has no velocity of its own (a re-detection keeps its track's).

Not done, on purpose (each was tried and made the node's poses worse where frames are dropped):
holding lost tracks to revive them by ICP (node: 66% vs 80.5% of found poses right; a revival could
step onto a neighbour), losing tracks after a stamp gap (on a loaded machine no track survived a
merge), clamping ICP's turn about a mug's axis (53.6% vs 86.1%: an orbiting camera turns it about
that axis), and re-detecting a lost track in line (stalled the pose stream on every loss).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np

from pose_ros.core.camera import PinholeCamera
from pose_ros.core.transforms import R_from_axis_angle, rotation_angle_rad
from pose_ros.objects.covariance import icp_covariance
from pose_ros.objects.estimator import PoseEstimator, PoseResult, PoseStats
from pose_ros.objects.motion_model import blend_velocity, predict_pose, velocity_between, without_turn

__all__ = ["TrackingConfig", "PoseTracker"]


@dataclass
class TrackingConfig:
    min_score: float = 0.4              # tracked pose below this score -> lost
    max_fitness_drop: float = 0.35      # fitness of the unoccluded surface below (1 - this) x the fitness when (re)detected -> lost
    min_unoccluded: float = 0.25        # less of the visible surface than this not hidden by something in front -> lost
    redetect_every: int = 15            # run the network at least every N frames (new objects)
    max_translation_step_m: float = 0.05   # per-frame ICP correction above this -> lost (jump)
    twin_check_every: int = 3           # appearance check of one track's near-symmetric twins every N frames (0: off)
    twin_evidence_rate: float = 0.5     # weight of the newest check in the running evidence
    twin_switch_margin: float = 0.1     # running evidence a twin needs over the pose to replace it
    twin_score_slack: float = 0.1       # depth-score loss tolerated for that switch
    spin_step_deg: float = 8.0          # with the twin check: turns of +-1, +-2 steps about a turn axis tried (0: off)
    spin_margin: float = 0.05           # evidence a turn needs over the pose to replace it
    appearance_drop: float = 0.4        # evidence this far below the track's best -> lost
    keep_track_margin: float = 0.1     # a re-detection loses to its track by this much evidence (< 0: never)
    forward_max_hops: int = 8           # detection aside: at most this many ICP hops through the frames since its frame
    forward_buffer_frames: int = 60     # depth frames kept for those hops (at most)
    lost_search_jobs: int = 4           # detector aside: a lost track's class is looked for alone (between the
                                        # periodic detections) until found or this many detections missed it
    predict_motion: bool = True         # ICP starts from the pose moved at the track's velocity (objects/motion_model.py)
    motion_gain: float = 0.7            # weight of the newest measured velocity
    motion_damping: float = 0.9         # velocity factor per update (a self-fed velocity dies away)
    max_predicted_rotation_deg: float = 15.0   # a prediction moves at most this far (and max_translation_step_m)

    def __post_init__(self) -> None:
        if self.redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1; got {self.redetect_every}")
        if not 0.0 < self.min_unoccluded <= 1.0:
            raise ValueError(f"min_unoccluded must be in (0,1]; got {self.min_unoccluded}")
        if self.lost_search_jobs < 0:
            raise ValueError(f"lost_search_jobs must be >= 0 (0 = off); got {self.lost_search_jobs}")
        if self.forward_max_hops < 1 or self.forward_buffer_frames < 1:
            raise ValueError("forward_max_hops and forward_buffer_frames must be >= 1")
        if self.twin_check_every < 0:
            raise ValueError(f"twin_check_every must be >= 0 (0 = off); got {self.twin_check_every}")
        if not 0.0 < self.twin_evidence_rate <= 1.0:
            raise ValueError(f"twin_evidence_rate must be in (0,1]; got {self.twin_evidence_rate}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0,1]; got {self.min_score}")
        if not (0.0 < self.motion_gain <= 1.0 and 0.0 <= self.motion_damping <= 1.0):
            raise ValueError(f"motion_gain must be in (0,1] and motion_damping in [0,1]; got "
                             f"{self.motion_gain}, {self.motion_damping}")


@dataclass
class _Track:
    result: PoseResult
    ref_fitness: float
    age: int = 0
    evidence: np.ndarray | None = None      # running appearance evidence: [pose, twin 1, ...]
    ref_appearance: float | None = None     # the best evidence the track's pose has shown
    t: float | None = None                  # when the pose was seen (the tracker's clock: stamp s, else frames)
    velocity: np.ndarray | None = None      # (6,) angular, linear in the camera frame per clock unit (motion_model)


@dataclass
class _Job:
    """The detection asked of the detector aside, kept from submit to merge (one at a time)."""

    classes: set[int]                       # the classes it looks for
    full: bool                              # every enabled class (not a loss's classes alone)
    t: float | None                         # the clock (see _set_clock) of the frame it was asked with
    rgb: np.ndarray                         # that frame (a result's render-and-compare evidence on it)
    depth: np.ndarray | None
    track_poses: dict[int, np.ndarray]      # the track poses then (how the scene moved since)
    depths_since: list[tuple[int, float, np.ndarray]] = field(default_factory=list)   # (frame, clock, depth)
                                            # of the frames tracked since (forward hops)


class PoseTracker:
    """Stateful wrapper around a PoseEstimator (one per camera stream)."""

    def __init__(self, estimator: PoseEstimator, config: TrackingConfig | None = None, detector: Any = None):
        self.est = estimator
        self.cfg = config or TrackingConfig()
        self.detector = detector                # None: detect in line (module doc)
        self.last_detection_frame: int | None = None   # frame whose detection was merged in the latest update
        self._job: _Job | None = None           # the detection running aside
        self._missing: dict[int, int] = {}      # class of a lost track not found since -> jobs that looked in vain
        self._reset_frame = 0                   # detections of frames up to this one predate a reset
        self.tracks: list[_Track] = []
        self._ids_issued: set[int] = set()      # every instance id this tracker has published
        self.frame = 0
        self.since_detect = 0
        self.counters = {"detect": 0, "tracked": 0, "lost": 0, "twin_checks": 0, "twin_switches": 0,
                         "detect_errors": 0, "detections_dropped": 0, "detections_rejected": 0, "spin_fixes": 0}
        self._twin_turn = 0
        self._force_detect = False
        self._inline_start = True               # detect in line while the detector process starts (see doc)
        self._inline_start_frame = -1           # frame of the last such detection
        self.last_lost_reasons: list[str] = []
        self._now = 0.0                         # the current frame on the tracks' clock (see _set_clock)
        self._stamped: bool | None = None
        self._enabled: set[int] | None = None    # the classes of the previous update

    def reset(self) -> None:
        """Forget all tracks (e.g. the ROS 'reset tracking' service); a detection still running
        aside is discarded when it arrives (it was asked with the forgotten tracks)."""
        self.tracks = []
        self.since_detect = 0
        self._missing = {}
        self._reset_frame = self.frame

    def seed(self, results: list[PoseResult]) -> None:
        """Start tracking from externally known poses (another detector, a saved scene, a test)."""
        self.tracks = [_Track(r, r.stats.icp_fitness if r.stats.icp_applied else 0.0) for r in results]
        self.since_detect = 0

    def update(self, rgb: np.ndarray, depth_m: np.ndarray | None, camera: PinholeCamera,
               enabled_classes: Iterable[str | int] | None = None, stamp_s: float | None = None) -> list[PoseResult]:
        """``stamp_s``: the frame's capture time: the tracks' clock for their velocities (frames dropped
        upstream are then accounted for); without it, processed frames count."""
        rgb, depth = self.est._check_inputs(rgb, depth_m, camera)
        enabled = self.est._resolve_classes(enabled_classes)
        self._look_for_newly_enabled(enabled)
        self.last_lost_reasons = []
        self.last_detection_frame = None
        self.frame += 1
        self._set_clock(stamp_s)
        can_track = depth is not None and bool(np.any(depth > 0))
        if self.detector is not None:
            return self._update_detecting_aside(rgb, depth, camera, enabled, can_track)
        need_detect = (not self.tracks or not can_track or self.since_detect + 1 >= self.cfg.redetect_every
                       or self._force_detect)
        self._force_detect = False
        kept: list[_Track] = []
        if not need_detect:
            kept, need_detect = self._track_all(depth, camera, enabled, can_track)
        if need_detect:
            prev = [t.result for t in self.tracks]
            results = self.est.estimate(rgb, depth, camera, enabled_classes=enabled, prev=prev)
            self.counters["detect"] += 1
            self.since_detect = 0
            self.last_detection_frame = self.frame
            self.tracks = self._merge_now(results, kept, rgb, depth, camera)
        else:
            self.since_detect += 1
            self.counters["tracked"] += len(kept)
            self.tracks = kept
            self._maybe_check_twins(rgb, depth, camera)
        return self._published()

    def _look_for_newly_enabled(self, enabled: set[int]) -> None:
        """A class enabled since the previous frame is looked for at once, like a lost one (else it
        would appear only at the next periodic detection, seconds later)."""
        newly = set() if self._enabled is None else set(enabled) - self._enabled
        self._enabled = set(enabled)
        for c in newly:
            self._note_missing(c)
        if newly:
            self._force_detect = True

    def _set_clock(self, stamp_s: float | None) -> None:
        """The tracks' clock: frame stamps in seconds when given (frames dropped upstream are then
        accounted for), else processed frames. Velocities in the other unit are dropped if it changes."""
        stamped = stamp_s is not None
        if self._stamped is not None and stamped != self._stamped:
            for tr in self.tracks:
                tr.t, tr.velocity = None, None
        self._stamped = stamped
        self._now = float(stamp_s) if stamped else float(self.frame)

    def _merge_now(self, results: list[PoseResult], kept: list[_Track], rgb: np.ndarray, depth: np.ndarray | None,
                   camera: PinholeCamera) -> list[_Track]:
        """Tracks after a detection of this very frame."""
        by_id = {t.result.instance_id: t for t in kept}
        new_tracks: list[_Track] = []
        for r in results:
            old = self._prior_track(r, by_id)
            keep_old = old is not None and self._track_looks_better(old, r, rgb, depth, camera)
            if old is None:
                r = self._unused_id(r, _other_ids(r, results, by_id, (t.result.instance_id for t in new_tracks)))
            new_tracks.append(old if keep_old else _from_detection(r, old, self._now))
        # Tracked objects the network missed this frame (e.g. heavily occluded) stay tracked.
        new_tracks.extend(by_id.values())
        return new_tracks

    def _update_detecting_aside(self, rgb: np.ndarray, depth: np.ndarray | None, camera: PinholeCamera,
                                enabled: set[int], can_track: bool) -> list[PoseResult]:
        """One frame with the detector working aside (module doc): never waits for a detection."""
        kept, lost_any = self._track_all(depth, camera, enabled, can_track)
        self.counters["tracked"] += len(kept)
        done = self.detector.poll()
        if done is not None and done.frame <= self._reset_frame:
            done = None                 # asked before a reset (see reset)
            self._job = None
        if done is not None:
            kept = self._merge_detection(done, kept, rgb, depth, camera, enabled, can_track)
        elif self.detector.busy and depth is not None and self._job is not None:
            self._job.depths_since.append((self.frame, self._now, depth))
            del self._job.depths_since[:-self.cfg.forward_buffer_frames]
        starting = not self.detector.ready and (lost_any or not kept)
        if starting and lost_any and not kept and self._inline_start_frame == self.frame - 1:
            self._inline_start = False          # its poses were all lost on the next frame (module doc)
        starting = starting and self._inline_start
        if starting:
            self._inline_start_frame = self.frame
        if starting and done is None:
            # The detector process is still loading: detect in line meanwhile (module doc).
            results = self.est.estimate(rgb, depth, camera, enabled_classes=enabled,
                                        prev=[t.result for t in kept])
            self.counters["detect"] += 1
            self.last_detection_frame = self.frame
            self.tracks = self._merge_now(results, kept, rgb, depth, camera)
            self._update_missing(kept, self.tracks, enabled)
            return self._published()
        self.tracks = kept
        if done is None:
            self.since_detect += 1
            self._maybe_check_twins(rgb, depth, camera)
        self._submit_due(rgb, depth, camera, enabled, lost_any)
        return self._published()

    def _submit_due(self, rgb: np.ndarray, depth: np.ndarray | None, camera: PinholeCamera, enabled: set[int],
                    lost_any: bool) -> None:
        """Ask the detector for what is due: every enabled class (no tracks, ``redetect_every``), else
        the classes of lost tracks alone. The depth search per instance is most of a detection's time
        (demo objects, one torch thread: 566 ms for all three, 74 / 196 / 276 ms for the bottle, box,
        mug alone), so a lost object comes back in a fraction of a full detection's time. With
        ``lost_search_jobs`` 0 a loss asks for a full detection at once, as before."""
        full = (not self.tracks or self.since_detect >= self.cfg.redetect_every
                or (self.cfg.lost_search_jobs == 0 and (lost_any or self._force_detect)))
        classes = set(enabled) if full else set(self._missing) & enabled
        if not classes or self.detector.busy or not self.detector.ready:
            return                              # (a frame queued while the process starts would be stale)
        if self.detector.submit(self.frame, rgb, depth, camera, classes, [t.result for t in self.tracks]):
            self._force_detect = False
            if full:
                self.since_detect = 0
            self._job = _Job(classes, full, self._now, rgb, depth,
                             {t.result.instance_id: t.result.T_cam_obj.copy() for t in self.tracks})

    def _note_missing(self, class_id: int) -> None:
        """A track of this class was lost: look for the class alone until found (``_update_missing``)."""
        if self.cfg.lost_search_jobs > 0:
            self._missing[class_id] = 0

    def _update_missing(self, before: list[_Track], after: list[_Track], looked_for: set[int]) -> None:
        """After a detection looking for ``looked_for``: a lost track's class is found when the
        detection started a track of it; else it counts a job in vain, and after ``lost_search_jobs``
        of them it is no longer asked for alone (the object left the view: the periodic detections
        still look)."""
        ids_before = {t.result.instance_id for t in before}
        found = {t.result.class_id for t in after if t.result.instance_id not in ids_before}
        for c in list(self._missing):
            if c in found:
                del self._missing[c]
            elif c in looked_for:
                self._missing[c] += 1
                if self._missing[c] >= self.cfg.lost_search_jobs:
                    del self._missing[c]

    def _track_all(self, depth: np.ndarray | None, camera: PinholeCamera, enabled: set[int],
                   can_track: bool) -> tuple[list[_Track], bool]:
        """(tracks of the enabled classes moved onto this frame; whether any was lost)."""
        kept: list[_Track] = []
        lost_any = False
        for tr in self.tracks:
            if tr.result.class_id not in enabled:
                continue
            new = self._track_one(tr, depth, camera) if can_track else None
            if new is None:
                lost_any = True
                self._note_missing(tr.result.class_id)
                if not can_track:
                    self._lost("no depth")
            else:
                kept.append(new)
        return kept, lost_any

    def _looks_as_before(self, r: PoseResult, ref_appearance: float | None, rgb: np.ndarray, depth: np.ndarray,
                         camera: PinholeCamera) -> bool:
        """Whether a pose ICP moved without a detection looks on this frame within ``appearance_drop``
        of its reference (when there is one): ICP alone can settle on a similar surface nearby. A
        detection carried forward is compared with its look on its own frame (hops through frames where
        a box shows one face slid it along that face: right on its frame, 0.13 d off after 20 frames in
        the demo stream)."""
        if ref_appearance is None:
            return True
        a = self.est.appearance_evidence(r.class_id, r.T_cam_obj, rgb, depth, camera)
        return a is None or a >= ref_appearance - self.cfg.appearance_drop

    def _held_elsewhere(self, r: PoseResult, tracks: Iterable[_Track]) -> bool:
        """Whether another of ``tracks`` holds the object of ``r`` (same class, within half a diameter)."""
        d = self.est.objects[r.class_id - 1].diameter_m
        return any(t.result.class_id == r.class_id and t.result.instance_id != r.instance_id and
                   np.linalg.norm(t.result.T_cam_obj[:3, 3] - r.T_cam_obj[:3, 3]) < 0.5 * d for t in tracks)

    def _prior_track(self, r: PoseResult, by_id: dict[int, _Track]) -> _Track | None:
        """The track a detection would replace: its instance's live track (taken out of ``by_id``)."""
        old = by_id.get(r.instance_id)
        if old is not None and old.result.class_id != r.class_id:
            return None                 # another object's id (ids from another process): not this one's track
        if old is not None:
            del by_id[r.instance_id]
        return old

    def _unused_id(self, r: PoseResult, reserved: set[int]) -> PoseResult:
        """A new object keeps a new id: the detector process's estimator counts ids on its own, so
        its 'new' id can be one the tracker published before (after a reset, the same object
        would seem to come back with an old id). ``reserved``: ids other objects hold in the merge
        under way (a renamed object must not take one: it replaced that object's track)."""
        if r.instance_id not in self._ids_issued and r.instance_id not in reserved:
            return r
        taken = self._ids_issued | reserved | {r.instance_id} | {t.result.instance_id for t in self.tracks}
        new_id = max(taken) + 1
        self._ids_issued.add(new_id)
        return replace(r, instance_id=new_id)

    def _published(self) -> list[PoseResult]:
        results = [t.result for t in self.tracks]
        self._ids_issued.update(r.instance_id for r in results)
        return results

    def _merge_detection(self, done: Any, kept: list[_Track], rgb: np.ndarray, depth: np.ndarray | None,
                         camera: PinholeCamera, enabled: set[int], can_track: bool) -> list[_Track]:
        """Move a finished detection onto this frame and merge it with the tracks (module doc)."""
        self.counters["detect"] += 1
        # (every detection has its job: one asked before a reset is discarded; the empty one is a guard)
        job, self._job = self._job or _Job(set(), False, None, rgb, None, {}), None
        if job.full:
            self.since_detect = 0
        self.last_detection_frame = done.frame
        if done.error is not None:
            self.counters["detect_errors"] += 1
            self._lost(f"detector: {done.error}")
        # How each instance tracked since the detection's frame moved in the camera frame. For a
        # static scene and a moving camera every object moves alike, so the steadiest track's
        # motion is the first guess for objects the tracks do not hold.
        motion, steadiest_motion = _scene_motion(kept, job.track_poses)
        by_id = {t.result.instance_id: t for t in kept}
        for r in done.results:
            if r.class_id not in enabled:
                continue
            velocity = ref_appearance = None    # measured while carried forward; its look on its own frame
            if done.frame != self.frame and can_track:
                guess = motion.get(r.instance_id, steadiest_motion)
                moved = self._forward(r, guess, job, depth, camera)
                ref_appearance = self._job_appearance(r, job, camera) if moved is not None else None
                if moved is None or not self._looks_as_before(moved.result, ref_appearance, rgb, depth, camera):
                    # out of ICP's reach meanwhile, or ICP slid it off the object: looked for again
                    self.counters["detections_dropped"] += 1
                    self._note_missing(r.class_id)
                    continue
                r = replace(moved.result, stats=replace(moved.result.stats, source=r.stats.source,
                                                        method=r.stats.method + "+icp_forward"))
                velocity = moved.velocity
            old = self._prior_track(r, by_id)
            if old is not None and self._track_looks_better(old, r, rgb, depth, camera):
                by_id[r.instance_id] = old
                continue
            if old is None and self._held_elsewhere(r, by_id.values()):
                continue                # a new id, but a track already holds that object
            if old is None:
                r = self._unused_id(r, _other_ids(r, done.results, by_id))
            by_id[r.instance_id] = _from_detection(r, old, self._now, velocity, ref_appearance)
        tracks = list(by_id.values())
        self._update_missing(kept, tracks, job.classes)
        return tracks

    def _job_appearance(self, r: PoseResult, job: _Job, camera: PinholeCamera) -> float | None:
        """Render-and-compare evidence of a detected pose on the frame the detector was given."""
        if job.depth is None:
            return None
        return self.est.appearance_evidence(r.class_id, r.T_cam_obj, job.rgb, job.depth, camera)

    def _forward(self, r: PoseResult, motion: np.ndarray | None, job: _Job, depth: np.ndarray,
                 camera: PinholeCamera) -> _Track | None:
        """A detection from an older frame, on this frame: ICP from its pose moved by ``motion``;
        failing that, ICP hops through the frames seen since (every one, or evenly spaced ones when
        there are more than ``forward_max_hops``), then this one. The hops measure the object's
        velocity as tracking does, so each starts from the predicted pose; a hop that does not find
        the object (the demo's arm passing over it, a frame of bad depth) is skipped, not fatal:
        only this frame must confirm the pose, with the tests that keep a track."""
        fit = r.stats.icp_fitness if r.stats.icp_applied else 0.0
        if motion is not None:
            # (a detection not carried forward is counted as dropped by the caller, not as a lost track)
            moved = self._track_one(_Track(replace(r, T_cam_obj=motion @ r.T_cam_obj), fit), depth, camera,
                                    count_loss=False)
            if moved is not None:
                return moved
        stride = -(-(len(job.depths_since) + 1) // self.cfg.forward_max_hops)
        hops = job.depths_since[stride - 1::stride] + [(self.frame, self._now, depth)]
        now = self._now
        tr, last = _Track(r, fit, t=job.t), hops[0][0] - stride
        try:
            for frame, t, depth_f in hops:
                self._now = t                   # the hop's frame time: velocity and prediction (_track_one)
                moved = self._track_one(tr, depth_f, camera, frames=frame - last, count_loss=False)
                if moved is not None:
                    tr, last = moved, frame
                elif frame == self.frame:
                    return None
        finally:
            self._now = now
        return tr

    def _track_looks_better(self, tr: _Track, r: PoseResult, rgb: np.ndarray, depth: np.ndarray | None,
                            camera: PinholeCamera) -> bool:
        """A re-detection replaces its instance's track unless the render-and-compare check clearly
        prefers the track on this frame: a detection can be wrong too (a search that missed the basin,
        a pose moved from an older frame), and a good track should not pay for it."""
        if depth is None or not self.cfg.keep_track_margin >= 0:
            return False
        a_track = self.est.appearance_evidence(tr.result.class_id, tr.result.T_cam_obj, rgb, depth, camera)
        a_det = self.est.appearance_evidence(r.class_id, r.T_cam_obj, rgb, depth, camera)
        if a_track is None or a_det is None or not a_track > a_det + self.cfg.keep_track_margin:
            return False
        self.counters["detections_rejected"] += 1
        return True

    def _maybe_check_twins(self, rgb: np.ndarray, depth: np.ndarray | None, camera: PinholeCamera) -> None:
        every = self.cfg.twin_check_every
        checkable = [i for i, t in enumerate(self.tracks) if self.est.has_twins(t.result.class_id)]
        if depth is None or not (every and checkable and self.frame % every == 0):
            return
        # One track per check frame, in turn: bounds the added time per frame.
        i = checkable[self._twin_turn % len(checkable)]
        self._twin_turn += 1
        checked = self._check_twins(self.tracks[i], rgb, depth, camera)
        if checked is None:
            self._note_missing(self.tracks[i].result.class_id)
            del self.tracks[i]
            self._force_detect = True
        else:
            self.tracks[i] = checked

    def _check_twins(self, tr: _Track, rgb: np.ndarray, depth: np.ndarray, camera: PinholeCamera) -> _Track | None:
        """Update the track's running twin evidence; switch to a twin it clearly prefers; None: lost
        (its evidence, and every twin's, fell ``appearance_drop`` below the track's best; module doc)."""
        r = tr.result
        t0 = time.perf_counter()
        res = self.est.twin_appearance(r.class_id, r.T_cam_obj, rgb, depth, camera)
        if res is None:
            return tr
        self.counters["twin_checks"] += 1
        twins, scores = res
        if tr.ref_appearance is not None and scores.max() < tr.ref_appearance - self.cfg.appearance_drop:
            self._lost(f"appearance {tr.ref_appearance:.2f} -> {scores[0]:.2f}")
            return None
        tr.ref_appearance = max(float(scores[0]), tr.ref_appearance or -np.inf)
        a = self.cfg.twin_evidence_rate
        ev = scores if tr.evidence is None or len(tr.evidence) != len(scores) else (1 - a) * tr.evidence + a * scores
        tr.evidence = ev
        k = int(np.argmax(ev[1:]))
        if not ev[k + 1] >= ev[0] + self.cfg.twin_switch_margin:
            return self._refine_spin(tr, float(scores[0]), rgb, depth, camera)
        new = self._refit(r, r.T_cam_obj @ twins[k], depth, camera, appearance_flipped=True,
                          method="icp_tracking+appearance")
        if new is None:
            return tr
        self.counters["twin_switches"] += 1
        time_ms = dict(r.stats.time_ms)
        time_ms["appearance"] = (time.perf_counter() - t0) * 1e3
        new = replace(new, stats=replace(new.stats, time_ms=time_ms))
        return replace(tr, result=new, evidence=None)

    def _refit(self, r: PoseResult, T_init: np.ndarray, depth: np.ndarray, camera: PinholeCamera,
               **stats_changes: Any) -> PoseResult | None:
        """``r`` moved to a pose the appearance check prefers (a twin, a small turn), refined by ICP
        from ``T_init``; None if ICP fails or the depth score drops more than ``twin_score_slack``:
        appearance never trades away clear geometric evidence."""
        from pose_ros.objects.icp import refine_pose_icp

        model = self.est.models[r.class_id]
        icp = refine_pose_icp(model, T_init, depth, camera, mask=None, config=self.est.icp_config)
        if not icp.applied:
            return None
        seen, score = _depth_score(model, icp, depth, camera)
        if score < r.score - self.cfg.twin_score_slack:
            return None
        stats = replace(r.stats, icp_fitness=float(icp.fitness), icp_rmse_m=float(icp.inlier_rmse_m),
                        depth_agreement=float(seen.score), **stats_changes)
        return replace(r, T_cam_obj=icp.T_cam_obj, score=float(score), stats=stats,
                       covariance=icp_covariance(icp.inlier_rmse_m, self.est.objects[r.class_id - 1].diameter_m))

    def _refine_spin(self, tr: _Track, evidence: float, rgb: np.ndarray, depth: np.ndarray,
                     camera: PinholeCamera) -> _Track:
        """Correct a small turn about the model's turn axis (the mug's): ICP on a body of revolution
        barely constrains it, so it drifts while tracked (the handle aside, only the print shows it),
        by 10-25 deg within seconds in the demo stream. Turns of one and two ``spin_step_deg`` are
        rendered and compared; the best one, if it beats the pose by ``spin_margin``, is refined by
        ICP and kept if it still looks better and its depth score holds."""
        r = tr.result
        axis = self.est.turn_axis(r.class_id)
        if axis is None or not self.cfg.spin_step_deg > 0:
            return tr
        best_a, best_T = evidence + self.cfg.spin_margin, None
        for k in (-2, -1, 1, 2):
            T = r.T_cam_obj.copy()
            T[:3, :3] = r.T_cam_obj[:3, :3] @ R_from_axis_angle(axis, np.radians(k * self.cfg.spin_step_deg))
            a = self.est.appearance_evidence(r.class_id, T, rgb, depth, camera)
            if a is not None and a > best_a:
                best_a, best_T = a, T
        if best_T is None:
            return tr
        new = self._refit(r, best_T, depth, camera, method="icp_tracking+spin")
        a = None if new is None else self.est.appearance_evidence(r.class_id, new.T_cam_obj, rgb, depth, camera)
        if a is None or a < evidence + self.cfg.spin_margin:
            return tr
        self.counters["spin_fixes"] += 1
        return replace(tr, result=new, ref_appearance=max(tr.ref_appearance or -np.inf, a))

    def _track_one(self, tr: _Track, depth: np.ndarray, camera: PinholeCamera, frames: int = 1,
                   count_loss: bool = True) -> _Track | None:
        """ICP from the track's pose onto this frame; ``frames``: how many frames old that pose is;
        ``count_loss``: a failure counts as a lost track (not for a detection carried forward: that
        counts as a dropped detection)."""
        from pose_ros.objects.icp import refine_pose_icp

        lost = self._lost if count_loss else (lambda reason: None)
        t0 = time.perf_counter()
        r = tr.result
        model = self.est.models.get(r.class_id)
        if model is None:
            lost("no mesh for ICP")
            return None
        icp = refine_pose_icp(model, self._predicted(tr), depth, camera, mask=None, config=self.est.icp_config)
        if not icp.applied:
            lost(f"icp: {icp.reason}")
            return None
        if icp.correction_translation_m > self.cfg.max_translation_step_m * min(max(frames, 1), 3):
            lost(f"jump {icp.correction_translation_m:.3f} m")
            return None
        # Fitness over the surface not hidden by something in front: an arm passing over half the
        # object halves ICP's fitness, but what is seen still fits, so the track holds.
        seen, score = _depth_score(model, icp, depth, camera)
        unoccluded = 1.0 - seen.occluded / max(seen.visible, 1)
        fitness = icp.fitness / max(unoccluded, self.cfg.min_unoccluded)
        if unoccluded < self.cfg.min_unoccluded:
            lost(f"occluded {1 - unoccluded:.0%}")
            return None
        if tr.ref_fitness > 0 and fitness < (1.0 - self.cfg.max_fitness_drop) * tr.ref_fitness:
            lost(f"fitness drop {tr.ref_fitness:.2f} -> {fitness:.2f}")
            return None
        agree = seen.score
        if score < self.cfg.min_score:
            lost(f"score {score:.2f}")
            return None
        spec = self.est.objects[r.class_id - 1]
        stats = PoseStats(icp_applied=True, icp_fitness=float(icp.fitness), icp_rmse_m=float(icp.inlier_rmse_m),
                          icp_iterations=int(icp.iterations),
                          icp_correction_translation_m=float(icp.correction_translation_m),
                          icp_correction_rotation_rad=float(icp.correction_rotation_rad), icp_reason=icp.reason,
                          depth_agreement=float(agree), source="tracking", method="icp_tracking",
                          time_ms={"icp": (time.perf_counter() - t0) * 1e3})
        new = replace(r, T_cam_obj=icp.T_cam_obj, score=float(score),
                      covariance=icp_covariance(icp.inlier_rmse_m, spec.diameter_m), stats=stats,
                      T_pnp_cam_obj=None, keypoints_uv=None, mask=None)
        return _Track(new, tr.ref_fitness if tr.ref_fitness > 0 else float(fitness), tr.age + 1, tr.evidence,
                      tr.ref_appearance, t=self._now, velocity=self._velocity_after(tr, new.T_cam_obj))

    def _predicted(self, tr: _Track) -> np.ndarray:
        """Where ICP starts for ``tr`` on this frame: its pose moved at its velocity since it was seen."""
        if not self.cfg.predict_motion or tr.velocity is None or tr.t is None:
            return tr.result.T_cam_obj
        return predict_pose(tr.result.T_cam_obj, tr.velocity, self._now - tr.t, self.cfg.max_translation_step_m,
                            np.radians(self.cfg.max_predicted_rotation_deg))

    def _velocity_after(self, tr: _Track, T_new_cam_obj: np.ndarray) -> np.ndarray | None:
        """The track's velocity updated with its motion from its last pose to ``T_new_cam_obj`` (now)."""
        if not self.cfg.predict_motion or tr.t is None or not self._now > tr.t:
            return tr.velocity                  # none yet, or an out-of-order or repeated stamp: kept
        measured = velocity_between(tr.result.T_cam_obj, T_new_cam_obj, self._now - tr.t)
        measured = without_turn(measured, T_new_cam_obj[:3, :3], self.est.turn_axis(tr.result.class_id))
        return blend_velocity(tr.velocity, measured, self.cfg.motion_gain, self.cfg.motion_damping)

    def _lost(self, reason: str) -> None:
        self.counters["lost"] += 1
        self.last_lost_reasons.append(reason)


def _from_detection(r: PoseResult, old: _Track | None, now: float, velocity: np.ndarray | None = None,
                    ref_appearance: float | None = None) -> _Track:
    """A track started (or restarted) by a detection on the frame at ``now``; ``old``: the track it
    replaces (its velocity carries on: the detection corrects the pose, not how the object moves);
    ``velocity``, ``ref_appearance``: for a new track, the velocity measured while the detection was
    carried forward and its render-and-compare evidence on its own frame (the reference a drifting
    track is lost against, ``_check_twins``)."""
    fit = r.stats.icp_fitness if r.stats.icp_applied else 0.0
    # The running twin evidence is relative to the pose: it survives a re-detection only if the
    # detector chose the same turn.
    same_turn = old is not None and rotation_angle_rad(old.result.T_cam_obj[:3, :3],
                                                       r.T_cam_obj[:3, :3]) < np.radians(15.0)
    return _Track(r, fit if fit > 0 else (old.ref_fitness if old else 0.0), (old.age + 1) if old else 0,
                  old.evidence if same_turn else None, old.ref_appearance if same_turn else ref_appearance,
                  t=now, velocity=old.velocity if old is not None and old.velocity is not None else velocity)


def _other_ids(r: PoseResult, results: list[PoseResult], *track_ids: Iterable[int]) -> set[int]:
    """Instance ids held in a merge by objects other than ``r``: the detection's other results and
    the ids of the tracks merged so far."""
    ids = {x.instance_id for x in results if x.instance_id != r.instance_id}
    for group in track_ids:
        ids.update(group)
    return ids


def _scene_motion(kept: list[_Track], T_then: dict[int, np.ndarray]) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """(per instance, steadiest track's) motion in the camera frame of the ``kept`` tracks since their
    poses ``T_then``. For a static scene seen by a moving camera every object moves alike, so the
    steadiest track's (highest ICP fitness) is the guess for objects no track holds."""
    motion = {t.result.instance_id: t.result.T_cam_obj @ np.linalg.inv(T_then[t.result.instance_id])
              for t in kept if t.result.instance_id in T_then}
    steadiest = max((t for t in kept if t.result.instance_id in motion), default=None,
                    key=lambda t: t.result.stats.icp_fitness)
    return motion, None if steadiest is None else motion[steadiest.result.instance_id]


def _depth_score(model, icp, depth: np.ndarray, camera: PinholeCamera) -> tuple[Any, float]:
    """(``DepthAgreement``, pose score) of a tracked ICP result: there is no mask while tracking."""
    from pose_ros.objects.scoring import depth_agreement, pose_score

    seen = depth_agreement(model, icp.T_cam_obj, depth, camera)
    return seen, pose_score(seen.score, icp.fitness, None)
