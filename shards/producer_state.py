"""Idempotent producers: what each producer last wrote to one partition.

Runs in a shard actor, on its loop thread only. A batch from an idempotent
producer carries ``producerId`` and ``baseSequence`` (record_batch.capnp):
the sequence number of its first record, counted per producer and partition.
For each producer the partition remembers its last ``IDEMPOTENT_BATCHES_KEPT``
batches as (base sequence, record count, base offset), so that

- an exact retry of one of them is not appended again: the producer gets the
  offsets the batch was first given (the answer it missed);
- the next batch must start exactly where the last one ended; anything else
  is a gap or a stale retry and is refused with outOfOrderSequence, which the
  producer treats as "retry in order".

Epochs. A Kafka batch also carries ``producerEpoch`` (a Plinth batch has none:
0). As in Kafka, a batch in a newer epoch than its producer's starts a new
sequence: it must begin at sequence 0, and the batches of the epoch before are
forgotten (librdkafka bumps its epoch itself after a batch failed for good or
timed out, and sends the next batch at sequence 0: taken for a retry of the
epoch before, it would be acknowledged with another batch's offsets and never
stored). A batch in an older epoch is a fenced producer's: invalidProducerEpoch.

Room for producers. A partition remembers at most PRODUCERS_PER_PARTITION_MAX
producers, each with the time it last wrote here (``last_seen_ms``, the
shard's clock). A producer new to a full partition takes the place of the
least recently seen one only if that one has been silent for longer than
PRODUCER_ID_EXPIRATION_MS (Kafka's producer.id.expiration.ms); otherwise it is
refused with TooManyProducersError, which producers retry until their
delivery timeout. So a client cycling through producer ids cannot push out a
producer that wrote recently, whose next retry would then be stored twice.

The state is rebuilt on start from the batches in the partition's active
segment (``rebuild``), so a restarted shard still recognises a retry of a
batch it acknowledged just before a crash. A replayed producer counts as last
seen when the active segment was last written (its file's modification
time): never earlier than it really was.

A batch written just before the log rolled lives in an older segment, which
the rebuild does not replay; so when the log rolls, the state as it was before
the new segment's first batch is saved, one file per roll (as Kafka's producer
snapshot files):

    <partition dir>/00000000000000052931.producers     named by the segment it precedes
        {"base_offset": 52931,                 that segment's base offset, again
         "producers": [[producer id, [[base sequence, record count, base offset],
                                      ...], last seen ms, epoch], ...]}
                                               least recently seen first

and the rebuild starts from the active segment's (``seed``). The snapshot
named by a segment's base offset is also the state just after the segment
before it: tiered storage uploads it with that segment (remote_segment.py).
Snapshots go with the segments they follow: retention removes those below the
log's start (``discard_snapshots_before``), a truncation those after its new
end (``discard_snapshot_after``). A partition written before per-roll files
has one ``producers.json`` of the same layout, read while its base offset is
the active segment's and removed at the next roll. Snapshots written before
producers had a last-seen time hold [producer id, batches] pairs; such a
producer counts as last seen when the active segment was last written. Those
written before epochs were kept have no epoch: the producer takes its next
batch's. The same list (``snapshot()``) is what the
old owner of a partition hands to the new one when its writes move to another
shard; the new owner keeps it in its manifest and seeds from it while its
active segment is the one that began at the move.

A damaged snapshot (no checksum guards the JSON: a hand edit or a bad disk) is
set aside as ``<base>.producers.corrupt`` when a start would seed from it
(``recover_snapshot``), and the partition logs a WARNING saying what it costs:
the rebuild replays only the active segment, so an idempotent producer's retry
of a batch written before it may be stored twice.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict, deque
from pathlib import Path

from plinth import limits
from plinth.durable_files import fsync_directory, write_json_atomically
from plinth.errors import (InvalidProducerEpochError, OutOfOrderSequenceError,
                           TooManyProducersError)
from plinth.format.log_entry import iter_entries
from plinth.format.record_batch import SEQUENCE_MODULUS


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class _Producer:
    """One producer on one partition: its epoch, its last batches in that epoch, and
    when it last wrote."""

    __slots__ = ("epoch", "batches", "last_seen_ms")

    def __init__(self, last_seen_ms: int, epoch: int | None):
        self.epoch = epoch   # None: not known (a snapshot from before epochs were kept)
        # (base sequence, record count, base offset) of its last batches, oldest first
        self.batches: deque[tuple[int, int, int]] = deque(maxlen=limits.IDEMPOTENT_BATCHES_KEPT)
        self.last_seen_ms = last_seen_ms


class ProducerStates:
    """The producers of one partition, least recently seen first. Loop thread only.

    ``now_ms`` arguments are the shard's clock (ms since the epoch); None reads it.
    """

    def __init__(self) -> None:
        self._producers: OrderedDict[int, _Producer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, where: str, producer_id: int, base_sequence: int, record_count: int,
              now_ms: int | None = None, *, producer_epoch: int = 0) -> int | None:
        """The base offset of an exact duplicate, None for a batch to append.

        Raises OutOfOrderSequenceError on a gap (or a new epoch not starting at
        sequence 0), InvalidProducerEpochError for an epoch older than the
        producer's, and TooManyProducersError for a producer new to a partition
        that has no room for it (see the module docstring); ``where`` names the
        partition in each.
        """
        if producer_id < 0:
            return None
        producer = self._producers.get(producer_id)
        if producer is None:   # a producer new to this partition may start anywhere
            self._check_room(where, producer_id, _wall_clock_ms() if now_ms is None else now_ms)
            return None
        if producer.epoch is not None and producer_epoch != producer.epoch:
            _check_new_epoch(where, producer_id, producer.epoch, producer_epoch, base_sequence)
            return None
        batches = producer.batches
        for seq, count, base_offset in batches:
            if seq == base_sequence and count == record_count:
                return base_offset
        last_seq, last_count, _ = batches[-1]
        expected = (last_seq + last_count) % SEQUENCE_MODULUS
        if base_sequence != expected:
            raise OutOfOrderSequenceError(
                f"{where}: producer {producer_id} sent sequence {base_sequence}, expected "
                f"{expected} (its last batch was {last_seq}..{last_seq + last_count - 1})")
        return None

    def _check_room(self, where: str, producer_id: int, now_ms: int) -> None:
        """Raise TooManyProducersError unless a new producer fits: the partition is not
        full, or its least recently seen producer has been silent long enough to go."""
        producers_max = limits.PRODUCERS_PER_PARTITION_MAX
        if len(self._producers) < producers_max:
            return
        idle_id, idle = next(iter(self._producers.items()))
        idle_ms = now_ms - idle.last_seen_ms
        expiration_ms = limits.PRODUCER_ID_EXPIRATION_MS
        if idle_ms > expiration_ms:
            return
        raise TooManyProducersError(
            f"{where}: producer {producer_id} is new and the partition already remembers "
            f"{len(self._producers)} idempotent producers, its limit of {producers_max}; "
            f"the longest silent one (producer {idle_id}, {idle_ms} ms) is not forgotten before "
            f"producer.id.expiration.ms={expiration_ms}; retry later")

    def record(self, producer_id: int, base_sequence: int, record_count: int, base_offset: int,
               now_ms: int | None = None, *, producer_epoch: int | None = 0) -> None:
        """Remember a batch the partition stored for ``producer_id``, seen at ``now_ms``,
        in ``producer_epoch`` (None: not known, the producer's is kept).

        A new producer on a full partition takes the place of the least recently
        seen one: ``check`` refused it unless that one was idle long enough (a
        rebuild replays what was stored, when check had said so). A batch of a
        new epoch starts the producer's sequence again: its batches of the epoch
        before are forgotten, as no retry of them can be taken any more.
        """
        if producer_id < 0:
            return
        now_ms = _wall_clock_ms() if now_ms is None else now_ms
        producer = self._producers.pop(producer_id, None)
        if producer is None:
            while len(self._producers) >= limits.PRODUCERS_PER_PARTITION_MAX:
                self._producers.popitem(last=False)
            producer = _Producer(now_ms, producer_epoch)
        elif producer_epoch is not None and producer_epoch != producer.epoch:
            if producer.epoch is not None:
                producer.batches.clear()
            producer.epoch = producer_epoch
        producer.batches.append((base_sequence, record_count, base_offset))
        producer.last_seen_ms = now_ms
        self._producers[producer_id] = producer   # most recently seen last

    def truncated(self, end_offset: int) -> "ProducerStates":
        """The state as it was when the log ended at ``end_offset`` (the log was cut
        there), as far as the batches kept in memory tell: each producer's batches
        that start below it; a producer left with none is forgotten (its next
        batch is taken as a new producer's). A producer keeps its last-seen time."""
        states = ProducerStates()
        for producer_id, producer in self._producers.items():
            kept = [batch for batch in producer.batches if batch[2] < end_offset]
            if kept:
                states._producers[producer_id] = _Producer(producer.last_seen_ms, producer.epoch)
                states._producers[producer_id].batches.extend(kept)
        return states

    def snapshot(self) -> list:
        """What a new owner of the partition needs; least recently seen first."""
        return [[producer_id, [list(batch) for batch in producer.batches], producer.last_seen_ms]
                + ([] if producer.epoch is None else [producer.epoch])
                for producer_id, producer in self._producers.items()]

    @classmethod
    def from_snapshot(cls, snapshot: list | None, seen_ms_default: int) -> "ProducerStates":
        """The state ``snapshot()`` returned; an entry written before producers had a
        last-seen time ([producer id, batches]) counts as seen at ``seen_ms_default``,
        and one written before they had an epoch takes the epoch of its next batch."""
        states = cls()
        for producer_id, batches, *rest in snapshot or ():
            last_seen_ms = rest[0] if rest else seen_ms_default
            epoch = rest[1] if len(rest) > 1 else None
            for base_sequence, record_count, base_offset in batches:
                states.record(producer_id, base_sequence, record_count, base_offset, last_seen_ms,
                              producer_epoch=epoch)
        return states

    @classmethod
    def rebuild(cls, plog, summarize, seed: list | None = None) -> "ProducerStates":
        """The ``seed`` snapshot, then the batches of the partition's active segment,
        seen when that segment was last written. ``summarize(batch_format, batch)`` is
        format/batch_formats.py's."""
        active = plog.segments[-1]
        seen_ms = active.last_written_ms
        states = cls.from_snapshot(seed, seen_ms)
        position = max(active.base_offset, plog.start_offset)
        while position < plog.end_offset:
            data = plog.read(position, limits.FETCH_BYTES_MAX, plog.end_offset)
            for header, batch in iter_entries(data, verify_crc=False):
                summary = summarize(header.attributes, batch)
                states.record(summary.producer_id, summary.base_sequence, header.record_count,
                              header.base_offset, seen_ms, producer_epoch=summary.producer_epoch)
                position = header.base_offset + header.record_count
        return states


def _check_new_epoch(where: str, producer_id: int, epoch: int, batch_epoch: int,
                     base_sequence: int) -> None:
    """A batch in another epoch than its producer's here: an older epoch is a fenced
    producer's; a newer one (a Kafka client bumps its epoch after a batch failed for
    good, without asking the broker) starts a new sequence, at 0, as in Kafka."""
    if batch_epoch < epoch:
        raise InvalidProducerEpochError(
            f"{where}: producer {producer_id} sent epoch {batch_epoch}, older than its "
            f"epoch {epoch} here")
    if base_sequence != 0:
        raise OutOfOrderSequenceError(
            f"{where}: producer {producer_id} began epoch {batch_epoch} (after {epoch}) at "
            f"sequence {base_sequence}; a new epoch starts at 0")


SNAPSHOT_SUFFIX = ".producers"
LEGACY_SNAPSHOT_FILE = "producers.json"   # one file, before per-roll snapshots
CORRUPT_SUFFIX = ".corrupt"   # a damaged snapshot set aside (recover_snapshot)


def snapshot_path(directory: Path, base_offset: int) -> Path:
    """The snapshot that precedes the segment at ``base_offset`` (module docstring)."""
    return Path(directory) / f"{base_offset:020d}{SNAPSHOT_SUFFIX}"


def snapshot_offsets(directory: Path) -> list[int]:
    """The base offsets of the per-roll snapshots in ``directory``, ascending."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(name[:-len(SNAPSHOT_SUFFIX)]) for name in names
                  if name.endswith(SNAPSHOT_SUFFIX) and name[:-len(SNAPSHOT_SUFFIX)].isdigit())


def save_snapshot(directory: Path, base_offset: int, states: ProducerStates) -> None:
    """The state before the first batch of the segment at ``base_offset`` (durable).
    The legacy single file, older than any roll from now on, goes."""
    write_json_atomically(snapshot_path(directory, base_offset),
                          {"base_offset": base_offset, "producers": states.snapshot()})
    legacy = Path(directory) / LEGACY_SNAPSHOT_FILE
    if legacy.exists():
        legacy.unlink()
        fsync_directory(legacy.parent)


def discard_snapshot_after(directory: Path, base_offset: int) -> bool:
    """Remove every saved state that precedes a segment after ``base_offset`` (the log
    was cut back before that segment, so it describes cut batches, and a later
    segment could start at the same offset); returns whether any went."""
    doomed = [snapshot_path(directory, offset) for offset in snapshot_offsets(directory)
              if offset > base_offset]
    legacy = Path(directory) / LEGACY_SNAPSHOT_FILE
    if _saved_base_offset(legacy) > base_offset:
        doomed.append(legacy)
    return _remove(directory, doomed)


def discard_snapshots_before(directory: Path, start_offset: int) -> bool:
    """Remove the saved states of segments that retention deleted: those before the
    log's ``start_offset`` (the one at it, the state before the first segment left,
    stays); returns whether any went."""
    return _remove(directory, [snapshot_path(directory, offset)
                               for offset in snapshot_offsets(directory) if offset < start_offset])


def _remove(directory: Path, paths: list[Path]) -> bool:
    for path in paths:
        path.unlink(missing_ok=True)
    if paths:
        fsync_directory(Path(directory))
    return bool(paths)


def _saved_base_offset(path: Path) -> int:
    try:
        return json.loads(path.read_text()).get("base_offset", -1)
    except (FileNotFoundError, ValueError, AttributeError):
        return -1


def recover_snapshot(directory: Path, base_offset: int) -> tuple[list | None, str | None]:
    """``load_snapshot`` for the partition's start (its seed), and what was wrong with
    the per-roll file at ``base_offset`` if it is not one a roll wrote
    (``snapshot_fault``): that file is set aside as ``<base>.producers.corrupt``, so
    no later start or upload reads it, and (None, what and where, for the caller's
    WARNING) is returned. Loop thread."""
    path = snapshot_path(directory, base_offset)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return load_snapshot(directory, base_offset), None
    fault = snapshot_fault(data, base_offset)
    if fault is None:
        return load_snapshot(directory, base_offset), None
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        os.replace(path, aside)
        fsync_directory(Path(directory))
        kept = f"kept as {aside.name}"
    except OSError as error:
        kept = f"left in place: it could not be set aside ({error})"
    return None, f"producers snapshot {path} ({len(data)} bytes) is damaged: {fault}; {kept}"


def load_snapshot(directory: Path, base_offset: int) -> list | None:
    """The saved state that precedes the segment at ``base_offset``, else None (a
    damaged file too: snapshots are written atomically, so only a hand-edited or
    corrupted one gets there, and the rebuild then replays without it)."""
    for path in (snapshot_path(directory, base_offset), Path(directory) / LEGACY_SNAPSHOT_FILE):
        try:
            saved = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
        if isinstance(saved, dict) and saved.get("base_offset") == base_offset:
            return saved.get("producers")
    return None


def snapshot_fault(data: bytes, base_offset: int) -> str | None:
    """Why ``data`` is not a snapshot ``save_snapshot`` wrote for ``base_offset``, or None
    (also what ``plinth check`` says of it: log_check_files.py). Any thread."""
    try:
        saved = json.loads(data)
    except ValueError as error:   # (UnicodeDecodeError is one)
        return f"not JSON ({len(data)} bytes; {error}): torn or damaged"
    if not isinstance(saved, dict) or not isinstance(saved.get("producers"), list):
        return f"not a producers snapshot ({len(data)} bytes of JSON, no producers list)"
    if saved.get("base_offset") != base_offset:
        return (f"says base offset {saved.get('base_offset')!r}, its name {base_offset}: a "
                f"start takes it for another segment's and skips it")
    seen: set[int] = set()
    for number, producer in enumerate(saved["producers"]):
        fault = _producer_fault(producer, base_offset, seen)
        if fault:
            return f"producer #{number}: {fault}"
    return None


def _producer_fault(producer, base_offset: int, seen: set[int]) -> str | None:
    """Why one [producer id, batches, last seen ms, epoch] entry is not one a roll saved."""
    if not (isinstance(producer, list) and 2 <= len(producer) <= 4
            and all(_is_int(field) for field in producer[:1] + producer[2:])
            and isinstance(producer[1], list)):
        return f"not [producer id, batches, last seen ms, epoch]: {_clipped(producer)}"
    producer_id, batches = producer[0], producer[1]
    if producer_id in seen:
        return f"producer id {producer_id} is said twice"
    seen.add(producer_id)
    previous_offset = -1
    for number, batch in enumerate(batches):
        if not (isinstance(batch, list) and len(batch) == 3 and all(map(_is_int, batch))
                and batch[1] >= 1 and batch[2] >= 0):
            return (f"producer {producer_id}, batch #{number} is not [base sequence, record "
                    f"count, base offset]: {_clipped(batch)}")
        sequence, record_count, batch_offset = batch
        if batch_offset <= previous_offset or batch_offset + record_count > base_offset:
            return (f"producer {producer_id}, batch #{number} (sequence {sequence}, offsets "
                    f"{batch_offset}..{batch_offset + record_count - 1}) is not after the "
                    f"batch before it (offset {previous_offset}) and before offset "
                    f"{base_offset}, where the state it is part of ends")
        previous_offset = batch_offset
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clipped(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= limits.CHECK_VALUE_CHARS_SAID_MAX else (
        text[:limits.CHECK_VALUE_CHARS_SAID_MAX] + "...")
