"""ShardHandle: the typed front of one shard actor (actor.py), for the controller.

Ray's pattern (``ray.util.queue.Queue`` in front of its ``_QueueActor``): the
public class wraps the actor, checks every argument before the remote call,
and speaks in the dataclasses of shard_calls.py (re-exported here, so the
control plane imports nothing else of shards/). This is the only module of
shards/ that the control plane may import.

The controller calls many shards at once, so a call does not wait: each
method starts it and returns a ``PendingCall``. Its result is read with a
bound (``PendingCall.result(timeout_s)``), or many are waited for together,
with one bound for all, by ``wait_all`` (every outcome) or ``wait_all_or_raise``
(every result, or the first error). A call fails one way, with a BrokerError:
one the shard raised is re-raised as it is; no answer in time is
RequestTimedOutError; a dead actor is UnavailableError (ShardRestartingError
when Ray says it is only unavailable for now: restarting); anything else is
InternalError. Each message names the shard and the call.

Used by the controller actor's thread (any thread may, handles are shareable).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from plinth import limits, protocol
from plinth.cluster_keys import ClusterKeys
from plinth.errors import (BrokerError, InternalError, RequestTimedOutError, ShardRestartingError,
                           UnavailableError)
from plinth.name_pages import NamesPage, check_page_args
from plinth.actor_failures import creation_failure
from plinth.shards.actor import ShardActor
from plinth.shards.shard_calls import (OPENED_CREATED_EMPTY, OPENED_LOST, OPENED_NEEDS_REPAIR,
                                       OPENED_RECOVERED_WHOLE, ControllerAnnouncements,
                                       GroupStates, HandOverState, Leadership, PartitionId,
                                       PartitionSpec, SealedPartition, TieredState, TierOptions)
from plinth.shards.partition_metadata import PARTITION_METADATA_FILE, load_topic_id
from plinth.shards.shard_manifest import MANIFEST_FILE, ShardManifest

__all__ = ["MANIFEST_FILE", "PARTITION_METADATA_FILE", "load_topic_id", "OPENED_CREATED_EMPTY", "OPENED_LOST", "OPENED_NEEDS_REPAIR", "OPENED_RECOVERED_WHOLE",
           "ControllerAnnouncements", "GroupStates", "HandOverState", "Leadership",
           "PartitionId", "PartitionSpec", "PendingCall", "SealedPartition", "ShardHandle",
           "ShardManifest", "ShardOptions", "TierOptions", "TieredState", "wait_all",
           "wait_all_or_raise"]

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")

# A shard actor's name in its broker's Ray namespace is this and its shard id. It is
# detached (Ray's ownership would end it with the controller that created it), so
# a restarted controller finds it by this name and adopts it.
SHARD_NAME_PREFIX = "plinth-shard:"


def shard_actor_name(shard_id: str) -> str:
    return f"{SHARD_NAME_PREFIX}{shard_id}"


@dataclass(frozen=True)
class ShardOptions:
    """How to create one shard actor."""

    shard_id: str
    data_dir: str                 # the shard's own directory: <broker data dir>/shards/<id>
    fsync_policy: str
    fsync_interval_ms: int
    node_resource: str            # pins the actor to its node (its data is on that disk)
    # Who may reach the shard's socket; None: anyone on loopback (tests only).
    cluster_keys: ClusterKeys | None = None
    # Bind a direct socket for clients' produce and fetch (ipc:// beside the hop
    # socket with the ipc hop, else plain TCP on 127.0.0.1; plinth/server.py decides
    # when that is allowed).
    direct_clients: bool = False
    # The server's --tier-url and --tier-cache-bytes (no URL: no tiered storage).
    tier: TierOptions = TierOptions()
    # The server's --produce-free-bytes-min (shards/disk_reserve.py; 0: no reserve).
    produce_free_bytes_min: int = limits.PRODUCE_FREE_BYTES_MIN_DEFAULT
    # How long ``create`` waits for a name a killed actor still holds: 0 for a new actor
    # the controller's actor thread starts for a shard it found dead for good (its name
    # was free a moment before), as that thread must not wait (control/shard_reviver.py).
    name_wait_s: float = limits.SHARD_NAME_WAIT_S


class PendingCall(Generic[T]):
    """A call started on a shard actor; read its result within a bound.

    Wraps the ``concurrent.futures.Future`` of the call (Ray's ``ObjectRef.future()``,
    or one completed at once by a handle that reaches its actor in process)."""

    def __init__(self, shard_id: str, method: str, future: concurrent.futures.Future):
        self.shard_id = shard_id
        self.method = method
        self._future = future

    def done(self) -> bool:
        """Whether the call has its outcome now (answered or failed): ``result(0)`` reads
        it without waiting. Any thread."""
        return self._future.done()

    def result(self, timeout_s: float = limits.CONTROL_CALL_TIMEOUT_S) -> T:
        """The call's result; raises the BrokerError it failed with (see the module)."""
        concurrent.futures.wait([self._future], timeout=timeout_s)
        return self._result_now(timeout_s)

    def _result_now(self, waited_s: float) -> T:
        if not self._future.done():
            raise RequestTimedOutError(
                f"{self.shard_id} did not answer {self.method} within {waited_s} s")
        error = self._future.exception()
        if error is not None:
            raise self._broker_error(error) from None
        return self._future.result()

    def _broker_error(self, error: BaseException) -> BrokerError:
        import ray.exceptions

        if isinstance(error, ray.exceptions.RayTaskError):
            error = getattr(error, "cause", None) or error
        if isinstance(error, BrokerError):
            return error
        if isinstance(error, ray.exceptions.ActorUnavailableError):   # before its base class
            return ShardRestartingError(f"{self.shard_id} is restarting or unreachable for "
                                        f"now; {self.method} may or may not have run "
                                        f"({type(error).__name__})")
        failure = creation_failure(error)
        if failure is not None:
            return UnavailableError(f"{self.shard_id} could not start, and is not restarted: "
                                    f"{failure}; {self.method} did not run")
        if isinstance(error, ray.exceptions.RayActorError):
            return UnavailableError(f"{self.shard_id} is down or restarting; {self.method} "
                                    f"did not run ({type(error).__name__})")
        return InternalError(f"{self.shard_id} failed in {self.method}: "
                             f"{type(error).__name__}: {error}")


def wait_all(calls: Mapping[K, PendingCall[T]], timeout_s: float) -> dict[K, T | BrokerError]:
    """Wait for every call, at most ``timeout_s`` for all of them together; each key
    gets its call's result, or the BrokerError it failed with (RequestTimedOutError
    if it had not answered)."""
    concurrent.futures.wait([call._future for call in calls.values()], timeout=timeout_s)
    outcomes: dict[K, T | BrokerError] = {}
    for key, call in calls.items():
        try:
            outcomes[key] = call._result_now(timeout_s)
        except BrokerError as exc:
            outcomes[key] = exc
    return outcomes


def wait_all_or_raise(calls: Mapping[K, PendingCall[T]], timeout_s: float) -> dict[K, T]:
    """Like ``wait_all``, but raises the first error (in the order of ``calls``)."""
    outcomes = wait_all(calls, timeout_s)
    for outcome in outcomes.values():
        if isinstance(outcome, BrokerError):
            raise outcome
    return outcomes


class ShardHandle:
    """One shard actor, seen from the controller. Methods start a call and return
    a PendingCall; arguments are checked first (ValueError: a programmer error).

    ``_start``, ``kill`` and ``death`` are the only calls that touch Ray (with the
    class's ``create``, ``find`` and ``kill_all``): a handle that reaches its actor
    another way (the controller's unit tests run real shard actors in process)
    overrides those."""

    def __init__(self, shard_id: str, actor):
        self.shard_id = shard_id
        self._actor = actor

    @classmethod
    def create(cls, options: ShardOptions,
               announce_to: ControllerAnnouncements | None) -> "ShardHandle":
        """Start the named, detached shard actor (``shard_actor_name``) on the node
        ``options.node_resource`` names, in the caller's Ray namespace; Ray restarts it
        (up to SHARD_RESTARTS_MAX times) if it dies. It outlives the controller that
        creates it: whoever stops the broker ends it (``kill``, ``kill_all``).
        ``announce_to`` is told its address at every start. A name a killed actor
        still holds is retried for ``options.name_wait_s`` (SHARD_NAME_WAIT_S: Ray
        releases it shortly after); ValueError if it stays taken. Does not wait for
        the actor's constructor (Ray creates it asynchronously)."""
        import ray

        deadline = time.monotonic() + options.name_wait_s
        while True:
            try:
                actor = ray.remote(ShardActor).options(
                    name=shard_actor_name(options.shard_id), lifetime="detached",
                    num_cpus=0, max_restarts=limits.SHARD_RESTARTS_MAX,
                    resources={options.node_resource: limits.SHARD_NODE_RESOURCE_SHARE},
                ).remote(options.shard_id, options.data_dir, options.fsync_policy,
                         options.fsync_interval_ms, None, announce_to, options.cluster_keys,
                         options.direct_clients, own_process=True, tier=options.tier,
                         produce_free_bytes_min=options.produce_free_bytes_min)
                return cls(options.shard_id, actor)
            except ValueError as exc:
                if "already taken" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(limits.SHARD_NAME_RETRY_INTERVAL_S)

    @classmethod
    def find(cls, shard_id: str) -> "ShardHandle | None":
        """The shard actor named for ``shard_id`` in the caller's Ray namespace, alive or
        being restarted by Ray; None if there is none."""
        import ray

        try:
            return cls(shard_id, ray.get_actor(shard_actor_name(shard_id)))
        except ValueError:
            return None

    @staticmethod
    def kill_all(namespace: str | None = None) -> list[str]:
        """End for good every shard actor in ``namespace`` (default: the caller's), for
        whoever stops a broker (its controller may have ended them already, or be
        gone); returns the names of those it ended."""
        import ray

        namespace = namespace or ray.get_runtime_context().namespace
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == namespace and a["name"].startswith(SHARD_NAME_PREFIX)]
        killed = []
        for name in names:
            try:
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
                killed.append(name)
            except ValueError:   # it ended meanwhile
                continue
        if killed:
            log.info("ended shard actors %s of namespace %s", ", ".join(killed), namespace)
        return killed

    # --- Calls ----------------------------------------------------------------------

    def address(self) -> PendingCall[str]:
        """Where the shard's ZeroMQ socket listens."""
        return self._start(ShardActor.address)

    def direct_address(self) -> PendingCall[str]:
        """Where clients may produce and fetch without the router; "" if nowhere."""
        return self._start(ShardActor.direct_address)

    def data_dir(self) -> PendingCall[str]:
        """The shard's directory, resolved (which broker's data it serves)."""
        return self._start(ShardActor.data_dir)

    def open_partitions(self, specs: Sequence[PartitionSpec], *, existing: bool = False,
                        partition_counts: dict[str, int] | None = None
                        ) -> PendingCall[dict[PartitionId, str]]:
        """Open (recovering) or create each partition; the result says how each was
        found (OPENED_*). ``existing``: the partitions existed before (a shard that
        lost its manifest, or moved): one created empty needs repair.
        ``partition_counts``: the new topics' counts, recorded with the partitions."""
        for spec in _checked_list(specs, PartitionSpec, "open_partitions"):
            spec.check()
        if partition_counts is not None:
            _check_partition_counts(partition_counts, "open_partitions")
        return self._start(ShardActor.open_partitions, list(specs), existing,
                           None if partition_counts is None else dict(partition_counts))

    def seal_partitions(self, partitions: Sequence[PartitionId],
                        end_offsets: Sequence[int] | None = None
                        ) -> PendingCall[list[SealedPartition]]:
        """Stop their writes here; the result says where each one's new owner continues.
        ``end_offsets``: the replicas (not the leader) of a sealed replicated range stop
        following it there (see ShardServer.seal_range)."""
        pids = _partition_ids(partitions, "seal_partitions")
        if end_offsets is not None and (len(end_offsets) != len(pids) or not all(
                isinstance(o, int) and o >= 0 for o in end_offsets)):
            raise ValueError(f"seal_partitions: end offsets {end_offsets!r} are not one int "
                             f">= 0 per partition of {len(pids)}")
        return self._start(ShardActor.seal_partitions, pids,
                           None if end_offsets is None else list(end_offsets))

    def alter_partitions(self, partitions: Sequence[PartitionId],
                         config: dict[str, str]) -> PendingCall[int]:
        """Apply a topic's changed config (all of ``partitions`` are of that topic)."""
        pids = _partition_ids(partitions, "alter_partitions")
        for pid in pids:
            PartitionSpec(pid.topic, pid.partition, config).check()
        return self._start(ShardActor.alter_partitions, pids, dict(config))

    def hand_over(self, partitions: Sequence[PartitionId],
                  to_shards: Sequence[str]) -> PendingCall[list[HandOverState]]:
        """Hand each partition, led by this shard, over to the shard at the same place
        in ``to_shards`` (a preferred-leader election): it refuses produces from now
        on; each state says whether that shard holds its whole log yet (ask again
        until it does, then give it the lead; ``end_hand_over`` to give up)."""
        pids = _partition_ids(partitions, "hand_over")
        if len(to_shards) != len(pids) or not all(isinstance(s, str) and s for s in to_shards):
            raise ValueError(f"hand_over: shards {to_shards!r} are not one shard id per "
                             f"partition of {len(pids)}")
        return self._start(ShardActor.hand_over, pids, list(to_shards))

    def end_hand_over(self, partitions: Sequence[PartitionId]) -> PendingCall[None]:
        """Give up handing these partitions over: they take writes again."""
        return self._start(ShardActor.end_hand_over, _partition_ids(partitions, "end_hand_over"))

    def delete_partitions(self, partitions: Sequence[PartitionId],
                          keep_remote: bool = False) -> PendingCall[int]:
        """Delete the shard's copies of ``partitions`` (a topic deletion: with their
        remote objects), or with ``keep_remote`` only the copies (a range pruned, a
        replica moved away: the partition lives on elsewhere)."""
        return self._start(ShardActor.delete_partitions,
                           _partition_ids(partitions, "delete_partitions"), bool(keep_remote))

    def delete_stale_partitions(self, partitions: Sequence[PartitionId], topic_id: str,
                                keep_remote: bool = False) -> PendingCall[list[PartitionId]]:
        """Delete those of ``partitions`` the shard holds as topic ``topic_id``'s (a delete
        it missed: it died before it ran it); a partition of another id (a new topic of
        the name) or not held is left. Returns those deleted."""
        if not isinstance(topic_id, str) or not topic_id:
            raise ValueError(f"delete_stale_partitions: topic id {topic_id!r} is not one")
        return self._start(ShardActor.delete_stale_partitions,
                           _partition_ids(partitions, "delete_stale_partitions"), topic_id,
                           bool(keep_remote))

    def partition_infos(self, partitions: Sequence[PartitionId],
                        timestamp_ms: int = protocol.NO_TIME_LOOKUP
                        ) -> PendingCall[list[protocol.PartitionInfo]]:
        """Each partition's offsets; with ``timestamp_ms`` (>= 0 or MAX_TIMESTAMP) also
        the first record stamped at or after it (shards/time_lookup.py)."""
        return self._start(ShardActor.partition_infos,
                           _partition_ids(partitions, "partition_infos"), int(timestamp_ms))

    def tiered_sealed(self, partitions: Sequence[PartitionId]) -> PendingCall[list[TieredState]]:
        """For each partition, whether the shard's sealed copy of it is wholly in object
        storage, with its log start and end offsets (TieredState); a partition the
        shard does not hold is not (not an error)."""
        return self._start(ShardActor.tiered_sealed, _partition_ids(partitions, "tiered_sealed"))

    def covers_remote(self, partition: PartitionId, intervals: Sequence[tuple[int, int]],
                      resync: bool) -> PendingCall[list[bool]]:
        """For each [start, end) of ``intervals``, whether the shard's view of the
        partition's remote log holds every offset of it (the shard answers from
        memory). ``resync``: if one is not covered, the shard lists the store again
        (at most once per REMOTE_RESYNC_INTERVAL_S_MIN) and tells the controller
        once it did (tiering_changed); ask again then. A partition the shard does
        not hold covers nothing."""
        pid, = _partition_ids([partition], "covers_remote")
        return self._start(ShardActor.covers_remote, pid, _intervals(intervals), bool(resync))

    def set_partition_counts(self, counts: dict[str, int]) -> PendingCall[None]:
        """Every topic's partition count (the groups this shard coordinates need them)."""
        _check_partition_counts(counts, "set_partition_counts")
        return self._start(ShardActor.set_partition_counts, dict(counts))

    def change_partition_counts(self, changed: dict[str, int],
                                deleted: Sequence[str] = ()) -> PendingCall[None]:
        """Some topics' partition counts: ``changed`` new or grown ones, ``deleted``
        gone; the others stay as the last set or changed. What a topic created,
        grown or deleted sends, so that its cost does not grow with the topics."""
        _check_partition_counts(changed, "change_partition_counts")
        if not all(isinstance(t, str) for t in deleted) or set(deleted) & set(changed):
            raise ValueError(f"change_partition_counts: deleted must be topic names not "
                             f"changed, got {list(deleted)!r} beside {sorted(changed)}")
        return self._start(ShardActor.change_partition_counts, dict(changed), list(deleted))

    def set_peers(self, addresses: dict[str, str], controller_epoch: int) -> PendingCall[None]:
        """Every running shard's address (shard id -> ZeroMQ address), for replication."""
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in addresses.items()):
            raise ValueError(f"set_peers: addresses must map str to str, got {addresses!r}")
        return self._start(ShardActor.set_peers, dict(addresses), controller_epoch)

    def set_leadership(self, changes: Sequence[tuple[PartitionId, Leadership]]
                       ) -> PendingCall[None]:
        """New leadership records of partitions this shard holds: lead, follow, or a
        changed in-sync set. A record older than the shard's (by controller epoch,
        then partition epoch) is ignored."""
        for pid, leadership in changes:
            pid.check()
            leadership.check()
        return self._start(ShardActor.set_leadership, list(changes))

    def group_names(self) -> PendingCall[list[str]]:
        return self._start(ShardActor.group_names)

    def group_listings(self) -> PendingCall[list[protocol.GroupListing]]:
        """The groups the shard coordinates, each with its state (listGroups)."""
        return self._start(ShardActor.group_listings)

    def group_names_page(self, prefix: str, after: str, limit: int) -> PendingCall[NamesPage]:
        """A page of the groups the shard coordinates (plinth/name_pages.py)."""
        check_page_args(prefix, after, limit, "group_names_page")
        return self._start(ShardActor.group_names_page, prefix, after, int(limit))

    def partition_stats(self, partitions: Sequence[PartitionId]
                        ) -> PendingCall[dict[tuple[str, int], tuple]]:
        """(size in bytes, records/s in, bytes/s in, records/s out, bytes/s out) of each
        partition the shard holds, by (topic, partition); one it does not hold is left
        out. From memory: nothing is read from disk."""
        return self._start(ShardActor.partition_stats,
                           _partition_ids(partitions, "partition_stats"))

    def hand_over_groups(self, names: Sequence[str]) -> PendingCall[GroupStates]:
        """Stop coordinating these groups; the result is their state, for adopt_groups."""
        return self._start(ShardActor.hand_over_groups,
                           list(_checked_list(names, str, "hand_over_groups")))

    def adopt_groups(self, states: GroupStates) -> PendingCall[None]:
        """Coordinate groups another shard handed over (durable when the call returns)."""
        if not isinstance(states, dict):
            raise ValueError(f"adopt_groups: states must be a dict, got {type(states).__name__}")
        return self._start(ShardActor.adopt_groups, states)

    def stats(self) -> PendingCall[dict]:
        """The shard's ShardStats snapshot, with its logs' offsets and groups' offsets."""
        return self._start(ShardActor.stats)

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> PendingCall[None]:
        """Flush, fsync and close every log, within ``grace_period_s``."""
        if not grace_period_s > 0:
            raise ValueError(f"shutdown: grace_period_s {grace_period_s} must be > 0")
        return self._start(ShardActor.shutdown, grace_period_s)

    def kill(self) -> None:
        """End the actor at once, without restarting it."""
        import ray

        ray.kill(self._actor, no_restart=True)

    def death(self) -> tuple[int, str]:
        """Of an actor Ray gave up on: how often Ray restarted it, and Ray's text of its
        last death's cause (actor_failures.killed_how reads it), from Ray's actor table
        (its GCS); (0, "") if Ray does not answer. Controller actor thread."""
        import ray._private.state

        try:
            info = ray._private.state.actors(actor_id=self._actor._actor_id.hex())
        except Exception as exc:   # its table is a nicety of the log line and status
            log.debug("Ray's actor table did not say how %s died: %s", self.shard_id, exc)
            return 0, ""
        return int(info.get("NumRestarts", 0)), str(info.get("DeathCause", ""))

    # --- The transport ------------------------------------------------------------------

    def _start(self, method, *args) -> PendingCall:
        """Start ``method`` (a function of ShardActor) on the actor with ``args``."""
        ref = getattr(self._actor, method.__name__).remote(*args)
        return PendingCall(self.shard_id, method.__name__, ref.future())


def _check_partition_counts(counts: dict[str, int], method: str) -> None:
    """ValueError unless ``counts`` maps topic names to ints >= 1 (programmer error)."""
    if not isinstance(counts, dict) or not all(
            isinstance(t, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 1
            for t, n in counts.items()):
        raise ValueError(f"{method}: partition counts must map topics to ints >= 1, "
                         f"got {counts!r}")


def _checked_list(values: Sequence, kind: type, call: str) -> Sequence:
    if isinstance(values, (str, bytes)) or not all(isinstance(v, kind) for v in values):
        raise ValueError(f"{call}: expected a sequence of {kind.__name__}, got {values!r}")
    return values


def _intervals(intervals: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``intervals`` as a list of (start, end) pairs of ints, 0 <= start <= end."""
    checked = []
    for interval in _checked_list(intervals, tuple, "covers_remote"):
        if len(interval) != 2 or not all(
                isinstance(o, int) and not isinstance(o, bool) for o in interval) \
                or not 0 <= interval[0] <= interval[1]:
            raise ValueError(f"covers_remote: interval {interval!r} is not (start, end) "
                             f"with 0 <= start <= end")
        checked.append((interval[0], interval[1]))
    return checked


def _partition_ids(partitions: Sequence[PartitionId], call: str) -> list[PartitionId]:
    for pid in _checked_list(partitions, PartitionId, call):
        pid.check()
    return list(partitions)
