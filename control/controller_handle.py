"""ControllerHandle: the typed front of the controller actor (control/controller.py).

Ray's pattern (``ray.util.queue.Queue`` in front of its ``_QueueActor``): a
public class wraps the private actor, so that callers make typed, checked
calls instead of ``actor.method.remote(*args)`` with a method name and a tuple.
The server creates the controller through ``ControllerHandle.create``; a
standalone router and the tests find it by name with ``ControllerHandle.find``;
the controller hands ``ControllerHandle.current()`` to the shard actors it
creates (pickled by Ray), so that they can announce themselves.

Calls block until the controller answers, at most ``CONTROL_CALL_TIMEOUT_S``
(``start`` at most ``CONTROLLER_START_WAIT_S``, ``shard_stats`` twice
``STATUS_CALL_TIMEOUT_S``), and fail one way:
a BrokerError the controller raised is re-raised as it is; no answer in time is
RequestTimedOutError; a controller that died during the call, or is gone, is
UnavailableError (retriable); anything else Ray reports is InternalError. The
announcements (``router_started``, ``shard_started``, ...) are sent without
waiting.

Restarts. Ray restarts a controller whose process died (the controller
recovers by itself, control/controller.py): a handle stays valid, calls made
while it restarts wait for it (within their bound), and a call it was running
(or one sent before Ray told the caller of the death) fails with
UnavailableError. The restarted controller knows no router, so the
handle remembers the routers announced through it and announces them again
when a routing table shows a new controller epoch. A handle found by name
(``find``, and the one ``current`` gives the shards) also finds a new
controller after its server restarted: its announcements always go to the
controller that has the name now.

Any thread of any process connected to the broker's Ray cluster may use a
handle. The controller runs the calls one at a time on its actor thread, but
for two kinds that wait for shards. The queries (``describe_topic``,
``partition_offsets``, ``status``, ``list_groups``, ``list_groups_page``,
``topic_stats``, ``shard_stats``, ``elect_leaders``) run beside them on the
controller's QUERY_GROUP threads. The changes (topics created, deleted,
altered or grown; shards added, removed or moved) run one at a time on its
CHANGE_GROUP thread: a change waiting for a stopped shard holds up no
election, in-sync change or routing table, and the next change waits for it.
A change carries its caller's deadline (``Controller.run_change``): one that
waited behind others until after its handle gave up, or after the
``deadline_unix_s`` its caller passed (a router relays its client's), is not
run at all, so a change the caller was told timed out does not happen later
behind its back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from plinth import limits, protocol
from plinth.cluster_keys import ClusterKeys
from plinth.control.routing_table import RoutingTable
from plinth.errors import BrokerError, InternalError, RequestTimedOutError, UnavailableError
from plinth.actor_failures import creation_failure
from plinth.name_pages import NamesPage
from plinth.shards.shard_handle import Leadership, PartitionId, TierOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartReport:
    """What the controller's start left running."""

    addresses: dict[str, str]     # every shard that serves -> where it listens
    not_serving: dict[str, str]   # every shard that does not -> why
    # Warnings of the start the operator should see where they started the server
    # (the controller's own log is a file in the data dir): plinth serve prints them.
    warnings: tuple[str, ...] = ()

# The controller's name in its broker's Ray namespace.
CONTROLLER_NAME = "plinth-controller"
# The Ray concurrency group of the controller's queries that wait for shards (their own
# threads; every other call runs on the actor's one thread, see control/controller.py).
QUERY_GROUP = "queries"
# The Ray concurrency group of the controller's changes: one thread, so that changes
# run one at a time, as they did on the actor thread (see control/controller.py).
CHANGE_GROUP = "changes"


class ControllerHandle:
    def __init__(self, actor, *, namespace: str | None = None,
                 on_rediscovered: Callable[["ControllerHandle"], None] | None = None):
        """``actor``: the controller's Ray actor handle. ``namespace``: the broker's Ray
        namespace, to find a new controller by name after this one died for good (a
        standalone router and the shards outlive restarts of their server); None:
        never. ``on_rediscovered(self)`` runs after the handle found a new one."""
        self._actor = actor
        self._namespace = namespace
        self._on_rediscovered = on_rediscovered
        self._lock = threading.Lock()   # guards the two below (several threads call)
        # listen -> (node address, Kafka address), announced through this
        self._routers: dict[str, tuple[str, str]] = {}
        self._controller_epoch = 0           # the newest seen in a routing table

    def __getstate__(self) -> dict:
        """Pickled (for the shard actors): the actor and how to find it again."""
        return {"actor": self._actor, "namespace": self._namespace}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["actor"], namespace=state["namespace"])

    @classmethod
    def create(cls, data_dir: str, shard_count: int | None, fsync_policy: str,
               fsync_interval_ms: int, scheduling_strategy,
               cluster_keys: ClusterKeys | None = None, *,
               default_replication_factor: int | None = None,
               allow_replicas_on_one_node: bool = False,
               leader_rebalance_interval_s: float | None = limits.LEADER_REBALANCE_INTERVAL_S,
               offsets_replication_factor: int | None = None,
               direct_clients: bool = False,
               tier: TierOptions = TierOptions(),
               security_required: tuple[str, ...] = (),
               produce_free_bytes_min: int = limits.PRODUCE_FREE_BYTES_MIN_DEFAULT,
               ) -> "ControllerHandle":
        """Start the broker's controller actor (server process); Ray restarts it, at most
        CONTROLLER_RESTARTS_MAX times, if its process dies. Raises ValueError if the
        name is taken: another broker serves this namespace. ``cluster_keys``: given
        to every shard it starts (see plinth/cluster_keys.py). The replication
        options, ``direct_clients``, ``tier``, ``security_required`` and
        ``produce_free_bytes_min``: see Controller
        (Ray gives a restarted controller the same arguments, so it keeps them)."""
        import ray

        from plinth.control.controller import Controller

        actor = ray.remote(concurrency_groups={QUERY_GROUP: limits.CONTROLLER_QUERY_THREADS,
                                               CHANGE_GROUP: 1})(
            Controller).options(
            name=CONTROLLER_NAME, num_cpus=0, max_restarts=limits.CONTROLLER_RESTARTS_MAX,
            scheduling_strategy=scheduling_strategy,
        ).remote(data_dir, shard_count, fsync_policy, fsync_interval_ms,
                 cluster_keys=cluster_keys, default_replication_factor=default_replication_factor,
                 allow_replicas_on_one_node=allow_replicas_on_one_node,
                 leader_rebalance_interval_s=leader_rebalance_interval_s,
                 offsets_replication_factor=offsets_replication_factor,
                 direct_clients=direct_clients, tier=tier, security_required=security_required,
                 produce_free_bytes_min=produce_free_bytes_min)
        return cls(actor)

    @classmethod
    def current(cls) -> "ControllerHandle":
        """The controller this code runs in (controller actor thread only), for the
        shard actors it creates: Ray pickles the handle with their arguments. It
        finds the broker's controller by name if this one is gone for good."""
        import ray

        context = ray.get_runtime_context()
        return cls(context.current_actor, namespace=context.namespace)

    @classmethod
    def find(cls, namespace: str | None = None, *,
             on_rediscovered: Callable[["ControllerHandle"], None] | None = None
             ) -> "ControllerHandle":
        """The running controller of the broker in ``namespace`` (default: the current
        one). Raises ValueError if there is none. ``on_rediscovered(handle)`` runs
        after the handle found a new controller (its server restarted)."""
        import ray

        namespace = namespace or ray.get_runtime_context().namespace
        return cls(ray.get_actor(CONTROLLER_NAME, namespace=namespace), namespace=namespace,
                   on_rediscovered=on_rediscovered)

    # --- Lifecycle (server process) -------------------------------------------------

    def start(self) -> StartReport:
        """Start every shard and open its partitions; returns which serve, which not."""
        return self._call(lambda actor: actor.start.remote(), "start",
                          timeout_s=limits.CONTROLLER_START_WAIT_S)

    def start_report(self) -> StartReport:
        """Which shards serve now, which do not and why."""
        return self._call(lambda actor: actor.start_report.remote(), "start_report")

    def start_report_within(self, timeout_s: float) -> StartReport:
        """``start_report``, given up on (RequestTimedOutError) after ``timeout_s``: a
        readiness probe's, which must answer in time."""
        return self._call(lambda actor: actor.start_report.remote(), "start_report",
                          timeout_s=timeout_s)

    def cluster_keys(self) -> ClusterKeys | None:
        """The cluster's key pair (for a ``plinth router`` given no key file)."""
        return self._call(lambda actor: actor.cluster_keys.remote(), "cluster_keys")

    def build_version(self) -> str | None:
        """The server's build version; None from a server before 0.2.0, whose controller
        has no such call (for a joining ``plinth router``)."""
        try:
            return self._call(lambda actor: actor.build_version.remote(), "build_version")
        except AttributeError:   # Ray's handle of an older controller: no such method
            return None

    def security_required(self) -> tuple[str, ...]:
        """The server's security options a joining ``plinth router`` must have too."""
        return self._call(lambda actor: actor.security_required.remote(), "security_required")

    def tier_store(self) -> str | None:
        """The store the broker's shards tier to, without credentials, or None (for a
        ``plinth router`` given --tier-url)."""
        return self._call(lambda actor: actor.tier_store.remote(), "tier_store")

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> bool:
        """Flush, fsync and close every shard's logs; a shard that could not raises
        its error. False if the controller died or was stopping, so nothing was
        flushed through it: a SIGTERM to the whole process group (systemd's stop)
        reaches the controller's process too. Not repeated for a restarted
        controller, unlike the other calls: the server is going, and a stopped
        shard's log is recovered at its next start (its records were written to
        the file before their acknowledgement, so the OS holds them)."""
        import ray

        try:
            self._call_once(lambda actor: actor.shutdown.remote(grace_period_s), "shutdown",
                            grace_period_s + 2 * limits.SHUTDOWN_CALL_MARGIN_S)
        except ray.exceptions.RayActorError:   # ActorUnavailableError too
            return False
        return True

    def kill(self) -> None:
        import ray

        ray.kill(self._actor)

    # --- Announcements (no waiting) ------------------------------------------------

    def router_started(self, listen: str, node_address: str, kafka_address: str = "") -> None:
        """A router listens at ``listen`` (and for Kafka clients at ``kafka_address``, its
        advertised HOST:PORT, if not ""); announced again to a restarted controller
        (see ``routing``)."""
        with self._lock:
            self._routers[listen] = (node_address, kafka_address)
        self._actor.router_started.remote(listen, node_address, kafka_address)

    def router_stopped(self, listen: str) -> None:
        """Unlike the other announcements, waits: the router is about to exit."""
        with self._lock:
            self._routers.pop(listen, None)
        self._call(lambda actor: actor.router_stopped.remote(listen), "router_stopped",
                   timeout_s=limits.ROUTER_STOPPED_WAIT_S)

    def shard_started(self, shard_id: str, address: str, direct_address: str = "",
                      pid: int = 0) -> None:
        """A shard actor (re)started in process ``pid`` and listens at ``address`` (and
        for clients at ``direct_address``, if not "") (shard actor thread). Sent to the
        controller that has the name now (the server may have restarted since this
        handle was made); raises ValueError while there is none."""
        self._current_actor().shard_started.remote(shard_id, address, direct_address, pid)

    def tier_claim_reported(self, held: bool, line: str) -> None:
        """The server's claim on its tier store (store_claim.ClaimKeeper.state): the
        keeper's thread, after each round; not waited for. To the controller that has
        the name now; ValueError while there is none."""
        self._current_actor().tier_claim_reported.options(
            concurrency_group=QUERY_GROUP).remote(held, line)

    def shard_starting(self, shard_id: str, pid: int) -> None:
        """A shard actor's process ``pid`` starts, before it reopens its logs (shard
        actor thread); not waited for. Sent to a QUERY_GROUP thread: the shard's
        process exits only once the call is answered (if its constructor raises),
        and the controller's actor thread may be waiting for that shard."""
        self._current_actor().shard_starting.options(
            concurrency_group=QUERY_GROUP).remote(shard_id, pid)

    def leader_disk_refused(self, shard_id: str, error: str) -> None:
        """``shard_id``'s disk refused an append to a partition it leads (a shard's
        in-sync thread): a nudge, not waited for, to the controller that has the name
        now. A nudge lost is sent again at the shard's next refusal."""
        try:
            self._current_actor().leader_disk_refused.remote(shard_id, error)
        except ValueError:   # no controller by that name now (it restarts)
            log.info("%s: no controller to tell its disk refuses writes", shard_id)

    def tiering_changed(self, shard_id: str) -> None:
        """On ``shard_id`` a sealed partition became wholly remote, or a re-sync the
        controller asked for listed the store (a shard's uploader thread): a nudge, not
        waited for; sent to the controller that has the name now, as
        ``shard_started``. A nudge lost (no controller, or it died) only delays a
        retirement: the controller also looks at status calls and at its start."""
        try:
            self._current_actor().tiering_changed.remote(shard_id)
        except ValueError:   # no controller by that name now (it restarts): the polls cover it
            log.info("%s: no controller to tell its tiering changed", shard_id)

    def _current_actor(self):
        """The controller actor that has the broker's name now (the same one, unless
        this handle finds controllers by name and its server restarted)."""
        if self._namespace is None:
            return self._actor
        import ray

        self._actor = ray.get_actor(CONTROLLER_NAME, namespace=self._namespace)
        return self._actor

    def alter_in_sync(self, shard_id: str, partition: PartitionId, leader_epoch: int,
                      partition_epoch: int, in_sync: tuple[str, ...]) -> Leadership:
        """The leader ``shard_id`` asks to change the partition's in-sync set (a shard's
        thread that is not its actor thread: the controller may be calling that actor
        meanwhile). Waits for the controller's compare-and-set; returns the new record;
        raises FencedLeaderEpochError if either epoch is stale."""
        return self._call(lambda actor: actor.alter_in_sync.remote(
            shard_id, partition, leader_epoch, partition_epoch, tuple(in_sync)), "alter_in_sync")

    # --- Queries ------------------------------------------------------------------

    def routing(self, known: RoutingTable | None = None) -> RoutingTable:
        """The routing table; ``known`` itself (the caller's last table) if the
        controller's is still that one, which then sends nothing. If it comes from a
        controller newer than the last one seen (Ray restarted it: it knows no
        router), the routers announced through this handle are announced to it again."""
        version = None if known is None else known.version
        with self._lock:   # they are alive: the controller lists no silent router
            alive = tuple((listen, node_address, kafka_address) for listen, (node_address,
                          kafka_address) in sorted(self._routers.items()))
        routing = self._call(lambda actor: actor.routing.remote(version, alive), "routing")
        if routing is None:
            if known is None:
                raise AssertionError("the controller answered routing() with no table")
            return known
        with self._lock:
            restarted = 0 < self._controller_epoch < routing.controller_epoch
            self._controller_epoch = max(self._controller_epoch, routing.controller_epoch)
            routers = dict(self._routers) if restarted else {}
        for listen, (node_address, kafka_address) in sorted(routers.items()):
            log.info("the controller restarted (controller epoch %d): announcing router %s "
                     "again", routing.controller_epoch, listen)
            self._actor.router_started.remote(listen, node_address, kafka_address)
        return routing

    def list_topics(self) -> list[protocol.TopicInfo]:
        return self._call(lambda actor: actor.list_topics.remote(), "list_topics")

    def describe_topic(self, name: str) -> protocol.TopicInfo:
        return self._query("describe_topic", name)

    def partition_offsets(self, topic: str, partition: int,
                          timestamp_ms: int = protocol.NO_TIME_LOOKUP) -> protocol.PartitionInfo:
        """Start and end offsets of a partition whose history spans several shards; with
        ``timestamp_ms``, the first record stamped at or after it."""
        return self._query("partition_offsets", topic, partition, timestamp_ms)

    def status(self) -> protocol.StatusInfo:
        return self._query("status")

    def list_groups(self) -> list[protocol.GroupListing]:
        """Every group, by name, with its state."""
        return self._query("list_groups")

    def list_topics_page(self, prefix: str, after: str, limit: int) -> NamesPage:
        """A page of the topic names (plinth/name_pages.py), from the controller's metadata."""
        return self._call(lambda actor: actor.list_topics_page.remote(prefix, after, limit),
                          "list_topics_page")

    def list_groups_page(self, prefix: str, after: str, limit: int) -> NamesPage:
        """A page of the group names, merged from every shard's page."""
        return self._query("list_groups_page", prefix, after, limit)

    def topic_stats(self, names: list[str]) -> list[protocol.TopicStats]:
        """Size and rates of each topic of ``names`` (at most ADMIN_TOPIC_STATS_NAMES_MAX)."""
        return self._query("topic_stats", list(names))

    def check_leaders(self) -> list:
        """Elect new leaders where a leader's shard does not answer (the controller's
        lease makes this check itself; tests and tools may too); returns (PartitionId, new leader or "") for each change."""
        return self._call(lambda actor: actor.check_leaders.remote(), "check_leaders",
                          timeout_s=limits.LEADER_PING_TIMEOUT_S + limits.CONTROL_CALL_TIMEOUT_S)

    def partition_replication(self) -> list:
        """Every partition's replicas, in-sync count, leader and whether it is offline
        (a list of controller.PartitionReplication), from the controller's metadata."""
        return self._call(lambda actor: actor.partition_replication.remote(),
                          "partition_replication")

    def process_owner(self, pid: int, timeout_s: float) -> str:
        """Which shard ("controller": the controller) ran in process ``pid``; "" if
        the controller does not know (Controller.process_owner)."""
        return self._query("process_owner", pid, timeout_s=timeout_s)

    def shard_stats(self) -> dict[str, dict | None]:
        """Each shard's ShardStats snapshot; None for a shard that did not answer."""
        return self._query("shard_stats", timeout_s=limits.STATUS_CALL_TIMEOUT_S * 2)

    # --- Changes ------------------------------------------------------------------

    # Each change takes ``deadline_unix_s``: the wall-clock time its own caller gives
    # up (a client's timeoutMs, relayed by a router); None: only this handle's timeout.

    def create_topic(self, name: str, partitions: int, config: dict[str, str],
                     replication_factor: int = 0, *, deadline_unix_s: float | None = None) -> protocol.TopicInfo:
        """``replication_factor`` 0: the server's default."""
        return self._change("create_topic", name, partitions, config, replication_factor,
                            deadline_unix_s=deadline_unix_s)

    def create_topics(self, new_topics: list[protocol.NewTopic], *,
                      deadline_unix_s: float | None = None) -> list[protocol.TopicInfo]:
        """All of ``new_topics`` or none (Controller.create_topics)."""
        return self._change("create_topics", list(new_topics), deadline_unix_s=deadline_unix_s)

    def validate_new_topics(self, new_topics: list[protocol.NewTopic]
                            ) -> list[protocol.TopicInfo]:
        """What ``create_topics`` would answer, creating none
        (Controller.validate_new_topics)."""
        return self._call(lambda actor: actor.validate_new_topics.remote(list(new_topics)),
                          "validate_new_topics")

    def alter_topic(self, name: str, changes: dict[str, str],
                    delete_config: tuple[str, ...] = (), *, deadline_unix_s: float | None = None
                    ) -> protocol.TopicInfo:
        return self._change("alter_topic", name, changes, delete_config,
                            deadline_unix_s=deadline_unix_s)

    def add_partitions(self, name: str, partition_count: int, *,
                       deadline_unix_s: float | None = None) -> protocol.TopicInfo:
        return self._change("add_partitions", name, partition_count,
                            deadline_unix_s=deadline_unix_s)

    def delete_topic(self, name: str, topic_id: str = "", *,
                     deadline_unix_s: float | None = None) -> None:
        """``topic_id`` (not ""): only if the topic has that id (Controller.delete_topic)."""
        self._change("delete_topic", name, topic_id, deadline_unix_s=deadline_unix_s)

    def add_shards(self, count: int, *, deadline_unix_s: float | None = None
                   ) -> list[protocol.PartitionMove]:
        return self._change("add_shards", count, deadline_unix_s=deadline_unix_s)

    def remove_shards(self, count: int, *, deadline_unix_s: float | None = None
                      ) -> list[protocol.PartitionMove]:
        return self._change("remove_shards", count, deadline_unix_s=deadline_unix_s)

    def move_shard(self, shard_id: str, node: str, *, deadline_unix_s: float | None = None,
                   **options: bool) -> protocol.ShardMove:
        """``options``: Controller.move_shard's (allow_replicas_on_one_node,
        accept_data_loss, force)."""
        return self._change("move_shard", shard_id, node, deadline_unix_s=deadline_unix_s,
                            **options)

    def elect_leaders(self, election_type: int, partitions: list[tuple[str, int]] | None
                      ) -> list[protocol.ElectionResult]:
        """Controller.elect_leaders: ``partitions`` None is every partition."""
        return self._query("elect_leaders", election_type, partitions,
                           timeout_s=limits.CONTROL_CALL_TIMEOUT_S
                           + limits.LEADER_HANDOVER_WAIT_MS / 1000)

    # --- Calling ------------------------------------------------------------------

    def _query(self, method: str, *args, timeout_s: float = limits.CONTROL_CALL_TIMEOUT_S):
        """``_call`` of a query that waits for shards, run on the controller's
        QUERY_GROUP threads."""
        return self._call(lambda actor: getattr(actor, method).options(
            concurrency_group=QUERY_GROUP).remote(*args), method, timeout_s)

    def _change(self, method: str, *args, deadline_unix_s: float | None, **options):
        """``_call`` of a change, run on the controller's CHANGE_GROUP thread unless it
        only starts after this call's timeout or ``deadline_unix_s``, its caller's (see
        the module). The deadline is wall clock time, as the controller may run on
        another node."""
        timeout_s = limits.CONTROL_CALL_TIMEOUT_S

        def call(actor):
            deadline_s = time.time() + timeout_s
            if deadline_unix_s is not None:
                deadline_s = min(deadline_s, deadline_unix_s)
            return actor.run_change.options(concurrency_group=CHANGE_GROUP).remote(
                method, deadline_s, *args, **options)

        return self._call(call, method, timeout_s)

    def _call(self, remote_call: Callable, method: str,
              timeout_s: float = limits.CONTROL_CALL_TIMEOUT_S):
        """``remote_call(actor)`` (which starts ``method`` on the controller) and its
        result, errors mapped as the module says. A controller that died during the
        call is UnavailableError (the call may or may not have run: the caller
        knows whether to repeat it), unless the handle finds controllers by name:
        then it looks the controller up again (a restarted one, or a new server's)
        and repeats the call once, as before restarts existed."""
        import ray

        try:
            return self._call_once(remote_call, method, timeout_s)
        except ray.exceptions.RayActorError as exc:   # ActorUnavailableError: restarting
            if self._namespace is None:
                raise self._died_error(method, exc) from None
            died = exc
        try:
            self._current_actor()
        except ValueError:
            raise UnavailableError("the broker's controller is not running (is its server "
                                   "restarting?); retry later") from None
        log.info("found the broker's controller again (%s)", type(died).__name__)
        if self._on_rediscovered is not None:
            self._on_rediscovered(self)
        return self._call_while_restarting(remote_call, method, timeout_s)

    def _call_while_restarting(self, remote_call: Callable, method: str, timeout_s: float):
        """The repeated call of a handle that finds controllers by name: while Ray is
        still restarting the controller (ActorUnavailableError, seen on a loaded
        machine), tried again with backoff until ``timeout_s`` has passed; then, or if
        the controller is dead, UnavailableError, never Ray's own exception."""
        import ray

        deadline_s = time.monotonic() + timeout_s
        backoff_s = limits.CONTROLLER_RESTART_BACKOFF_S_MIN
        while True:
            try:
                return self._call_once(remote_call, method, max(deadline_s - time.monotonic(), 1))
            except ray.exceptions.ActorUnavailableError as exc:
                if time.monotonic() + backoff_s > deadline_s:
                    raise self._died_error(method, exc) from None
            except ray.exceptions.RayActorError as exc:
                raise self._died_error(method, exc) from None
            time.sleep(backoff_s)   # a bounded wait for Ray's restart, not for a state we own
            backoff_s = min(backoff_s * 2, limits.CONTROLLER_RESTART_BACKOFF_S_MAX)

    @staticmethod
    def _died_error(method: str, exc: Exception) -> UnavailableError:
        failure = creation_failure(exc)
        if failure is not None:
            return UnavailableError(f"the broker's controller could not start, and is not "
                                    f"restarted: {failure}; {method} did not run")
        return UnavailableError(
            f"the broker's controller died or was unreachable during {method} "
            f"({type(exc).__name__}); Ray restarts it (at most "
            f"{limits.CONTROLLER_RESTARTS_MAX} times) unless its server stopped; retry")

    def _call_once(self, remote_call: Callable, method: str, timeout_s: float):
        import ray

        answer = remote_call(self._actor)
        try:
            return ray.get(answer, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            abandon(answer, f"the controller's {method}")
            raise RequestTimedOutError(
                f"the controller did not answer {method} within {timeout_s} s") from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BrokerError):
                raise cause from None
            # A programmer error in the controller: the client gets one line, the
            # operator's log the controller's traceback.
            log.error("controller failed in %s: %s", method, exc)
            raise InternalError(f"controller failed in {method}: {cause or exc}") from None
        except ray.exceptions.RayActorError:
            raise
        except ray.exceptions.RayError as exc:
            raise InternalError(f"controller unreachable: {exc}") from None


def abandon(answer, what: str) -> None:
    """Let go of ``answer``, the ObjectRef of a call whose caller stopped waiting (any
    thread): its outcome, when it comes, is logged (INFO), not left unread. Ray prints
    an error no one read ("Unhandled error ...", with the callee's traceback) on the
    stdout of the process that made the call, as if something had gone wrong there;
    a call that ends after its caller gave up is expected (a stopped shard holds up
    a query until the query's own bound)."""
    def outcome_came(future) -> None:
        error = future.exception()
        cause = getattr(error, "cause", None) or error
        log.info("%s ended after its caller stopped waiting: %s", what,
                 "answered" if error is None else f"{type(cause).__name__}: {cause}")

    answer.future().add_done_callback(outcome_came)
