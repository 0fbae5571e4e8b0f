"""Full detections off the tracking path: in another process, or inline with a fixed delay.

Why: a full detection (network, voting, PnP, depth search, render-and-compare) takes 0.2-0.6 s
on two CPU cores, tracking (ICP from the previous poses) 10-30 ms. Run in line, every detection
frame stalls the pose stream for that long. ``ProcessDetector`` runs the detector in a child
process, so the tracker keeps publishing at camera rate on one core while the detector works on
the other, and hands its results back when they are ready (the tracker moves them onto the newest
frame by ICP; see ``PoseTracker``). The child runs at a lower CPU priority (``niceness``): on a
loaded machine a detection arriving later costs less than a tracked frame arriving later. A process, not a thread: the estimator is
Python-heavy and a thread would share the interpreter lock with tracking (measured: tracking
25 ms alone, 48 ms beside a detection thread, 30 ms beside a detection process).

``InlineDetector`` is the same contract run in the caller, with results held back for a fixed
number of frames: a deterministic stand-in for the process's latency in offline evaluation.

A detector holds one job at a time: ``submit`` refuses while busy, ``poll`` returns the finished
job once. The child builds its own estimator from an ``EstimatorRecipe`` (picklable: paths and
configs, no meshes or networks) and exits when the parent closes the pipe or dies.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pose_ros.core.camera import PinholeCamera

__all__ = ["EstimatorRecipe", "DetectionDone", "InlineDetector", "ProcessDetector"]

log = logging.getLogger(__name__)


@dataclass
class EstimatorRecipe:
    """How to build a PoseEstimator, in this process or another (everything here pickles)."""

    model_file: str
    meshes: list[str] = field(default_factory=list)   # meshes/ folders or BOP models folders
    kwargs: dict[str, Any] = field(default_factory=dict)   # PoseEstimator keyword arguments

    def build(self) -> Any:
        from pose_ros.objects.estimator import PoseEstimator, load_meshes_for_model
        from pose_ros.objects.model_file import load_model_file

        meshes = None
        if self.meshes:
            ids = [o.obj_id for o in load_model_file(self.model_file).objects]
            meshes = [m for root in self.meshes for m in load_meshes_for_model(Path(root), ids)]
        return PoseEstimator(self.model_file, meshes=meshes, **self.kwargs)


@dataclass
class DetectionDone:
    frame: int                    # the caller's frame number the job was submitted with
    results: list[Any]            # list[PoseResult] on that frame
    time_ms: float                # detector time (excluding queueing)
    error: str | None = None      # the detector raised: no results


class InlineDetector:
    """Runs the estimator in ``submit``; ``poll`` hands the result back ``latency_frames`` polls later
    for a job looking for every class of the estimator, ``ceil(latency_frames * k / n)`` for one
    looking for k of its n classes: the per-instance depth search is most of a detection's time
    (``PoseTracker._submit_due``), so a job for fewer classes comes back sooner, as it does in the
    detector process."""

    def __init__(self, estimator: Any, latency_frames: int = 0):
        if latency_frames < 0:
            raise ValueError(f"latency_frames must be >= 0; got {latency_frames}")
        self.estimator = estimator
        self.latency_frames = int(latency_frames)
        self._job: DetectionDone | None = None
        self._wait = 0
        self.ready = True

    @property
    def busy(self) -> bool:
        return self._job is not None

    def submit(self, frame: int, rgb: np.ndarray, depth_m: np.ndarray | None, camera: PinholeCamera,
               enabled: set[int], prev: Sequence[Any]) -> bool:
        if self.busy:
            return False
        self._job = _detect(self.estimator, frame, rgb, depth_m, camera, enabled, prev)
        n = max(len(self.estimator.class_names), 1)
        self._wait = -(-self.latency_frames * min(len(enabled), n) // n)
        return True

    def poll(self) -> DetectionDone | None:
        if self._job is None:
            return None
        if self._wait > 0:
            self._wait -= 1
            return None
        job, self._job = self._job, None
        return job

    def close(self) -> None:
        self._job = None


class ProcessDetector:
    """The estimator in a spawned child process (module doc). Restarts a child that died."""

    def __init__(self, recipe: EstimatorRecipe, start_timeout_s: float = 120.0, niceness: int = 10):
        self.recipe = recipe
        self.niceness = int(niceness)          # the child yields the CPU to tracking (module doc)
        self.start_timeout_s = float(start_timeout_s)
        self._ctx = mp.get_context("spawn")     # never fork a process that runs DDS or torch threads
        self._proc: Any = None
        self._conn: Any = None
        self._in_flight: int | None = None
        self._submitted_at = 0.0
        self.restarts = -1                      # the first start is not a restart
        self.errors = 0
        self.ready = False                      # the child has built its estimator
        self.last_error: str | None = None
        self._start()

    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        self._proc = self._ctx.Process(target=_child_main, args=(child, self.recipe, self.niceness), daemon=True,
                                       name="pose_ros-detector")
        self._proc.start()
        child.close()
        self._conn = parent
        self._in_flight = None
        self.ready = False
        self._started_at = time.monotonic()
        self.restarts += 1

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def submit(self, frame: int, rgb: np.ndarray, depth_m: np.ndarray | None, camera: PinholeCamera,
               enabled: set[int], prev: Sequence[Any]) -> bool:
        if self.busy or self._conn is None:
            return False
        if not self.alive:
            self._restart("the detector process died")
        try:
            self._conn.send(("detect", frame, rgb, depth_m, camera, set(enabled), [_slim(p) for p in prev]))
        except (OSError, EOFError, BrokenPipeError) as exc:
            self._restart(f"send failed: {exc!r}")
            return False
        self._in_flight = frame
        self._submitted_at = time.monotonic()
        return True

    def poll(self) -> DetectionDone | None:
        if self._conn is None:
            return None
        try:
            while self._conn.poll():
                msg = self._conn.recv()
                if msg[0] == "ready":
                    self.ready = True
                elif msg[0] == "fatal":         # the estimator could not be built: no point restarting
                    self.last_error = msg[1]
                    self.close()
                    raise RuntimeError(f"the detector process could not build its estimator: {msg[1]}")
                elif msg[0] == "done":
                    done: DetectionDone = msg[1]
                    self._in_flight = None
                    if done.error is not None:
                        self.errors += 1
                        self.last_error = done.error
                    return done
        except (OSError, EOFError) as exc:
            self._proc.join(timeout=1.0)
            self._restart(f"the detector process exited (code {self._proc.exitcode})" if not self._proc.is_alive()
                          else f"receive failed: {exc!r}")
            return None
        if not self.alive:
            self._restart(f"the detector process exited (code {self._proc.exitcode})")
        elif not self.ready and time.monotonic() - self._started_at > self.start_timeout_s:
            self._restart(f"the detector process did not start within {self.start_timeout_s:.0f} s")
        return None

    def _restart(self, why: str) -> None:
        log.warning("object detector: %s; restarting it", why)
        self.last_error = why
        self._shutdown()
        self._start()

    def _shutdown(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        if self._proc is not None:
            self._proc.join(timeout=2.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=2.0)
        self._conn = None
        self._proc = None
        self._in_flight = None

    def close(self) -> None:
        self._shutdown()

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the child has built its estimator (tests, benchmarks)."""
        end = time.monotonic() + timeout_s
        while not self.ready and time.monotonic() < end and self._conn is not None:
            if self._conn.poll(0.1):
                self.poll()
        return self.ready


def _detect(estimator: Any, frame: int, rgb: np.ndarray, depth_m: np.ndarray | None, camera: PinholeCamera,
            enabled: set[int], prev: Sequence[Any]) -> DetectionDone:
    t0 = time.perf_counter()
    try:
        results = estimator.estimate(rgb, depth_m, camera, enabled_classes=enabled, prev=list(prev))
        return DetectionDone(frame, results, (time.perf_counter() - t0) * 1e3)
    except Exception as exc:  # one bad frame must not end detection
        return DetectionDone(frame, [], (time.perf_counter() - t0) * 1e3, f"{type(exc).__name__}: {exc}")


def _slim(result: Any) -> Any:
    """A previous result as the child needs it (ids and poses): masks stay home."""
    from dataclasses import replace

    return replace(result, mask=None)


def _child_main(conn: Any, recipe: EstimatorRecipe, niceness: int = 0) -> None:
    """The detector process: build the estimator, then answer jobs until the pipe closes."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C stops the parent, whose closing pipe stops us
    if niceness > 0:
        os.nice(niceness)                          # a late detection costs less than a late tracked frame
    try:
        estimator = recipe.build()
    except Exception as exc:
        conn.send(("fatal", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))
        return
    try:
        conn.send(("ready",))
    except (OSError, BrokenPipeError):      # closed while we were starting
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):         # the parent closed the pipe or died
            return
        if msg[0] != "detect":
            continue
        _, frame, rgb, depth_m, camera, enabled, prev = msg
        done = _detect(estimator, frame, rgb, depth_m, camera, enabled, prev)
        try:
            conn.send(("done", done))
        except (OSError, BrokenPipeError):
            return
