"""What each system (`object_pose`, `teleop`, `demo`, ...) runs: one declarative description.

Both `launch/*.launch.py` (real ROS 2 installs, `ros2 launch pose_ros ...`) and
`pose-ros launch <system>` (plain venvs, where `launch` is not on PyPI) build their processes
from these specs, so the two cannot drift apart. Plain Python: no ROS imports.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pose_ros.nodes.blas_threads import blas_environment


@dataclass(frozen=True)
class NodeSpec:
    """One node process."""
    executable: str                    # console script / `ros2 run pose_ros <executable>`
    module: str                        # pose_ros.nodes.<module> (for `python -m` in a venv)
    name: str                          # node name (parameter file section)
    params_file: str | None = None     # relative to the package's config/ dir
    # Launch arguments that become parameters of this node: {argument: parameter}.
    arg_params: dict[str, str] = field(default_factory=dict)
    # Fixed parameter overrides, {parameter: value}.
    params: dict[str, object] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    # Only started when this launch argument is true ("" = always).
    condition: str = ""
    # A node from another ROS package (e.g. robot_state_publisher): started by `ros2 launch` only,
    # since a plain venv does not have it; `pose-ros launch` says it is skipped.
    package: str = "pose_ros"
    # Launch arguments naming a file whose *content* becomes a parameter: {argument: parameter}.
    arg_file_params: dict[str, str] = field(default_factory=dict)
    # Launch arguments that add a remapping when not empty: {argument: (topic, target)}, "{}" in
    # target = the argument's value (e.g. a ros2_control controller name). See `remappings_for`.
    arg_remappings: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def ros_only(self) -> bool:
        return self.package != "pose_ros"


@dataclass(frozen=True)
class LaunchArg:
    name: str
    default: str
    description: str


@dataclass(frozen=True)
class SystemSpec:
    name: str
    description: str
    args: tuple[LaunchArg, ...]
    nodes: tuple[NodeSpec, ...]
    # Nodes that the launch argument `composed:=true` runs in one process (pose_ros.nodes.container).
    composable: tuple[str, ...] = ()
    # Fast DDS XML profile (config/) the launch applies through FASTDDS_DEFAULT_PROFILES_FILE
    # unless the user set that variable; "" = Fast DDS defaults.
    dds_profile: str = ""


_CAMERA_ARGS = (
    LaunchArg("camera", "synthetic", "camera source: synthetic | dataset | realsense | none"),
    LaunchArg("dataset", "", "BOP or YCB-Video scene folder replayed when camera:=dataset"),
    LaunchArg("rate", "10.0", "camera rate in Hz (synthetic and dataset cameras)"),
)


def _camera_nodes() -> tuple[NodeSpec, ...]:
    return (
        NodeSpec("synthetic_camera", "synthetic_camera_node", "synthetic_camera", "synthetic_camera.yaml",
                 arg_params={"rate": "rate_hz"}, condition="camera==synthetic"),
        NodeSpec("dataset_camera", "dataset_camera_node", "dataset_camera", "dataset_camera.yaml",
                 arg_params={"rate": "rate_hz", "dataset": "dataset_path"}, condition="camera==dataset"),
        NodeSpec("realsense_camera", "realsense_camera_node", "realsense_camera", "realsense_camera.yaml",
                 condition="camera==realsense"),
    )


# Whole camera frames through shared memory (see the file); every system that moves images uses it.
IMAGES_DDS_PROFILE = "fastdds_images.xml"

SYSTEMS: dict[str, SystemSpec] = {
    "camera": SystemSpec(
        "camera", "A camera (synthetic by default) and a monitor printing what arrives.",
        _CAMERA_ARGS,
        _camera_nodes() + (NodeSpec("topic_monitor", "topic_monitor_node", "topic_monitor", "topic_monitor.yaml"),),
        dds_profile=IMAGES_DDS_PROFILE,
    ),
    "object_pose": SystemSpec(
        "object_pose", "Object 6DoF pose: camera -> object_pose node (poses, TF, markers, debug image).",
        _CAMERA_ARGS + (
            LaunchArg("model", "models/demo_objects.pt", "trained model file (pose-ros train)"),
            LaunchArg("monitor", "true", "print pose error against ground truth, rate and latency"),
        ),
        _camera_nodes() + (
            NodeSpec("object_pose", "object_pose_node", "object_pose", "object_pose.yaml",
                     arg_params={"model": "model_file"}),
            NodeSpec("topic_monitor", "topic_monitor_node", "topic_monitor", "topic_monitor.yaml",
                     params={"object_poses_topic": "/object_pose/poses"}, condition="monitor==true"),
        ),
        dds_profile=IMAGES_DDS_PROFILE,
    ),
    "teleop": SystemSpec(
        "teleop", "Humanoid teleoperation: camera -> human_pose -> retarget (safety layer) -> joint commands.",
        (
            LaunchArg("camera", "replay", "skeleton source: replay (BVH mocap, no camera) | realsense | "
                      "none (a realsense-ros driver already running)"),
            LaunchArg("robot", "", "humanoid URDF; empty = the mapping's own robot"),
            LaunchArg("mapping", "config/robots/pose_ros_humanoid.yaml", "retargeting mapping YAML "
                      "(config/robots/unitree_g1.yaml for the Unitree G1)"),
            LaunchArg("bvh", "", "BVH file replayed when camera:=replay (default: CMU 131 walk if present)"),
            LaunchArg("engage", "false", "engage teleoperation on start; otherwise call /retarget/engage"),
            LaunchArg("hands", "false", "human_pose also finds the operator's hands (21 keypoints each), which drive "
                      "/retarget/gripper_*; about doubles human_pose's time per frame"),
            # Measured with bench-teleop on the 2-core machine (10 interleaved runs each, with the DDS
            # profile): colour -> command p50 ~24 ms either way, p95 52 ms composed vs 52 ms separate,
            # same CPU. Not better, so one process per node stays the default (restart, inspect one).
            LaunchArg("composed", "false", "true: camera, human_pose and retarget in one process (the images do "
                      "not cross a process boundary; see pose-ros bench-teleop --composed)"),
            # ros2_control controllers listen on /<controller>/commands (forward_command_controller,
            # std_msgs/Float64MultiArray) and /<controller>/joint_trajectory (joint_trajectory_controller).
            LaunchArg("forward_controller", "", "ros2_control forward_command_controller to drive (e.g. "
                      "forward_position_controller): /retarget/forward_command is remapped to /<name>/commands; "
                      "empty = no remap"),
            LaunchArg("trajectory_controller", "", "ros2_control joint_trajectory_controller to drive (e.g. "
                      "joint_trajectory_controller): /retarget/joint_trajectory is remapped to "
                      "/<name>/joint_trajectory; empty = no remap"),
            LaunchArg("gripper_controller", "", "ros2_control forward_command_controller over the two gripper "
                      "joints [left, right] (e.g. gripper_controller): /retarget/gripper_commands is remapped to "
                      "/<name>/commands; empty = no remap"),
            # Measured with bench-teleop beside one busy core (nodes/process_priority.py; README teleop latency):
            # normal priority 28.8 Hz, p95 86 ms; nice -10 29.6 Hz, p95 71 ms; SCHED_RR 10 30.0 Hz, p95 45 ms.
            LaunchArg("realtime_priority", "10", "real-time priority (SCHED_RR) of the camera, human_pose and "
                      "retarget processes, so other work on the computer does not delay joint commands; below a "
                      "ros2_control loop's; needs CAP_SYS_NICE or a limits.conf 'rtprio' entry, else `nice` "
                      "applies; 0 = not real-time"),
            LaunchArg("nice", "-10", "nice value of those processes when they are not real-time; needs CAP_SYS_NICE "
                      "or a limits.conf 'nice' entry, else the nodes log how and run at normal priority; 0 = leave "
                      "as started"),
        ),
        (
            NodeSpec("realsense_camera", "realsense_camera_node", "realsense_camera", "realsense_camera.yaml",
                     arg_params={"realtime_priority": "process_realtime_priority", "nice": "process_nice"},
                     condition="camera==realsense"),
            NodeSpec("human_pose", "human_pose_node", "human_pose", "human_pose.yaml",
                     arg_params={"hands": "hands", "realtime_priority": "process_realtime_priority",
                                 "nice": "process_nice"}, condition="camera!=replay"),
            NodeSpec("skeleton_replay", "skeleton_replay_node", "skeleton_replay", "skeleton_replay.yaml",
                     arg_params={"bvh": "bvh_file"}, remappings=(("skeletons", "/human_pose/skeletons"),),
                     condition="camera==replay"),
            NodeSpec("retarget", "retarget_node", "retarget", "retarget.yaml",
                     arg_params={"robot": "robot_urdf", "mapping": "mapping_file", "engage": "engage_on_start",
                                 "realtime_priority": "process_realtime_priority", "nice": "process_nice"},
                     remappings=(("skeletons", "/human_pose/skeletons"),),
                     arg_remappings={"forward_controller": ("~/forward_command", "/{}/commands"),
                                     "trajectory_controller": ("~/joint_trajectory", "/{}/joint_trajectory"),
                                     "gripper_controller": ("~/gripper_commands", "/{}/commands")}),
            # Commanded joint states -> TF for RViz's RobotModel (ROS installs only). The URDF is the
            # `robot` argument, or the one the mapping names when that is empty.
            NodeSpec("robot_state_publisher", "", "robot_state_publisher", package="robot_state_publisher",
                     arg_file_params={"robot": "robot_description"},
                     remappings=(("joint_states", "/retarget/joint_states"),)),
        ),
        composable=("realsense_camera", "human_pose", "skeleton_replay", "retarget"),
        dds_profile=IMAGES_DDS_PROFILE,
    ),
}
SYSTEMS["demo"] = SystemSpec(
    "demo", "All-in-one demo on synthetic data: camera -> object pose -> live error/rate/latency monitor.",
    SYSTEMS["object_pose"].args, SYSTEMS["object_pose"].nodes, dds_profile=SYSTEMS["object_pose"].dds_profile,
)


DDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def dds_environment(system: SystemSpec, environ: dict[str, str], config_dir: str) -> dict[str, str]:
    """Environment additions for `system`'s processes: its Fast DDS profile, unless `environ`
    already names one (the user's own profile wins)."""
    import os

    path = os.path.join(config_dir, system.dds_profile)
    if not system.dds_profile or environ.get(DDS_PROFILE_ENV) or not os.path.isfile(path):
        return {}
    return {DDS_PROFILE_ENV: path}


def launch_environment(system: SystemSpec, environ: dict[str, str], config_dir: str) -> dict[str, str]:
    """Everything a launch adds to its nodes' environment: the DDS profile and the BLAS threads."""
    return {**dds_environment(system, environ, config_dir), **blas_environment(environ)}


def parameter_value(text: str) -> object:
    """A launch argument's text as the parameter type it spells (bool, int, float, else str), as
    `-p name:=value` reads it: `ros2 launch` passes parameters as Python values, and the string "-10"
    would not set an integer parameter."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def condition_holds(condition: str, args: dict[str, str]) -> bool:
    """Evaluate a `name==value` or `name!=value` condition against launch argument values."""
    if not condition:
        return True
    negate = "!=" in condition
    name, _, expected = condition.partition("!=" if negate else "==")
    equal = str(args.get(name, "")).strip().lower() == expected.strip().lower()
    return equal != negate


_ROS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def remappings_for(spec: NodeSpec, args: dict[str, str]) -> list[tuple[str, str]]:
    """`spec`'s fixed remappings plus one per non-empty `arg_remappings` argument.

    `forward_controller:=forward_position_controller` -> ("~/forward_command",
    "/forward_position_controller/commands"). The value is a controller name (a ROS name, leading
    and trailing '/' ignored); anything else is a ValueError naming the argument."""
    out = list(spec.remappings)
    for arg_name, (topic, target) in spec.arg_remappings.items():
        value = str(args.get(arg_name, "")).strip().strip("/")
        if not value:
            continue
        if not _ROS_NAME.fullmatch(value):
            raise ValueError(f"launch argument {arg_name}:={args[arg_name]!r} is not a controller name (letters, "
                             "digits and '_', not starting with a digit; '/' between namespaces); give the "
                             f"name the controller manager loaded it under, e.g. {arg_name}:=my_controller")
        out.append((topic, target.format(value)))
    return out


def robot_urdf_for(args: dict[str, str]) -> str:
    """The URDF a teleop launch drives: the `robot` argument, else the one its mapping names."""
    if args.get("robot"):
        return args["robot"]
    from pose_ros.human.retarget_mapping import load_mapping
    from pose_ros.resources import resolve
    return str(load_mapping(resolve(args["mapping"])).urdf_path)


def resolve_args(system: SystemSpec, overrides: dict[str, str]) -> dict[str, str]:
    """Defaults of `system` with user overrides; unknown names are an error."""
    known = {a.name: a.default for a in system.args}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown} for '{system.name}'; "
                         f"valid: {', '.join(sorted(known))}")
    return {**known, **overrides}
