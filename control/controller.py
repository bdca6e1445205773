"""The controller: topics, their configuration and the placement of partitions on shards.

Runs as one named Ray actor per broker (control plane), created and reached
through ControllerHandle (controller_handle.py). Its state is touched on the
actor's thread only, one call at a time, so it needs no locks. Two kinds of
calls wait for shards elsewhere, so that a shard that stopped answering
(SIGSTOP, a hung disk) holds up no election, in-sync change or routing table:
- the queries (describe, offsets, status, stats, groups, asked elections) run
  on the QUERY_GROUP threads (Ray's concurrency groups);
- the changes (topics created, deleted, altered or grown; shards added, removed
  or moved) run on the one CHANGE_GROUP thread, so one at a time.
Neither touches the controller's state itself: the actor thread makes it a plan
(``_on_actor_thread``: ``_plan_create``, ``_forget_topic``, ...), it waits for
the shards, and the actor thread finishes it (``_finish_create``, ...). A topic
being created is not in the metadata until its partitions are open (its name
is taken meanwhile); a change of shards runs wholly on the actor thread, where
its Rebalancer runs. It keeps the metadata (metadata.py), saved to
``<data_dir>/metadata.json`` after every change and before the change is
answered; it runs the shard actors through a ShardSet (shard_set.py), which
reaches them only through ShardHandles (shards/shard_handle.py), never by
calling Ray; and it leaves changes of shards (``plinth shards add/remove``:
moves of partitions and groups, retiring drained shards) to its Rebalancer
(rebalancer.py).

Its two neighbours are given to it: ``start_shard`` makes a ShardHandle for
new shard options (by default a Ray actor that announces itself to this
controller), and ``nodes`` lists the Ray nodes (by default ``ray.nodes()``
through nodes.RayNodes, which keeps a dead node's name).
The unit tests give it real shard actors reached in process, and fixed nodes.

Replication (issue 12): a topic created with a factor R > 1 gets R replicas per
partition on distinct shards (and nodes, unless ``allow_replicas_on_one_node``),
each opened with the partition's Leadership record (metadata.py). The
controller is the single authority over those records: it changes them only
by compare-and-set (control/leadership.py), saves them before it answers or
tells anyone, and then pushes them to the replicas (``set_leadership``). Every
start bumps the controller epoch, re-stamps every record with it and tells
every shard where its peers listen (``set_peers``), again whenever a shard
announces a new address.

Restarts. The shard actors are detached and named (shards/shard_handle.py):
they outlive this actor, and Ray restarts this actor (at most
CONTROLLER_RESTARTS_MAX times) after its process died. The restarted instance
recovers by itself (``recover``, from ``__init__``): it loads metadata.json,
takes a new controller epoch (so that shards ignore the dead instance's late
words), adopts the running shards, pushes the peers and every record, and
finishes what the death interrupted. A server restarted in a Ray cluster
adopts them the same way through ``start``.

Repair. Each shard answers ``open_partitions`` with how it found each partition;
one whose replica needs repair (its recovery cut entries, or its directory was
lost with the shard's disk) is taken out of the in-sync and eligible sets at once
and left out of every election until its leader adds it back, caught up
(``_note_opened``). A shard that restarts gets its partitions opened again before
its records (``shard_started``): one that lost its disk lost its manifest too.
``move_shard`` (``plinth shards move``) re-creates a lost node's shard on another
node, where its replicas are rebuilt the same way.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from plinth import actor_logs, limits, protocol, topics
from plinth.actor_failures import died_in_constructor, killed_how
from plinth.cluster_keys import ClusterKeys
from plinth.counted import counted
from plinth.data_dir_mode import make_data_dir
from plinth.control import disk_moves, leader_elections
from plinth.control import leadership as leadership_rules
from plinth.control import placement
from plinth.control.controller_handle import (QUERY_GROUP, ControllerHandle, StartReport,
                                              abandon)
from plinth.control.data_dir_check import (TOPICS_NAMED_MAX, load_checked_metadata,
                                          refuse_tiered_topics_without_their_store)
from plinth.control.leader_lease import LeaderLease
from plinth.control.shard_outages import OutageFacts, ShardOutages
from plinth.control.shard_reviver import RevivalLook, ShardReviver
from plinth.control.shard_revivals import ShardDeath, ShardRevivals
from plinth.control.metadata import (METADATA_FILE, METADATA_VERSION, OwedDelete, TopicMetadata,
                                     specs_by_shard, upgrade_line)
from plinth.control.nodes import Node, RayNodes
from plinth.control.rebalancer import Rebalancer
from plinth.control.routing_table import RoutingTable
from plinth.control.shard_set import SHARDS_DIR, CountPush, ShardSet, send_count_pushes
from plinth.errors import (BrokerError, EligibleLeadersNotAvailableError, InvalidConfigError,
                           InvalidPartitionsError, InvalidReplicationFactorError,
                           PartitionOutOfRangeError, PreferredLeaderNotAvailableError,
                           RequestTimedOutError, StorageError, TooManyTopicsError, TopicExistsError,
                           UnavailableError, UnknownTopicError, UnknownTopicIdError)
from plinth.name_pages import ALL_NAMES, NamesPage, check_page_args, merge_pages, page_of
from plinth.shards.shard_handle import (OPENED_LOST, OPENED_NEEDS_REPAIR, Leadership, PartitionId,
                                        PartitionSpec, PendingCall, ShardHandle, ShardOptions,
                                        TierOptions, wait_all, wait_all_or_raise)
from plinth.version import VERSION

log = logging.getLogger(__name__)

# Earlier shard processes process_owner remembers (a few restarts of each shard; a
# pid is looked up within seconds of its death).
_PAST_PIDS_MAX = 64

# Why the shards cannot hold a replication factor (Controller._copies_refused).
_TOO_FEW_SHARDS = "shards"
_TOO_FEW_NODES = "nodes"

# The calls ControllerHandle makes through ``run_change``, on the CHANGE_GROUP thread.
CHANGES = frozenset({"create_topic", "create_topics", "alter_topic", "add_partitions",
                     "delete_topic", "add_shards", "remove_shards", "move_shard"})
# The changes given their caller's deadline (deadline_unix_s), to keep a wait of their
# own within it: an add of shards waits up to SHARD_START_WAIT_S for its new shards.
_CHANGES_TIMED_INSIDE = frozenset({"add_shards"})


# A shard's stats role of a replicated partition it neither leads nor follows
# (shards/shard_replication.py's NOT_SERVED; the control plane sees only the handle).
_NOT_SERVED = "not served"


@dataclass(frozen=True)
class PartitionReplication:
    """One partition's copies as the controller's metadata has them."""

    topic: str
    partition: int
    replicas: int
    in_sync: int
    leader: str              # "" while none (offline)
    offline: bool            # no leader, or its shard does not serve

    @property
    def under_replicated(self) -> bool:
        return self.in_sync < self.replicas


T = TypeVar("T")


@dataclass(frozen=True)
class _ShardFacts:
    """What ``plinth status`` shows of a shard besides its stats."""

    address: str
    direct_address: str    # its socket for clients' produce and fetch, "" if none
    partitions: int        # partitions it serves a range of (current or older)
    draining: bool
    node_name: str
    drain_reason: str = ""   # of a draining shard: why it has not retired yet
    pid: int = 0             # its process (Controller._shown_pid); 0: not known
    down_reason: str = ""    # its new actor's schedule (Ray gave up on it), or its last failure


@dataclass(frozen=True)
class _StatusPlan:
    nodes: list[tuple[str, str, bool]]
    shards: dict[str, _ShardFacts]
    stats: dict[str, ShardHandle | None]   # None: silent, not asked
    routers: list[tuple[str, str]]
    replication: list[PartitionReplication]
    node_names: dict[str, str]


@dataclass(frozen=True)
class _DescribePlan:
    info: protocol.TopicInfo
    topic: TopicMetadata
    asks: dict[str, tuple[ShardHandle, list[PartitionId]]]


@dataclass(frozen=True)
class _TopicStatsPlan:
    partitions: dict[str, int]          # topic -> its partition count, in the request's order
    asks: dict[str, tuple[ShardHandle, list[PartitionId]]]


@dataclass(frozen=True)
class _OffsetsPlan:
    holders: list[tuple[int, set[str]]]   # each range's start offset and the shards holding it
    asks: dict[str, ShardHandle]
    placement: list[str]


@dataclass(frozen=True)
class _CreatePlan:
    topics: dict[str, TopicMetadata]                              # name -> as it will be
    opens: dict[str, tuple[ShardHandle, list[PartitionSpec]]]     # what each shard opens


@dataclass(frozen=True)
class _TopicChangePlan:
    """An alter's or a growth's: what the change thread sends the shards."""

    topic_id: str
    partitions: int                # the topic's count when planned
    config: dict[str, str]         # its config after the change
    topic: TopicMetadata | None    # a growth's: the topic after it
    asks: dict[str, tuple[ShardHandle, list[PartitionSpec]]]   # an alter's: all partitions


@dataclass(frozen=True)
class _ElectionPlan:
    answered: list[protocol.ElectionResult]    # refused, or not needed
    elected: list[protocol.ElectionResult]     # elected at once (no leader answered)
    hand_overs: list[leader_elections.HandOverAsk]
    handles: dict[str, ShardHandle]            # each handing-over leader's


def _start_shard_on_ray(options: ShardOptions) -> ShardHandle:
    """A detached shard actor in this broker's namespace, announcing itself to whichever
    controller of the broker runs then."""
    return ShardHandle.create(options, announce_to=ControllerHandle.current())


def _restarted_by_ray() -> bool:
    """Whether this is a controller actor that Ray restarted after its process died
    (False outside a Ray actor: the tests' in-process controllers)."""
    import warnings

    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    with warnings.catch_warnings():   # Ray's property reads its own deprecated actor_id
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _this_actor():
    """This controller's own Ray actor handle, or None outside a Ray actor (the tests'
    in-process controllers). Asked at each use: an actor that keeps a handle to
    itself would hold its own reference."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return None
    return ray.get_runtime_context().current_actor


def _start_lease() -> LeaderLease | None:
    """This controller's lease, started (it checks once wanted); None outside a Ray
    actor (the tests' in-process controllers, whose tests call check_leaders)."""
    if _this_actor() is None:
        return None
    lease = LeaderLease(_check_leaders_on_actor_thread)
    lease.start()
    return lease


def _check_leaders_on_actor_thread() -> None:
    """One leader check (the lease's thread): a call to this controller's own actor, so
    that it runs on the actor thread, between the other calls, as every change does."""
    import ray

    timeout_s = limits.LEADER_PING_TIMEOUT_S + limits.CONTROL_CALL_TIMEOUT_S
    answer = _this_actor().check_leaders.remote()
    try:
        ray.get(answer, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        abandon(answer, "the controller's check_leaders")
        raise RequestTimedOutError(f"the controller's actor thread did not answer "
                                   f"check_leaders within {timeout_s} s") from None
    except ray.exceptions.RayActorError as exc:   # e.g. sent while Ray restarted this actor
        raise UnavailableError(f"the controller's actor did not take check_leaders "
                               f"({type(exc).__name__})") from None


def _start_reviver() -> ShardReviver | None:
    """This controller's reviver thread, started (it looks once poked); None outside a
    Ray actor (the tests' in-process controllers, whose tests call revive_dead_shards
    and revival_failed themselves)."""
    if _this_actor() is None:
        return None
    reviver = ShardReviver(_revive_on_actor_thread,
                           lambda shard_id, why: _this_actor().revival_failed.remote(shard_id, why))
    reviver.start()
    return reviver


def _revive_on_actor_thread() -> RevivalLook:
    """One look for shards to start again (the reviver's thread): a call to this
    controller's own actor, so that it runs on the actor thread, between the other
    calls; it waits for no shard, so CONTROL_CALL_TIMEOUT_S bounds only a busy actor."""
    import ray

    answer = _this_actor().revive_dead_shards.remote()
    try:
        return ray.get(answer, timeout=limits.CONTROL_CALL_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        abandon(answer, "the controller's revive_dead_shards")
        raise RequestTimedOutError(f"the controller's actor thread did not answer "
                                   f"revive_dead_shards within "
                                   f"{limits.CONTROL_CALL_TIMEOUT_S} s") from None
    except ray.exceptions.RayActorError as exc:   # e.g. sent while Ray restarted this actor
        raise UnavailableError(f"the controller's actor did not take revive_dead_shards "
                               f"({type(exc).__name__})") from None


class Controller:
    """Wrapped with ``ray.remote`` by ControllerHandle.create. Every method: controller
    actor thread (or the test's thread, without Ray), but where it says query thread
    or change thread."""

    def __init__(self, data_dir: str, shard_count: int | None, fsync_policy: str = "always",
                 fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT, *,
                 start_shard: Callable[[ShardOptions], ShardHandle] = _start_shard_on_ray,
                 find_shard: Callable[[str], ShardHandle | None] = ShardHandle.find,
                 restarted: Callable[[], bool] = _restarted_by_ray,
                 nodes: Callable[[], list[Node]] | None = None,
                 start_lease: Callable[[], LeaderLease | None] = _start_lease,
                 start_reviver: Callable[[], ShardReviver | None] = _start_reviver,
                 cluster_keys: ClusterKeys | None = None,
                 default_replication_factor: int | None = None,
                 allow_replicas_on_one_node: bool = False,
                 offsets_replication_factor: int | None = None,
                 direct_clients: bool = False, tier: TierOptions = TierOptions(),
                 leader_rebalance_interval_s: float | None = limits.LEADER_REBALANCE_INTERVAL_S,
                 security_required: tuple[str, ...] = (),
                 produce_free_bytes_min: int = limits.PRODUCE_FREE_BYTES_MIN_DEFAULT):
        """``cluster_keys``: the shards' sockets admit only cluster members (the
        server's; None only in tests, whose shards listen on loopback).
        ``security_required``: the security options of ``plinth serve`` that every
        ``plinth router`` joining it must be given too (plinth/server.py).
        ``direct_clients``: every shard also takes clients' produce and fetch on a
        plain TCP socket on 127.0.0.1 (the server decides when that is allowed).
        ``default_replication_factor``: a topic's factor when its creator gives none
        (None: 1 when the shards run on one node, else min(3, their nodes)).
        ``allow_replicas_on_one_node``: replicas may share a node (testing on one
        machine); without it a factor above the shards' nodes is refused.
        ``find_shard``: a running shard actor by id (to adopt it); ``restarted()``:
        whether this instance replaces one whose process died (then it recovers at
        once, see the module). ``start_lease()``: this instance's lease, started
        (default: one that checks through this actor; none outside a Ray actor).
        ``offsets_replication_factor``: copies of the consumer groups' committed offsets
        (the internal topic; None: the default factor; 1: not replicated).
        ``tier``: the server's --tier-url and --tier-cache-bytes, given to every shard;
        without a URL, remote.storage.enable=true is refused (``start`` too refuses a
        broker whose topics have it). ``leader_rebalance_interval_s``: a leader
        check this long after the last one that did starts ``rebalance_leaders``
        (None: never; Kafka's auto.leader.rebalance.enable=false).
        ``produce_free_bytes_min``: the server's --produce-free-bytes-min, given to
        every shard (shards/disk_reserve.py)."""
        actor_logs.configure(Path(data_dir), "controller")
        self.data_dir = Path(data_dir)
        make_data_dir(self.data_dir)   # first here when the server is on another node
        self._metadata_path = self.data_dir / METADATA_FILE
        self._metadata = load_checked_metadata(self.data_dir)
        # Ray's nodes, a dead one named as it was while alive (or as the saved pins say)
        nodes = nodes or RayNodes(saved_pins=lambda: tuple(self._metadata.shard_nodes.values()))
        self._start_warnings: list[str] = []   # StartReport.warnings
        self._metadata.shards = self._shard_ids(shard_count, nodes)
        if default_replication_factor is not None:
            topics.validate_replication_factor("", default_replication_factor,
                                               what="--default-replication-factor")
        self._default_replication_factor = default_replication_factor
        self._allow_replicas_on_one_node = allow_replicas_on_one_node
        self._offsets_replication_factor = offsets_replication_factor
        self._rebalance_interval_s = leader_rebalance_interval_s
        self._next_rebalance_s = time.monotonic() + (leader_rebalance_interval_s or 0.0)
        self._new_controller_epoch()
        self._shards = ShardSet(self.data_dir, fsync_policy, fsync_interval_ms,
                                start_shard=start_shard, nodes=nodes,
                                cluster_keys=cluster_keys, find_shard=find_shard,
                                direct_clients=direct_clients, tier=tier,
                                produce_free_bytes_min=produce_free_bytes_min)
        self._tier = tier
        self._tier_store = tier.store   # what metadata records (no secrets)
        # The server's claim on the tier store (shards/tier/store_claim.py), as it last
        # reported it: (held, one line). Assigned whole, read by status (query thread).
        self._tier_claim: tuple[bool, str] = (
            (False, "not reported by the server yet") if tier.enabled else (False, ""))
        self._cluster_keys = cluster_keys
        self._security_required = tuple(security_required)
        self._rebalancer = Rebalancer(self._metadata, self._shards, self._save,
                                      allow_replicas_on_one_node, elect=self._lead_again,
                                      silent=lambda: self._silent)
        # listen address -> (node address, its Kafka listener's advertised HOST:PORT or "")
        self._routers: dict[str, tuple[str, str]] = {}
        # listen address -> when it was last heard from (``routing``), on a clock that
        # only the routers' refreshes advance (``_tick_router_clock``)
        self._routers_heard_s: dict[str, float] = {}
        self._router_clock_s = 0.0
        self._monotonic_s: Callable[[], float] = time.monotonic   # (tests step it)
        self._router_clock_ticked_s = self._monotonic_s()
        # The last routing table built, and whether the metadata was saved since: its
        # topics' part (O(topics)) is built again only after a save, which every change
        # of the metadata makes (``_save``). Its version: this instance's random id
        # (unlike the epoch, unequal for another broker's controller that a handle
        # found by name) and the count of tables built.
        self._routing_built: RoutingTable | None = None
        self._routing_topics_stale = True
        # The topics saved again (new or changed) since that table was built: only
        # theirs are built again (a deleted one is left out by going over the topics).
        self._routing_topics_changed: set[str] = set()
        self._routing_instance_id = random.getrandbits(62)
        self._routing_tables_built = 0
        self._ping_misses: dict[str, int] = {}   # shard id -> leader pings unanswered in a row
        # Shards whose last ping or push of records went unanswered in time (dead, stopped,
        # or on a lost node), until one answers again: pushes and queries skip them
        # instead of waiting, because this actor does one thing at a time, and a wait on a
        # dead shard is a wait of every election behind it. At most one entry per shard.
        self._silent: set[str] = set()
        # Shards whose disk refused their last leadership records (logged once).
        self._records_unsaved_by: set[str] = set()
        # Each shard's outage as the checks see it, logged once each way (shard_outages.py).
        self._outages = ShardOutages()
        # The shards Ray gave up on, each given a new actor after a backoff
        # (revive_dead_shards, shard_revivals.py); and those a stats call (status, a
        # metrics scrape) did not hear from, for it to look at (query threads add).
        self._revivals = ShardRevivals(lambda: self._monotonic_s())
        self._stats_missed: set[str] = set()
        # When the server last heard of a Ray worker's death (process_owner); until
        # SHARD_DEATH_LOOK_S after, every shard is looked at (revive_dead_shards).
        self._death_heard_s: float | None = None
        # The thread that has revive_dead_shards run, and waits for the new actors
        # (shard_reviver.py): nothing else waits for them. None outside a Ray actor.
        self._reviver = start_reviver()
        # The processes shards ran in before their last restart, oldest first: pid ->
        # shard id (process_owner), at most _PAST_PIDS_MAX.
        self._past_pids: dict[int, str] = {}
        # The processes shards said they start in (shard_starting, query threads), oldest
        # first: pid -> shard id, at most _PAST_PIDS_MAX; and each shard's latest, for
        # status (``_shown_pid``), one entry per shard. The lock guards these two alone.
        self._starting_pids: dict[int, str] = {}
        self._starting_pid_by_shard: dict[str, int] = {}
        self._starting_pids_lock = threading.Lock()
        # Shards that missed a push of leadership records (down, stopped, slow) or sent
        # a stale in-sync change: each gets all its records again once it answers a
        # leader check. Without this a SIGSTOPped leader, deposed while stopped, never
        # learns it was (it does not restart, so it never announces itself). At most
        # one entry per shard.
        self._records_unsent: set[str] = set()
        # Shards that missed a push of the peers' addresses (the call failed: Ray had not
        # seen the shard's restart yet, or it was silent or slow): each gets them again
        # once it answers a leader check. Without this a restarted follower whose push
        # failed holds its records but no leader's address: it never fetches, and never
        # rejoins the in-sync set. At most one entry per shard.
        self._peers_unsent: set[str] = set()
        # Restarted shards whose partitions could not be reopened (the call failed, as
        # the push of peers may): reopened once they answer a leader check, then sent
        # their records. A shard announces itself once per start. At most one per shard.
        self._reopen_unsent: set[str] = set()
        self._repairing: dict[tuple[str, int], set[str]] = {}   # see _note_opened
        # Shards whose disk refused writes and whose partitions are being moved away
        # (leader_disk_refused): one move at a time per shard. At most one per shard.
        self._disk_moves_running: set[str] = set()
        # Partitions moved away from a leader whose disk refused writes: the auto leader
        # rebalance leaves them (their preferred leader's disk may still refuse), until a
        # preferred election gives them back (control/disk_moves.py); by topic id (a
        # topic created again under the name is another). At most one per replicated
        # partition: the rebalance forgets those of deleted topics.
        self._moved_for_disk: set[tuple[str, int]] = set()
        # Each shard's partitions that stayed on its refusing disk at its last move, as
        # last logged (logged again only when they change). At most one per shard.
        self._disk_staying_said: dict[str, list[str]] = {}
        # When each shard last said its disk refused a write (monotonic s): for
        # DISK_REFUSED_RECENT_S after, it takes no partition moved off another's disk.
        # At most one per shard.
        self._disk_refused_s: dict[str, float] = {}
        # The topics of the create running on the change thread, until their partitions
        # are open: their names are taken, and they count towards TOPICS_MAX. At most
        # CREATE_TOPICS_BATCH_MAX entries (one create runs at a time).
        self._creating: dict[str, TopicMetadata] = {}
        self._shutting_down = False
        # The lease on leadership (leader_lease.py), on this actor's own timer; None
        # outside a Ray actor (the unit tests call check_leaders themselves).
        self._lease = start_lease()
        self._lease_wanted_as_saved()
        if restarted():
            self.recover()

    def _shard_ids(self, shard_count: int | None, nodes: Callable[[], list[Node]]) -> list[str]:
        stored = self._metadata.shards
        if shard_count is None:
            shard_count = len(stored) or placement.default_shard_count(nodes())
        if stored and shard_count != len(stored):
            # plinth shards add/remove changed the count since the command line was
            # written: a restart must not undo them (or refuse to start).
            warning = (f"{self._metadata_path} has {counted(len(stored), 'shard')}, kept: "
                       f"--shards {shard_count} applies to a new data directory only (use "
                       f"plinth shards add or remove to change the count)")
            log.warning("%s", warning)
            self._start_warnings.append(warning)
            return list(stored)
        if not 1 <= shard_count <= limits.SHARDS_MAX:
            raise InvalidConfigError(f"--shards {shard_count} is outside 1..{limits.SHARDS_MAX}")
        return [f"shard-{i}" for i in range(shard_count)]

    def _save(self, topics_changed: Collection[str] | None = None) -> None:
        """``topics_changed``: every topic added, changed or deleted since the last save,
        when the caller knows them all (a change of named topics): only those are
        encoded again. None: every topic is compared with its kept text."""
        # Without --tier-url no topic is tiered (refused at create and at start): no walk.
        self._metadata.tier_store = \
            self._tier_store if self._tier_store is not None and self._tiered_topics() else None
        try:
            self._metadata.save(self._metadata_path, topics_changed)
        finally:   # a refused save encoded its changes too: the routing table takes them
            self._routing_topics_stale = True
            self._routing_topics_changed |= self._metadata.topics_encoded_again
        self._lease_wanted_as_saved()

    def _save_or_undo(self, topics_changed: Collection[str], undo: Callable[[], None]) -> None:
        """Save a change of ``topics_changed``; if the disk refuses (StorageError, a
        full disk), ``undo`` it in memory as well, and raise: a change not saved did
        not happen, so what the controller serves stays what its file says (before,
        a delete refused so was gone from the running broker while metadata.json,
        and the disk, kept it: tester D, session 39). Actor thread."""
        try:
            self._save(topics_changed)
        except StorageError:
            undo()   # (_save marked the routing topics stale: they are rebuilt from this)
            self._metadata.forget_encoded()   # the next save encodes memory whole
            raise

    def _save_records(self, before: dict[PartitionId, Leadership]) -> None:
        """Save leadership records just changed in memory (``before``: each one as it
        was); if the disk refuses (StorageError), put them back and raise. A record not
        saved must reach no shard or router: a controller restarted from the file
        would elect from an in-sync set the replicas had left, and a replica out of
        it may lack acknowledged records. Actor thread."""
        def undo() -> None:
            for pid, record in before.items():
                topic = self._metadata.topics.get(pid.topic)
                if topic is not None:
                    topic.leadership[pid.partition] = record
        self._save_or_undo(sorted({pid.topic for pid in before}), undo)

    def _tiered_topics(self) -> list[str]:
        return sorted(name for name, topic in self._metadata.topics.items()
                      if topics.remote_storage_enabled(topic.config))

    def _lease_wanted_as_saved(self) -> None:
        """The lease checks while a replicated partition exists, and sleeps while none
        does (every change of the metadata is saved, so ``_save`` keeps this true)."""
        if self._lease is not None:
            self._lease.want(any(topic.leadership for topic in self._metadata.topics.values()))

    def _new_controller_epoch(self) -> None:
        """This incarnation's epoch: one more than any before (saved by ``start``
        before a shard hears of it); every record is re-stamped with it, a change
        of the record (partition epoch + 1), so that shards take it over the old."""
        metadata = self._metadata
        metadata.controller_epoch += 1
        for topic in metadata.topics.values():
            for partition, record in topic.leadership.items():
                topic.leadership[partition] = replace(
                    record, controller_epoch=metadata.controller_epoch,
                    partition_epoch=record.partition_epoch + 1)

    # --- Lifecycle ---------------------------------------------------------

    def start(self) -> StartReport:
        """Create every shard actor and open the partitions it owns; returns which
        shards serve (and where) and which do not (and why).

        A shard that does not come up in time (its node is down, its directory is
        locked) is left out: its partitions are unavailable until it starts and
        announces itself. Then finishes a change of shards a crash interrupted,
        and retires the removed shards that hold nothing any more. A
        shard actor still running (its controller died: Ray restarted this one, or
        the server restarted in a Ray cluster) is adopted; then a partition whose
        leader waits for a new leader epoch gets one (``_elect_where_leaders_wait``).

        Raises InvalidConfigError before starting anything if a topic has remote
        storage on and the server has no --tier-url (as Kafka refuses to start with
        tiered storage off while such topics exist), or one naming another store
        than the one metadata recorded: its remote segments would be unreadable
        there, and its uploads would go to a store its reads never look in. Raises it,
        once the shards run (their nodes are known then: ``_refuse_impossible_factor_
        options``), if --default-replication-factor or --offsets-replication-factor
        asks for more copies than the shards, or their nodes, can hold; and, before
        anything is saved or opened, if a shard holds deletions of deleted tiered
        topics' remote segments that it cannot run without that store
        (``_refuse_stranded_deletions``).
        """
        self._refuse_tiered_topics_without_their_store()
        self._upgrade_format()   # before any shard starts: each reopens its partitions
        self._shards.start(self._metadata.shards + self._metadata.draining,
                           self._metadata.shard_nodes)
        self._refuse_impossible_factor_options()   # the shards' nodes are known now
        self._refuse_stranded_deletions()
        self._save()   # the controller epoch, before any shard hears of it
        self._push_peers()
        opened = self._shards.call_each({s: self._shards[s].open_partitions(specs, existing=True)
                                         for s, specs in self._metadata.specs_by_shard().items()},
                                        limits.SHARD_START_WAIT_S, serving_needs_it=True)
        self._save()
        for shard_id, states in opened.items():
            self._note_opened(shard_id, states or {})
        self._say_lost_partitions(opened, at_start=True)
        self._send_owed_deletes(sorted(self._shards.addresses))
        self._create_offsets_topic()
        self._shards.push_partition_counts(self._metadata.partition_counts())
        self._rebalancer.finish_interrupted()
        if self._shards.adopted:   # a shard that restarted meanwhile told no one
            self._elect_where_leaders_wait()
        self._retire_drained_at_start()
        return self.start_report()

    def _retire_drained_at_start(self) -> None:
        """Retire the draining shards that hold nothing any more: the previous instance
        may have recorded a tiered range and died before it retired the shard, and
        nothing else runs it until a status call or a shard's nudge."""
        try:
            self._rebalancer.retire_drained()
        except BrokerError as exc:
            log.error("could not retire the drained shards at start (the next status call "
                      "tries again): %s", exc)

    def _refuse_tiered_topics_without_their_store(self) -> None:
        """data_dir_check.refuse_tiered_topics_without_their_store, for a broker started
        another way than plinth serve (which checks before it claims the store)."""
        refuse_tiered_topics_without_their_store(
            self._metadata, self._tier_store if self._tier.enabled else None)

    def _refuse_stranded_deletions(self) -> None:
        """InvalidConfigError if a serving shard holds deletions of deleted tiered
        topics' remote segments that it cannot run: the server has no --tier-url, or
        one naming another store than theirs (shards/tier/remote_log_manager.py,
        "Topic deletion"). Each shard found them on its own disk at its start and
        says so in its stats (``remote_deletions_stranded``): in a Ray cluster the
        controller cannot read the shards' directories. Without the refusal they
        would wait for ever, their objects left in the store; metadata cannot name
        the store, as its record went with the last tiered topic. A shard that does
        not answer is not checked (it is not serving either)."""
        serving = set(self._shards.addresses)
        stats = self._shards.stats(skip=[s for s in self._shards.ids() if s not in serving])
        by_store: dict[str, dict] = {}   # store ("" not recorded) -> count, names, where
        for shard_id, snapshot in sorted(stats.items()):
            stranded = (snapshot or {}).get("remote_deletions_stranded") or {}
            for store, found in sorted(stranded.get("stores", {}).items()):
                entry = by_store.setdefault(store, {"count": 0, "names": [], "dirs": []})
                entry["count"] += found["count"]
                entry["names"] += found["partitions"]
                entry["dirs"].append(f"{stranded['directory']} ({shard_id})")
        if by_store:
            raise InvalidConfigError("; ".join(self._stranded_deletions_refusal(store, entry)
                                               for store, entry in sorted(by_store.items())))

    def _stranded_deletions_refusal(self, store: str, entry: dict) -> str:
        """One store's part of ``_refuse_stranded_deletions``' message."""
        names = entry["names"][:10]
        shown = f"({', '.join(names)}{', ...' if entry['count'] > len(names) else ''})"
        started = (f"with --tier-url {self._tier_store}" if self._tier.enabled
                   else "without --tier-url")
        where = f"in {store}" if store else \
            "in the store they were uploaded to (not recorded: deleted by an older Plinth)"
        start_with = f"--tier-url {store}" if store else "the --tier-url of that store"
        return (f"{entry['count']} deleted partition(s) of tiered topics {shown} still have "
                f"remote segments to delete {where}, but the server was started {started}: "
                f"start it with {start_with} to finish their deletion (or, to leave those "
                f"objects in the store for good, remove {', '.join(entry['dirs'])})")

    def _upgrade_format(self) -> None:
        """Save a metadata.json of an older format version (metadata.py, "Format
        versions") as this build's, before any shard starts: a shard reopens its
        partitions as it starts, and writes what older builds misread. From then on
        every build before METADATA_VERSION_SINCE refuses the data dir, so it is one
        WARNING naming the file and both versions, also in the StartReport (the
        server prints it). A start refused before this writes nothing."""
        version = self._metadata.file_version
        if version == METADATA_VERSION:
            return
        self._save()
        warning = upgrade_line(self._metadata_path, version, done=True)
        log.warning("%s", warning)
        self._start_warnings.append(warning)

    def recover(self) -> StartReport:
        """Take over after the previous instance's process died (``__init__``, when Ray
        restarted this actor): ``start``, which adopts the running shards, pushes
        them the peers and every record under the new controller epoch, finishes an
        interrupted change of shards, and gives a new leader epoch to each partition
        whose leader waits for one (it restarted, and its announcement went to the
        dead instance). An election the death interrupted before it was saved is
        redone by the next leader check (``check_leaders``: the leader does not
        answer). A shard that did not answer gets its records at the next check.
        Never raises: a failure is logged, and those checks repair what they can."""
        log.warning("the controller restarted after its process died: recovering with "
                    "controller epoch %d", self._metadata.controller_epoch)
        try:
            report = self.start()
            self._records_unsent.update(report.not_serving)
        except Exception:   # __init__ must not fail: Ray would not restart it again
            log.exception("the controller's recovery failed; the leader checks and the "
                          "shards' announcements repair what they can")
            return self.start_report()
        log.warning("the controller recovered: %d shards serve, %d do not",
                    len(report.addresses), len(report.not_serving))
        return report

    def _elect_where_leaders_wait(self) -> None:
        """A new leader epoch for each partition whose leader says (in its stats) that
        it does not serve it: it restarted and never leads again in the epoch it led."""
        stats = self._shards.stats()
        waiting = [(name, p) for name, topic in sorted(self._metadata.topics.items())
                   for p, record in sorted(topic.leadership.items())
                   if (stats.get(record.leader) or {}).get("replication", {})
                   .get((name, p), {}).get("role") == _NOT_SERVED]
        if waiting:
            replicas = {s for name, p in waiting
                        for s in self._metadata.topics[name].leadership[p].replicas}
            self._elect(waiting, self._answering(replicas))

    def _create_offsets_topic(self) -> None:
        """On a replicated broker, the internal topic of committed offsets (once): a
        partition per shard (a group slot each), replicated like any topic, so a
        group's coordinator, its slot's leader, fails over with it (shards/
        group_requests.py). At factor 1 nothing is created: each shard keeps its own
        offsets log, as before. A factor the shards cannot hold is refused if it was
        asked for, and leaves offsets unreplicated (with a warning) if it was the
        default."""
        name, requested = topics.OFFSETS_TOPIC, self._offsets_replication_factor or 0
        if name in self._metadata.topics:
            return
        try:
            factor = self._replication_factor(name, requested)
        except InvalidReplicationFactorError as exc:
            if requested:
                raise
            log.warning("committed offsets stay unreplicated: %s", exc)
            return
        if factor == 1:
            return
        config = topics.normalize_topic_config(name, {   # bounded in time: offset_store.py
            topics.RETENTION_MS: str(limits.OFFSETS_SLOT_RETENTION_MS),
            topics.SEGMENT_MS: str(limits.OFFSETS_SLOT_SEGMENT_MS),
            topics.RETENTION_BYTES: "-1"}, factor)
        self._metadata.topics[name] = self._new_topic(name, len(self._metadata.shards), config,
                                                      factor)
        try:
            wait_all_or_raise({s: self._shards[s].open_partitions(specs)
                               for s, specs in self._metadata.specs_by_shard([name]).items()},
                              limits.SHARD_START_WAIT_S)
        except Exception as exc:   # a shard is down: the next start tries again
            del self._metadata.topics[name]
            log.warning("could not create %s (committed offsets stay unreplicated until the "
                        "next start): %s", name, exc)
            return
        self._save()
        log.info("created %s: %d partitions (group slots), replication factor %d", name,
                 len(self._metadata.shards), factor)

    def start_report(self) -> StartReport:
        """Which shards serve and where, which do not and why (the server prints
        ``ready`` only when every shard serves)."""
        expected = self._metadata.shards + self._metadata.draining
        not_serving = self._shards.not_serving(expected)
        if not_serving:   # one may be dead for good (the server asks at start, then often)
            self._poke_reviver()
        return StartReport({s: a for s, a in self._shards.addresses.items() if s not in not_serving},
                           not_serving, tuple(self._start_warnings))

    def cluster_keys(self) -> ClusterKeys | None:
        """The cluster's key pair, for a ``plinth router`` given no key file: whoever
        may call the controller through Ray already controls every shard actor."""
        return self._cluster_keys

    def build_version(self) -> str:
        """This build's version (plinth/version.py), for a joining ``plinth router``,
        which must be of the same build (a Ray call's arguments are the build's own)."""
        return VERSION

    def security_required(self) -> tuple[str, ...]:
        """The security options of the server (``--curve-secret-key``, ``--acl``,
        ``--kafka-sasl-users``, ``--kafka-tls-cert``) that a joining ``plinth router``
        must have too: one without them would be a front door that skips them."""
        return self._security_required

    def tier_store(self) -> str | None:
        """The object store the shards tier to (remote_store.store_identity of the
        server's --tier-url: no credential), or None; for a ``plinth router`` given
        a --tier-url to check against."""
        return self._tier_store

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        """Stop the lease (no election while the shards stop), then flush, fsync and
        close every shard's logs, and end the shard actors."""
        if self._lease is not None:
            self._lease.stop()   # a check already queued behind this one does nothing
            self._lease = None
        if self._reviver is not None:
            self._reviver.stop()   # a look already queued does nothing (_shutting_down)
            self._reviver = None
        self._shutting_down = True
        self._shards.shutdown(grace_period_s)

    # --- Announcements ---------------------------------------------------------

    def shard_started(self, shard_id: str, address: str, direct_address: str = "",
                      pid: int = 0) -> None:
        """A shard actor (re)started in process ``pid`` and listens at ``address``, and
        for clients' produce and fetch at ``direct_address`` ("": nowhere) (called by
        the shard):
        every shard learns its peers' addresses anew; the partitions it led (or that
        have no leader) get a new leader epoch, since it lost its leader state (it may
        lead again, in the new epoch); and it gets its partitions' current records
        (its manifest may hold older ones)."""
        known = self._shards.addresses.get(shard_id)
        self._note_pid(shard_id, pid)
        self._shards.started(shard_id, address, direct_address, pid)
        self._silent.discard(shard_id)
        self._revivals.started(shard_id)
        if shard_id not in self._shards:
            return   # announced while the controller starts it: start() tells it all
        # A restarted shard lost what it was told; the others need only a new address,
        # and are not waited for long: one stopped (alive to Ray, silent) would hold up
        # every election here. One that misses it gets it at its next leader check.
        self._push_peers([shard_id])
        if known != address:
            self._push_peers([s for s in self._shards.ids() if s != shard_id],
                             limits.LEADER_PING_TIMEOUT_S)
        # Until it has said how it found its partitions, it may need repair: not electable.
        electable = {shard_id} if self._reopen(shard_id) else set()
        self._send_owed_deletes([shard_id])
        led = [(name, p) for name, topic in sorted(self._metadata.topics.items())
               for p, record in sorted(topic.leadership.items())
               if shard_id in record.replicas and record.leader in (shard_id, "")]
        if led:
            others = {s for name, p in led
                      for s in self._metadata.topics[name].leadership[p].replicas} - {shard_id}
            self._elect(led, self._answering(others) | electable)
        self._push_all_records(shard_id)

    def tier_claim_reported(self, held: bool, line: str) -> None:
        """The server's claim on the tier store (store_claim.ClaimKeeper.state), after
        each of its rounds, for status. Query thread (ControllerHandle), so that it
        never waits behind the actor thread's work."""
        self._tier_claim = (held, line)

    def shard_starting(self, shard_id: str, pid: int) -> None:
        """A shard actor's process ``pid`` starts, before it reopens its logs (called by
        the shard): one killed before it announces ``shard_started`` is still named by
        ``process_owner``. Query thread (ControllerHandle.shard_starting): the shard's
        process cannot exit before this call is answered (Ray's worker waits for the
        calls it made), and the actor thread may be waiting for that very shard (a
        start's set_peers waited its full 60 s on one whose constructor raised), so
        it touches only ``_starting_pids`` and ``_starting_pid_by_shard``, under their
        lock. Status shows that process until the shard announces itself
        (``_shown_pid``)."""
        if pid:
            with self._starting_pids_lock:
                self._starting_pids[pid] = shard_id
                self._starting_pid_by_shard[shard_id] = pid
                while len(self._starting_pids) > _PAST_PIDS_MAX:
                    del self._starting_pids[next(iter(self._starting_pids))]

    def _shown_pid(self, shard_id: str) -> int:
        """The process ``plinth status`` shows for ``shard_id`` where the shard does not
        say itself (it does not answer its stats call, or is not asked: a new actor
        Ray or the reviver started, still in its constructor, e.g. waiting for its
        directory's lock): the latest that said it starts the shard (``shard_starting``),
        unless the shard has announced itself from that one (it is the announced one,
        or an earlier one, ``_past_pids``); else the one it last announced from; 0 if
        neither is known. Actor thread: it reads the query threads' word under its
        lock, and asks no shard."""
        announced = self._shards.pids.get(shard_id, 0)
        with self._starting_pids_lock:
            starting = self._starting_pid_by_shard.get(shard_id, 0)
        if starting and starting != announced and starting not in self._past_pids:
            return starting
        return announced

    def _note_pid(self, shard_id: str, pid: int) -> None:
        """``shard_id`` runs in ``pid`` now: the one before is kept for ``process_owner``
        (Ray's death message may come late)."""
        before = self._shards.pids.get(shard_id, 0)
        if before and before != pid:
            self._past_pids[before] = shard_id
            while len(self._past_pids) > _PAST_PIDS_MAX:
                del self._past_pids[next(iter(self._past_pids))]

    def _push_all_records(self, shard_id: str) -> None:
        """Every record ``shard_id`` holds; if the call fails, again at the next check."""
        records = self._records_on(shard_id)
        if not records:
            return
        outcome = wait_all({shard_id: self._shards[shard_id].set_leadership(records)},
                           limits.CONTROL_CALL_TIMEOUT_S)[shard_id]
        if isinstance(outcome, BrokerError):
            log.warning("%s; it gets its records again once it answers", outcome)
            self._records_unsent.add(shard_id)

    def _reopen(self, shard_id: str) -> bool:
        """Open every partition ``shard_id`` holds a copy of (it may have lost its disk
        and its manifest with it: it knows nothing then), before it gets its records;
        those it reports needing repair are marked (``_note_opened``). Returns whether
        it answered (or holds nothing)."""
        specs = self._metadata.specs_by_shard().get(shard_id)
        if not specs:
            return True
        shard = self._shards[shard_id]
        opened = self._shards.call_each({shard_id: shard.open_partitions(specs, existing=True)},
                                        limits.SHARD_START_WAIT_S)[shard_id]
        if opened is None:   # it does not answer: again once it answers a leader check
            self._reopen_unsent.add(shard_id)
            return False
        self._reopen_unsent.discard(shard_id)
        self._note_opened(shard_id, opened)
        self._say_lost_partitions({shard_id: opened}, at_start=False)
        self._shards.call_each({shard_id: shard.set_partition_counts(
            self._metadata.partition_counts())}, limits.CONTROL_CALL_TIMEOUT_S)
        return True

    def _note_opened(self, shard_id: str, opened: dict[PartitionId, str]) -> None:
        """How ``shard_id`` found the partitions it opened: a replica that needs repair
        leaves the in-sync and eligible sets at once (a compare-and-set, saved, pushed
        to the replicas that answer) and is left out of every election until its
        leader adds it back to the in-sync set (``alter_in_sync``), which it does only
        once the replica has caught up with the high watermark (shards/replication.py,
        rules 8 and 9). The mark is kept in memory: the record, saved, already keeps
        the replica out of both sets, and the shard keeps its own mark on disk."""
        changes, before = [], {}
        for pid, state in sorted(opened.items()):
            topic = self._metadata.topics.get(pid.topic)
            key = (pid.topic, pid.partition)
            if state != OPENED_NEEDS_REPAIR or topic is None \
                    or pid.partition not in topic.leadership:
                self._repairing.get(key, set()).discard(shard_id)   # its shard says it is whole
                continue
            self._repairing.setdefault(key, set()).add(shard_id)
            record = topic.leadership[pid.partition]
            marked = leadership_rules.mark_needs_repair(
                record, shard_id, controller_epoch=self._metadata.controller_epoch)
            log.warning("%s-%d: %s needs repair: out of the in-sync set %s until it has "
                        "caught up", pid.topic, pid.partition, shard_id, ",".join(marked.in_sync))
            if marked != record:
                before.setdefault(pid, record)
                topic.leadership[pid.partition] = marked
                changes.append((pid, marked))
        if changes:
            self._save_records(before)   # before any shard hears of the new records
            self._push_records(changes, set(self._shards.addresses))

    def _say_lost_partitions(self, opened: dict[str, dict[PartitionId, str] | None], *,
                             at_start: bool) -> None:
        """One ERROR naming the partitions of one copy whose directories were found
        missing and opened empty (OPENED_LOST): a data dir copied or restored without
        its shards/ directories came up "ready" with them empty, said only in a shard's
        log, and its groups' committed offsets then skipped the records written anew
        (tester B, session 40). ``at_start``: ``plinth serve`` prints it too
        (StartReport.warnings); a shard restarted later (``_reopen``) only logs it, as
        the report is read at start only and would grow by a line at each such loss.
        Actor thread."""
        lost = sorted(f"{pid.topic}-{pid.partition} on {shard_id}"
                      for shard_id, states in opened.items()
                      for pid, state in (states or {}).items() if state == OPENED_LOST)
        if not lost:
            return
        shown = ", ".join(lost[:TOPICS_NAMED_MAX]) + (
            f" and {len(lost) - TOPICS_NAMED_MAX} more" if len(lost) > TOPICS_NAMED_MAX else "")
        line = (f"{len(lost)} partition(s) of one copy came back EMPTY: their directories were "
                f"missing ({shown}), so every record they held is gone from this broker, "
                f"their offsets start again at 0, and committed offsets beyond that skip "
                f"the records written anew. If this data dir was copied or restored without "
                f"all of {self.data_dir / SHARDS_DIR}, stop the broker now and restore them "
                f"from the backup, before anything is written to them")
        log.error("%s", line)
        if at_start:
            self._start_warnings.append(line)

    def alter_in_sync(self, shard_id: str, partition: PartitionId, leader_epoch: int,
                      partition_epoch: int, in_sync: tuple[str, ...]) -> Leadership:
        """The leader ``shard_id`` asks to change the partition's in-sync set (called by
        the shard): a compare-and-set on (leader_epoch, partition_epoch), saved before
        the answer, then pushed to the other replicas. FencedLeaderEpochError if stale."""
        topic = self._topic(partition.topic)
        if partition.partition not in topic.leadership:
            raise InvalidConfigError(f"{partition.topic}-{partition.partition} is not replicated "
                                     f"(replication factor {topic.replication_factor})")
        current = topic.leadership[partition.partition]
        key = (partition.topic, partition.partition)
        try:
            changed = leadership_rules.alter_in_sync(
                current, shard_id, leader_epoch, partition_epoch, tuple(in_sync),
                topics.min_insync_replicas(topic.config),
                needs_repair=self._repairing.get(key, ()),
                controller_epoch=self._metadata.controller_epoch)
        except BrokerError:
            self._records_unsent.add(shard_id)   # its record is stale: resend at the next check
            raise
        topic.leadership[partition.partition] = changed
        self._save_records({partition: current})
        self._forget_repaired(key, changed)
        log.info("%s-%d: in-sync replicas %s -> %s (partition epoch %d)", partition.topic,
                 partition.partition, ",".join(current.in_sync), ",".join(changed.in_sync),
                 changed.partition_epoch)
        others = {s for s in changed.replicas if s != shard_id}
        self._push_records([(partition, changed)], others, answered={shard_id})
        return changed

    def _forget_repaired(self, key: tuple[str, int], record: Leadership) -> None:
        """A replica marked as needing repair that its leader added back to the in-sync
        set has caught up: it may be elected again."""
        repairing = self._repairing.get(key)
        if repairing:
            repairing -= set(record.in_sync)
            if not repairing:
                del self._repairing[key]

    def check_leaders(self) -> list[tuple[PartitionId, str]]:
        """Elect a new leader (control/leadership.py) for every replicated partition whose
        leader's shard is dead by Ray or did not answer LEADER_PING_MISSES_MAX pings in a
        row, or that has none while a replica that may lead answers (called by this
        controller's lease, leader_lease.py, every LEADER_CHECK_INTERVAL_S while a
        replicated partition exists, so that detection does not wait for Ray's node
        health checks). Each new record is saved, then pushed to the replicas that
        answer. Returns (partition, new leader or "") for each change; nothing once
        ``shutdown`` began."""
        if self._shutting_down:
            return []
        if self._silent:   # one may be dead for good: the reviver looks (it waits for us)
            self._poke_reviver()
        partitions = [(name, p) for name, topic in sorted(self._metadata.topics.items())
                      for p in sorted(topic.leadership)]
        if not partitions:
            return []
        # The silent shards too, replicas or not: one that answers again is shown up
        # by status and waited for by changes again.
        alive = self._answering({s for name, p in partitions
                                 for s in self._metadata.topics[name].leadership[p].replicas}
                                | self._silent)
        lost = [(name, p) for name, p in partitions
                if self._metadata.topics[name].leadership[p].leader not in alive]
        changes = self._elect(lost, alive) if lost else []
        self._resend_records(alive)
        if self._rebalance_interval_s is not None and time.monotonic() >= self._next_rebalance_s:
            self._next_rebalance_s = time.monotonic() + self._rebalance_interval_s
            self._start_rebalance()
        return changes

    def revive_dead_shards(self) -> RevivalLook:
        """The one place a shard Ray gave up on is started again (shard_revivals.py),
        called by the reviver thread (shard_reviver.py) only: status and the leader
        checks only read the schedule, so no caller waits for a new actor. Each shard
        the checks found not answering (leader pings, failed starts and calls, stats
        calls; every shard for SHARD_DEATH_LOOK_S after a worker's death) whose actor
        is dead for good (ShardSet.dead_for_good) is scheduled, unless it raised in
        its constructor (``_not_revived``); each due one is given a new actor on its
        node. Returns those new actors, for the reviver to wait for, and whether to
        look again. Actor thread: it waits for no shard (name lookups in Ray's GCS,
        its actor table, and actor creations, which Ray runs asynchronously)."""
        if self._shutting_down:
            return RevivalLook()
        for shard_id in self._revivals.ids():
            if shard_id not in self._shards:
                self._revivals.forget(shard_id)   # retired or removed meanwhile
        stats_missed, self._stats_missed = self._stats_missed, set()   # query threads add
        maybe_dead = self._silent | set(self._shards.failures) | stats_missed
        if self._looking_for_deaths():
            maybe_dead |= set(self._shards.ids())
        for shard_id in sorted((maybe_dead | set(self._revivals.ids())) - self._revivals.given_up):
            if not self._shards.dead_for_good(shard_id):
                continue
            restarts, cause = self._shards[shard_id].death()
            if died_in_constructor(cause):
                self._not_revived(shard_id)
                continue
            death = ShardDeath(restarts, killed_how(cause))
            if shard_id in self._revivals:
                self._revivals.died_again(shard_id, death)
            else:
                self._revivals.dead(shard_id, death)
        started = {shard_id: self._revive(shard_id) for shard_id in self._revivals.due()}
        return RevivalLook({s: handle for s, handle in started.items() if handle is not None},
                           again=len(self._revivals) > 0 or self._looking_for_deaths())

    def revival_failed(self, shard_id: str, why: str) -> None:
        """The new actor ``revive_dead_shards`` started for ``shard_id`` failed its first
        call (the reviver thread says so, not waited for): ``why`` is its reason for
        not serving (status, the start report) until the next look reads how it died.
        Actor thread."""
        if shard_id in self._shards:   # not retired meanwhile; an announcement clears it
            self._shards.failures[shard_id] = why

    def _not_revived(self, shard_id: str) -> None:
        """``shard_id``'s actor raised in its constructor, so neither Ray nor the
        controller starts it again: what it raised (its directory locked by another
        process, a manifest it cannot read) is the operator's to fix, and each new actor
        would wait up to DATA_DIR_LOCK_WAIT_S_MAX to raise the same. Its failure stays
        its reason for not serving."""
        why = self._shards.failures.get(shard_id) or (
            f"{shard_id} raised in its constructor (Ray's actor table), and is not restarted")
        self._shards.failures[shard_id] = why
        self._revivals.give_up(shard_id, why)

    def _poke_reviver(self) -> None:
        """Have the reviver look at the next interval (any thread: a query thread's stats
        call, the server's word of a worker's death)."""
        reviver = self._reviver
        if reviver is not None:
            reviver.poke()

    def _looking_for_deaths(self) -> bool:
        heard_s = self._death_heard_s
        return heard_s is not None and self._monotonic_s() - heard_s < limits.SHARD_DEATH_LOOK_S

    def _revive(self, shard_id: str) -> ShardHandle | None:
        """A new actor for ``shard_id``, on its node, not waited for; None if none could
        start. In process (the unit tests) it announces itself before its handle is
        kept, so its announcement is redone."""
        self._revivals.starting(shard_id)
        self._silent.discard(shard_id)
        try:
            handle = self._shards.replace(shard_id, self._metadata.shard_nodes[shard_id])
        except Exception as exc:   # Ray's: e.g. its name still taken; tried again
            log.warning("%s: no new actor could start (%s)", shard_id, exc)
            self._silent.add(shard_id)
            self._revivals.died_again(shard_id, ShardDeath())
            return None
        log.info("%s: started a new actor", shard_id)
        address = self._shards.addresses.get(shard_id)
        if address is not None:
            self.shard_started(shard_id, address, self._shards.direct_addresses.get(shard_id, ""),
                               self._shards.pids.get(shard_id, 0))
        return handle

    def _start_rebalance(self) -> None:
        """Start ``rebalance_leaders`` on a query thread, not waited for (it waits for
        hand-overs); in process (the unit tests), run it now."""
        actor = _this_actor()
        if actor is None:
            self.rebalance_leaders()
        else:
            actor.rebalance_leaders.options(concurrency_group=QUERY_GROUP).remote()

    def rebalance_leaders(self) -> list[protocol.ElectionResult]:
        """Kafka's auto leader rebalance (query thread): a preferred election of the
        partitions led away from their preferred leader, where more than
        LEADER_IMBALANCE_PERCENT of a shard's preferred partitions are
        (control/leader_elections.py, ``imbalanced``). Logs and returns the results."""
        wanted = self._on_actor_thread(self._plan_rebalance)
        if not wanted:
            return []
        results = self.elect_leaders(protocol.ELECTION_PREFERRED, wanted)
        moved = [r for r in results if r.error is None]
        log.info("leader rebalance: %d of %d partitions led by their preferred leader again",
                 len(moved), len(results))
        for r in results:
            if r.error is not None:
                log.warning("leader rebalance: %s", r.error)
        return results

    def _plan_rebalance(self) -> list[tuple[str, int]]:
        wanted = leader_elections.imbalanced(self._metadata, limits.LEADER_IMBALANCE_PERCENT)
        topic_ids = {name: topic.topic_id for name, topic in self._metadata.topics.items()}
        self._moved_for_disk &= {(topic_ids[name], p) for name, p in self._leader_keys()}
        return [(name, p) for name, p in wanted
                if (topic_ids[name], p) not in self._moved_for_disk]

    def _leader_keys(self) -> list[tuple[str, int]]:
        return [(name, p) for name, topic in self._metadata.topics.items()
                for p in topic.leadership]

    def _resend_records(self, alive: set[str]) -> None:
        """Push the peers' addresses again to each shard that missed them, reopen the
        partitions of each restarted shard that missed that, then push every record
        again to each shard that missed one, of those that answer now."""
        missed_peers = sorted(self._peers_unsent & alive)
        if missed_peers:
            self._peers_unsent -= set(missed_peers)
            self._push_peers(missed_peers, limits.LEADER_PING_TIMEOUT_S)   # as records are
        for shard_id in sorted(self._reopen_unsent & alive):
            if self._reopen(shard_id):
                self._records_unsent.add(shard_id)   # sent below, now that it has them open
        for shard_id in sorted(self._records_unsent & alive):
            self._records_unsent.discard(shard_id)
            self._push_records(self._records_on(shard_id), {shard_id})

    def _elect(self, partitions: list[tuple[str, int]], alive: set[str],
               unclean: bool | None = None) -> list[tuple[PartitionId, str]]:
        """A new leader epoch, and leader among ``alive``, for each of ``partitions``
        (control/leadership.py decides who, or none); saved, then pushed to the
        replicas in ``alive``. ``unclean``: whether any replica may lead (None: as the
        topic's unclean.leader.election.enable says). Returns (partition, new leader
        or "") for each change."""
        changes, before = [], {}
        for name, partition in partitions:
            topic = self._metadata.topics[name]
            record = topic.leadership[partition]
            elected = leadership_rules.elect_leader(
                record, alive,
                topics.unclean_leader_election(topic.config) if unclean is None else unclean,
                min_insync=topics.min_insync_replicas(topic.config),
                needs_repair=self._repairing.get((name, partition), ()),
                controller_epoch=self._metadata.controller_epoch)
            if elected != record:
                before[PartitionId(name, partition)] = record
                topic.leadership[partition] = elected
                changes.append((PartitionId(name, partition), elected))
        if changes:
            self._save_records(before)   # before any shard or router hears of the new leaders
            self._push_records(changes, alive)
            for pid, record in changes:
                log.warning("%s-%d: leader %s (leader epoch %d, in sync %s)", pid.topic,
                            pid.partition, record.leader or "NONE: offline", record.leader_epoch,
                            ",".join(record.in_sync))
        return [(pid, record.leader) for pid, record in changes]

    # --- Elections asked for (electLeaders; control/leader_elections.py) --------------

    def elect_leaders(self, election_type: int, partitions: list[tuple[str, int]] | None
                      ) -> list[protocol.ElectionResult]:
        """Kafka's ElectLeaders (query thread): ``election_type`` ELECTION_PREFERRED
        gives each replicated partition asked (None: all) back to its preferred leader,
        handing it over first; ELECTION_UNCLEAN elects a leader for each offline one
        among any replica that answers. One result per partition, by topic then
        partition. MalformedRequestError for another type."""
        leader_elections.check_election_type(election_type)
        planned = self._on_actor_thread(self._plan_elections, election_type, partitions)
        handed = leader_elections.hand_over(planned.hand_overs, planned.handles) \
            if planned.hand_overs else {}
        finished = self._on_actor_thread(self._finish_elections, planned.hand_overs, handed) \
            if handed else []
        return sorted(planned.answered + planned.elected + finished,
                      key=lambda r: (r.topic, r.partition))

    def _plan_elections(self, election_type: int, partitions: list[tuple[str, int]] | None
                        ) -> _ElectionPlan:
        """Decide each partition; elect at once those whose leader does not answer (and
        the offline ones, for an unclean election). Actor thread."""
        asked = leader_elections.asked_partitions(self._metadata, partitions)
        topics_asked = self._metadata.topics
        replicas = {s for name, p in asked
                    if name in topics_asked and p < topics_asked[name].partitions
                    for s in topics_asked[name].replicas_of(p)}
        alive = self._answering(replicas)
        decided = leader_elections.plan(self._metadata, election_type, asked, alive,
                                        self._repairing)
        self._elect(decided.elect_now, alive,
                    unclean=True if election_type == protocol.ELECTION_UNCLEAN else None)
        self._push_to_handing_leaders(decided.hand_overs)
        return _ElectionPlan(decided.answered, self._elected_now(decided.elect_now),
                             decided.hand_overs,
                             {a.leader: self._shards[a.leader] for a in decided.hand_overs})

    def _push_to_handing_leaders(self, asks: list[leader_elections.HandOverAsk]) -> None:
        """Send each partition to hand over its record, as planned, to its leader (actor
        thread, before the hand-over asks). The controller answers a leader's in-sync
        change to the leader alone, which applies the answer on its loop later
        (shards/shard_replication.py, "In-sync changes"): right after the change the
        record may hold the preferred replica in sync while the leader does not yet,
        and would refuse the hand-over as to a replica out of sync. A leader that holds
        the record already ignores it; the other replicas were sent it when it was made."""
        if not asks:
            return
        changes = [(a.pid, self._metadata.topics[a.pid.topic].leadership[a.pid.partition])
                   for a in asks]
        self._push_records(changes, {a.leader for a in asks},
                           answered={s for _, record in changes for s in record.replicas})

    def _elected_now(self, partitions: list[tuple[str, int]]) -> list[protocol.ElectionResult]:
        results = []
        for name, p in partitions:
            leader = self._metadata.topics[name].leadership[p].leader
            results.append(protocol.ElectionResult(name, p, leader, None if leader else
                                                   EligibleLeadersNotAvailableError(
                f"{name}-{p}: no replica that may lead answers; it stays offline")))
        return results

    def _finish_elections(self, asks: list[leader_elections.HandOverAsk],
                          handed: dict[PartitionId, BrokerError | None]
                          ) -> list[protocol.ElectionResult]:
        """The preferred leader leads each partition handed over whose record did not
        change meanwhile (saved, then pushed); the others take writes again. Actor
        thread."""
        results, changes, given_up, before = [], [], [], {}
        ready = [a for a in asks if handed[a.pid] is None and self._changed_since(a) is None]
        confirmed = leader_elections.confirm(ready, {a.leader: self._shards[a.leader]
                                                     for a in ready}) if ready else {}
        for ask in asks:
            error = handed[ask.pid] or self._changed_since(ask) or confirmed[ask.pid]
            topic = self._metadata.topics.get(ask.pid.topic)
            record = topic.leadership.get(ask.pid.partition) if topic is not None else None
            if error is None:
                before[ask.pid] = record
                record = topic.leadership[ask.pid.partition] = self._elected(ask, record, topic)
                changes.append((ask.pid, record))
            else:
                given_up.append(ask)
            results.append(protocol.ElectionResult(ask.pid.topic, ask.pid.partition,
                                                   record.leader if record else "", error))
        if changes:
            try:   # before any shard or router hears of the new leaders
                self._save_records(before)
            except StorageError:   # none changed leader: every old one takes writes again
                self._end_hand_overs(asks)
                raise
            self._push_records(changes, set(self._shards.addresses))
            self._log_hand_overs({a.pid: a for a in asks}, changes)
        self._end_hand_overs(given_up)
        return results

    def _elected(self, ask: leader_elections.HandOverAsk, record: Leadership,
                 topic) -> Leadership:
        """``ask.to`` leads the partition handed over. Moved off a disk that refuses
        writes (``ask.why``), the old leader also leaves the in-sync set at once: it
        cannot append what the new leader takes, and while it counted, acks="all"
        produces were taken that no high watermark could pass for
        REPLICA_LAG_TIME_MAX_MS, then answered as perhaps stored (tester T-fd2 saw an
        idempotent Kafka producer store 167 records twice after such a window). It
        holds the whole log, so it stays eligible if too few are left in sync.
        Actor thread."""
        epoch = self._metadata.controller_epoch
        elected = leadership_rules.elect_replica(record, ask.to, controller_epoch=epoch)
        if not ask.why:
            return elected
        return leadership_rules.alter_in_sync(
            elected, elected.leader, elected.leader_epoch, elected.partition_epoch,
            tuple(r for r in elected.in_sync if r != ask.leader),
            topics.min_insync_replicas(topic.config),
            needs_repair=self._repairing.get((ask.pid.topic, ask.pid.partition), ()),
            controller_epoch=epoch)

    def _log_hand_overs(self, asks: dict[PartitionId, leader_elections.HandOverAsk],
                        changes: list[tuple[PartitionId, Leadership]]) -> None:
        """One line per partition handed over; remembers those moved for a disk that
        refused writes (the rebalance leaves them), forgets those given back."""
        for pid, record in changes:
            ask = asks[pid]
            mark = (self._metadata.topics[pid.topic].topic_id, pid.partition)
            if ask.why:   # WARNING: a disk to free
                self._moved_for_disk.add(mark)
                log.warning("%s-%d: leader %s -> %s (leader epoch %d): %s; it is not moved "
                            "back until a preferred election (plinth topic elect-leaders) once "
                            "that disk has room", pid.topic, pid.partition, ask.leader,
                            record.leader, record.leader_epoch, ask.why)
            else:   # INFO: the healthy outcome an operator asked for
                self._moved_for_disk.discard(mark)
                log.info("%s-%d: its preferred leader %s leads it again (leader epoch %d)",
                         pid.topic, pid.partition, record.leader, record.leader_epoch)

    def _changed_since(self, ask: leader_elections.HandOverAsk) -> BrokerError | None:
        """Why the replica the partition was handed to (its preferred leader, or one
        with room: ``move_leaders_off``) may not take it now: its record changed
        meanwhile (a failover, an in-sync change), or it is gone."""
        topic = self._metadata.topics.get(ask.pid.topic)
        record = topic.leadership.get(ask.pid.partition) if topic is not None else None
        if record is None:
            return UnknownTopicError(f"topic {ask.pid.topic!r} was deleted during the election")
        # (An in-sync change meanwhile is harmless: the leader refused writes all along
        # in this leader epoch, and the preferred replica must still be in sync, below.)
        if record.leader_epoch != ask.leader_epoch or record.leader != ask.leader:
            return PreferredLeaderNotAvailableError(
                f"{ask.pid.topic}-{ask.pid.partition} changed leader during its hand-over "
                f"({record.leader or 'none'} in leader epoch {record.leader_epoch}); run the "
                f"election again")
        return leadership_rules.replica_refusal(
            record, ask.to, set(record.replicas) - self._silent,
            needs_repair=self._repairing.get((ask.pid.topic, ask.pid.partition), ()),
            where=f"{ask.pid.topic}-{ask.pid.partition}")

    def _end_hand_overs(self, asks: list[leader_elections.HandOverAsk]) -> None:
        """Their leaders take writes again (not waited for long: one that does not
        answer takes them again after LEADER_HANDOVER_FENCE_MS)."""
        by_leader: dict[str, list[PartitionId]] = {}
        for ask in asks:
            if ask.leader in self._shards:
                by_leader.setdefault(ask.leader, []).append(ask.pid)
        for shard_id, outcome in wait_all({s: self._shards[s].end_hand_over(pids)
                                           for s, pids in by_leader.items()},
                                          limits.LEADER_PING_TIMEOUT_S).items():
            if isinstance(outcome, BrokerError):
                log.warning("%s did not take back writes after a hand-over that did not "
                            "finish (%s); it does after %d ms", shard_id, outcome,
                            limits.LEADER_HANDOVER_FENCE_MS)

    # --- Leaders whose disk refuses writes (control/disk_moves.py) ----------------------

    def leader_disk_refused(self, shard_id: str, error: str) -> None:
        """``shard_id``'s disk refused an append to a partition it leads (``error``; a
        nudge, at most one per DISK_REFUSED_NUDGE_INTERVAL_MS from each shard): hand
        the partitions it leads to in-sync replicas with room, on a query thread (it
        waits for the hand-overs), one move per shard at a time. Actor thread."""
        if self._shutting_down or shard_id not in self._shards:
            return
        self._disk_refused_s[shard_id] = self._monotonic_s()
        if shard_id in self._disk_moves_running or not self._leads_any(shard_id):
            return
        self._disk_moves_running.add(shard_id)
        actor = _this_actor()
        if actor is None:   # in process (the unit tests): now
            self.move_leaders_off(shard_id, error)
        else:
            actor.move_leaders_off.options(concurrency_group=QUERY_GROUP).remote(shard_id, error)

    def _leads_any(self, shard_id: str) -> bool:
        return any(record.leader == shard_id for topic in self._metadata.topics.values()
                   for record in topic.leadership.values())

    def move_leaders_off(self, shard_id: str, error: str) -> list[protocol.ElectionResult]:
        """Hand each replicated partition ``shard_id`` leads to an in-sync replica whose
        disk has room (control/disk_moves.py), as a preferred election hands over
        (query thread). Returns one result per partition handed over or not."""
        try:
            asked = self._on_actor_thread(self._plan_disk_asks, shard_id)
            answers = wait_all({s: handle.stats() for s, handle in asked.items()},
                               limits.STATUS_CALL_TIMEOUT_S)
            disks = {s: stats.get("disk", {}) for s, stats in answers.items()
                     if isinstance(stats, dict)}
            planned = self._on_actor_thread(self._plan_disk_moves, shard_id, error, disks)
            handed = leader_elections.hand_over(planned.hand_overs, planned.handles) \
                if planned.hand_overs else {}
            finished = self._on_actor_thread(self._finish_elections, planned.hand_overs,
                                             handed) if handed else []
            for result in finished:
                if result.error is not None:
                    log.warning("%s's disk refuses writes, but %s-%d stays on it: %s", shard_id,
                                result.topic, result.partition, result.error)
            return finished
        finally:
            try:
                self._on_actor_thread(self._disk_move_done, shard_id)
            except BrokerError as exc:   # the next nudge cannot start a move then: say so
                log.warning("%s: the end of its disk move was not recorded (%s); no other "
                            "move starts for it", shard_id, exc)

    def _plan_disk_asks(self, shard_id: str) -> dict[str, ShardHandle]:
        """The shards whose disks a move from ``shard_id`` asks about: it and the
        replicas of the partitions it leads, but the silent ones. Actor thread."""
        replicas = {s for topic in self._metadata.topics.values()
                    for record in topic.leadership.values() if record.leader == shard_id
                    for s in record.replicas}
        return {s: self._shards[s] for s in sorted(replicas)
                if s in self._shards and s not in self._silent}

    def _plan_disk_moves(self, shard_id: str, error: str, disks: dict[str, dict[str, int]]
                         ) -> _ElectionPlan:
        """Who takes each partition ``shard_id`` leads (disk_moves.plan), each leader
        sent its record as a preferred election's are. Actor thread."""
        replicas = set(self._plan_disk_asks(shard_id)) - {shard_id}
        now_s = self._monotonic_s()
        refused_lately = {s for s, at_s in self._disk_refused_s.items()
                          if now_s - at_s < limits.DISK_REFUSED_RECENT_S}
        decided = disk_moves.plan(self._metadata, shard_id, error, self._answering(replicas),
                                  disks, self._repairing, refused_lately)
        if decided.staying and self._disk_staying_said.get(shard_id) != decided.staying:
            self._disk_staying_said[shard_id] = decided.staying   # said once while the same
            log.warning("%s's disk refuses writes (%s); %d partitions it leads stay on it: %s",
                        shard_id, error, len(decided.staying), " | ".join(decided.staying))
        self._push_to_handing_leaders(decided.hand_overs)
        return _ElectionPlan([], [], decided.hand_overs,
                             {shard_id: self._shards[shard_id]} if decided.hand_overs else {})

    def _disk_move_done(self, shard_id: str) -> None:
        self._disk_moves_running.discard(shard_id)

    def _answering(self, shard_ids: set[str]) -> set[str]:
        """Those of ``shard_ids`` that may lead: alive by Ray, and not silent for
        LEADER_PING_MISSES_MAX pings of LEADER_PING_TIMEOUT_S in a row."""
        known = sorted(s for s in shard_ids if s in self._shards)
        outcomes = wait_all({s: self._shards[s].address() for s in known},
                            limits.LEADER_PING_TIMEOUT_S)
        answering = set()
        for shard_id, outcome in outcomes.items():
            if isinstance(outcome, RequestTimedOutError):
                self._silent.add(shard_id)
                misses = self._ping_misses[shard_id] = self._ping_misses.get(shard_id, 0) + 1
                if misses < limits.LEADER_PING_MISSES_MAX:
                    answering.add(shard_id)   # slow, maybe busy: not lost yet
                else:
                    self._outages.not_answering(
                        shard_id, f"{misses} leader pings in a row unanswered within "
                                  f"{limits.LEADER_PING_TIMEOUT_S} s each",
                        lambda s=shard_id: self._outage_facts(s))
            elif isinstance(outcome, BrokerError):
                self._silent.add(shard_id)
                self._outages.not_answering(shard_id, f"leader ping: {outcome}",
                                            lambda s=shard_id: self._outage_facts(s))
            else:
                self._ping_misses.pop(shard_id, None)
                self._silent.discard(shard_id)
                self._outages.answering(shard_id)
                answering.add(shard_id)
        return answering

    def _outage_facts(self, shard_id: str) -> OutageFacts:
        """For a shard's outage line: its process, node, and the partitions it leads.
        Any thread: plain reads of the metadata (a change racing them may make the
        count one off; it is a log line's)."""
        offline = sum(1 for topic in list(self._metadata.topics.values())
                      for p in range(topic.partitions) if topic.leader_of(p) == shard_id)
        return OutageFacts(self._shards.pids.get(shard_id, 0),
                           placement.node_name(self._metadata.shard_nodes.get(shard_id, "")),
                           offline)

    def _note_stats_answers(self, asked: dict[str, ShardHandle | None],
                            stats: dict[str, dict | None]) -> None:
        """Log the outages a stats call (status, a metrics scrape) found beginning or
        ending; a shard not asked (silent to the leader pings) is theirs to log."""
        for shard_id, handle in asked.items():
            if handle is None:
                continue
            if stats.get(shard_id) is None:
                self._stats_missed.add(shard_id)   # one set.add: safe from a query thread
                self._poke_reviver()
                self._outages.not_answering(
                    shard_id, f"no stats within {limits.STATUS_CALL_TIMEOUT_S} s",
                    lambda s=shard_id: self._outage_facts(s))
            else:
                self._outages.answering(shard_id)

    def _push_records(self, changes: list[tuple[PartitionId, Leadership]], to: set[str],
                      answered: set[str] = frozenset()) -> None:
        """Send the new records to the replicas among ``to``, waiting at most
        LEADER_PING_TIMEOUT_S: a replica that is down (the usual reason for a change)
        must not hold up the answer. Every other replica (but those ``answered``
        directly), and any that did not take them in time, is sent all its records
        again once it answers a leader check (``_resend_records``), or when it
        announces itself after a restart. A silent replica is not waited for at all:
        each in-sync change after a node's loss would otherwise wait for it again."""
        per_shard: dict[str, list[tuple[PartitionId, Leadership]]] = {}
        for pid, record in changes:
            for shard_id in record.replicas:
                if shard_id in to and shard_id in self._shards and shard_id not in self._silent:
                    per_shard.setdefault(shard_id, []).append((pid, record))
                elif shard_id not in answered and shard_id in self._shards:
                    self._records_unsent.add(shard_id)
        outcomes = wait_all({s: self._shards[s].set_leadership(records)
                             for s, records in per_shard.items()}, limits.LEADER_PING_TIMEOUT_S)
        for shard_id, outcome in outcomes.items():
            if isinstance(outcome, StorageError):   # it answered: its disk refused the save
                self._records_unsent.add(shard_id)
                self._records_unsaved(shard_id, outcome)
            elif isinstance(outcome, BrokerError):
                log.warning("%s; it gets its records again once it answers", outcome)
                self._records_unsent.add(shard_id)
                self._silent.add(shard_id)
            else:
                self._records_unsaved_by.discard(shard_id)

    def _records_unsaved(self, shard_id: str, error: StorageError) -> None:
        """``shard_id`` answered that it could not save its leadership records (a full
        or read-only disk): it is up and serves, so it is not taken for silent (which
        made status show it DOWN and its partitions offline); the records go again at
        each leader check until one is saved. Logged once until then: the checks run
        several times a second."""
        if shard_id in self._records_unsaved_by:
            return
        self._records_unsaved_by.add(shard_id)
        log.warning("%s could not save its leadership records: %s; it serves on, and gets "
                    "them again at each leader check until one is saved (not logged again "
                    "until then)", shard_id, error)

    def _push_peers(self, shard_ids: list[str] | None = None,
                    timeout_s: float = limits.CONTROL_CALL_TIMEOUT_S) -> None:
        """Tell every shard (or ``shard_ids``) where every shard listens, with this
        controller's epoch, waiting at most ``timeout_s``. A silent shard is not waited
        for. One that has not said where it listens (its constructor may still run:
        one whose directory another process locks waits there up to
        DATA_DIR_LOCK_WAIT_S_MAX, a long recovery longer, and Ray queues the call
        behind it) is sent the push but waited for at most LEADER_PING_TIMEOUT_S, as
        a leader check's resend is: a start waited its full CONTROL_CALL_TIMEOUT_S
        for it. Each of those, and any whose call fails, gets the peers again once it
        answers a leader check (``_resend_records``), and when it announces itself
        (``shard_started``). Actor thread."""
        addresses = dict(self._shards.addresses)
        epoch = self._metadata.controller_epoch
        targets = [s for s in shard_ids or self._shards.ids() if s in self._shards]
        self._peers_unsent.update(s for s in targets if s in self._silent)
        pushes = {s: self._shards[s].set_peers(addresses, epoch)
                  for s in targets if s not in self._silent}
        # sent together: the unanswered ones have had the answered ones' wait as well
        unanswered_wait_s = min(timeout_s, limits.LEADER_PING_TIMEOUT_S)
        unanswered_by_s = time.monotonic() + unanswered_wait_s
        outcomes = wait_all({s: call for s, call in pushes.items() if s in addresses},
                            timeout_s)
        outcomes.update(wait_all({s: call for s, call in pushes.items() if s not in addresses},
                                 max(0.0, unanswered_by_s - time.monotonic())))
        for shard_id, outcome in sorted(outcomes.items()):
            if isinstance(outcome, RequestTimedOutError) and shard_id not in addresses:
                log.info("%s has not said where it listens, nor answered the push of the "
                         "peers' addresses within %g s (its constructor may still run); it "
                         "gets them again once it answers", shard_id, unanswered_wait_s)
                self._peers_unsent.add(shard_id)
            elif isinstance(outcome, BrokerError):
                log.warning("%s; it gets the peers' addresses again once it answers", outcome)
                self._peers_unsent.add(shard_id)

    def _records_on(self, shard_id: str) -> list[tuple[PartitionId, Leadership]]:
        """The leadership records of the replicated partitions ``shard_id`` holds."""
        return [(PartitionId(name, p), record)
                for name, topic in self._metadata.topics.items()
                for p, record in topic.leadership.items() if shard_id in record.replicas]

    def tiering_changed(self, shard_id: str) -> None:
        """``shard_id`` says a sealed partition of it became wholly remote, or a re-sync
        asked for listed the store (a nudge; the polls at status, changes and start
        do the same, so one lost only delays): retire what can be retired now."""
        log.debug("%s: its tiering changed; looking at the draining shards", shard_id)
        self._rebalancer.retire_drained()

    def router_started(self, listen: str, node_address: str, kafka_address: str = "") -> None:
        self._routers[listen] = (node_address, kafka_address)
        self._routers_heard_s[listen] = self._router_clock_s

    def router_stopped(self, listen: str) -> None:
        self._routers.pop(listen, None)
        self._routers_heard_s.pop(listen, None)

    # --- Processes -----------------------------------------------------------------------

    def process_owner(self, pid: int) -> str:
        """What ran in process ``pid`` (query thread): a shard's id, "controller" for
        this actor's, or "" if not known. For the server's line on a Ray worker's death
        (plinth/ray_messages.py), which has the pid only; the process may already
        have been replaced by its restart, so a shard's earlier pids are kept. That
        line is also the controller's word that a worker died: for SHARD_DEATH_LOOK_S
        the reviver looks at every shard for ones Ray gave up on (revive_dead_shards)."""
        self._death_heard_s = self._monotonic_s()   # one store: safe from a query thread
        self._poke_reviver()   # it looks for shards Ray gave up on, for a while
        if pid == os.getpid():
            return "controller"
        for shard_id, shard_pid in list(self._shards.pids.items()):
            if shard_pid == pid:
                return shard_id
        with self._starting_pids_lock:
            starting = self._starting_pids.get(pid, "")
        return self._past_pids.get(pid, "") or starting

    # --- Routers' liveness --------------------------------------------------------------

    def _routers_heard(self, routers: tuple[tuple[str, str, str], ...]) -> None:
        """Each of ``routers`` (listen, node address, Kafka address), in the process of a
        ``routing`` caller, is alive: heard now, and registered again (to a controller
        Ray restarted, or one that forgot it after ROUTER_FORGOTTEN_S)."""
        self._tick_router_clock()
        for listen, node_address, kafka_address in routers:
            self._routers[listen] = (node_address, kafka_address)
            self._routers_heard_s[listen] = self._router_clock_s
        for listen, heard_s in list(self._routers_heard_s.items()):
            if self._router_clock_s - heard_s > limits.ROUTER_FORGOTTEN_S:
                del self._routers_heard_s[listen]
                self._routers.pop(listen, None)

    def _tick_router_clock(self) -> None:
        """Advance the routers' clock by the time since the last tick, but at most
        ROUTING_REFRESH_INTERVAL_S: a router is silent when it missed the refreshes
        the others made, not because this actor's thread was held up (a change
        waiting for a stopped shard), after which every router's queued refresh
        comes at once."""
        now_s = self._monotonic_s()
        self._router_clock_s += min(now_s - self._router_clock_ticked_s,
                                    limits.ROUTING_REFRESH_INTERVAL_S)
        self._router_clock_ticked_s = now_s

    def _live_routers(self) -> dict[str, tuple[str, str]]:
        """The routers heard from within ROUTER_SILENT_S_MAX (killed ones, or those of a
        lost node, are not: they stopped refreshing their routing table without
        ``router_stopped``): the only ones Kafka clients are told of, and status shows."""
        return {listen: addresses for listen, addresses in self._routers.items()
                if self._router_clock_s - self._routers_heard_s.get(listen, self._router_clock_s)
                <= limits.ROUTER_SILENT_S_MAX}

    # --- Queries on the actor thread (metadata only) --------------------------------

    def partition_replication(self) -> list[PartitionReplication]:
        """Every partition's replicas, in-sync count and leader, from the metadata: under
        replicated when a replica is out of sync, offline when it has no leader or its
        leader's shard does not serve (what the metrics and ``plinth status`` show)."""
        serving = set(self._shards.addresses) - set(self._shards.failures)
        out = []
        for name, topic in sorted(self._metadata.topics.items()):
            for p in range(topic.partitions):
                replicas = topic.replicas_of(p)
                in_sync = len(topic.leadership[p].in_sync) if topic.replicated else 1
                leader = topic.leader_of(p)
                out.append(PartitionReplication(name, p, len(replicas), in_sync, leader,
                                                not leader or leader not in serving))
        return out

    def routing(self, unless_version: tuple[int, int] | None = None,
                routers: tuple[tuple[str, str, str], ...] = ()) -> RoutingTable | None:
        """What a router needs: shard addresses and each topic's placement. None if
        the table is still the one of ``unless_version`` (the caller's): a router's
        periodic refresh of an unchanged table costs neither side a copy of it,
        which at 10,000 topics is 100 KB and milliseconds of work a second.
        ``routers``: those of the caller's process, alive (``_routers_heard``)."""
        self._routers_heard(routers)
        table = self._current_routing()
        return None if table.version == unless_version else table

    def _current_routing(self) -> RoutingTable:
        """The routing table, built again only where something changed: the topics'
        part after a save of the metadata, the rest (shards, routers) when unequal."""
        small = dict(shard_addresses=dict(self._shards.addresses),
                     direct_addresses=dict(self._shards.direct_addresses),
                     shard_ids=tuple(self._metadata.shards),
                     controller_epoch=self._metadata.controller_epoch,
                     kafka_brokers=tuple(sorted({kafka for _, kafka
                                                 in self._live_routers().values() if kafka})))
        built = self._routing_built
        stale = built is None or self._routing_topics_stale
        if not stale and all(getattr(built, key) == value for key, value in small.items()):
            return built
        owners, ranges = self._routing_of_topics(built, self._routing_topics_changed) \
            if stale else (built.owners, built.ranges)
        self._routing_topics_stale, self._routing_topics_changed = False, set()
        self._routing_tables_built += 1
        self._routing_built = RoutingTable(
            **small, owners=owners, ranges=ranges,
            version=(self._routing_instance_id, self._routing_tables_built))
        return self._routing_built

    def _routing_of_topics(self, built: RoutingTable | None = None,
                           changed: set[str] = frozenset()) -> tuple[dict, dict]:
        """The routing table's owners and ranges, from the metadata; a topic of
        ``built`` that is not in ``changed`` keeps its entries (at 5,000 topics,
        building every topic's took 11 % of the controller's time in a create)."""
        topics_meta = self._metadata.topics.items()
        kept_owners = {} if built is None else built.owners
        kept_ranges = {} if built is None else built.ranges
        owners = {name: kept_owners[name] if name in kept_owners and name not in changed
                  else tuple(t.leader_of(p) for p in range(t.partitions))
                  for name, t in topics_meta}
        ranges = {name: kept_ranges[name] if name in kept_ranges and name not in changed
                  else {p: tuple(ranges) for p, ranges in t.ranges.items()}
                  for name, t in topics_meta if t.ranges}
        return owners, ranges

    def list_topics(self) -> list[protocol.TopicInfo]:
        return [self._topic_info(name) for name in sorted(self._metadata.topics)]

    def list_topics_page(self, prefix: str = "", after: str = "",
                         limit: int = ALL_NAMES) -> NamesPage:
        """A page of the topic names (plinth/name_pages.py), without the internal topic
        (as listTopics): O(n log n) in the topics, on the actor thread, no shard asked."""
        check_page_args(prefix, after, limit, "list_topics_page")
        names = sorted(name for name in self._metadata.topics if name != topics.OFFSETS_TOPIC)
        return page_of(names, prefix, after, limit)

    # --- Queries that wait for shards (a query thread) ----------------------------------
    #
    # Each reads the controller's state only through a plan made on the actor thread
    # (``_on_actor_thread``): the shards to ask, and what the answer needs besides.

    def shard_stats(self) -> dict[str, dict | None]:
        """Each shard's ShardStats snapshot; None for a shard that does not answer (query
        thread)."""
        asked = self._on_actor_thread(self._plan_stats)
        stats = _stats_of(asked)
        self._note_stats_answers(asked, stats)
        return stats

    def status(self) -> protocol.StatusInfo:
        """Nodes, shards (with partitions, bytes and rates; a draining one's reason for
        not having retired) and routers (query thread). Retires removed shards whose
        last range retention has deleted, or is tiered (rebalancer.py)."""
        plan = self._on_actor_thread(self._plan_status)
        stats = _stats_of(plan.stats)
        self._note_stats_answers(plan.stats, stats)
        shards = [_shard_status(shard_id, shard_stats, plan.shards[shard_id])
                  for shard_id, shard_stats in stats.items()]
        # A leader's shard that does not answer now (stopped, hung, or restarting)
        # serves nothing: offline, though Ray still counts the shard alive.
        silent = {shard_id for shard_id, shard_stats in stats.items() if shard_stats is None}
        tier_claim_held, tier_claim = self._tier_claim
        return protocol.StatusInfo(plan.nodes, shards, plan.routers,
                                   sum(s.under_replicated for s in plan.replication),
                                   sum(s.offline or s.leader in silent for s in plan.replication),
                                   plan.node_names, tier_claim, tier_claim_held)

    def list_groups(self) -> list[protocol.GroupListing]:
        """Every consumer group known to any shard (members or committed offsets), by
        name, with its state from the shard that coordinates it (query thread). Its
        reply (listGroups, Kafka's ListGroups) cannot say that a shard is missing, so a
        shard that does not answer within STATUS_CALL_TIMEOUT_S (or was silent at the
        last leader check) fails it then, naming the shard, as Kafka's
        kafka-consumer-groups --list fails when a broker does not answer."""
        answers, unanswered = _answers_of(self._on_actor_thread(self._plan_stats),
                                          lambda handle: handle.group_listings())
        if unanswered:
            raise RequestTimedOutError(_groups_unanswered(unanswered, "listGroups"))
        return _one_listing_per_group(listing for per_shard in answers.values()
                                      for listing in per_shard)

    def list_groups_page(self, prefix: str = "", after: str = "",
                         limit: int = ALL_NAMES) -> NamesPage:
        """A page of the consumer groups, merged from each shard's own page of the groups
        it coordinates (exact: plinth/name_pages.py), so that no shard sends more than
        ``limit`` names (query thread). A shard that does not answer within
        STATUS_CALL_TIMEOUT_S (or was silent at the last leader check, then not asked)
        is left out, as status and describe_topic leave it out: the page is that of
        the others, and names it in ``unanswered``."""
        check_page_args(prefix, after, limit, "list_groups_page")
        pages, unanswered = _answers_of(self._on_actor_thread(self._plan_stats),
                                        lambda handle: handle.group_names_page(prefix, after,
                                                                               limit))
        return replace(merge_pages(pages.values(), limit), unanswered=unanswered)

    def topic_stats(self, names: list[str]) -> list[protocol.TopicStats]:
        """Each topic's bytes on the shards' disks and rates in and out, in ``names``'
        order, summed over its partitions' ranges as describe_topic asks them (of a
        replicated partition's current range, its leader), from the shards' counters
        in memory (query thread). A shard that does not answer within
        STATUS_CALL_TIMEOUT_S leaves its partitions out of ``partitions_answered``."""
        protocol.check_topic_stats_count(len(names))
        plan = self._on_actor_thread(self._plan_topic_stats, list(names))
        answers = wait_all({s: handle.partition_stats(pids)
                            for s, (handle, pids) in plan.asks.items()},
                           limits.STATUS_CALL_TIMEOUT_S)
        return _topic_stats(plan.partitions, [a for a in answers.values()
                                              if not isinstance(a, BrokerError)])

    def describe_topic(self, name: str) -> protocol.TopicInfo:
        """Each partition's offsets and bytes (from the shards holding its ranges; of a
        replicated partition's current range, its leader's), leader, replicas, in-sync
        replicas, leader epoch and high watermark (query thread). A shard that does not
        answer within STATUS_CALL_TIMEOUT_S (or was silent at the last leader check)
        leaves its partitions without offsets, as an offline one is shown."""
        plan = self._on_actor_thread(self._plan_describe, name)
        infos = wait_all({s: handle.partition_infos(pids)
                          for s, (handle, pids) in plan.asks.items()}, limits.STATUS_CALL_TIMEOUT_S)
        merged = _merge_ranges([p for per_shard in infos.values()
                                if not isinstance(per_shard, BrokerError) for p in per_shard],
                               plan.topic.placement)
        by_partition = {p.partition: p for p in merged}
        answered = {s for s, per_shard in infos.items() if not isinstance(per_shard, BrokerError)}
        plan.info.partition_info = [
            _with_replication(by_partition.get(p, protocol.PartitionInfo(p)), plan.topic, p,
                              answered)
            for p in range(plan.topic.partitions)]
        return plan.info

    def partition_offsets(self, topic: str, partition: int,
                          timestamp_ms: int = protocol.NO_TIME_LOOKUP) -> protocol.PartitionInfo:
        """Start and end offsets of a partition whose history spans several shards (query
        thread), and with ``timestamp_ms`` the first record stamped at or after it (each
        shard finds it in the ranges it holds; _found_in_ranges takes the first). Asks
        every holder of each range (of a replicated partition's sealed range, each
        replica that holds it) for a status call's time and takes what those
        that answer say, so that one down (or restarting: Ray holds calls to it) does
        not stop it, as long as every range has an answer (else the client retries the
        retriable error)."""
        plan = self._on_actor_thread(self._plan_partition_offsets, topic, partition)
        pid = PartitionId(topic, partition)
        infos = wait_all({s: handle.partition_infos([pid], timestamp_ms)
                          for s, handle in plan.asks.items()}, limits.STATUS_CALL_TIMEOUT_S)
        answering = {s for s, got in infos.items() if not isinstance(got, BrokerError)}
        for start_offset, its in plan.holders:
            if not its & answering:
                failed = [infos[s] for s in sorted(its) if s in infos]
                raise failed[0] if failed else UnavailableError(
                    f"{topic}-{partition}: no shard holding its offsets from "
                    f"{start_offset} ({', '.join(sorted(its))}) is running")
        answers = [i for s in sorted(answering) for i in infos[s]]
        merged = _merge_ranges(answers, plan.placement)[0]
        if timestamp_ms != protocol.NO_TIME_LOOKUP:
            merged.found_offset, merged.found_timestamp_ms = _found_in_ranges(answers, timestamp_ms)
        return merged

    def _on_actor_thread(self, plan: Callable[..., T], *args) -> T:
        """``plan(*args)``, a method of this controller, run on the actor thread, where
        every change runs (query thread): what it returns is the query's own copy.
        In process (the unit tests), where one thread runs everything, a plain call."""
        actor = _this_actor()
        if actor is None:
            return plan(*args)
        import ray

        answer = getattr(actor, plan.__name__).remote(*args)
        try:
            return ray.get(answer, timeout=limits.CONTROL_CALL_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            abandon(answer, f"the controller's {plan.__name__}")
            raise RequestTimedOutError(f"the controller's actor thread did not answer "
                                       f"{plan.__name__} within "
                                       f"{limits.CONTROL_CALL_TIMEOUT_S} s") from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BrokerError):
                raise cause from None
            raise

    # --- Plans of the queries (actor thread) -------------------------------------------

    def _plan_stats(self) -> dict[str, ShardHandle | None]:
        """Every shard, with its handle, or None if it is silent or waits for its new
        actor (not asked: one stuck in its constructor would hold the query)."""
        return {s: None if s in self._silent or self._revivals.not_serving(s) else self._shards[s]
                for s in self._shards.ids()}

    def _plan_status(self) -> _StatusPlan:
        self._rebalancer.retire_drained()
        all_nodes = self._shards.nodes()
        # The partitions each shard serves a range of, current or older (a removed one
        # only older ones: what its drain note counts too, rebalancer.py)
        served = {s: len(specs) for s, specs in self._metadata.specs_by_shard().items()}
        shards = {s: _ShardFacts(self._shards.addresses.get(s, ""),
                                 self._shards.direct_addresses.get(s, ""), served.get(s, 0),
                                 s in self._metadata.draining,
                                 placement.node_name(self._metadata.shard_nodes.get(s, "")),
                                 self._rebalancer.drain_reason(s), self._shown_pid(s),
                                 self._revivals.reason(s) or self._shards.failures.get(s, ""))
                  for s in self._shards.ids()}
        return _StatusPlan(
            nodes=[(n.node_id, n.address, n.alive) for n in all_nodes], shards=shards,
            stats=self._plan_stats(),
            routers=sorted((listen, node) for listen, (node, _) in self._live_routers().items()),
            replication=self.partition_replication(),
            node_names={n.node_id: placement.node_name(n.pin_resource) for n in all_nodes})

    def _plan_topic_stats(self, names: list[str]) -> _TopicStatsPlan:
        """The shards to ask, as describe_topic's (without the silent ones); UnknownTopicError
        names the first unknown topic."""
        partitions = {name: self._topic(name).partitions for name in names}
        asks: dict[str, tuple[ShardHandle, list[PartitionId]]] = {}
        down = self._known_down()   # once: it asks Ray for its nodes
        for name in dict.fromkeys(names):
            for s, specs in self._specs_to_ask(name, self._metadata.topics[name], down).items():
                if s not in self._silent and s in self._shards:
                    asks.setdefault(s, (self._shards[s], []))[1].extend(sp.id for sp in specs)
        return _TopicStatsPlan(partitions, asks)

    def _known_down(self) -> set[str]:
        """The shards a query would not hear from (actor thread): silent at the last
        leader check, not running, failed to start, or pinned to a node Ray lists
        dead (a shard holding only sealed ranges is not pinged by leader checks)."""
        return self._silent | set(self._shards.failures) | set(self._down_unasked())

    def _down_unasked(self) -> dict[str, str]:
        """Each shard known down without asking it, with why (actor thread): not
        running, failed to start, or on a node Ray lists dead."""
        on_dead = self._shards_on_dead_nodes()
        known = {}
        for s in self._metadata.shards:
            if s not in self._shards:
                known[s] = "is not running"
            elif s in self._shards.failures:
                known[s] = "did not start"
            elif s in on_dead:
                known[s] = f"is on node {on_dead[s]}, which is dead"
        return known

    def _shards_on_dead_nodes(self) -> dict[str, str]:
        """shard id -> the name of its node, of each shard pinned to a node that Ray
        lists dead and not alive again (actor thread). A node Ray does not list at
        all is not counted: its shards are not known down."""
        nodes = self._shards.nodes()
        alive = {n.pin_resource for n in nodes if n.alive}
        dead = {n.pin_resource for n in nodes if not n.alive} - alive
        return {s: placement.node_name(pin) for s, pin in self._metadata.shard_nodes.items()
                if pin in dead}

    def _plan_describe(self, name: str) -> _DescribePlan:
        """Without the silent shards: a describe during a node's loss must not wait for
        the dead one when the leader checks already know it is."""
        info = self._topic_info(name)
        topic = self._metadata.topics[name]
        specs = self._specs_to_ask(name, topic, self._known_down())
        return _DescribePlan(info, topic, {s: (self._shards[s], [sp.id for sp in specs[s]])
                                           for s in specs if s not in self._silent})

    def _specs_to_ask(self, name: str, topic: TopicMetadata,
                      down: Collection[str]) -> dict[str, list]:
        """shard id -> the partitions to ask it about: every range's holder, but of a
        replicated partition only one shard per range (``_replicated_holders_to_ask``),
        one not ``down`` (``_known_down``) where it can: its replicas hold the same
        records."""
        specs = self._metadata.specs_by_shard([name])
        if not topic.replicated:
            return specs
        asked = {(s, p) for p in range(topic.partitions)
                 for s in _replicated_holders_to_ask(topic, p, down)}
        return {s: kept for s, shard_specs in specs.items()
                if (kept := [sp for sp in shard_specs if (s, sp.partition) in asked])}

    def _plan_partition_offsets(self, topic: str, partition: int) -> _OffsetsPlan:
        meta = self._topic(topic)
        if not 0 <= partition < meta.partitions:
            raise PartitionOutOfRangeError(f"topic {topic!r} has {meta.partitions} partitions; "
                                           f"there is no partition {partition}")
        ranges = meta.ranges_of(partition)
        # A tiered range has no holder: its offsets are the owner's (its log start and
        # remote start reach back into it), asked for the current range.
        holders = [(r.start_offset, set(r.holders)) for r in ranges[:-1] if r.holders] + \
            [(ranges[-1].start_offset,
              set(ranges[-1].holders) | ({meta.leader_of(partition)} - {""}))]
        return _OffsetsPlan(
            holders=holders,
            asks={s: self._shards[s] for s in set().union(*(its for _, its in holders))
                  if s in self._shards},
            placement=list(meta.placement))

    def _topic(self, name: str) -> TopicMetadata:
        topic = self._metadata.topics.get(name)
        if topic is None:
            raise UnknownTopicError(f"unknown topic {name!r}")
        return topic

    def _topic_info(self, name: str) -> protocol.TopicInfo:
        topic = self._topic(name)
        return protocol.TopicInfo(name=name, partitions=topic.partitions,
                                  config=topics.with_tiering_defaults(topic.config),
                                  topic_id=topic.topic_id)

    # --- Changes: the entry ------------------------------------------------------------

    def run_change(self, method: str, deadline_unix_s: float, *args, **options):
        """Run the change ``method`` (one of CHANGES) with its arguments, unless it
        starts after ``deadline_unix_s``, when its caller (ControllerHandle._change) has
        given up: it waited behind other changes, each bounded by CHANGE_SHARD_WAIT_S
        per stopped shard. Then RequestTimedOutError, and nothing is changed (change
        thread)."""
        assert method in CHANGES, f"{method!r} is not a change"
        late_s = time.time() - deadline_unix_s
        if late_s > 0:
            log.warning("dropped %s: it started %.1f s after its caller's deadline", method, late_s)
            raise RequestTimedOutError(
                f"{method} was not run: it waited behind other changes until {late_s:.1f} s "
                f"after its caller gave up; nothing was changed")
        if method in _CHANGES_TIMED_INSIDE:
            options["deadline_unix_s"] = deadline_unix_s
        return getattr(self, method)(*args, **options)

    # --- Topics ---------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, config: dict[str, str],
                     replication_factor: int = 0) -> protocol.TopicInfo:
        """``replication_factor``: copies of each partition (0: the server's default)."""
        return self.create_topics([protocol.NewTopic(name, partitions, config,
                                                     replication_factor)])[0]

    def create_topics(self, new_topics: list[protocol.NewTopic]) -> list[protocol.TopicInfo]:
        """Create every topic of ``new_topics`` (Kafka's CreateTopics), or none: the first
        refusal raises (naming its topic) before any is created (change thread). All
        of them cost one open_partitions per shard, one save of the metadata and one
        push of their partition counts: each of those rewrites a file of every topic,
        so a console making thousands of topics makes them in batches
        (loadtest/console_scale.py). Until their partitions are open they are not in
        the metadata (no routing table, list or save has them), and their names are
        taken (``_creating``)."""
        plan = self._on_actor_thread(self._plan_create, new_topics, self._shards_down())
        try:
            told = self._open_created(plan)
        except BaseException:
            self._on_actor_thread(self._forget_creating, list(plan.topics))
            raise
        try:
            infos, pushes = self._on_actor_thread(self._finish_create, plan, told)
        except StorageError:   # not saved, so not created: the partitions opened go again
            self._undo_opens(plan, set())
            raise
        self._send_count_pushes(pushes)
        for name, topic in plan.topics.items():
            log.info("created topic %s with %d partitions, replication factor %d", name,
                     topic.partitions, topic.replication_factor)
        return infos

    def _shards_down(self) -> dict[str, str]:
        """The shards taking writes that a create must not place a partition on, each
        with why (change thread): not running, failed to start, or on a node Ray lists
        dead, known at once; any other that does not answer a ping within
        STATUS_CALL_TIMEOUT_S (stopped, hung, restarting). Before, a create placed on
        such a shard waited CHANGE_SHARD_WAIT_S for it and failed, and its client's
        retries failed so until their 30 s were out, replicated topics too."""
        known, asks = self._on_actor_thread(self._plan_shards_down)
        outcomes = wait_all({s: handle.address() for s, handle in asks.items()},
                            limits.STATUS_CALL_TIMEOUT_S)
        return known | {s: f"did not answer within {limits.STATUS_CALL_TIMEOUT_S:g} s "
                           f"(stopped, busy, or restarting)"
                        for s, outcome in outcomes.items() if isinstance(outcome, BrokerError)}

    def _plan_shards_down(self) -> tuple[dict[str, str], dict[str, ShardHandle]]:
        """The shards taking writes known down, each with why, and the handles of the
        others, to ping (actor thread)."""
        known = self._down_unasked()
        return known, {s: self._shards[s] for s in self._metadata.shards if s not in known}

    def _plan_create(self, new_topics: list[protocol.NewTopic],
                     down: dict[str, str] | None = None) -> _CreatePlan:
        """The new topics' metadata and where to open their partitions, never on a shard
        ``down`` (shard id -> why); their names taken until ``_finish_create`` or
        ``_forget_creating``. Actor thread."""
        made = {t.name: self._new_topic(t.name, t.partitions, t.config, t.replication_factor,
                                        down or {})
                for t in self._checked_new_topics(new_topics)}
        self._creating.update(made)
        return _CreatePlan(made, {s: (self._shards[s], specs)
                                  for s, specs in specs_by_shard(made).items()})

    def _finish_create(self, plan: _CreatePlan, told: list[str]
                       ) -> tuple[list[protocol.TopicInfo], dict[str, CountPush]]:
        """The opened topics join the metadata, saved; returns their infos and the
        pushes of their partition counts to the shards not ``told`` yet. Actor thread."""
        names = list(plan.topics)
        self._forget_creating(names)
        self._metadata.topics.update(plan.topics)

        def undo() -> None:
            for name in names:
                del self._metadata.topics[name]

        self._save_or_undo(names, undo)
        return ([self._topic_info(name) for name in names],
                self._shards.count_pushes(self._metadata.partition_counts(), changed=names,
                                          told=told, skip=self._silent))

    def _forget_creating(self, names: list[str]) -> None:
        """The names of a create that finished or failed are free again. Actor thread."""
        for name in names:
            self._creating.pop(name, None)

    def validate_new_topics(self, new_topics: list[protocol.NewTopic]
                            ) -> list[protocol.TopicInfo]:
        """What ``create_topics`` would answer (Kafka's validate_only): the same checks
        and refusals, each topic's info as it would be created; nothing is created or
        saved."""
        return [protocol.TopicInfo(name=t.name, partitions=t.partitions,
                                   config=topics.with_tiering_defaults(t.config))
                for t in self._checked_new_topics(new_topics)]

    def _checked_new_topics(self, new_topics: list[protocol.NewTopic]
                            ) -> list[protocol.NewTopic]:
        """Every topic of a createTopics checked (``_checked_new_topic``), and the request
        as a whole: its size, names given twice, the broker's topic limit."""
        if not 1 <= len(new_topics) <= limits.CREATE_TOPICS_BATCH_MAX:
            raise InvalidConfigError(f"createTopics carries {len(new_topics)} topics, outside "
                                     f"1..{limits.CREATE_TOPICS_BATCH_MAX}")
        checked = [self._checked_new_topic(t) for t in new_topics]
        names = [t.name for t in checked]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise TopicExistsError(f"topics {twice} are given twice in one createTopics")
        topics.refuse_collisions(names, itertools.chain(self._metadata.topics, self._creating))
        if len(self._metadata.topics) + len(self._creating) + len(names) > limits.TOPICS_MAX:
            creating = f" (and {len(self._creating)} being created)" if self._creating else ""
            raise TooManyTopicsError(
                f"cannot create {len(names)} topics ({names[0]!r} ...): the broker has "
                f"{len(self._metadata.topics)} topics{creating}, and the limit is "
                f"{limits.TOPICS_MAX}")
        return checked

    def _open_created(self, plan: _CreatePlan) -> list[str]:
        """Open the new topics' partitions on their shards, each recording the new
        counts in the same save of its manifest; returns those shards (change thread).
        If one fails or does not answer within CHANGE_SHARD_WAIT_S, every shard asked
        deletes them again (``_delete_opened``) and forgets the counts, and its error
        is raised, naming the topics as not created."""
        counts = {name: topic.partitions for name, topic in plan.topics.items()}
        outcomes = wait_all({s: handle.open_partitions(specs, partition_counts=counts)
                             for s, (handle, specs) in plan.opens.items()},
                            limits.CHANGE_SHARD_WAIT_S)
        failed = _first_failure(outcomes)
        if failed is None:
            return list(outcomes)
        self._undo_opens(plan, _unanswered(outcomes))
        raise _named_failure(failed, f"topics {list(counts)} were not created")

    def _undo_opens(self, plan: _CreatePlan, silent: set[str]) -> None:
        """A refused create's partitions deleted again and its counts forgotten by
        every shard asked to open them (change thread); the ``silent`` ones run both
        calls after the open, whenever they answer."""
        names = list(plan.topics)
        self._delete_opened(plan.opens, silent)
        for shard_id, outcome in wait_all(
                {s: handle.change_partition_counts({}, names)
                 for s, (handle, _) in plan.opens.items()
                 if s not in silent}, limits.CHANGE_SHARD_WAIT_S).items():
            if isinstance(outcome, BrokerError):
                log.warning("%s kept the counts of topics %s, not created: %s", shard_id,
                            names, outcome)
        for shard_id in silent:   # it runs it after the open, whenever it answers
            plan.opens[shard_id][0].change_partition_counts({}, names)

    def _delete_opened(self, opened: dict[str, tuple[ShardHandle, list[PartitionSpec]]],
                       silent: set[str]) -> None:
        """Delete the new partitions of a refused create or growth from the shards that
        were asked to open them (change thread): they are in those shards' manifests,
        and would be opened again at every restart, a file and a directory each, of a
        topic that does not exist. The ``silent`` ones, which did not answer the open,
        are asked too but not waited for: each runs the calls in the order this thread
        made them, the open first, whenever it answers again. Until a shard answers,
        the delete is owed (``_send_owed_deletes``: one that dies before it runs the
        call is sent it again when it starts)."""
        specs = {s: shard_specs for s, (_, shard_specs) in opened.items()}
        self._unless_disk_refuses(self._owe_deletes, specs, True)
        calls = {s: handle.delete_partitions([spec.id for spec in specs], keep_remote=True)
                 for s, (handle, specs) in opened.items()}
        answered = []
        for shard_id, outcome in wait_all({s: call for s, call in calls.items()
                                           if s not in silent},
                                          limits.CHANGE_SHARD_WAIT_S).items():
            if isinstance(outcome, BrokerError):
                log.warning("%s did not yet delete %d partitions of a refused create or "
                            "growth (it does when it runs the call): %s", shard_id,
                            len(opened[shard_id][1]), outcome)
            else:
                answered.append(shard_id)
        self._unless_disk_refuses(self._settle_deletes, {s: specs[s] for s in answered})

    def _unless_disk_refuses(self, record: Callable, *args) -> None:
        """Run a bookkeeping step of undoing a refused change (change thread); a save the
        disk refuses is logged and passed over: the undo goes on, and the change's own
        error, which is what the caller is told, is not hidden behind it."""
        try:
            self._on_actor_thread(record, *args)
        except StorageError as exc:
            log.warning("undoing a refused change: %s; it goes on unrecorded", exc)

    # --- Deletes owed (metadata.py's deletes_owed) ---------------------------------------

    def _owe_deletes(self, specs: dict[str, list[PartitionSpec]], save: bool = False) -> None:
        """Record that each shard is told to delete its ``specs`` (saved by the caller's
        next save, or here with ``save``). Actor thread."""
        for shard_id, shard_specs in specs.items():
            for (topic, topic_id), partitions in _by_topic(shard_specs).items():
                if not topic_id:   # (every topic has one since they were given at load)
                    continue
                for dropped in self._metadata.owe_deletes(
                        shard_id, OwedDelete(topic, topic_id, partitions)):
                    log.warning("%s owes more than %d deletes: forgot the oldest, of %s "
                                "(id %s) partitions %s, which stay on its disk", shard_id,
                                limits.OWED_DELETES_PER_SHARD_MAX, dropped.topic,
                                dropped.topic_id, list(dropped.partitions))
        if save:
            self._save([])

    def _settle_deletes(self, specs: dict[str, list[PartitionSpec]]) -> None:
        """Each shard deleted its ``specs``: no longer owed (saved). Actor thread."""
        settled = [self._metadata.settle_deletes(shard_id, set(_by_topic(shard_specs)))
                   for shard_id, shard_specs in specs.items()]
        if any(settled):
            self._save([])

    def _send_owed_deletes(self, shard_ids: list[str]) -> dict[str, list[PartitionId]]:
        """The recovery of partitions a shard was told to delete and never did (it died
        first, or this controller did before it heard back): each of ``shard_ids`` that
        owes deletes is sent them again, guarded by topic id (a new topic of the name
        is never touched), and those it answers are forgotten, saved. Returns, and
        logs, what each deleted. Actor thread (a shard's start, the controller's)."""
        calls = {(s, owed): self._shards[s].delete_stale_partitions(
                     [PartitionId(owed.topic, p) for p in owed.partitions], owed.topic_id)
                 for s in shard_ids if s in self._shards
                 for owed in self._metadata.deletes_owed.get(s, [])}
        if not calls:
            return {}
        deleted: dict[str, list[PartitionId]] = {}
        settled: dict[str, set[tuple[str, str]]] = {}
        for (shard_id, owed), outcome in wait_all(calls, limits.SHARD_START_WAIT_S).items():
            if isinstance(outcome, BrokerError):
                log.warning("%s did not run the deletes it owes (sent again at its next "
                            "start): %s", shard_id, outcome)
                continue
            settled.setdefault(shard_id, set()).add((owed.topic, owed.topic_id))
            deleted.setdefault(shard_id, []).extend(outcome)
        for shard_id, done in settled.items():
            self._metadata.settle_deletes(shard_id, done)
        if settled:
            self._save([])
        for shard_id, pids in deleted.items():
            if pids:
                log.warning("%s deleted %d partitions of deleted topics (or undone creates) "
                            "it had missed: %s", shard_id, len(pids),
                            ", ".join(f"{p.topic}-{p.partition}" for p in pids[:10]))
        return deleted

    def _checked_new_topic(self, new: protocol.NewTopic) -> protocol.NewTopic:
        """``new`` with its replication factor and normalized config; raises what
        refuses it (its name, partitions, factor or config, or it exists)."""
        name = new.name
        topics.validate_topic_name(name)
        topics.refuse_internal(name, "create")
        topics.validate_partition_count(name, new.partitions)
        factor = self._replication_factor(name, new.replication_factor)
        config = topics.normalize_topic_config(name, new.config, factor)
        topics.check_remote_storage_allowed(name, config, tier_url_given=self._tier.enabled)
        if name in self._metadata.topics:
            raise TopicExistsError(f"topic {name!r} already exists")
        if name in self._creating:
            raise TopicExistsError(f"topic {name!r} is being created")
        return protocol.NewTopic(name, new.partitions, config, factor)

    def _new_topic(self, name: str, partitions: int, config: dict[str, str],
                   factor: int, down: dict[str, str] | None = None) -> TopicMetadata:
        """A new topic's metadata, with a new topic id (a topic created again under
        the name of a deleted one is another topic: metadata.py). No partition is
        placed on a shard ``down`` (shard id -> why): a replicated one's replicas are
        the next shards in placement's order that are not down (as Kafka places new
        partitions on live brokers; a set made so is left alone by later changes of
        shards, rebalancer.py); a factor-1 one, whose shard is its hash's, cannot
        avoid it: UnavailableError naming it, and what to do."""
        shard_ids, pins = self._metadata.shards, self._metadata.shard_nodes
        down = down or {}
        topic_id = topics.new_topic_id()
        if factor == 1:
            placed = placement.place_topic(name, partitions, shard_ids)
            _refuse_placed_on_down(name, placed, down)
            return TopicMetadata(partitions, config, placed, topic_id=topic_id)
        up = [s for s in shard_ids if s not in down]
        if down and self._copies_refused(factor, up):
            raise UnavailableError(_too_few_up(name, factor, up, down, pins,
                                               self._allow_replicas_on_one_node))
        replicas = [placement.replicas_for(name, p, up, pins, factor,
                                           allow_same_node=self._allow_replicas_on_one_node)
                    for p in range(partitions)]
        epoch = self._metadata.controller_epoch
        return TopicMetadata(partitions, config, [r[0] for r in replicas], {}, factor,
                             {p: leadership_rules.initial_leadership(r, epoch)
                              for p, r in enumerate(replicas)}, topic_id)

    def _replication_factor(self, name: str, requested: int) -> int:
        """The factor a new topic gets; InvalidReplicationFactorError if the shards (or
        their nodes, unless replicas may share one) cannot hold that many copies."""
        nodes = placement.distinct_nodes(self._metadata.shards, self._metadata.shard_nodes)
        which = "replication factor"
        if requested == 0:
            default = self._default_replication_factor
            if default is None:
                default = 1 if nodes == 1 else min(limits.REPLICATION_FACTOR_DEFAULT_MULTI_NODE,
                                                   nodes)
            else:   # the user did not ask for it: say where it comes from
                which = "the server's --default-replication-factor"
            requested = default
        factor = topics.validate_replication_factor(name, requested)
        refused = self._copies_refused(factor)
        if refused == _TOO_FEW_SHARDS:
            raise InvalidReplicationFactorError(
                f"topic {name!r}: {which} {factor} {self._too_many_copies(refused)} "
                f"(add shards with plinth shards add, or start a new data dir with "
                f"--shards N)")
        if refused == _TOO_FEW_NODES:
            raise InvalidReplicationFactorError(
                f"topic {name!r}: {which} {factor} {self._too_many_copies(refused)}; start "
                f"the server with --allow-replicas-on-one-node to allow it (testing)")
        return factor

    def _copies_refused(self, factor: int, shard_ids: list[str] | None = None) -> str | None:
        """_TOO_FEW_SHARDS or _TOO_FEW_NODES if ``shard_ids`` (None: the shards taking
        writes) cannot hold ``factor`` copies of a partition, each on a shard of its
        own (and a node of its own, unless replicas may share one); None if they can."""
        shard_ids = self._metadata.shards if shard_ids is None else shard_ids
        if factor > len(shard_ids):
            return _TOO_FEW_SHARDS
        nodes = placement.distinct_nodes(shard_ids, self._metadata.shard_nodes)
        if factor > nodes and not self._allow_replicas_on_one_node:
            return _TOO_FEW_NODES
        return None

    def _too_many_copies(self, refused: str) -> str:
        """What the copies ``_copies_refused`` refused (``refused``, its answer) are more
        than."""
        shard_ids = self._metadata.shards
        if refused == _TOO_FEW_SHARDS:
            return (f"is more than the broker's {counted(len(shard_ids), 'shard')}: each "
                    f"replica needs its own shard")
        nodes = placement.distinct_nodes(shard_ids, self._metadata.shard_nodes)
        return (f"is more than the {counted(nodes, 'node')} the shards run on: a node's loss "
                f"would take several copies")

    def _refuse_impossible_factor_options(self) -> None:
        """InvalidConfigError, naming the option, if --default-replication-factor or
        --offsets-replication-factor asks for more copies than the shards (pinned to
        their nodes by now) can hold, as a topic create would be refused (one check:
        ``_copies_refused``). Without it the server started, then refused every topic
        created without a factor, and left the committed offsets unreplicated with
        only a line in controller.log."""
        for option, factor, what in (
                ("--default-replication-factor", self._default_replication_factor,
                 "every topic created without a factor would be refused"),
                ("--offsets-replication-factor", self._offsets_replication_factor,
                 f"{topics.OFFSETS_TOPIC}, the consumer groups' committed offsets, could not "
                 f"be created")):
            refused = None if factor is None else self._copies_refused(factor)
            if refused is None:
                continue
            remedy = ("give a smaller factor, or start a new data dir with more --shards"
                      if refused == _TOO_FEW_SHARDS else
                      "give a smaller factor, run shards on more nodes, or start the server "
                      "with --allow-replicas-on-one-node (testing)")
            raise InvalidConfigError(f"{option} {factor} {self._too_many_copies(refused)}, so "
                                     f"{what}: {remedy}")

    def alter_topic(self, name: str, changes: dict[str, str],
                    delete_config: tuple[str, ...] = ()) -> protocol.TopicInfo:
        """Change config entries of a topic, and set ``delete_config``'s keys back to their
        defaults (change thread). The new config is saved first, as Kafka's controller
        records a change before brokers apply it: it is the topic's from then on. Then
        the shards apply it at once (e.g. retention); one that does not within
        CHANGE_SHARD_WAIT_S raises its error, saying the config is saved: the shard
        applies it when it runs the call, or reopens its partitions with it after a
        restart."""
        plan = self._on_actor_thread(self._plan_alter, name, changes, delete_config)
        info, old_config = self._on_actor_thread(self._finish_alter, name, plan)
        log.info("altered topic %s: %s", name,
                 _config_changes(old_config, plan.config, delete_config))
        failed = _first_failure(wait_all(
            {s: handle.alter_partitions([spec.id for spec in specs], plan.config)
             for s, (handle, specs) in plan.asks.items()}, limits.CHANGE_SHARD_WAIT_S))
        if failed is not None:
            raise _named_failure(failed, f"topic {name!r} has its new config (saved), but "
                                         f"not every shard applied it yet")
        return info

    def _plan_alter(self, name: str, changes: dict[str, str],
                    delete_config: tuple[str, ...]) -> _TopicChangePlan:
        """The topic's new config, checked, and the shards to apply it. Actor thread."""
        topic = self._topic(name)
        kept = topics.config_without(name, topic.config, changes, delete_config)
        config = topics.normalize_topic_config(name, {**kept, **changes},
                                               topic.replication_factor)
        topics.check_config_change(name, topic.config, config)
        topics.check_remote_storage_allowed(name, config, tier_url_given=self._tier.enabled)
        return _TopicChangePlan(topic.topic_id, topic.partitions, config, None,
                                self._partition_asks(specs_by_shard({name: topic})))

    def _finish_alter(self, name: str, plan: _TopicChangePlan
                      ) -> tuple[protocol.TopicInfo, dict[str, str]]:
        """The new config, saved (before the shards apply it); returns the topic's
        info, and its config before (for the audit line). Actor thread."""
        topic = self._planned_topic(name, plan)
        old_config, topic.config = topic.config, plan.config
        self._save_or_undo([name], lambda: setattr(topic, "config", old_config))
        return self._topic_info(name), old_config

    def add_partitions(self, name: str, partition_count: int) -> protocol.TopicInfo:
        """Grow a topic to ``partition_count`` partitions (Kafka's CreatePartitions;
        change thread): the new ones are placed as a new topic's are, with the topic's
        replication factor, and opened empty; the old ones do not move. Records keyed
        before keep their partitions; keys hash over the new count from now on, as in
        Kafka. InvalidPartitionsError for a count not above the topic's. The new
        partitions are in the metadata (routing tables, saves) once they are open."""
        plan = self._on_actor_thread(self._plan_growth, name, partition_count)
        self._open_new_partitions(name, plan.asks)
        try:
            info, pushes = self._on_actor_thread(self._finish_growth, name, plan)
        except StorageError:   # not saved, so not grown: the new partitions go again
            self._delete_opened(plan.asks, set())
            raise
        self._send_count_pushes(pushes)
        log.info("topic %s grew from %d to %d partitions", name, plan.partitions,
                 partition_count)
        return info

    def _plan_growth(self, name: str, partition_count: int) -> _TopicChangePlan:
        """The topic as it will be, and where its new partitions open. Actor thread."""
        if name == topics.OFFSETS_TOPIC:
            raise InvalidPartitionsError(f"topic {name!r} is internal: its partition count "
                                         f"is fixed")
        topic = self._topic(name)
        old_count = topic.partitions
        topics.validate_partition_growth(name, old_count, partition_count)
        # Deletes still owed of an earlier, undone growth must not remove these (saved
        # with the growth, or owed again if it is undone too).
        self._metadata.cancel_deletes(name, topic.topic_id, range(old_count, partition_count))
        grown = self._new_topic(name, partition_count, topic.config, topic.replication_factor)
        after = replace(topic, partitions=partition_count,
                        placement=topic.placement + grown.placement[old_count:],
                        leadership={**topic.leadership,
                                    **{p: record for p, record in grown.leadership.items()
                                       if p >= old_count}})
        return _TopicChangePlan(topic.topic_id, old_count, topic.config, after,
                                self._partition_asks(specs_by_shard({name: after}, old_count)))

    def _finish_growth(self, name: str, plan: _TopicChangePlan
                       ) -> tuple[protocol.TopicInfo, dict[str, CountPush]]:
        """The grown topic, saved (its new partitions are open); returns its info and
        the pushes of its partition count. Actor thread."""
        topic = self._planned_topic(name, plan)
        before = (topic.partitions, topic.placement, dict(topic.leadership))
        topic.partitions = plan.topic.partitions
        topic.placement = list(plan.topic.placement)
        topic.leadership.update({p: record for p, record in plan.topic.leadership.items()
                                 if p >= plan.partitions})

        def undo() -> None:
            topic.partitions, topic.placement, topic.leadership = before

        self._save_or_undo([name], undo)
        return self._topic_info(name), self._shards.count_pushes(
            self._metadata.partition_counts(), changed=[name], skip=self._silent)

    def _open_new_partitions(self, name: str,
                             asks: dict[str, tuple[ShardHandle, list[PartitionSpec]]]) -> None:
        """Open a growth's new partitions on their shards (change thread); if one shard
        fails or does not answer within CHANGE_SHARD_WAIT_S, every shard asked deletes
        them again (``_delete_opened``) and its error is raised."""
        outcomes = wait_all({s: handle.open_partitions(specs)
                             for s, (handle, specs) in asks.items()},
                            limits.CHANGE_SHARD_WAIT_S)
        failed = _first_failure(outcomes)
        if failed is not None:
            self._delete_opened(asks, _unanswered(outcomes))
            raise _named_failure(failed, f"topic {name!r} was not grown")

    def delete_topic(self, name: str, topic_id: str = "") -> None:
        """Delete a topic (change thread): it leaves the metadata first, saved with the
        deletes owed (a crash mid-delete leaves deletes owed, sent again at the next
        start, not a topic whose partitions are half gone), then each shard deletes
        its partitions, and is owed nothing more. A shard that does not within
        CHANGE_SHARD_WAIT_S raises its error, naming the topic as deleted.
        ``topic_id`` (not ""): only if the topic has that id, else UnknownTopicIdError
        and nothing is deleted."""
        asks = self._on_actor_thread(self._forget_topic, name, topic_id)
        outcomes = wait_all({s: handle.delete_partitions([spec.id for spec in specs])
                             for s, (handle, specs) in asks.items()},
                            limits.CHANGE_SHARD_WAIT_S)
        failed = _first_failure(outcomes)
        deleted = {s: specs for s, (_, specs) in asks.items()
                   if not isinstance(outcomes[s], BrokerError)}
        self._send_count_pushes(self._on_actor_thread(self._after_delete, name,
                                                      _unanswered(outcomes), deleted))
        log.info("deleted topic %s", name)
        if failed is not None:
            raise _named_failure(failed, f"topic {name!r} is deleted, but not yet every "
                                         f"shard deleted its partitions (one does when it "
                                         f"runs the call, or is sent it again when it "
                                         f"next starts)")

    def _forget_topic(self, name: str, topic_id: str = ""
                      ) -> dict[str, tuple[ShardHandle, list[PartitionSpec]]]:
        """The topic out of the metadata, saved; returns where its partitions are to be
        deleted. Actor thread: the check of ``topic_id`` and the removal are one step,
        so no create of the name can come between them."""
        topics.refuse_internal(name, "delete")
        topic = self._topic(name)
        if topic_id and topic_id != topic.topic_id:
            raise UnknownTopicIdError(
                f"topic {name!r} has topic id {topic.topic_id}, not {topic_id}: nothing "
                f"deleted (was it created again under the name since {topic_id} was read?)")
        asks = self._partition_asks(specs_by_shard({name: topic}))
        self._owe_deletes({s: specs for s, (_, specs) in asks.items()})
        del self._metadata.topics[name]

        def undo() -> None:
            self._metadata.topics[name] = topic
            for shard_id in asks:
                self._metadata.settle_deletes(shard_id, {(name, topic.topic_id)})

        self._save_or_undo([name], undo)
        return asks

    def _after_delete(self, name: str, silent: set[str],
                      deleted: dict[str, list[PartitionSpec]]) -> dict[str, CountPush]:
        """Forget the deletes owed by the shards that made them (``deleted``), retire the
        draining shards the delete emptied; returns the pushes of the partition counts
        (the topic's is gone), but to the shards ``silent`` to the delete. Actor
        thread."""
        self._settle_deletes(deleted)
        self._rebalancer.retire_drained()
        return self._shards.count_pushes(self._metadata.partition_counts(), changed=[name],
                                         skip=self._silent | silent)

    def _partition_asks(self, specs: dict[str, list[PartitionSpec]]
                        ) -> dict[str, tuple[ShardHandle, list[PartitionSpec]]]:
        """Each shard's handle with its specs, for a change to call from its own
        thread."""
        return {s: (self._shards[s], shard_specs) for s, shard_specs in specs.items()}

    def _planned_topic(self, name: str, plan: _TopicChangePlan) -> TopicMetadata:
        """The topic a change planned for, as it was planned: changes run one at a
        time (the change thread), so nothing else may have changed it meanwhile."""
        topic = self._metadata.topics.get(name)
        if topic is None or topic.topic_id != plan.topic_id or topic.partitions != plan.partitions:
            raise AssertionError(f"topic {name!r} changed during a change planned for topic "
                                 f"id {plan.topic_id} with {plan.partitions} partitions")
        return topic

    def _send_count_pushes(self, pushes: dict[str, CountPush]) -> None:
        """Send the pushes of partition counts a change's plan made, wait for them, and
        note which shards missed theirs (change thread)."""
        took, missed = send_count_pushes(pushes, limits.CHANGE_SHARD_WAIT_S)
        self._on_actor_thread(self._note_count_pushes, took, missed)

    def _note_count_pushes(self, took: list[str], missed: list[str]) -> None:
        self._shards.note_count_pushes(took, missed)

    # --- Changes of shards ------------------------------------------------------------
    # Each runs on the actor thread, where its Rebalancer runs, called from the change
    # thread: one change at a time, topics' and shards' alike (a create's placement
    # must not see the shards change under it). A shard change that waits for a
    # stopped shard still holds up the elections: moves wait for each partition.

    def add_shards(self, count: int, deadline_unix_s: float | None = None
                   ) -> list[protocol.PartitionMove]:
        """``_add_shards`` (change thread)."""
        return self._on_actor_thread(self._add_shards, count, deadline_unix_s)

    def remove_shards(self, count: int) -> list[protocol.PartitionMove]:
        """``_remove_shards`` (change thread)."""
        return self._on_actor_thread(self._remove_shards, count)

    def move_shard(self, shard_id: str, node: str, *, allow_replicas_on_one_node: bool = False,
                   accept_data_loss: bool = False, force: bool = False) -> protocol.ShardMove:
        """``_move_shard`` (change thread)."""
        return self._on_actor_thread(self._move_shard, shard_id, node,
                                     allow_replicas_on_one_node, accept_data_loss, force)

    def _add_shards(self, count: int, deadline_unix_s: float | None = None
                    ) -> list[protocol.PartitionMove]:
        """Add ``count`` shards; partitions that rendezvous hashing now gives to them move
        without copying data: the old owner seals its log (keeps serving it for reads)
        and the new owner continues at the old end offset; a replicated partition whose
        replica set changes moves it so (rebalancer.py). Returns the moves. The new
        shards' start is waited for within the caller's ``deadline_unix_s``
        (``_shard_start_wait_s``), so that a refusal reaches the caller."""
        shard_ids = self._metadata.shards
        if not 1 <= count <= limits.SHARDS_MAX - len(shard_ids):
            raise InvalidConfigError(
                f"cannot add {counted(count, 'shard')} (count {count}) to the "
                f"{len(shard_ids)} there are: at most {limits.SHARDS_MAX} shards in all "
                f"(SHARDS_MAX), so count may be at most {limits.SHARDS_MAX - len(shard_ids)}; "
                f"no shard was started")
        self._refuse_silent_shards(f"add {counted(count, 'shard')}")
        wait_s = _shard_start_wait_s(deadline_unix_s)
        new_ids = [f"shard-{len(shard_ids) + i}" for i in range(count)]
        self._refuse_too_few_for_replicas(shard_ids + new_ids, self._pins_after_add(new_ids),
                                          f"add {counted(count, 'shard')}")
        # Not running yet (a removed shard still draining its older ranges is).
        fresh = [s for s in new_ids if s not in self._shards]
        unpinned = [s for s in fresh if s not in self._metadata.shard_nodes]
        self._shards.start(new_ids, self._metadata.shard_nodes, wait_s)
        missing = list(self._shards.not_serving(new_ids))
        if missing:
            self._undo_shard_starts(fresh, unpinned)
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more"
                                               if len(missing) > 10 else "")
            raise UnavailableError(f"cannot add shards: {shown} did not start within "
                                   f"{wait_s:.0f} s; none was added (the "
                                   f"{counted(len(fresh), 'shard')} started for it were "
                                   f"stopped)")
        self._push_peers()   # replicas on the new shards follow leaders, and are followed
        draining = [s for s in self._metadata.draining if s not in new_ids]
        try:
            return self._rebalancer.change_shards(shard_ids + new_ids, draining,
                                                  f"added {count} shards")
        except BrokerError:
            if not set(new_ids) & set(self._metadata.shards):   # undone (the groups' move)
                self._undo_shard_starts(fresh, unpinned)
                self._save()
            raise

    def _refuse_silent_shards(self, change: str) -> None:
        """UnavailableError naming the shards taking writes that do not answer within
        STATUS_CALL_TIMEOUT_S. A change of shards waits for each shard it moves
        partitions or groups from, on the actor thread, where elections run: begun
        while one is stopped, it would hold up every election for as long as it
        waits (CONTROL_CALL_TIMEOUT_S a call)."""
        shard_ids = self._metadata.shards
        outcomes = wait_all({s: self._shards[s].address() for s in shard_ids if s in self._shards},
                            limits.STATUS_CALL_TIMEOUT_S)
        silent = [s for s in shard_ids if not isinstance(outcomes.get(s), str)]
        if silent:
            raise UnavailableError(
                f"cannot {change}: {', '.join(silent)} did not answer within "
                f"{limits.STATUS_CALL_TIMEOUT_S:g} s (stopped, busy, or its node is lost); a "
                f"change of shards waits for every shard it moves partitions or groups from, "
                f"holding up leader elections meanwhile: retry once it answers (plinth "
                f"status), or re-create it on another node first (plinth shards move)")

    def _undo_shard_starts(self, shard_ids: list[str], unpinned: list[str]) -> None:
        """Stop the actors of ``shard_ids``, started for an add that failed, and take back
        the pins ``start`` gave ``unpinned``: no shard the metadata does not list is left
        running, and a later add starts and places them afresh."""
        for shard_id in shard_ids:
            self._shards.kill(shard_id)
        for shard_id in unpinned:
            self._metadata.shard_nodes.pop(shard_id, None)
        if shard_ids:
            log.warning("an add of shards failed: the actors of %s were stopped",
                        ", ".join(shard_ids))

    def _remove_shards(self, count: int) -> list[protocol.PartitionMove]:
        """Remove the ``count`` newest shards: the partitions they own move their writes
        to the others (no data copied), the groups they coordinate move with their
        committed offsets. A removed shard keeps serving its older ranges until none
        is left (topics deleted, or retention), and then stops. Returns the moves."""
        self._refuse_removing_offsets_replicas(count, self._metadata.shards[-count:])
        shard_ids = self._metadata.shards
        if not 1 <= count < len(shard_ids):
            raise InvalidConfigError(f"cannot remove {count} of {len(shard_ids)} shards: "
                                     f"at least one must stay")
        self._refuse_silent_shards(f"remove {counted(count, 'shard')}")
        self._refuse_too_few_for_replicas(shard_ids[:-count], self._metadata.shard_nodes,
                                          f"remove {counted(count, 'shard')}")
        draining = self._metadata.draining + shard_ids[-count:]
        moves = self._rebalancer.change_shards(shard_ids[:-count], draining,
                                               f"removed {count} shards")
        self._rebalancer.retire_drained()
        return moves

    def _lead_again(self, partitions: list[tuple[str, int]]) -> None:
        """A new leader epoch for each of ``partitions`` among its answering replicas: for
        the rebalancer, finishing a move at start, when no restarted shard leads again
        in the epoch it led before (its announcement, which would elect, comes later)."""
        replicas = {s for name, p in partitions
                    for s in self._metadata.topics[name].leadership[p].replicas}
        self._elect(partitions, self._answering(replicas))

    def _move_shard(self, shard_id: str, node: str, allow_replicas_on_one_node: bool = False,
                    accept_data_loss: bool = False, force: bool = False) -> protocol.ShardMove:
        """Re-create ``shard_id`` on the alive ``node`` (placement.node_named) after its
        node was lost for good (Kafka's reassignment off a decommissioned broker): it is
        pinned there (saved), started there on whatever that node's disk has at its
        directory (nothing, after a lost node), its partitions opened as needing repair,
        and each replica catches up from its leader and rejoins the in-sync set, so the
        factor is restored. Refused (InvalidConfigError, naming what is in the way):
        a node that already holds a replica of one of its partitions (unless
        ``allow_replicas_on_one_node``); partitions with no other copy that holds every
        acknowledged record, which would come back empty (unless ``accept_data_loss``);
        a shard whose node is alive and that answers (unless ``force``)."""
        if shard_id not in self._metadata.shards:
            raise InvalidConfigError(f"there is no shard {shard_id!r}; the shards are "
                                     f"{', '.join(self._metadata.shards)}")
        target = placement.node_named(self._shards.nodes(), node)
        source = placement.node_name(self._metadata.shard_nodes.get(shard_id, ""))
        to_name = placement.node_name(target.pin_resource)
        if not target.alive:
            raise InvalidConfigError(f"cannot move {shard_id} to node {to_name}: it is dead")
        if target.pin_resource == self._metadata.shard_nodes.get(shard_id):
            raise InvalidConfigError(f"{shard_id} is on node {to_name} already")
        if not allow_replicas_on_one_node:
            self._refuse_replicas_on(shard_id, target.pin_resource, to_name)
        repairing, emptied = self._copies_elsewhere(shard_id)
        # A shard that serves is refused first: moving one that is up is rarely meant
        # (a typo of the shard id), and --accept-data-loss is no answer to it.
        if not force and self._serving_on_alive_node(shard_id):
            raise InvalidConfigError(
                f"{shard_id} serves on node {source}, which is alive: moving it would stop it "
                f"there and start it on node {to_name} on what that node's disk holds, rebuild "
                f"its {len(repairing)} replica(s) from their leaders"
                f"{f' and empty {len(emptied)} partition(s)' if emptied else ''}; "
                f"pass --force to move it anyway (shards move is for a shard whose node is "
                f"lost: plinth status shows which are down)")
        if emptied and not accept_data_loss:
            raise InvalidConfigError(
                f"moving {shard_id} would lose {len(emptied)} partition(s) that have no other "
                f"copy holding every acknowledged record: {_partition_names(emptied)}; they "
                f"would come back empty; pass --accept-data-loss to move it anyway")
        self._shards.kill(shard_id)
        self._forget_sealed_copies(shard_id)
        self._metadata.shard_nodes[shard_id] = target.pin_resource
        self._save()   # pinned there from now on, whatever happens next
        self._shards.start([shard_id], self._metadata.shard_nodes)
        address = self._shards.addresses.get(shard_id)
        direct_address = self._shards.direct_addresses.get(shard_id, "")
        if address is None:
            raise UnavailableError(f"{shard_id} is pinned to node {to_name} but did not start "
                                   f"within {limits.SHARD_START_WAIT_S} s; it serves once it has "
                                   f"started and announced itself")
        log.warning("moved %s from node %s to node %s: %d replica(s) to repair, %d emptied",
                    shard_id, source, to_name, len(repairing), len(emptied))
        self._push_peers()   # every shard: its new address
        self.shard_started(shard_id, address, direct_address)   # partitions, elections, records
        return protocol.ShardMove(shard_id, source, to_name, address, repairing, emptied)

    def _refuse_replicas_on(self, shard_id: str, pin: str, node: str) -> None:
        """InvalidConfigError if a shard on the node pinned by ``pin`` holds a replica of a
        partition ``shard_id`` holds one of (a node's loss would take two copies)."""
        pins = self._metadata.shard_nodes
        shared = [f"{name}-{p} (on {other})"
                  for name, topic in sorted(self._metadata.topics.items())
                  for p, record in sorted(topic.leadership.items()) if shard_id in record.replicas
                  for other in record.replicas if other != shard_id and pins.get(other) == pin]
        if shared:
            raise InvalidConfigError(
                f"node {node} already holds a replica of {len(shared)} partition(s) of "
                f"{shard_id}: {', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''}; a "
                f"loss of that node would take two copies; pass --allow-replicas-on-one-node "
                f"to move it there anyway")

    def _copies_elsewhere(self, shard_id: str) -> tuple[list[tuple[str, int]],
                                                         list[tuple[str, int]]]:
        """The partitions ``shard_id`` holds a copy of, split: those whose every range
        it holds another shard holds in full too, and those of which some range no
        other shard does (factor 1, or the other replicas are behind), which a move
        empties. The first list has only those it is a current replica of, which a
        move rebuilds from their leaders; a partition it holds only older (sealed)
        ranges of, each held whole by another replica too, is in neither: its
        copies there are forgotten (``_forget_sealed_copies``), and nothing is lost."""
        repairing, emptied = [], []
        for name, topic in sorted(self._metadata.topics.items()):
            for p in range(topic.partitions):
                held = _ranges_held(topic, p, shard_id)
                if not held:
                    continue
                if not all(others for others in held.values()):
                    emptied.append((name, p))
                elif held.get(_CURRENT_RANGE) is not None:
                    repairing.append((name, p))
        return repairing, emptied

    def _forget_sealed_copies(self, shard_id: str) -> None:
        """Forget ``shard_id``'s copies of older (sealed) ranges that another replica
        holds whole too, before it starts again on a new node's empty disk: reads of
        them must go to those holders, and no follower would ever refill them (a
        sealed range has no leader). The caller saves."""
        for topic in self._metadata.topics.values():
            for p in range(topic.partitions):
                topic.forget_sealed_copy_on(p, shard_id)

    def _serving_on_alive_node(self, shard_id: str) -> bool:
        """The shard's node is alive and the shard answers a ping."""
        pin = self._metadata.shard_nodes.get(shard_id)
        if not any(n.alive and n.pin_resource == pin for n in self._shards.nodes()):
            return False
        return bool(self._answering({shard_id}))

    def _refuse_removing_offsets_replicas(self, count: int, removed: list[str]) -> None:
        """The internal topic of committed offsets does not move with the shards (a slot's
        log is its groups' whole state: a new replica set starting at a seal offset
        would start without it), so removing a shard that holds one of its replicas is
        refused."""
        offsets = self._metadata.topics.get(topics.OFFSETS_TOPIC)
        holding = sorted({s for r in offsets.leadership.values() for s in r.replicas}
                         & set(removed)) if offsets is not None else []
        if holding:
            raise InvalidConfigError(
                f"cannot remove {count} shard(s): {', '.join(holding)} hold replicas of "
                f"{topics.OFFSETS_TOPIC} (the consumer groups' committed offsets), which "
                f"cannot move yet")

    def _refuse_too_few_for_replicas(self, shard_ids: list[str], shard_nodes: dict[str, str],
                                     change: str) -> None:
        """InvalidConfigError, before anything changes, if the shards a change leaves
        (``shard_ids``, on the nodes of ``shard_nodes``) cannot hold every replicated
        topic's copies, each on its own node unless replicas may share one (the
        rebalancer would fail placing them halfway through the change), or the copies
        the server's factor options ask for (the next start would refuse them:
        ``_refuse_impossible_factor_options``)."""
        nodes = placement.distinct_nodes(shard_ids, shard_nodes)
        room = len(shard_ids) if self._allow_replicas_on_one_node else min(len(shard_ids), nodes)
        too_many = sorted((t.replication_factor, n) for n, t in self._metadata.topics.items()
                          if t.replication_factor > room)
        leaves = (f"the {len(shard_ids)} shards it leaves on {nodes} node(s) can hold {room} "
                  f"copies of a partition{'' if self._allow_replicas_on_one_node else _OWN_NODES}")
        if too_many:
            factor, name = too_many[-1]
            raise InvalidConfigError(
                f"cannot {change}: topic {name!r} has replication factor {factor}, and {leaves}")
        for option, factor in (("--default-replication-factor", self._default_replication_factor),
                               ("--offsets-replication-factor",
                                self._offsets_replication_factor)):
            if factor is not None and factor > room:   # the server would not start again
                raise InvalidConfigError(
                    f"cannot {change}: the server's {option} is {factor}, and {leaves}, so "
                    f"the server would refuse to start with it again (and refuse every topic "
                    f"created without a factor meanwhile): restart it with a smaller "
                    f"{option} first")

    def _pins_after_add(self, new_ids: list[str]) -> dict[str, str]:
        """The shards' nodes once ``new_ids`` are added: each one not pinned yet goes where
        ShardSet.start will put it (placement.node_for_new_shard)."""
        pins = dict(self._metadata.shard_nodes)
        alive = [node.pin_resource for node in self._shards.nodes() if node.alive]
        for shard_id in new_ids:
            if shard_id not in pins:
                pins[shard_id] = placement.node_for_new_shard(alive, pins)
        return pins


_OWN_NODES = (" (each on its own node; a server started with --allow-replicas-on-one-node "
              "lets copies share one)")


_CURRENT_RANGE = -1   # _ranges_held's key for the range taking the writes

_DOWN_REMEDY = ("retry once it answers (plinth status shows the shards up or DOWN), or, if "
                "its node is lost for good, re-create it on an alive node first (plinth "
                "shards move SHARD --node NODE)")


def _refuse_placed_on_down(name: str, placed: list[str], down: dict[str, str]) -> None:
    """UnavailableError if a factor-1 topic's partitions (``placed``: each one's shard)
    go to a shard ``down`` (shard id -> why): the hash gives each partition its one
    shard, and a partition put elsewhere would move at the next change of shards."""
    hit = sorted({s for s in placed if s in down})
    if not hit:
        return
    partitions = [p for p, s in enumerate(placed) if s in down]
    why = "; ".join(f"{s} {down[s]}" for s in hit)
    raise UnavailableError(
        f"topic {name!r} was not created: {counted(len(partitions), 'partition')} of it "
        f"({', '.join(map(str, partitions[:8]))}{', ...' if len(partitions) > 8 else ''}) "
        f"would be on {', '.join(hit)}, which {'is' if len(hit) == 1 else 'are'} down "
        f"({why}), and a partition of one copy has no other shard to go to; "
        f"{_DOWN_REMEDY}; or create it with a replication factor of 2 or more, whose "
        f"replicas go to the shards that answer")


def _too_few_up(name: str, factor: int, up: list[str], down: dict[str, str],
                pins: dict[str, str], same_node_allowed: bool) -> str:
    """Why a replicated topic cannot be placed on the shards ``up`` alone."""
    nodes = placement.distinct_nodes(up, pins)
    room = len(up) if same_node_allowed else min(len(up), nodes)
    why = "; ".join(f"{s} {down[s]}" for s in sorted(down))
    return (f"topic {name!r} was not created: replication factor {factor} needs {factor} "
            f"shards that answer{'' if same_node_allowed else ', each on its own node'}, and "
            f"with {', '.join(sorted(down))} down ({why}) the {counted(len(up), 'shard')} "
            f"that answer on {counted(nodes, 'node')} hold {room}; {_DOWN_REMEDY}")


def _ranges_held(topic: TopicMetadata, partition: int, shard_id: str) -> dict[int, set[str]]:
    """The ranges of the partition ``shard_id`` holds a copy of (by start offset;
    the current range as _CURRENT_RANGE), each with the other shards that hold every
    acknowledged record of it: of a sealed range, its other holders (each held it
    whole when it was sealed); of the current one, the other in-sync or eligible
    replicas (a factor-1 owner has none)."""
    ranges = topic.ranges_of(partition)
    held = {r.start_offset: set(r.holders) - {shard_id}
            for r in ranges[:-1] if shard_id in r.holders}
    if topic.replicated:
        record = topic.leadership[partition]
        if shard_id in record.replicas:
            held[_CURRENT_RANGE] = (set(record.in_sync) | set(record.eligible)) - {shard_id}
    elif topic.placement[partition] == shard_id:
        held[_CURRENT_RANGE] = set()
    return held


def _replicated_holders_to_ask(topic: TopicMetadata, partition: int,
                               down: Collection[str] = ()) -> set[str]:
    """The shards a describe asks about a replicated partition: the leader, for the
    current range (none while offline), and for each older (sealed) range that no
    shard asked holds, one of its holders that is not known ``down``, one outside
    the current replica set where there is one: a current replica's log holds the
    current range too, which the leader's answer counts already (without such a
    holder, that range's bytes are counted twice). Without the sealed ranges'
    holders, a partition whose writes moved (plinth shards add or remove) was
    described from its new leader alone: its start offset that of the new range,
    its bytes that leader's. A holder down would not be asked at all (the plans
    leave out silent shards): before 2026-12-06 the first one outside the replica
    set was picked, down or not, and a lost node's range was left out, so the
    partition showed a later start offset and a part of its bytes."""
    record = topic.leadership[partition]
    asked = {record.leader} if record.leader else set()
    replicas = set(record.replicas)
    for sealed in topic.ranges_of(partition)[:-1]:
        holders = sealed.holders
        if not holders or asked & (set(holders) - set(down)):   # tiered, or covered
            continue
        up = [h for h in holders if h not in down] or list(holders)
        outside = [h for h in up if h not in replicas]
        asked.add((outside or up)[0])
    return asked


def _shard_start_wait_s(deadline_unix_s: float | None) -> float:
    """How long an add of shards waits for its new shards to start: SHARD_START_WAIT_S,
    or less if its caller's deadline comes sooner, keeping SHARD_ADD_ANSWER_MARGIN_S to
    stop them and answer, so that the caller hears why (a CLI's default 30 s request
    timeout is no longer than the wait). RequestTimedOutError, with nothing started,
    when less than SHARD_START_WAIT_S_MIN would be left."""
    if deadline_unix_s is None:
        return limits.SHARD_START_WAIT_S
    left_s = deadline_unix_s - time.time() - limits.SHARD_ADD_ANSWER_MARGIN_S
    if left_s < limits.SHARD_START_WAIT_S_MIN:
        raise RequestTimedOutError(
            f"cannot add shards: {max(left_s, 0):.1f} s of the request's timeout would be "
            f"left to start them, under the {limits.SHARD_START_WAIT_S_MIN:g} s a shard may "
            f"need; nothing was added: give the request a longer timeout "
            f"(--request-timeout-ms)")
    return min(limits.SHARD_START_WAIT_S, left_s)


def _first_failure(outcomes: dict[str, object]) -> BrokerError | None:
    """The first error of ``wait_all``'s outcomes, by shard id; None if all answered."""
    return next((o for _, o in sorted(outcomes.items()) if isinstance(o, BrokerError)), None)


def _by_topic(specs: list[PartitionSpec]) -> dict[tuple[str, str], tuple[int, ...]]:
    """(topic, topic id) -> the partitions of ``specs`` (sorted, each once)."""
    partitions: dict[tuple[str, str], set[int]] = {}
    for spec in specs:
        partitions.setdefault((spec.topic, spec.topic_id), set()).add(spec.partition)
    return {key: tuple(sorted(found)) for key, found in partitions.items()}


def _unanswered(outcomes: dict[str, object]) -> set[str]:
    """The shards whose outcome in ``wait_all``'s is an error: a change must not wait
    for them again."""
    return {s for s, outcome in outcomes.items() if isinstance(outcome, BrokerError)}


def _named_failure(error: BrokerError, what: str) -> BrokerError:
    """``error`` (of a shard, naming it and the call) with what it did to a change,
    logged: the change's caller may have stopped waiting."""
    log.warning("%s: %s", what, error)
    return type(error)(f"{what}: {error}")


def _partition_names(refs: list[tuple[str, int]], shown_max: int = 10) -> str:
    names = ", ".join(f"{topic}-{p}" for topic, p in refs[:shown_max])
    return names + (f" and {len(refs) - shown_max} more" if len(refs) > shown_max else "")


def _with_replication(info: protocol.PartitionInfo, topic: TopicMetadata,
                      partition: int, answered: set[str]) -> protocol.PartitionInfo:
    """``info`` with the partition's leader (as ``shard``; "" if none, or if its shard is
    not among those that ``answered`` the describe: nothing serves it now, and the
    offsets it lacks are not an empty log's), replicas, in-sync replicas, leader epoch
    and high watermark. A shard's end offset is its high watermark (what consumers may
    read), unless it reports one of its own."""
    high_watermark = info.high_watermark or info.end_offset
    if not topic.replicated:
        owner = topic.placement[partition]
        return replace(info, shard=owner if owner in answered else "", replicas=[owner],
                       in_sync_replicas=[owner], leader_epoch=0, high_watermark=high_watermark)
    record = topic.leadership[partition]
    return replace(info, shard=record.leader if record.leader in answered else "",
                   replicas=list(record.replicas), in_sync_replicas=list(record.in_sync),
                   leader_epoch=record.leader_epoch, high_watermark=high_watermark)


def _merge_ranges(infos: list[protocol.PartitionInfo], owners: list[str]) -> list[protocol.PartitionInfo]:
    """One PartitionInfo per partition from the infos of all its ranges: the first start
    (local, and remote where any range has remote segments), the last end (remote too),
    the bytes of all (local and remote), the current owner; not listed if any range's
    remote view is not (its remote fields are then a lower bound). A look-up by time
    is merged by _found_in_ranges."""
    merged: dict[int, protocol.PartitionInfo] = {}
    for info in infos:
        got = merged.get(info.partition)
        if got is None:
            merged[info.partition] = replace(info, shard=owners[info.partition])
            continue
        got.start_offset = min(got.start_offset, info.start_offset)
        got.local_start_offset = min(got.local_start_offset, info.local_start_offset)
        got.end_offset = max(got.end_offset, info.end_offset)
        got.high_watermark = max(got.high_watermark, info.high_watermark)
        got.size_bytes += info.size_bytes
        got.remote_bytes += info.remote_bytes
        got.remote_not_listed = got.remote_not_listed or info.remote_not_listed
        if info.has_remote:
            got.remote_start_offset = (info.remote_start_offset if not got.has_remote else
                                       min(got.remote_start_offset, info.remote_start_offset))
            got.remote_end_offset = max(got.remote_end_offset, info.remote_end_offset)
    return [merged[p] for p in sorted(merged)]


def _found_in_ranges(infos: list[protocol.PartitionInfo], timestamp_ms: int) -> tuple[int, int]:
    """(offset, timestamp) of a look-up by time over a partition's ranges, from what
    each shard found in the ranges it holds (which do not overlap): for a time, the
    smallest offset (the first in offset order); for MAX_TIMESTAMP, the largest
    timestamp, the smallest offset among equals. (-1, -1) if none found one."""
    found = [(info.found_offset, info.found_timestamp_ms) for info in infos
             if info.found_offset != protocol.OFFSET_NONE]
    if not found:
        return protocol.OFFSET_NONE, protocol.TIMESTAMP_UNKNOWN
    if timestamp_ms == protocol.MAX_TIMESTAMP:
        return min(found, key=lambda answer: (-answer[1], answer[0]))
    return min(found)


def _topic_stats(partitions: dict[str, int], answers: list[dict]) -> list[protocol.TopicStats]:
    """Each topic's TopicStats, summed from the shards' partition_stats answers (each
    (topic, partition) -> (size, records/s in, bytes/s in, records/s out, bytes/s out))."""
    stats = {name: protocol.TopicStats(name, count) for name, count in partitions.items()}
    answered: dict[str, set[int]] = {name: set() for name in partitions}
    for answer in answers:
        for (topic, partition), (size, r_in, b_in, r_out, b_out) in answer.items():
            s = stats.get(topic)
            if s is None:
                continue
            s.size_bytes += size
            s.records_in_per_s += r_in
            s.bytes_in_per_s += b_in
            s.records_out_per_s += r_out
            s.bytes_out_per_s += b_out
            answered[topic].add(partition)
    for name, s in stats.items():
        s.partitions_answered = len(answered[name])
    return list(stats.values())


def _one_listing_per_group(listings: Iterable[protocol.GroupListing]) -> list[protocol.GroupListing]:
    """One listing per group, by name. Two shards may both list a group for a moment
    (a slot changing leader); the one that has members there wins over an Empty one,
    since a group with members anywhere is not empty."""
    by_name: dict[str, protocol.GroupListing] = {}
    for listing in listings:
        known = by_name.get(listing.group)
        if known is None or known.state == "Empty":
            by_name[listing.group] = listing
    return [by_name[name] for name in sorted(by_name)]


def _answers_of(plan: dict[str, ShardHandle | None], ask: Callable[[ShardHandle], PendingCall[T]]
                ) -> tuple[dict[str, T], list[str]]:
    """``ask(handle)`` of every shard of ``plan`` that has a handle (``_plan_stats``: the
    silent ones have none), all at once, for STATUS_CALL_TIMEOUT_S: the answers by shard,
    and the shards that did not answer, or were not asked, sorted (query thread)."""
    outcomes = wait_all({s: ask(handle) for s, handle in plan.items() if handle is not None},
                        limits.STATUS_CALL_TIMEOUT_S)
    answers = {s: got for s, got in outcomes.items() if not isinstance(got, BrokerError)}
    return answers, sorted(s for s in plan if s not in answers)


def _groups_unanswered(shard_ids: list[str], what: str) -> str:
    """Why ``what``, a listing of the groups, lacks the groups of ``shard_ids``."""
    whose = "it coordinates" if len(shard_ids) == 1 else "they coordinate"
    return (f"{what}: {', '.join(shard_ids)} did not answer within "
            f"{limits.STATUS_CALL_TIMEOUT_S:g} s, or at the last leader check (stopped, hung, "
            f"restarting, or its node is lost), so the groups {whose} cannot be listed; "
            f"retry once it answers")


def _stats_of(plan: dict[str, ShardHandle | None]) -> dict[str, dict | None]:
    """Each shard's stats snapshot, asked of all at once, for STATUS_CALL_TIMEOUT_S; None
    for one that does not answer, or was not asked (query thread)."""
    outcomes = wait_all({s: handle.stats() for s, handle in plan.items() if handle is not None},
                        limits.STATUS_CALL_TIMEOUT_S)
    return {s: None if isinstance(outcomes.get(s), BrokerError) else outcomes.get(s)
            for s in plan}


def _shard_status(shard_id: str, stats: dict | None, facts: _ShardFacts) -> protocol.ShardStatus:
    size_bytes = sum(values["size_bytes"] for values in stats["logs"].values()) if stats else 0
    return protocol.ShardStatus(
        shard_id, facts.address, stats is not None, facts.partitions, size_bytes,
        stats["records_per_s"] if stats else 0.0, stats["bytes_per_s"] if stats else 0.0,
        facts.draining, facts.node_name, facts.direct_address,
        *_requests_by_socket(stats), *_uploads(stats), draining_reason=facts.drain_reason,
        records_out_per_s=(stats or {}).get("records_out_per_s", 0.0),
        bytes_out_per_s=(stats or {}).get("bytes_out_per_s", 0.0),
        pid=(stats or {}).get("pid", facts.pid), **_disk(stats),
        down_reason="" if stats is not None else facts.down_reason,
        remote_partitions_not_listed=sum(
            not t.get("remote_listed", 1) for t in (stats or {}).get("tier", {}).values()))


def _disk(stats: dict | None) -> dict[str, int]:
    """A shard's file system and disk reserve (DiskReserve.snapshot), as ShardStatus
    fields; zeros if not known (no answer, the disk cannot be asked)."""
    disk = (stats or {}).get("disk", {})
    return {"disk_free_bytes": disk.get("free_bytes", 0),
            "disk_total_bytes": disk.get("total_bytes", 0),
            "disk_reserve_bytes": disk.get("reserve_bytes", 0),
            "partitions_appends_failing": disk.get("partitions_appends_failing", 0)}


def _uploads(stats: dict | None) -> tuple[int, int, float, int]:
    """(remote bytes, upload lag in bytes, the oldest upload lag in seconds, upload
    errors) over the partitions a shard uploads (RemoteLogManager.stats)."""
    tiered = (stats or {}).get("tier", {}).values()
    return (sum(t["remote_bytes"] for t in tiered), sum(t["upload_lag_bytes"] for t in tiered),
            max((t["upload_lag_s"] for t in tiered), default=0.0),
            sum(t["upload_errors"] for t in tiered))


def _requests_by_socket(stats: dict | None) -> tuple[int, int]:
    """(requests taken from routers, on the direct socket) of a shard's stats."""
    by_socket = (stats or {}).get("requests_by_socket", {})
    return by_socket.get("router", 0), by_socket.get("direct", 0)


def _config_changes(old: dict[str, str], new: dict[str, str], deleted_keys) -> str:
    """An alter's audit line, in words: each key changed, old -> new, and each key
    --delete-config set back to its default (a saved config holds the defaults, so
    the new value is the default's); "nothing changed" if the config is the same."""
    deleted = set(deleted_keys)
    words = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if key in deleted:
            words.append(f"{key} reset to its default {after!r} (was {before!r})"
                         if after is not None else f"{key} reset to its default (was {before!r})")
        elif before != after:
            words.append(f"{key} {before!r} -> {after!r}")
    return "; ".join(words) or "nothing changed"
