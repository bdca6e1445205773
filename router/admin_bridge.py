"""The router's admin bridge: the thread that makes the router's control calls.

Runs in the router's process. The loop thread owns every socket and must never
block on Ray, so whatever needs the controller goes through this bridge:

- admin requests from clients (create, alter, delete and describe topics, list
  topics and groups, metadata, status, adding and removing shards, and the
  offsets of a partition whose history spans shards), answered here through
  the ``ControllerHandle``; with an ACL, listGroups answers only the groups the
  client's grants let it describe, and listTopics and metadata of every topic
  only the topics it has a grant on;
- look-ups of a topic the routing table does not know yet (the loop holds its
  requests meanwhile);
- every ``ROUTING_REFRESH_INTERVAL_S``, a fresh routing table, which picks up
  shards restarted at new addresses.

The loop hands over jobs with ``submit_request`` and ``resolve_topic``, which
never block: a full job queue (``ROUTER_ADMIN_JOBS_QUEUED_MAX``) is refused,
and the loop answers tooManyRequests. The bridge thread makes one call at a
time and puts typed results (``AdminReply``, ``RoutingUpdate``) on a bounded
results queue, then wakes the loop through ``wakeup`` (a ``plinth.wakeup.Wakeup``
whose fd the loop polls). Nothing is pickled: the objects themselves cross.
A changing admin request (create or delete a topic, add or remove shards) is
followed by a routing update before its reply, so the client that created a
topic can produce to it at once through this router.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from plinth import limits, protocol, topics
from plinth.control.controller_handle import ControllerHandle
from plinth.control.routing_table import RoutingTable
from plinth.errors import BrokerError, InternalError, MalformedRequestError, UnknownTopicError
from plinth.router.acl import ClientGrants
from plinth.wakeup import Wakeup

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdminReply:
    """The encoded reply to an admin request, for the loop to send to ``client_id``."""

    client_id: bytes
    reply: bytes


@dataclass(frozen=True, slots=True)
class RoutingUpdate:
    """A routing table from the controller; ``routing`` is None if it did not answer
    (keep the current one). ``resolved_topic``: the topic a look-up was about, whose
    held requests are answered unknownTopic if the table does not know it either;
    None for a refresh or after an admin change."""

    routing: RoutingTable | None
    resolved_topic: str | None = None


AdminResult = AdminReply | RoutingUpdate


@dataclass(frozen=True, slots=True)
class _AnswerRequest:
    client_id: bytes
    request: protocol.Request
    grants: ClientGrants | None = None     # the client's, to cut the answer to; None: no ACL


@dataclass(frozen=True, slots=True)
class _ResolveTopic:
    topic: str


# Admin requests after which the routing table has changed.
_CHANGING_REQUESTS = (protocol.CreateTopicRequest, protocol.DeleteTopicRequest,
                      protocol.AddShardsRequest, protocol.RemoveShardsRequest,
                      protocol.MoveShardRequest)


class AdminBridge:
    """Construct on any thread; ``start``/``stop`` from the router's owner;
    ``submit_request``, ``resolve_topic`` and ``take_results`` from the loop thread."""

    def __init__(self, controller: ControllerHandle):
        self.controller = controller
        self.wakeup = Wakeup()
        self._jobs: queue.Queue = queue.Queue(maxsize=limits.ROUTER_ADMIN_JOBS_QUEUED_MAX)
        self._results: queue.Queue = queue.Queue(maxsize=limits.ROUTER_ADMIN_RESULTS_QUEUED_MAX)
        self._stopping = threading.Event()
        self._refresh_wanted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="router-admin", daemon=True)

    # --- Owner ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait_s: float = limits.ROUTER_STOP_WAIT_S) -> None:
        """Stop the thread (after its current call) and close the wake-up pipe. Call
        after the loop thread has stopped polling ``wakeup``."""
        self._stopping.set()
        try:
            self._jobs.put_nowait(None)   # wakes a thread waiting for a job
        except queue.Full:
            pass                          # it is busy, and sees the flag after this job
        if self._thread.is_alive():
            self._thread.join(wait_s)
        if self._thread.is_alive():
            # Still inside a control call: it may wake the pipe when the call returns,
            # so leave the pipe open rather than let it write to a reused fd.
            log.warning("router: the admin thread is still in a control call; not waiting")
            return
        self.wakeup.close()

    # --- Loop thread --------------------------------------------------------------

    def submit_request(self, client_id: bytes, request: protocol.Request,
                       grants: ClientGrants | None = None) -> bool:
        """Queue an admin request to be answered (cut to ``grants`` if given); False if
        the queue is full."""
        return self._submit(_AnswerRequest(client_id, request, grants))

    def resolve_topic(self, topic: str) -> bool:
        """Queue a look-up of ``topic`` (a RoutingUpdate follows); False if the queue is full."""
        return self._submit(_ResolveTopic(topic))

    def refresh_routing(self) -> None:
        """Fetch a new routing table soon (a shard said it does not lead a partition
        the table sends it, or is down): calls before the refresh make one, and
        refreshes come at most every ROUTING_REFRESH_ON_DEMAND_INTERVAL_S."""
        if self._refresh_wanted.is_set():
            return
        self._refresh_wanted.set()
        try:
            self._jobs.put_nowait(None)   # wakes a thread waiting for a job
        except queue.Full:
            pass                          # it is busy, and sees the flag after this job

    def take_results(self) -> list[AdminResult]:
        """Every result ready, oldest first; call when ``wakeup.fd`` polled readable."""
        # Drain the pipe first: a result put after this point wakes the loop again.
        self.wakeup.drain()
        results = []
        for _ in range(limits.ROUTER_ADMIN_RESULTS_QUEUED_MAX):
            try:
                results.append(self._results.get_nowait())
            except queue.Empty:
                break
        return results

    def _submit(self, job) -> bool:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    # --- Bridge thread --------------------------------------------------------------

    def _run(self) -> None:
        next_refresh_s = time.monotonic() + limits.ROUTING_REFRESH_INTERVAL_S
        last_refresh_s = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if self._refresh_wanted.is_set():   # on demand: sooner, within its own bound
                next_refresh_s = min(next_refresh_s, last_refresh_s
                                     + limits.ROUTING_REFRESH_ON_DEMAND_INTERVAL_S)
            if now >= next_refresh_s:
                self._refresh_wanted.clear()
                self._put(RoutingUpdate(self._routing_or_none()))
                last_refresh_s = time.monotonic()
                next_refresh_s = last_refresh_s + limits.ROUTING_REFRESH_INTERVAL_S
                continue
            try:
                job = self._jobs.get(timeout=next_refresh_s - now)
            except queue.Empty:
                continue
            if job is not None:
                for result in self._results_of(job):
                    self._put(result)

    def _put(self, result: AdminResult) -> None:
        """Hand a result to the loop, waiting while its queue is full (until stop)."""
        while not self._stopping.is_set():
            try:
                self._results.put(result, timeout=limits.ROUTER_POLL_TIMEOUT_MS / 1000)
            except queue.Full:
                continue
            self.wakeup.wake()
            return

    def _results_of(self, job: _AnswerRequest | _ResolveTopic) -> list[AdminResult]:
        if isinstance(job, _ResolveTopic):
            return [RoutingUpdate(self._routing_or_none(), job.topic)]
        request = job.request
        try:
            reply = self._answer(request, job.grants)
        except BrokerError as exc:
            return [AdminReply(job.client_id, protocol.encode_error(request.request_id, exc))]
        except AssertionError:
            raise
        except Exception as exc:   # a bug: answer it, and keep the bridge serving
            log.exception("router: internal error answering %s request %d", request.kind,
                          request.request_id)
            return [AdminReply(job.client_id, protocol.encode_error(request.request_id, InternalError(
                f"router: {type(exc).__name__} answering {request.kind}: {exc}")))]
        results: list[AdminResult] = [AdminReply(job.client_id, reply)]
        if isinstance(request, _CHANGING_REQUESTS):
            results.insert(0, RoutingUpdate(self._routing_or_none()))
        return results

    def _answer(self, request: protocol.Request, grants: ClientGrants | None = None) -> bytes:
        """The encoded reply to one admin request; raises the controller's BrokerError."""
        rid, controller = request.request_id, self.controller
        match request:
            case protocol.CreateTopicRequest(topic=topic, partitions=partitions, config=config,
                                             replication_factor=factor):
                return protocol.encode_topics_reply(
                    rid, [controller.create_topic(topic, partitions, config, factor)])
            case protocol.AlterTopicRequest(topic=topic, config=config):
                return protocol.encode_topics_reply(rid, [controller.alter_topic(topic, config)])
            case protocol.DeleteTopicRequest(topic=topic):
                controller.delete_topic(topic)
                return protocol.encode_ok(rid)
            case protocol.DescribeTopicRequest(topic=topic):
                return protocol.encode_topics_reply(rid, [controller.describe_topic(topic)])
            case protocol.ListOffsetsRequest(topic=topic, partition=partition):
                return protocol.encode_offsets_reply(
                    rid, controller.partition_offsets(topic, partition))
            case protocol.AddShardsRequest(shard_count=count):
                return protocol.encode_moves_reply(rid, controller.add_shards(count))
            case protocol.RemoveShardsRequest(shard_count=count):
                return protocol.encode_moves_reply(rid, controller.remove_shards(count))
            case protocol.MoveShardRequest():
                return protocol.encode_shard_move_reply(rid, controller.move_shard(
                    request.shard, request.node,
                    allow_replicas_on_one_node=request.allow_replicas_on_one_node,
                    accept_data_loss=request.accept_data_loss, force=request.force))
            case protocol.StatusRequest():
                return protocol.encode_status_reply(rid, controller.status())
            case protocol.ListGroupsRequest():
                groups = controller.list_groups()
                if grants is not None:
                    groups = [group for group in groups if grants.may_describe_group(group)]
                return protocol.encode_groups_reply(rid, groups)
            case protocol.ListTopicsRequest():   # without the internal topic (--exclude-internal)
                infos = [i for i in controller.list_topics() if i.name != topics.OFFSETS_TOPIC]
                return protocol.encode_topics_reply(rid, _visible(infos, grants))
            case protocol.MetadataRequest(topics=names):
                infos = controller.list_topics()
                return protocol.encode_topics_reply(
                    rid, _only(infos, names) if names else _visible(infos, grants))
        raise MalformedRequestError(f"the router does not serve {request.kind} requests")

    def _routing_or_none(self) -> RoutingTable | None:
        try:
            return self.controller.routing()
        except BrokerError as exc:
            log.warning("router: the routing refresh failed: %s", exc)
            return None


def _visible(infos: list[protocol.TopicInfo], grants: ClientGrants | None) -> list[protocol.TopicInfo]:
    """The infos of the topics ``grants`` hold any operation on (all without an ACL)."""
    return infos if grants is None else [info for info in infos if grants.may_see_topic(info.name)]


def _only(infos: list[protocol.TopicInfo], names: tuple[str, ...]) -> list[protocol.TopicInfo]:
    """The infos of ``names``, in that order; UnknownTopicError names the first missing."""
    by_name = {info.name: info for info in infos}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise UnknownTopicError(f"unknown topic {missing[0]!r}")
    return [by_name[name] for name in names]
