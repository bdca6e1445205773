"""The fetch purgatory: fetches parked at a partition's readable end until it moves.

Runs in a shard actor, on its loop thread only (shard_server.py); no locks.

A fetch for the offset at its partition's high watermark that may wait is
parked here, under its partition's key, instead of being answered empty at
once (Kafka's fetch purgatory). Each parked fetch is settled exactly once, by
calling its ``answer(request, error)``:

- ``wake(key)``: the partition's readable end moved (an append became
  readable) or the partition was sealed; ``error`` is None;
- ``expire(now_s)``: its wait ended; ``error`` is None (the answer is what
  the log holds: nothing new);
- ``fail(key, error)``: the partition went away; ``error`` says why.

The purgatory knows nothing of fetches or replies: ``request`` belongs to
whoever parked it and ``answer`` builds the reply. So a consumer's fetch and
(with replication) a follower's fetch wait side by side, each answered its
own way.

Bounds. At most ``parked_max`` fetches (PARKED_FETCHES_MAX) wait at once.
Deadlines live in one heap; a fetch settled early leaves the heap when it
reaches the top, or, when the heap holds ``heap_entries_max`` entries, with
every other settled one at once.

Fair shares. Each fetch is parked for an ``owner`` (for a consumer's fetch:
its router and its client connection there), so one client cannot take every
place and make every other consumer's long poll return at once. While there
is room, anyone parks. When the purgatory is full, an owner's fair share is
``parked_max`` divided among the owners with fetches parked (itself
included), and at least one place: an owner below its share takes the place of the oldest fetch of
the owner holding the most, which is answered now (its wait ends early; the
answer is what the log holds); an owner at or above its share is refused,
and its caller answers the fetch at once. So any owner can always park up to
``parked_max / owners``, however many fetches another parks. Finding the
owner holding the most costs O(1): owners are kept in buckets by count.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from typing import Any

from plinth import limits
from plinth.errors import BrokerError

# answer(request, error): build and send the reply; error is None unless the fetch failed.
Answer = Callable[[Any, "BrokerError | None"], None]


class ParkedFetch:
    """One parked fetch; ordered by deadline in the heap."""

    __slots__ = ("deadline_s", "key", "owner", "request", "answer", "settled")

    def __init__(self, deadline_s: float, key: Hashable, owner: Hashable, request: Any,
                 answer: Answer):
        self.deadline_s = deadline_s
        self.key = key
        self.owner = owner
        self.request = request
        self.answer = answer
        self.settled = False

    def __lt__(self, other: ParkedFetch) -> bool:
        return self.deadline_s < other.deadline_s


class FetchPurgatory:
    """Parked fetches, by partition key and by deadline. Loop thread only, every method."""

    def __init__(self, parked_max: int | None = None, heap_entries_max: int | None = None):
        # The limits are read now, not when this module was imported.
        parked_max = limits.PARKED_FETCHES_MAX if parked_max is None else parked_max
        if heap_entries_max is None:
            heap_entries_max = limits.PARKED_HEAP_ENTRIES_MAX
        if not 0 <= parked_max < heap_entries_max:
            raise AssertionError(f"the deadline heap ({heap_entries_max} entries) must hold "
                                 f"every parked fetch ({parked_max})")
        self._parked_max = parked_max
        self._heap_entries_max = heap_entries_max
        self._waiting: dict[Hashable, list[ParkedFetch]] = {}   # oldest first
        self._deadlines: list[ParkedFetch] = []                  # a heap; may hold settled ones
        self._owners = _Owners()
        self._parked_count = 0

    def __len__(self) -> int:
        """Fetches parked now."""
        return self._parked_count

    def parked_for(self, owner: Hashable) -> int:
        """Fetches parked now for ``owner``."""
        return self._owners.count(owner)

    def park(self, key: Hashable, deadline_s: float, request: Any, answer: Answer,
             owner: Hashable = None) -> bool:
        """Park a fetch on partition ``key`` for ``owner`` until ``deadline_s``
        (time.monotonic()); returns False, parking nothing, when the purgatory is
        full and ``owner`` holds its fair share or more. Below its share, the oldest
        fetch of the owner holding the most is answered to make room."""
        if self._parked_count >= self._parked_max and not self._make_room_for(owner):
            return False
        parked = ParkedFetch(deadline_s, key, owner, request, answer)
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = [parked]
        else:
            waiting.append(parked)
        if len(self._deadlines) >= self._heap_entries_max:
            self._drop_settled()
        heapq.heappush(self._deadlines, parked)
        self._owners.add(parked)
        self._parked_count += 1
        return True

    def _make_room_for(self, owner: Hashable) -> bool:
        """The purgatory is full: answer the oldest fetch of the owner holding the most
        if ``owner`` is below its fair share; False if it is not."""
        count = self._owners.count(owner)
        owners = len(self._owners) + (count == 0)
        # At least one place each: more owners than places (one fetch each from as
        # many connections) must not shut a newcomer out.
        if count >= max(1, self._parked_max // owners):
            return False
        evicted = self._owners.oldest_of_largest()
        if evicted.owner == owner:
            raise AssertionError(f"owner {owner!r} holds {count} of {self._parked_max} parked "
                                 f"fetches, below its share, yet holds the most")
        self._unwait(evicted)
        self._settle(evicted, None)
        return True

    def wake(self, key: Hashable) -> int:
        """Answer every fetch parked on ``key``, oldest first; returns how many."""
        waiting = self._waiting.pop(key, None)
        if waiting is None:
            return 0
        for parked in waiting:
            self._settle(parked, None)
        return len(waiting)

    def fail(self, key: Hashable, error: BrokerError) -> int:
        """Answer every fetch parked on ``key`` with ``error``; returns how many."""
        waiting = self._waiting.pop(key, None)
        if waiting is None:
            return 0
        for parked in waiting:
            self._settle(parked, error)
        return len(waiting)

    def expire(self, now_s: float) -> int:
        """Answer every fetch whose deadline is at or before ``now_s``; returns how many."""
        heap = self._deadlines
        expired = 0
        while heap and (heap[0].settled or heap[0].deadline_s <= now_s):
            parked = heapq.heappop(heap)
            if parked.settled:
                continue
            self._unwait(parked)
            self._settle(parked, None)
            expired += 1
        return expired

    def next_deadline_s(self) -> float | None:
        """The earliest deadline in the heap (perhaps of a settled fetch), or None."""
        return self._deadlines[0].deadline_s if self._deadlines else None

    def _unwait(self, parked: ParkedFetch) -> None:
        """Take one fetch out of its partition's waiting list (before settling it alone)."""
        waiting = self._waiting[parked.key]
        waiting.remove(parked)
        if not waiting:
            del self._waiting[parked.key]

    def _settle(self, parked: ParkedFetch, error: BrokerError | None) -> None:
        parked.settled = True
        self._parked_count -= 1
        self._owners.remove(parked)
        parked.answer(parked.request, error)

    def _drop_settled(self) -> None:
        # At most parked_max entries are unsettled, so this leaves at most that
        # many, and at least heap_entries_max - parked_max parks (half the heap,
        # as limits.py sets them) come between two runs: O(1) per park.
        self._deadlines = [parked for parked in self._deadlines if not parked.settled]
        heapq.heapify(self._deadlines)


class _Owners:
    """The parked fetches of each owner, oldest first, and the owners by how many they
    hold, so that the owner holding the most is found in O(1). Counts change by one
    at a time, so the largest count moves by at most one per change."""

    def __init__(self) -> None:
        self._fetches: dict[Hashable, dict[ParkedFetch, None]] = {}   # insertion order: age
        self._by_count: dict[int, dict[Hashable, None]] = {}
        self._count_max = 0

    def __len__(self) -> int:
        """Owners with fetches parked."""
        return len(self._fetches)

    def count(self, owner: Hashable) -> int:
        fetches = self._fetches.get(owner)
        return 0 if fetches is None else len(fetches)

    def add(self, parked: ParkedFetch) -> None:
        fetches = self._fetches.setdefault(parked.owner, {})
        self._move(parked.owner, len(fetches), len(fetches) + 1)
        fetches[parked] = None

    def remove(self, parked: ParkedFetch) -> None:
        fetches = self._fetches[parked.owner]
        del fetches[parked]
        self._move(parked.owner, len(fetches) + 1, len(fetches))
        if not fetches:
            del self._fetches[parked.owner]

    def oldest_of_largest(self) -> ParkedFetch:
        """The oldest fetch of an owner holding the most (there is one)."""
        owner = next(iter(self._by_count[self._count_max]))
        return next(iter(self._fetches[owner]))

    def _move(self, owner: Hashable, count_before: int, count_after: int) -> None:
        if count_before:
            bucket = self._by_count[count_before]
            del bucket[owner]
            if not bucket:
                del self._by_count[count_before]
                if self._count_max == count_before:
                    self._count_max = count_after
        if count_after:
            self._by_count.setdefault(count_after, {})[owner] = None
            self._count_max = max(self._count_max, count_after)
