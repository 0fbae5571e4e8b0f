"""Builds a `ros2 launch` description from pose_ros.launch_specs (shared with `pose-ros launch`)."""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pose_ros.launch_specs import SYSTEMS, condition_holds, launch_environment, parameter_value, remappings_for, robot_urdf_for


def _resolve(value: str, share: str) -> str:
    if value and not os.path.isabs(value) and os.path.exists(os.path.join(share, value)):
        return os.path.join(share, value)
    return value


def generate(system_name: str) -> LaunchDescription:
    system = SYSTEMS[system_name]
    share = get_package_share_directory("pose_ros")

    def nodes(context):
        args = {a.name: LaunchConfiguration(a.name).perform(context) for a in system.args}
        actions = []
        # composed:=true: the composable nodes run in one pose_ros.nodes.container process, with
        # exactly the command `pose-ros launch` builds (same parameter files and remappings).
        composed = bool(system.composable) and condition_holds("composed==true", args)
        if composed:
            from pose_ros.cli.launcher import plan

            actions += [ExecuteProcess(cmd=p.command, name=p.spec.name, output="screen")
                        for p in plan(system, args) if p.spec.module == "container"]
        for spec in system.nodes:
            if not condition_holds(spec.condition, args):
                continue
            if composed and spec.name in system.composable:
                continue
            params = []
            if spec.params_file:
                params.append(os.path.join(share, "config", spec.params_file))
            overrides = dict(spec.params)
            for arg_name, param in spec.arg_params.items():
                value = args.get(arg_name, "")
                if value != "":
                    overrides[param] = parameter_value(_resolve(value, share))
            for arg_name, param in spec.arg_file_params.items():
                path = robot_urdf_for(args) if arg_name == "robot" else args[arg_name]
                with open(_resolve(path, share)) as f:
                    overrides[param] = f.read()
            if overrides:
                params.append(overrides)
            actions.append(Node(package=spec.package, executable=spec.executable, name=spec.name,
                                parameters=params, remappings=remappings_for(spec, args), output="screen"))
        return actions

    # The system's Fast DDS profile (config/) and one BLAS thread per node, unless the user's
    # environment names its own.
    env = [SetEnvironmentVariable(k, v)
           for k, v in launch_environment(system, dict(os.environ), os.path.join(share, "config")).items()]
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in system.args]
        + env + [OpaqueFunction(function=nodes)])
