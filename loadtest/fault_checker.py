"""The fault suite's checker: what a history of a run under faults must satisfy.

A run (loadtest/replication_faults.py) records a ``History``:

- ``acks``: every acknowledged record, as the producer's future reported it:
  (partition, offset, producer, sequence).
- ``reads``: every record any consumer was handed during the run:
  (partition, offset, value).
- ``commits``: the consumer groups' committed offsets, each time they were looked
  at, in the order they were looked at: (group, partition, offset).
- ``replication``: at the end, each partition's replicas and in-sync replicas as
  ``describe`` reports them.
- ``final``: after the run, every partition read from its start, as ``reads``:
  the log the checks of presence and order run against.

A record's value is ``<producer>:<sequence>`` (``record_value``): the producer's
name and its own count, from 0, so that any read identifies the record it found.

``check(history)`` returns every ``Violation`` of these rules (empty: the run is good):

- lost: an acknowledged record is missing from the final log;
- moved: an acknowledged record is in the final log at another (partition, offset)
  than the one it was acknowledged with;
- duplicated: one (producer, sequence) is in the final log more than once (the
  producer is idempotent, so no record may be stored twice, acknowledged or not);
- out_of_order: in one partition, a producer's sequences do not grow with the offset;
- read_mismatch: two reads of one (partition, offset), during the run or the final
  one, returned different values;
- commit_backwards: a group's committed offset for a partition went down;
- under_replicated: at the end, a partition's in-sync set is not all its replicas.

Pure: no I/O, no clock; any thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

# How many examples of one kind of violation a report quotes (the count is exact).
EXAMPLES_PER_KIND_MAX = 5

VIOLATION_KINDS = ("lost", "moved", "duplicated", "out_of_order", "read_mismatch",
                   "commit_backwards", "under_replicated")


class Ack(NamedTuple):
    partition: int
    offset: int
    producer: str
    sequence: int


class Read(NamedTuple):
    partition: int
    offset: int
    value: bytes


class Commit(NamedTuple):
    group: str
    partition: int
    offset: int


class Replication(NamedTuple):
    replicas: tuple[str, ...]
    in_sync: tuple[str, ...]


@dataclass
class History:
    acks: list[Ack] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    final: list[Read] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    replication: dict[int, Replication] = field(default_factory=dict)


@dataclass(frozen=True)
class Violation:
    kind: str        # one of VIOLATION_KINDS
    detail: str


def record_value(producer: str, sequence: int) -> bytes:
    """The value of a producer's ``sequence``-th record."""
    if ":" in producer:
        raise AssertionError(f"producer name {producer!r} must not contain ':'")
    return f"{producer}:{sequence}".encode()


def record_id(value: bytes) -> tuple[str, int]:
    """(producer, sequence) of a value ``record_value`` made."""
    producer, _, sequence = value.decode().rpartition(":")
    return producer, int(sequence)


def check(history: History) -> list[Violation]:
    """Every violation of the module's rules in ``history``, grouped by kind."""
    return [*_check_acknowledged(history.acks, history.final),
            *_check_duplicates(history.final),
            *_check_order(history.final),
            *_check_reads([*history.reads, *history.final]),
            *_check_commits(history.commits),
            *_check_replication(history.replication)]


def summary(violations: list[Violation]) -> str:
    """One line per kind: the count and the first few examples."""
    counts = Counter(v.kind for v in violations)
    lines = []
    for kind in VIOLATION_KINDS:
        if counts[kind]:
            examples = [v.detail for v in violations if v.kind == kind][:EXAMPLES_PER_KIND_MAX]
            lines.append(f"{kind}: {counts[kind]}, e.g. {'; '.join(examples)}")
    return "\n".join(lines) if lines else "no violations"


def _check_acknowledged(acks: Iterable[Ack], final: list[Read]) -> list[Violation]:
    stored: dict[tuple[str, int], tuple[int, int]] = {}
    for read in final:
        stored.setdefault(record_id(read.value), (read.partition, read.offset))
    violations = []
    for ack in acks:
        where = stored.get((ack.producer, ack.sequence))
        name = f"{ack.producer}:{ack.sequence}"
        if where is None:
            violations.append(Violation(
                "lost", f"{name} acknowledged at {ack.partition}/{ack.offset} is not stored"))
        elif where != (ack.partition, ack.offset):
            violations.append(Violation(
                "moved", f"{name} acknowledged at {ack.partition}/{ack.offset} is stored at "
                         f"{where[0]}/{where[1]}"))
    return violations


def _check_duplicates(final: list[Read]) -> list[Violation]:
    places: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for read in _one_read_per_offset(final):
        places.setdefault(record_id(read.value), []).append((read.partition, read.offset))
    return [Violation("duplicated", f"{producer}:{sequence} is stored {len(where)} times, at "
                      + ", ".join(f"{p}/{o}" for p, o in where))
            for (producer, sequence), where in places.items() if len(where) > 1]


def _check_order(final: list[Read]) -> list[Violation]:
    last: dict[tuple[int, str], tuple[int, int]] = {}   # (partition, producer) -> (offset, sequence)
    violations = []
    for read in sorted(_one_read_per_offset(final)):
        producer, sequence = record_id(read.value)
        before = last.get((read.partition, producer))
        if before is not None and sequence < before[1]:   # equal: a duplicate, told apart
            violations.append(Violation(
                "out_of_order", f"partition {read.partition}: {producer}:{sequence} at offset "
                                f"{read.offset} after {producer}:{before[1]} at offset {before[0]}"))
        last[(read.partition, producer)] = (read.offset, sequence)
    return violations


def _check_reads(reads: Iterable[Read]) -> list[Violation]:
    first: dict[tuple[int, int], bytes] = {}
    violations = []
    for read in reads:
        seen = first.setdefault((read.partition, read.offset), read.value)
        if seen != read.value:
            violations.append(Violation(
                "read_mismatch", f"{read.partition}/{read.offset} returned {seen!r} and later "
                                 f"{read.value!r}"))
    return violations


def _check_commits(commits: Iterable[Commit]) -> list[Violation]:
    highest: dict[tuple[str, int], int] = {}
    violations = []
    for commit in commits:
        key = (commit.group, commit.partition)
        before = highest.get(key)
        if before is not None and commit.offset < before:
            violations.append(Violation(
                "commit_backwards", f"group {commit.group} partition {commit.partition}: "
                                    f"committed {commit.offset} after {before}"))
        highest[key] = max(commit.offset, before if before is not None else commit.offset)
    return violations


def _check_replication(replication: dict[int, Replication]) -> list[Violation]:
    return [Violation("under_replicated", f"partition {partition}: in sync {list(r.in_sync)} "
                                          f"of replicas {list(r.replicas)}")
            for partition, r in sorted(replication.items())
            if sorted(r.in_sync) != sorted(r.replicas)]


def _one_read_per_offset(final: list[Read]) -> list[Read]:
    """The final read once per (partition, offset): a consumer that read a partition
    twice (after a rebalance) has not stored its records twice."""
    return list({(read.partition, read.offset): read for read in final}.values())
