"""Hand aperture -> gripper command, driven by an explicit clock: rate limit, hysteresis, hold on
loss then home, stale and invalid input, and following the arm's engagement."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import REPO_ROOT

from pose_ros.human.gripper_command import (GripperCommander, GripperConfig, GripperConfigError,
                                            hand_aperture_ratio)
from pose_ros.human.retarget_mapping import load_mapping
from pose_ros.human.safety import SafetyConfig, TeleopState

DT = 0.02            # 50 Hz control loop
HAND_SIZE_M = 0.09   # wrist to middle knuckle


def hand(ratio: float, depth_m: float = 1.2) -> np.ndarray:
    """A HAND21 hand (camera frame, metres) whose thumb-index tip gap is ratio * its size."""
    p = np.zeros((21, 3))
    p[:, 2] = depth_m
    p[9] = [0.0, -HAND_SIZE_M, depth_m]                     # middle knuckle above the wrist
    p[4] = [-0.5 * ratio * HAND_SIZE_M, -0.12, depth_m]      # thumb tip
    p[8] = [0.5 * ratio * HAND_SIZE_M, -0.12, depth_m]       # index tip
    return p


class Sim:
    """Feeds both hands every frame at 50 Hz and records the commands (camera stamp = now - lag)."""

    def __init__(self, grippers: GripperCommander, t0: float = 50.0):
        self.g, self.now = grippers, t0
        self.cmd: dict[str, list[float]] = {"left": [], "right": []}
        self.states: dict[str, list[TeleopState]] = {"left": [], "right": []}

    def run(self, seconds: float, left=None, right=None, follow: bool = True, lag_s: float = 0.0):
        for _ in range(int(round(seconds / DT))):
            self.now += DT
            for side, ratio in (("left", left), ("right", right)):
                self.g.submit(side, None if ratio is None else hand(ratio), self.now - lag_s, self.now)
            out = self.g.step(self.now, follow=follow)
            for side, o in out.items():
                self.cmd[side].append(o.command)
                self.states[side].append(o.state)
        return out


def _config(**kw) -> GripperConfig:
    base = dict(closed_ratio=0.35, open_ratio=0.9, hysteresis_ratio=0.05, max_rate_per_s=2.0,
                max_accel_per_s2=40.0, home=1.0, return_home_rate_per_s=1.0, hold_time_s=0.5,
                tracking_timeout_s=0.2, watchdog_timeout_s=0.4, max_input_age_s=0.3)
    base.update(kw)
    return GripperConfig(**base)


def test_aperture_ratio_is_thumb_index_gap_over_hand_size():
    assert hand_aperture_ratio(hand(0.7)) == pytest.approx(0.7)
    assert hand_aperture_ratio(hand(0.7, depth_m=3.0)) == pytest.approx(0.7)   # distance does not matter
    missing = hand(0.7)
    missing[8] = np.nan          # index tip without 3D
    assert math.isnan(hand_aperture_ratio(missing))
    tiny = hand(0.7) * 0.01      # 1 mm hand: degenerate
    assert math.isnan(hand_aperture_ratio(tiny))
    with pytest.raises(ValueError, match=r"\(21, 3\)"):
        hand_aperture_ratio(np.zeros((33, 3)))


def test_command_follows_the_aperture_rate_limited_and_stays_in_range():
    cfg = _config()
    sim = Sim(GripperCommander(cfg))
    sim.run(0.5, left=1.2, right=0.2)           # open left hand, pinched right hand
    out = sim.run(1.0, left=1.2, right=0.2)
    assert out["left"].state == TeleopState.ENGAGED and out["left"].command == pytest.approx(1.0)
    assert out["right"].command == pytest.approx(0.0)   # ramped from home (open) to closed
    sim.run(1.0, left=0.2, right=0.2)           # left hand closes at once
    for side in ("left", "right"):
        c = np.array(sim.cmd[side])
        assert np.all((c >= 0.0) & (c <= 1.0))
        rate = np.abs(np.diff(c)) / DT
        assert rate.max() <= cfg.max_rate_per_s * (1 + 1e-9)
        assert np.all(np.abs(np.diff(rate)) / DT <= cfg.max_accel_per_s2 * (1 + 1e-6) + 1e-9)
    left = np.array(sim.cmd["left"])[75:]      # the closing, from 1.5 s on
    steps_to_close = int(np.argmax(left <= 1e-9))
    assert 0.5 / DT <= steps_to_close <= 1.0 / DT   # full stroke no faster than 1 / max_rate (0.5 s)
    assert sim.cmd["left"][-1] == 0.0
    # the gripper's velocity limit was hit and counted, like a joint's
    assert sim.g.layers["left"].counters.velocity_limit_clamps > 0


def test_mid_aperture_maps_linearly_and_jitter_inside_the_hysteresis_never_moves_it():
    cfg = _config(max_rate_per_s=50.0, max_accel_per_s2=5000.0)
    g = GripperCommander(cfg)
    sim = Sim(g)
    sim.run(1.0, left=0.625, right=None)        # mid-range (0.35 .. 0.9): about half open
    assert 0.4 < sim.cmd["left"][-1] < 0.6
    settled = sim.cmd["left"][-1]
    rng = np.random.default_rng(0)
    for _ in range(100):                        # +-0.03 jitter on the ratio: < hysteresis 0.05
        sim.run(DT, left=0.625 + rng.uniform(-0.03, 0.03))
    assert np.ptp(sim.cmd["left"][-100:]) < 1e-9 and sim.cmd["left"][-1] == settled
    sim.run(1.0, left=0.9)                      # a real opening moves it: open_ratio opens fully
    assert sim.cmd["left"][-1] == pytest.approx(1.0, abs=1e-3)   # (the smoothing converges exponentially)
    sim.run(1.0, left=0.35)                     # and closed_ratio closes fully
    assert sim.cmd["left"][-1] == pytest.approx(0.0, abs=1e-3)


def test_hand_lost_holds_the_last_command_then_returns_home_then_resumes():
    cfg = _config()
    sim = Sim(GripperCommander(cfg))
    sim.run(1.5, left=0.2, right=0.2)           # both closed (holding an object)
    assert sim.cmd["left"][-1] == 0.0
    n0 = len(sim.cmd["left"])
    out = sim.run(cfg.tracking_timeout_s + cfg.hold_time_s - 0.06, left=None, right=0.2)   # left hand out of view
    held = np.array(sim.cmd["left"][n0:])
    assert np.all(held == 0.0)                  # held closed: tracking timeout + hold time
    assert out["left"].state == TeleopState.HOLDING and not out["left"].tracking
    assert out["right"].state == TeleopState.ENGAGED   # the other hand goes on
    out = sim.run(0.3, left=None, right=0.2)
    assert out["left"].state == TeleopState.RETURNING_HOME
    opening = np.diff(sim.cmd["left"][n0:])
    assert opening.max() <= cfg.return_home_rate_per_s * DT * (1 + 1e-9)   # slowly, like the arm going home
    out = sim.run(1.5, left=None, right=0.2)
    assert out["left"].state == TeleopState.DISENGAGED and out["left"].command == pytest.approx(cfg.home)
    # the hand comes back while the arm is engaged: the gripper ramps back to it
    out = sim.run(1.5, left=0.2, right=0.2)
    assert out["left"].state == TeleopState.ENGAGED and out["left"].command == pytest.approx(0.0)
    assert sim.g.layers["left"].counters.tracking_losses == 1
    # a short loss (less than the tracking timeout) is bridged without a hold
    sim.run(0.1, left=None, right=0.2)
    out = sim.run(0.5, left=0.2, right=0.2)
    assert out["left"].state == TeleopState.ENGAGED and sim.g.layers["left"].counters.tracking_losses == 1


def test_hand_back_during_the_hold_resumes_without_going_home():
    cfg = _config()
    sim = Sim(GripperCommander(cfg))
    sim.run(1.5, left=0.2, right=None)
    out = sim.run(0.35, left=None)
    assert out["left"].state == TeleopState.HOLDING
    n0 = len(sim.cmd["left"])
    out = sim.run(0.5, left=0.2)
    assert out["left"].state == TeleopState.ENGAGED
    assert np.all(np.array(sim.cmd["left"][n0 - 20:]) == 0.0)   # never opened


def test_stale_and_out_of_order_input_is_dropped():
    cfg = _config()
    g = GripperCommander(cfg)
    sim = Sim(g)
    sim.run(1.0, left=1.2)
    assert sim.cmd["left"][-1] == pytest.approx(1.0)
    out = sim.run(0.5, left=0.2, lag_s=cfg.max_input_age_s + 0.05)   # every frame too old
    assert g.layers["left"].counters.stale_inputs == 25
    assert out["left"].state == TeleopState.HOLDING           # stale input is no tracking
    assert np.all(np.array(sim.cmd["left"]) == 1.0)           # never closed on stale frames
    now = sim.now + DT
    assert g.submit("left", hand(0.2), now - 0.05, now)
    assert not g.submit("left", hand(1.2), now - 0.1, now)    # older than the last accepted one


def test_invalid_input_is_counted_and_never_moves_the_gripper():
    g = GripperCommander(_config())
    sim = Sim(g)
    sim.run(1.0, left=0.2)
    bad = hand(1.2)
    bad[4, 0] = np.inf
    now = sim.now + DT
    assert not g.submit("left", bad, now, now)
    assert not g.submit("left", hand(1.2), math.nan, now)
    g.submit_invalid(now, "left")
    assert g.layers["left"].counters.invalid_inputs == 3
    assert g.step(now, follow=True)["left"].command == 0.0
    with pytest.raises(ValueError, match=r"\(21, 3\)"):
        g.submit("left", np.zeros((20, 3)), now, now)
    with pytest.raises(ValueError, match="unknown hand side"):
        g.submit("middle", hand(0.5), now, now)


def test_low_presence_hand_counts_as_not_seen():
    g = GripperCommander(_config(min_hand_score=0.6))
    assert not g.submit("left", hand(0.2), 1.0, 1.0, score=0.4)
    assert g.submit("left", hand(0.2), 1.02, 1.02, score=0.9)


def test_follows_the_hand_only_while_the_arm_is_engaged():
    cfg = _config()
    sim = Sim(GripperCommander(cfg))
    out = sim.run(1.0, left=0.2, right=0.2, follow=False)      # arm disengaged: home, whatever the hand
    assert out["left"].state == TeleopState.DISENGAGED and np.all(np.array(sim.cmd["left"]) == cfg.home)
    out = sim.run(1.5, left=0.2, right=0.2, follow=True)
    assert out["left"].state == TeleopState.ENGAGED and out["left"].command == 0.0
    n0 = len(sim.cmd["left"])
    out = sim.run(cfg.hold_time_s - 0.04, left=0.2, right=0.2, follow=False)   # arm disengaged / lost
    assert out["left"].state == TeleopState.HOLDING
    assert np.all(np.array(sim.cmd["left"][n0:]) == 0.0)       # held, even with the hand in view
    out = sim.run(2.0, left=0.2, right=0.2, follow=False)
    assert out["left"].state == TeleopState.DISENGAGED and out["left"].command == pytest.approx(cfg.home)


def test_config_takes_the_arms_timing_and_refuses_what_cannot_work():
    mapping = load_mapping(REPO_ROOT / "config" / "robots" / "pose_ros_humanoid.yaml")
    arm = SafetyConfig.from_mapping(mapping)
    cfg = GripperConfig.from_safety(arm, max_rate_per_s=3.0)
    for name in ("hold_time_s", "tracking_timeout_s", "watchdog_timeout_s", "max_input_age_s"):
        assert getattr(cfg, name) == getattr(arm, name)
    layer = cfg.safety_config("left")
    assert layer.joint_names == ["left_gripper"] and layer.max_velocity[0] == 3.0
    assert layer.cmd_lower[0] == 0.0 and layer.cmd_upper[0] == 1.0
    with pytest.raises(GripperConfigError, match="closed_ratio < open_ratio"):
        GripperConfig(closed_ratio=0.9, open_ratio=0.5)
    with pytest.raises(GripperConfigError, match="hysteresis_ratio"):
        GripperConfig(hysteresis_ratio=0.3)
    with pytest.raises(GripperConfigError, match="home"):
        GripperConfig(home=1.5)
    with pytest.raises(GripperConfigError, match="max_rate_per_s"):
        GripperConfig(max_rate_per_s=0.0)
