"""Declared, documented, range-checked node parameters, and what `ros2 param set` does to them.

Each node module lists its parameters once as `PARAMETERS: list[ParamSpec]`; the node declares
them from that list (so `ros2 param describe` shows the description and range), and the tests
check every parameter named in config/*.yaml and in the launch specs against the same list.

`ros2 param set` while the node runs (`declare_parameters` installs the guard, one for every node):
- a parameter read only at start-up (the default, `live=False`) is refused with the reason
  "<name> is read at start-up; restart the node to change it" (and which parameters are live);
- a `live=True` parameter is type- and range-checked (and by the node's `check`, if given), then
  written into the dict `declare_parameters` returned, which the node reads while it runs, and
  the node's `apply` is called (e.g. to change a timer's period). So a set either takes effect or
  is refused with a reason; it never "succeeds" without effect.
Parameters the node does not declare from its specs (rclpy's own `use_sim_time`) are left to rclpy.
"""
from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    # True: `ros2 param set` applies it while the node runs (the node reads it from its parameter dict
    # each time, or its `apply` hook acts on it); False: read at start-up only, a set is refused.
    live: bool = False


STARTUP_CONSTRAINT = "read at start-up: ros2 param set is refused; restart the node to change it"
LIVE_CONSTRAINT = "applied live: ros2 param set takes effect while the node runs"


def declare_parameters(node, specs: list[ParamSpec], *, check: Callable[[str, Any], str | None] | None = None,
                       apply: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Declare `specs` on an rclpy node and return {name: value} after overrides.

    Also guards `ros2 param set` (module doc): start-up parameters are refused with a reason; a live
    parameter's new value is checked (`check(name, value)` returns a reason to refuse, or None),
    stored in the returned dict and passed to `apply(name, value)`.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    values: dict[str, Any] = {}
    for spec in specs:
        # Not `read_only=True` for start-up parameters: rclpy would refuse a set before our callback
        # with "Trying to set a read-only parameter", which does not say why or what to do.
        descriptor = ParameterDescriptor(description=spec.description,
                                         additional_constraints=LIVE_CONSTRAINT if spec.live else STARTUP_CONSTRAINT)
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
            # `score_threshold: 0` (YAML, or `-p name:=0`) is an INTEGER to ROS, which a DOUBLE parameter
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
    ParameterGuard(node, specs, values, check, apply)
    return values


class ParameterGuard:
    """`ros2 param set` on a node's declared parameters: refused with a reason, or applied (module doc)."""

    def __init__(self, node, specs: list[ParamSpec], values: dict[str, Any],
                 check: Callable[[str, Any], str | None] | None = None,
                 apply: Callable[[str, Any], None] | None = None) -> None:
        self._specs = {s.name: s for s in specs}
        self._values = values
        # The hooks are usually the node's own methods: held weakly, so that the node's parameter callbacks
        # (the node holds them, they hold this guard) make no reference cycle. A node whose constructor
        # fails is then freed at once, as before, and rclpy.shutdown() never finalises a half-built node.
        self._check = _weak_callable(check)
        self._apply = _weak_callable(apply)
        self._logger = node.get_logger()
        live = sorted(s.name for s in specs if s.live)
        self._live_hint = (f"parameters applied live: {', '.join(live)}" if live
                           else "none of this node's parameters is applied live")
        node.add_on_set_parameters_callback(self._on_set)
        node.add_post_set_parameters_callback(self._on_post_set)

    def refusal(self, name: str, value: Any) -> str | None:
        """Why setting `name` to `value` is refused, or None when it is accepted."""
        spec = self._specs.get(name)
        if spec is None:
            return None
        if not spec.live:
            return f"{name} is read at start-up; restart the node to change it ({self._live_hint})"
        try:
            value = self.converted(spec, value)
        except ValueError as exc:
            return str(exc)
        check = self._check()
        return check(name, value) if check is not None else None

    @staticmethod
    def converted(spec: ParamSpec, value: Any) -> Any:
        if isinstance(spec.default, float):
            return _as_float(spec, value)
        if isinstance(spec.default, list):
            return list(value) if value is not None else []
        return value

    def _on_set(self, parameters):
        from rcl_interfaces.msg import SetParametersResult

        for p in parameters:
            reason = self.refusal(p.name, p.value)
            if reason is not None:
                self._logger.warning(f"ros2 param set {p.name} refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _on_post_set(self, parameters) -> None:
        for p in parameters:
            spec = self._specs.get(p.name)
            if spec is None or not spec.live:
                continue
            value = self.converted(spec, p.value)
            old, self._values[p.name] = self._values.get(p.name), value
            apply = self._apply()
            if apply is not None:
                try:
                    apply(p.name, value)
                except Exception as exc:  # the value is stored; say loudly that acting on it failed
                    self._logger.error(f"parameter {p.name} = {value!r} stored, but applying it failed: {exc!r}")
                    continue
            if value != old:
                self._logger.info(f"parameter {p.name}: {old!r} -> {value!r} (applied live)")


def _weak_callable(fn: Callable | None) -> Callable[[], Callable | None]:
    """() -> fn, or None once fn's object is gone (bound methods are held weakly)."""
    if fn is None:
        return lambda: None
    if inspect.ismethod(fn):
        return weakref.WeakMethod(fn)
    return lambda: fn


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
