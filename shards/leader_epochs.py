"""Leader epochs of one partition: which leader wrote which offsets (KIP-101).

Each change of a partition's leader starts a new leader epoch (a number the
controller hands out, growing). The leader records (epoch, start offset): the
first offset it wrote in that epoch. A replica that becomes a follower asks
its leader where its own last epoch ends in the leader's log and truncates
there, never by high watermark alone: that is what keeps a record that was
acknowledged from being cut, and a record that was not from surviving on one
replica at an offset that another replica fills differently.

    entries: [(epoch 0, start 0), (epoch 3, start 120), (epoch 4, start 500)]
        epoch 0 wrote offsets 0..119, epoch 3 wrote 120..499, epoch 4 from 500

Invariants, checked on every change (AssertionError: a programmer error):
- epochs strictly grow along the list, start offsets do not shrink;
- an epoch whose start offset equals the next one's wrote nothing and is
  replaced by it (as Kafka's LeaderEpochFileCache does).

This module is the in-memory history and its lookups. Runs on a shard's loop
thread (the partition's owner), or in the replication model tests.
"""

from __future__ import annotations

from typing import NamedTuple

NO_EPOCH = -1           # no entry yet (an empty log), as Kafka's UNDEFINED_EPOCH
NO_OFFSET = -1


class EpochEntry(NamedTuple):
    """Leader epoch ``epoch`` wrote offsets from ``start_offset`` on."""

    epoch: int
    start_offset: int


class LeaderEpochs:
    """The (epoch, start offset) history of one partition's log, oldest first."""

    def __init__(self, entries: list[EpochEntry] | None = None):
        self._entries: list[EpochEntry] = []
        for entry in entries or ():
            self.assign(entry.epoch, entry.start_offset)

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    def latest_epoch(self) -> int:
        """The newest epoch that wrote (or will write) this log; NO_EPOCH if none."""
        return self._entries[-1].epoch if self._entries else NO_EPOCH

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Epoch ``epoch`` writes from ``start_offset`` on; returns whether anything changed.

        Assigning the latest epoch again changes nothing. An older epoch, or a
        start offset before the latest entry's, is a programmer error: the
        caller truncates first (``truncate_from_end``)."""
        if epoch < 0 or start_offset < 0:
            raise AssertionError(f"leader epoch {epoch} at offset {start_offset}: both must be >= 0")
        if self._entries:
            latest = self._entries[-1]
            if epoch == latest.epoch:
                return False
            if epoch < latest.epoch or start_offset < latest.start_offset:
                raise AssertionError(
                    f"leader epoch {epoch} at offset {start_offset} comes after {latest}: "
                    f"epochs must grow and start offsets must not shrink")
            if start_offset == latest.start_offset:
                self._entries.pop()       # the latest epoch wrote nothing
        self._entries.append(EpochEntry(epoch, start_offset))
        return True

    def end_offset_for(self, epoch: int, log_end_offset: int) -> EpochEntry:
        """Where ``epoch`` ends in this log (Kafka's OffsetsForLeaderEpoch).

        Returns (the largest epoch <= ``epoch`` that this log has, the offset
        where that epoch ends: the next epoch's start, or ``log_end_offset``
        for the latest). (NO_EPOCH, NO_OFFSET) if every epoch here is newer
        than ``epoch``, or there are none."""
        found = NO_EPOCH
        for entry in self._entries:
            if entry.epoch > epoch:
                break
            found = entry.epoch
        else:
            return EpochEntry(found, log_end_offset if found != NO_EPOCH else NO_OFFSET)
        if found == NO_EPOCH:
            return EpochEntry(NO_EPOCH, NO_OFFSET)
        return EpochEntry(found, entry.start_offset)

    def epoch_at(self, offset: int) -> int:
        """The epoch that wrote ``offset``; NO_EPOCH if it is before every entry."""
        epoch = NO_EPOCH
        for entry in self._entries:
            if entry.start_offset > offset:
                break
            epoch = entry.epoch
        return epoch

    def truncate_from_end(self, end_offset: int) -> list[EpochEntry]:
        """The log was cut to ``end_offset``: forget the epochs that start at or after
        it. Returns what was removed."""
        kept = [e for e in self._entries if e.start_offset < end_offset]
        removed = self._entries[len(kept):]
        self._entries = kept
        return removed

    def truncate_from_start(self, start_offset: int) -> list[EpochEntry]:
        """Retention deleted the offsets before ``start_offset``: the epoch that holds
        it now starts there, and older ones go. Returns what was removed."""
        keep_from = 0
        for i, entry in enumerate(self._entries):
            if entry.start_offset <= start_offset:
                keep_from = i
        removed = self._entries[:keep_from]
        kept = self._entries[keep_from:]
        if kept and kept[0].start_offset < start_offset:
            removed = removed + [kept[0]]
            kept[0] = EpochEntry(kept[0].epoch, start_offset)
        self._entries = kept
        return removed

    def __repr__(self) -> str:
        return f"LeaderEpochs({self._entries})"
