"""Partition assignors for consumer groups: who should own which partition.

Runs in the shard actor that coordinates the group (loop thread). An
assignor is a pure function from the members' subscriptions, the topics'
partition counts and the current target assignment to a new target
assignment. It never looks at time or sockets, so it is tested alone.

- ``range``: per topic, the subscribed members sorted by id take contiguous
  ranges of partitions, the first ones one extra when it does not divide.
- ``sticky`` (the default): every member keeps what it has as long as that
  stays balanced; only the partitions needed to even out the load move,
  which is what lets the members that keep their partitions keep working
  through a rebalance.

Work in steps. A group of 1,000 members on a topic of 4,096 partitions is
seconds of Python done at once, and the shard's loop serves every other
client meanwhile. So ``assign_steps`` is a generator that does the same work
in steps of at most ``step_units`` units (a unit is one partition or one
member looked at; GROUP_ASSIGNMENT_STEP_UNITS) and yields between them; the
coordinator runs as many steps as its time budget allows and carries on in
the loop's next rounds. ``assign`` runs every step at once. Every phase is
O(partitions x log members), so the steps are few.
"""

from __future__ import annotations

import heapq
from collections.abc import Generator, Mapping
from itertools import islice

from plinth import limits

TopicPartition = tuple[str, int]
Assignment = dict[str, set[TopicPartition]]       # member id -> partitions
Steps = Generator[None, None, Assignment]         # yields between steps, returns the result

ASSIGNORS = ("sticky", "range")
DEFAULT_ASSIGNOR = "sticky"


def assign(assignor: str, subscriptions: Mapping[str, set[str]],
           partition_counts: Mapping[str, int], current: Assignment) -> Assignment:
    """The target assignment, computed at once; every subscribed, existing partition
    has exactly one owner."""
    steps = assign_steps(assignor, subscriptions, partition_counts, current)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def assign_steps(assignor: str, subscriptions: Mapping[str, set[str]],
                 partition_counts: Mapping[str, int], current: Assignment,
                 step_units: int | None = None) -> Steps:
    """The target assignment as a generator: yields after each step of at most
    ``step_units`` units of work, returns the assignment. The caller must not change
    the arguments until it is done (the coordinator passes copies)."""
    if assignor not in ASSIGNORS:   # the coordinator checked it when the group was made
        raise AssertionError(f"assignor {assignor!r} is not one of {ASSIGNORS}")
    units = _Units(limits.GROUP_ASSIGNMENT_STEP_UNITS if step_units is None else step_units)
    if assignor == "range":
        result = yield from _range_steps(subscriptions, partition_counts, units)
    else:
        result = yield from _sticky_steps(subscriptions, partition_counts, current, units)
    yield from _check_steps(result, subscriptions, partition_counts, units)
    return result


def range_assign(subscriptions: Mapping[str, set[str]],
                 partition_counts: Mapping[str, int]) -> Assignment:
    return assign("range", subscriptions, partition_counts, {})


def sticky_assign(subscriptions: Mapping[str, set[str]], partition_counts: Mapping[str, int],
                  current: Assignment) -> Assignment:
    """Keep current owners where still valid and balanced; move only the surplus."""
    return assign("sticky", subscriptions, partition_counts, current)


class _Units:
    """Counts units of work; ``spend`` says when a step is full (then the caller yields)."""

    __slots__ = ("step_units", "spent")

    def __init__(self, step_units: int):
        if step_units < 1:
            raise AssertionError(f"a step must allow some work, not {step_units} units")
        self.step_units = step_units
        self.spent = 0

    def spend(self, units: int) -> bool:
        self.spent += units
        if self.spent < self.step_units:
            return False
        self.spent = 0
        return True


# What one item costs, in units, where it costs more than looking at it (measured:
# giving a partition to the least loaded member moves two heap entries).
_GIVE_UNITS = 8
_MEMBER_UNITS = 4
_MOVE_UNITS = 16


def _partition_chunks(topic: str, count: int, units: _Units):
    """The topic's partition numbers in ranges of at most one step each."""
    for start in range(0, count, units.step_units):
        yield range(start, min(count, start + units.step_units))


def _chunks(items, units: _Units):
    """Any iterable in lists of at most one step each (the iterable must not change)."""
    iterator = iter(items)
    while chunk := list(islice(iterator, units.step_units)):
        yield chunk


def _sorted_steps(items: list, units: _Units, reverse: bool = False) -> Steps:
    """``sorted(items)``, in steps: sorted runs of one step each, merged a step at a time."""
    if len(items) <= units.step_units:
        if units.spend(len(items) + 1):
            yield
        return sorted(items, reverse=reverse)
    runs = []
    for chunk in _chunks(items, units):
        runs.append(sorted(chunk, reverse=reverse))
        if units.spend(len(chunk)):
            yield
    merged, result = heapq.merge(*runs, reverse=reverse), []
    while len(result) < len(items):
        result.extend(islice(merged, units.step_units))
        if units.spend(units.step_units):
            yield
    return result


# --- range --------------------------------------------------------------------------

def _range_steps(subscriptions: Mapping[str, set[str]], partition_counts: Mapping[str, int],
                 units: _Units) -> Steps:
    result: Assignment = {member: set() for member in subscriptions}
    for topic in sorted({t for topics in subscriptions.values() for t in topics}):
        count = partition_counts.get(topic, 0)
        members = sorted(m for m, topics in subscriptions.items() if topic in topics)
        if units.spend(len(members)):
            yield
        if not members or not count:
            continue
        per_member, extra = divmod(count, len(members))
        start = 0
        for i, member in enumerate(members):
            size = per_member + (1 if i < extra else 0)
            result[member].update((topic, p) for p in range(start, start + size))
            start += size
            if units.spend(size + 1):
                yield
    return result


# --- sticky -------------------------------------------------------------------------

def _sticky_steps(subscriptions: Mapping[str, set[str]], partition_counts: Mapping[str, int],
                  current: Assignment, units: _Units) -> Steps:
    members = sorted(subscriptions)
    result: Assignment = {member: set() for member in members}
    if not members:
        return result
    sizes = {t: partition_counts.get(t, 0) for topics in subscriptions.values() for t in topics}
    quota_max = -(-sum(sizes.values()) // len(members))      # ceil
    taken: set[TopicPartition] = set()
    for member in members:
        # Keep what is still valid, giving back the surplus above the ceiling
        # (the highest partitions first).
        topics, kept = subscriptions[member], []
        for chunk in _chunks(current.get(member, ()), units):
            kept.extend(tp for tp in chunk if tp[0] in topics and tp[1] < sizes[tp[0]])
            if units.spend(len(chunk)):
                yield
        if len(kept) > quota_max:
            kept = (yield from _sorted_steps(kept, units))[:quota_max]
        for chunk in _chunks(kept, units):
            result[member].update(chunk)
            taken.update(chunk)
            if units.spend(len(chunk)):
                yield
        if units.spend(_MEMBER_UNITS):
            yield
    free = []
    for topic in sorted(sizes):
        for chunk in _partition_chunks(topic, sizes[topic], units):
            free.extend(tp for tp in ((topic, p) for p in chunk) if tp not in taken)
            if units.spend(len(chunk)):
                yield
    balance = _Balance(result)
    yield from balance.index(subscriptions, units)
    for tp in free:
        balance.give_to_least_loaded(tp)
        if units.spend(_GIVE_UNITS):
            yield
    yield from balance.even_out(units)
    return result


class _Balance:
    """Who is least and most loaded, kept in heaps as partitions move (sticky's
    second half). Members with the same subscribers per topic share a min-heap:
    a topic's partitions may go only to its subscribers.

    Heap entries go stale as loads change; an entry is checked against the
    member's load when it reaches the top, and put back with the current load
    if it differs. A member whose load drops is pushed again at once, so the
    true minimum is always in the min-heaps (and the true maximum, pushed when
    a load rises, in the max-heap).
    """

    def __init__(self, result: Assignment):
        """Empty until ``index`` has run (in steps: it is O(members))."""
        self.result = result
        self.load: dict[str, int] = {}
        self.heap_of: dict[str, list] = {}   # topic -> its subscribers' heap of (load, member)
        self.heaps_of_member: dict[str, list[list]] = {}
        # (-load, -rank, member): the most loaded first, ties to the highest id
        self.rank: dict[str, int] = {}
        self.max_heap: list[tuple[int, int, str]] = []
        # For even_out: a member's partitions, highest first, sorted when it is first
        # the heaviest (moved ones are skipped: ``skipped`` of them are at the front),
        # and those it received since.
        self.descending: dict[str, list[TopicPartition]] = {}
        self.skipped: dict[str, int] = {}
        self.received: dict[str, list[TopicPartition]] = {}

    def index(self, subscriptions: Mapping[str, set[str]], units: _Units) -> Steps:
        """Count the loads, rank the members, and build the heaps: the max-heap and
        the min-heaps, one per distinct set of subscribers."""
        ranked = yield from _sorted_steps(list(self.result), units)
        for chunk in _chunks(ranked, units):
            for member in chunk:
                load = self.load[member] = len(self.result[member])
                rank = self.rank[member] = len(self.rank)
                self.heaps_of_member[member] = []
                self.max_heap.append((-load, -rank, member))
            if units.spend(_MEMBER_UNITS * len(chunk)):
                yield
        heapq.heapify(self.max_heap)
        if units.spend(len(self.max_heap)):
            yield
        subscribers: dict[str, list[str]] = {}
        for member in ranked:
            for topic in subscriptions[member]:
                subscribers.setdefault(topic, []).append(member)
            if units.spend(len(subscriptions[member]) + 1):
                yield
        heaps: dict[tuple[str, ...], list] = {}
        for topic, members in subscribers.items():
            key = tuple(members)   # (its hash is not cached: look it up once)
            heap = heaps.get(key)
            if heap is None:
                heap = heaps[key] = [(self.load[m], m) for m in members]
                heapq.heapify(heap)
                for m in members:
                    self.heaps_of_member[m].append(heap)
            self.heap_of[topic] = heap
            if units.spend(2 * len(members)):
                yield

    def give_to_least_loaded(self, tp: TopicPartition) -> None:
        heap = self.heap_of.get(tp[0])
        if heap:
            _, member = self._least(heap)
            self._move(tp, None, member)

    def even_out(self, units: _Units) -> Steps:
        """Move single partitions from the most to the least loaded member while it
        helps. Bounded: each move lowers the spread, so at most one move per partition."""
        for _ in range(sum(self.load.values()) + 1):
            heavy = self._most()
            if heavy not in self.descending:
                self.descending[heavy] = yield from _sorted_steps(
                    list(self.result[heavy]), units, reverse=True)
                self.skipped[heavy] = 0
            move = self._movable(heavy)
            if move is None:
                return
            tp, light = move
            self._move(tp, heavy, light)
            if units.spend(_MOVE_UNITS + len(self.heaps_of_member[heavy])):
                yield

    def _movable(self, heavy: str) -> tuple[TopicPartition, str] | None:
        """Heavy's highest partition that a member with at least 2 fewer may take, and
        the least loaded such member."""
        heavy_load, owned = self.load[heavy], self.result[heavy]
        light_of: dict[int, str | None] = {}   # id(heap) -> its least loaded member, if light enough

        def light_for(tp: TopicPartition) -> str | None:
            heap = self.heap_of[tp[0]]
            if id(heap) not in light_of:
                load, member = self._least(heap)
                light_of[id(heap)] = member if load + 1 < heavy_load else None
            return light_of[id(heap)]

        descending = self.descending[heavy]
        while self.skipped[heavy] < len(descending) and \
                descending[self.skipped[heavy]] not in owned:   # moved away before
            self.skipped[heavy] += 1
        best = None
        for tp in islice(descending, self.skipped[heavy], None):
            if tp in owned and light_for(tp) is not None:
                best = tp
                break
        for tp in self.received.get(heavy, ()):
            if tp in owned and (best is None or tp > best) and light_for(tp) is not None:
                best = tp
        return None if best is None else (best, light_for(best))

    def _move(self, tp: TopicPartition, source: str | None, target: str) -> None:
        if source is not None:
            self.result[source].discard(tp)
            self.load[source] -= 1
            for heap in self.heaps_of_member[source]:
                heapq.heappush(heap, (self.load[source], source))
            self.received.setdefault(target, []).append(tp)
        self.result[target].add(tp)
        self.load[target] += 1
        heapq.heappush(self.max_heap, (-self.load[target], -self.rank[target], target))

    def _least(self, heap: list) -> tuple[int, str]:
        while heap[0][0] != self.load[heap[0][1]]:
            _, member = heapq.heappop(heap)
            heapq.heappush(heap, (self.load[member], member))
        return heap[0]

    def _most(self) -> str:
        heap = self.max_heap
        while -heap[0][0] != self.load[heap[0][2]]:
            _, rank, member = heapq.heappop(heap)
            heapq.heappush(heap, (-self.load[member], rank, member))
        return heap[0][2]


# --- the check every result passes ----------------------------------------------------

def _check_steps(result: Assignment, subscriptions, partition_counts, units: _Units) -> Steps:
    """Every subscribed, existing partition has exactly one owner, who subscribes to it."""
    owners: dict[TopicPartition, str] = {}
    for member, owned in result.items():
        topics = subscriptions[member]
        for chunk in _chunks(owned, units):
            for tp in chunk:
                if tp in owners:
                    raise AssertionError(f"{tp} assigned to both {owners[tp]} and {member}")
                if tp[0] not in topics:
                    raise AssertionError(f"{member} got {tp} without subscribing to {tp[0]!r}")
                if not 0 <= tp[1] < partition_counts.get(tp[0], 0):
                    raise AssertionError(f"{member} got {tp}, which does not exist "
                                         f"({partition_counts.get(tp[0], 0)} partitions)")
                owners[tp] = member
            if units.spend(len(chunk)):
                yield
        if units.spend(1):
            yield
    wanted = {t: partition_counts.get(t, 0) for topics in subscriptions.values() for t in topics}
    if len(owners) != sum(wanted.values()):
        left_out = [(t, p) for t, count in sorted(wanted.items()) for p in range(count)
                    if (t, p) not in owners]
        raise AssertionError(f"{len(left_out)} subscribed partitions left out of the assignment "
                             f"({left_out[:3]}...)")
