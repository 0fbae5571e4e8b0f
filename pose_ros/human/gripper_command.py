"""Hand aperture -> gripper command per hand, through the teleoperation safety layer.

Command: the open fraction in [0, 1] (0 = closed, 1 = open) from the hand's aperture ratio,
thumb tip to index tip distance over the hand's size (wrist to middle knuckle), so it does not
depend on the operator's hand size or distance to the camera. A pinch or a fist reads ~0.1-0.4,
a relaxed open hand ~0.8-1.3; `closed_ratio` and `open_ratio` map that range linearly onto
[0, 1] (clipped).

Per hand, every frame: ratio -> One-Euro smoothing (the body keypoints' filter) -> hysteresis
(a backlash of `hysteresis_ratio` on the smoothed ratio: jitter smaller than that never moves the
command, so a half-closed hand does not make the gripper chatter; the map puts the band inside
[closed_ratio, open_ratio], so a hand opened to `open_ratio` still opens fully) -> linear map -> a
one-joint `SafetyLayer` (the arm's state machine, not a copy of it), which gives the gripper the
arm's conventions: rate limit (`max_rate_per_s`, with an acceleration limit), stale and
out-of-order inputs dropped (`max_input_age_s`), invalid inputs counted, and on loss of the hand
hold the last command for `hold_time_s`, then move at the return-home rate to `home`.

The gripper follows the hand only while the arm's layer is ENGAGING or ENGAGED (`step(follow=)`):
when the arm disengages, holds or faults, each gripper is disengaged too (hold, then home); when
the arm is engaged and a hand is seen, its gripper (re-)engages with the layer's ramp from the last
command. A gripper whose hand is lost while the arm stays engaged holds and goes home on its own,
and resumes when the hand comes back. With `home` = 1 (open, the default) an object held when the
hand is lost for longer than `hold_time_s` is released: set `home` to 0 to keep it closed instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pose_ros.human.conventions import HAND21_NAMES, HAND_SIDES
from pose_ros.human.one_euro import OneEuroConfig, OneEuroFilter
from pose_ros.human.safety import SafetyConfig, SafetyCounters, SafetyLayer, TeleopState

_WRIST = HAND21_NAMES.index("wrist")
_MIDDLE_MCP = HAND21_NAMES.index("middle_finger_mcp")
_THUMB_TIP = HAND21_NAMES.index("thumb_tip")
_INDEX_TIP = HAND21_NAMES.index("index_finger_tip")
MIN_HAND_SIZE_M = 0.02     # wrist to middle knuckle shorter than this is a degenerate detection
_FOLLOWING = (TeleopState.ENGAGING, TeleopState.ENGAGED)


class GripperConfigError(ValueError):
    """Gripper settings that cannot work (names the setting and the fix)."""


def _smoothing_default() -> OneEuroConfig:
    return OneEuroConfig(min_cutoff=2.0, beta=1.0, d_cutoff=1.0, max_gap_s=0.5)


@dataclass
class GripperConfig:
    """Aperture mapping, smoothing and the gripper's safety settings (fraction, fraction/s)."""
    closed_ratio: float = 0.35         # aperture ratio at or below which the command is 0 (closed)
    open_ratio: float = 0.9            # at or above which it is 1 (open)
    hysteresis_ratio: float = 0.05     # backlash on the smoothed ratio
    min_hand_score: float = 0.5        # hands with a lower presence score count as not seen
    max_rate_per_s: float = 2.0        # command change per second (full stroke in 0.5 s)
    max_accel_per_s2: float = 40.0
    home: float = 1.0                  # command when disengaged and after a loss's hold (1 = open)
    return_home_rate_per_s: float = 1.0
    hold_time_s: float = 1.0
    tracking_timeout_s: float = 0.3
    watchdog_timeout_s: float = 0.5
    max_input_age_s: float = 0.5
    max_command_age_s: float = 0.15    # older hand targets are stale solves (the arm's rule)
    max_consecutive_invalid: int = 25
    max_dt_s: float = 0.1
    smoothing: OneEuroConfig = field(default_factory=_smoothing_default)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.closed_ratio) and math.isfinite(self.open_ratio)
                and 0.0 <= self.closed_ratio < self.open_ratio):
            raise GripperConfigError(f"need 0 <= closed_ratio < open_ratio, got {self.closed_ratio}, {self.open_ratio}")
        if not 0.0 <= 2.0 * self.hysteresis_ratio < self.open_ratio - self.closed_ratio:
            raise GripperConfigError(f"hysteresis_ratio={self.hysteresis_ratio} must lie in [0, (open_ratio - "
                                     f"closed_ratio) / 2 = {(self.open_ratio - self.closed_ratio) / 2:g})")
        if not 0.0 <= self.home <= 1.0:
            raise GripperConfigError(f"gripper home={self.home} must lie in [0, 1] (0 closed, 1 open)")
        if not 0.0 <= self.min_hand_score <= 1.0:
            raise GripperConfigError(f"min_hand_score={self.min_hand_score} must lie in [0, 1]")
        for name in ("max_rate_per_s", "max_accel_per_s2", "return_home_rate_per_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise GripperConfigError(f"gripper {name}={value} must be a finite number > 0")

    @classmethod
    def from_safety(cls, safety: SafetyConfig, **overrides) -> "GripperConfig":
        """The arm's timing (hold, tracking and watchdog timeouts, input age, invalid-input fault,
        step cap) with gripper-specific settings from `overrides`."""
        kw = {name: getattr(safety, name) for name in ("hold_time_s", "tracking_timeout_s", "watchdog_timeout_s",
                                                       "max_input_age_s", "max_command_age_s", "max_consecutive_invalid",
                                                       "max_dt_s")}
        kw.update(overrides)
        return cls(**kw)

    def safety_config(self, side: str) -> SafetyConfig:
        """The one-joint safety configuration of the `side` gripper: position = open fraction."""
        return SafetyConfig(
            joint_names=[f"{side}_gripper"], lower=[0.0], upper=[1.0], max_velocity=[self.max_rate_per_s],
            max_acceleration=[self.max_accel_per_s2], home=[self.home], position_margin_rad=0.0,
            engage_velocity_rad_s=self.max_rate_per_s, engage_max_time_s=max(1.0 / self.max_rate_per_s, 0.1),
            return_home_velocity_rad_s=self.return_home_rate_per_s, hold_time_s=self.hold_time_s,
            tracking_timeout_s=self.tracking_timeout_s, watchdog_timeout_s=self.watchdog_timeout_s,
            max_input_age_s=self.max_input_age_s, max_command_age_s=self.max_command_age_s,
            max_consecutive_invalid=self.max_consecutive_invalid,
            max_dt_s=self.max_dt_s)


def hand_aperture_ratio(positions_cam_m: np.ndarray) -> float:
    """|thumb tip - index tip| / |wrist - middle knuckle| of a HAND21 hand (metres in, unitless out).

    NaN when one of the four keypoints has no 3D position or the hand is degenerate."""
    p = np.asarray(positions_cam_m, dtype=np.float64)
    if p.shape != (len(HAND21_NAMES), 3):
        raise ValueError(f"hand positions must be ({len(HAND21_NAMES)}, 3) in HAND21 order, got {p.shape}")
    size = float(np.linalg.norm(p[_MIDDLE_MCP] - p[_WRIST]))
    gap = float(np.linalg.norm(p[_THUMB_TIP] - p[_INDEX_TIP]))
    if not (math.isfinite(size) and math.isfinite(gap)) or size < MIN_HAND_SIZE_M:
        return float("nan")
    return gap / size


class ApertureFilter:
    """Aperture ratio -> open fraction: One-Euro smoothing, backlash hysteresis, linear map.

    The backlash output trails the smoothed ratio by up to h = hysteresis_ratio; mapping it from
    [closed + h, open - h] to [0, 1] makes the command exactly 0 once the ratio falls to closed_ratio
    and exactly 1 once it rises to open_ratio."""

    def __init__(self, config: GripperConfig) -> None:
        self.config = config
        self._euro = OneEuroFilter(config.smoothing)
        self._held: float | None = None
        self._t_s = -math.inf

    def reset(self) -> None:
        """Forget the hand (it was lost): the next ratio starts afresh."""
        self._euro.reset()
        self._held, self._t_s = None, -math.inf

    def __call__(self, ratio: float, t_s: float) -> float:
        """Open fraction in [0, 1] for a ratio observed at t_s. A sample not newer than the last
        one (a reordered message) leaves the state alone."""
        cfg = self.config
        if t_s > self._t_s:
            smoothed = float(self._euro.filter(np.array([ratio]), t_s)[0])
            self._t_s = t_s
            h = cfg.hysteresis_ratio
            if self._held is None:
                self._held = smoothed
            elif smoothed > self._held + h:
                self._held = smoothed - h
            elif smoothed < self._held - h:
                self._held = smoothed + h
        if self._held is None:
            return float("nan")
        lo, hi = cfg.closed_ratio + cfg.hysteresis_ratio, cfg.open_ratio - cfg.hysteresis_ratio
        return float(np.clip((self._held - lo) / (hi - lo), 0.0, 1.0))


@dataclass
class GripperOutput:
    """One control cycle's command for one gripper."""
    side: str
    command: float                  # open fraction in [0, 1] to send
    rate_per_s: float               # its rate of change
    state: TeleopState
    tracking: bool                  # a hand was accepted within tracking_timeout_s
    input_age_s: float
    aperture_ratio: float           # last measured ratio (NaN: none yet / hand lost)
    message: str
    counters: SafetyCounters

    @property
    def state_name(self) -> str:
        return self.state.name


class GripperCommander:
    """One gripper per hand side; feed it each skeleton's hands, call `step` every control cycle."""

    def __init__(self, config: GripperConfig | None = None) -> None:
        self.config = config or GripperConfig()
        self.sides = HAND_SIDES
        self.layers = {side: SafetyLayer(self.config.safety_config(side)) for side in self.sides}
        self._filters = {side: ApertureFilter(self.config) for side in self.sides}
        self._ratio = {side: float("nan") for side in self.sides}
        self._following = False

    def _check_side(self, side: str) -> str:
        if side not in self.layers:
            raise ValueError(f"unknown hand side {side!r}: use one of {self.sides}")
        return side

    def submit(self, side: str, positions_cam_m: np.ndarray | None, stamp_s: float, now_s: float,
               score: float = 1.0) -> bool:
        """This frame's `side` hand (HAND21 positions, camera frame, metres; None = not seen),
        stamped with its camera time. True when accepted as the gripper's new target."""
        layer, filt = self.layers[self._check_side(side)], self._filters[side]
        if positions_cam_m is None or (math.isfinite(score) and score < self.config.min_hand_score):
            return self._lost(side, now_s)
        p = np.asarray(positions_cam_m, dtype=np.float64)
        if p.shape != (len(HAND21_NAMES), 3):
            raise ValueError(f"{side} hand positions must be ({len(HAND21_NAMES)}, 3) in HAND21 order, got "
                             f"{p.shape}; pass Hand3D.positions_cam_m")
        if np.any(np.isinf(p)) or not (math.isfinite(stamp_s) and math.isfinite(score)):
            layer.submit_invalid(now_s)
            return False
        ratio = hand_aperture_ratio(p)
        if not math.isfinite(ratio):     # thumb or index tip without 3D: this hand gives no aperture
            return self._lost(side, now_s)
        self._ratio[side] = ratio
        fraction = filt(ratio, stamp_s)
        return layer.submit_target(np.array([fraction]), stamp_s=stamp_s, now_s=now_s)

    def _lost(self, side: str, now_s: float) -> bool:
        self.layers[side].submit_tracking_lost(now_s)
        self._filters[side].reset()
        self._ratio[side] = float("nan")
        return False

    def submit_lost(self, now_s: float) -> None:
        """Input arrived with no usable operator: no hand on either side."""
        for side in self.sides:
            self._lost(side, now_s)

    def submit_invalid(self, now_s: float, side: str | None = None) -> None:
        """Malformed input (one side's hand, or the whole skeleton): counted, dropped."""
        for s in (self.sides if side is None else (self._check_side(side),)):
            self.layers[s].submit_invalid(now_s)

    def step(self, now_s: float, follow: bool) -> dict[str, GripperOutput]:
        """Advance every gripper to now_s. follow: the arm's safety state is ENGAGING or ENGAGED."""
        leaving = self._following and not follow
        self._following = follow
        outputs = {}
        for side, layer in self.layers.items():
            state = layer.state
            if follow:
                if state not in (*_FOLLOWING, TeleopState.FAULT) and layer.tracking(now_s):
                    layer.engage(now_s, "arm engaged, hand in view")
            elif state in _FOLLOWING or (leaving and state == TeleopState.HOLDING):
                layer.disengage(now_s, "arm not engaged")
            out = layer.step(now_s)
            outputs[side] = GripperOutput(side=side, command=float(out.q[0]), rate_per_s=float(out.qd[0]),
                                          state=out.state, tracking=out.tracking, input_age_s=out.input_age_s,
                                          aperture_ratio=self._ratio[side], message=out.message,
                                          counters=out.counters)
        return outputs

