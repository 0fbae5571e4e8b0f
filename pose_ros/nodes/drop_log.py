"""Dropped-frame accounting shared by the perception nodes.

A node must never crash or stay silent on bad input, nor flood the log at camera rate: each
reason is logged once with its detail, and every drop is counted (the counts go to the node's
status line or /diagnostics).
"""
from __future__ import annotations

from collections import Counter


class DropLog(Counter):
    """Counts of dropped frames by reason; `record` also logs a reason the first time it occurs."""

    def __init__(self, logger, totals_hint: str) -> None:
        super().__init__()
        self._logger = logger
        self._totals_hint = totals_hint
        self._logged: set[str] = set()

    def record(self, reason: str, detail: str = "") -> None:
        self[reason] += 1
        if reason not in self._logged:
            self._logged.add(reason)
            self._logger.warning(f"dropping frame ({reason}){': ' + detail if detail else ''} "
                                 f"(logged once; counted, totals in {self._totals_hint})")

    def summary(self) -> str:
        """'reason: n, ...' sorted by reason, or 'none': the drops part of a node's status line."""
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.items())) or "none"
