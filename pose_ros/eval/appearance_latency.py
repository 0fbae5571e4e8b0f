"""Time from an object coming into view to its first right pose: how long a grasp planner waits.

Why beside the per-message latency: camera stamp -> pose message says how old a published pose is,
not how long an object that just came into view (out of the frame, behind the passing arm, or new)
goes without one. A tracker that publishes every frame on time can still leave a reappearing object
unposed until its next detection; this measures that gap.

An object *appears* on the first ground-truth frame where it is at least ``min_visible`` visible
after at least ``min_hidden_s`` below it (or on the first frame it is seen at all); a shorter dip is
flicker, not a new appearance. It is *posed* by the first pose message about that frame or a later
one that holds a pose of its class within 0.1 d ADD(-S). The delay is that message's receive time
minus the appearance frame's camera stamp (same clock: the camera stamps at capture). An object that
hides again before a right pose arrives is *missed*; one still waiting when the run ends is *open*
(censored, left out of the shares). Appearances before the first pose message of the run (the node
still loading) are not counted: start-up is another figure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Appearance", "AppearanceLatency", "describe_appearances", "summarise_appearances"]


@dataclass
class Appearance:
    class_name: str
    appear_ns: int                     # camera stamp of the first frame it is visible again
    hidden_ns: int | None = None       # camera stamp of the frame it went below min_visible again
    posed_ns: int | None = None        # receive time of the first pose message with it right

    @property
    def delay_ms(self) -> float | None:
        return None if self.posed_ns is None else (self.posed_ns - self.appear_ns) / 1e6


class AppearanceLatency:
    """Feed ground truth (``observe_truth``) and scored pose messages (``observe_poses``) as they
    come; ``summary()`` gives the counts and delays."""

    def __init__(self, min_visible: float = 0.3, min_hidden_s: float = 0.2, within_ms: float = 200.0) -> None:
        if not 0.0 < min_visible <= 1.0:
            raise ValueError(f"min_visible must be in (0, 1]; got {min_visible}")
        if min_hidden_s < 0.0 or within_ms <= 0.0:
            raise ValueError(f"min_hidden_s must be >= 0 and within_ms > 0; got {min_hidden_s}, {within_ms}")
        self.min_visible = float(min_visible)
        self.min_hidden_ns = int(min_hidden_s * 1e9)
        self.within_ms = float(within_ms)
        self.events: list[Appearance] = []
        self._visible: set[str] = set()               # classes at least min_visible on the last frame
        self._hidden_since: dict[str, int] = {}       # class -> stamp it went below min_visible
        self._open: dict[str, Appearance] = {}        # class -> its latest appearance
        self._first_pose_stamp_ns: int | None = None

    def observe_truth(self, stamp_ns: int, visible: dict[str, float]) -> None:
        """One ground-truth frame: visible fraction per class (classes absent from it are not visible)."""
        for name in set(visible) | self._visible:
            now_visible = visible.get(name, 0.0) >= self.min_visible
            if now_visible and name not in self._visible:
                self._visible.add(name)
                hidden = self._hidden_since.pop(name, None)
                ev = self._open.get(name)
                if hidden is not None and stamp_ns - hidden < self.min_hidden_ns and ev is not None:
                    if ev.hidden_ns == hidden:
                        ev.hidden_ns = None                  # a flicker: the same appearance goes on
                else:
                    ev = Appearance(name, stamp_ns)
                    self.events.append(ev)
                    self._open[name] = ev
            elif not now_visible and name in self._visible:
                self._visible.discard(name)
                self._hidden_since[name] = stamp_ns
                ev = self._open.get(name)
                if ev is not None and ev.posed_ns is None:
                    ev.hidden_ns = stamp_ns

    def observe_poses(self, stamp_ns: int, receive_ns: int, right_classes: set[str]) -> None:
        """One pose message about frame ``stamp_ns``, received at ``receive_ns``; ``right_classes``: the
        classes it posed within 0.1 d."""
        if self._first_pose_stamp_ns is None:
            self._first_pose_stamp_ns = stamp_ns
        for name in right_classes:
            ev = self._open.get(name)
            if ev is None or ev.posed_ns is not None or stamp_ns < ev.appear_ns:
                continue
            if ev.hidden_ns is not None and stamp_ns >= ev.hidden_ns:
                continue
            ev.posed_ns = receive_ns

    def counted(self) -> list[Appearance]:
        """Appearances after the run's first pose message (the node was up)."""
        first = self._first_pose_stamp_ns
        return [] if first is None else [e for e in self.events if e.appear_ns > first]

    def summary(self) -> dict:
        return {**summarise_appearances(self.counted(), self.within_ms),
                "min_visible": self.min_visible, "min_hidden_s": self.min_hidden_ns / 1e9}


def summarise_appearances(events: list[Appearance], within_ms: float = 200.0) -> dict:
    """Counts, delay percentiles and the share posed within ``within_ms`` of appearances (one run's,
    or several runs' together)."""
    posed = [e for e in events if e.posed_ns is not None]
    missed = [e for e in events if e.posed_ns is None and e.hidden_ns is not None]
    closed = len(posed) + len(missed)
    delays = np.array([e.delay_ms for e in posed]) if posed else np.zeros(0)
    return {
        "appearances": len(events), "posed": len(posed), "missed": len(missed), "open": len(events) - closed,
        "delay_ms_p50": float(np.percentile(delays, 50)) if posed else None,
        "delay_ms_p95": float(np.percentile(delays, 95)) if posed else None,
        "within_ms": float(within_ms),
        "posed_within_share": (float(np.sum(delays <= within_ms)) / closed) if closed else None,
    }


def describe_appearances(s: dict) -> str:
    """One line for a summary: what `bench-node` and `eval-tracking` print."""
    if not s.get("appearances"):
        return "no object came into view after the first pose message"
    within = s.get("posed_within_share")
    delays = f"delay p50 {s['delay_ms_p50']:.0f} ms, p95 {s['delay_ms_p95']:.0f} ms; " if s.get("posed") else ""
    return (f"object coming into view -> first right pose: {s['posed']} of {s['appearances']} posed ({s['missed']} "
            f"hidden again first, {s['open']} still waiting at the end); {delays}within {s['within_ms']:g} ms: "
            f"{'n/a' if within is None else f'{within:.0%}'}")
