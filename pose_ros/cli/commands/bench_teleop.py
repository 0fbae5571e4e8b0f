"""`pose-ros bench-teleop`: the teleop chain end to end over real DDS, camera frame -> joint command.

A camera publishes a real COCO person photo swaying in front of a wall (shift, roll, zoom;
depth: the person's mask at ~2 m on a wall at 3 m) with camera_info, stamped with ROS time at
publish. human_pose and retarget run with exactly the arguments `pose-ros launch teleop
camera:=realsense` gives them (same parameter files, remappings, Fast DDS profile, one BLAS
thread per process), the
RealSense node replaced by this camera:

* --separate (default, like `pose-ros launch teleop` and `ros2 launch`): one process per node,
  the camera in this bench process;
* --composed (launch argument composed:=true): camera, human_pose and retarget in one process
  (pose_ros.nodes.container); the probe learns the published frames from camera_info.

The robot is engaged through /retarget/engage, then a probe in this process measures, over
--duration seconds:

* colour stamp -> skeleton received, skeleton -> command, colour stamp -> first joint command
  computed from that frame (traced through TeleopStatus: its stamp minus input_age_s is the
  colour stamp of the skeleton the cycle used; see pose_ros/eval/teleop_latency_bench.py);
* the rate of commands carrying a fresh camera frame (the teleop rate), and the raw command rate.

Also reported: the CPU each process used over the window (share of one core), the command age
(colour stamp -> the solve's command, from TeleopStatus.command_age_s) and how many solves were
too old to follow (stale_commands: the safety layer held instead, see max_command_age_s).

--load runs something beside the chain for the whole run, so the figures say what a robot's
computer doing other work would see:

* none (default): nothing;
* busy: one plain Python busy loop at normal priority (one core taken, issue #20's case);
* object_pose: the object pose node on the synthetic camera with their launch defaults (`pose-ros
  launch object_pose monitor:=false`, the README's object demo), in a ROS domain of its own so its
  camera topics do not mix with the bench camera's.

The chain runs at the teleop launch's priority (arguments realtime_priority 10, SCHED_RR, else nice -10;
--realtime-priority and --nice override them, 0 = off): human_pose and retarget through their parameters,
and the bench process itself, whose camera stands in for the RealSense node, after the load has started
(the load keeps normal priority).

Runs in a private DDS domain (--domain-id) so other ROS graphs on the machine do not interfere.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_IMAGES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "coco_person_dev"
LOADS = ("none", "busy", "object_pose")
DEFAULT_MAX_COMMAND_AGE_S = 0.15    # retarget's max_command_age_s default (nodes/retarget_node.py)
DESIGN_RATE_HZ, DESIGN_P95_MS = 30.0, 50.0   # DESIGN.md: skeleton + retarget, camera frame -> joint command


def _load_choice(value: str) -> str:
    """`--load` value; anything else is refused with the valid ones (argparse exits with code 2)."""
    if value not in LOADS:
        raise argparse.ArgumentTypeError(f"'{value}' is not a load; use one of {', '.join(LOADS)} (none: nothing "
                                         "beside the chain, busy: one busy CPU core, object_pose: the object "
                                         "pose node on the synthetic camera)")
    return value


def load_processes(load: str, domain: int) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, command, extra environment) of the processes `--load` runs beside the chain.

    object_pose runs in ROS domain `domain + 1` (wrapping within 0..232): the synthetic camera
    publishes on the realsense-ros topic names the bench camera uses."""
    import sys

    if load == "none":
        return []
    if load == "busy":
        return [("load_busy", [sys.executable, "-c", "while True: pass"], {})]
    if load == "object_pose":
        from pose_ros.cli.launcher import plan
        from pose_ros.launch_specs import SYSTEMS

        env = {"ROS_DOMAIN_ID": str((domain + 1) % 233)}
        return [(f"load_{p.spec.name}", p.command, env)
                for p in plan(SYSTEMS["object_pose"], {"camera": "synthetic", "monitor": "false"})]
    raise ValueError(f"unknown load '{load}'; use one of {', '.join(LOADS)}")


def bench_environment(environ) -> dict[str, str]:
    """Environment of the bench's node and load processes: `environ`, unbuffered output, and the
    launch's BLAS setting (OPENBLAS_NUM_THREADS=1 unless the user set one), as `pose-ros launch` gives.

    Why the BLAS setting: without it each node's NumPy runs an OpenBLAS thread per core whose
    spin-wait after every small solve took most of a core in retarget (the IK's 16x16 solves; py-spy:
    60% of its samples in numpy.linalg.solve, 12 ms wall per skeleton instead of 3.9 ms on a loaded
    2-core machine), so the bench measured a chain the launch never starts."""
    from pose_ros.nodes.blas_threads import blas_environment

    env = dict(environ, PYTHONUNBUFFERED="1")
    env.update(blas_environment(env))
    return env


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench-teleop", help="latency and rate of camera -> human_pose -> retarget -> joint command",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="measurement window in seconds (default 30)")
    p.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    p.add_argument("--robot", default="", help="humanoid URDF (default: the teleop launch default, or the "
                   "mapping's own robot when --mapping is given)")
    p.add_argument("--mapping", default="", help="retargeting mapping YAML (default: the teleop launch default)")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                   help="COCO-style folder: images/ + person_keypoints_*.json (default ../shared/data/coco_person_dev)")
    p.add_argument("--image", default="000000000785.jpg", help="photo of one person in --images/images")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID for the bench graph (default: a random private one in 150..229)")
    p.add_argument("--startup-timeout", type=float, default=90.0,
                   help="seconds to wait for the nodes and the first tracked skeleton")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--separate", dest="composed", action="store_false", default=False,
                        help="one process per node, the camera in the bench process (default, like pose-ros "
                        "launch teleop and ros2 launch)")
    layout.add_argument("--composed", dest="composed", action="store_true",
                        help="camera, human_pose and retarget in one process (launch argument composed:=true)")
    p.add_argument("--dds-profile", default="",
                   help="Fast DDS XML profile for every bench process: empty = the teleop launch's "
                   "(config/fastdds_images.xml), 'none' = Fast DDS defaults, or a file")
    p.add_argument("--load", type=_load_choice, default="none", metavar="{" + "|".join(LOADS) + "}",
                   help="run beside the chain: none (default), busy (one Python busy-loop process), object_pose "
                   "(synthetic camera + object pose node, as the object demo)")
    p.add_argument("--max-command-age-s", type=float, default=None,
                   help="retarget's max_command_age_s (default: the launch's, 0.15 s). Under heavy load every solve "
                   "can be stale, the robot holds and never engages; e.g. 5 measures the chain's latency without "
                   "that hold (the report still counts the solves older than 0.15 s)")
    p.add_argument("--realtime-priority", type=int, default=None,
                   help="the chain's SCHED_RR priority (launch argument realtime_priority; default: the launch's, "
                   "10; 0 = not real-time)")
    p.add_argument("--nice", type=int, default=None,
                   help="the chain's nice value when not real-time (launch argument nice; default: the launch's, "
                   "-10; 0 = as started)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    p.add_argument("--log-dir", type=Path, default=None, help="node logs (default: a temporary folder)")
    p.set_defaults(func=_run)


def _machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{cpu}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores "
            f"usable, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


def _run(args: argparse.Namespace) -> int:
    import os
    import random
    import subprocess
    import tempfile

    from pose_ros.launch_specs import DDS_PROFILE_ENV

    if args.duration <= 0:
        print("error: --duration must be > 0")
        return 2
    domain = args.domain_id if args.domain_id is not None else random.randint(150, 229)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    profile = _dds_profile(args.dds_profile)
    if profile is None:
        os.environ.pop(DDS_PROFILE_ENV, None)
    else:
        os.environ[DDS_PROFILE_ENV] = profile   # before this process creates its participant

    from pose_ros.cli.launcher import plan
    from pose_ros.eval.teleop_latency_bench import PersonSequence, load_coco_person
    from pose_ros.launch_specs import SYSTEMS, resolve_args
    from pose_ros.nodes.process_priority import NICE_MAX, NICE_MIN, RT_PRIORITY_MAX, raise_process_priority

    try:
        photo = load_coco_person(args.images, args.image)
        sequence = PersonSequence(photo, args.width, args.height)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    overrides = {"camera": "realsense"}
    if args.nice is not None and not NICE_MIN <= args.nice <= NICE_MAX:
        print(f"error: --nice must lie in {NICE_MIN} .. {NICE_MAX}")
        return 2
    if args.realtime_priority is not None and not 0 <= args.realtime_priority <= RT_PRIORITY_MAX:
        print(f"error: --realtime-priority must lie in 0 .. {RT_PRIORITY_MAX}")
        return 2
    for name, value in (("nice", args.nice), ("realtime_priority", args.realtime_priority)):
        if value is not None:
            overrides[name] = str(value)
    if args.robot:
        overrides["robot"] = args.robot
    if args.mapping:
        overrides["mapping"] = args.mapping
        # The launch's robot default is the pose_ros humanoid; another mapping brings its own robot.
        overrides.setdefault("robot", "")
    retarget_params: dict[str, object] = {"status_period_s": 5.0}
    if args.max_command_age_s is not None:
        if not 0.01 <= args.max_command_age_s <= 5.0:
            print("error: --max-command-age-s must lie in 0.01 .. 5 s")
            return 2
        retarget_params["max_command_age_s"] = float(args.max_command_age_s)
    procs = [p for p in plan(SYSTEMS["teleop"], overrides,
                             {"human_pose": {"status_period_s": 5.0}, "retarget": retarget_params})
             if p.spec.name in ("human_pose", "retarget")]
    if sorted(p.spec.name for p in procs) != ["human_pose", "retarget"]:
        print("error: the teleop launch spec with camera:=realsense does not start human_pose and retarget")
        return 2
    if args.composed:
        procs = [_composed_chain(args, procs)]
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="pose_ros_bench_teleop_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    load = load_processes(args.load, domain)
    print(f"[bench-teleop] ROS_DOMAIN_ID={domain}; load: {args.load}; {args.width}x{args.height} @ {args.rate:g} Hz from "
          f"{args.images / 'images' / args.image} (person mask: {'yes' if sequence.has_mask else 'no, flat depth'}); "
          f"{'composed' if args.composed else 'separate processes'}; DDS profile: {profile or 'Fast DDS defaults'}; "
          f"node logs in {log_dir}")
    env = bench_environment(os.environ)
    loads = []          # started first: the chain starts, engages and is measured under the load
    for name, command, extra in load:
        log = open(log_dir / f"{name}.log", "w")
        loads.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(env, **extra)),
                      log))
    launch_args = resolve_args(SYSTEMS["teleop"], overrides)
    # the bench camera stands in for the RealSense node: the same priority as the nodes
    priority, refusals = raise_process_priority(int(launch_args["realtime_priority"]), int(launch_args["nice"]))
    print(f"[bench-teleop] chain priority (nodes and the bench camera): {priority}"
          + "".join(f"; refused: {r}" for r in refusals))
    running = []
    for p in procs:
        log = open(log_dir / f"{p.spec.name}.log", "w")
        running.append((p, subprocess.Popen(p.command, stdout=log, stderr=subprocess.STDOUT, env=env),
                        log))
    try:
        return _measure(args, sequence, running, log_dir, domain, loads)
    finally:
        for _, proc, log in running + loads:
            if proc.poll() is None:
                proc.send_signal(2)
        for _, proc, log in running + loads:
            try:
                proc.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _dds_profile(choice: str) -> str | None:
    """The Fast DDS profile file the bench uses (None = Fast DDS defaults)."""
    from pose_ros.launch_specs import SYSTEMS, dds_environment
    from pose_ros.resources import config_dir

    if choice.lower() == "none":
        return None
    if choice:
        if not Path(choice).is_file():
            raise SystemExit(f"error: --dds-profile {choice} is not a file")
        return str(Path(choice).absolute())
    return next(iter(dds_environment(SYSTEMS["teleop"], {}, str(config_dir())).values()), None)


def _composed_chain(args: argparse.Namespace, procs: list):
    """One container process: the bench camera (a node, in place of the RealSense node), then
    human_pose and retarget with exactly their launch commands' arguments."""
    from pose_ros.cli.launcher import NodeProcess, container_process, node_command
    from pose_ros.launch_specs import NodeSpec

    cam = NodeSpec("", "teleop_bench", "bench_camera")
    cam_params = {"images": str(args.images.absolute()), "image": args.image, "width": args.width,
                  "height": args.height, "rate_hz": float(args.rate)}
    camera = NodeProcess(cam, node_command(cam, {}, cam_params))
    by_name = {p.spec.name: p for p in procs}
    return container_process("teleop_container", [camera, by_name["human_pose"], by_name["retarget"]])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; NaN elsewhere)."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _command_ages(statuses: list, t_start_ns: int, t_end_ns: int) -> tuple[list[float], int]:
    """Command ages (ms, one per solve: consecutive repeats of TeleopStatus.command_age_s are one
    solve) and the stale_commands added, over the statuses stamped in the window."""
    from pose_ros.nodes.image_conversions import stamp_to_ns

    inside = [m for _, m in statuses if t_start_ns <= stamp_to_ns(m.header.stamp) <= t_end_ns]
    ages, last = [], None
    for m in inside:
        if m.command_age_s != last and m.command_age_s == m.command_age_s and m.command_age_s != float("inf"):
            ages.append(1e3 * m.command_age_s)
        last = m.command_age_s
    stale = inside[-1].stale_commands - inside[0].stale_commands if inside else 0
    return ages, stale


def _measure(args, sequence, running, log_dir, domain: int, loads: list | None = None) -> int:
    import json
    import os
    import threading
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from pose_ros.eval.teleop_latency_bench import TeleopLatencyTracker, format_report
    from pose_ros.nodes.teleop_bench import PersonCameraSource, TeleopProbe
    from pose_ros.nodes.topics import INFO_TOPIC

    loads = loads or []

    def alive() -> bool:
        for name, proc in [(p.spec.name, proc) for p, proc, _ in running] + [(n, proc) for n, proc, _ in loads]:
            if proc.poll() is not None:
                tail = (log_dir / f"{name}.log").read_text()[-2000:]
                print(f"error: {'load process' if name.startswith('load_') else 'node'} '{name}' exited with code "
                      f"{proc.returncode}:\n{tail}")
                return False
        return True

    def wait(pred, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return True
            if not alive():
                return False
            time.sleep(0.05)
        return pred()

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("teleop_bench", context=context)
    tracker = TeleopLatencyTracker()
    probe = TeleopProbe(node, tracker=tracker, frames_topic=INFO_TOPIC if args.composed else None)
    lock = probe.lock  # guards the tracker, whichever callback feeds it

    def on_publish(stamp_ns: int) -> None:
        with lock:
            tracker.published(stamp_ns)

    # composed: the camera is a node in the chain's process; this one only probes
    source = None if args.composed else PersonCameraSource(node, sequence, args.rate, on_publish=on_publish)
    # one thread: rclpy's multi-threaded executor fell behind at 30 Hz under load (100+ queued
    # callbacks), which distorted the very latency measured here
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        t0 = time.monotonic()
        if source is not None:
            source.prepare()
        if not wait(lambda: (source is None or source.color_pub.get_subscription_count() > 0)
                    and probe.last_status() is not None, args.startup_timeout):
            print("error: the human_pose / retarget nodes did not come up (no subscriber to the camera or no "
                  f"/retarget/status) within {args.startup_timeout:.0f} s; see the logs in {log_dir}")
            return 1
        if source is not None:
            source.start()
        if not wait(lambda: (s := probe.last_status()) is not None and s.tracking, args.startup_timeout):
            print(f"error: the retarget node never reported tracking (no operator skeleton) within "
                  f"{args.startup_timeout:.0f} s; see the human_pose log in {log_dir}")
            return 1
        res = probe.engage()
        print(f"[bench-teleop] nodes up and tracking after {time.monotonic() - t0:.1f} s; engage: {res.message}")
        if not res.success or not wait(lambda: probe.last_status().state_name == "ENGAGED", 15.0):
            last = probe.last_status()
            print(f"error: not ENGAGED after engage: {last.message} (stale solves so far: {last.stale_commands}, "
                  f"last command age {1e3 * last.command_age_s:.0f} ms)")
            if last.stale_commands:
                print("  the chain is too slow for max_command_age_s on this machine now; --max-command-age-s 5 "
                      "measures its latency without the safety layer's hold")
            return 1
        time.sleep(1.0)
        pids = {p.spec.name: proc.pid for p, proc, _ in running}
        pids["bench (probe" + (")" if args.composed else " + camera)")] = os.getpid()
        pids.update({name: proc.pid for name, proc, _ in loads})
        cpu0 = {k: _cpu_s(pid) for k, pid in pids.items()}
        with lock:
            tracker.t_start = node.get_clock().now().nanoseconds
        print(f"[bench-teleop] engaged; measuring for {args.duration:g} s")
        time.sleep(args.duration)
        with lock:
            tracker.t_end = node.get_clock().now().nanoseconds
        cpu = {k: 100.0 * (_cpu_s(pid) - cpu0[k]) / args.duration for k, pid in pids.items()}
        if source is not None:
            source.stop()
        time.sleep(0.5)  # let the last frames' commands arrive
        if not alive():
            return 1
        with lock:
            report = tracker.report()
            final = probe.last_status()
            ages_ms, stale_commands = _command_ages(list(probe.status), tracker.t_start, tracker.t_end)
    finally:
        if source is not None:
            source.stop()
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=5.0)
        node.destroy_node()
        rclpy.shutdown(context=context)

    robot = args.robot or (f"of {Path(args.mapping).name}" if args.mapping else "launch default (pose_ros_humanoid)")
    layout = "composed (camera + human_pose + retarget in one process)" if args.composed else "separate processes"
    layout += f", DDS profile {Path(os.environ['FASTDDS_DEFAULT_PROFILES_FILE']).name}" \
        if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") else ", Fast DDS defaults"
    print(format_report(report, f"teleop chain, {args.width}x{args.height} @ {args.rate:g} Hz, robot {robot}, {layout}, "
                                f"load: {args.load}"))
    from pose_ros.eval.teleop_latency_bench import LatencyStats

    age = LatencyStats.of(ages_ms)
    limit_ms = 1e3 * (args.max_command_age_s if args.max_command_age_s is not None else DEFAULT_MAX_COMMAND_AGE_S)
    over_default = sum(a > 1e3 * DEFAULT_MAX_COMMAND_AGE_S for a in ages_ms)
    print(f"  command age at publication (colour stamp -> solve's command, TeleopStatus.command_age_s): "
          f"{age.n} solves, p50 {age.p50_ms:.1f} ms, p95 {age.p95_ms:.1f} ms, max {age.max_ms:.1f} ms; "
          f"over the default {1e3 * DEFAULT_MAX_COMMAND_AGE_S:.0f} ms: {over_default}; stale solves counted by the "
          f"node (> its {limit_ms:.0f} ms, held instead): {stale_commands}")
    print("  CPU over the window (% of one core): " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
    print(f"  final status: {final.state_name}, solve {final.solve_time_ms:.2f} ms, "
          f"stale inputs {final.stale_inputs}, stale commands {final.stale_commands}, "
          f"tracking losses {final.tracking_losses}, "
          f"watchdog trips {final.watchdog_trips}; unmatched command cycles {report['unmatched_cycles']}")
    print(f"  machine: {_machine()}")
    c2c = report["colour_to_command"]
    ok = report["fresh_command_hz"] >= 0.98 * DESIGN_RATE_HZ and c2c.p95_ms <= DESIGN_P95_MS
    print(f"  DESIGN target (>= {DESIGN_RATE_HZ:g} Hz, p95 <= {DESIGN_P95_MS:g} ms on 2 CPU cores, also beside the object "
          f"pose node; a rate within 2% of it counts, the window's edges cut frames): "
          f"{'met' if ok else 'NOT met'} ({report['fresh_command_hz']:.1f} Hz, p95 {c2c.p95_ms:.1f} ms)")
    if args.json:
        out = {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in report.items()}
        out.update(rate_hz=args.rate, width=args.width, height=args.height, robot=args.robot, mapping=args.mapping,
                   machine=_machine(), ros_domain_id=domain, composed=bool(args.composed), cpu_percent=cpu,
                   load=args.load, command_age=age.__dict__, stale_commands_in_window=stale_commands,
                   command_ages_over_default_limit=over_default, max_command_age_s=args.max_command_age_s,
                   dds_profile=os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", ""))
        args.json.write_text(json.dumps(out, indent=2))
    if c2c.n == 0:
        print("error: no joint command could be traced back to a camera frame")
        return 1
    return 0
