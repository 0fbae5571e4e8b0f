"""One-Euro filter: smooths jitter, follows motion with bounded lag, handles time properly."""
import numpy as np
import pytest

from pose_ros.human.one_euro import OneEuroConfig, OneEuroFilter


def _run(filt, xs, ts):
    return np.array([filt.filter(x, t) for x, t in zip(xs, ts)])


def test_reduces_jitter_on_a_still_noisy_signal():
    rng = np.random.default_rng(0)
    ts = np.arange(300) / 30.0
    truth = np.array([0.3, -0.2, 1.5])
    noisy = truth + rng.normal(0, 0.01, size=(300, 3))
    out = _run(OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.5)), noisy, ts)
    raw_err = np.std(noisy[60:] - truth)
    filt_err = np.std(out[60:] - truth)
    assert filt_err < raw_err / 2.5, (raw_err, filt_err)
    # frame-to-frame jitter (what the robot would feel) drops even more
    assert np.std(np.diff(out[60:], axis=0)) < np.std(np.diff(noisy[60:], axis=0)) / 4


def test_step_is_followed_with_bounded_lag():
    ts = np.arange(90) / 30.0
    xs = np.where(ts >= 1.0, 1.0, 0.0)[:, None] * np.ones((1, 2))
    out = _run(OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.5)), xs, ts)
    after = out[ts >= 1.0, 0]
    assert after[0] < 1.0                    # it does smooth (not a pass-through)
    reached = np.flatnonzero(after >= 0.9)
    assert len(reached) and reached[0] <= 6  # 90 % of the step within 0.2 s at 30 Hz
    assert np.all(out[:, 0] <= 1.0 + 1e-9)   # first-order: no overshoot


def test_higher_beta_means_less_lag_on_a_ramp():
    ts = np.arange(60) / 30.0
    xs = (0.5 * ts)[:, None]
    lag = []
    for beta in (0.0, 5.0):
        out = _run(OneEuroFilter(OneEuroConfig(min_cutoff=0.5, beta=beta)), xs, ts)
        lag.append(abs(xs[-1, 0] - out[-1, 0]))
    assert lag[1] < lag[0] / 2


def test_variable_dt_gaps_and_backwards_time_reset():
    f = OneEuroFilter(OneEuroConfig(max_gap_s=0.5))
    f.filter(np.zeros(3), 0.0)
    f.filter(np.zeros(3), 0.01)
    y = f.filter(np.ones(3), 0.08)           # irregular dt is fine
    assert np.all((y > 0) & (y < 1))
    y = f.filter(np.full(3, 5.0), 2.0)        # gap > max_gap_s: restart, pass through
    np.testing.assert_allclose(y, 5.0)
    y = f.filter(np.full(3, 7.0), 1.5)        # time went backwards: restart
    np.testing.assert_allclose(y, 7.0)
    assert f.resets == 2


def test_nan_passes_through_and_restarts_that_element():
    f = OneEuroFilter()
    f.filter(np.array([0.0, 0.0]), 0.0)
    y = f.filter(np.array([np.nan, 0.0]), 0.033)
    assert np.isnan(y[0]) and y[1] == 0.0
    y = f.filter(np.array([2.0, 0.0]), 0.066)
    assert y[0] == 2.0                        # reappearing element starts at its value


def test_bad_config_and_shape_change_raise():
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroConfig(min_cutoff=0.0)
    with pytest.raises(ValueError, match="beta"):
        OneEuroConfig(beta=-1.0)
    f = OneEuroFilter()
    f.filter(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="shape"):
        f.filter(np.zeros(4), 0.1)
