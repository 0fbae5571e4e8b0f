"""Declared, documented, range-checked node parameters.

Each node module lists its parameters once as `PARAMETERS: list[ParamSpec]`; the node declares
them from that list (so `ros2 param describe` shows the description and range), and the tests
check every parameter named in config/*.yaml and in the launch specs against the same list.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    read_only: bool = False


def declare_parameters(node, specs: list[ParamSpec]) -> dict[str, Any]:
    """Declare `specs` on an rclpy node and return {name: value} after overrides."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    values: dict[str, Any] = {}
    for spec in specs:
        descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
        if spec.min is not None or spec.max is not None:
            lo = spec.min if spec.min is not None else -1e18
            hi = spec.max if spec.max is not None else 1e18
            if isinstance(spec.default, bool):
                pass
            elif isinstance(spec.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            elif isinstance(spec.default, float):
                descriptor.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        if isinstance(spec.default, float):
            # `tracking_max_gap_s: 0` (YAML, or `-p name:=0`) is an INTEGER to ROS, which a DOUBLE parameter
            # refuses with a type error: accept any number, checked and converted below.
            descriptor.dynamic_typing = True
        if isinstance(spec.default, list) and not spec.default:
            # An empty list has no type; declare as string array.
            from rclpy.parameter import Parameter
            from rclpy.exceptions import ParameterUninitializedException
            node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor)
            try:  # declared by type only and not overridden: uninitialized (rclpy raises on get)
                value = node.get_parameter(spec.name).value
            except ParameterUninitializedException:
                value = None
            values[spec.name] = list(value) if value is not None else []
            continue
        node.declare_parameter(spec.name, spec.default, descriptor)
        value = node.get_parameter(spec.name).value
        values[spec.name] = _as_float(spec, value) if isinstance(spec.default, float) else value
    return values


def _as_float(spec: ParamSpec, value: Any) -> float:
    """A float parameter's value (an integer accepted), type- and range-checked: with dynamic typing
    ROS checks neither."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"parameter '{spec.name}' must be a number; got {value!r}")
    value = float(value)
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        raise ValueError(f"parameter '{spec.name}' = {value:g} is outside [{spec.min}, {spec.max}]")
    return value


def parameters_in_yaml(path: str | Path) -> dict[str, dict[str, Any]]:
    """{node_name: {param: value}} from a ROS 2 parameter file (node: ros__parameters: ...)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a ROS 2 parameter file must be a mapping of node names")
    out: dict[str, dict[str, Any]] = {}
    for node_name, section in data.items():
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ValueError(f"{path}: node '{node_name}' has no 'ros__parameters' section")
        out[str(node_name).lstrip("/")] = _flatten(section["ros__parameters"] or {})
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
