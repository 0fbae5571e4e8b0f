"""/diagnostics from every pose_ros node: rates, drops and state, about once a second.

One `DiagnosticStatus` per node, named ``pose_ros: <node name>`` (hardware_id: the device where there is
one), published as `diagnostic_msgs/DiagnosticArray` on ``/diagnostics`` (reliable, volatile, depth 10,
the QoS rqt_robot_monitor and diagnostic_aggregator subscribe with) every ``period_s``. The node gives a
``collect()`` returning a `DiagnosticReport` (level, one-line message, key/values); the helpers here
measure rates between two reports (`RateMeter`) and turn drop counts into values (`drop_values`).
A ``collect`` that raises publishes an ERROR status naming the exception instead of stopping the timer.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from pose_ros.nodes.qos import result_qos

OK, WARN, ERROR, STALE = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE
DIAGNOSTICS_TOPIC = "/diagnostics"


@dataclass
class DiagnosticReport:
    """What a node says about itself in one /diagnostics status."""
    message: str
    values: Mapping[str, Any] = field(default_factory=dict)
    level: bytes = OK


class RateMeter:
    """Events per second since the previous `rate_hz()` call (thread-safe `tick`)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._last_t = time.monotonic()
        self._last_count = 0

    def tick(self, n: int = 1) -> None:
        with self._lock:
            self.count += n

    def rate_hz(self) -> float:
        with self._lock:
            now, count = time.monotonic(), self.count
            dt, dn = now - self._last_t, count - self._last_count
            self._last_t, self._last_count = now, count
        return dn / dt if dt > 0 else 0.0


def drop_values(drops: Mapping[str, int]) -> dict[str, int]:
    """{'drop: <reason>': count} for a node's dropped-input counts (nodes/drop_log.py)."""
    return {f"drop: {k}": int(v) for k, v in sorted(drops.items())}


def level_name(level: bytes) -> str:
    return {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}.get(level, str(level))


class NodeDiagnostics:
    """Publishes ``collect()`` on /diagnostics every `period_s` (module doc)."""

    def __init__(self, node, collect: Callable[[], DiagnosticReport], period_s: float = 1.0,
                 hardware_id: str | Callable[[], str] = "") -> None:
        self._node = node
        self._collect = collect
        self._hardware_id = hardware_id
        self.name = f"pose_ros: {node.get_name()}"
        self.pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, result_qos())
        self.timer = node.create_timer(period_s, self.publish)

    def status(self) -> DiagnosticStatus:
        try:
            report = self._collect()
        except Exception as exc:  # a diagnostics bug must not take the timer down, and must show
            report = DiagnosticReport(f"diagnostics failed: {type(exc).__name__}: {exc}", {}, ERROR)
        hw = self._hardware_id() if callable(self._hardware_id) else self._hardware_id
        return DiagnosticStatus(level=report.level, name=self.name, message=report.message, hardware_id=str(hw or ""),
                                values=[KeyValue(key=str(k), value=_text(v)) for k, v in report.values.items()])

    def publish(self) -> None:
        if not self._node.context.ok():   # shutting down: the publisher may be gone
            return
        msg = DiagnosticArray(status=[self.status()])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self.pub.publish(msg)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{round(value, 3):.6g}"   # 14.97, 0.5, 123457: readable in rqt_robot_monitor
    return str(value)
