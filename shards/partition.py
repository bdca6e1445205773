"""One partition served by a shard: its log, its high watermark, its idempotent producers.

Runs in a shard actor, on its loop thread only (shard_server.py), every
method: nothing else reads or writes the log, so nothing changes between
checking the partition's state and using it.

High watermark. Consumers read records below it, and it only moves forward:
group commit (group_commit.py) moves it to the durable end under fsync_policy
"always" and to the written end otherwise, so no consumer reads a record that
a crash could take back.

Sealed. A partition whose writes moved to another shard at ``high_watermark``
is sealed: its log is read-only history, served until retention deletes it.
If its writes come back (``take_writes``), the log continues at the offset
where the other shard stopped, with that shard's producers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from plinth.errors import StorageError
from plinth.format.record_batch import summarize_batch
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.producer_state import ProducerStates, load_snapshot, save_snapshot

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Partition:
    """One partition's log and state. Loop thread only. Make one with ``Partition.open``."""

    topic: str
    partition: int
    log: PartitionLog
    high_watermark: int
    producers: ProducerStates = field(default_factory=ProducerStates)
    sealed: bool = False
    # Built once, because every produce and fetch uses them: (topic, partition)
    # keys the shard's tables, and "<topic>-<partition>" names it in messages.
    key: tuple[str, int] = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.topic, self.partition)
        self.name = f"{self.topic}-{self.partition}"

    @classmethod
    def open(cls, directory: Path, topic: str, partition: int, log_config: LogConfig,
             initial_offset: int = 0) -> Partition:
        """Open (recovering) or create the log in ``directory``; a new log starts at
        ``initial_offset``. Everything the log holds is readable."""
        plog = PartitionLog.open(directory, log_config, initial_offset=initial_offset)
        # What survived recovery is on disk; make it durable, then readable.
        plog.flush()
        return cls(topic, partition, plog, plog.end_offset)

    def take_writes(self, initial_offset: int, moved_producers: list | None) -> None:
        """Take writes from ``initial_offset`` on, if the log ends before it.

        ``initial_offset`` is where the previous owner sealed the partition
        (the log has a gap if it lived here before), and ``moved_producers``
        that owner's idempotence snapshot. A partition that was sealed here
        forgets its own producers: they wrote to the other shard since.
        """
        if self.sealed:
            self.producers = ProducerStates()
            self.sealed = False
        if initial_offset > self.log.end_offset:
            self.log.continue_at(initial_offset)
            self.high_watermark = self.log.end_offset
        if not len(self.producers):
            seed = self._producer_seed(initial_offset, moved_producers)
            self.producers = ProducerStates.rebuild(self.log, summarize_batch, seed)

    def _producer_seed(self, initial_offset: int, moved: list | None) -> list | None:
        """The producers' state before the active segment's first batch: saved when
        the log rolled to it, or handed over by the previous owner if the segment
        began at the move."""
        active_base_offset = self.log.active_base_offset
        saved = load_snapshot(self.log.directory, active_base_offset)
        if saved is not None:
            return saved
        return moved if active_base_offset <= initial_offset else None

    def append(self, batch, summary) -> int:
        """Append a batch that ``summarize_batch`` accepted, as ``summary`` describes it,
        and remember its producer's sequence; returns its base offset. Not fsynced.

        The caller asked ``producers.check`` first (a duplicate is not appended).
        Raises StorageError, naming the partition and the directory, when the
        disk refuses the write.
        """
        plog = self.log
        active_base_offset = plog.active_base_offset
        try:
            base_offset = plog.append(batch, summary.record_count, summary.max_timestamp_ms)
        except OSError as exc:
            raise StorageError(f"cannot append to {self.name} in {plog.directory}: {exc}") from None
        if plog.active_base_offset != active_base_offset:
            self._save_producers()   # before this batch: the new segment replays it
        self.producers.record(summary.producer_id, summary.base_sequence, summary.record_count,
                              base_offset)
        return base_offset

    def _save_producers(self) -> None:
        """The log rolled: save the producers' state for a restart (producer_state.py)."""
        try:
            save_snapshot(self.log.directory, self.log.active_base_offset, self.producers)
        except OSError as exc:   # the batch is fine; only a retry across a restart is at risk
            log.error("cannot save the producer state of %s in %s: %s", self.name,
                      self.log.directory, exc)

    def advance(self, high_watermark: int) -> bool:
        """Let consumers read up to ``high_watermark``; returns whether it moved."""
        if high_watermark == self.high_watermark:
            return False
        if not self.high_watermark < high_watermark <= self.log.end_offset:
            raise AssertionError(
                f"the high watermark of {self.name} in {self.log.directory} would move from "
                f"{self.high_watermark} to {high_watermark}; it only grows, up to the log's "
                f"end offset {self.log.end_offset}")
        self.high_watermark = high_watermark
        return True
