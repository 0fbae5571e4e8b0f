"""nodes/process_priority.py: real-time or nice on every thread of a process, a refusal that says how to
grant it, and the fallback from one to the other.

Each case runs in a child process: a priority changed here could not be undone without privilege.
"""
import json
import os
import subprocess
import sys

import pytest

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread scheduling: Linux")

# A thread started before the change and one after: both must carry it (the nodes' MediaPipe and rclpy
# threads exist before the parameter is read; later ones inherit).
THREADS = """
import json, os, threading
from pose_ros.nodes.process_priority import {setter}, thread_scheduling
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
start_nice = os.getpriority(os.PRIO_PROCESS, 0)
reason = {setter}({value})
after = threading.Thread(target=stop.wait); after.start()
print(json.dumps({{"reason": reason, "start_nice": start_nice, "threads": list(thread_scheduling().values())}}))
stop.set()
"""

# As an unprivileged user (root drops to nobody) with no allowance for real-time or a lower nice.
UNPRIVILEGED = """
import json, os, resource
from pose_ros.nodes.process_priority import raise_process_priority, thread_scheduling
resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
if os.geteuid() == 0:
    os.setuid(65534)
result, refusals = raise_process_priority(10, -5)
print(json.dumps({"result": result, "refusals": refusals, "threads": list(thread_scheduling().values())}))
"""


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _may_use_realtime() -> bool:
    import resource

    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 5


@linux_only
def test_every_thread_gets_the_nice_value_and_later_threads_inherit_it():
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 4)       # raising nice needs no privilege
    res = _child(THREADS.format(setter="set_process_nice", value=nice))
    assert res["reason"] is None
    assert len(res["threads"]) == 3 and {t[0] for t in res["threads"]} == {nice}


@linux_only
@pytest.mark.skipif(not _may_use_realtime(), reason="this user may not use SCHED_RR (not root, RLIMIT_RTPRIO < 5)")
def test_every_thread_goes_real_time_round_robin():
    res = _child(THREADS.format(setter="set_process_realtime", value=5))
    assert res["reason"] is None
    assert len(res["threads"]) == 3 and {(t[1], t[2]) for t in res["threads"]} == {(5, 2)}   # SCHED_RR = 2


@linux_only
def test_refused_without_privilege_the_process_stays_as_it_was_and_is_told_how_to_grant_it():
    res = _child(UNPRIVILEGED)
    assert res["result"] == "as started" and len(res["refusals"]) == 2
    assert "cannot set SCHED_RR 10" in res["refusals"][0] and "rtprio 10" in res["refusals"][0]
    assert "cannot set nice -5" in res["refusals"][1] and "nice -5" in res["refusals"][1]
    assert all("limits.conf" in r and "cap_sys_nice" in r for r in res["refusals"])
    assert {t[2] for t in res["threads"]} == {0}


@linux_only
def test_real_time_refused_falls_back_to_nice():
    """Nice 19 (at or above any start) needs no privilege: the fallback is taken even as nobody."""
    res = _child(UNPRIVILEGED.replace("raise_process_priority(10, -5)", "raise_process_priority(10, 19)"))
    assert res["result"] == "nice 19" and len(res["refusals"]) == 1 and "SCHED_RR" in res["refusals"][0]
    assert {(t[0], t[2]) for t in res["threads"]} == {(19, 0)}


def test_values_outside_the_kernel_ranges_are_refused():
    from pose_ros.nodes.process_priority import set_process_nice, set_process_realtime

    for bad in (-21, 20):
        with pytest.raises(ValueError, match="nice must lie in -20 .. 19"):
            set_process_nice(bad)
    for bad in (0, 100):
        with pytest.raises(ValueError, match="real-time priority must lie in 1 .. 99"):
            set_process_realtime(bad)
