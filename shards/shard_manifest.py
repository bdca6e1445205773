"""A shard's manifest: what it serves, so that a restarted shard actor serves it again.

Kept by the shard actor (actor.py) in ``<shard data dir>/manifest.json`` and
replaced atomically (write, fsync, rename, fsync the directory) after every
change the controller makes, before the change is acknowledged (as compact JSON,
keys sorted, only the changed partitions encoded again: plinth/json_fragments.py;
indented here):

    {"version": 1,
     "partitions": {"orders/0": {"config": {"segment.bytes": "268435456", ...},
                                 "initial_offset": 0,        where its log continues
                                 "sealed": false,            true: reads only (its writes moved)
                                 "producers": null,          the previous owner's snapshot
                                 "leadership": {...},        replicas and leader (shard_calls.py);
                                                             absent: one copy, here
                                 "topic_id": "9f2c...e315"}, the topic's id (32 hex digits);
                                                             absent: written before topics had ids;
                                                             one the controller and the directory's
                                                             partition.metadata contradict is the
                                                             damaged one, written again
                                                             (shard_server.py, _settle_topic_id)
                    ...},
     "partition_counts": {"orders": 3, ...}}                 every topic's, for group coordinators

A key is "<topic>/<partition>" (topic names cannot hold "/"). A file written
before the version field existed has none and is read as version 1. The version
stays 1 while this format does: the data directory's format version is
metadata.json's (control/metadata.py, "Format versions"). A later version was
written by a newer Plinth: refused as such (InvalidConfigError naming the file,
both versions and this build), not as damage; one that is not an int >= 1 is
damage (CorruptDataError).

Every change goes through the methods below, which note the partitions they
touch, and a save encodes only those again (``JsonFragments.encode_tracked``):
at 5,000 partitions, building and comparing every entry was 7.5 ms of each
9 ms save, and a create saves once. The manifest holds its own copies of the
specs it is given, so that no caller can change an entry without it knowing.

Used on the shard actor's thread only.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from plinth.durable_files import write_file_atomically
from plinth.json_fragments import JsonFragments
from plinth.errors import CorruptDataError, InvalidConfigError, StorageError
from plinth.shards.shard_calls import Leadership, PartitionId, PartitionSpec
from plinth.version import VERSION

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class ShardManifest:
    partitions: dict[PartitionId, PartitionSpec] = field(default_factory=dict)
    partition_counts: dict[str, int] = field(default_factory=dict)
    # The partitions' encoded JSON, kept between saves (only changed ones are encoded).
    _fragments: JsonFragments = field(
        default_factory=lambda: JsonFragments("partitions", "partition_counts"),
        init=False, repr=False, compare=False)
    # The partitions and the topics' counts added, changed or removed since the last
    # save: what the next one encodes again (the first save of an instance compares
    # every entry, since no text is kept yet).
    _changed_partitions: set[PartitionId] = field(default_factory=set, init=False,
                                                  repr=False, compare=False)
    _changed_counts: set[str] = field(default_factory=set, init=False, repr=False,
                                      compare=False)

    # --- Changes (each followed by save) ------------------------------------------

    def serve(self, specs: list[PartitionSpec]) -> None:
        for spec in specs:
            self._set(replace(spec, config=dict(spec.config),
                              producers=copy.deepcopy(spec.producers)))

    def seal(self, partitions: list[PartitionId]) -> None:
        """Read-only from now on; a replicated one no longer leads or follows (its
        record is dropped: a restart must not follow it again)."""
        for pid in partitions:
            self._set(replace(self._spec(pid), sealed=True, leadership=None))

    def set_config(self, partitions: list[PartitionId], config: dict[str, str]) -> None:
        for pid in partitions:
            self._set(replace(self._spec(pid), config=dict(config)))

    def set_leadership(self, changes: list[tuple[PartitionId, Leadership]]) -> None:
        for pid, leadership in changes:
            self._set(replace(self._spec(pid), leadership=leadership))

    def forget(self, partitions: list[PartitionId]) -> None:
        for pid in partitions:
            self.partitions.pop(pid, None)
            self._changed_partitions.add(pid)

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """Every topic's count (the controller's whole view)."""
        self.change_partition_counts(counts, list(self.partition_counts.keys() - counts))

    def change_partition_counts(self, changed: dict[str, int], deleted: list[str]) -> None:
        """Some topics' counts; the topics ``deleted`` have none any more."""
        for topic, count in changed.items():
            self.partition_counts[topic] = count
        for topic in deleted:
            self.partition_counts.pop(topic, None)
        self._changed_counts.update(changed, deleted)

    def _set(self, spec: PartitionSpec) -> None:
        self.partitions[spec.id] = spec
        self._changed_partitions.add(spec.id)

    def _spec(self, pid: PartitionId) -> PartitionSpec:
        spec = self.partitions.get(pid)
        if spec is None:
            raise AssertionError(f"{pid.topic}-{pid.partition} is not in the manifest: the "
                                 f"controller changed a partition it never opened here")
        return spec

    # --- The file ------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> "ShardManifest":
        """The manifest at ``path``; an empty one if there is no file (a new shard).
        Raises CorruptDataError naming the path if the file cannot be read as one, and
        InvalidConfigError if a newer Plinth wrote it (a later version)."""
        if not path.exists():
            return cls()
        try:
            value = json.loads(path.read_text())
            _refuse_a_later_version(path, value.get("version", MANIFEST_VERSION))
            return cls.from_json(value)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CorruptDataError(f"{path}: not a shard manifest: {exc}") from None

    def save(self, path: Path) -> None:
        """Write the file; only the partitions changed since the last save are encoded
        again, and only the topics' counts changed since."""
        if not self._fragments.whole_encoded:
            text = self._fragments.encode(self.to_json())
        else:
            pids, topics = self._changed_partitions, self._changed_counts
            value = {"version": MANIFEST_VERSION,
                     "partitions": {_key(pid): _spec_to_json(self.partitions[pid])
                                    for pid in pids if pid in self.partitions},
                     "partition_counts": {topic: self.partition_counts[topic]
                                          for topic in topics if topic in self.partition_counts}}
            text = self._fragments.encode_tracked(
                value, {"partitions": [_key(pid) for pid in pids], "partition_counts": topics},
                self.to_json)
        # The fragments hold every change now, whether the write succeeds or not.
        self._changed_partitions, self._changed_counts = set(), set()
        try:
            write_file_atomically(path, text, sync_dir=True)
        except OSError as exc:   # a full disk, say: the user's to fix, named
            raise StorageError(f"cannot save the shard manifest {path}: "
                               f"{exc.strerror or exc}") from None

    def to_json(self) -> dict:
        return {"version": MANIFEST_VERSION,
                "partitions": {_key(s.id): _spec_to_json(s) for s in self.partitions.values()},
                "partition_counts": dict(self.partition_counts)}

    @classmethod
    def from_json(cls, value: dict) -> "ShardManifest":
        """Raises ValueError (or TypeError, KeyError) on anything that is not a manifest."""
        version = value.get("version", MANIFEST_VERSION)
        if type(version) is not int or version != MANIFEST_VERSION:   # (True == 1 too)
            raise ValueError(f"version {version!r} is not {MANIFEST_VERSION}")
        manifest = cls(partition_counts=_partition_counts(value["partition_counts"]))
        for key, entry in value["partitions"].items():
            topic, partition = key.rsplit("/", 1)
            spec = PartitionSpec(topic, int(partition), dict(entry["config"]),
                                 entry["initial_offset"], entry["sealed"], entry.get("producers"),
                                 _leadership(entry.get("leadership")),
                                 entry.get("topic_id", ""))
            spec.check()
            manifest.partitions[spec.id] = spec
        return manifest


def _refuse_a_later_version(path: Path, version) -> None:
    """InvalidConfigError if ``version`` is later than this build's: a newer Plinth
    wrote the file, which alone knows its fields (any other version but this
    build's is damage, which ``from_json`` refuses)."""
    if type(version) is int and version > MANIFEST_VERSION:
        raise InvalidConfigError(
            f"{path}: shard manifest version {version} was written by a newer Plinth; "
            f"this one ({VERSION}) reads versions up to {MANIFEST_VERSION}: run the "
            f"Plinth that wrote it (the data directory is unchanged)")


def _key(pid: PartitionId) -> str:
    return f"{pid.topic}/{pid.partition}"


def _spec_to_json(spec: PartitionSpec) -> dict:
    """A partition's entry; "leadership" only for a replicated one, so a factor-1
    partition's entry is the one earlier versions wrote."""
    value = {"config": spec.config, "initial_offset": spec.initial_offset,
             "sealed": spec.sealed, "producers": spec.producers}
    if spec.leadership is not None:
        value["leadership"] = spec.leadership.to_json()
    if spec.topic_id:
        value["topic_id"] = spec.topic_id
    return value


def _leadership(value: dict | None) -> Leadership | None:
    return None if value is None else Leadership.from_json(value)


def _partition_counts(value: dict) -> dict[str, int]:
    for topic, count in value.items():
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"partition count of {topic!r} is {count!r}, not an int >= 1")
    return dict(value)
