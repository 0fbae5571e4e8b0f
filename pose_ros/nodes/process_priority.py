"""Scheduling priority (Linux nice) for the latency-critical teleop processes.

Why: on a robot's computer the teleop chain shares the cores with perception, drivers and planners.
At equal priority the kernel splits a core evenly among whatever is runnable, so human_pose (MediaPipe,
~20-30 ms of CPU per frame) fell to half rate with commands 100-500 ms old beside one busy process
(README, teleop latency). A stale joint command is a safety problem, so the chain asks the kernel for
a larger share: a negative nice value gives a thread about 1.25x the CPU weight per step below 0
(nice -10: ~9x a nice-0 process), which the other work keeps only while the chain is idle.

Linux applies nice to threads, not processes: every thread that exists now is changed (from
/proc/self/task), and threads started later inherit the value of the thread that starts them.
Lowering nice below 0 needs privilege: root, CAP_SYS_NICE, or an RLIMIT_NICE allowance
(``/etc/security/limits.conf``: ``<user> - nice -10``), as ros2_control's real-time setup asks for
rtprio. Without it the node keeps running at normal priority and says so, with the fix.
"""
from __future__ import annotations

import os
from pathlib import Path

NICE_MIN, NICE_MAX = -20, 19

FIX = ("grant it with `sudo setcap cap_sys_nice+ep $(readlink -f $(which python3))`, or a line "
       "'<user> - nice {nice}' in /etc/security/limits.conf (then log in again), or run the launch as root")


def thread_ids() -> list[int]:
    """Ids of this process's threads (Linux); just the process itself elsewhere."""
    try:
        return sorted(int(t) for t in os.listdir("/proc/self/task"))
    except (FileNotFoundError, NotADirectoryError):
        return [os.getpid()]


def set_process_nice(nice: int) -> str | None:
    """Give every thread of this process the nice value ``nice``; None when done, else why not (with
    the fix). Threads that ended meanwhile are skipped."""
    nice = int(nice)
    if not NICE_MIN <= nice <= NICE_MAX:
        raise ValueError(f"nice must lie in {NICE_MIN} .. {NICE_MAX}; got {nice}")
    for tid in thread_ids():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            continue
        except PermissionError as exc:
            return f"cannot set nice {nice} ({exc.strerror}): {FIX.format(nice=nice)}"
    return None


def thread_nice_values() -> dict[int, int]:
    """{thread id: nice} of this process (Linux: from /proc/self/task/<tid>/stat, field 19)."""
    out: dict[int, int] = {}
    for tid in thread_ids():
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()   # after "(comm)": state is field 3, nice field 19
        out[tid] = int(fields[16])
    return out


def nice_parameter() -> "ParamSpec":
    """The ``process_nice`` node parameter of the teleop chain's nodes (read at start-up)."""
    from pose_ros.nodes.params import ParamSpec

    return ParamSpec("process_nice", 0, "scheduling priority of the node's process (Linux nice, -20 .. 19; 0 = "
                     "leave as started). The teleop launch asks for -10 so that other work on the computer "
                     "does not delay joint commands; without the privilege the node runs on at normal priority "
                     "and logs how to grant it", min=NICE_MIN, max=NICE_MAX)


def apply_process_nice(node, nice: int) -> bool:
    """Apply ``nice`` to the node's process (0: leave it) and log the outcome; True when applied."""
    if int(nice) == 0:
        return False
    reason = set_process_nice(int(nice))
    if reason is None:
        node.get_logger().info(f"process priority: nice {int(nice)} on all {len(thread_ids())} threads")
        return True
    node.get_logger().warning(f"process priority left at normal: {reason}")
    return False
