"""The controller: topics, their configuration and the placement of partitions on shards.

Runs as one named Ray actor per broker (control plane), created and reached
through ControllerHandle (controller_handle.py). Its methods run one at a
time on the actor's thread, so metadata changes are serialized without
locks. It keeps the metadata (metadata.py), saved to
``<data_dir>/metadata.json`` after every change and before the change is
answered; it runs the shard actors through a ShardSet (shard_set.py), which
reaches them only through ShardHandles (shards/shard_handle.py), never by
calling Ray; and it leaves changes of shards (``plinth shards add/remove``:
moves of partitions and groups, retiring drained shards) to its Rebalancer
(rebalancer.py).

Its two neighbours are given to it: ``start_shard`` makes a ShardHandle for
new shard options (by default a Ray actor that announces itself to this
controller), and ``nodes`` lists the Ray nodes (by default ``ray.nodes()``).
The unit tests give it real shard actors reached in process, and fixed nodes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from plinth import limits, protocol, topics
from plinth.cluster_keys import ClusterKeys
from plinth.control import placement
from plinth.control.controller_handle import ControllerHandle, StartReport
from plinth.control.metadata import METADATA_FILE, BrokerMetadata, TopicMetadata
from plinth.control.nodes import Node, ray_nodes
from plinth.control.rebalancer import Rebalancer
from plinth.control.routing_table import RoutingTable
from plinth.control.shard_set import ShardSet
from plinth.errors import (InvalidConfigError, PartitionOutOfRangeError, TooManyTopicsError,
                           TopicExistsError, UnavailableError, UnknownTopicError)
from plinth.shards.shard_handle import PartitionId, ShardHandle, ShardOptions, wait_all_or_raise

log = logging.getLogger(__name__)


def _start_shard_on_ray(options: ShardOptions) -> ShardHandle:
    """A shard actor owned by this controller's actor, announcing itself to it."""
    return ShardHandle.create(options, announce_to=ControllerHandle.current())


class Controller:
    """Wrapped with ``ray.remote`` by ControllerHandle.create. Every method:
    controller actor thread (or the test's thread, without Ray)."""

    def __init__(self, data_dir: str, shard_count: int | None, fsync_policy: str = "always",
                 fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT, *,
                 start_shard: Callable[[ShardOptions], ShardHandle] = _start_shard_on_ray,
                 nodes: Callable[[], list[Node]] = ray_nodes,
                 cluster_keys: ClusterKeys | None = None):
        """``cluster_keys``: the shards' sockets admit only cluster members (the
        server's; None only in tests, whose shards listen on loopback)."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._metadata_path = self.data_dir / METADATA_FILE
        self._metadata = BrokerMetadata.load(self._metadata_path)
        self._metadata.shards = self._shard_ids(shard_count)
        self._shards = ShardSet(self.data_dir, fsync_policy, fsync_interval_ms,
                                start_shard=start_shard, nodes=nodes,
                                cluster_keys=cluster_keys)
        self._cluster_keys = cluster_keys
        self._rebalancer = Rebalancer(self._metadata, self._shards, self._save)
        self._routers: dict[str, str] = {}   # listen address -> node address

    def _shard_ids(self, shard_count: int | None) -> list[str]:
        stored = self._metadata.shards
        if shard_count is None:
            shard_count = len(stored) or os.cpu_count() or 1
        if stored and shard_count != len(stored):
            # plinth shards add/remove changed the count since the command line was
            # written: a restart must not undo them (or refuse to start).
            log.warning("%s has %d shards (changed by plinth shards add or remove); "
                        "--shards %d applies to a new data directory only",
                        self._metadata_path, len(stored), shard_count)
            return list(stored)
        if not 1 <= shard_count <= limits.SHARDS_MAX:
            raise InvalidConfigError(f"--shards {shard_count} is outside 1..{limits.SHARDS_MAX}")
        return [f"shard-{i}" for i in range(shard_count)]

    def _save(self) -> None:
        self._metadata.save(self._metadata_path)

    # --- Lifecycle ---------------------------------------------------------

    def start(self) -> StartReport:
        """Create every shard actor and open the partitions it owns; returns which
        shards serve (and where) and which do not (and why).

        A shard that does not come up in time (its node is down, its directory is
        locked) is left out: its partitions are unavailable until it starts and
        announces itself. Then finishes a change of shards a crash interrupted.
        """
        self._shards.start(self._metadata.shards + self._metadata.draining,
                           self._metadata.shard_nodes)
        self._shards.call_each({s: self._shards[s].open_partitions(specs)
                                for s, specs in self._metadata.specs_by_shard().items()},
                               limits.SHARD_START_WAIT_S, serving_needs_it=True)
        self._save()
        self._shards.push_partition_counts(self._metadata.partition_counts())
        self._rebalancer.finish_interrupted()
        return self.start_report()

    def start_report(self) -> StartReport:
        """Which shards serve and where, which do not and why (the server prints
        ``ready`` only when every shard serves)."""
        expected = self._metadata.shards + self._metadata.draining
        not_serving = self._shards.not_serving(expected)
        return StartReport({s: a for s, a in self._shards.addresses.items() if s not in not_serving},
                           not_serving)

    def cluster_keys(self) -> ClusterKeys | None:
        """The cluster's key pair, for a ``plinth router`` given no key file: whoever
        may call the controller through Ray already controls every shard actor."""
        return self._cluster_keys

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        self._shards.shutdown(grace_period_s)

    # --- Announcements ---------------------------------------------------------

    def shard_started(self, shard_id: str, address: str) -> None:
        """A shard actor (re)started and listens at ``address`` (called by the shard)."""
        self._shards.started(shard_id, address)

    def router_started(self, listen: str, node_address: str) -> None:
        self._routers[listen] = node_address

    def router_stopped(self, listen: str) -> None:
        self._routers.pop(listen, None)

    # --- Queries ---------------------------------------------------------------

    def shard_stats(self) -> dict[str, dict | None]:
        """Each shard's ShardStats snapshot; None for a shard that does not answer."""
        return self._shards.stats()

    def status(self) -> protocol.StatusInfo:
        """Nodes, shards (with partitions, bytes and rates) and routers. Retires removed
        shards whose last range retention has deleted."""
        self._rebalancer.retire_drained()
        nodes = [(n.node_id, n.address, n.alive) for n in self._shards.nodes()]
        owned: dict[str, int] = {}
        for topic in self._metadata.topics.values():
            for shard_id in topic.placement:
                owned[shard_id] = owned.get(shard_id, 0) + 1
        shards = [self._shard_status(shard_id, stats, owned.get(shard_id, 0))
                  for shard_id, stats in self._shards.stats().items()]
        return protocol.StatusInfo(nodes, shards, sorted(self._routers.items()))

    def _shard_status(self, shard_id: str, stats: dict | None, owned: int) -> protocol.ShardStatus:
        size_bytes = sum(values["size_bytes"] for values in stats["logs"].values()) if stats else 0
        return protocol.ShardStatus(
            shard_id, self._shards.addresses.get(shard_id, ""), stats is not None, owned,
            size_bytes, stats["records_per_s"] if stats else 0.0,
            stats["bytes_per_s"] if stats else 0.0, shard_id in self._metadata.draining)

    def routing(self) -> RoutingTable:
        """What a router needs: shard addresses and each topic's placement."""
        topics_meta = self._metadata.topics.items()
        return RoutingTable(
            shard_addresses=dict(self._shards.addresses),
            shard_ids=tuple(self._metadata.shards),
            owners={name: tuple(t.placement) for name, t in topics_meta},
            ranges={name: {p: tuple(ranges) for p, ranges in t.ranges.items()}
                    for name, t in topics_meta if t.ranges})

    def list_groups(self) -> list[str]:
        """Every consumer group known to any shard (members or committed offsets)."""
        names = wait_all_or_raise({s: self._shards[s].group_names() for s in self._shards.ids()},
                                  limits.CONTROL_CALL_TIMEOUT_S)
        return sorted({name for per_shard in names.values() for name in per_shard})

    def list_topics(self) -> list[protocol.TopicInfo]:
        return [self._topic_info(name) for name in sorted(self._metadata.topics)]

    def describe_topic(self, name: str) -> protocol.TopicInfo:
        info = self._topic_info(name)
        specs = self._metadata.specs_by_shard([name])
        infos = wait_all_or_raise({s: self._shards[s].partition_infos([sp.id for sp in specs[s]])
                                   for s in specs}, limits.CONTROL_CALL_TIMEOUT_S)
        info.partition_info = _merge_ranges([p for per_shard in infos.values() for p in per_shard],
                                            self._metadata.topics[name].placement)
        return info

    def partition_offsets(self, topic: str, partition: int) -> protocol.PartitionInfo:
        """Start and end offsets of a partition whose history spans several shards."""
        meta = self._topic(topic)
        if not 0 <= partition < meta.partitions:
            raise PartitionOutOfRangeError(f"topic {topic!r} has {meta.partitions} partitions; "
                                           f"there is no partition {partition}")
        shard_ids = {r.shard_id for r in meta.ranges_of(partition)}
        pid = PartitionId(topic, partition)
        infos = wait_all_or_raise({s: self._shards[s].partition_infos([pid]) for s in shard_ids},
                                  limits.CONTROL_CALL_TIMEOUT_S)
        return _merge_ranges([i for per_shard in infos.values() for i in per_shard],
                             meta.placement)[0]

    def _topic(self, name: str) -> TopicMetadata:
        topic = self._metadata.topics.get(name)
        if topic is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        return topic

    def _topic_info(self, name: str) -> protocol.TopicInfo:
        topic = self._topic(name)
        return protocol.TopicInfo(name=name, partitions=topic.partitions, config=dict(topic.config))

    # --- Topics ---------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, config: dict[str, str]) -> protocol.TopicInfo:
        topics.validate_topic_name(name)
        topics.validate_partition_count(name, partitions)
        config = topics.normalize_topic_config(name, config)
        if name in self._metadata.topics:
            raise TopicExistsError(f"topic {name!r} already exists")
        if len(self._metadata.topics) >= limits.TOPICS_MAX:
            raise TooManyTopicsError(f"cannot create {name!r}: the broker already has "
                                     f"{limits.TOPICS_MAX} topics, the limit")
        owners = placement.place_topic(name, partitions, self._metadata.shards)
        self._metadata.topics[name] = TopicMetadata(partitions, config, owners)
        try:
            wait_all_or_raise({s: self._shards[s].open_partitions(specs)
                               for s, specs in self._metadata.specs_by_shard([name]).items()},
                              limits.CONTROL_CALL_TIMEOUT_S)
        except Exception:
            del self._metadata.topics[name]
            raise
        self._save()
        self._shards.push_partition_counts(self._metadata.partition_counts())
        log.info("created topic %s with %d partitions", name, partitions)
        return self._topic_info(name)

    def alter_topic(self, name: str, changes: dict[str, str]) -> protocol.TopicInfo:
        """Change config entries of a topic; shards apply them at once (e.g. retention)."""
        topic = self._topic(name)
        config = topics.normalize_topic_config(name, {**topic.config, **changes})
        specs = self._metadata.specs_by_shard([name])
        wait_all_or_raise({s: self._shards[s].alter_partitions([sp.id for sp in shard_specs], config)
                           for s, shard_specs in specs.items()}, limits.CONTROL_CALL_TIMEOUT_S)
        topic.config = config
        self._save()
        log.info("altered topic %s: %s", name, changes)
        return self._topic_info(name)

    def delete_topic(self, name: str) -> None:
        self._topic(name)   # raises UnknownTopicError
        specs = self._metadata.specs_by_shard([name])
        # Forget the topic first: a crash mid-delete leaves orphan files, not a
        # topic whose partitions are half gone.
        del self._metadata.topics[name]
        self._save()
        wait_all_or_raise({s: self._shards[s].delete_partitions([sp.id for sp in shard_specs])
                           for s, shard_specs in specs.items()}, limits.CONTROL_CALL_TIMEOUT_S)
        self._shards.push_partition_counts(self._metadata.partition_counts())
        self._rebalancer.retire_drained()
        log.info("deleted topic %s", name)

    # --- Changes of shards ------------------------------------------------------------

    def add_shards(self, count: int) -> list[protocol.PartitionMove]:
        """Add ``count`` shards; partitions that rendezvous hashing now gives to them move
        without copying data: the old owner seals its log (keeps serving it for reads)
        and the new owner continues at the old end offset. Returns the moves."""
        shard_ids = self._metadata.shards
        if not 1 <= count <= limits.SHARDS_MAX - len(shard_ids):
            raise InvalidConfigError(f"cannot add {count} shards to {len(shard_ids)}: "
                                     f"at most {limits.SHARDS_MAX} shards")
        new_ids = [f"shard-{len(shard_ids) + i}" for i in range(count)]
        self._shards.start(new_ids, self._metadata.shard_nodes)
        missing = [s for s in new_ids if s not in self._shards.addresses]
        if missing:
            raise UnavailableError(f"cannot add shards: {', '.join(missing)} did not start "
                                   f"within {limits.SHARD_START_WAIT_S} s")
        draining = [s for s in self._metadata.draining if s not in new_ids]
        return self._rebalancer.change_shards(shard_ids + new_ids, draining,
                                              f"added {count} shards")

    def remove_shards(self, count: int) -> list[protocol.PartitionMove]:
        """Remove the ``count`` newest shards: the partitions they own move their writes
        to the others (no data copied), the groups they coordinate move with their
        committed offsets. A removed shard keeps serving its older ranges until none
        is left (topics deleted, or retention), and then stops. Returns the moves."""
        shard_ids = self._metadata.shards
        if not 1 <= count < len(shard_ids):
            raise InvalidConfigError(f"cannot remove {count} of {len(shard_ids)} shards: "
                                     f"at least one must stay")
        draining = self._metadata.draining + shard_ids[-count:]
        moves = self._rebalancer.change_shards(shard_ids[:-count], draining,
                                               f"removed {count} shards")
        self._rebalancer.retire_drained()
        return moves


def _merge_ranges(infos: list[protocol.PartitionInfo], owners: list[str]) -> list[protocol.PartitionInfo]:
    """One PartitionInfo per partition from the infos of all its ranges: the first start,
    the last end, the bytes of all, the current owner."""
    merged: dict[int, protocol.PartitionInfo] = {}
    for info in infos:
        got = merged.get(info.partition)
        if got is None:
            merged[info.partition] = protocol.PartitionInfo(
                info.partition, owners[info.partition], info.start_offset, info.end_offset,
                info.size_bytes)
        else:
            got.start_offset = min(got.start_offset, info.start_offset)
            got.end_offset = max(got.end_offset, info.end_offset)
            got.size_bytes += info.size_bytes
    return [merged[p] for p in sorted(merged)]
