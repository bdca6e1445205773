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
RequestTimedOutError; a dead controller is UnavailableError; anything else Ray
reports is InternalError. The announcements (``router_started``,
``shard_started``, ...) are sent without waiting.

Any thread of any process connected to the broker's Ray cluster may use a
handle; the controller runs the calls one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from plinth import limits, protocol
from plinth.cluster_keys import ClusterKeys
from plinth.control.routing_table import RoutingTable
from plinth.errors import BrokerError, InternalError, RequestTimedOutError, UnavailableError
from plinth.shards.shard_handle import Leadership, PartitionId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartReport:
    """What the controller's start left running."""

    addresses: dict[str, str]     # every shard that serves -> where it listens
    not_serving: dict[str, str]   # every shard that does not -> why

# The controller's name in its broker's Ray namespace.
CONTROLLER_NAME = "plinth-controller"


class ControllerHandle:
    def __init__(self, actor, *, rediscover: Callable[[], object] | None = None):
        """``actor``: the controller's Ray actor handle. ``rediscover``: how to find a
        new controller's actor after this one died (a standalone router outlives
        restarts of its server); it raises ValueError while there is none."""
        self._actor = actor
        self._rediscover = rediscover

    @classmethod
    def create(cls, data_dir: str, shard_count: int | None, fsync_policy: str,
               fsync_interval_ms: int, scheduling_strategy,
               cluster_keys: ClusterKeys | None = None, *,
               default_replication_factor: int | None = None,
               allow_replicas_on_one_node: bool = False) -> "ControllerHandle":
        """Start the broker's controller actor (server process). Raises ValueError if
        the name is taken: another broker serves this namespace. ``cluster_keys``:
        given to every shard it starts (see plinth/cluster_keys.py). The replication
        options: see Controller."""
        import ray

        from plinth.control.controller import Controller

        actor = ray.remote(Controller).options(
            name=CONTROLLER_NAME, num_cpus=0, max_restarts=0,
            scheduling_strategy=scheduling_strategy,
        ).remote(data_dir, shard_count, fsync_policy, fsync_interval_ms,
                 cluster_keys=cluster_keys, default_replication_factor=default_replication_factor,
                 allow_replicas_on_one_node=allow_replicas_on_one_node)
        return cls(actor)

    @classmethod
    def current(cls) -> "ControllerHandle":
        """The controller this code runs in (controller actor thread only), for the
        shard actors it creates: Ray pickles the handle with their arguments."""
        import ray

        return cls(ray.get_runtime_context().current_actor)

    @classmethod
    def find(cls, namespace: str | None = None, *,
             on_rediscovered: Callable[["ControllerHandle"], None] | None = None
             ) -> "ControllerHandle":
        """The running controller of the broker in ``namespace`` (default: the current
        one). Raises ValueError if there is none. ``on_rediscovered(handle)`` runs
        after the handle found a new controller (its server restarted)."""
        import ray

        def lookup():
            return ray.get_actor(CONTROLLER_NAME, namespace=namespace)

        handle = cls(lookup())

        def rediscover():
            actor = lookup()
            if on_rediscovered is not None:
                on_rediscovered(cls(actor))
            return actor

        handle._rediscover = rediscover
        return handle

    # --- Lifecycle (server process) -------------------------------------------------

    def start(self) -> StartReport:
        """Start every shard and open its partitions; returns which serve, which not."""
        return self._call(lambda actor: actor.start.remote(), "start",
                          timeout_s=limits.CONTROLLER_START_WAIT_S)

    def start_report(self) -> StartReport:
        """Which shards serve now, which do not and why."""
        return self._call(lambda actor: actor.start_report.remote(), "start_report")

    def cluster_keys(self) -> ClusterKeys | None:
        """The cluster's key pair (for a ``plinth router`` given no key file)."""
        return self._call(lambda actor: actor.cluster_keys.remote(), "cluster_keys")

    def shutdown(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        """Flush, fsync and close every shard's logs."""
        self._call(lambda actor: actor.shutdown.remote(grace_period_s), "shutdown",
                   timeout_s=grace_period_s + 2 * limits.SHUTDOWN_CALL_MARGIN_S)

    def kill(self) -> None:
        import ray

        ray.kill(self._actor)

    # --- Announcements (no waiting) ------------------------------------------------

    def router_started(self, listen: str, node_address: str) -> None:
        self._actor.router_started.remote(listen, node_address)

    def router_stopped(self, listen: str) -> None:
        """Unlike the other announcements, waits: the router is about to exit."""
        self._call(lambda actor: actor.router_stopped.remote(listen), "router_stopped",
                   timeout_s=limits.ROUTER_STOPPED_WAIT_S)

    def shard_started(self, shard_id: str, address: str) -> None:
        """A shard actor (re)started and listens at ``address`` (shard actor thread)."""
        self._actor.shard_started.remote(shard_id, address)

    def alter_in_sync(self, shard_id: str, partition: PartitionId, leader_epoch: int,
                      partition_epoch: int, in_sync: tuple[str, ...]) -> Leadership:
        """The leader ``shard_id`` asks to change the partition's in-sync set (a shard's
        thread that is not its actor thread: the controller may be calling that actor
        meanwhile). Waits for the controller's compare-and-set; returns the new record;
        raises FencedLeaderEpochError if either epoch is stale."""
        return self._call(lambda actor: actor.alter_in_sync.remote(
            shard_id, partition, leader_epoch, partition_epoch, tuple(in_sync)), "alter_in_sync")

    # --- Queries ------------------------------------------------------------------

    def routing(self) -> RoutingTable:
        return self._call(lambda actor: actor.routing.remote(), "routing")

    def list_topics(self) -> list[protocol.TopicInfo]:
        return self._call(lambda actor: actor.list_topics.remote(), "list_topics")

    def describe_topic(self, name: str) -> protocol.TopicInfo:
        return self._call(lambda actor: actor.describe_topic.remote(name), "describe_topic")

    def partition_offsets(self, topic: str, partition: int) -> protocol.PartitionInfo:
        """Start and end offsets of a partition whose history spans several shards."""
        return self._call(lambda actor: actor.partition_offsets.remote(topic, partition),
                          "partition_offsets")

    def status(self) -> protocol.StatusInfo:
        return self._call(lambda actor: actor.status.remote(), "status")

    def list_groups(self) -> list[str]:
        return self._call(lambda actor: actor.list_groups.remote(), "list_groups")

    def check_leaders(self) -> list:
        """Elect new leaders where a leader's shard does not answer (the server's lease
        thread); returns (PartitionId, new leader or "") for each change."""
        return self._call(lambda actor: actor.check_leaders.remote(), "check_leaders",
                          timeout_s=limits.LEADER_PING_TIMEOUT_S + limits.CONTROL_CALL_TIMEOUT_S)

    def partition_replication(self) -> list:
        """Every partition's replicas, in-sync count, leader and whether it is offline
        (a list of controller.PartitionReplication), from the controller's metadata."""
        return self._call(lambda actor: actor.partition_replication.remote(),
                          "partition_replication")

    def shard_stats(self) -> dict[str, dict | None]:
        """Each shard's ShardStats snapshot; None for a shard that did not answer."""
        return self._call(lambda actor: actor.shard_stats.remote(), "shard_stats",
                          timeout_s=limits.STATUS_CALL_TIMEOUT_S * 2)

    # --- Changes ------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, config: dict[str, str],
                     replication_factor: int = 0) -> protocol.TopicInfo:
        """``replication_factor`` 0: the server's default."""
        return self._call(lambda actor: actor.create_topic.remote(
            name, partitions, config, replication_factor), "create_topic")

    def alter_topic(self, name: str, changes: dict[str, str]) -> protocol.TopicInfo:
        return self._call(lambda actor: actor.alter_topic.remote(name, changes), "alter_topic")

    def delete_topic(self, name: str) -> None:
        self._call(lambda actor: actor.delete_topic.remote(name), "delete_topic")

    def add_shards(self, count: int) -> list[protocol.PartitionMove]:
        return self._call(lambda actor: actor.add_shards.remote(count), "add_shards")

    def remove_shards(self, count: int) -> list[protocol.PartitionMove]:
        return self._call(lambda actor: actor.remove_shards.remote(count), "remove_shards")

    def move_shard(self, shard_id: str, node: str, **options: bool) -> protocol.ShardMove:
        """``options``: Controller.move_shard's (allow_replicas_on_one_node,
        accept_data_loss, force)."""
        return self._call(lambda actor: actor.move_shard.remote(shard_id, node, **options),
                          "move_shard")

    # --- Calling ------------------------------------------------------------------

    def _call(self, remote_call: Callable, method: str,
              timeout_s: float = limits.CONTROL_CALL_TIMEOUT_S):
        """``remote_call(actor)`` (which starts ``method`` on the controller) and its
        result, errors mapped as the module says. A dead controller is looked up
        again, once per call, if the handle knows how."""
        import ray

        try:
            return self._call_once(remote_call, method, timeout_s)
        except ray.exceptions.RayActorError:
            if self._rediscover is None:
                raise UnavailableError("the broker's controller is gone (its server stopped)") from None
        try:
            self._actor = self._rediscover()
        except ValueError:
            raise UnavailableError("the broker's controller is not running (is its server "
                                   "restarting?); retry later") from None
        log.info("found the broker's controller again")
        return self._call_once(remote_call, method, timeout_s)

    def _call_once(self, remote_call: Callable, method: str, timeout_s: float):
        import ray

        try:
            return ray.get(remote_call(self._actor), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RequestTimedOutError(
                f"the controller did not answer {method} within {timeout_s} s") from None
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BrokerError):
                raise cause from None
            raise InternalError(f"controller failed in {method}: {cause or exc}") from None
        except ray.exceptions.RayActorError:
            raise
        except ray.exceptions.RayError as exc:
            raise InternalError(f"controller unreachable: {exc}") from None
