"""Committed offsets and settings of consumer groups, kept as records in an internal log.

Runs in the shard actor that coordinates the groups, on its loop thread only.
Each shard keeps one internal partition log, ``<shard dir>/__consumer_offsets``,
in the ordinary log format (log_entry.capnp around record_batch.capnp). Each
commit is one batch, fsynced before the commit is acknowledged. Records:

    key                                       value
    b"o\\0" group b"\\0" topic b"\\0" partition    committed offset, Int64 LE
    b"s\\0" group b"\\0" setting name              the setting's value (UTF-8)

A later record for the same key replaces an earlier one. ``OffsetStore.open``
replays the log into memory and then compacts it (compaction on recovery):
when the log holds more records than live keys, it writes the live records
into a fresh log, fsyncs it and swaps it in with renames, and says how many
records it dropped.
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from plinth import limits
from plinth.format.record_batch import BatchBuilder, decode_records
from plinth.format.log_entry import iter_entries
from plinth.shards.partition_log import LogConfig, PartitionLog

log = logging.getLogger(__name__)

DIR_NAME = "__consumer_offsets"
_OFFSET = struct.Struct("<q")
_OFFSET_KIND = b"o"
_SETTING_KIND = b"s"
_SEP = b"\0"
# The offsets log is compacted, never expired: retention would drop live offsets.
_LOG_CONFIG = LogConfig(retention_ms=-1, retention_bytes=-1)

TopicPartition = tuple[str, int]


@dataclass
class CompactionReport:
    records_read: int
    records_kept: int


class OffsetStore:
    def __init__(self, directory: Path, plog: PartitionLog, offsets: dict, settings: dict,
                 report: CompactionReport):
        self.directory = directory
        self._log = plog
        self._offsets: dict[str, dict[TopicPartition, int]] = offsets
        self._settings: dict[str, dict[str, str]] = settings
        self.compaction = report

    @classmethod
    def open(cls, shard_dir: Path) -> "OffsetStore":
        directory = Path(shard_dir) / DIR_NAME
        _finish_interrupted_swap(directory)
        plog = PartitionLog.open(directory, _LOG_CONFIG)
        offsets, settings, records_read = _replay(plog)
        kept = sum(map(len, offsets.values())) + sum(map(len, settings.values()))
        report = CompactionReport(records_read, kept)
        if records_read > kept:
            plog = _compact(directory, plog, offsets, settings)
            log.info("compacted %s: kept %d of %d records", directory, kept, records_read)
        return cls(directory, plog, offsets, settings, report)

    def close(self) -> None:
        self._log.close()

    # --- Reads -------------------------------------------------------------------

    def offsets(self, group: str) -> dict[TopicPartition, int]:
        return dict(self._offsets.get(group, {}))

    def setting(self, group: str, name: str) -> str | None:
        return self._settings.get(group, {}).get(name)

    def settings(self, group: str) -> dict[str, str]:
        return dict(self._settings.get(group, {}))

    def groups(self) -> set[str]:
        return set(self._offsets) | set(self._settings)

    # --- Writes (durable before they return) ---------------------------------------

    def commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        builder = BatchBuilder()
        now_ms = time.time_ns() // 1_000_000
        for (topic, partition), offset in offsets.items():
            builder.append(_offset_key(group, topic, partition), _OFFSET.pack(offset), now_ms)
        self._append(builder)
        self._offsets.setdefault(group, {}).update(offsets)

    def set_setting(self, group: str, name: str, value: str) -> None:
        builder = BatchBuilder()
        builder.append(_setting_key(group, name), value.encode(), time.time_ns() // 1_000_000)
        self._append(builder)
        self._settings.setdefault(group, {})[name] = value

    def _append(self, builder: BatchBuilder) -> None:
        batch = builder.build()
        self._log.append(batch, builder.record_count, time.time_ns() // 1_000_000)
        self._log.flush()


def _finish_interrupted_swap(directory: Path) -> None:
    """After a crash inside _compact's swap: put whichever complete log exists in place."""
    if directory.exists():
        return
    for candidate in (directory.with_name(DIR_NAME + ".compacting"),
                      directory.with_name(DIR_NAME + ".old")):
        if candidate.exists():
            # .compacting is complete here: it is renamed only after it was closed.
            candidate.rename(directory)
            log.warning("finished an interrupted compaction of %s from %s", directory, candidate)
            return


def _offset_key(group: str, topic: str, partition: int) -> bytes:
    return _SEP.join((_OFFSET_KIND, group.encode(), topic.encode(), str(partition).encode()))


def _setting_key(group: str, name: str) -> bytes:
    return _SEP.join((_SETTING_KIND, group.encode(), name.encode()))


def _replay(plog: PartitionLog) -> tuple[dict, dict, int]:
    offsets: dict[str, dict[TopicPartition, int]] = {}
    settings: dict[str, dict[str, str]] = {}
    records_read = 0
    position = plog.start_offset
    while position < plog.end_offset:
        data = plog.read(position, limits.OFFSETS_REPLAY_READ_BYTES, plog.end_offset)
        for header, batch in iter_entries(data):
            for record in decode_records(DIR_NAME, 0, header.base_offset, batch, position):
                records_read += 1
                _apply(record.key, record.value, offsets, settings)
            position = header.base_offset + header.record_count
    return offsets, settings, records_read


def _apply(key: bytes, value: bytes, offsets: dict, settings: dict) -> None:
    parts = key.split(_SEP)
    if parts[0] == _OFFSET_KIND and len(parts) == 4:
        group, topic, partition = parts[1].decode(), parts[2].decode(), int(parts[3])
        offsets.setdefault(group, {})[(topic, partition)] = _OFFSET.unpack(value)[0]
    elif parts[0] == _SETTING_KIND and len(parts) == 3:
        settings.setdefault(parts[1].decode(), {})[parts[2].decode()] = value.decode()
    else:
        log.warning("ignored an unknown record in %s: key %r", DIR_NAME, key[:64])


def _compact(directory: Path, plog: PartitionLog, offsets: dict, settings: dict) -> PartitionLog:
    fresh_dir = directory.with_name(DIR_NAME + ".compacting")
    shutil.rmtree(fresh_dir, ignore_errors=True)
    fresh = PartitionLog.open(fresh_dir, _LOG_CONFIG)
    records = [(_offset_key(g, t, p), _OFFSET.pack(o))
               for g, tps in offsets.items() for (t, p), o in tps.items()]
    records += [(_setting_key(g, n), v.encode()) for g, names in settings.items() for n, v in names.items()]
    now_ms = time.time_ns() // 1_000_000
    batch_records_max = limits.OFFSETS_COMPACT_BATCH_RECORDS_MAX
    for start in range(0, len(records), batch_records_max):
        builder = BatchBuilder()
        for key, value in records[start:start + batch_records_max]:
            builder.append(key, value, now_ms)
        fresh.append(builder.build(), builder.record_count, now_ms)
    fresh.close()
    plog.close()
    # Swap with renames: a crash leaves either the old log or the new one in place.
    old_dir = directory.with_name(DIR_NAME + ".old")
    shutil.rmtree(old_dir, ignore_errors=True)
    directory.rename(old_dir)
    fresh_dir.rename(directory)
    shutil.rmtree(old_dir)
    return PartitionLog.open(directory, _LOG_CONFIG)

