"""Safety layer state machine, driven by an explicit clock: every emitted command is checked
against position, velocity and acceleration limits."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO_ROOT

from pose_ros.human.retarget_mapping import load_mapping
from pose_ros.human.safety import SafetyConfig, SafetyConfigError, SafetyLayer, TeleopState

DT = 0.02   # 50 Hz control loop


def _config(**kw) -> SafetyConfig:
    base = dict(joint_names=["a", "b", "c"], lower=[-1.0, -2.0, 0.0], upper=[1.0, 2.0, 2.5],
                max_velocity=[1.0, 2.0, 1.5], max_acceleration=[10.0, 10.0, 10.0], home=[0.0, 0.0, 0.5],
                position_margin_rad=0.05, engage_velocity_rad_s=0.5, engage_max_time_s=3.0,
                return_home_velocity_rad_s=0.3, hold_time_s=0.5, tracking_timeout_s=0.2, watchdog_timeout_s=0.4,
                max_input_age_s=0.3, measured_timeout_s=0.5, max_consecutive_invalid=5)
    base.update(kw)
    return SafetyConfig(**base)


class Sim:
    """Drives a SafetyLayer at 50 Hz and records every command."""

    def __init__(self, layer: SafetyLayer, t0: float = 100.0):
        self.layer, self.now = layer, t0
        self.q, self.states = [], []

    def run(self, seconds: float, target=None, lost: bool = False, silent: bool = False, stamp_lag: float = 0.0,
            hands_up: bool = False):
        for _ in range(int(round(seconds / DT))):
            self.now += DT
            if not silent:
                if lost:
                    self.layer.submit_tracking_lost(self.now)
                elif target is not None:
                    self.layer.submit_target(np.asarray(target, float), self.now - stamp_lag, self.now, hands_up)
            out = self.layer.step(self.now)
            self.q.append(out.q)
            self.states.append(out.state)
        return out

    def check_limits(self, cfg: SafetyConfig, start: int = 0):
        """Limits hold on every command from `start` (engaging re-bases the command on the measured
        state, which is where the robot is, so limits are checked from there on)."""
        q = np.array(self.q[start:])
        assert np.all(q >= cfg.cmd_lower - 1e-12) and np.all(q <= cfg.cmd_upper + 1e-12)
        v = np.diff(q, axis=0) / DT
        assert np.all(np.abs(v) <= cfg.max_velocity * (1 + 1e-9) + 1e-12)
        a = np.diff(v, axis=0) / DT
        assert np.all(np.abs(a) <= cfg.max_acceleration * (1 + 1e-6) + 1e-9), np.abs(a).max(axis=0)
        return q, v


@pytest.mark.parametrize("max_time_s", [10.0, 3.0])
def test_engage_ramps_from_measured_state_rate_limited(max_time_s):
    cfg = _config(engage_max_time_s=max_time_s)
    layer = SafetyLayer(cfg, initial_q=cfg.home)
    sim = Sim(layer)
    measured = np.array([0.4, -1.0, 1.5])
    target = np.array([-0.6, 1.2, 0.3])
    sim.run(0.2, target=target)                        # operator visible, not engaged: robot stays put
    assert layer.state == TeleopState.DISENGAGED and np.allclose(sim.q[-1], cfg.home)
    layer.set_measured(measured, sim.now)
    ok, msg = layer.engage(sim.now)
    assert ok and "measured joint state" in msg and layer.state == TeleopState.ENGAGING
    n0 = len(sim.q)
    sim.run(6.0, target=target)
    q, v = sim.check_limits(cfg, start=n0)
    ramp = q
    # starts at the measured state (one step of motion away at most), not at the old command
    assert np.all(np.abs(ramp[0] - measured) <= cfg.max_velocity * DT + 1e-12)
    # the blend moves no joint faster than the engage speed (static operator), unless that would
    # take longer than engage_max_time_s
    gap = np.max(np.abs(target - measured))
    ramp_speed = max(cfg.engage_velocity_rad_s, gap / max_time_s)
    assert np.all(np.abs(np.diff(ramp, axis=0)) / DT <= ramp_speed + 1e-9)
    states = sim.states[n0:]
    first_engaged = states.index(TeleopState.ENGAGED)
    assert first_engaged * DT == pytest.approx(min(gap / cfg.engage_velocity_rad_s, max_time_s), abs=0.1)
    assert np.allclose(q[-1], target, atol=1e-9)


def test_engage_without_fresh_measurement_starts_from_last_command():
    cfg = _config()
    layer = SafetyLayer(cfg, initial_q=[0.2, 0.2, 0.6])
    sim = Sim(layer)
    layer.set_measured([0.9, 0.9, 0.9], sim.now - 5.0)   # stale joint state is not trusted
    sim.run(0.1, target=[0.2, 0.2, 0.6])
    ok, msg = layer.engage(sim.now)
    assert ok and "last command" in msg
    out = sim.run(0.02, target=[0.2, 0.2, 0.6])
    assert np.allclose(out.q, [0.2, 0.2, 0.6])


def _engaged(cfg, target, sim_seconds=4.0):
    layer = SafetyLayer(cfg, initial_q=cfg.home)
    sim = Sim(layer)
    layer.set_measured(cfg.home, sim.now)
    sim.run(0.1, target=target)
    layer.engage(sim.now)
    sim.run(sim_seconds, target=target)
    assert layer.state == TeleopState.ENGAGED
    return layer, sim


def test_disengage_holds_then_returns_home_slowly():
    cfg = _config()
    target = np.array([0.7, 1.5, 2.0])
    layer, sim = _engaged(cfg, target)
    ok, _ = layer.disengage(sim.now)
    assert ok and layer.state == TeleopState.HOLDING
    n0 = len(sim.q)
    sim.run(0.5 - 1e-9, target=target + 0.3)           # operator keeps moving: ignored while holding
    assert all(s == TeleopState.HOLDING for s in sim.states[n0:])
    assert np.allclose(sim.q[-1], target, atol=1e-9)
    n1 = len(sim.q)
    sim.run(12.0, target=target)
    q, v = sim.check_limits(cfg)
    assert TeleopState.RETURNING_HOME in sim.states[n1:]
    assert np.all(np.abs(v[n1:]) <= cfg.return_home_velocity_rad_s + 1e-9)
    assert layer.state == TeleopState.DISENGAGED and np.allclose(q[-1], cfg.home, atol=1e-3)


def test_tracking_loss_holds_and_resumes_or_returns_home():
    cfg = _config()
    target = np.array([0.5, -0.5, 1.0])
    layer, sim = _engaged(cfg, target)
    sim.run(0.3, lost=True)                             # person left the picture
    assert layer.state == TeleopState.HOLDING and layer.counters.tracking_losses == 1
    assert np.allclose(sim.q[-1], target, atol=1e-9)   # held, no drift
    sim.run(0.1, target=target + 0.1)                   # back within hold_time: ramp again
    assert layer.state in (TeleopState.ENGAGING, TeleopState.ENGAGED)
    sim.run(2.0, target=target + 0.1)
    assert layer.state == TeleopState.ENGAGED
    sim.run(0.3 + cfg.hold_time_s + 0.1, lost=True)     # gone for good
    assert layer.state == TeleopState.RETURNING_HOME and layer.counters.tracking_losses == 2
    sim.check_limits(cfg)


def test_stale_out_of_order_and_watchdog():
    cfg = _config()
    target = np.array([0.3, 0.3, 0.8])
    layer, sim = _engaged(cfg, target)
    assert not layer.submit_target(target, stamp_s=sim.now - 1.0, now_s=sim.now)       # too old
    assert layer.counters.stale_inputs == 1
    assert layer.submit_target(target, stamp_s=sim.now + 0.001, now_s=sim.now)
    assert not layer.submit_target(target + 0.5, stamp_s=sim.now - 0.01, now_s=sim.now)  # out of order
    assert layer.counters.stale_inputs == 2
    sim.run(0.4, target=target, stamp_lag=0.5)           # every input stale: tracking lost
    assert layer.state == TeleopState.HOLDING and layer.counters.stale_inputs > 10
    sim.run(0.2, target=target)
    sim.run(2.0, target=target)
    assert layer.state == TeleopState.ENGAGED
    trips = layer.counters.watchdog_trips
    sim.run(cfg.watchdog_timeout_s + 0.1, silent=True)   # input stream stalled
    assert layer.counters.watchdog_trips == trips + 1 and layer.state == TeleopState.HOLDING
    sim.check_limits(cfg)


def test_stale_solve_holds_counts_and_returns_home_like_stale_input():
    """A solve whose command would leave more than max_command_age_s after its colour frame
    (here 0.2 s: fresh enough for max_input_age_s 0.3, too old to follow) is not followed."""
    cfg = _config(max_command_age_s=0.15)
    target = np.array([0.3, 0.3, 0.8])
    layer, sim = _engaged(cfg, target)
    # The chain falls behind: no command for 0.1 s, then each frame 0.1 s late (camera stamps keep
    # increasing, so nothing is out of order).
    sim.run(0.1, silent=True)
    out = sim.run(0.1, target=target, stamp_lag=0.1)             # late but inside the limit: followed
    assert out.state == TeleopState.ENGAGED and abs(out.command_age_s - 0.1) < 1e-9
    assert layer.counters.stale_commands == 0
    sim.run(0.1, silent=True)                                    # ... and 0.1 s further behind
    q_before = sim.q[-1]
    moved = target + np.array([0.4, -0.4, 0.4])
    assert not layer.submit_target(moved, stamp_s=sim.now + DT - 0.2, now_s=sim.now + DT)
    assert layer.counters.stale_commands == 1 and layer.counters.stale_inputs == 0
    assert layer.state == TeleopState.HOLDING and "stale solve" in layer.message, layer.message
    assert "max_command_age_s" in layer.message
    sim.run(0.3, target=moved, stamp_lag=0.2)                    # the chain stays behind
    out = sim.q[-1]
    assert np.allclose(out, q_before, atol=1e-9)                 # held where it was: no step towards `moved`
    assert layer.state == TeleopState.HOLDING and layer.counters.stale_commands == 1 + 15
    status = layer.step(sim.now)
    assert status.counters.stale_commands == 16 and abs(status.command_age_s - 0.2) < 1e-9
    assert "stale solve" in status.message
    sim.run(cfg.hold_time_s, target=moved, stamp_lag=0.2)        # ... for longer than hold_time: home
    assert layer.state == TeleopState.RETURNING_HOME
    sim.check_limits(cfg)


def test_one_stale_solve_holds_until_the_next_fresh_one():
    cfg = _config(max_command_age_s=0.15)
    target = np.array([0.3, 0.3, 0.8])
    layer, sim = _engaged(cfg, target)
    sim.run(0.22, silent=True)                 # one stall in the chain: the next solve comes 0.22 s late
    sim.run(DT, target=target, stamp_lag=0.22)
    assert layer.state == TeleopState.HOLDING and layer.counters.stale_commands == 1
    sim.run(DT, silent=True)                   # the held-on target is not a reason to resume
    assert layer.state == TeleopState.HOLDING
    sim.run(1.0, target=target + 0.1)          # fresh solves again: ramp back to the operator
    assert layer.state == TeleopState.ENGAGED and layer.counters.stale_commands == 1
    assert np.allclose(sim.q[-1], target + 0.1, atol=1e-6)
    sim.check_limits(cfg)


def test_nan_input_never_moves_the_robot_and_faults_when_persistent():
    cfg = _config()
    target = np.array([0.3, 0.3, 0.8])
    layer, sim = _engaged(cfg, target)
    before = sim.q[-1].copy()
    assert not layer.submit_target(np.array([np.nan, 0.3, 0.8]), sim.now + 0.001, sim.now + 0.001)
    assert not layer.submit_target(np.array([0.3, np.inf, 0.8]), sim.now + 0.002, sim.now + 0.002)
    assert layer.counters.invalid_inputs == 2
    out = layer.step(sim.now + DT)
    sim.now += DT
    assert np.all(np.isfinite(out.q)) and np.allclose(out.q, before)
    for k in range(cfg.max_consecutive_invalid):
        layer.submit_invalid(sim.now)
    assert layer.state == TeleopState.FAULT
    frozen = layer.step(sim.now + DT).q
    ok, msg = layer.engage(sim.now + DT)
    assert not ok and "disengage" in msg
    sim.now += DT
    sim.run(0.5, target=target + 0.4)
    assert np.allclose(sim.q[-1], frozen) and layer.state == TeleopState.FAULT
    ok, _ = layer.disengage(sim.now)
    assert ok and layer.state == TeleopState.HOLDING
    with pytest.raises(ValueError, match="expected 3"):
        layer.submit_target(np.zeros(4), sim.now, sim.now)


def test_limits_clamped_and_counted():
    cfg = _config()
    layer, sim = _engaged(cfg, [0.0, 0.0, 0.5])
    n0 = len(sim.q)
    sim.run(1.5, target=[5.0, -5.0, 0.5])               # beyond the position limits
    sim.run(0.5, target=[-0.9, 1.9, 2.4])               # jump: velocity + acceleration limited
    sim.run(2.0, target=[0.0, 0.0, 0.5])
    q, v = sim.check_limits(cfg)
    assert np.isclose(q[n0:, 0].max(), cfg.cmd_upper[0]) and np.isclose(q[n0:, 1].min(), cfg.cmd_lower[1])
    c = layer.counters
    assert c.position_limit_clamps > 0 and c.velocity_limit_clamps > 0 and c.acceleration_limit_clamps > 0
    assert np.abs(v).max() == pytest.approx(cfg.max_velocity.max(), rel=1e-6)


def test_hands_up_gesture_toggles_engagement():
    cfg = _config(gesture_enabled=True, gesture_hold_s=1.0)
    layer = SafetyLayer(cfg, initial_q=cfg.home)
    sim = Sim(layer)
    target = [0.1, 0.1, 0.6]
    sim.run(0.5, target=target, hands_up=True)
    assert layer.state == TeleopState.DISENGAGED           # not held long enough
    sim.run(0.2, target=target)
    sim.run(1.1, target=target, hands_up=True)
    assert layer.state in (TeleopState.ENGAGING, TeleopState.ENGAGED)
    sim.run(1.0, target=target, hands_up=True)              # still up: no second toggle
    assert layer.state in (TeleopState.ENGAGING, TeleopState.ENGAGED)
    sim.run(0.1, target=target)
    sim.run(1.1, target=target, hands_up=True)
    assert layer.state == TeleopState.HOLDING
    off = SafetyLayer(_config(), initial_q=cfg.home)       # off by default
    sim2 = Sim(off)
    sim2.run(2.0, target=target, hands_up=True)
    assert off.state == TeleopState.DISENGAGED


def test_config_from_mapping_and_errors():
    mapping = load_mapping(REPO_ROOT / "config" / "robots" / "pose_ros_humanoid.yaml")
    cfg = SafetyConfig.from_mapping(mapping)
    assert cfg.joint_names == mapping.command_joints()
    urdf_v = np.array([mapping.model.limits_of(j).velocity for j in cfg.joint_names])
    assert np.all(cfg.max_velocity <= urdf_v) and np.all(cfg.max_velocity <= 4.0)
    with pytest.raises(SafetyConfigError, match="leaves no range"):
        _config(position_margin_rad=1.5)
    with pytest.raises(SafetyConfigError, match="max velocity"):
        _config(max_velocity=[1.0, 0.0, 1.0])
    with pytest.raises(SafetyConfigError, match="unknown keys"):
        SafetyConfig.from_mapping(mapping, overrides={"max_velocty_rad_s": 1.0})


def test_limits_hold_with_jittery_timer_and_hostile_input():
    """Random target jumps beyond the limits, NaN bursts, and a control period jittering between
    5 and 40 ms: no command ever violates position, velocity or acceleration limits."""
    cfg = _config()
    rng = np.random.default_rng(0)
    for trial in range(20):
        layer = SafetyLayer(cfg, initial_q=cfg.home)
        now = 0.0
        layer.set_measured(cfg.home, now)
        q, t = [], []
        target = rng.uniform(cfg.lower - 0.5, cfg.upper + 0.5)
        for k in range(300):
            now += rng.uniform(0.005, 0.04)
            if rng.random() < 0.05:
                target = rng.uniform(cfg.lower - 0.5, cfg.upper + 0.5)
            if rng.random() < 0.05:
                layer.submit_target(np.array([np.nan, 0.0, 0.0]), now, now)
            else:
                layer.submit_target(target + rng.normal(0.0, 0.01, 3), now - 0.01, now)
            if k == 5:
                layer.engage(now)
            out = layer.step(now)
            q.append(out.q)
            t.append(now)
        q, t = np.array(q)[6:], np.array(t)[6:]
        assert np.all(q >= cfg.cmd_lower - 1e-12) and np.all(q <= cfg.cmd_upper + 1e-12)
        v = np.diff(q, axis=0) / np.diff(t)[:, None]
        a = np.diff(v, axis=0) / np.diff(t)[1:, None]
        assert np.all(np.abs(v) <= cfg.max_velocity * (1 + 1e-9)), trial
        assert np.all(np.abs(a) <= cfg.max_acceleration * (1 + 1e-6)), (trial, np.abs(a).max(axis=0))
        assert layer.state in (TeleopState.ENGAGED, TeleopState.ENGAGING, TeleopState.HOLDING)
