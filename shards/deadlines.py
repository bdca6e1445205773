"""Deadlines by key, earliest first: group members' sessions, empty groups' offsets.

Runs in a shard actor, on its loop thread only (no locks). Each key has one
deadline, in whatever unit its owner uses (the coordinator's sessions are
monotonic seconds, its offset expiries wall-clock milliseconds).

So that a loop round costs nothing per idle key, deadlines live in a heap and
the loop looks only at its top. Changes cost O(1) or O(log n):

- ``set`` to a later deadline (a heartbeat, the common case) changes only the
  map; the key's heap entry, now early, is put back with the new deadline when
  it reaches the top;
- ``set`` to an earlier deadline, or for a new key, pushes an entry;
- ``discard`` forgets the key; its entry is dropped when it reaches the top.

So the heap may hold stale entries. When it holds twice as many entries as
there are keys, and at least ``entries_min``, it is rebuilt from the map:
O(keys) once per as many changes, so memory stays within twice the keys.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable


class Deadlines:
    """Keys with one deadline each. Loop thread only, every method."""

    def __init__(self, entries_min: int):
        if entries_min < 1:
            raise AssertionError(f"a deadline heap needs room for entries, not {entries_min}")
        self._entries_min = entries_min
        self._deadline_of: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []   # (deadline, tie-break, key)
        self._pushes = 0   # the tie-break: keys need not be comparable

    def __len__(self) -> int:
        return len(self._deadline_of)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._deadline_of

    def get(self, key: Hashable) -> float | None:
        return self._deadline_of.get(key)

    def set(self, key: Hashable, deadline: float) -> None:
        previous = self._deadline_of.get(key)
        self._deadline_of[key] = deadline
        if previous is None or deadline < previous:
            self._push(deadline, key)

    def discard(self, key: Hashable) -> None:
        self._deadline_of.pop(key, None)

    def next_deadline(self) -> float | None:
        """The earliest deadline, or None without keys."""
        return self._heap[0][0] if self._settle_top() else None

    def pop_due(self, now: float, count_max: int) -> list[Hashable]:
        """Forget and return up to ``count_max`` keys whose deadline is before ``now``,
        earliest first."""
        due = []
        while len(due) < count_max and self._settle_top() and self._heap[0][0] < now:
            _, _, key = heapq.heappop(self._heap)
            del self._deadline_of[key]
            due.append(key)
        return due

    def _settle_top(self) -> bool:
        """Make the top entry a live key's current deadline; False if there are no keys."""
        while self._heap:
            deadline, _, key = self._heap[0]
            current = self._deadline_of.get(key)
            if current == deadline:
                return True
            heapq.heappop(self._heap)
            if current is not None and current > deadline:   # moved later meanwhile
                self._push(current, key)
        return False

    def _push(self, deadline: float, key: Hashable) -> None:
        self._pushes += 1
        heapq.heappush(self._heap, (deadline, self._pushes, key))
        if len(self._heap) >= max(self._entries_min, 2 * len(self._deadline_of)):
            self._heap = [(d, n, k) for n, (k, d) in enumerate(self._deadline_of.items())]
            heapq.heapify(self._heap)
            self._pushes = len(self._heap)
