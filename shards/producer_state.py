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

The state is rebuilt on start from the batches in the partition's active
segment (``rebuild``), so a restarted shard still recognises a retry of a
batch it acknowledged just before a crash.

A batch written just before the log rolled lives in an older segment, which
the rebuild does not replay; so when the log rolls, the state as it was before
the new segment's first batch is saved (as Kafka's producer snapshot files):

    <partition dir>/producers.json
        {"base_offset": 52931,                 the active segment it precedes
         "producers": [[producer id, [[base sequence, record count, base offset],
                                      ...]], ...]}     least recently active first

and the rebuild starts from it (``seed``) when its base offset is the active
segment's. The same list (``snapshot()``) is what the old owner of a partition
hands to the new one when its writes move to another shard; the new owner
keeps it in its manifest and seeds from it while its active segment is the one
that began at the move.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from pathlib import Path

from plinth import limits
from plinth.durable_files import write_json_atomically
from plinth.errors import OutOfOrderSequenceError
from plinth.format.log_entry import iter_entries
from plinth.format.record_batch import SEQUENCE_MODULUS



class ProducerStates:
    """The producers of one partition, most recently active last."""

    def __init__(self) -> None:
        self._producers: OrderedDict[int, deque] = OrderedDict()

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, where: str, producer_id: int, base_sequence: int, record_count: int) -> int | None:
        """The base offset of an exact duplicate, None for a batch to append; raises on a gap."""
        if producer_id < 0:
            return None
        batches = self._producers.get(producer_id)
        if not batches:
            return None   # a producer new to this partition may start anywhere
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

    def record(self, producer_id: int, base_sequence: int, record_count: int, base_offset: int) -> None:
        if producer_id < 0:
            return
        batches = self._producers.pop(producer_id, None)
        if batches is None:
            batches = deque(maxlen=limits.IDEMPOTENT_BATCHES_KEPT)
            while len(self._producers) >= limits.PRODUCERS_PER_PARTITION_MAX:
                self._producers.popitem(last=False)   # forget the least recently active
        batches.append((base_sequence, record_count, base_offset))
        self._producers[producer_id] = batches   # most recently active last

    def snapshot(self) -> list:
        """What a new owner of the partition needs; least recently active first."""
        return [[producer_id, [list(batch) for batch in batches]]
                for producer_id, batches in self._producers.items()]

    @classmethod
    def from_snapshot(cls, snapshot: list | None) -> "ProducerStates":
        states = cls()
        for producer_id, batches in snapshot or ():
            for base_sequence, record_count, base_offset in batches:
                states.record(producer_id, base_sequence, record_count, base_offset)
        return states

    @classmethod
    def rebuild(cls, plog, summarize, seed: list | None = None) -> "ProducerStates":
        """The ``seed`` snapshot, then the batches of the partition's active segment."""
        states = cls.from_snapshot(seed)
        position = plog.segments[-1].base_offset if plog.segments else plog.start_offset
        position = max(position, plog.start_offset)
        while position < plog.end_offset:
            data = plog.read(position, limits.FETCH_BYTES_MAX, plog.end_offset)
            for header, batch in iter_entries(data, verify_crc=False):
                summary = summarize(batch)
                states.record(summary.producer_id, summary.base_sequence, header.record_count,
                              header.base_offset)
                position = header.base_offset + header.record_count
        return states


SNAPSHOT_FILE = "producers.json"


def save_snapshot(directory: Path, base_offset: int, states: ProducerStates) -> None:
    """The state before the first batch of the segment at ``base_offset`` (durable)."""
    write_json_atomically(Path(directory) / SNAPSHOT_FILE,
                          {"base_offset": base_offset, "producers": states.snapshot()})


def load_snapshot(directory: Path, base_offset: int) -> list | None:
    """The saved state if it precedes the segment at ``base_offset``, else None."""
    path = Path(directory) / SNAPSHOT_FILE
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:   # written atomically, so only a hand-edited file gets here
        return None
    return saved["producers"] if saved.get("base_offset") == base_offset else None
