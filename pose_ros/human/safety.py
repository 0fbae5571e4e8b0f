"""Teleoperation safety layer: a pure state machine between the retargeter and the robot.

Why a separate, ROS-free layer: every command the robot receives must respect position,
velocity and acceleration limits whatever the perception does (NaN, jumps, dropouts, stale or
reordered messages), and that must be testable deterministically. Time is an explicit `now_s`
argument, so tests drive the clock.

States mirror msg/TeleopStatus.msg: DISENGAGED -> (engage) ENGAGING (rate-limited ramp from the
measured joint state) -> ENGAGED (following) -> HOLDING (tracking lost / disengaged: hold for
hold_time_s) -> RETURNING_HOME (slow) -> DISENGAGED. FAULT freezes commands until disengage.

Stale solves: a target whose colour frame is older than `max_command_age_s` when it reaches the
layer (after the IK, i.e. when its command would be published) is treated like stale input: not
followed, counted (`stale_commands`), and the layer holds at once (then returns home after
hold_time_s); it resumes with the engage ramp on the next fresh target. Why: under CPU load the
chain can deliver every frame, just late (issue #20: p95 490 ms with one busy core), and
`max_input_age_s` (checked on arrival, before the solve) is too loose for a command the robot follows.

Limiter: target clamped into the limits shrunk by a margin; speed limited, and also limited to
the speed from which the joint can still stop at the target and before the position limits
with the acceleration limit (braking curve valid for any step length), then acceleration limited. A final clamp
keeps the position inside the limits no matter what. Interventions are counted per control cycle.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from enum import IntEnum

import numpy as np


class TeleopState(IntEnum):
    DISENGAGED = 0
    ENGAGING = 1
    ENGAGED = 2
    HOLDING = 3
    RETURNING_HOME = 4
    FAULT = 5


class SafetyConfigError(ValueError):
    """Safety configuration that cannot be enforced (names the key and the fix)."""


@dataclass
class SafetyConfig:
    """Limits are per joint, in `joint_names` order (rad, rad/s, rad/s^2)."""
    joint_names: list[str]
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray
    home: np.ndarray
    position_margin_rad: float = 0.03
    engage_velocity_rad_s: float = 0.6
    engage_max_time_s: float = 3.0     # the engage blend finishes within this even for big gaps
    return_home_velocity_rad_s: float = 0.4
    hold_time_s: float = 1.0
    tracking_timeout_s: float = 0.3
    watchdog_timeout_s: float = 0.5
    max_input_age_s: float = 0.5
    # Colour stamp -> command limit: 3x the 50 ms p95 target, so only a chain that has fallen
    # behind (not camera-rate jitter) trips it.
    max_command_age_s: float = 0.15
    measured_timeout_s: float = 0.5
    max_consecutive_invalid: int = 25
    max_dt_s: float = 0.1              # a stalled loop never turns into one big step
    gesture_enabled: bool = False
    gesture_hold_s: float = 1.5

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for name in ("lower", "upper", "max_velocity", "max_acceleration", "home"):
            arr = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if arr.shape != (n,):
                raise SafetyConfigError(f"safety {name} has {arr.shape[0]} values for {n} joints")
            setattr(self, name, arr)
        if not np.all(np.isfinite(self.max_velocity)) or np.any(self.max_velocity <= 0):
            raise SafetyConfigError("every joint needs a finite max velocity > 0 (set safety.max_velocity_rad_s)")
        if not np.all(np.isfinite(self.max_acceleration)) or np.any(self.max_acceleration <= 0):
            raise SafetyConfigError("every joint needs a finite max acceleration > 0 (safety.max_acceleration_rad_s2)")
        lo, hi = self.cmd_lower, self.cmd_upper
        if np.any(lo > hi):
            bad = [self.joint_names[i] for i in np.nonzero(lo > hi)[0]]
            raise SafetyConfigError(f"position_margin_rad={self.position_margin_rad} leaves no range for {bad}; lower it")
        if np.any(self.home < lo) or np.any(self.home > hi):
            bad = [self.joint_names[i] for i in np.nonzero((self.home < lo) | (self.home > hi))[0]]
            raise SafetyConfigError(f"home pose of {bad} is outside the limits minus the margin; move it inside")
        for name in ("engage_velocity_rad_s", "engage_max_time_s", "return_home_velocity_rad_s", "hold_time_s",
                     "tracking_timeout_s",
                     "watchdog_timeout_s", "max_input_age_s", "max_command_age_s", "max_dt_s"):
            if not getattr(self, name) > 0:
                raise SafetyConfigError(f"safety {name} must be > 0")

    @property
    def cmd_lower(self) -> np.ndarray:
        """Lowest position ever commanded (URDF lower + margin)."""
        return self.lower + self.position_margin_rad

    @property
    def cmd_upper(self) -> np.ndarray:
        return self.upper - self.position_margin_rad

    @classmethod
    def from_mapping(cls, mapping, full_body: bool = False, overrides: dict | None = None) -> "SafetyConfig":
        """Build from a RetargetMapping's `safety:` section and its URDF limits. The effective
        speed limit per joint is min(URDF velocity * velocity_scale, max_velocity_rad_s)."""
        s = dict(mapping.safety)
        s.update(overrides or {})
        known = {"position_margin_rad", "velocity_scale", "max_velocity_rad_s", "max_acceleration_rad_s2",
                 "engage_velocity_rad_s", "engage_max_time_s", "return_home_velocity_rad_s",
                 "hold_time_s", "tracking_timeout_s", "watchdog_timeout_s", "max_input_age_s", "max_command_age_s",
                 "measured_timeout_s", "max_consecutive_invalid", "max_dt_s", "gesture"}
        unknown = set(s) - known
        if unknown:
            raise SafetyConfigError(f"{mapping.path} safety: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
        names = mapping.command_joints(full_body)
        lims = [mapping.model.limits_of(j) for j in names]
        lower = np.array([lim.lower for lim in lims])
        upper = np.array([lim.upper for lim in lims])
        scale = float(s.get("velocity_scale", 1.0))
        vmax = np.minimum(np.array([lim.velocity for lim in lims]) * scale, float(s.get("max_velocity_rad_s", math.inf)))
        amax = np.full(len(names), float(s.get("max_acceleration_rad_s2", 20.0)))
        gesture = s.get("gesture") or {}
        kw = {k: s[k] for k in ("position_margin_rad", "engage_velocity_rad_s", "engage_max_time_s",
                                "return_home_velocity_rad_s", "hold_time_s", "tracking_timeout_s",
                                "watchdog_timeout_s", "max_input_age_s", "max_command_age_s", "measured_timeout_s",
                                "max_consecutive_invalid", "max_dt_s") if k in s}
        margin = float(s.get("position_margin_rad", 0.03))
        home = np.clip(mapping.home_vector(names), lower + margin, upper - margin)
        return cls(joint_names=names, lower=lower, upper=upper, max_velocity=vmax, max_acceleration=amax,
                   home=home, gesture_enabled=bool(gesture.get("enabled", False)),
                   gesture_hold_s=float(gesture.get("hold_s", 1.5)), **kw)


@dataclass
class SafetyCounters:
    """Cumulative interventions; names match msg/TeleopStatus.msg."""
    position_limit_clamps: int = 0
    velocity_limit_clamps: int = 0
    acceleration_limit_clamps: int = 0
    invalid_inputs: int = 0
    stale_inputs: int = 0
    stale_commands: int = 0
    tracking_losses: int = 0
    watchdog_trips: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class SafetyOutput:
    """One control cycle's command: position `q` and velocity `qd` in config joint order."""
    q: np.ndarray
    qd: np.ndarray
    state: TeleopState
    tracking: bool
    input_age_s: float
    message: str
    command_age_s: float = math.inf    # newest solve: submission (= publication) time - its colour stamp
    counters: SafetyCounters = field(default_factory=SafetyCounters)

    @property
    def state_name(self) -> str:
        return self.state.name


def braking_speed(distance: np.ndarray, accel: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed for a step of `dt` after which a joint can still come to rest within
    `distance` with acceleration `accel`, whatever the lengths of the following steps.

    After the step the joint has `distance - v dt` left and must satisfy v^2 / (2 a) <= that.
    Decelerating by a*dt_k per step and moving at the new speed for dt_k covers a right Riemann
    sum of the continuous braking ramp, which is <= v^2 / (2 a), so this bound stays feasible for
    every later step with any dt (a jittery timer never forces a limit violation). It is also
    <= distance / dt: a step never overshoots.
    """
    d = np.maximum(np.asarray(distance, dtype=np.float64), 0.0)
    a = np.asarray(accel, dtype=np.float64)
    return np.sqrt((a * dt) ** 2 + 2.0 * a * d) - a * dt


class SafetyLayer:
    """Feed it targets, measured states and engage requests; call `step(now_s)` at a fixed rate."""

    def __init__(self, config: SafetyConfig, initial_q: np.ndarray | None = None):
        self.config = config
        self.n = len(config.joint_names)
        self.counters = SafetyCounters()
        self.state = TeleopState.DISENGAGED
        self.message = "disengaged"
        self._q: np.ndarray | None = None if initial_q is None else self._check_q(initial_q, "initial_q")
        self._v = np.zeros(self.n)
        self._last_step_s: float | None = None
        self._target: np.ndarray | None = None
        self._target_stamp_s = -math.inf
        self._last_valid_s = -math.inf         # arrival time (now_s) of the last valid target
        self._last_input_s = -math.inf         # arrival time of any input (valid, lost or invalid)
        self._command_age_s = math.inf         # newest submitted solve's age when it reached the layer
        self._measured: np.ndarray | None = None
        self._measured_s = -math.inf
        self._hold_start_s = 0.0
        self._hold_resumable = False           # tracking loss may resume; disengage may not
        self._consecutive_invalid = 0
        self._gesture_start_s: float | None = None
        self._gesture_fired = False
        self._ramp_from: np.ndarray | None = None  # engage ramp: q_des = from + alpha (target - from)
        self._ramp_alpha = 0.0

    # -- inputs ----------------------------------------------------------------------------
    def _check_q(self, q, what: str) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (self.n,):
            raise ValueError(f"{what} has {q.shape[0]} values, expected {self.n} ({', '.join(self.config.joint_names)})")
        return q

    def set_measured(self, q_measured: np.ndarray, now_s: float) -> bool:
        """Robot's measured joint positions (config order). Non-finite -> counted, ignored."""
        q = self._check_q(q_measured, "q_measured")
        if not np.all(np.isfinite(q)):
            self.counters.invalid_inputs += 1
            return False
        self._measured, self._measured_s = q.copy(), now_s
        return True

    def submit_target(self, q_target: np.ndarray, stamp_s: float, now_s: float, hands_up: bool = False) -> bool:
        """A retargeted operator pose stamped with its camera time, submitted when its solve is done
        (`now_s` = when its command would be published). Returns False when dropped (NaN/inf ->
        invalid_inputs; older than the previous or than max_input_age_s -> stale_inputs; older
        than max_command_age_s -> stale_commands, and an engaged layer holds)."""
        q = self._check_q(q_target, "q_target")
        self._last_input_s = now_s
        if not (math.isfinite(stamp_s) and np.all(np.isfinite(q))) or stamp_s > now_s + self.config.max_input_age_s:
            self.counters.invalid_inputs += 1
            self._consecutive_invalid += 1
            self._maybe_fault_on_invalid()
            return False
        self._command_age_s = max(0.0, now_s - stamp_s)
        if stamp_s <= self._target_stamp_s or now_s - stamp_s > self.config.max_input_age_s:
            self.counters.stale_inputs += 1
            return False
        if self._command_age_s > self.config.max_command_age_s:
            self._stale_command(now_s)
            return False
        self._consecutive_invalid = 0
        self._target, self._target_stamp_s, self._last_valid_s = q.copy(), stamp_s, now_s
        self._update_gesture(hands_up, now_s)
        return True

    def _stale_command(self, now_s: float) -> None:
        """A solve too old to follow: counted; following stops now (hold, resumable by a fresh target)."""
        self.counters.stale_commands += 1
        why = (f"stale solve: command {self._command_age_s * 1e3:.0f} ms after its camera frame "
               f"(max_command_age_s {self.config.max_command_age_s * 1e3:.0f} ms)")
        if self.state in (TeleopState.ENGAGING, TeleopState.ENGAGED):
            self._hold(now_s, f"{why}: holding {self.config.hold_time_s:.2f} s then returning home", resumable=True)
        elif self.state == TeleopState.HOLDING and self._hold_resumable:
            self.message = f"{why}: holding"   # still stale: the status keeps saying why

    def submit_tracking_lost(self, now_s: float) -> None:
        """Input arrived but holds no usable operator (no person, too few keypoints)."""
        self._last_input_s = now_s
        self._update_gesture(False, now_s)

    def submit_invalid(self, now_s: float) -> None:
        """Input arrived but was malformed (NaN/inf keypoints, wrong sizes): counted, dropped."""
        self._last_input_s = now_s
        self.counters.invalid_inputs += 1
        self._consecutive_invalid += 1
        self._maybe_fault_on_invalid()

    def _maybe_fault_on_invalid(self) -> None:
        if (self.state in (TeleopState.ENGAGING, TeleopState.ENGAGED)
                and self._consecutive_invalid >= self.config.max_consecutive_invalid):
            self._set_state(TeleopState.FAULT, f"{self._consecutive_invalid} invalid inputs in a row; "
                                               "disengage to clear")

    def _update_gesture(self, hands_up: bool, now_s: float) -> None:
        if not self.config.gesture_enabled:
            return
        if not hands_up:
            self._gesture_start_s, self._gesture_fired = None, False
            return
        if self._gesture_start_s is None:
            self._gesture_start_s = now_s
        if not self._gesture_fired and now_s - self._gesture_start_s >= self.config.gesture_hold_s:
            self._gesture_fired = True
            if self.state in (TeleopState.ENGAGING, TeleopState.ENGAGED):
                self.disengage(now_s, "hands-up gesture")
            else:
                self.engage(now_s, "hands-up gesture")

    # -- engage / disengage -----------------------------------------------------------------
    def engage(self, now_s: float, why: str = "engage requested") -> tuple[bool, str]:
        """Start the ramp from the measured joint state (or the last command) to the operator."""
        if self.state == TeleopState.FAULT:
            return False, f"in FAULT ({self.message}); call disengage first to clear it"
        if self.state in (TeleopState.ENGAGING, TeleopState.ENGAGED):
            return True, f"already {self.state.name}"
        fresh = self._measured is not None and now_s - self._measured_s <= self.config.measured_timeout_s
        if fresh:
            self._q = np.clip(self._measured, self.config.cmd_lower, self.config.cmd_upper)
            self._v = np.zeros(self.n)
            start = "measured joint state"
        elif self._q is not None:
            start = "last command"
        else:
            self._q, start = self.config.home.copy(), "home (no joint state yet)"
        self._start_ramp(f"{why}: ramping from {start}")
        return True, self.message

    def _start_ramp(self, message: str) -> None:
        self._ramp_from, self._ramp_alpha = self._q.copy(), 0.0
        self._set_state(TeleopState.ENGAGING, message)

    def disengage(self, now_s: float, why: str = "disengage requested") -> tuple[bool, str]:
        """Hold, then return home slowly. Also clears FAULT."""
        if self.state == TeleopState.FAULT:
            self._consecutive_invalid = 0
        if self.state in (TeleopState.DISENGAGED, TeleopState.RETURNING_HOME):
            if self.state == TeleopState.DISENGAGED:
                self.message = f"{why}: already disengaged"
            return True, self.message
        self._hold(now_s, f"{why}: holding {self.config.hold_time_s:.2f} s then returning home", resumable=False)
        return True, self.message

    def set_engaged(self, engaged: bool, now_s: float) -> tuple[bool, str]:
        return self.engage(now_s) if engaged else self.disengage(now_s)

    def _hold(self, now_s: float, message: str, resumable: bool) -> None:
        self._hold_start_s, self._hold_resumable = now_s, resumable
        self._set_state(TeleopState.HOLDING, message)

    def _set_state(self, state: TeleopState, message: str) -> None:
        self.state, self.message = state, message

    # -- control cycle ----------------------------------------------------------------------
    def tracking(self, now_s: float) -> bool:
        return now_s - self._last_valid_s <= self.config.tracking_timeout_s

    def step(self, now_s: float) -> SafetyOutput:
        """Advance to `now_s` and return the command to send."""
        cfg = self.config
        if self._q is None:
            fresh = self._measured is not None and now_s - self._measured_s <= cfg.measured_timeout_s
            self._q = np.clip(self._measured if fresh else cfg.home, cfg.cmd_lower, cfg.cmd_upper)
        if self._last_step_s is None or now_s <= self._last_step_s:
            if self._last_step_s is None:
                self._last_step_s = now_s
            return self._output(now_s)
        dt = min(now_s - self._last_step_s, cfg.max_dt_s)
        self._last_step_s = now_s
        tracking = self.tracking(now_s)

        # Transitions driven by time and input.
        if self.state in (TeleopState.ENGAGING, TeleopState.ENGAGED):
            if now_s - self._last_input_s > cfg.watchdog_timeout_s:
                self.counters.watchdog_trips += 1
                self._hold(now_s, f"watchdog: no input for {now_s - self._last_input_s:.2f} s", resumable=True)
            elif (not tracking and now_s - self._last_input_s <= cfg.tracking_timeout_s
                  and (self.state == TeleopState.ENGAGED or self._target is not None)):
                # Inputs keep arriving but none has a usable operator. A silent stream is the
                # watchdog's business: short gaps are bridged by holding the last target.
                self.counters.tracking_losses += 1
                self._hold(now_s, "operator tracking lost", resumable=True)
        if self.state == TeleopState.HOLDING:
            # resume only on a target that arrived after the hold began (not the one held on)
            if self._hold_resumable and tracking and self._last_valid_s >= self._hold_start_s:
                self._start_ramp("operator back: ramping to the operator")
            elif now_s - self._hold_start_s >= cfg.hold_time_s:
                self._set_state(TeleopState.RETURNING_HOME, "returning home")

        # Desired position and speed cap for this state.
        operator = False
        if self.state == TeleopState.ENGAGING and self._target is not None and tracking:
            # Blend from where the ramp started to the (moving) operator pose; the blend itself
            # advances at engage_velocity on the joint farthest away, so it always completes.
            gap = float(np.max(np.abs(self._target - self._ramp_from)))
            rate = max(cfg.engage_velocity_rad_s / max(gap, 1e-6), 1.0 / cfg.engage_max_time_s)
            self._ramp_alpha = min(1.0, self._ramp_alpha + dt * rate)
            q_des = self._ramp_from + self._ramp_alpha * (self._target - self._ramp_from)
            vcap, operator = cfg.max_velocity, True
        elif self.state == TeleopState.ENGAGED and self._target is not None:
            q_des, vcap, operator = self._target, cfg.max_velocity, True
        elif self.state == TeleopState.RETURNING_HOME:
            q_des, vcap = cfg.home, np.minimum(cfg.return_home_velocity_rad_s, cfg.max_velocity)
        else:   # DISENGAGED, HOLDING, FAULT, ENGAGING without a target: stop where we are
            q_des, vcap = self._q, cfg.max_velocity
        self._limit(q_des, vcap, dt, count=operator, engaged=self.state == TeleopState.ENGAGED)

        if self.state == TeleopState.ENGAGING and operator:
            if self._ramp_alpha >= 1.0:
                self._set_state(TeleopState.ENGAGED, "engaged: following the operator")
        elif self.state == TeleopState.RETURNING_HOME:
            if np.max(np.abs(cfg.home - self._q)) <= 1e-3 and np.max(np.abs(self._v)) <= 1e-6:
                self._set_state(TeleopState.DISENGAGED, "at home, disengaged")
        return self._output(now_s)

    def _limit(self, q_des: np.ndarray, vcap: np.ndarray, dt: float, count: bool, engaged: bool) -> None:
        cfg = self.config
        lo, hi = cfg.cmd_lower, cfg.cmd_upper
        q, v_prev, a = self._q, self._v, cfg.max_acceleration
        target = np.clip(q_des, lo, hi)
        if count and np.any(np.abs(target - q_des) > 1e-12):
            self.counters.position_limit_clamps += 1
        err = target - q
        v_raw = err / dt
        speed = braking_speed(np.abs(err), a, dt)     # <= |err|/dt: never overshoots the target
        if engaged and np.any(np.abs(v_raw) > vcap + 1e-12):
            self.counters.velocity_limit_clamps += 1
        speed = np.minimum(speed, vcap)
        v = np.sign(err) * speed
        # Never faster toward a position limit than we can stop before it.
        v = np.minimum(v, braking_speed(hi - q, a, dt))
        v = np.maximum(v, -braking_speed(q - lo, a, dt))
        v_acc = np.clip(v, v_prev - a * dt, v_prev + a * dt)
        if count and np.any(np.abs(v_acc - v) > 1e-12):
            self.counters.acceleration_limit_clamps += 1
        v = np.clip(v_acc, -cfg.max_velocity, cfg.max_velocity)
        q_new = q + v * dt
        q_safe = np.clip(q_new, lo, hi)
        if np.any(q_safe != q_new):
            self.counters.position_limit_clamps += 1
            v = (q_safe - q) / dt
        self._q, self._v = q_safe, v

    def _output(self, now_s: float) -> SafetyOutput:
        age = now_s - self._target_stamp_s if math.isfinite(self._target_stamp_s) else math.inf
        return SafetyOutput(q=self._q.copy(), qd=self._v.copy(), state=self.state, tracking=self.tracking(now_s),
                            input_age_s=float(age), message=self.message, command_age_s=float(self._command_age_s),
                            counters=SafetyCounters(**{f.name: getattr(self.counters, f.name)
                                                       for f in fields(SafetyCounters)}))

    @property
    def command_age_s(self) -> float:
        """The newest submitted solve's age when it reached the layer (inf before the first)."""
        return self._command_age_s

    @property
    def q_command(self) -> np.ndarray | None:
        return None if self._q is None else self._q.copy()
