"""Bookkeeping that keeps the server core's per-uplink cost independent of how many sessions it
holds: the earliest deadline of any session, and the longest-finished session.

A server flooded with session starts from ever new addresses holds ``max_sessions`` of them;
recomputing ``min(deadline)`` over all of them on every uplink (the event loop asks for the
next timer after each one) and scanning them all for the one to evict made every frame cost
O(sessions), which is what a garbage flood of 10,000 frames a second through one broker
connection turned into a stall. Both structures here are O(log n) or amortised O(1) per change.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Collection


class DeadlineQueue:
    """The earliest deadline among many keys: a heap with lazy deletion.

    ``deadline_of(key)`` gives a key's current deadline, or None once the key is gone. The
    owner calls :meth:`touch` whenever a key's deadline may have changed (or the key is new);
    touched keys are re-read on the next query, so a burst of changes to one key costs one heap
    entry. Entries that no longer match their key's deadline are discarded when they reach the
    top (and re-pushed with the current deadline if the key still exists, so a change the owner
    forgot to report delays nothing past the old deadline). The heap is rebuilt from ``keys()``
    when stale entries outnumber live ones, which bounds its memory.
    """

    def __init__(
        self, deadline_of: Callable[[str], float | None], keys: Callable[[], Collection[str]]
    ) -> None:
        self._deadline_of = deadline_of
        self._keys = keys
        self._heap: list[tuple[float, str]] = []
        self._touched: set[str] = set()

    def touch(self, key: str) -> None:
        self._touched.add(key)

    def _flush(self) -> None:
        if not self._touched:
            return
        touched, self._touched = self._touched, set()
        for key in touched:
            deadline = self._deadline_of(key)
            if deadline is not None:
                heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 2 * len(self._keys()) + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        heap = []
        for key in self._keys():
            deadline = self._deadline_of(key)
            if deadline is not None:
                heap.append((deadline, key))
        heapq.heapify(heap)
        self._heap = heap

    def earliest(self) -> float | None:
        """The smallest current deadline of any key, or None when there are none."""
        self._flush()
        heap = self._heap
        while heap:
            deadline, key = heap[0]
            current = self._deadline_of(key)
            if current == deadline:
                return deadline
            heapq.heappop(heap)
            if current is not None:
                heapq.heappush(heap, (current, key))
        return None

    def due(self, now: float) -> list[str]:
        """Keys whose deadline is at or before ``now``, earliest first, taken off the queue:
        the caller acts on each and touches it (or removes the key) afterwards."""
        found: list[str] = []
        seen: set[str] = set()
        while True:
            deadline = self.earliest()
            if deadline is None or deadline > now:
                return found
            _, key = heapq.heappop(self._heap)
            if key not in seen:
                seen.add(key)
                found.append(key)


class FinishOrder:
    """Keys of finished sessions in the order they finished, oldest first.

    Keys are recorded as their sessions finish; :meth:`oldest` skips keys whose session is gone
    or running again (``is_finished(key)`` is False). Finish times normally only grow, so the
    order of recording is the order of finish times; when one goes backwards (a restored
    session, or a caller's clock that jumped) the order is sorted again before the next answer.
    """

    def __init__(self, finished_at: Callable[[str], float | None]) -> None:
        self._finished_at = finished_at
        self._order: OrderedDict[str, float] = OrderedDict()
        self._last = float("-inf")
        self._sorted = True

    def add(self, key: str, at: float) -> None:
        self._order.pop(key, None)
        self._order[key] = at
        if at < self._last:
            self._sorted = False
        self._last = max(self._last, at)

    def discard(self, key: str) -> None:
        self._order.pop(key, None)

    def oldest(self) -> str | None:
        """The key that finished first among those still finished, or None."""
        order = self._order
        if not self._sorted:
            self._order = order = OrderedDict(sorted(order.items(), key=lambda item: item[1]))
            self._sorted = True
        while order:
            key, at = next(iter(order.items()))
            if self._finished_at(key) == at:
                return key
            del order[key]  # gone, or running a new session since (re-added when it ends)
        return None
