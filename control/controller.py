"""The controller: topics, their configuration and the placement of partitions on shards.

Runs as one named Ray actor per broker (control plane), created and reached
through ControllerHandle (controller_handle.py). Its methods run one at a
time on the actor's thread, so metadata changes are serialized without
locks. It creates the shard actors and tells each which partitions it owns,
always through a ShardHandle (shards/shard_handle.py), never by calling Ray;
its metadata (metadata.py) is saved to ``<data_dir>/metadata.json`` after
every change, before the change is answered.

Changes of shards (``add_shards``, ``remove_shards``) move groups first, then
partitions, each step durable before the next, so that a restart finishes a
change a crash interrupted (``start``); a group move that fails is undone, a
partition move that fails keeps the moves before it.

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
from typing import TypeVar

from plinth import limits, protocol, topics
from plinth.control import placement
from plinth.control.controller_handle import ControllerHandle
from plinth.control.metadata import METADATA_FILE, BrokerMetadata, TopicMetadata
from plinth.control.nodes import Node, ray_nodes
from plinth.control.routing_table import RoutingTable
from plinth.errors import (BrokerError, InvalidConfigError, PartitionOutOfRangeError,
                           TooManyTopicsError, TopicExistsError, UnavailableError,
                           UnknownTopicError)
from plinth.shards.shard_handle import (PartitionId, PartitionSpec, PendingCall, ShardHandle,
                                        ShardOptions, wait_all, wait_all_or_raise)

log = logging.getLogger(__name__)

T = TypeVar("T")


def _start_shard_on_ray(options: ShardOptions) -> ShardHandle:
    """A shard actor owned by this controller's actor, announcing itself to it."""
    return ShardHandle.create(options, announce_to=ControllerHandle.current())


class Controller:
    """Wrapped with ``ray.remote`` by ControllerHandle.create. Every method:
    controller actor thread (or the test's thread, without Ray)."""

    def __init__(self, data_dir: str, shard_count: int | None, fsync_policy: str = "always",
                 fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT, *,
                 start_shard: Callable[[ShardOptions], ShardHandle] = _start_shard_on_ray,
                 nodes: Callable[[], list[Node]] = ray_nodes):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._metadata_path = self.data_dir / METADATA_FILE
        self._metadata = BrokerMetadata.load(self._metadata_path)
        self._metadata.shards = self._shard_ids(shard_count)
        self._fsync_policy = fsync_policy
        self._fsync_interval_ms = fsync_interval_ms
        self._start_shard = start_shard
        self._nodes = nodes
        self._shards: dict[str, ShardHandle] = {}
        self._addresses: dict[str, str] = {}
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

    def start(self) -> dict[str, str]:
        """Create every shard actor and open the partitions it owns; returns shard addresses.

        A shard that does not come up in time (its node is down) is left out: its
        partitions are unavailable until it starts and announces itself.
        """
        self._start_shards(self._metadata.shards + self._metadata.draining)
        self._call_each({s: self._shards[s].open_partitions(specs)
                         for s, specs in self._specs_by_shard().items()}, limits.SHARD_START_WAIT_S)
        self._save()
        self._push_partition_counts()
        try:   # a change of shards a crash interrupted
            self._finish_group_moves()
            self._move_partitions()
        except BrokerError as exc:   # a shard is down: the next start or shards command retries
            log.error("could not finish a change of shards: %s", exc)
        return dict(self._addresses)

    def _call_each(self, calls: dict[str, PendingCall[T]], timeout_s: float) -> dict[str, T | None]:
        """shard id -> result of its call, or None if it failed or did not answer in
        time (logged: its partitions are unavailable until it is back)."""
        results: dict[str, T | None] = {}
        for shard_id, outcome in wait_all(calls, timeout_s).items():
            if isinstance(outcome, BrokerError):
                log.warning("%s; its partitions are unavailable", outcome)
                outcome = None
            results[shard_id] = outcome
        return results

    def _push_partition_counts(self) -> None:
        """Tell every shard each topic's partition count (group coordinators need them)."""
        counts = {name: t.partitions for name, t in self._metadata.topics.items()}
        self._call_each({s: shard.set_partition_counts(counts) for s, shard in self._shards.items()},
                        limits.SHARD_START_WAIT_S)

    def _start_shards(self, shard_ids: list[str]) -> None:
        """Create shard actors, each pinned to its node (its data is on that node's disk).

        A shard new to the broker goes to the alive node with the fewest shards, and
        that node's pin resource is kept in the metadata and required by the actor:
        if the node dies, Ray restarts the shard only when that node returns, and
        until then its partitions are unavailable.
        """
        nodes = self._metadata.shard_nodes
        for shard_id in shard_ids:
            if shard_id in self._shards:
                continue   # a draining shard that takes writes again
            if shard_id not in nodes:
                alive = [node.pin_resource for node in self._nodes() if node.alive]
                nodes[shard_id] = placement.node_for_new_shard(alive, nodes)
            self._shards[shard_id] = self._start_shard(ShardOptions(
                shard_id, str(self.data_dir / "shards" / shard_id), self._fsync_policy,
                self._fsync_interval_ms, nodes[shard_id]))
        addresses = self._call_each({s: self._shards[s].address() for s in shard_ids},
                                    limits.SHARD_START_WAIT_S)
        self._addresses.update({s: a for s, a in addresses.items() if a is not None})

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        wait_all_or_raise({s: shard.shutdown(grace_period_s) for s, shard in self._shards.items()},
                          grace_period_s + limits.SHUTDOWN_CALL_MARGIN_S)

    def _specs_by_shard(self, names: list[str] | None = None) -> dict[str, list[PartitionSpec]]:
        """shard id -> the partitions it must serve: those it owns, and the older
        ranges of partitions that moved away (sealed)."""
        out: dict[str, list[PartitionSpec]] = {}
        for name, topic in self._metadata.topics.items():
            if names is None or name in names:
                for partition in range(topic.partitions):
                    for shard_id, spec in _specs_of_partition(name, topic, partition).items():
                        out.setdefault(shard_id, []).append(spec)
        return out

    # --- Queries ---------------------------------------------------------------

    def shard_started(self, shard_id: str, address: str) -> None:
        """A shard actor (re)started and listens at ``address`` (called by the shard)."""
        if self._addresses.get(shard_id) != address:
            log.info("%s now listens at %s", shard_id, address)
        self._addresses[shard_id] = address

    def router_started(self, listen: str, node_address: str) -> None:
        self._routers[listen] = node_address

    def router_stopped(self, listen: str) -> None:
        self._routers.pop(listen, None)

    def shard_stats(self) -> dict[str, dict | None]:
        """Each shard's ShardStats snapshot; None for a shard that does not answer
        within STATUS_CALL_TIMEOUT_S (all are asked at once)."""
        outcomes = wait_all({s: shard.stats() for s, shard in self._shards.items()},
                            limits.STATUS_CALL_TIMEOUT_S)
        return {s: None if isinstance(o, BrokerError) else o for s, o in outcomes.items()}

    def status(self) -> protocol.StatusInfo:
        """Nodes, shards (with partitions, bytes and rates) and routers. Retires removed
        shards whose last range retention has deleted."""
        self._retire_drained()
        nodes = [(n.node_id, n.address, n.alive) for n in self._nodes()]
        owned: dict[str, int] = {}
        for topic in self._metadata.topics.values():
            for shard_id in topic.placement:
                owned[shard_id] = owned.get(shard_id, 0) + 1
        shards = [self._shard_status(shard_id, stats, owned.get(shard_id, 0))
                  for shard_id, stats in self.shard_stats().items()]
        return protocol.StatusInfo(nodes, shards, sorted(self._routers.items()))

    def _shard_status(self, shard_id: str, stats: dict | None, owned: int) -> protocol.ShardStatus:
        size_bytes = sum(values["size_bytes"] for values in stats["logs"].values()) if stats else 0
        return protocol.ShardStatus(
            shard_id, self._addresses.get(shard_id, ""), stats is not None, owned, size_bytes,
            stats["records_per_s"] if stats else 0.0, stats["bytes_per_s"] if stats else 0.0,
            shard_id in self._metadata.draining)

    def routing(self) -> RoutingTable:
        """What a router needs: shard addresses and each topic's placement."""
        topics_meta = self._metadata.topics.items()
        return RoutingTable(
            shard_addresses=dict(self._addresses),
            shard_ids=tuple(self._metadata.shards),
            owners={name: tuple(t.placement) for name, t in topics_meta},
            ranges={name: {p: tuple(ranges) for p, ranges in t.ranges.items()}
                    for name, t in topics_meta if t.ranges})

    def list_groups(self) -> list[str]:
        """Every consumer group known to any shard (members or committed offsets)."""
        names = wait_all_or_raise({s: shard.group_names() for s, shard in self._shards.items()},
                                  limits.CONTROL_CALL_TIMEOUT_S)
        return sorted({name for per_shard in names.values() for name in per_shard})

    def list_topics(self) -> list[protocol.TopicInfo]:
        return [self._topic_info(name) for name in sorted(self._metadata.topics)]

    def describe_topic(self, name: str) -> protocol.TopicInfo:
        info = self._topic_info(name)
        specs = self._specs_by_shard([name])
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
                               for s, specs in self._specs_by_shard([name]).items()},
                              limits.CONTROL_CALL_TIMEOUT_S)
        except Exception:
            del self._metadata.topics[name]
            raise
        self._save()
        self._push_partition_counts()
        log.info("created topic %s with %d partitions", name, partitions)
        return self._topic_info(name)

    def alter_topic(self, name: str, changes: dict[str, str]) -> protocol.TopicInfo:
        """Change config entries of a topic; shards apply them at once (e.g. retention)."""
        topic = self._topic(name)
        config = topics.normalize_topic_config(name, {**topic.config, **changes})
        specs = self._specs_by_shard([name])
        wait_all_or_raise({s: self._shards[s].alter_partitions([sp.id for sp in shard_specs], config)
                           for s, shard_specs in specs.items()}, limits.CONTROL_CALL_TIMEOUT_S)
        topic.config = config
        self._save()
        log.info("altered topic %s: %s", name, changes)
        return self._topic_info(name)

    def delete_topic(self, name: str) -> None:
        self._topic(name)   # raises UnknownTopicError
        specs = self._specs_by_shard([name])
        # Forget the topic first: a crash mid-delete leaves orphan files, not a
        # topic whose partitions are half gone.
        del self._metadata.topics[name]
        self._save()
        wait_all_or_raise({s: self._shards[s].delete_partitions([sp.id for sp in shard_specs])
                           for s, shard_specs in specs.items()}, limits.CONTROL_CALL_TIMEOUT_S)
        self._push_partition_counts()
        self._retire_drained()
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
        self._start_shards(new_ids)
        missing = [s for s in new_ids if s not in self._addresses]
        if missing:
            raise UnavailableError(f"cannot add shards: {', '.join(missing)} did not start "
                                   f"within {limits.SHARD_START_WAIT_S} s")
        draining = [s for s in self._metadata.draining if s not in new_ids]
        return self._change_shards(shard_ids + new_ids, draining, f"added {count} shards")

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
        moves = self._change_shards(shard_ids[:-count], draining, f"removed {count} shards")
        self._retire_drained()
        return moves

    def _change_shards(self, new_ids: list[str], draining: list[str],
                       what: str) -> list[protocol.PartitionMove]:
        """Groups first, then partitions, each durable before the routers see it (they
        read the metadata only between controller calls). ``groups_moving_from``
        marks a group move in progress, so that a restart finishes it; a move that
        fails now is undone, so that no group is left without a coordinator."""
        self._finish_group_moves()   # one left by a crash
        old_ids, old_draining = self._metadata.shards, self._metadata.draining
        self._set_shards(new_ids, draining, groups_moving_from=old_ids)
        try:
            self._finish_group_moves()
        except Exception:
            log.error("moving consumer groups to %s failed; undoing: %s", new_ids, what)
            self._set_shards(old_ids, old_draining, groups_moving_from=new_ids)
            self._finish_group_moves()
            raise
        self._push_partition_counts()
        moves = self._move_partitions()
        log.info("%s; %d partitions moved their writes", what, len(moves))
        return moves

    def _set_shards(self, shard_ids: list[str], draining: list[str],
                    groups_moving_from: list[str]) -> None:
        self._metadata.shards, self._metadata.draining = list(shard_ids), list(draining)
        self._metadata.groups_moving_from = list(groups_moving_from)
        self._save()

    def _finish_group_moves(self) -> None:
        """Move the groups whose name hashes elsewhere since the last change of shards
        (again, after a crash: groups already moved are not listed by their old shard)."""
        old_ids = self._metadata.groups_moving_from
        if old_ids is None:
            return
        self._move_groups([s for s in old_ids if s in self._shards], self._metadata.shards)
        self._metadata.groups_moving_from = None
        self._save()

    def _move_groups(self, old_ids: list[str], new_ids: list[str]) -> None:
        """Hand each group whose name now hashes to another shard over to it."""
        names = self._call_each({s: self._shards[s].group_names() for s in old_ids},
                                limits.CONTROL_CALL_TIMEOUT_S)
        for shard_id, groups in names.items():
            if groups is None:
                raise UnavailableError(f"cannot move consumer groups: {shard_id} does not answer")
            moving: dict[str, list[str]] = {}
            for group in groups:
                target = placement.shard_for_group(group, new_ids)
                if target != shard_id:
                    moving.setdefault(target, []).append(group)
            for target, group_names in moving.items():
                self._hand_over(shard_id, target, group_names)

    def _hand_over(self, source: str, target: str, group_names: list[str]) -> None:
        states = self._shards[source].hand_over_groups(group_names).result()
        try:
            self._shards[target].adopt_groups(states).result()
        except BrokerError:
            # Give them back rather than leave them coordinated nowhere.
            self._shards[source].adopt_groups(states).result()
            raise
        log.info("moved %d consumer groups from %s to %s", len(states), source, target)

    def _move_partitions(self) -> list[protocol.PartitionMove]:
        """Move each partition whose owner is not the one rendezvous hashing gives it
        among the current shards (all of them after a change; any a crash left)."""
        moves = []
        for name, topic in self._metadata.topics.items():
            for partition in range(topic.partitions):
                move = self._move_if_needed(name, topic, partition)
                if move is not None:
                    moves.append(move)
        return moves

    def _move_if_needed(self, name: str, topic: TopicMetadata,
                        partition: int) -> protocol.PartitionMove | None:
        old = topic.placement[partition]
        new = placement.shard_for(name, partition, self._metadata.shards)
        if new == old:
            return None
        try:
            [sealed] = self._shards[old].seal_partitions([PartitionId(name, partition)]).result()
            self._shards[new].open_partitions([PartitionSpec(
                name, partition, dict(topic.config), sealed.end_offset,
                producers=sealed.producers)]).result()
        except BrokerError as exc:
            # Its end offset is known only to its owner: without it, it cannot move.
            raise UnavailableError(
                f"cannot move {name}-{partition} from {old} to {new} ({type(exc).__name__}: "
                f"{exc}); the moves so far are kept, run the command again once the shard "
                f"is back") from None
        topic.move_writes(partition, sealed.end_offset, new)
        self._save()   # after every move: the smallest window for a crash to leave behind
        return protocol.PartitionMove(name, partition, old, new, sealed.end_offset)

    # --- Retiring removed shards ---------------------------------------------------------

    def _prune_ranges(self) -> None:
        """Forget the older ranges that retention emptied, on shards that no longer own
        their partition, and delete those shards' empty logs of it."""
        for name, topic in self._metadata.topics.items():
            for partition in list(topic.ranges):
                owner = topic.placement[partition]
                for shard_id in {r.shard_id for r in topic.ranges_of(partition)} - {owner}:
                    if self._holds_nothing_of(shard_id, name, partition):
                        topic.forget_ranges_on(partition, shard_id)
                        # Not waited for: a shard that misses it keeps an empty directory.
                        self._shards[shard_id].delete_partitions([PartitionId(name, partition)])
                        self._save()
                        log.info("%s-%d: retention emptied its range on %s; forgot it",
                                 name, partition, shard_id)

    def _holds_nothing_of(self, shard_id: str, topic: str, partition: int) -> bool:
        try:
            [info] = self._shards[shard_id].partition_infos(
                [PartitionId(topic, partition)]).result(limits.STATUS_CALL_TIMEOUT_S)
        except BrokerError:
            return False   # down: ask again next time
        return info.size_bytes == 0

    def _retire_drained(self) -> None:
        """Stop removed shards that no longer hold any range of any partition."""
        self._prune_ranges()
        holding = set(self._specs_by_shard())
        for shard_id in [s for s in self._metadata.draining if s not in holding]:
            shard = self._shards.pop(shard_id, None)
            if shard is not None:
                self._call_each({shard_id: shard.shutdown()}, limits.CONTROL_CALL_TIMEOUT_S)
                shard.kill()
            self._metadata.draining.remove(shard_id)
            self._metadata.shard_nodes.pop(shard_id, None)
            self._addresses.pop(shard_id, None)
            self._save()
            log.info("retired %s: it holds no partition any more (its directory "
                     "%s can be deleted)", shard_id, self.data_dir / "shards" / shard_id)


def _specs_of_partition(name: str, topic: TopicMetadata, partition: int) -> dict[str, PartitionSpec]:
    """shard id -> what it serves of one partition. A shard may hold several of its
    ranges (the partition came back to it): its latest counts, sealed unless it is
    the last (the owner's)."""
    ranges = topic.ranges_of(partition)
    latest = {}
    for i, shard_range in enumerate(ranges):
        latest[shard_range.shard_id] = PartitionSpec(
            name, partition, dict(topic.config), shard_range.start_offset,
            sealed=i < len(ranges) - 1)
    return latest


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
