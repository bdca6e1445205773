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

Replication. A partition keeps its leader-epoch history (leader_epochs.py),
loaded with the log; after the log's recovery, the epochs that start at or
past the recovered end are forgotten. As leader, ``append`` with a
``leader_epoch`` assigns that epoch at the batch's base offset when it is new
and saves the checkpoint before the batch is written (so before it can be
acknowledged). As follower, ``append_replicated`` takes the leader's entries as
stored, the epochs that start inside them, and each batch's producer id and
sequence (so a new leader recognises an idempotent producer's retry);
``truncate_to`` cuts the log, the epochs and the producers' state back to
where the follower agrees with its leader, and ``restart_at`` empties it to
start at the leader's log start offset. A partition whose recovery cut
entries ``needs_repair``: its log may have lost records it had acknowledged,
so it must not count as in sync, nor be elected, until it has caught up with
its leader's high watermark (``note_caught_up``). The mark is kept on disk
(``<partition dir>/needs-repair``, the reason as text) so that a second
restart, which cuts nothing, does not forget it. The shard marks a partition
whose directory it found missing the same way (``directory_created`` for a
partition its manifest knew: a lost or wiped disk), and one whose leader-epoch
checkpoint was bad (set aside, the history started empty: leader_epochs.py).
Partitions of factor 1 ignore the mark.

Sealed. A partition whose writes moved to another shard at ``high_watermark``
is sealed: its log is read-only history, served until retention deletes it.
If its writes come back (``take_writes``), the log continues at the offset
where the other shard stopped, with that shard's producers.

Deleted records. ``delete_records`` (Kafka's DeleteRecords) raises the log
start floor (log_start_floor.py), saved before it returns: ``log_start_offset``
is then max(floor, the first offset the segments hold), even inside a segment,
and every read path compares with ``log_start_offset``. Segments wholly below
the floor are deleted at once, and by every retention pass after (a follower
that adopted its leader's floor, ``adopt_leader_floor``; a restart), the active
one too once the floor reaches the log's end (rolled first); a tiered
partition's are left to local retention (only uploaded segments go), its
remote ones to remote retention, and reads of either below the floor are
refused all the same. The leader epochs and a follower's restart point keep
following the segments (``stored_start_offset``): entries below the floor are
still replicated whole, and an epoch starts at an entry's base offset.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from plinth import topics
from plinth.durable_files import fsync_directory, write_file_atomically
from plinth.errors import (
    CorruptDataError, InvalidBatchError, InvalidTimestampError, OffsetOutOfRangeError,
    RecordTooLargeError, StorageError)
from plinth.format import batch_formats
from plinth.format.kafka_batch import stamp_kafka_batch
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2, BATCH_FORMAT_PLINTH, LOG_ENTRY_HEADER_BYTES
from plinth.format.record_batch import BatchSummary
from plinth.protocol import DELETE_RECORDS_TO_HIGH_WATERMARK
from plinth.shards.log_start_floor import (
    CORRUPT_SUFFIX, FLOOR_FILE, FLOOR_LOST, load_floor, save_floor)
from plinth.shards.leader_epochs import (
    CHECKPOINT_FILE, CORRUPT_SUFFIX as EPOCHS_CORRUPT_SUFFIX, NO_EPOCH, LeaderEpochs,
    recover_leader_epochs, save_leader_epochs)
from plinth.shards.partition_log import (
    CheckedEntries, LogConfig, PartitionLog, RetentionResult, TruncationResult, wall_clock_ms)
from plinth.shards.producer_state import (
    ProducerStates, discard_snapshot_after, discard_snapshots_before, recover_snapshot,
    save_snapshot)
from plinth.shards.shard_calls import (OPENED_CREATED_EMPTY, OPENED_LOST, OPENED_NEEDS_REPAIR,
                                       OPENED_RECOVERED_WHOLE)
from plinth.shards.partition_metadata import load_topic_id, save_topic_id
from plinth.shards.segment_files import SegmentFiles
from plinth.shards.storage_outage import StorageOutage
from plinth.shards.tier.remote_log_view import EMPTY_REMOTE_LOG, RemoteLogView
from plinth.shards.tier.tier_policy import local_segments_past_retention

log = logging.getLogger(__name__)

NEEDS_REPAIR_FILE = "needs-repair"


@dataclass(eq=False)
class Partition:
    """One partition's log and state. Loop thread only. Make one with ``Partition.open``."""

    topic: str
    partition: int
    log: PartitionLog
    high_watermark: int
    producers: ProducerStates = field(default_factory=ProducerStates)
    sealed: bool = False
    leader_epochs: LeaderEpochs = field(default_factory=LeaderEpochs)
    # Recovery cut entries: not in sync, not electable, until caught up (module docstring).
    needs_repair: bool = False
    # open() found no directory: a new partition, or (if the shard knew it) a lost disk.
    directory_created: bool = False
    # One copy, its directory found missing at a restart (shard_replication.py): what
    # open_state says until the controller has heard it (OPENED_LOST).
    lost_at_restart: bool = False
    # Its segments in object storage, as the uploader last published them
    # (shards/tier/remote_log_view.py); empty unless the topic is tiered.
    remote: RemoteLogView = EMPTY_REMOTE_LOG
    # The topic's id (topics.new_topic_id), which names its remote segments
    # (shards/tier/remote_segment.py); "" until the controller has said it.
    topic_id: str = ""
    # No record below it is served (deleteRecords; log_start_floor.py); 0: none deleted.
    floor: int = 0
    # Built once, because every produce and fetch uses them: (topic, partition)
    # keys the shard's tables, and "<topic>-<partition>" names it in messages.
    key: tuple[str, int] = field(init=False)
    name: str = field(init=False)
    # Appends refused by the disk, said once per outage.
    _outage: StorageOutage = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.key = (self.topic, self.partition)
        self.name = f"{self.topic}-{self.partition}"
        refused = "offset commits" if self.topic == topics.OFFSETS_TOPIC else "producers"
        self._outage = StorageOutage(self.name, refused, log)

    @property
    def log_start_offset(self) -> int:
        """The first offset this partition serves (Kafka's log start offset, its low
        watermark): the floor deleteRecords raised, if above ``stored_start_offset``;
        never past the log's end offset (a follower cut back below its floor)."""
        return min(max(self.floor, self.stored_start_offset), self.log.end_offset)

    @property
    def local_start_offset(self) -> int:
        """The first offset this partition serves from the shard's disk (Kafka's local
        log start offset): the local log's start, or ``log_start_offset`` where
        deleteRecords raised it past that (Kafka's never falls below the log start:
        the records below are not served, though their segment is still on disk)."""
        return max(self.log.start_offset, self.log_start_offset)

    @property
    def stored_start_offset(self) -> int:
        """The first offset this partition's segments hold: in object storage if the
        remote log reaches back further than the local one, else on the local disk
        (``log.start_offset``). An entry's base offset, unlike ``log_start_offset``."""
        remote_start = self.remote.log_start_offset
        local_start = self.log.start_offset
        return local_start if remote_start is None else min(remote_start, local_start)

    @classmethod
    def open(cls, directory: Path, topic: str, partition: int, log_config: LogConfig,
             initial_offset: int = 0, files: SegmentFiles | None = None,
             one_copy: bool = False) -> Partition:
        """Open (recovering) or create the log in ``directory``; a new log starts at
        ``initial_offset``. Everything the log holds is readable. ``files``: the
        shard's open segment files, shared by its partitions (a private one if None).
        ``one_copy``: no replica exists to repair it from, so a recovery cut marks
        nothing (the shard says what it lost: shard_replication.py)."""
        directory_created = not Path(directory).exists()
        try:
            plog = PartitionLog.open(directory, log_config, initial_offset=initial_offset,
                                     files=files)
        except (OSError, StorageError) as exc:   # a full disk, a read-only one: named
            if directory_created:   # nothing of it is left for a later create to trip on
                shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"cannot open {topic}-{partition} in {directory}: "
                               f"{exc.strerror or exc}") from None
        try:
            # What survived recovery is on disk; make it durable, then readable.
            plog.flush()
            epochs, bad_epochs = _recovered_epochs(topic, partition, plog.directory)
            part = cls(topic, partition, plog, plog.end_offset, leader_epochs=epochs,
                       directory_created=directory_created)
            part._load_floor()
            part._fit_epochs_to_log()
            part._mark_needs_repair(one_copy)
            if bad_epochs is not None:
                part._note_lost_epochs(bad_epochs, one_copy)
        except BaseException:
            plog.close()
            raise
        return part

    def set_topic_id(self, topic_id: str) -> None:
        """The topic's id, as the controller gave it ("" says nothing). A partition
        keeps the id it has: one open here under another id is a programmer error
        (a deleted topic's partition is closed before its name is used again)."""
        if not topic_id or topic_id == self.topic_id:
            return
        if self.topic_id:
            raise AssertionError(f"{self.name} has topic id {self.topic_id}, not {topic_id}: "
                                 f"the topic was created again while its partition was open")
        if load_topic_id(self.log.directory, quiet=True) != topic_id:   # whose it is
            save_topic_id(self.log.directory, topic_id)
        self.topic_id = topic_id

    def _fit_epochs_to_log(self) -> None:
        """Forget the epochs outside the log (recovery cut their entries, or retention
        did); saves the checkpoint if that changed it."""
        epochs = LeaderEpochs(self.leader_epochs.entries)
        epochs.truncate_from_start(self.stored_start_offset)   # remote offsets keep theirs
        epochs.truncate_from_end(self.log.end_offset)
        if epochs.entries != self.leader_epochs.entries:
            self._save_epochs(epochs)

    def _save_epochs(self, epochs: LeaderEpochs) -> None:
        """Make ``epochs`` durable, then the partition's history. Raises StorageError,
        naming the partition, with the history unchanged, if the disk refuses."""
        try:
            save_leader_epochs(self.log.directory, epochs)
        except OSError as exc:
            raise StorageError(f"cannot save the leader epochs of {self.name} in "
                               f"{self.log.directory}: {exc}") from None
        self.leader_epochs = epochs

    def _mark_needs_repair(self, one_copy: bool) -> None:
        """Set ``needs_repair`` if this open's recovery cut entries (saving the mark)
        or an earlier one did and the partition has not caught up since. Of one copy,
        only a mark an earlier open left is taken, and quietly (its owner clears it)."""
        recovery = self.log.recovery
        if one_copy:
            # "Not in sync until it has caught up with its leader" would be false: it
            # has none (the shard logged it for every one-copy partition a crash tore).
            self.needs_repair = (self.log.directory / NEEDS_REPAIR_FILE).exists()
        elif recovery.bytes_truncated:
            self.mark_needs_repair(f"recovery cut {recovery.bytes_truncated} bytes at end offset "
                                   f"{self.log.end_offset}: {recovery.reason}")
        elif (self.log.directory / NEEDS_REPAIR_FILE).exists():
            self.needs_repair = True
            log.warning("%s still needs repair: a replica is not in sync until it has caught "
                        "up with its leader (%s)", self.name,
                        (self.log.directory / NEEDS_REPAIR_FILE).read_text().strip())

    def _note_lost_epochs(self, error: CorruptDataError, one_copy: bool) -> None:
        """The leader-epoch checkpoint was bad (``error``) and set aside; the history
        starts empty (leader_epochs.py says why that is safe). Log it at ERROR, and
        mark a replica of a replicated partition as needing repair: its log must be
        checked against its leader's before it counts as in sync or leads."""
        aside = f"{CHECKPOINT_FILE}{EPOCHS_CORRUPT_SUFFIX}"
        if one_copy:
            log.error("%s: %s: kept as %s; its leader-epoch history starts empty (a "
                      "partition of one copy has no leader to compare it with: no record "
                      "is lost)", self.name, error.message, aside)
            return
        log.error("%s: %s: kept as %s; its leader-epoch history starts empty, and the "
                  "replica is out of the in-sync set until it has fetched from its leader, "
                  "whose epoch lookup cuts its log back to where their histories agree (at "
                  "worst to the leader's first epoch) and sends the history again",
                  self.name, error.message, aside)
        if not self.needs_repair:
            self.mark_needs_repair(f"its leader-epoch checkpoint was bad and set aside as "
                                   f"{aside}: its history must be fetched from its leader")

    # --- Deleted records (the log start floor) ------------------------------------

    def _load_floor(self) -> None:
        """Read the saved floor (on open). A lost one (a bad file: log_start_floor.py) is
        floor 0: everything the segments hold is served, and the ERROR says how to
        delete again what may have come back."""
        try:
            loaded = load_floor(self.log.directory)
        except OSError as exc:
            raise StorageError(f"cannot read the log start floor of {self.name} in "
                               f"{self.log.directory}: {exc}") from None
        self.floor = loaded.floor
        if loaded.outcome == FLOOR_LOST:
            log.error("%s lost its log start floor (%s; kept as %s): serving every record "
                      "it holds, offsets %d to %d, so that no acknowledged record is hidden; "
                      "records deleted before may be served again: delete them again with "
                      "plinth topic delete-records", self.name, loaded.reason,
                      self.log.directory / (FLOOR_FILE + CORRUPT_SUFFIX),
                      self.stored_start_offset, self.log.end_offset)

    def raise_floor(self, offset: int) -> bool:
        """No record below ``offset`` is served from now on (saved first); returns
        whether the floor moved (never down). Raises StorageError, naming the
        partition, with the floor unchanged, if the disk refuses."""
        if offset <= self.floor:
            return False
        try:
            save_floor(self.log.directory, offset)
        except OSError as exc:
            raise StorageError(f"cannot save the log start floor {offset} of {self.name} in "
                               f"{self.log.directory}: {exc}") from None
        self.floor = offset
        return True

    def delete_records(self, offset: int) -> int:
        """Kafka's DeleteRecords as this partition's leader: no record below ``offset``
        (-1: the high watermark) is served any more, durably before this returns;
        returns the new log start offset (the low watermark). Below the current log
        start nothing changes. OffsetOutOfRangeError for an offset past the high
        watermark or negative (not -1), naming both ends. Segments wholly below
        go at once, but a tiered partition's (``delete_segments_below_floor``)."""
        if offset == DELETE_RECORDS_TO_HIGH_WATERMARK:
            offset = self.high_watermark
        if offset < 0 or offset > self.high_watermark:
            raise OffsetOutOfRangeError(
                f"cannot delete the records of {self.name} before offset {offset}: it must "
                f"be from its log start offset {self.log_start_offset} to its high watermark "
                f"{self.high_watermark} (or -1, the high watermark)")
        if offset > self.log_start_offset:
            self.raise_floor(offset)
            self.delete_segments_below_floor()
        return self.log_start_offset

    def adopt_leader_floor(self, leader_floor: int) -> bool:
        """As a follower: take the leader's floor, up to this replica's high watermark
        (the floor never passes what consumers may read here; it catches up with the
        next fetches). Returns whether the floor moved."""
        return self.raise_floor(min(leader_floor, self.high_watermark))

    def delete_segments_below_floor(self) -> RetentionResult:
        """Delete the local segments that end at or before the floor, then fit the
        leader epochs; a tiered partition's stay for local retention, which deletes
        only uploaded ones (its uploader may be reading them). The active segment
        goes too once the floor reaches the log's end (rolled first, as every roll
        saves the producers' state): Kafka keeps it until it rolls, so deleting every
        record of a partition whose records fit one segment freed no byte of a full
        disk (session 40). Returns what was deleted."""
        if self.floor <= self.log.start_offset or self.log.config.remote_storage_enable:
            return RetentionResult(0, 0, self.log.start_offset)
        if self.floor >= self.log.end_offset and self.log.roll_active():
            self._save_producers()
        return self._fit_epochs_after(self.log.delete_segments_before(
            self.floor, why=f"below the log start floor {self.floor}"))

    def open_state(self) -> str:
        """How this replica was found when opened, for the controller (shard_calls.py):
        lost (one copy found missing at a restart, not said yet), needs repair (the
        mark is set), else created empty (``open`` made its directory), else recovered
        whole."""
        if self.lost_at_restart:
            return OPENED_LOST
        if self.needs_repair:
            return OPENED_NEEDS_REPAIR
        return OPENED_CREATED_EMPTY if self.directory_created else OPENED_RECOVERED_WHOLE

    def mark_needs_repair(self, reason: str) -> None:
        """The log may have lost records it held (``reason`` says how: recovery cut
        entries; the shard found the directory of a partition it knew missing):
        set ``needs_repair`` and keep the mark on disk until ``note_caught_up``."""
        path = self.log.directory / NEEDS_REPAIR_FILE
        try:
            write_file_atomically(path, f"{reason}\n".encode(), sync_dir=True)
        except OSError as exc:
            raise StorageError(f"cannot mark {self.name} as needing repair in {path} "
                               f"({reason}): {exc}") from None
        self.needs_repair = True
        log.warning("%s needs repair: a replica is not in sync until it has caught up with "
                    "its leader (%s)",
                    self.name, reason)

    def note_caught_up(self, leader_high_watermark: int) -> bool:
        """The replica has fetched (durably) up to ``leader_high_watermark``, its leader's:
        clear ``needs_repair`` if it was set; returns whether it was cleared."""
        if not self.needs_repair or self.log.flushed_end_offset < leader_high_watermark:
            return False
        self.clear_repair_mark(f"caught up to its leader's high watermark "
                               f"{leader_high_watermark}")
        return True

    def clear_repair_mark(self, why: str) -> None:
        """Clear ``needs_repair`` and its mark on disk, saying ``why`` (repaired, or a
        partition of one copy, which nothing can repair)."""
        path = self.log.directory / NEEDS_REPAIR_FILE
        try:
            path.unlink(missing_ok=True)
            fsync_directory(self.log.directory)
        except OSError as exc:
            raise StorageError(
                f"cannot clear the repair mark {path} of {self.name}: {exc}") from None
        self.needs_repair = False
        log.info("%s: repair mark cleared: %s", self.name, why)

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
            self.producers = ProducerStates.rebuild(self.log, batch_formats.summarize, seed)

    def _producer_seed(self, initial_offset: int, moved: list | None) -> list | None:
        """The producers' state before the active segment's first batch: saved when
        the log rolled to it, or handed over by the previous owner if the segment
        began at the move."""
        active_base_offset = self.log.active_base_offset
        saved, damage = recover_snapshot(self.log.directory, active_base_offset)
        if saved is not None:
            return saved
        seed = moved if active_base_offset <= initial_offset else None
        if damage is not None:
            self._warn_lost_snapshot(damage, active_base_offset, seed is not None)
        return seed

    def _warn_lost_snapshot(self, damage: str, active_base_offset: int, moved: bool) -> None:
        """Say, at WARNING, what a damaged producers' snapshot costs (``damage`` names
        it, and says it was set aside): what ``plinth check`` says of it."""
        if moved:
            cost = ("the previous owner's snapshot, kept in the manifest, seeds the "
                    "producers' state instead: no retry is missed")
        else:
            cost = (f"the producers' state is rebuilt from the active segment alone: an "
                    f"idempotent producer's retry of a batch written before offset "
                    f"{active_base_offset} may be stored twice")
        log.warning("%s: %s: %s", self.name, damage, cost)

    @property
    def appends_failing(self) -> bool:
        """Whether the disk refused this partition's last append (StorageOutage)."""
        return self._outage.failing

    def append(self, batch, summary, now_ms: int | None = None,
               leader_epoch: int = NO_EPOCH, batch_format: int = BATCH_FORMAT_PLINTH) -> int:
        """Append a batch in ``batch_format`` that ``batch_formats.summarize`` accepted,
        as ``summary`` describes it, and remember its producer's sequence; returns its
        base offset. Not fsynced.

        A Kafka batch is stored as its producer sent it but for its base offset
        and partition leader epoch, which are set here (outside Kafka's CRC).

        ``now_ms`` is the shard's clock (None reads it). The caller asked
        ``producers.check`` first (a duplicate is not appended). ``leader_epoch``
        is this shard's epoch as the partition's leader (NO_EPOCH: factor 1): a
        new one is assigned at this batch's base offset and saved first; an
        older one than the latest here is a programmer error (the shard fences
        it first). Raises RecordTooLargeError, appending nothing, for a batch over the
        topic's max.message.bytes, InvalidTimestampError for a record outside the
        topic's timestamp window, and StorageError, naming the
        partition and the directory, when the disk refuses the write.
        """
        with self._outage.watch():
            return self._append(batch, summary, now_ms, leader_epoch, batch_format)

    def _append(self, batch, summary, now_ms: int | None, leader_epoch: int,
                batch_format: int) -> int:
        """``append``'s work, without the watch on storage errors."""
        if now_ms is None:
            now_ms = wall_clock_ms()
        self._check_batch_bytes(batch, summary.record_count)
        self._check_timestamps(summary, now_ms)
        if leader_epoch >= 0 and leader_epoch != self.leader_epochs.latest_epoch():
            self._start_epoch(leader_epoch)
        plog = self.log
        active_base_offset = plog.active_base_offset
        stamped_offset = plog.end_offset   # a roll keeps it: the new segment starts there
        if batch_format == BATCH_FORMAT_KAFKA_V2:
            batch = stamp_kafka_batch(batch, stamped_offset, leader_epoch)
        try:
            base_offset = plog.append(batch, summary.record_count, summary.max_timestamp_ms,
                                      batch_format)
        except OSError as exc:
            raise StorageError(f"cannot append to {self.name} in {plog.directory}: {exc}") from None
        if base_offset != stamped_offset:
            raise AssertionError(f"{self.name}: batch stamped with offset {stamped_offset} was "
                                 f"appended at {base_offset}")
        if plog.active_base_offset != active_base_offset:
            self._save_producers()   # before this batch: the new segment replays it
        self.producers.record(summary.producer_id, summary.base_sequence, summary.record_count,
                              base_offset, now_ms, producer_epoch=summary.producer_epoch)
        return base_offset

    def start_epochs_at(self, offset: int) -> None:
        """Forget the leader epochs before ``offset`` (the one holding it starts there;
        saved): the replicated range this shard takes part in starts there (its writes
        moved to this replica set at ``offset``). What is before is sealed, or on other
        shards; a follower's epoch lookup must not reach into it (it would truncate
        records no leader of this range has)."""
        epochs = LeaderEpochs(self.leader_epochs.entries)
        epochs.truncate_from_start(offset)
        if epochs.entries != self.leader_epochs.entries:
            self._save_epochs(epochs)

    def _start_epoch(self, leader_epoch: int) -> None:
        """This shard leads in a new epoch: it writes from the log's end on (saved)."""
        latest_epoch = self.leader_epochs.latest_epoch()
        if leader_epoch < latest_epoch:
            raise AssertionError(f"{self.name} appends as leader in epoch {leader_epoch}, older "
                                 f"than its latest epoch {latest_epoch}")
        epochs = LeaderEpochs(self.leader_epochs.entries)
        epochs.assign(leader_epoch, self.log.end_offset)
        self._save_epochs(epochs)

    # --- Follower ------------------------------------------------------------------

    def append_replicated(self, entries, epoch_starts, now_ms: int | None = None) -> int:
        """Append the leader's entries as it stored them; returns the new log end offset.

        ``entries``: whole log entries from this log's end offset on (a fetch
        answer's payload). ``epoch_starts``: (epoch, start offset) pairs, oldest
        first, of the leader epochs that start inside them (an epoch this log
        already has, starting before them, is ignored). Each batch's producer
        id and sequence is remembered, seen at ``now_ms`` (None reads the
        clock). Not fsynced (group commit). Everything is checked before
        anything is written: CorruptDataError, naming the partition, the
        directory and the offset, appends nothing.
        """
        plog = self.log
        checked = plog.check_entries(entries)
        summaries = self._replicated_summaries(checked)
        epochs = self._epochs_with(epoch_starts, checked)
        if epochs is not None:
            self._save_epochs(epochs)
        active_base_offset = plog.active_base_offset
        try:
            with self._outage.watch("this replica fetches its leader's entries again, out of "
                                    "the in-sync set,"):
                plog.append_checked(checked)
        finally:   # what was written (all of it, but for a storage error) is remembered
            self._record_replicated(checked, summaries, active_base_offset,
                                    wall_clock_ms() if now_ms is None else now_ms)
        return plog.end_offset

    def _replicated_summaries(self, checked: CheckedEntries) -> list[BatchSummary]:
        """The summary of each replicated batch (one C call each, no per-record work)."""
        summaries = []
        position = 0
        for header in checked.headers:
            batch = checked.data[position + LOG_ENTRY_HEADER_BYTES:position + header.entry_bytes]
            try:
                summary = batch_formats.summarize(header.attributes, batch)
            except (InvalidBatchError, RecordTooLargeError, CorruptDataError) as exc:
                self._raise_bad_replicated(header.base_offset, f"its batch is invalid: {exc}")
            if summary.record_count != header.record_count:
                self._raise_bad_replicated(header.base_offset, (
                    f"its header says {header.record_count} records, its batch "
                    f"{summary.record_count}"))
            summaries.append(summary)
            position += header.entry_bytes
        return summaries

    def _epochs_with(self, epoch_starts, checked: CheckedEntries) -> LeaderEpochs | None:
        """The history with the epochs that start inside ``checked``; None if unchanged.

        A new epoch must start at one of the entries' base offsets, after the
        latest one here; an older epoch than the latest may only be one that
        starts before the entries (the history both logs share)."""
        epochs = None
        if self.leader_epochs.entries and (
                self.leader_epochs.entries[-1].start_offset >= checked.base_offset):
            # An epoch this replica assigned as leader without writing in it (its
            # append failed) is no part of the history.
            epochs = LeaderEpochs(self.leader_epochs.entries)
            epochs.truncate_from_end(checked.base_offset)
        base_offsets = None
        for epoch, start_offset in epoch_starts:
            history = epochs if epochs is not None else self.leader_epochs
            latest_epoch = history.latest_epoch()
            if epoch <= latest_epoch and (epoch == latest_epoch
                                          or start_offset < checked.base_offset):
                continue
            if base_offsets is None:
                base_offsets = {header.base_offset for header in checked.headers}
            if epoch < latest_epoch or start_offset not in base_offsets:
                self._raise_bad_replicated(start_offset, (
                    f"leader epoch {epoch} would start there, but that is not the base offset "
                    f"of an entry in [{checked.base_offset}, {checked.end_offset}) after this "
                    f"replica's latest epoch {latest_epoch}"))
            epochs = LeaderEpochs(history.entries) if epochs is None else epochs
            epochs.assign(epoch, start_offset)
        return epochs

    def _raise_bad_replicated(self, offset: int, what: str) -> None:
        raise CorruptDataError(f"{self.name}: replicated entries refused at offset {offset} in "
                               f"{self.log.directory} (none appended): {what}")

    def _record_replicated(self, checked: CheckedEntries, summaries: list[BatchSummary],
                           active_base_offset: int, now_ms: int) -> None:
        """Remember the producers of the replicated batches the log holds; if the log
        rolled, save the state before the new active segment's first batch."""
        plog = self.log
        rolled = plog.active_base_offset != active_base_offset
        rolled_at = plog.active_base_offset if rolled else None
        end_offset = plog.end_offset
        for header, summary in zip(checked.headers, summaries):
            if header.end_offset > end_offset:
                break   # not written: the disk refused
            if header.base_offset == rolled_at:
                self._save_producers()
            self.producers.record(summary.producer_id, summary.base_sequence,
                                  header.record_count, header.base_offset, now_ms,
                                  producer_epoch=summary.producer_epoch)

    def truncate_to(self, end_offset: int) -> TruncationResult:
        """Cut the log back to ``end_offset`` (where the leader says this replica's
        history ends), with the epochs that start there or later, the high
        watermark and the producers' state; returns what the log cut.

        The producers keep their remembered batches below ``end_offset``
        (``ProducerStates.truncated``: no read of the log, so a truncation never
        stalls the loop on a large active segment); one whose remembered
        batches were all cut is forgotten. That loses no duplicate check: an
        idempotent producer has one batch per partition in flight
        (client/sender.py), fewer than the IDEMPOTENT_BATCHES_KEPT remembered,
        so if those were all cut, every batch before them was acknowledged and
        is never retried. Below the log's start the log restarts empty at
        ``end_offset`` (``restart_at``). Raises StorageError if the disk
        refuses (reopening recovers a prefix).
        """
        plog = self.log
        if end_offset < plog.start_offset:
            return self.restart_at(end_offset)
        result = plog.truncate_to(end_offset)
        self._after_cut(result)
        return result

    def _after_cut(self, result: TruncationResult) -> None:
        """The log was cut as ``result`` says: fit the epochs, the high watermark and
        the producers' state to it."""
        self._fit_epochs_to_log()   # also an epoch assigned at the end that wrote nothing
        if result.end_offset == result.old_end_offset:
            return
        self.high_watermark = min(self.high_watermark, self.log.end_offset)
        self.producers = self.producers.truncated(result.end_offset)
        self._discard_producer_snapshot_after(self.log.active_base_offset)

    def cut_unflushed(self) -> TruncationResult:
        """Cut what was appended since the last good fsync (PartitionLog.cut_unflushed),
        with the producers' state, after an fsync failed: the disk may not hold it
        (ShardServer._cut_after_failed_fsync). Returns what was cut; StorageError if
        the disk refuses the cut or its fsync (then the log refuses every fsync
        until a later call succeeds: a retry cuts nothing more, and fsyncs)."""
        result = self.log.cut_unflushed()
        self._after_cut(result)
        return result

    def restart_at(self, start_offset: int) -> TruncationResult:
        """Delete the whole log and start it again, empty, at ``start_offset``, with no
        epochs and no producers (Kafka's truncateFullyAndStartAt): for a follower
        whose log ends before its leader's log starts, or that diverged from its
        leader before its own start. Returns what the log cut."""
        plog = self.log
        result = plog.restart_at(start_offset)
        # All of them, as Kafka's truncateFullyAndStartAt clears its epoch cache: kept for
        # remote offsets (_fit_epochs_to_log keeps those), this replica's own old epoch
        # covered offsets its new leader wrote in a later one, and each fetch diverged.
        if self.leader_epochs.entries:
            self._save_epochs(LeaderEpochs([]))
        self.high_watermark = start_offset
        self.producers = ProducerStates()
        self._discard_producer_snapshot_after(start_offset - 1)
        return result

    def _discard_producer_snapshot_after(self, base_offset: int) -> None:
        try:
            discard_snapshot_after(self.log.directory, base_offset)
        except OSError as exc:   # a roll saves the state again before it could be used
            log.error("cannot remove the stale producer state of %s in %s: %s", self.name,
                      self.log.directory, exc)

    def enforce_retention(self) -> RetentionResult:
        """The segments wholly below the floor (``delete_segments_below_floor``), retention
        of the log (PartitionLog.enforce_retention; all of it may go if the
        partition is sealed), then of the leader epochs: the one that holds the
        new start offset now starts there and older ones go, as Kafka's
        truncateFromStart. A checkpoint the disk refuses is logged, not raised:
        the older epochs it keeps describe nothing the log still holds.

        A log of one segment that is not sealed has nothing to delete (retention
        never deletes the active segment), and returns at once: a shard checks every
        partition every RETENTION_CHECK_INTERVAL_S, and the whole check took 1.7 us a
        partition (17 ms of each pass at 10,000). The one exception is a floor at
        the log's end over a segment that holds entries: that segment goes
        (``delete_segments_below_floor``; a follower's floor, adopted from its
        leader's, reaches the end of its one segment so, and its next pass deletes
        it). A floor inside the segment deletes nothing until it rolls, so it keeps
        the fast path; with one segment, the log's bytes are the active segment's."""
        if (self.log.segment_count == 1 and not self.sealed
                and (self.floor < self.log.end_offset or self.log.size_bytes == 0)):
            return RetentionResult(0, 0, self.log.start_offset)
        below_floor = self.delete_segments_below_floor()
        result = self._fit_epochs_after(self.log.enforce_retention(sealed=self.sealed))
        return RetentionResult(below_floor.segments + result.segments,
                               below_floor.bytes + result.bytes, result.start_offset)

    def enforce_local_retention(self, uploaded, now_ms: int | None = None) -> RetentionResult:
        """Local retention of a tiered log, in place of ``enforce_retention``: delete the
        prefix of segments that object storage holds (``uploaded(segment)``:
        tier_policy.held_remotely) and that are past local.retention.ms/.bytes
        (tier_policy.local_segments_past_retention), then fit the leader epochs as
        ``enforce_retention`` does. A segment never uploaded is never deleted here,
        even past total retention: that is applied to the remote log (the shard's
        uploader, shards/tier/remote_log_manager.py). ``uploaded`` None: nothing is
        known to be uploaded, nothing is deleted."""
        config = self.log.config
        doomed = local_segments_past_retention(
            self.log.segments, now_ms=wall_clock_ms() if now_ms is None else now_ms,
            local_retention_ms=config.local_retention_ms_resolved,
            local_retention_bytes=config.local_retention_bytes_resolved,
            uploaded=uploaded)
        if not doomed:
            return RetentionResult(0, 0, self.log.start_offset)
        return self._fit_epochs_after(self.log.delete_segments_before(doomed[-1].end_offset))

    def _fit_epochs_after(self, result: RetentionResult) -> RetentionResult:
        """After retention deleted segments: fit the leader epochs to the log (a
        checkpoint the disk refuses is logged; see ``enforce_retention``) and drop
        the producer snapshots of the deleted segments."""
        if result.segments:
            try:
                self._fit_epochs_to_log()
            except StorageError as exc:
                log.error("%s", exc)
            try:
                discard_snapshots_before(self.log.directory, self.log.start_offset)
            except OSError as exc:   # stale files only: nothing reads below the start
                log.error("cannot remove old producer snapshots of %s in %s: %s", self.name,
                          self.log.directory, exc)
        return result

    def _check_batch_bytes(self, batch, record_count: int) -> None:
        """RecordTooLargeError for a batch over the topic's max.message.bytes, with the
        advice that fits it: a batch of one record cannot be made smaller by batching."""
        batch_bytes, limit = memoryview(batch).nbytes, self.log.config.batch_bytes_max
        if batch_bytes <= limit:
            return
        if record_count == 1:
            advice = (f"its one record is too large alone: make it smaller, or raise "
                      f"{topics.MAX_MESSAGE_BYTES}")
        else:
            advice = (f"{record_count} records: Plinth's producer splits such a batch and "
                      f"sends it again (as Kafka's does); or send smaller batches (the "
                      f"producer's batch_bytes_max, Kafka's batch.size), or raise "
                      f"{topics.MAX_MESSAGE_BYTES}")
        raise RecordTooLargeError(f"{self.name}: a batch of {batch_bytes} bytes is over the "
                                  f"topic's {topics.MAX_MESSAGE_BYTES}={limit}; {advice}")

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

    def roll_sealed(self) -> None:
        """A sealed tiered partition's log rolls its last segment (and saves the
        producers' state, as every roll does), so that the uploader takes it too:
        nothing is appended to it any more (PartitionLog.roll_active)."""
        if not self.sealed or not self.log.config.remote_storage_enable:
            raise AssertionError(f"{self.name}: only a sealed tiered log rolls for its upload")
        if self.log.roll_active():
            self._save_producers()

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


def _recovered_epochs(topic: str, partition: int, directory: Path
                      ) -> tuple[LeaderEpochs, CorruptDataError | None]:
    """recover_leader_epochs, with a disk that refuses said as StorageError."""
    try:
        return recover_leader_epochs(directory)
    except OSError as exc:
        raise StorageError(f"cannot read or set aside the leader-epoch checkpoint of "
                           f"{topic}-{partition} in {directory}: {exc}") from None
