"""`pose-ros bench-teleop` options that need no running chain: --load parsing and refusal, the
processes each load starts, and the command-age summary over TeleopStatus messages."""
from __future__ import annotations

import sys

import pytest

from pose_ros.cli import build_parser
from pose_ros.cli.commands.bench_teleop import LOADS, _command_ages, bench_environment, load_processes


def test_load_parses_and_defaults_to_none():
    parser = build_parser()
    assert parser.parse_args(["bench-teleop"]).load == "none"
    for load in LOADS:
        assert parser.parse_args(["bench-teleop", "--load", load]).load == load


def test_bad_load_is_refused_with_the_valid_values(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench-teleop", "--load", "gpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--load" in err and "'gpu' is not a load" in err and "none, busy, object_pose" in err, err


def test_load_processes():
    assert load_processes("none", 150) == []
    [(name, command, env)] = load_processes("busy", 150)
    assert command[0] == sys.executable and "while True" in command[-1] and env == {}
    procs = load_processes("object_pose", 232)
    names = [name for name, _, _ in procs]
    assert names == ["load_synthetic_camera", "load_object_pose"], names
    # a domain of its own: its camera publishes on the topic names the bench camera uses
    assert all(env == {"ROS_DOMAIN_ID": "0"} for _, _, env in procs)
    assert any("pose_ros.nodes.object_pose_node" in " ".join(cmd) for _, cmd, _ in procs)
    with pytest.raises(ValueError, match="unknown load"):
        load_processes("gpu", 150)


def test_bench_processes_get_the_launchs_blas_setting():
    """The nodes run with one OpenBLAS thread, as `pose-ros launch` starts them; a user's choice wins."""
    env = bench_environment({"PATH": "/bin"})
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == "/bin"
    assert bench_environment({"OPENBLAS_NUM_THREADS": "2"})["OPENBLAS_NUM_THREADS"] == "2"
    assert "OPENBLAS_NUM_THREADS" not in bench_environment({"OMP_NUM_THREADS": "4"})


def test_command_ages_one_per_solve_and_stale_count_in_the_window():
    from builtin_interfaces.msg import Time

    from pose_ros.msg import TeleopStatus

    def status(t_s: int, age_s: float, stale: int) -> tuple[int, TeleopStatus]:
        m = TeleopStatus(command_age_s=age_s, stale_commands=stale)
        m.header.stamp = Time(sec=t_s)
        return 0, m

    msgs = [status(1, 0.03, 0), status(2, 0.03, 0), status(3, 0.04, 0), status(4, 0.2, 1), status(5, 0.2, 1),
            status(6, 0.25, 2), status(7, 0.02, 2), status(9, 0.5, 5)]
    ages, stale = _command_ages(msgs, 2_000_000_000, 8_000_000_000)
    assert [round(a, 3) for a in ages] == [30.0, 40.0, 200.0, 250.0, 20.0]
    assert stale == 2
    assert _command_ages([status(1, float("inf"), 0)], 0, 2_000_000_000) == ([], 0)


def test_default_command_age_limit_is_the_retarget_nodes():
    from pose_ros.cli.commands.bench_teleop import DEFAULT_MAX_COMMAND_AGE_S
    from pose_ros.nodes.retarget_node import PARAMETERS

    spec = next(p for p in PARAMETERS if p.name == "max_command_age_s")
    assert spec.default == DEFAULT_MAX_COMMAND_AGE_S
