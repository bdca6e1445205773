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

This module is the in-memory history, its lookups, and its checkpoint file.
Runs on a shard's loop thread (the partition's owner), or in the replication
model tests (the history only).

The checkpoint file. ``<partition dir>/leader-epoch-checkpoint`` holds the
history as text, as Kafka's does, plus a CRC line so that a torn or flipped
file is detected rather than believed:

    1                   version (CHECKPOINT_VERSION)
    3                   count: how many entry lines follow
    0 0                 epoch start_offset       } one line per entry, oldest
    3 120               epoch start_offset       } first, decimal, one space
    4 500               epoch start_offset       }
    crc32c 3a24e72f     CRC-32C of every byte above (lines and their "\n"s),
                        8 lowercase hex digits; then a final "\n"

It is replaced atomically (durable_files.py: temp file, fsync, rename, fsync
of the directory) whenever an epoch is assigned or the history truncated,
before the first entry of a new epoch is acknowledged, so that a crash leaves
the old or the new history, never a mix. The log is the truth: after a
crash the history may name an epoch whose entries were not yet fsynced; the
partition (partition.py) truncates the entries at or past the recovered log's
end on open, as Kafka does. No file is an empty history (a new partition, or
one written before replication).

A bad file (torn, flipped, hand-edited) is recoverable damage of that one
partition, not of its shard: ``recover_leader_epochs`` sets it aside as
``leader-epoch-checkpoint.corrupt`` and the history starts empty. It cannot be
rebuilt exactly from the log, as Kafka rebuilds its cache from its batches'
partitionLeaderEpoch: a Plinth batch and its log entry header carry no epoch
(format/log_entry.py), only a Kafka batch does. An empty history is what a
follower has after ``restart_at``, and is safe the same way: the partition
(partition.py) marks a replica of a replicated partition as needing repair (out
of the in-sync set, never elected, until it has caught up with its leader), and
as a follower its first fetch carries no epoch, so the leader's epoch lookup
cuts its log back to the leader's first epoch's start (replication.py,
``divergence`` and ``truncation_for``) and it fetches the history again with the
entries: a replica with a lost history never keeps entries its leader
disagrees with, and never leads on them. A partition of one copy has no leader
to compare with and appends without epochs: it loses nothing but the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import crc32c

from plinth.durable_files import write_file_atomically
from plinth.errors import CorruptDataError

NO_EPOCH = -1           # no entry yet (an empty log), as Kafka's UNDEFINED_EPOCH
NO_OFFSET = -1
CHECKPOINT_FILE = "leader-epoch-checkpoint"
CORRUPT_SUFFIX = ".corrupt"   # a bad checkpoint, set aside (recover_leader_epochs)
CHECKPOINT_VERSION = 1   # Kafka's text file is version 0, without the CRC line
CRC_PREFIX = "crc32c "


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


# --- The checkpoint file ------------------------------------------------------


def checkpoint_bytes(epochs: LeaderEpochs) -> bytes:
    """The checkpoint file's contents for ``epochs``, as in the module docstring."""
    lines = [str(CHECKPOINT_VERSION), str(len(epochs.entries))]
    lines += [f"{entry.epoch} {entry.start_offset}" for entry in epochs.entries]
    body = "".join(line + "\n" for line in lines).encode("ascii")
    return body + f"{CRC_PREFIX}{crc32c.crc32c(body):08x}\n".encode("ascii")


def save_leader_epochs(directory: Path, epochs: LeaderEpochs) -> None:
    """Replace ``directory``'s checkpoint file with ``epochs``, durably. Loop thread.

    Raises OSError if the disk refuses (the caller names its partition)."""
    write_file_atomically(Path(directory) / CHECKPOINT_FILE, checkpoint_bytes(epochs),
                          sync_dir=True)


def load_leader_epochs(directory: Path) -> LeaderEpochs:
    """The history saved in ``directory``; empty if it has no checkpoint file. Loop thread.

    Raises CorruptDataError, naming the file and the line, if the file is torn,
    flipped or otherwise not one that ``save_leader_epochs`` wrote.
    """
    path = Path(directory) / CHECKPOINT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LeaderEpochs()
    return parse_checkpoint(data, path)


def recover_leader_epochs(directory: Path) -> tuple[LeaderEpochs, CorruptDataError | None]:
    """The history saved in ``directory``, and None; or, if its checkpoint is bad, an
    empty history and the error that says why, the file set aside first as
    ``leader-epoch-checkpoint.corrupt`` (replacing one set aside before) so that no
    later start reads it (module docstring: what the caller must do then). Loop
    thread. Raises OSError if the file cannot be read or set aside."""
    try:
        return load_leader_epochs(directory), None
    except CorruptDataError as error:
        path = Path(directory) / CHECKPOINT_FILE
        os.replace(path, path.with_name(CHECKPOINT_FILE + CORRUPT_SUFFIX))
        return LeaderEpochs(), error


def parse_checkpoint(data: bytes, path: Path) -> LeaderEpochs:
    """The history in checkpoint file contents ``data`` (read from ``path``)."""
    lines = data.split(b"\n")
    if len(lines) < 4 or lines[-1] != b"":
        _raise_corrupt(path, len(lines), f"{len(data)} bytes in {len(lines) - 1} lines, not "
                       f"a version, a count, the entries and a CRC line each ending in a newline")
    crc_line = lines[-2]
    body_bytes = len(data) - len(crc_line) - 1
    crc = crc32c.crc32c(data[:body_bytes])
    if crc_line != f"{CRC_PREFIX}{crc:08x}".encode("ascii"):
        _raise_corrupt(path, len(lines) - 1, f"{crc_line[:40]!r} is not the CRC of the lines "
                       f"above (crc32c {crc:08x}): the file is torn or flipped")
    version, count = _numbers(lines[0], path, 1, 1)[0], _numbers(lines[1], path, 2, 1)[0]
    if version != CHECKPOINT_VERSION:
        _raise_corrupt(path, 1, f"version {version}, this broker reads {CHECKPOINT_VERSION}")
    entry_lines = lines[2:-2]
    if count != len(entry_lines):
        _raise_corrupt(path, 2, f"count {count}, but {len(entry_lines)} entry lines follow")
    epochs = LeaderEpochs()
    for line_number, line in enumerate(entry_lines, start=3):
        epoch, start_offset = _numbers(line, path, line_number, 2)
        latest = epochs.entries[-1] if epochs.entries else None
        if latest is not None and (epoch <= latest.epoch or start_offset < latest.start_offset):
            _raise_corrupt(path, line_number, f"epoch {epoch} at offset {start_offset} after "
                           f"epoch {latest.epoch} at offset {latest.start_offset}: epochs "
                           f"must grow and start offsets must not shrink")
        epochs.assign(epoch, start_offset)
    return epochs


def _numbers(line: bytes, path: Path, line_number: int, count: int) -> list[int]:
    """The ``count`` non-negative decimal numbers of ``line``, separated by single spaces."""
    fields = line.split(b" ")
    if len(fields) != count or not all(field.isdigit() and len(field) <= 19 for field in fields):
        _raise_corrupt(path, line_number, f"{line[:40]!r} is not {count} non-negative "
                       f"number{'s' if count > 1 else ''} separated by single spaces")
    return [int(field) for field in fields]


def _raise_corrupt(path: Path, line_number: int, what: str) -> None:
    raise CorruptDataError(f"leader-epoch checkpoint {path}, line {line_number}: {what}")
