"""What the controller's calls to a shard actor take and return.

The contract between the control plane and a shard (as ``store.go`` is
nats-server's): the shard actor (actor.py) implements it, its manifest
(shard_manifest.py) stores it, and the controller reaches it only through
``ShardHandle`` (shard_handle.py), which re-exports these types. Every value
crosses processes through Ray's pickling, so each is a plain frozen dataclass
with no behaviour beyond checking itself.

Any process or thread may use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from plinth import limits, topics

# A consumer group's state as its coordinator hands it over to another shard
# (GroupCoordinator.hand_over / adopt): opaque to the control plane.
GroupStates = dict[str, dict]


@dataclass(frozen=True)
class TierOptions:
    """The server's tiered-storage options (``plinth serve --tier-url``,
    ``--tier-cache-bytes``), as every shard actor gets them at its start (issue 14).

    ``url``: the object store's URL, checked by the server (remote_store.py's
    parser) before anything started; None: no tiered storage, and the controller
    refuses remote.storage.enable=true. It may carry secrets, so it is left out of
    the repr: show it with remote_store.redacted_url. ``cache_bytes``: the local
    disk each shard may use for cached remote chunks (chunk_cache.py).
    ``claim``: (the data dir's identity, this server start's instance id) as the
    server claimed the store (shards/tier/store_claim.py): a shard deletes remote
    objects only while the store's claim names that start (a server that could
    not reach the store at start claims it later, its shards' deletions waiting
    till then); None: no fence (unit tests)."""

    url: str | None = field(default=None, repr=False)
    cache_bytes: int = limits.TIER_CACHE_BYTES_DEFAULT
    claim: tuple[str, str] | None = None

    @property
    def enabled(self) -> bool:
        return self.url is not None

    @property
    def store(self) -> str | None:
        """Which store and prefix the URL names, without credentials (what the
        controller records and compares: remote_store.store_identity), or None."""
        if self.url is None:
            return None
        from plinth.shards.tier.remote_store import store_identity   # imports obstore

        return store_identity(self.url)

    def check(self) -> None:
        """Raises ValueError if the values are outside their limits (programmer error:
        the server checked the options)."""
        if self.url is not None and not (
                isinstance(self.url, str) and 0 < len(self.url.encode()) <= limits.TIER_URL_BYTES_MAX):
            raise ValueError(f"tier URL of {len(str(self.url).encode())} bytes: 1 to "
                             f"{limits.TIER_URL_BYTES_MAX}")
        if isinstance(self.cache_bytes, bool) or not isinstance(self.cache_bytes, int) or \
                not limits.TIER_CACHE_BYTES_MIN <= self.cache_bytes <= limits.TIER_CACHE_BYTES_MAX:
            raise ValueError(f"tier cache of {self.cache_bytes!r} bytes: "
                             f"{limits.TIER_CACHE_BYTES_MIN}..{limits.TIER_CACHE_BYTES_MAX}")


@dataclass(frozen=True, order=True)
class PartitionId:
    """One partition of one topic; ordered by topic, then partition (as ``ls`` and
    every listing show them)."""

    topic: str
    partition: int

    def check(self) -> None:
        """Raises ValueError if this cannot name a partition (programmer error)."""
        if not isinstance(self.topic, str) or not self.topic or "/" in self.topic:
            raise ValueError(f"topic {self.topic!r} must be a non-empty name without '/'")
        if not isinstance(self.partition, int) or isinstance(self.partition, bool) \
                or self.partition < 0:
            raise ValueError(f"{self.topic}: partition {self.partition!r} must be an int >= 0")


@dataclass(frozen=True)
class Leadership:
    """Who holds and who leads one partition's current range: the controller's record,
    changed only by the controller, each change a compare-and-set (control/leadership.py).

    ``replicas``: the shards holding a copy, preferred leader first. ``leader``:
    the one taking writes, "" while none can (offline). ``leader_epoch``: grows
    with every change of leader (KIP-101). ``in_sync``: the replicas that hold
    every record below the high watermark (the leader is always one).
    ``partition_epoch``: grows with every change of any field (the CAS version).
    ``controller_epoch``: the controller incarnation that made this record; a shard
    refuses a record from an older one. ``eligible``: KIP-966's eligible leader
    replicas, out of sync but holding every acknowledged record (they left the
    in-sync set while it was below min.insync.replicas, so the high watermark
    could not move past them); a leader may come from them when no in-sync
    replica is alive.
    """

    replicas: tuple[str, ...]
    leader: str
    leader_epoch: int
    in_sync: tuple[str, ...]
    partition_epoch: int = 0
    controller_epoch: int = 0
    eligible: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """The record as metadata.json and a shard's manifest.json keep it."""
        return {"replicas": list(self.replicas), "leader": self.leader,
                "leader_epoch": self.leader_epoch, "in_sync": list(self.in_sync),
                "partition_epoch": self.partition_epoch,
                "controller_epoch": self.controller_epoch, "eligible": list(self.eligible)}

    @classmethod
    def from_json(cls, value: dict) -> "Leadership":
        """The record ``to_json`` wrote; raises ValueError (or KeyError, TypeError) on
        anything else, for the file's loader to name the file."""
        names = {key: _strings(value[key], key) for key in ("replicas", "in_sync")}
        epochs = {key: _count(value[key], key)
                  for key in ("leader_epoch", "partition_epoch", "controller_epoch")}
        if not isinstance(value["leader"], str):
            raise ValueError(f"leader {value['leader']!r} is not a string")
        record = cls(names["replicas"], value["leader"], epochs["leader_epoch"], names["in_sync"],
                     epochs["partition_epoch"], epochs["controller_epoch"],
                     _strings(value.get("eligible", []), "eligible"))
        record.check()
        return record

    def check(self) -> None:
        """Raises ValueError if the record breaks its own rules (programmer error)."""
        if not self.replicas or len(set(self.replicas)) != len(self.replicas):
            raise ValueError(f"replicas {self.replicas!r} must be distinct shard ids, at least one")
        if self.leader and self.leader not in self.in_sync:
            raise ValueError(f"leader {self.leader!r} must be in sync ({self.in_sync!r})")
        if not set(self.in_sync) <= set(self.replicas):
            raise ValueError(f"in-sync {self.in_sync!r} must be replicas ({self.replicas!r})")
        if not set(self.eligible) <= set(self.replicas) - set(self.in_sync):
            raise ValueError(f"eligible {self.eligible!r} must be replicas out of sync")
        if min(self.leader_epoch, self.partition_epoch, self.controller_epoch) < 0:
            raise ValueError(f"epochs must be >= 0: {self!r}")


def _strings(value, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} {value!r} is not a list of strings")
    return tuple(value)


def _count(value, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} {value!r} is not an int >= 0")
    return value


@dataclass(frozen=True)
class PartitionSpec:
    """A partition a shard must serve.

    ``initial_offset``: where its log continues if it is empty or shorter (its
    writes moved here from a shard that sealed it at that offset). ``sealed``:
    serve its older range for reads only (its writes moved to another shard).
    ``producers``: the previous owner's idempotent-producer snapshot, or None.
    ``leadership``: the replicas of the partition's current range and who leads
    it; None for a partition with one copy, on this shard (replication factor 1).
    ``topic_id``: the topic's id (topics.new_topic_id), which names its remote
    segments (shards/tier/remote_segment.py); "" in a shard manifest written
    before topics had ids, until the controller opens the partition again.
    """

    topic: str
    partition: int
    config: dict[str, str]
    initial_offset: int = 0
    sealed: bool = False
    producers: list | None = None
    leadership: Leadership | None = None
    topic_id: str = ""

    @property
    def id(self) -> PartitionId:
        return PartitionId(self.topic, self.partition)

    def check(self) -> None:
        """Raises ValueError if a field has the wrong type or range (programmer error)."""
        self.id.check()
        if not isinstance(self.config, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.config.items()):
            raise ValueError(f"{self.topic}-{self.partition}: config must map str to str, "
                             f"got {self.config!r}")
        if not isinstance(self.initial_offset, int) or self.initial_offset < 0:
            raise ValueError(f"{self.topic}-{self.partition}: initial offset "
                             f"{self.initial_offset!r} must be an int >= 0")
        if not isinstance(self.sealed, bool):
            raise ValueError(f"{self.topic}-{self.partition}: sealed must be a bool")
        if self.producers is not None and not isinstance(self.producers, list):
            raise ValueError(f"{self.topic}-{self.partition}: producers must be a list or None")
        if self.leadership is not None:
            self.leadership.check()
        if self.topic_id and not topics.is_topic_id(self.topic_id):
            raise ValueError(f"{self.topic}-{self.partition}: topic id {self.topic_id!r} is "
                             f"not {topics.TOPIC_ID_HEX_DIGITS} lowercase hex digits")


# How a shard found each partition it opened (ShardActor.open_partitions' answer):
# its directory did not exist (a new partition; if the partition existed before,
# the shard opens it as needing repair instead); recovery cut nothing; or its log may
# lack records it held (recovery cut entries, its directory was lost, or a mark from
# an earlier open): not in sync, never elected, until it has caught up.
OPENED_CREATED_EMPTY = "created empty"
OPENED_RECOVERED_WHOLE = "recovered whole"
OPENED_NEEDS_REPAIR = "needs repair"
# A partition of one copy whose directory a restart found missing (a data dir
# restored without its shards/ directories, a wiped disk): created empty, every
# record it held lost. Said once, to the controller's first open of it
# (Partition.lost_at_restart): its start prints it.
OPENED_LOST = "lost: found missing, created empty"


@dataclass(frozen=True)
class SealedPartition:
    """A partition that stopped taking writes on its shard: where its new owner
    continues (``end_offset``) and its idempotent producers' snapshot. ``complete``:
    every record below ``end_offset`` is here and final (False: a replicated leader
    whose in-sync replicas do not hold its log's end yet, or a replica that does
    not hold the range whole; it is not sealed yet, ask again or pass it over)."""

    topic: str
    partition: int
    end_offset: int
    producers: list
    complete: bool = True


@dataclass(frozen=True)
class HandOverState:
    """A led partition being handed over to its preferred leader (a preferred-leader
    election): ``complete`` once that replica holds everything up to ``end_offset``,
    the leader's log end; ``error`` why it cannot be handed over (not led there, the
    replica not in sync), and then the rest means nothing."""

    topic: str
    partition: int
    complete: bool
    end_offset: int
    error: BaseException | None = None


@dataclass(frozen=True)
class TieredState:
    """What a shard holding a sealed copy of a partition says of it for retirement
    (ShardHandle.tiered_sealed; issue 14, a removed shard retires once its ranges
    are tiered).

    ``wholly_remote``: every record of the sealed copy is in object storage
    (RemoteLogManager.wholly_remote): its last segment rolled and every local
    segment that holds records is covered by the remote log, or was deleted
    remotely by total retention. False for a partition not sealed here, not
    tiered, not held here, or with uploads still to do. ``log_start_offset``: the
    partition's first offset here, local or remote (retention may have moved it
    past the range's start). ``end_offset``: the sealed copy's end. Both 0 for a
    partition the shard does not hold."""

    partition: PartitionId
    wholly_remote: bool
    log_start_offset: int
    end_offset: int


class ControllerAnnouncements(Protocol):
    """What a shard actor needs of the controller: to say where it listens after
    each (re)start, to change an in-sync set, and to nudge it when tiering
    changed. The controller passes a ControllerHandle, which has these
    methods; shards/ must not import control/, so the type is declared here."""

    def shard_started(self, shard_id: str, address: str, direct_address: str = "",
                      pid: int = 0) -> None: ...

    def shard_starting(self, shard_id: str, pid: int) -> None: ...

    def alter_in_sync(self, shard_id: str, partition: PartitionId, leader_epoch: int,
                      partition_epoch: int, in_sync: tuple[str, ...]) -> Leadership:
        """The leader ``shard_id`` asks to change the partition's in-sync set; a
        compare-and-set on (leader_epoch, partition_epoch). Returns the new record;
        raises FencedLeaderEpochError if either epoch is stale."""
        ...

    def leader_disk_refused(self, shard_id: str, error: str) -> None:
        """A one-way nudge, sent without waiting: ``shard_id``'s disk refused an append
        to a partition it leads (``error``, the refusal's message). The controller
        hands the partitions it leads to in-sync replicas with room (a lost nudge is
        sent again at the next refusal after DISK_REFUSED_NUDGE_INTERVAL_MS)."""
        ...

    def tiering_changed(self, shard_id: str) -> None:
        """A one-way nudge, sent without waiting: on ``shard_id`` a sealed partition
        became wholly remote, or a re-sync the controller asked for (covers_remote)
        listed the store. The controller looks again at what the draining shards
        hold (it also polls, so a lost nudge only delays a retirement)."""
        ...
