"""nodes/process_priority.py: nice on every thread of a process, and a refusal that says how to grant it.

Each case runs in a child process: a nice value raised here could not be lowered again without privilege.
"""
import json
import subprocess
import sys

import pytest

ALL_THREADS = """
import json, os, threading
from pose_ros.nodes.process_priority import set_process_nice, thread_nice_values
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 4)     # raising nice needs no privilege
reason = set_process_nice(target)
after = threading.Thread(target=stop.wait); after.start()
print(json.dumps({"reason": reason, "target": target, "nice": list(thread_nice_values().values())}))
stop.set()
"""

REFUSED = """
import json, os, resource
from pose_ros.nodes.process_priority import set_process_nice, thread_nice_values
start = os.getpriority(os.PRIO_PROCESS, 0)
resource.setrlimit(resource.RLIMIT_NICE, (0, 0))   # no unprivileged allowance to lower nice
if os.geteuid() == 0:
    os.setuid(65534)                                # root could anyway: drop to nobody
print(json.dumps({"reason": set_process_nice(start - 5), "start": start, "nice": list(thread_nice_values().values())}))
"""


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice per thread: Linux")
def test_every_thread_gets_the_nice_value_and_later_threads_inherit_it():
    res = _child(ALL_THREADS)
    assert res["reason"] is None
    assert len(res["nice"]) == 3 and set(res["nice"]) == {res["target"]}     # main, the thread before and the one after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice per thread: Linux")
def test_a_refused_priority_leaves_the_process_as_it_was_and_says_how_to_grant_it():
    res = _child(REFUSED)
    assert res["reason"] is not None and f"cannot set nice {res['start'] - 5}" in res["reason"]
    assert "limits.conf" in res["reason"] and "cap_sys_nice" in res["reason"]
    assert set(res["nice"]) == {res["start"]}


def test_nice_outside_the_kernel_range_is_refused():
    from pose_ros.nodes.process_priority import set_process_nice

    for bad in (-21, 20):
        with pytest.raises(ValueError, match="nice must lie in -20 .. 19"):
            set_process_nice(bad)
