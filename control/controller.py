"""The controller: topics, their configuration and the placement of partitions on shards.

Runs as one named Ray actor per broker (control plane). Its methods run one
at a time on the actor's thread, so metadata changes are serialized without
locks. It creates the shard actors, tells each which partitions it owns, and
persists the metadata to ``<data_dir>/metadata.json``:

    {"version": 1,
     "shards": ["shard-0", "shard-1"],          take writes and coordinate groups
     "draining": ["shard-2"],                   removed, still serving older ranges
     "shard_nodes": {"shard-0": "plinth-node:a", ...},
     "topics": {"orders": {"partitions": 3,
                           "config": {"segment.bytes": "268435456", ...},
                           "placement": ["shard-1", "shard-0", "shard-1"],
                           "ranges": {"1": [[0, "shard-2"], [5210, "shard-0"]]}}}}

``ranges`` lists, for a partition whose writes moved, each (start offset,
shard) of its history, oldest first; the last is the current owner. While
consumer groups move to the shards their names now hash to, the previous
shard list is kept as ``groups_moving_from`` (a restart finishes the move).

The file is replaced atomically (write, fsync, rename, fsync the directory),
so a crash leaves either the old or the new metadata, never a mix.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import ray

from plinth import limits, protocol, topics
from plinth.control import placement
from plinth.control.routing_table import RoutingTable
from plinth.durable_files import write_json_atomically
from plinth.errors import (InvalidConfigError, TooManyTopicsError, TopicExistsError, UnavailableError,
                           UnknownTopicError)
from plinth.shards.actor import ShardActor

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
METADATA_VERSION = 1
NODE_RESOURCE_PREFIX = "plinth-node:"


class Controller:
    """Wrapped with ``ray.remote`` by the server. Every method: controller actor thread."""

    def __init__(self, data_dir: str, shard_count: int | None, fsync_policy: str = "always",
                 fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT,
                 name: str | None = None):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._metadata = self._load()
        self._metadata["shards"] = self._shard_ids(shard_count)
        self._name = name   # this actor's Ray name, so restarted shards can find it
        self._fsync_policy = fsync_policy
        self._fsync_interval_ms = fsync_interval_ms
        self._shards: dict[str, ray.actor.ActorHandle] = {}
        self._addresses: dict[str, str] = {}
        self._routers: dict[str, str] = {}   # listen address -> node address

    def _load(self) -> dict:
        path = self.data_dir / METADATA_FILE
        if not path.exists():
            return {"version": METADATA_VERSION, "shards": [], "topics": {}}
        metadata = json.loads(path.read_text())
        if metadata.get("version") != METADATA_VERSION:
            raise InvalidConfigError(f"{path}: metadata version {metadata.get('version')} "
                                     f"is not {METADATA_VERSION}")
        return metadata

    def _shard_ids(self, shard_count: int | None) -> list[str]:
        stored = self._metadata["shards"]
        if shard_count is None:
            shard_count = len(stored) or os.cpu_count() or 1
        if stored and shard_count != len(stored):
            # plinth shards add/remove changed the count since the command line was
            # written: a restart must not undo them (or refuse to start).
            log.warning("%s has %d shards (changed by plinth shards add or remove); "
                        "--shards %d applies to a new data directory only",
                        self.data_dir / METADATA_FILE, len(stored), shard_count)
            return list(stored)
        if not 1 <= shard_count <= limits.SHARDS_MAX:
            raise InvalidConfigError(f"--shards {shard_count} is outside 1..{limits.SHARDS_MAX}")
        return [f"shard-{i}" for i in range(shard_count)]

    def _save(self) -> None:
        write_json_atomically(self.data_dir / METADATA_FILE, self._metadata)

    # --- Lifecycle ---------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Create every shard actor and open the partitions it owns; returns shard addresses.

        A shard that does not come up in time (its node is down) is left out: its
        partitions are unavailable until it starts and announces itself.
        """
        self._start_shards(self._metadata["shards"] + self._metadata.get("draining", []))
        self._call_each({s: self._shards[s].open_partitions.remote(specs)
                         for s, specs in self._specs_by_shard().items()})
        self._save()
        self._push_partition_counts()
        try:   # a change of shards a crash interrupted
            self._finish_group_moves()
            self._move_partitions()
        except Exception as exc:   # a shard is down: the next start or shards command retries
            log.error("could not finish a change of shards: %s", exc)
        return dict(self._addresses)

    def _call_each(self, refs: dict, timeout_s: float = limits.SHARD_START_WAIT_S) -> dict:
        """shard id -> result of its call, or None if it failed or did not answer in time."""
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        ready = set(ready)
        results = {}
        for shard_id, ref in refs.items():
            try:
                results[shard_id] = ray.get(ref) if ref in ready else None
            except ray.exceptions.RayError as exc:
                log.warning("%s failed: %s", shard_id, exc)
                results[shard_id] = None
            if results[shard_id] is None and ref not in ready:
                log.warning("%s did not answer within %.0f s; its partitions are unavailable",
                            shard_id, timeout_s)
        return results

    def _push_partition_counts(self) -> None:
        """Tell every shard each topic's partition count (group coordinators need them)."""
        counts = {name: t["partitions"] for name, t in self._metadata["topics"].items()}
        self._call_each({s: shard.set_partition_counts.remote(counts)
                         for s, shard in self._shards.items()})

    def _start_shards(self, shard_ids: list[str]) -> None:
        """Create shard actors, each pinned to its node (its data is on that node's disk).

        A shard new to the broker goes to the alive node with the fewest shards, and
        that node's pin resource (``plinth-node:<name>``, else Ray's ``node:<address>``)
        is kept in the metadata and required by the actor: if the node dies, Ray
        restarts the shard only when that node returns, and until then its
        partitions are unavailable.
        """
        remote_shard = ray.remote(ShardActor)
        nodes = self._metadata.setdefault("shard_nodes", {})
        for shard_id in shard_ids:
            if shard_id in self._shards:
                continue   # a draining shard that takes writes again
            pin = nodes.setdefault(shard_id, self._least_loaded_node())
            self._shards[shard_id] = remote_shard.options(
                num_cpus=0, max_restarts=limits.SHARD_RESTARTS_MAX, resources={pin: 0.001},
            ).remote(shard_id, str(self.data_dir / "shards" / shard_id),
                     self._fsync_policy, self._fsync_interval_ms, None, self._name)
        addresses = self._call_each({s: self._shards[s].address.remote() for s in shard_ids})
        self._addresses.update({s: a for s, a in addresses.items() if a is not None})

    def _least_loaded_node(self) -> str:
        """The pin resource of the alive node with the fewest shards."""
        alive = sorted(_pin_resource(n) for n in ray.nodes() if n["Alive"])
        assert alive, "no alive Ray node to place a shard on"
        load = {pin: 0 for pin in alive}
        for pin in self._metadata.get("shard_nodes", {}).values():
            if pin in load:
                load[pin] += 1
        return min(alive, key=lambda pin: (load[pin], pin))

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        ray.get([shard.shutdown.remote(grace_period_s) for shard in self._shards.values()],
                timeout=grace_period_s + 5)

    def _specs_by_shard(self, names: list[str] | None = None) -> dict[str, list]:
        """shard id -> [(topic, partition, config, initial offset, sealed)] it must open:
        the partitions it owns, and the older ranges of partitions that moved away."""
        out: dict[str, list] = {}
        for name, topic in self._metadata["topics"].items():
            if names is None or name in names:
                for index in range(topic["partitions"]):
                    ranges = _ranges_of(topic, index)
                    latest = {}   # a shard may hold several ranges: its latest counts
                    for i, (start, shard_id) in enumerate(ranges):
                        latest[shard_id] = (name, index, topic["config"], start, i < len(ranges) - 1)
                    for shard_id, spec in latest.items():
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
        """Each shard's ShardStats snapshot; None for a shard that does not answer."""
        ids = list(self._shards)
        refs = [self._shards[s].stats.remote() for s in ids]
        out = {}
        for shard_id, ref in zip(ids, refs):
            try:
                out[shard_id] = ray.get(ref, timeout=limits.STATUS_CALL_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError):
                out[shard_id] = None
        return out

    def status(self) -> protocol.StatusInfo:
        """Nodes, shards (with partitions, bytes and rates) and routers. Retires removed
        shards whose last range retention has deleted."""
        self._retire_drained()
        nodes = [(n["NodeID"], n["NodeManagerAddress"], bool(n["Alive"])) for n in ray.nodes()]
        owned: dict[str, int] = {}
        for topic in self._metadata["topics"].values():
            for shard_id in topic["placement"]:
                owned[shard_id] = owned.get(shard_id, 0) + 1
        shards = []
        for shard_id, stats in self.shard_stats().items():
            size = sum(log["size_bytes"] for log in stats["logs"].values()) if stats else 0
            shards.append(protocol.ShardStatus(
                shard_id, self._addresses.get(shard_id, ""), stats is not None,
                owned.get(shard_id, 0), size, stats["records_per_s"] if stats else 0.0,
                stats["bytes_per_s"] if stats else 0.0,
                shard_id in self._metadata.get("draining", [])))
        return protocol.StatusInfo(nodes, shards, sorted(self._routers.items()))

    def shard_pids(self) -> dict[str, int]:
        """Process id of every shard actor (operators and fault-injection tests)."""
        ids = list(self._shards)
        return dict(zip(ids, ray.get([self._shards[s].pid.remote() for s in ids],
                                     timeout=limits.CONTROL_CALL_TIMEOUT_S)))

    def routing(self) -> RoutingTable:
        """What a router needs: shard addresses and each topic's placement."""
        topics_meta = self._metadata["topics"].items()
        return RoutingTable(
            shard_addresses=dict(self._addresses),
            shard_ids=tuple(self._metadata["shards"]),
            owners={name: tuple(t["placement"]) for name, t in topics_meta},
            ranges={name: {int(p): tuple((start, shard) for start, shard in ranges)
                           for p, ranges in t["ranges"].items()}
                    for name, t in topics_meta if t.get("ranges")})

    def list_groups(self) -> list[str]:
        """Every consumer group known to any shard (members or committed offsets)."""
        names = ray.get([shard.group_names.remote() for shard in self._shards.values()],
                        timeout=limits.CONTROL_CALL_TIMEOUT_S)
        return sorted({name for per_shard in names for name in per_shard})

    def list_topics(self) -> list[protocol.TopicInfo]:
        return [self._topic_info(name) for name in sorted(self._metadata["topics"])]

    def describe_topic(self, name: str) -> protocol.TopicInfo:
        info = self._topic_info(name)
        specs = self._specs_by_shard([name])
        shard_ids = list(specs)
        results = ray.get([self._shards[s].partition_infos.remote([sp[:2] for sp in specs[s]])
                           for s in shard_ids], timeout=limits.CONTROL_CALL_TIMEOUT_S)
        owners = self._metadata["topics"][name]["placement"]
        info.partition_info = _merge_ranges([p for infos in results for p in infos], owners)
        return info

    def partition_offsets(self, topic: str, partition: int) -> protocol.PartitionInfo:
        """Start and end offsets of a partition whose history spans several shards."""
        meta = self._metadata["topics"].get(topic)
        if meta is None:
            raise UnknownTopicError(f"unknown topic {topic!r}")
        shard_ids = {shard_id for _, shard_id in _ranges_of(meta, partition)}
        infos = ray.get([self._shards[s].partition_infos.remote([(topic, partition)])
                         for s in shard_ids], timeout=limits.CONTROL_CALL_TIMEOUT_S)
        return _merge_ranges([i for per_shard in infos for i in per_shard], meta["placement"])[0]

    def _topic_info(self, name: str) -> protocol.TopicInfo:
        topic = self._metadata["topics"].get(name)
        if topic is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        return protocol.TopicInfo(name=name, partitions=topic["partitions"], config=dict(topic["config"]))

    # --- Changes -----------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, config: dict[str, str]) -> protocol.TopicInfo:
        topics.validate_topic_name(name)
        topics.validate_partition_count(name, partitions)
        config = topics.normalize_topic_config(name, config)
        if name in self._metadata["topics"]:
            raise TopicExistsError(f"topic {name!r} already exists")
        if len(self._metadata["topics"]) >= limits.TOPICS_MAX:
            raise TooManyTopicsError(f"cannot create {name!r}: the broker already has "
                                     f"{limits.TOPICS_MAX} topics, the limit")
        owners = placement.place_topic(name, partitions, self._metadata["shards"])
        self._metadata["topics"][name] = {"partitions": partitions, "config": config,
                                          "placement": owners}
        try:
            ray.get([self._shards[s].open_partitions.remote(specs)
                     for s, specs in self._specs_by_shard([name]).items()],
                    timeout=limits.CONTROL_CALL_TIMEOUT_S)
        except Exception:
            del self._metadata["topics"][name]
            raise
        self._save()
        self._push_partition_counts()
        log.info("created topic %s with %d partitions", name, partitions)
        return self._topic_info(name)

    def alter_topic(self, name: str, changes: dict[str, str]) -> protocol.TopicInfo:
        """Change config entries of a topic; shards apply them at once (e.g. retention)."""
        topic = self._metadata["topics"].get(name)
        if topic is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        config = topics.normalize_topic_config(name, {**topic["config"], **changes})
        specs = self._specs_by_shard([name])
        ray.get([self._shards[s].alter_partitions.remote(
                    [(sp[0], sp[1], config) for sp in shard_specs])
                 for s, shard_specs in specs.items()], timeout=limits.CONTROL_CALL_TIMEOUT_S)
        topic["config"] = config
        self._save()
        log.info("altered topic %s: %s", name, changes)
        return self._topic_info(name)

    def add_shards(self, count: int) -> list[tuple[str, int, str, str, int]]:
        """Add ``count`` shards; partitions that rendezvous hashing now gives to them move
        without copying data: the old owner seals its log (keeps serving it for reads)
        and the new owner continues at the old end offset. Returns the moves as
        (topic, partition, from shard, to shard, offset)."""
        shard_ids = self._metadata["shards"]
        if not 1 <= count <= limits.SHARDS_MAX - len(shard_ids):
            raise InvalidConfigError(f"cannot add {count} shards to {len(shard_ids)}: "
                                     f"at most {limits.SHARDS_MAX} shards")
        new_ids = [f"shard-{len(shard_ids) + i}" for i in range(count)]
        self._start_shards(new_ids)
        missing = [s for s in new_ids if s not in self._addresses]
        if missing:
            raise UnavailableError(f"cannot add shards: {', '.join(missing)} did not start "
                                   f"within {limits.SHARD_START_WAIT_S} s")
        draining = [s for s in self._metadata.get("draining", []) if s not in new_ids]
        return self._change_shards(shard_ids + new_ids, draining, f"added {count} shards")

    def remove_shards(self, count: int) -> list[tuple[str, int, str, str, int]]:
        """Remove the ``count`` newest shards: the partitions they own move their writes
        to the others (no data copied), the groups they coordinate move with their
        committed offsets. A removed shard keeps serving its older ranges until none
        is left (topics deleted, or retention), and then stops. Returns the moves."""
        shard_ids = self._metadata["shards"]
        if not 1 <= count < len(shard_ids):
            raise InvalidConfigError(f"cannot remove {count} of {len(shard_ids)} shards: "
                                     f"at least one must stay")
        draining = self._metadata.get("draining", []) + shard_ids[-count:]
        moves = self._change_shards(shard_ids[:-count], draining, f"removed {count} shards")
        self._retire_drained()
        return moves

    def _change_shards(self, new_ids: list[str], draining: list[str],
                       what: str) -> list[tuple[str, int, str, str, int]]:
        """Groups first, then partitions, each durable before the routers see it (they
        read the metadata only between controller calls). ``groups_moving_from``
        marks a group move in progress, so that a restart finishes it; a move that
        fails now is undone, so that no group is left without a coordinator."""
        self._finish_group_moves()   # one left by a crash
        old_ids, old_draining = self._metadata["shards"], self._metadata.get("draining", [])
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

    def _move_partitions(self) -> list[tuple[str, int, str, str, int]]:
        """Move each partition whose owner is not the one rendezvous hashing gives it
        among the current shards (all of them after a change; any a crash left)."""
        moves = []
        for name, topic in self._metadata["topics"].items():
            for index in range(topic["partitions"]):
                move = self._move_if_needed(name, topic, index)
                if move is not None:
                    moves.append(move)
        return moves

    def _set_shards(self, shard_ids: list[str], draining: list[str],
                    groups_moving_from: list[str]) -> None:
        self._metadata.update(shards=shard_ids, draining=draining,
                              groups_moving_from=groups_moving_from)
        self._save()

    def _finish_group_moves(self) -> None:
        """Move the groups whose name hashes elsewhere since the last change of shards
        (again, after a crash: groups already moved are not listed by their old shard)."""
        old_ids = self._metadata.get("groups_moving_from")
        if old_ids is None:
            return
        self._move_groups([s for s in old_ids if s in self._shards], self._metadata["shards"])
        del self._metadata["groups_moving_from"]
        self._save()

    def _move_groups(self, old_ids: list[str], new_ids: list[str]) -> None:
        """Hand each group whose name now hashes to another shard over to it."""
        names = self._call_each({s: self._shards[s].group_names.remote() for s in old_ids},
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
        states = ray.get(self._shards[source].hand_over_groups.remote(group_names),
                         timeout=limits.CONTROL_CALL_TIMEOUT_S)
        try:
            ray.get(self._shards[target].adopt_groups.remote(states),
                    timeout=limits.CONTROL_CALL_TIMEOUT_S)
        except Exception:
            # Give them back rather than leave them coordinated nowhere.
            ray.get(self._shards[source].adopt_groups.remote(states),
                    timeout=limits.CONTROL_CALL_TIMEOUT_S)
            raise
        log.info("moved %d consumer groups from %s to %s", len(states), source, target)

    def _move_if_needed(self, name: str, topic: dict, index: int):
        old = topic["placement"][index]
        new = placement.shard_for(name, index, self._metadata["shards"])
        if new == old:
            return None
        try:
            [(end_offset, producers)] = ray.get(
                self._shards[old].seal_partitions.remote([(name, index)]),
                timeout=limits.CONTROL_CALL_TIMEOUT_S)
            ray.get(self._shards[new].open_partitions.remote(
                [(name, index, topic["config"], end_offset, False, producers)]),
                timeout=limits.CONTROL_CALL_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            # Its end offset is known only to its owner: without it, it cannot move.
            raise UnavailableError(
                f"cannot move {name}-{index} from {old} to {new}: a shard does not answer "
                f"({type(exc).__name__}); the moves so far are kept, run the command "
                f"again once it is back") from None
        topic.setdefault("ranges", {})[str(index)] = _ranges_of(topic, index) + [[end_offset, new]]
        topic["placement"][index] = new
        self._save()   # after every move: the smallest window for a crash to leave behind
        return (name, index, old, new, end_offset)

    def _prune_ranges(self) -> None:
        """Forget the older ranges that retention emptied, on shards that no longer own
        their partition, and delete those shards' empty logs of it."""
        for name, topic in self._metadata["topics"].items():
            for key, ranges in topic.get("ranges", {}).items():
                owner = ranges[-1][1]
                for shard_id in {s for _, s in ranges[:-1] if s != owner}:
                    if self._holds_nothing_of(shard_id, name, int(key)):
                        ranges[:] = [r for r in ranges if r[1] != shard_id]
                        self._shards[shard_id].delete_partitions.remote([(name, int(key))])
                        self._save()
                        log.info("%s-%s: retention emptied its range on %s; forgot it",
                                 name, key, shard_id)

    def _holds_nothing_of(self, shard_id: str, topic: str, index: int) -> bool:
        try:
            [info] = ray.get(self._shards[shard_id].partition_infos.remote([(topic, index)]),
                             timeout=limits.STATUS_CALL_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError):
            return False   # down: ask again next time
        return info.size_bytes == 0

    def _retire_drained(self) -> None:
        """Stop removed shards that no longer hold any range of any partition."""
        self._prune_ranges()
        holding = set(self._specs_by_shard())
        for shard_id in [s for s in self._metadata.get("draining", []) if s not in holding]:
            shard = self._shards.pop(shard_id, None)
            if shard is not None:
                self._call_each({shard_id: shard.shutdown.remote()}, limits.CONTROL_CALL_TIMEOUT_S)
                ray.kill(shard)
            self._metadata["draining"].remove(shard_id)
            self._metadata.get("shard_nodes", {}).pop(shard_id, None)
            self._addresses.pop(shard_id, None)
            self._save()
            log.info("retired %s: it holds no partition any more (its directory "
                     "%s can be deleted)", shard_id, self.data_dir / "shards" / shard_id)

    def delete_topic(self, name: str) -> None:
        self._topic_info(name)  # raises UnknownTopicError
        specs = self._specs_by_shard([name])
        # Forget the topic first: a crash mid-delete leaves orphan files, not a
        # topic whose partitions are half gone.
        del self._metadata["topics"][name]
        self._save()
        ray.get([self._shards[s].delete_partitions.remote([spec[:2] for spec in sp])
                 for s, sp in specs.items()], timeout=limits.CONTROL_CALL_TIMEOUT_S)
        self._push_partition_counts()
        self._retire_drained()
        log.info("deleted topic %s", name)


def _pin_resource(node: dict) -> str:
    """What pins a shard to a node: its ``plinth-node:<name>`` resource if it has one
    (``ray start --resources '{"plinth-node:b": 1}'``: a name that survives a change of
    address), else Ray's ``node:<address>``."""
    named = sorted(r for r in node["Resources"] if r.startswith(NODE_RESOURCE_PREFIX))
    return named[0] if named else f"node:{node['NodeManagerAddress']}"


def _ranges_of(topic: dict, index: int) -> list[list]:
    """[[start offset, shard id], ...] of one partition, oldest first; the last owns writes."""
    return topic.get("ranges", {}).get(str(index)) or [[0, topic["placement"][index]]]


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
