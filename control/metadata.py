"""The broker's metadata: its shards, its topics and where each partition lives.

Owned by the controller (controller.py), which changes it on its actor thread
only, and saves it to ``<data_dir>/metadata.json`` after every change, before
the change is acknowledged or seen by a router (as compact JSON, keys sorted,
only the changed topics encoded again: plinth/json_fragments.py; indented here):

    {"version": 2,                              the data directory's format version
     "shards": ["shard-0", "shard-1"],          take writes and coordinate groups
     "draining": ["shard-2"],                   removed, still serving older ranges
     "shard_nodes": {"shard-0": "plinth-node:a", ...},      what pins each to its node
     "topics": {"orders": {"partitions": 3, "topic_id": "0c5a...91fe",
                           "config": {"segment.bytes": "268435456", ...},
                           "placement": ["shard-1", "shard-0", "shard-1"],
                           "ranges": {"1": [[0, "shard-2"], [5210, "shard-0"]]}},
                "events": {"partitions": 1, "config": {...}, "placement": ["shard-2"],
                           "replication_factor": 3,
                           "ranges": {"0": [[0, "shard-1", ["shard-1", "shard-0", "shard-2"]],
                                            [812, "shard-2", ["shard-2", "shard-0", "shard-1"]]]},
                           "leadership": {"0": {"replicas": ["shard-2", "shard-0", "shard-1"],
                                                "leader": "shard-2", "leader_epoch": 0,
                                                "in_sync": ["shard-2", "shard-0", "shard-1"],
                                                "partition_epoch": 0, "controller_epoch": 4,
                                                "eligible": []}}}},
     "groups_moving_from": ["shard-0", "shard-1", "shard-2"],   only during a change
     "partitions_moving_from": ["shard-0", "shard-1", "shard-2"],   only during a change
     "controller_epoch": 4,
     "tier_store": "s3://bucket/prefix",        only while a topic is tiered
     "deletes_owed": {"shard-1": [["old", "7d1e...04aa", [0, 2]]]}}   only while owed

``placement`` names the shard that takes each partition's writes (for a
replicated topic: its preferred leader, the first of its replicas). ``ranges``
lists, for a partition whose writes moved, each (start offset, shard) of its
history, oldest first; the last is the current owner. A range of a replicated
partition has a third element, its replicas: of a sealed range, those that held
it whole when it was sealed (the leader that sealed it first, which is its
shard), any of which serves its reads; of the last, the replica set its writes
moved to (the leadership record below is the current word on it). A file
written before replicated partitions could move has two-element ranges only.
A range whose shard is "" (``[0, ""]``) is in object storage only; the
partition's owner serves it: its shard was removed and retired once the range
was uploaded (issue 14, control/rebalancer.py). Such a range is never the last,
and no shard gets a spec for it. ``groups_moving_from``
is the shard list before a change of shards, kept while consumer groups move
to the shards their names now hash to (a restart finishes the move).
``partitions_moving_from`` is the same list, kept while partitions move: a
replicated one moves only during a change (control/rebalancer.py), and a
restart finishes it.

Replication (issue 12). ``replication_factor`` (absent: 1) is the copies of
each partition; a topic with more than one has ``leadership``: for each
partition, the Leadership record of its current range (shards/shard_calls.py):
its replicas (distinct shards, the preferred leader first, which is
``placement``), the leader taking writes ("" while none can: offline), the
leader epoch, the in-sync replicas, the partition epoch (the version every
compare-and-set checks), the controller epoch that wrote it and KIP-966's
eligible replicas. ``controller_epoch`` (absent: 0) grows by one at every
start of the controller, before it sends anything to a shard; shards ignore
records from an older one. A factor-1 topic is written exactly as before
replication (no ``replication_factor``, no ``leadership``).

Topic ids (issue 14). ``topic_id`` is the topic's id, 32 hex digits
(topics.new_topic_id), given when the topic is created and never changed; a
topic deleted and created again under its name gets a new one. Shards get it
with each partition (PartitionSpec.topic_id) and name the topic's remote
segments by it. A file written before topics had ids has none: ``load`` gives
each such topic one (``assign_missing_topic_ids``), and the controller saves
it at its start, before any shard hears of it.

Deletes owed (``deletes_owed``, absent: none): for each shard, the partitions
it was told to delete and has not yet said it deleted, as [topic, topic id,
partitions]: of a deleted topic, or of a create or growth that was undone. A
shard that dies before it runs the delete would open them again at every
restart, routed to no one; the controller sends the delete again when the shard
starts (guarded by the topic id, so a new topic of the name is never touched),
and forgets it once the shard answers. At most OWED_DELETES_PER_SHARD_MAX per
shard (the oldest go first, logged).

Tiered storage (issue 14). ``tier_store`` (absent: none) is the object store the
tiered topics' remote segments are in: the server's --tier-url as
remote_store.store_identity gives it (scheme, bucket and prefix; never a
credential). The controller records it while any topic has
remote.storage.enable=true and refuses to start with another store (or none).

Format versions. ``version`` is the data directory's format version
(METADATA_VERSION), not only this file's: it grows when anything a broker
writes in the data dir changes so that an older build would misread it (the
shards' manifests keep their own version, MANIFEST_VERSION, which stays 1).
Every Plinth refuses a file of a version it does not read, at the controller's
start, before any shard opens a partition: builds before 0.2.0 read version 1
only, so they refuse a data dir this one wrote ("metadata version 2 is not 1",
or since da9b23a "... was written by a newer Plinth"), instead of misreading
what newer builds write beside it (commit metadata in ``__consumer_offsets``,
null header values, ``offset-gaps`` files: README, "Upgrading and rolling
back").

- 1: written by every Plinth before 0.2.0. This build reads it with every
  field as before (every key that was once optional is read as absent =
  empty), and the controller's start saves it as 2 before any shard starts
  (``Controller._upgrade_format``), with one WARNING naming the file.
- 2: since 0.2.0; the same fields as 1.

The file is replaced atomically (write, fsync,
rename, fsync the directory): a crash leaves the old or the new metadata.
Load checks every field and the relations between them (CorruptDataError
naming the path and the first problem); save checks them too, and refuses
(AssertionError) to write metadata the controller broke. A save checks the
topics encoded again since the last one (new or changed), unless the shards or
the controller epoch changed, or the last save was refused: then every topic.
A save after a change of named topics (a create, a delete, an alter, a growth)
is told their names and encodes only those; any other compares every topic with
the text kept for it (plinth/json_fragments.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from plinth import limits, topics
from plinth.control.routing_table import Range, ShardRange, TieredRange, shard_range
from plinth.durable_files import write_file_atomically
from plinth.json_fragments import JsonFragments
from plinth.errors import CorruptDataError, InvalidConfigError, StorageError
from plinth.shards.shard_handle import Leadership, PartitionSpec
from plinth.version import VERSION

class OwedDelete(NamedTuple):
    """Partitions of one topic (by its id) that a shard has not yet said it deleted."""

    topic: str
    topic_id: str
    partitions: tuple[int, ...]


METADATA_FILE = "metadata.json"
# The data directory's format version, which this build writes (module docstring).
METADATA_VERSION = 2
# The versions this build reads: every one since the first.
METADATA_VERSIONS_READ = range(1, METADATA_VERSION + 1)
# The first Plinth that wrote METADATA_VERSION; every build before it refuses the file.
METADATA_VERSION_SINCE = "0.2.0"


def specs_by_shard(topics_by_name: Mapping[str, TopicMetadata], first_partition: int = 0
                   ) -> dict[str, list[PartitionSpec]]:
    """shard id -> the partitions it must serve of ``topics_by_name`` (TopicMetadata.
    specs_of), of each topic's partitions from ``first_partition`` on: also of
    topics not in a BrokerMetadata yet (a create or a growth being opened)."""
    out: dict[str, list[PartitionSpec]] = {}
    for name, topic in topics_by_name.items():
        for partition in range(first_partition, topic.partitions):
            for shard_id, spec in topic.specs_of(name, partition).items():
                out.setdefault(shard_id, []).append(spec)
    return out


@dataclass
class TopicMetadata:
    partitions: int
    config: dict[str, str]
    placement: list[str]                                     # owner of each partition's writes
    # partitions that moved -> their ranges, oldest first
    ranges: dict[int, list[Range]] = field(default_factory=dict)
    replication_factor: int = 1
    # partition -> its current range's replicas and leader (replication factor > 1 only)
    leadership: dict[int, Leadership] = field(default_factory=dict)
    # given at creation (module docstring); "" only between loading a file written
    # before topics had ids and assign_missing_topic_ids
    topic_id: str = field(default_factory=topics.new_topic_id)

    @property
    def replicated(self) -> bool:
        return self.replication_factor > 1

    def leader_of(self, partition: int) -> str:
        """The shard taking the partition's writes now; "" while it has none (offline)."""
        if self.replicated:
            return self.leadership[partition].leader
        return self.placement[partition]

    def replicas_of(self, partition: int) -> tuple[str, ...]:
        """The shards holding the partition's current range, preferred leader first."""
        if self.replicated:
            return self.leadership[partition].replicas
        return (self.placement[partition],)

    def ranges_of(self, partition: int) -> list[Range]:
        """The partition's history, oldest first; the last range takes its writes."""
        return list(self.ranges.get(partition) or [ShardRange(0, self.placement[partition])])

    def move_writes(self, partition: int, start_offset: int, shard_id: str) -> None:
        """From ``start_offset`` on, the partition's writes go to ``shard_id``."""
        self.ranges[partition] = self.ranges_of(partition) + [ShardRange(start_offset, shard_id)]
        self.placement[partition] = shard_id

    def move_replicas(self, partition: int, start_offset: int, sealed_on: tuple[str, ...],
                      leadership: Leadership) -> None:
        """From ``start_offset`` on, a replicated partition's writes go to the replica set
        of ``leadership``; its range until then is served by ``sealed_on`` (the replicas
        that hold it whole, the leader that sealed it first)."""
        if not self.replicated or not sealed_on:
            raise AssertionError(f"moving the replicas of partition {partition}: factor "
                                 f"{self.replication_factor}, sealed on {list(sealed_on)}")
        ranges = self.ranges_of(partition)
        ranges[-1] = shard_range(ranges[-1].start_offset, sealed_on[0], tuple(sealed_on))
        new = leadership.replicas
        self.ranges[partition] = ranges + [shard_range(start_offset, new[0], new)]
        self.placement[partition] = new[0]
        self.leadership[partition] = leadership

    def forget_ranges_on(self, partition: int, shard_id: str) -> None:
        """Forget the partition's older ranges on ``shard_id`` (retention emptied them):
        a range of one copy goes, a replicated one loses the replica (and goes with
        its last)."""
        if shard_id in self.replicas_of(partition):
            raise AssertionError(f"cannot forget the ranges of partition {partition} on "
                                 f"{shard_id}: it owns the partition's writes")
        kept = []
        for r in self.ranges_of(partition):
            holders = tuple(s for s in r.holders if s != shard_id)
            if holders or isinstance(r, TieredRange):   # the owner serves a tiered one
                kept.append(r if holders == r.holders else
                            shard_range(r.start_offset, holders[0], r.replicas and holders))
        self.ranges[partition] = kept

    def forget_sealed_copy_on(self, partition: int, shard_id: str) -> None:
        """``shard_id`` no longer holds the partition's older (sealed) ranges that
        another shard holds too (its disk was lost: ``plinth shards move``); a range
        it alone holds stays, served empty, as it is all the partition has of it.
        The current range is the leadership record's, and stays."""
        ranges = self.ranges_of(partition)
        kept = [shard_range(r.start_offset, holders[0], r.replicas and holders)
                if shard_id in r.holders and (holders := tuple(s for s in r.holders
                                                               if s != shard_id)) else r
                for r in ranges[:-1]]
        if kept != ranges[:-1]:
            self.ranges[partition] = kept + ranges[-1:]

    def tier_ranges_on(self, partition: int, shard_id: str) -> None:
        """``shard_id`` no longer serves the partition's older ranges: each of its ranges
        is in object storage (control/rebalancer.py checked), where the owner reads it.
        A replicated range loses the replica; one left with no holder becomes a
        TieredRange (its offsets go to the owner), unlike in ``forget_ranges_on``,
        since its records still exist. Adjacent tiered ranges merge."""
        if shard_id in self.replicas_of(partition):
            raise AssertionError(f"cannot tier the ranges of partition {partition} on "
                                 f"{shard_id}: it owns the partition's writes")
        kept: list[Range] = []
        for r in self.ranges_of(partition):
            holders = tuple(s for s in r.holders if s != shard_id)
            if holders == r.holders:
                kept.append(r)
            elif holders:
                kept.append(shard_range(r.start_offset, holders[0], r.replicas and holders))
            elif not (kept and isinstance(kept[-1], TieredRange)):
                kept.append(TieredRange(r.start_offset))
        self.ranges[partition] = kept

    def specs_of(self, name: str, partition: int) -> dict[str, PartitionSpec]:
        """shard id -> what it must serve of the partition. A shard may hold several of
        its ranges (the partition came back to it): its latest counts, sealed unless
        it is the last (the owner's). A tiered range has no holder, so no spec: the
        owner serves it with its own."""
        ranges = self.ranges_of(partition)
        latest = {}
        for i, r in enumerate(ranges):
            sealed = i < len(ranges) - 1
            if sealed or not self.replicated:   # a sealed range: each replica holding it
                for shard_id in r.holders:
                    latest[shard_id] = PartitionSpec(name, partition, dict(self.config),
                                                     r.start_offset, sealed=sealed,
                                                     topic_id=self.topic_id)
        if self.replicated:   # every replica serves the current range, as the record says
            leadership = self.leadership[partition]
            for shard_id in leadership.replicas:
                latest[shard_id] = PartitionSpec(name, partition, dict(self.config),
                                                 ranges[-1].start_offset, leadership=leadership,
                                                 topic_id=self.topic_id)
        return latest

    def problems(self, name: str, known_shards: set[str]) -> list[str]:
        """What is wrong with this topic's entry (empty if nothing)."""
        if not 1 <= self.partitions <= limits.PARTITIONS_PER_TOPIC_MAX:
            return [f"topic {name!r} has {self.partitions} partitions, outside "
                    f"1..{limits.PARTITIONS_PER_TOPIC_MAX}"]
        if len(self.placement) != self.partitions:
            return [f"topic {name!r} has {self.partitions} partitions but "
                    f"{len(self.placement)} placed"]
        found = [f"topic {name!r} partition {p} is placed on unknown shard {s!r}"
                 for p, s in enumerate(self.placement) if s not in known_shards]
        if not topics.is_topic_id(self.topic_id):
            found.append(f"topic {name!r} has topic id {self.topic_id!r}, not "
                         f"{topics.TOPIC_ID_HEX_DIGITS} lowercase hex digits")
        for partition, ranges in self.ranges.items():
            found += _range_problems(name, partition, ranges, self, known_shards)
        return found + _replication_problems(name, self, known_shards)


def _replication_problems(name: str, topic: TopicMetadata, known_shards: set[str]) -> list[str]:
    if not 1 <= topic.replication_factor <= limits.REPLICATION_FACTOR_MAX:
        return [f"topic {name!r} has replication factor {topic.replication_factor}, outside "
                f"1..{limits.REPLICATION_FACTOR_MAX}"]
    if not topic.replicated:
        return [f"topic {name!r} has replication factor 1 but leadership records"] \
            if topic.leadership else []
    if sorted(topic.leadership) != list(range(topic.partitions)):
        return [f"topic {name!r} has leadership records for partitions "
                f"{sorted(topic.leadership)}, not 0..{topic.partitions - 1}"]
    found = []
    for partition, leadership in sorted(topic.leadership.items()):
        where = f"topic {name!r} partition {partition}"
        try:
            leadership.check()
        except ValueError as exc:
            found.append(f"{where}: {exc}")
            continue
        if len(leadership.replicas) != topic.replication_factor:
            found.append(f"{where} has {len(leadership.replicas)} replicas, not its "
                         f"replication factor {topic.replication_factor}")
        if leadership.replicas[0] != topic.placement[partition]:
            found.append(f"{where}: its preferred leader {leadership.replicas[0]!r} is not "
                         f"its placement {topic.placement[partition]!r}")
        found += [f"{where}: a replica on unknown shard {s!r}"
                  for s in leadership.replicas if s not in known_shards]
    return found


def _range_problems(name: str, partition: int, ranges: list[Range],
                    topic: TopicMetadata, known_shards: set[str]) -> list[str]:
    where = f"topic {name!r} partition {partition}"
    if not 0 <= partition < topic.partitions:
        return [f"{where}: ranges of a partition the topic does not have"]
    if not ranges:
        return [f"{where}: an empty list of ranges"]
    starts = [r.start_offset for r in ranges]
    if starts[0] < 0 or starts != sorted(starts):
        return [f"{where}: range start offsets {starts} are not >= 0 and ascending"]
    if isinstance(ranges[-1], TieredRange):
        return [f"{where}: the last range, at {ranges[-1].start_offset}, is tiered (shard "
                f"\"\"), but the last range takes the partition's writes"]
    if ranges[-1].shard_id != topic.placement[partition]:
        return [f"{where}: the last range is on {ranges[-1].shard_id!r} but the partition "
                f"is placed on {topic.placement[partition]!r}"]
    found = [f"{where}: a range on unknown shard {s!r}"   # (a tiered range has no holders)
             for r in ranges for s in r.holders if s not in known_shards]
    found += [f"{where}: the range at {r.start_offset} is on {r.shard_id!r}, not the first "
              f"of its replicas {list(r.replicas)}" for r in ranges
              if r.replicas and (r.replicas[0] != r.shard_id or len(set(r.replicas)) != len(r.replicas))]
    if not topic.replicated and any(r.replicas for r in ranges):
        found.append(f"{where}: replicas in a range of a topic of one copy")
    return found


@dataclass
class BrokerMetadata:
    shards: list[str] = field(default_factory=list)          # take writes, coordinate groups
    draining: list[str] = field(default_factory=list)        # removed, serve older ranges
    shard_nodes: dict[str, str] = field(default_factory=dict)   # shard id -> pin resource
    topics: dict[str, TopicMetadata] = field(default_factory=dict)
    groups_moving_from: list[str] | None = None              # set while groups move
    partitions_moving_from: list[str] | None = None          # set while partitions move
    controller_epoch: int = 0                                # grows at each controller start
    tier_store: str | None = None                            # the tiered topics' object store
    deletes_owed: dict[str, list[OwedDelete]] = field(default_factory=dict)   # by shard id
    # The format version of the file as last loaded or saved (METADATA_VERSION for a
    # new broker's): below METADATA_VERSION until a start upgrades it.
    file_version: int = field(default=METADATA_VERSION, compare=False)
    # The topics' encoded JSON, kept between saves (only changed topics are encoded).
    _fragments: JsonFragments = field(default_factory=lambda: JsonFragments("topics"),
                                      init=False, repr=False, compare=False)
    # What the topics kept in _fragments were checked against at the last save (the
    # known shards, the controller epoch): while it holds, a save checks only the
    # topics encoded again, since an unchanged topic has no new problem.
    _checked_against: tuple | None = field(default=None, init=False, repr=False,
                                           compare=False)

    def specs_by_shard(self, names: Collection[str] | None = None) -> dict[str, list[PartitionSpec]]:
        """shard id -> the partitions it must serve, of all topics or of ``names``: those
        it owns, and the older ranges of partitions whose writes moved away (sealed)."""
        # Of ``names``, looked up one by one: a describe or a create walked every topic.
        return specs_by_shard(self.topics if names is None else
                              {n: self.topics[n] for n in sorted(names) if n in self.topics})

    def partition_counts(self) -> dict[str, int]:
        return {name: topic.partitions for name, topic in self.topics.items()}

    @property
    def topics_encoded_again(self) -> set[str]:
        """The topics the last save encoded again: new or changed (not the deleted)."""
        return self._fragments.encoded_again["topics"]

    def problems(self, names: Collection[str] | None = None) -> list[str]:
        """What is wrong with this metadata (empty if nothing); of the topics, only
        those of ``names`` are checked one by one (None: all)."""
        found = []
        if len(set(self.shards)) != len(self.shards) or len(self.shards) > limits.SHARDS_MAX:
            found.append(f"shards {self.shards} are not {limits.SHARDS_MAX} or fewer distinct ids")
        if set(self.shards) & set(self.draining):
            found.append(f"shards {sorted(set(self.shards) & set(self.draining))} are both "
                         f"taking writes and draining")
        if len(self.topics) > limits.TOPICS_MAX:
            found.append(f"{len(self.topics)} topics, over the limit of {limits.TOPICS_MAX}")
        known = set(self.shards) | set(self.draining)
        # Counted once: ``ids.count`` per id made every save O(topics²), 3 s at 10,000.
        ids = Counter(topic.topic_id for topic in self.topics.values())
        found += [f"topic id {i!r} is given to {ids[i]} topics"
                  for i in sorted(i for i, count in ids.items() if i and count > 1)]
        for name, topic in self.topics.items() if names is None else \
                ((n, self.topics[n]) for n in sorted(names) if n in self.topics):
            found += topic.problems(name, known)
            found += [f"topic {name!r} partition {p}: its record's controller epoch "
                      f"{record.controller_epoch} is newer than the controller's "
                      f"{self.controller_epoch}"
                      for p, record in topic.leadership.items()
                      if record.controller_epoch > self.controller_epoch]
        if self.controller_epoch < 0:
            found.append(f"controller epoch {self.controller_epoch} is negative")
        return found

    # --- Deletes owed (see the module) -----------------------------------------------

    def owe_deletes(self, shard_id: str, owed: OwedDelete) -> list[OwedDelete]:
        """Record that ``shard_id`` is told to delete ``owed``; returns the entries
        dropped to keep OWED_DELETES_PER_SHARD_MAX (the oldest), for the caller to log.
        Saved by the caller."""
        entries = self.deletes_owed.setdefault(shard_id, [])
        entries.append(owed)
        dropped = entries[:-limits.OWED_DELETES_PER_SHARD_MAX]
        del entries[:-limits.OWED_DELETES_PER_SHARD_MAX]
        return dropped

    def settle_deletes(self, shard_id: str, settled: Collection[tuple[str, str]]) -> bool:
        """``shard_id`` deleted the partitions owed of each (topic, topic id) in
        ``settled``; returns whether anything was forgotten (to save)."""
        entries = self.deletes_owed.get(shard_id, [])
        kept = [e for e in entries if (e.topic, e.topic_id) not in settled]
        if len(kept) == len(entries):
            return False
        if kept:
            self.deletes_owed[shard_id] = kept
        else:
            del self.deletes_owed[shard_id]
        return True

    def cancel_deletes(self, topic: str, topic_id: str, partitions: Collection[int]) -> bool:
        """Forget the deletes owed of ``partitions`` of the topic (a growth opens them
        again: a delete still owed from an undone growth must not remove them); returns
        whether anything was forgotten."""
        changed = False
        for shard_id in list(self.deletes_owed):
            entries = []
            for e in self.deletes_owed[shard_id]:
                left = tuple(p for p in e.partitions if p not in partitions) \
                    if (e.topic, e.topic_id) == (topic, topic_id) else e.partitions
                changed |= left != e.partitions
                if left:
                    entries.append(e._replace(partitions=left))
            if entries:
                self.deletes_owed[shard_id] = entries
            else:
                del self.deletes_owed[shard_id]
        return changed

    def assign_missing_topic_ids(self) -> list[str]:
        """Give a new id to each topic that has none (a file written before topics had
        ids); returns their names. Saved by whoever saves the metadata next."""
        named = [name for name, topic in self.topics.items() if not topic.topic_id]
        for name in named:
            self.topics[name].topic_id = topics.new_topic_id()
        return named

    # --- The file ------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> "BrokerMetadata":
        """The metadata at ``path``; empty if there is no file (a new broker)."""
        if not path.exists():
            return cls()
        try:
            value = json.loads(path.read_text())
            _check_version(path, value.get("version"))
            metadata = cls.from_json(value)
            metadata.file_version = value["version"]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CorruptDataError(f"{path}: not broker metadata: {exc}") from None
        metadata.assign_missing_topic_ids()
        problems = metadata.problems()
        if problems:
            raise CorruptDataError(f"{path}: {problems[0]} ({len(problems)} problems)")
        return metadata

    def forget_encoded(self) -> None:
        """The next save encodes every topic from memory again, not the text kept of
        the last (a change undone after a refused save: its text was encoded)."""
        self._fragments.whole_encoded = False

    def save(self, path: Path, topics_changed: Collection[str] | None = None) -> None:
        """Write the file, after checking what changed since the last save (at 6,000
        topics, checking them all took 11 ms of every save). ``topics_changed``: every
        topic added, changed or deleted since the last save, if the caller knows them
        all: only those are encoded again (building and comparing every topic took
        6.6 ms of a 9 ms save at 5,000); None: every topic is compared."""
        if topics_changed is None or not self._fragments.whole_encoded:
            text = self._fragments.encode(self.to_json())
        else:
            text = self._fragments.encode_tracked(self.to_json(topics_changed),
                                                  {"topics": topics_changed}, self.to_json)
        checked_against = (frozenset(self.shards), frozenset(self.draining),
                           self.controller_epoch)
        names = self.topics_encoded_again if checked_against == self._checked_against else None
        problems = self.problems(names)
        if problems:
            self._checked_against = None   # what was encoded is unchecked: all, next time
            raise AssertionError(f"refusing to write {path}: {'; '.join(problems[:3])}")
        self._checked_against = checked_against
        try:
            write_file_atomically(path, text, sync_dir=True)
        except OSError as exc:   # a full disk, say: the user's to fix, named
            raise StorageError(f"cannot save the broker metadata {path}: "
                               f"{exc.strerror or exc}") from None
        self.file_version = METADATA_VERSION

    def to_json(self, names: Collection[str] | None = None) -> dict:
        """The file's document; with ``names``, of those topics only (that exist)."""
        topics_json = {name: _topic_to_json(t) for name, t in self.topics.items()} \
            if names is None else \
            {name: _topic_to_json(self.topics[name]) for name in names if name in self.topics}
        value = {"version": METADATA_VERSION, "shards": list(self.shards),
                 "draining": list(self.draining), "shard_nodes": dict(self.shard_nodes),
                 "topics": topics_json}
        if self.groups_moving_from is not None:
            value["groups_moving_from"] = list(self.groups_moving_from)
        if self.partitions_moving_from is not None:
            value["partitions_moving_from"] = list(self.partitions_moving_from)
        if self.controller_epoch:   # absent: 0, so that an untouched old file round-trips
            value["controller_epoch"] = self.controller_epoch
        if self.tier_store is not None:
            value["tier_store"] = self.tier_store
        if self.deletes_owed:
            value["deletes_owed"] = {shard_id: [[e.topic, e.topic_id, list(e.partitions)]
                                                for e in entries]
                                     for shard_id, entries in self.deletes_owed.items()}
        return value

    @classmethod
    def from_json(cls, value: dict) -> "BrokerMetadata":
        """Raises ValueError (or TypeError, KeyError) on anything that is not metadata."""
        moving = value.get("groups_moving_from")
        partitions_moving = value.get("partitions_moving_from")
        return cls(shards=_names(value["shards"]), draining=_names(value.get("draining", [])),
                   shard_nodes={_name(s): _name(pin)
                                for s, pin in value.get("shard_nodes", {}).items()},
                   topics={_name(name): _topic_from_json(t) for name, t in value["topics"].items()},
                   groups_moving_from=None if moving is None else _names(moving),
                   partitions_moving_from=None if partitions_moving is None
                   else _names(partitions_moving),
                   controller_epoch=_offset(value.get("controller_epoch", 0)),
                   tier_store=_store(value.get("tier_store")),
                   deletes_owed={_name(shard_id): [_owed_delete(e) for e in entries]
                                 for shard_id, entries in value.get("deletes_owed", {}).items()})


def _topic_to_json(topic: TopicMetadata) -> dict:
    value = {"partitions": topic.partitions, "topic_id": topic.topic_id,
             "config": dict(topic.config), "placement": list(topic.placement)}
    if topic.ranges:
        value["ranges"] = {str(p): [_range_to_json(r) for r in ranges]
                           for p, ranges in topic.ranges.items()}
    if topic.replicated:
        value["replication_factor"] = topic.replication_factor
        value["leadership"] = {str(p): record.to_json()
                               for p, record in sorted(topic.leadership.items())}
    return value


def _topic_from_json(value: dict) -> TopicMetadata:
    partitions = value["partitions"]
    if not isinstance(partitions, int) or isinstance(partitions, bool):
        raise ValueError(f"partitions {partitions!r} is not an int")
    config = {_name(k): _name(v) for k, v in value["config"].items()}
    ranges = {int(p): [_range_from_json(r) for r in ranges]
              for p, ranges in value.get("ranges", {}).items()}
    factor = value.get("replication_factor", 1)
    if not isinstance(factor, int) or isinstance(factor, bool):
        raise ValueError(f"replication_factor {factor!r} is not an int")
    leadership = {int(p): Leadership.from_json(record)
                  for p, record in value.get("leadership", {}).items()}
    topic_id = value.get("topic_id", "")   # absent: written before topics had ids
    if topic_id and not topics.is_topic_id(topic_id):
        raise ValueError(f"topic id {topic_id!r} is not {topics.TOPIC_ID_HEX_DIGITS} "
                         f"lowercase hex digits")
    return TopicMetadata(partitions, config, _names(value["placement"]), ranges, factor,
                         leadership, topic_id)


def _range_to_json(r: Range) -> list:
    """[start, shard], and the replicas third for a replicated partition's range;
    [start, ""] for a tiered one."""
    value = [r.start_offset, r.shard_id]
    return value + [list(r.replicas)] if r.replicas else value


def _range_from_json(value: list) -> Range:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise ValueError(f"range {value!r} is not [start, shard] or [start, shard, replicas]")
    replicas = tuple(_names(value[2])) if len(value) == 3 else ()
    if len(value) == 3 and not replicas:
        raise ValueError(f"range {value!r} has an empty replica list")
    return shard_range(_offset(value[0]), _name(value[1]), replicas)


def _owed_delete(value: list) -> OwedDelete:
    topic, topic_id, partitions = value
    if not topics.is_topic_id(topic_id):
        raise ValueError(f"owed delete of {topic!r}: {topic_id!r} is not a topic id")
    if not partitions or any(_offset(p) < 0 for p in partitions):
        raise ValueError(f"owed delete of {topic!r}: partitions {partitions!r}")
    return OwedDelete(_name(topic), topic_id, tuple(partitions))


def _names(value: list) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{value!r} is not a list")
    return [_name(v) for v in value]


def _name(value: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _store(value: str | None) -> str | None:
    if value is not None and not (isinstance(value, str)
                                  and 0 < len(value.encode()) <= limits.TIER_URL_BYTES_MAX):
        raise ValueError(f"tier store {value!r} is not a URL of 1 to "
                         f"{limits.TIER_URL_BYTES_MAX} bytes")
    return value


def _offset(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"offset {value!r} is not an int")
    return value


def upgrade_line(path: Path, version: int, *, done: bool) -> str:
    """What the controller's start says once it upgraded ``path`` from format
    ``version`` (``done``), or what plinth check says a start would do. Any process."""
    if done:
        upgraded, when = (f"upgraded the data directory's format from version {version} "
                          f"to {METADATA_VERSION} (Plinth {VERSION})"), "from now on"
    else:
        upgraded, when = (f"format version {version}: a start of Plinth {VERSION} "
                          f"upgrades the data directory's format to version "
                          f"{METADATA_VERSION}"), "from then on"
    return (f"{path}: {upgraded}; Plinth builds before {METADATA_VERSION_SINCE} refuse "
            f"this data dir {when} (back up the data dir before upgrading to be able to "
            f"go back)")


def _check_version(path: Path, version) -> None:
    """InvalidConfigError unless ``version`` is one this build reads, saying which
    side is newer and what to do: a file of a later version was written by a newer
    Plinth, which alone knows its fields."""
    if type(version) is int and version in METADATA_VERSIONS_READ:   # (True == 1 too)
        return

    if type(version) is int and version > METADATA_VERSION:
        raise InvalidConfigError(
            f"{path}: metadata version {version} was written by a newer Plinth; this one "
            f"({VERSION}) reads versions up to {METADATA_VERSION}: run the Plinth that wrote "
            f"it (the data directory is unchanged)")
    raise InvalidConfigError(f"{path}: metadata version {version!r} is not one Plinth "
                             f"writes (this one, {VERSION}, reads versions up to "
                             f"{METADATA_VERSION}): the file is damaged; restore it from a "
                             f"copy, or see plinth check --data-dir")
