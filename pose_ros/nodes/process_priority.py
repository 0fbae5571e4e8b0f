"""Scheduling priority (real-time round-robin, else nice) for the latency-critical teleop processes.

Why: on a robot's computer the teleop chain shares the cores with perception, drivers and planners.
At equal priority the kernel splits a core evenly among whatever is runnable, so human_pose (MediaPipe,
~20-30 ms of CPU per frame) fell to half rate with commands 100-500 ms old beside one busy process
(README, teleop latency). A stale joint command is a safety problem, so the chain asks the kernel for
a larger share: a negative nice value gives a thread about 1.25x the CPU weight per step below 0
(nice -10: ~9x a nice-0 process), which the other work keeps only while the chain is idle.

Nice still shares: beside one busy process the chain kept ~30 Hz but its p95 stayed at 70 ms. A
real-time policy (SCHED_RR) runs the chain's threads whenever they are ready, ahead of every normal
process: 30.0 Hz, p95 31 ms beside a busy core or the object pose node (README). Its priority should
stay below a ros2_control loop's (SCHED_FIFO, typically 50 and up) so the controller still preempts it;
the kernel's real-time throttling (95% of each second by default) keeps a runaway chain from locking
the machine. The nodes ask for real-time first and fall back to nice when it is refused.

Linux applies both to threads, not processes: every thread that exists now is changed (from
/proc/self/task), and threads started later inherit the setting of the thread that starts them.
Both need privilege: root, CAP_SYS_NICE, or RLIMIT_RTPRIO / RLIMIT_NICE allowances
(``/etc/security/limits.conf``: ``<user> - rtprio 10`` and ``<user> - nice -10``, as ros2_control's
real-time setup asks for). Without it the node keeps running at normal priority and says so, with the fix.
"""
from __future__ import annotations

import os
from pathlib import Path

NICE_MIN, NICE_MAX = -20, 19

FIX = ("grant it with `sudo setcap cap_sys_nice+ep $(readlink -f $(which python3))`, or a line "
       "'<user> - {limit}' in /etc/security/limits.conf (then log in again), or run the launch as root")
RT_PRIORITY_MAX = 99


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
            return f"cannot set nice {nice} ({exc.strerror}): {FIX.format(limit=f'nice {nice}')}"
    return None


def set_process_realtime(priority: int) -> str | None:
    """Put every thread of this process under SCHED_RR at ``priority`` (1-99); None when done, else why
    not (with the fix). Threads that ended meanwhile are skipped."""
    priority = int(priority)
    if not 1 <= priority <= RT_PRIORITY_MAX:
        raise ValueError(f"real-time priority must lie in 1 .. {RT_PRIORITY_MAX}; got {priority}")
    if not hasattr(os, "sched_setscheduler"):
        return "real-time scheduling is not available on this system"
    for tid in thread_ids():
        try:
            os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(priority))
        except ProcessLookupError:
            continue
        except PermissionError as exc:
            return f"cannot set SCHED_RR {priority} ({exc.strerror}): {FIX.format(limit=f'rtprio {priority}')}"
    return None


def thread_scheduling(pid: int | str = "self") -> dict[int, tuple[int, int, int]]:
    """{thread id: (nice, real-time priority, policy)} of a process (Linux: /proc/<pid>/task/<tid>/stat
    fields 19, 40 and 41; policy 0 = normal, 2 = SCHED_RR)."""
    out: dict[int, tuple[int, int, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue                                   # a thread that ended meanwhile
        f = stat.rsplit(")", 1)[1].split()             # after "(comm)": state is field 3
        out[int(tid)] = (int(f[16]), int(f[37]), int(f[38]))
    return out


def priority_parameters() -> list["ParamSpec"]:
    """The teleop chain's nodes' ``process_realtime_priority`` and ``process_nice`` (read at start-up)."""
    from pose_ros.nodes.params import ParamSpec

    return [ParamSpec("process_realtime_priority", 0, "real-time priority (SCHED_RR, 1 .. 99; 0 = none) of the "
                      "node's process: its threads run ahead of every normal process. The teleop launch asks for 10 "
                      "(below a ros2_control loop's); refused without the privilege, then process_nice applies",
                      min=0, max=RT_PRIORITY_MAX),
            ParamSpec("process_nice", 0, "scheduling priority of the node's process when it is not real-time (Linux "
                      "nice, -20 .. 19; 0 = leave as started). The teleop launch asks for -10; without the privilege "
                      "the node runs on at normal priority and logs how to grant it", min=NICE_MIN, max=NICE_MAX)]


def raise_process_priority(realtime_priority: int, nice: int) -> tuple[str, list[str]]:
    """Real-time if asked (> 0) and allowed, else nice if asked (!= 0) and allowed, else as started:
    (what the process runs at, the refusals with their fixes)."""
    refusals: list[str] = []
    if int(realtime_priority) > 0:
        reason = set_process_realtime(int(realtime_priority))
        if reason is None:
            return f"SCHED_RR {int(realtime_priority)}", refusals
        refusals.append(reason)
    if int(nice) != 0:
        reason = set_process_nice(int(nice))
        if reason is None:
            return f"nice {int(nice)}", refusals
        refusals.append(reason)
    return "as started", refusals


def apply_process_priority(node, realtime_priority: int, nice: int) -> str:
    """``raise_process_priority`` for a node's process, logged (each refusal with its fix); returns what
    the process runs at."""
    result, refusals = raise_process_priority(realtime_priority, nice)
    for reason in refusals:
        node.get_logger().warning(f"process priority refused: {reason}")
    if int(realtime_priority) > 0 or int(nice) != 0:
        node.get_logger().info(f"process priority: {result} (all {len(thread_ids())} threads)")
    return result
