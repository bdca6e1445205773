"""The room a shard keeps free on its disk: produces are refused below it.

A disk its producers fill to the last byte cannot be freed through the broker:
deleting a topic saves metadata.json and each shard's manifest, and deleting
records saves a log start floor, and each of those writes a new file before it
removes anything (tester D, session 39: on a full disk both failed, and the
way out was removing files by hand). So a shard refuses produces while its
data dir's file system has less than ``free_bytes_min`` free
(``plinth serve --produce-free-bytes-min``, by default
PRODUCE_FREE_BYTES_MIN_DEFAULT: 128 MiB), as Redpanda refuses producers below its
``storage_min_free_bytes``. The refusal is a DiskReserveRefusedError naming the
file system, the bytes free and the reserve: a StorageError that is checked
before the append, so on the wire a storageError with beforeWrite set, which
Plinth's producer counts as not stored (a failed write or fsync may have
stored the batch). Producers retry it until their delivery timeout (Plinth's
delivery_timeout_ms, client/sender.py; Kafka clients get KAFKA_STORAGE_ERROR
and retry until delivery.timeout.ms), so a disk freed meanwhile loses no
record. What
frees the disk (deletes), the consumer groups' commits (the offsets log) and
followers' replication keep writing into the reserve: they are small, or
copies of what a leader already took. The default is twice the free space a
``plinth serve`` start asks for (DATA_DIR_FREE_BYTES_MIN), so that a broker its
producers filled still restarts (at session 39's 16 MiB it did not, without a
lower --data-dir-free-bytes-min).

Asking the file system (``shutil.disk_usage``, a statvfs of about 2 µs, as
plinth/server.py's start check asks it) is not done at every produce: the free
bytes last read, less the bytes appended since, are trusted until they come
within the batch of the reserve, or until DISK_FREE_CHECK_INTERVAL_MS has
passed (another process may have used or freed space meanwhile).

The shard's loop thread owns it (ShardServer._produce), as it owns the
partitions' appends.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from plinth import limits
from plinth.errors import DiskReserveRefusedError

log = logging.getLogger(__name__)


class DiskReserve:
    """Refuses a produce that would leave the shard's file system with less than
    ``free_bytes_min`` free. ``free_bytes``: how many bytes the file system has free
    (a test's fake; by default statvfs of ``directory``); ``clock_s``: monotonic."""

    def __init__(self, directory: Path, free_bytes_min: int,
                 free_bytes: Callable[[], int] | None = None,
                 clock_s: Callable[[], float] = time.monotonic):
        if free_bytes_min < 0:
            raise AssertionError(f"a disk reserve of {free_bytes_min} bytes")
        self.directory = directory
        self.free_bytes_min = free_bytes_min
        self._free_bytes = free_bytes or (lambda: shutil.disk_usage(directory).free)
        self._clock_s = clock_s
        self._free_bytes_read = 0        # what the file system said last
        self._read_at_s = float("-inf")  # when (never yet)
        self._appended_bytes = 0         # appended since
        self._refused = 0                # produces refused in this outage

    def check(self, batch_bytes: int) -> None:
        """DiskReserveRefusedError if appending ``batch_bytes`` would leave less than
        the reserve free (or the free space cannot be read). Loop thread."""
        if self.free_bytes_min == 0:
            return
        if (self._clock_s() - self._read_at_s >= limits.DISK_FREE_CHECK_INTERVAL_MS / 1000
                or self._estimate() - batch_bytes < self.free_bytes_min):
            self._read()
        free_bytes = self._estimate()
        if free_bytes - batch_bytes >= self.free_bytes_min:
            if self._refused:
                log.info("produces to %s are taken again: %d bytes free, after %d refused",
                         self.directory, free_bytes, self._refused)
                self._refused = 0
            return
        self._refused += 1
        if self._refused == 1:
            log.warning("produces to %s are refused: its file system has %d bytes free, and "
                        "a batch of %d bytes would leave less than the %d the shard keeps "
                        "free (said once until produces are taken again)", self.directory,
                        free_bytes, batch_bytes, self.free_bytes_min)
        raise DiskReserveRefusedError(
            f"{self.directory}'s file system has {free_bytes} bytes free: a batch of "
            f"{batch_bytes} bytes would leave less than the {self.free_bytes_min} bytes the "
            f"shard keeps free (--produce-free-bytes-min) so that deleting topics or records "
            f"can still free it; delete some, or give the disk more room")

    def has_room(self, room_bytes: int) -> bool:
        """Whether the file system has at least ``room_bytes`` free, the reserve aside:
        a follower asks it before each fetch (shards/replica_fetcher.py). Asked of the
        file system each time, not estimated: a disk filled by another process within
        the check interval let a leader moved off it (its appends had just failed)
        rejoin as a follower at its first fetch; a fetch is far rarer than a produce,
        so the statvfs costs nothing. True if the file system cannot be asked (the
        append will say what is wrong). Loop thread."""
        try:
            self._read()
        except DiskReserveRefusedError:
            return True
        return self._estimate() >= room_bytes

    def snapshot(self) -> dict[str, int]:
        """The file system's free and total bytes now, and the reserve, for the
        metrics (``plinth_shard_disk_*``); empty if the file system cannot be asked.
        Loop thread (stats_snapshot)."""
        try:
            usage = shutil.disk_usage(self.directory)
        except OSError:
            return {}
        return {"free_bytes": usage.free, "total_bytes": usage.total,
                "reserve_bytes": self.free_bytes_min}

    def appended(self, batch_bytes: int) -> None:
        """``batch_bytes`` more are on the disk (any append: a produce, a commit, a
        replica's). Loop thread."""
        self._appended_bytes += batch_bytes

    def _estimate(self) -> int:
        return self._free_bytes_read - self._appended_bytes

    def _read(self) -> None:
        try:
            self._free_bytes_read = self._free_bytes()
        except OSError as exc:   # the directory is gone or unreadable: the append will say
            raise DiskReserveRefusedError(f"cannot read the free space of {self.directory}: "
                                          f"{exc.strerror or exc}") from None
        self._read_at_s = self._clock_s()
        self._appended_bytes = 0
