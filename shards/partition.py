"""One partition served by a shard: its log, its high watermark, its idempotent producers.

Runs in a shard actor, on its loop thread only (shard_server.py), every
method: nothing else reads or writes the log, so nothing changes between
checking the partition's state and using it.

High watermark. Consumers read records below it, and it only moves forward:
group commit (group_commit.py) moves it to the durable end under fsync_policy
"always" and to the written end otherwise, so no consumer reads a record that
a crash could take back.

Timestamps. A batch is appended only if its records' timestamps lie in the
topic's window around the shard's clock: none more than
message.timestamp.before.max.ms before it (LogConfig.timestamp_before_ms_max,
unlimited by default) nor more than message.timestamp.after.max.ms after it
(an hour by default); otherwise InvalidTimestampError. The batch's smallest and
largest timestamps (baseTimestampMs, maxTimestampMs, which the batch's rules tie
to its records) are all that is compared: no per-record work.

Sealed. A partition whose writes moved to another shard at ``high_watermark``
is sealed: its log is read-only history, served until retention deletes it.
If its writes come back (``take_writes``), the log continues at the offset
where the other shard stopped, with that shard's producers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from plinth import topics
from plinth.errors import InvalidTimestampError, StorageError
from plinth.format.record_batch import summarize_batch
from plinth.shards.partition_log import LogConfig, PartitionLog, wall_clock_ms
from plinth.shards.producer_state import ProducerStates, load_snapshot, save_snapshot
from plinth.shards.segment_files import SegmentFiles

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
             initial_offset: int = 0, files: SegmentFiles | None = None) -> Partition:
        """Open (recovering) or create the log in ``directory``; a new log starts at
        ``initial_offset``. Everything the log holds is readable. ``files``: the
        shard's open segment files, shared by its partitions (a private one if None)."""
        plog = PartitionLog.open(directory, log_config, initial_offset=initial_offset,
                                 files=files)
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

    def append(self, batch, summary, now_ms: int | None = None) -> int:
        """Append a batch that ``summarize_batch`` accepted, as ``summary`` describes it,
        and remember its producer's sequence; returns its base offset. Not fsynced.

        ``now_ms`` is the shard's clock (None reads it). The caller asked
        ``producers.check`` first (a duplicate is not appended). Raises
        InvalidTimestampError, appending nothing, for a record outside the
        topic's timestamp window, and StorageError, naming the partition and
        the directory, when the disk refuses the write.
        """
        if now_ms is None:
            now_ms = wall_clock_ms()
        self._check_timestamps(summary, now_ms)
        plog = self.log
        active_base_offset = plog.active_base_offset
        try:
            base_offset = plog.append(batch, summary.record_count, summary.max_timestamp_ms)
        except OSError as exc:
            raise StorageError(f"cannot append to {self.name} in {plog.directory}: {exc}") from None
        if plog.active_base_offset != active_base_offset:
            self._save_producers()   # before this batch: the new segment replays it
        self.producers.record(summary.producer_id, summary.base_sequence, summary.record_count,
                              base_offset, now_ms)
        return base_offset

    def _check_timestamps(self, summary, now_ms: int) -> None:
        """Raise InvalidTimestampError unless every record's timestamp is in the window."""
        config = self.log.config
        before_ms = now_ms - summary.base_timestamp_ms
        if before_ms > config.timestamp_before_ms_max:
            self._raise_outside_window(summary.base_timestamp_ms, now_ms, f"{before_ms} ms before",
                                       topics.MESSAGE_TIMESTAMP_BEFORE_MAX_MS,
                                       config.timestamp_before_ms_max)
        after_ms = summary.max_timestamp_ms - now_ms
        if after_ms > config.timestamp_after_ms_max:
            self._raise_outside_window(summary.max_timestamp_ms, now_ms, f"{after_ms} ms after",
                                       topics.MESSAGE_TIMESTAMP_AFTER_MAX_MS,
                                       config.timestamp_after_ms_max)

    def _raise_outside_window(self, timestamp_ms: int, now_ms: int, how_far: str, key: str,
                              limit_ms: int) -> None:
        config = self.log.config
        raise InvalidTimestampError(
            f"{self.name}: a record's timestamp {timestamp_ms} ms is {how_far} the shard's clock "
            f"({now_ms} ms), over {key}={limit_ms}; the topic's window is "
            f"{config.timestamp_before_ms_max} ms before to {config.timestamp_after_ms_max} ms "
            f"after the clock")

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
