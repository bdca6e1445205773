"""ShardActor: the Ray actor that hosts one ShardServer.

Ray creates, places, supervises and restarts it (control plane) and carries
the controller's calls to it; clients never call it through Ray, they reach
its ZeroMQ socket through a router (data plane). The controller calls it only
through ``ShardHandle`` (shard_handle.py); its arguments and results are the
dataclasses of shard_calls.py. Every method runs on the actor's own thread
and hands the work to the server's loop thread.

Restarts. The actor keeps its manifest (shard_manifest.py): the partitions it
serves, with their topic config, and every topic's partition count. Each
change is saved before the call returns. When Ray restarts a dead shard actor,
``__init__`` finds the manifest, reopens (and so recovers) every partition,
and tells the controller its new address; routers pick it up on their next
routing refresh. No one has to replay anything. The socket is bound before the
partitions reopen, and routers may reach it at once (its ipc:// address is the
old one): the server answers group requests unavailable, "recovering", until
every partition is open and the partition counts are set (shard_server.py,
"Restarts").

Without Ray it is a plain class: tests run it on a real ShardServer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from plinth import actor_logs, limits, protocol
from plinth.cluster_keys import ClusterKeys
from plinth.errors import BrokerError, StorageError
from plinth.name_pages import NamesPage
from plinth.process_tuning import tune_data_path_process
from plinth.shards import file_budget
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_calls import (ControllerAnnouncements, GroupStates, HandOverState,
                                       Leadership, PartitionId, PartitionSpec, SealedPartition,
                                       TieredState, TierOptions)
from plinth.shards.shard_manifest import MANIFEST_FILE, ShardManifest
from plinth.shards.shard_server import ShardServer

log = logging.getLogger(__name__)


class ShardActor:
    """Wrapped with ``ray.remote`` by ShardHandle.create. Every method: actor thread."""

    def __init__(self, shard_id: str, data_dir: str, fsync_policy: str = "always",
                 fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT,
                 bind_host: str | None = None,
                 announce_to: ControllerAnnouncements | None = None,
                 cluster_keys: ClusterKeys | None = None, direct_clients: bool = False,
                 own_process: bool = False, tier: TierOptions = TierOptions(),
                 produce_free_bytes_min: int = limits.PRODUCE_FREE_BYTES_MIN_DEFAULT):
        """``bind_host``: where the shard's socket listens; by default its node's
        address in the Ray cluster. ``announce_to``: told the addresses at every start.
        ``cluster_keys``: only cluster members may reach the socket (CurveZMQ); without
        them the socket is plain TCP, on loopback only (tests). ``direct_clients``:
        also a socket for clients' produce and fetch (ShardServer). ``own_process``: the
        process is this actor's alone (a Ray worker), so it is tuned for the data path
        once started (plinth/process_tuning.py); not in a test's process. ``tier``: the
        server's tiered-storage options (ShardServer keeps them).
        ``produce_free_bytes_min``: the server's --produce-free-bytes-min (ShardServer)."""
        # data_dir is <broker data dir>/shards/<id> (ShardOptions): the log goes beside
        # the controller's, in <broker data dir>/logs
        actor_logs.configure(Path(data_dir).parent.parent, shard_id)
        if announce_to is not None:
            self._announce_starting(announce_to, shard_id)
        if bind_host is None:
            import ray.util

            bind_host = ray.util.get_node_ip_address()
        self.shard_id = shard_id
        if own_process:   # before the partitions reopen: each holds a file open
            soft_before, soft_after = file_budget.raise_soft_limit()
            log.info("%s: open files limit %d (was %d): room for %d partitions", shard_id,
                     soft_after, soft_before, file_budget.partitions_max())
        self._data_dir = str(Path(data_dir).resolve())
        self._manifest_path = Path(data_dir) / MANIFEST_FILE
        self._server = ShardServer(shard_id, Path(data_dir), bind_host,
                                   fsync_policy, fsync_interval_ms, cluster_keys,
                                   controller=announce_to, direct_clients=direct_clients,
                                   tier=tier, produce_free_bytes_min=produce_free_bytes_min)
        self._server.start(recovering=True)
        self._manifest = ShardManifest.load(self._manifest_path)
        self._reopen()
        self._server.call(self._server.recovered)
        if own_process:
            self._tune()
        log.info("%s serving %s from %s", shard_id, self._server.address, data_dir)
        if tier.enabled:
            from plinth.shards.tier.remote_store import redacted_url   # imports obstore

            log.info("%s: tiered storage in %s, cache of %d bytes", shard_id,
                     redacted_url(tier.url), tier.cache_bytes)
        if announce_to is not None:
            self._announce(announce_to)

    def _reopen(self) -> None:
        specs = list(self._manifest.partitions.values())
        if specs:
            self._open(specs, restarted=True, from_manifest=True)
            log.info("%s reopened %d partitions from its manifest", self.shard_id, len(specs))
        self._server.call(self._server.set_partition_counts, dict(self._manifest.partition_counts))

    def _tune(self) -> None:
        """Started: Ray runs its workers at niceness 15, which made every record wait
        for the CPU here on a busy machine, and a full GC of the startup heap stopped
        the loop for ~45 ms (plinth/process_tuning.py)."""
        tuning = tune_data_path_process(who=self.shard_id)
        log.info("%s: %d threads from niceness %d to %d; %d objects frozen out of the GC",
                 self.shard_id, tuning.threads_reniced, tuning.niceness_max_before,
                 limits.DATA_PATH_NICENESS, tuning.objects_frozen)

    @staticmethod
    def _announce_starting(announce_to: ControllerAnnouncements, shard_id: str) -> None:
        """Tell the controller this process starts the shard, before it reopens its logs:
        one killed meanwhile (the kernel's OOM killer at each start, in a loop) is named
        in the server's line on its death (plinth/ray_messages.py); don't wait."""
        try:
            announce_to.shard_starting(shard_id, os.getpid())
        except Exception as exc:   # the controller is gone: it learns the pid at the start
            log.info("%s: could not tell the controller its process starts (%s)",
                     shard_id, exc)

    def _announce(self, announce_to: ControllerAnnouncements) -> None:
        """Tell the controller where this (possibly restarted) shard listens; don't wait."""
        try:
            announce_to.shard_started(self.shard_id, self._server.address,
                                      self._server.direct_address, pid=os.getpid())
        except Exception as exc:   # the controller is gone: its successor starts new shards
            log.warning("%s: could not announce %s to the controller (%s); routers keep the "
                        "old address", self.shard_id, self._server.address, exc)

    def address(self) -> str:
        return self._server.address

    def direct_address(self) -> str:
        """Where clients may produce and fetch without the router; "" if nowhere."""
        return self._server.direct_address

    def data_dir(self) -> str:
        """The shard's directory, resolved: a controller adopting a running shard by its
        name checks that it serves the broker's data directory."""
        return self._data_dir

    # --- Partitions ----------------------------------------------------------------

    def open_partitions(self, specs: list[PartitionSpec], existing: bool = False,
                        partition_counts: dict[str, int] | None = None
                        ) -> dict[PartitionId, str]:
        """Open or create each partition (recovering its log), durable in the manifest
        when this returns; returns how each was found (OPENED_*, shard_calls.py), for
        the controller: a replica that needs repair must not be elected or count as in
        sync. ``existing``: the partitions existed before this call (the controller
        reopens those of a shard that restarted without its manifest, or moved to
        another node): one not open here yet is opened as after a restart (it does
        not lead in the leader epoch the record names), and one whose directory is
        created now needs repair. ``partition_counts``: the counts of the topics just
        created, recorded in the same save of the manifest as the partitions (as
        ``change_partition_counts`` would, in a second one)."""
        file_budget.check_room(self.shard_id, len(self._manifest.partitions),
                               sum(spec.id not in self._manifest.partitions for spec in specs))
        new = [spec.id for spec in specs if spec.id not in self._manifest.partitions]
        opened = self._open(specs, restarted=existing)
        self._manifest.serve(specs)
        if partition_counts:
            self._manifest.change_partition_counts(partition_counts, [])
        try:
            self._manifest.save(self._manifest_path)
        except StorageError:   # a full disk: the open did not happen, in memory or on disk
            self._manifest.forget(new)
            if partition_counts:
                self._manifest.change_partition_counts({}, list(partition_counts))
            if not existing:
                self._undo_open(new)
            raise
        if partition_counts:
            self._server.call(self._server.set_partition_counts,
                              dict(self._manifest.partition_counts))
        return opened

    def _open(self, specs: list[PartitionSpec], restarted: bool = False,
              from_manifest: bool = False) -> dict[PartitionId, str]:
        """``restarted``: reopened after a restart, from the manifest or by the
        controller (see ShardServer.open_partition); ``from_manifest``: the specs are
        the manifest's (their topic ids may be the damaged ones, which the controller's
        settle). If one fails, the new partitions
        this call opened before it (not ``restarted``, not in the manifest) are
        closed and deleted again, and its error is raised: a refused create leaves
        no open file and no directory behind."""
        found: dict[PartitionId, str] = {}
        try:
            for spec in specs:
                found[spec.id] = self._server.call(
                    self._server.open_partition, spec.topic, spec.partition,
                    LogConfig.from_topic_config(spec.config), spec.initial_offset, spec.sealed,
                    spec.producers, spec.leadership, _min_insync_replicas(spec.config), restarted,
                    spec.topic_id, from_manifest)
        except BaseException:
            if not restarted:
                self._undo_open([pid for pid in found if pid not in self._manifest.partitions])
            raise
        return found

    def _undo_open(self, partitions: list[PartitionId]) -> None:
        for pid in partitions:
            self._server.call(self._server.delete_partition, pid.topic, pid.partition, True)
        if partitions:
            log.warning("%s: deleted the %d new partitions it had opened before one failed "
                        "(%s ...)", self.shard_id, len(partitions), partitions[0])

    def seal_partitions(self, partitions: list[PartitionId],
                        end_offsets: list[int] | None = None) -> list[SealedPartition]:
        """Stop writes to partitions that move to another shard; returns each one's end
        offset and producers' idempotence snapshot (for its new owner), and whether it
        is complete (ShardServer.seal_range); ``end_offsets``: of replicas that do
        not lead. The complete ones are sealed in the manifest (read-only, no record)."""
        sealed = []
        for i, pid in enumerate(partitions):
            end_offset = None if end_offsets is None else end_offsets[i]
            sealed.append(SealedPartition(pid.topic, pid.partition, *self._server.call(
                self._server.seal_range, pid.topic, pid.partition, end_offset)))
        self._manifest.seal([PartitionId(s.topic, s.partition) for s in sealed if s.complete])
        self._manifest.save(self._manifest_path)
        return sealed

    def alter_partitions(self, partitions: list[PartitionId], config: dict[str, str]) -> int:
        """Apply a topic's changed config to its open partitions; returns how many."""
        log_config = LogConfig.from_topic_config(config)
        min_insync = _min_insync_replicas(config)
        for pid in partitions:
            self._server.call(self._server.set_log_config, pid.topic, pid.partition, log_config)
            if min_insync is not None:
                self._server.call(self._server.set_min_insync, pid.topic, pid.partition,
                                  min_insync)
        self._manifest.set_config(partitions, config)
        self._manifest.save(self._manifest_path)
        return len(partitions)

    def hand_over(self, partitions: list[PartitionId], to_shards: list[str]) -> list[HandOverState]:
        """Hand each partition, led here, over to its preferred leader in ``to_shards``
        (ShardServer.hand_over): each one's state, its error in it."""
        states = []
        for pid, to_shard in zip(partitions, to_shards, strict=True):
            try:
                complete, end_offset = self._server.call(self._server.hand_over, pid.topic,
                                                         pid.partition, to_shard)
                states.append(HandOverState(pid.topic, pid.partition, complete, end_offset))
            except BrokerError as exc:
                states.append(HandOverState(pid.topic, pid.partition, False, -1, exc))
        return states

    def end_hand_over(self, partitions: list[PartitionId]) -> None:
        """The controller gave up handing these partitions over: they take writes again."""
        for pid in partitions:
            self._server.call(self._server.end_hand_over, pid.topic, pid.partition)

    def delete_partitions(self, partitions: list[PartitionId], keep_remote: bool = False) -> int:
        """Forget the partitions, then delete their logs; returns how many were open.
        ``keep_remote``: only this shard's copies go, not the partitions' remote logs."""
        self._manifest.forget(partitions)
        self._manifest.save(self._manifest_path)
        return sum(self._server.call(self._server.delete_partition, pid.topic, pid.partition,
                                     keep_remote)
                   for pid in partitions)

    def delete_stale_partitions(self, partitions: list[PartitionId], topic_id: str,
                                keep_remote: bool = False) -> list[PartitionId]:
        """``delete_partitions`` of those of ``partitions`` the manifest holds as topic
        ``topic_id``'s; returns them (ShardHandle.delete_stale_partitions)."""
        stale = [pid for pid in partitions
                 if pid in self._manifest.partitions
                 and self._manifest.partitions[pid].topic_id == topic_id]
        if stale:
            self.delete_partitions(stale, keep_remote)
        return stale

    def partition_infos(self, partitions: list[PartitionId],
                        timestamp_ms: int = protocol.NO_TIME_LOOKUP) -> list[protocol.PartitionInfo]:
        """Each partition's offsets (ShardServer.partition_info), with the first record
        stamped at or after ``timestamp_ms`` if it is not NO_TIME_LOOKUP."""
        # The loop answers a future: a record in object storage is read off the loop.
        return [self._server.call(self._server.partition_info_at_time, pid.topic, pid.partition,
                                  timestamp_ms).result(timeout=limits.CONTROL_CALL_TIMEOUT_S)
                for pid in partitions]

    def tiered_sealed(self, partitions: list[PartitionId]) -> list[TieredState]:
        """Whether each partition's copy sealed here is wholly in object storage
        (ShardServer.tiered_sealed), answered in one turn of the loop."""
        return self._server.call(self._server.tiered_sealed, partitions)

    def covers_remote(self, partition: PartitionId, intervals: list[tuple[int, int]],
                      resync: bool) -> list[bool]:
        """Whether the partition's remote view holds each [start, end) of ``intervals``;
        ``resync``: list the store again if not (ShardServer.covers_remote)."""
        return self._server.call(self._server.covers_remote, partition.topic,
                                 partition.partition, intervals, resync)

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """Every topic's partition count, for the groups this shard coordinates."""
        self._manifest.set_partition_counts(counts)
        self._manifest.save(self._manifest_path)
        self._server.call(self._server.set_partition_counts, counts)

    def change_partition_counts(self, changed: dict[str, int], deleted: list[str]) -> None:
        """Some topics' counts (``changed``) and the topics gone (``deleted``); the rest
        stay. Durable in the manifest when this returns, as ``set_partition_counts``."""
        self._manifest.change_partition_counts(changed, deleted)
        self._manifest.save(self._manifest_path)
        self._server.call(self._server.set_partition_counts,
                          dict(self._manifest.partition_counts))

    # --- Replication ------------------------------------------------------------------

    def set_peers(self, addresses: dict[str, str], controller_epoch: int) -> None:
        """Every running shard's address, pushed by the controller."""
        self._server.call(self._server.set_peers, addresses, controller_epoch)

    def set_leadership(self, changes: list[tuple[PartitionId, Leadership]]) -> None:
        """Lead, follow, or a changed in-sync set, per partition (durable in the manifest
        when this returns)."""
        self._server.call(self._server.set_leadership, changes)
        self._manifest.set_leadership(changes)
        self._manifest.save(self._manifest_path)

    # --- Consumer groups -------------------------------------------------------------

    def group_names(self) -> list[str]:
        return self._server.call(self._server.group_names)

    def group_listings(self) -> list[protocol.GroupListing]:
        """The groups this shard coordinates, each with its state (listGroups)."""
        return self._server.call(self._server.group_listings)

    def group_names_page(self, prefix: str, after: str, limit: int) -> NamesPage:
        """A page of the groups this shard coordinates (plinth/name_pages.py)."""
        return self._server.call(self._server.group_names_page, prefix, after, limit)

    def partition_stats(self, partitions: list[PartitionId]) -> dict[tuple[str, int], tuple]:
        """Size and rates of the partitions held here (ShardServer.partition_stats), in
        one turn of the loop."""
        return self._server.call(self._server.partition_stats,
                                 [(pid.topic, pid.partition) for pid in partitions])

    def hand_over_groups(self, names: list[str]) -> GroupStates:
        """Stop coordinating groups that now hash to another shard; returns their state."""
        return self._server.call(self._server.hand_over_groups, names)

    def adopt_groups(self, states: GroupStates) -> None:
        """Coordinate groups handed over by another shard (durable when this returns)."""
        self._server.call(self._server.adopt_groups, states)

    # --- Status and lifecycle -----------------------------------------------------------

    def stats(self) -> dict:
        """The server's stats snapshot, and ``pid``: this actor's process (what ``plinth
        status`` shows, so that an operator knows which ray::ShardActor is which)."""
        return {**self._server.call(self._server.stats_snapshot), "pid": os.getpid()}

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        """Flush, fsync and close every log; the actor may then be killed."""
        self._server.stop(grace_period_s)


def _min_insync_replicas(config: dict[str, str]) -> int | None:
    """The topic's min.insync.replicas, or None if it does not set it (the shard then
    uses the default for the partition's replica count). The controller checked it."""
    value = config.get("min.insync.replicas")   # Kafka's topic config key
    return None if value is None else int(value)
