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
"""

from __future__ import annotations

from collections.abc import Mapping

TopicPartition = tuple[str, int]
Assignment = dict[str, set[TopicPartition]]       # member id -> partitions

ASSIGNORS = ("sticky", "range")
DEFAULT_ASSIGNOR = "sticky"


def assign(assignor: str, subscriptions: Mapping[str, set[str]],
           partition_counts: Mapping[str, int], current: Assignment) -> Assignment:
    """The target assignment; every subscribed, existing partition has exactly one owner."""
    if assignor not in ASSIGNORS:   # the coordinator checked it when the group was made
        raise AssertionError(f"assignor {assignor!r} is not one of {ASSIGNORS}")
    if assignor == "range":
        result = range_assign(subscriptions, partition_counts)
    else:
        result = sticky_assign(subscriptions, partition_counts, current)
    _check(result, subscriptions, partition_counts)
    return result


def range_assign(subscriptions: Mapping[str, set[str]],
                 partition_counts: Mapping[str, int]) -> Assignment:
    result: Assignment = {member: set() for member in subscriptions}
    for topic in sorted({t for topics in subscriptions.values() for t in topics}):
        count = partition_counts.get(topic, 0)
        members = sorted(m for m, topics in subscriptions.items() if topic in topics)
        if not members or not count:
            continue
        per_member, extra = divmod(count, len(members))
        start = 0
        for i, member in enumerate(members):
            size = per_member + (1 if i < extra else 0)
            result[member].update((topic, p) for p in range(start, start + size))
            start += size
    return result


def sticky_assign(subscriptions: Mapping[str, set[str]], partition_counts: Mapping[str, int],
                  current: Assignment) -> Assignment:
    """Keep current owners where still valid and balanced; move only the surplus."""
    wanted = _all_partitions(subscriptions, partition_counts)
    result: Assignment = {member: set() for member in subscriptions}
    for member, owned in current.items():
        if member in result:
            result[member] = {tp for tp in owned if tp in wanted and tp[0] in subscriptions[member]}
    taken = set().union(*result.values()) if result else set()
    free = sorted(wanted - taken)
    if not result:
        return result
    quota_max = -(-len(wanted) // len(result))      # ceil
    for member in sorted(result):
        # Give back the surplus above the ceiling (the highest partitions first).
        while len(result[member]) > quota_max:
            tp = max(result[member])
            result[member].discard(tp)
            free.append(tp)
    for tp in sorted(free):
        _give_to_least_loaded(result, subscriptions, tp)
    _even_out(result, subscriptions)
    return result


def _all_partitions(subscriptions: Mapping[str, set[str]],
                    partition_counts: Mapping[str, int]) -> set[TopicPartition]:
    topics = {t for topics in subscriptions.values() for t in topics}
    return {(t, p) for t in topics for p in range(partition_counts.get(t, 0))}


def _give_to_least_loaded(result: Assignment, subscriptions, tp: TopicPartition) -> None:
    eligible = [m for m in result if tp[0] in subscriptions[m]]
    if eligible:
        result[min(eligible, key=lambda m: (len(result[m]), m))].add(tp)


def _even_out(result: Assignment, subscriptions) -> None:
    """Move single partitions from the most to the least loaded member while it helps.

    Bounded: each move lowers the spread, so at most one move per partition.
    """
    for _ in range(sum(len(owned) for owned in result.values()) + 1):
        heavy = max(result, key=lambda m: (len(result[m]), m))
        movable = sorted(tp for tp in result[heavy]
                         if any(len(result[m]) + 1 < len(result[heavy]) and tp[0] in subscriptions[m]
                                for m in result))
        if not movable:
            return
        tp = movable[-1]
        light = min((m for m in result if tp[0] in subscriptions[m]),
                    key=lambda m: (len(result[m]), m))
        result[heavy].discard(tp)
        result[light].add(tp)


def _check(result: Assignment, subscriptions, partition_counts) -> None:
    owners: dict[TopicPartition, str] = {}
    for member, owned in result.items():
        for tp in owned:
            if tp in owners:
                raise AssertionError(f"{tp} assigned to both {owners[tp]} and {member}")
            if tp[0] not in subscriptions[member]:
                raise AssertionError(f"{member} got {tp} without subscribing to {tp[0]!r}")
            owners[tp] = member
    wanted = _all_partitions(subscriptions, partition_counts)
    if set(owners) != wanted:
        left_out, unknown = wanted - set(owners), set(owners) - wanted
        raise AssertionError(f"{len(left_out)} subscribed partitions left out of the assignment "
                             f"({sorted(left_out)[:3]}...) and {len(unknown)} that do not exist "
                             f"assigned ({sorted(unknown)[:3]}...)")
