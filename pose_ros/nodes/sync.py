"""Approximate-time pairing of N message streams (colour, depth, camera_info).

message_filters is not on PyPI, and its Python synchroniser keeps every message until a match
appears. This one is bounded and counts what it throws away, because on a robot the question
"why is the pose node silent?" is usually answered by those counters.

It is ROS-free (stamps are integers in nanoseconds) so it can be tested exhaustively; nodes feed
it from their subscription callbacks.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class SyncStats:
    """Counters of what the synchroniser did; all cumulative."""
    received: list[int] = field(default_factory=list)
    matched_sets: int = 0
    dropped_unmatched: int = 0   # fell out of a full queue or became older than a matched set
    dropped_out_of_order: int = 0  # older than or equal to the last matched stamp of its stream
    time_jumps: int = 0  # stamps went back by more than the jump threshold (replay loop, restart)


class ApproximateTimeSync:
    """Match one message from each of N streams whose stamps lie within `slop_ns`.

    When a set is found, `callback(*messages)` is called and every queued message at or before
    the matched ones is discarded, so output stamps are strictly increasing per stream. Queues hold
    at most `queue_size` messages each; the oldest is dropped (and counted) when full.
    """

    def __init__(self, num_inputs: int, slop_ns: int, callback: Callable[..., Any],
                 queue_size: int = 10, time_jump_reset_ns: int = 3_000_000_000) -> None:
        if num_inputs < 1:
            raise ValueError("num_inputs must be >= 1")
        if slop_ns < 0:
            raise ValueError(f"slop must be >= 0, got {slop_ns} ns")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._n = num_inputs
        self._slop_ns = int(slop_ns)
        self._callback = callback
        self._queues: list[deque[tuple[int, Any]]] = [deque() for _ in range(num_inputs)]
        self._queue_size = queue_size
        self._last_matched_ns: list[int | None] = [None] * num_inputs
        self._time_jump_reset_ns = int(time_jump_reset_ns)
        self._lock = threading.Lock()
        self.stats = SyncStats(received=[0] * num_inputs)

    def add(self, index: int, stamp_ns: int, msg: Any) -> bool:
        """Offer a message of stream `index`; returns True when it completed a set."""
        with self._lock:
            self.stats.received[index] += 1
            last = self._last_matched_ns[index]
            if last is not None and stamp_ns < last - self._time_jump_reset_ns:
                # A restarted camera or a looping replay: start over instead of dropping forever.
                self.stats.time_jumps += 1
                for q in self._queues:
                    q.clear()
                self._last_matched_ns = [None] * self._n
                last = None
            if last is not None and stamp_ns <= last:
                self.stats.dropped_out_of_order += 1
                return False
            queue = self._queues[index]
            if queue and stamp_ns < queue[-1][0]:
                # Arrived late but still newer than the last set: keep the queue sorted.
                items = sorted([*queue, (stamp_ns, msg)], key=lambda item: item[0])
                queue.clear()
                queue.extend(items)
            else:
                queue.append((stamp_ns, msg))
            while len(queue) > self._queue_size:
                queue.popleft()
                self.stats.dropped_unmatched += 1
            match = self._find_match()
            if match is None:
                return False
            chosen = [self._queues[i][j] for i, j in enumerate(match)]
            for i, j in enumerate(match):
                self.stats.dropped_unmatched += j  # older unmatched messages of stream i
                for _ in range(j + 1):
                    self._queues[i].popleft()
                self._last_matched_ns[i] = chosen[i][0]
            self.stats.matched_sets += 1
        self._callback(*[m for _, m in chosen])
        return True

    def _find_match(self) -> Sequence[int] | None:
        """Newest set within slop, pivoting on every message of the sparsest queue."""
        if any(not q for q in self._queues):
            return None
        pivot_stream = min(range(self._n), key=lambda i: len(self._queues[i]))
        best: tuple[int, list[int]] | None = None
        for stamp, _ in reversed(self._queues[pivot_stream]):
            indices: list[int] = []
            ok = True
            for i, queue in enumerate(self._queues):
                j = min(range(len(queue)), key=lambda k: abs(queue[k][0] - stamp))
                if abs(queue[j][0] - stamp) > self._slop_ns:
                    ok = False
                    break
                indices.append(j)
            if ok:
                stamps = [self._queues[i][j][0] for i, j in enumerate(indices)]
                if max(stamps) - min(stamps) <= self._slop_ns:
                    best = (stamp, indices)
                    break
        return None if best is None else best[1]

    def reset(self) -> None:
        """Forget queued messages and stamp history (e.g. after the camera restarted)."""
        with self._lock:
            for q in self._queues:
                q.clear()
            self._last_matched_ns = [None] * self._n
