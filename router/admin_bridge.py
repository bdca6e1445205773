"""The router's admin bridge: the threads that make the router's control calls.

Runs in the router's process. The loop thread owns every socket and must never
block on Ray, so whatever needs the controller goes through this bridge:

- admin requests from clients (create, alter, delete and describe topics, list
  topics and groups, whole or a page at a time, topic stats, metadata, status,
  adding and removing shards, and the offsets of a partition whose history spans
  shards), answered here through the ``ControllerHandle``; with an ACL, listGroups
  answers only the groups the client's grants let it describe, and listTopics and
  metadata of every topic only the topics it has a grant on (their pages too:
  ``_visible_page``);
- look-ups of a topic the routing table does not know yet (the loop holds its
  requests meanwhile);
- every ``ROUTING_REFRESH_INTERVAL_S``, a fresh routing table, which picks up
  shards restarted at new addresses (the controller sends none while the table
  is unchanged: the bridge gives it the version it has, and queues no update,
  unless a routing call failed since the last one it queued: the loop answers
  the requests held for a topic whose look-up failed at the next table it gets).

Threads make these calls, so that none waits for another: ``ROUTER_ADMIN_THREADS``
query threads answer queries and metadata, ``ROUTER_ADMIN_CHANGE_THREADS`` change
threads relay changes (``_CHANGES``), different clients' at the same time and
each client's in the order it sent them (client_ordered_jobs.py, one lane for
each kind of thread), and the routing thread makes the look-ups and refreshes. A
describe or a status that waits seconds for a shard that died (the controller
answers it only after STATUS_CALL_TIMEOUT_S) must hold up neither the routing
table that points clients at the new leader nor another client's admin request
(an operator's ``plinth topic list`` during the outage). Nor must changes: the
controller runs them one at a time, each waiting up to CHANGE_SHARD_WAIT_S
for a stopped shard, so they queue on their own threads, and a new producer's
metadata request is answered while they wait.

Order. A client's requests are answered one after another whatever their kind:
its describe sent after its create waits for the create (on the change thread)
even while query threads are free, and finds the topic made. Only that client
waits; the others' queries go on. The Kafka listener sends its connections'
requests (of one SASL user) as two clients (kafka/backend.py): one for the
changes, one for the rest, so that a Kafka change waiting for a stopped shard
holds up no Kafka query (gateway.py keeps each connection's own order).

Deadlines. A change request carries the time its client still waits
(``timeoutMs``, schemas/protocol.capnp). A change whose time ran out while it
waited in the queue is not made: it is answered requestTimedOut, saying
nothing was changed, without a control call. One taken in time passes its
client's deadline to the controller, which drops it unrun if its turn comes
later (ControllerHandle, ``deadline_unix_s``). A change without ``timeoutMs``
(an older client) is bounded by the controller handle's timeout only.

The loop hands over jobs with ``submit_request`` and ``resolve_topic``, which
never block: a full queue (``ROUTER_ADMIN_JOBS_QUEUED_MAX`` admin requests, of
them at most ``ROUTER_ADMIN_CHANGES_QUEUED_MAX`` changes; as many look-ups) is
refused, and the loop answers tooManyRequests, which clients retry. The threads
put typed results (``AdminReply``, ``RoutingUpdate``) on one bounded results
queue, then wake the loop through ``wakeup`` (a ``plinth.wakeup.Wakeup`` whose
fd the loop polls). Nothing is pickled: the objects themselves cross.
A changing admin request (create or delete a topic, add or remove shards) is
followed by a routing update (made by its admin thread) before its reply, so
the client that created a topic can produce to it at once through this router.

Direct addresses. With ``advertise_direct`` (a plaintext router on loopback),
a metadata reply also says, per partition, its leader's direct socket
(``RoutingTable.direct_addresses_of``), from a routing table fetched for that
reply, which goes to the loop too: a client asks for metadata when a direct
socket failed it, so both it and this router learn the new leaders at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace

from plinth import limits, protocol, topics
from plinth.control.controller_handle import ControllerHandle
from plinth.control.routing_table import RoutingTable
from plinth.errors import (BrokerError, InternalError, MalformedRequestError, RequestTimedOutError,
                           UnavailableError, UnknownTopicError)
from plinth.name_pages import NamesPage, check_page_args
from plinth.router.acl import ClientGrants
from plinth.router.client_ordered_jobs import DEFAULT_LANE, ClientOrderedJobs
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
    arrived_s: float = 0.0                 # time.monotonic() when the loop queued it

    def deadline_s(self) -> float | None:
        """When its client stops waiting (monotonic): a change's timeoutMs after it
        arrived; None for a query, or a change that gave no timeoutMs."""
        timeout_ms = getattr(self.request, "timeout_ms", 0)
        return self.arrived_s + timeout_ms / 1000 if timeout_ms and _is_change(self.request) \
            else None


# Admin requests after which the routing table has changed.
_CHANGING_REQUESTS = (protocol.CreateTopicRequest, protocol.CreateTopicsRequest,
                      protocol.DeleteTopicRequest, protocol.AddShardsRequest, protocol.RemoveShardsRequest,
                      protocol.MoveShardRequest, protocol.ElectLeadersRequest)
# Admin requests the controller runs on its one CHANGE_GROUP thread (ControllerHandle's
# changes), relayed on the change threads; a CreateTopicsRequest with validate_only
# changes nothing and is a query.
_CHANGES = (protocol.CreateTopicRequest, protocol.CreateTopicsRequest, protocol.AlterTopicRequest,
            protocol.DeleteTopicRequest, protocol.AddShardsRequest, protocol.RemoveShardsRequest,
            protocol.MoveShardRequest)
# The lane of ClientOrderedJobs the change threads take from (queries: DEFAULT_LANE).
_CHANGE_LANE = "changes"


def _is_change(request: protocol.Request) -> bool:
    return isinstance(request, _CHANGES) and not (
        isinstance(request, protocol.CreateTopicsRequest) and request.validate_only)


class AdminBridge:
    """Construct on any thread; ``start``/``stop`` from the router's owner;
    ``submit_request``, ``resolve_topic``, ``refresh_routing`` and ``take_results``
    from the loop thread."""

    def __init__(self, controller: ControllerHandle, advertise_direct: bool = False):
        """``advertise_direct``: metadata replies carry the leaders' direct addresses."""
        self.controller = controller
        self._advertise_direct = advertise_direct
        self.wakeup = Wakeup()
        # Admin requests, in order per client, changes in their own lane; topic look-ups
        # (a topic's name, None only wakes the routing thread).
        self._jobs: ClientOrderedJobs[_AnswerRequest] = ClientOrderedJobs(
            limits.ROUTER_ADMIN_JOBS_QUEUED_MAX,
            {_CHANGE_LANE: limits.ROUTER_ADMIN_CHANGES_QUEUED_MAX})
        self._lookups: queue.Queue = queue.Queue(maxsize=limits.ROUTER_ADMIN_JOBS_QUEUED_MAX)
        self._results: queue.Queue = queue.Queue(maxsize=limits.ROUTER_ADMIN_RESULTS_QUEUED_MAX)
        self._stopping = threading.Event()
        self._refresh_wanted = threading.Event()
        # Held from a routing call until its update is queued, so that the loop gets the
        # threads' tables in the order they were made (an older one never last).
        self._routing_lock = threading.Lock()
        # The last table the controller sent (under the lock): sent with each routing
        # call, which answers it unchanged without a copy; and not queued again.
        self._known_routing: RoutingTable | None = None
        # A routing call failed since the last update queued: the loop decides the
        # topics whose look-up failed at the next table it gets, so the next answered
        # call queues one even if it is unchanged (under the lock).
        self._update_owed = False
        self._threads = [threading.Thread(target=self._run_admin, args=(DEFAULT_LANE,),
                                          name=f"router-admin-{i}", daemon=True)
                         for i in range(limits.ROUTER_ADMIN_THREADS)]
        self._threads += [threading.Thread(target=self._run_admin, args=(_CHANGE_LANE,),
                                           name=f"router-admin-change-{i}", daemon=True)
                          for i in range(limits.ROUTER_ADMIN_CHANGE_THREADS)]
        self._threads.append(threading.Thread(target=self._run_routing, name="router-routing",
                                              daemon=True))

    # --- Owner ------------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, wait_s: float = limits.ROUTER_STOP_WAIT_S) -> None:
        """Stop the threads (after their current calls) and close the wake-up pipe. Call
        after the loop thread has stopped polling ``wakeup``."""
        self._stopping.set()
        self._jobs.close()                  # wakes the admin threads waiting for a job
        try:
            self._lookups.put_nowait(None)  # wakes the routing thread waiting for one
        except queue.Full:
            pass                            # it is busy, and sees the flag after this job
        deadline_s = time.monotonic() + wait_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline_s - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            # Still inside a control call: it may wake the pipe when the call returns,
            # so leave the pipe open rather than let it write to a reused fd.
            log.warning("router: an admin bridge thread is still in a control call; "
                        "not waiting")
            return
        self.wakeup.close()

    # --- Loop thread --------------------------------------------------------------

    def submit_request(self, client_id: bytes, request: protocol.Request,
                       grants: ClientGrants | None = None) -> str | None:
        """Queue an admin request to be answered (cut to ``grants`` if given); None if
        queued, else why not (a full queue, naming its limit)."""
        job = _AnswerRequest(client_id, request, grants, time.monotonic())
        if _is_change(request):
            if self._jobs.put_nowait(client_id, job, _CHANGE_LANE):
                return None
            return (f"router admin queue is full (ROUTER_ADMIN_JOBS_QUEUED_MAX "
                    f"{limits.ROUTER_ADMIN_JOBS_QUEUED_MAX} "
                    f"requests, or ROUTER_ADMIN_CHANGES_QUEUED_MAX "
                    f"{limits.ROUTER_ADMIN_CHANGES_QUEUED_MAX} changes waiting for the "
                    f"controller, which makes one at a time); retry later")
        if self._jobs.put_nowait(client_id, job):
            return None
        return (f"router admin queue is full (ROUTER_ADMIN_JOBS_QUEUED_MAX "
                f"{limits.ROUTER_ADMIN_JOBS_QUEUED_MAX} requests); retry later")

    def resolve_topic(self, topic: str) -> bool:
        """Queue a look-up of ``topic`` (a RoutingUpdate follows); False if the queue is full."""
        return _put_nowait(self._lookups, topic)

    def refresh_routing(self) -> None:
        """Fetch a new routing table soon (a shard said it does not lead a partition
        the table sends it, or is down): calls before the refresh make one, and
        refreshes come at most every ROUTING_REFRESH_ON_DEMAND_INTERVAL_S."""
        if self._refresh_wanted.is_set():
            return
        self._refresh_wanted.set()
        _put_nowait(self._lookups, None)   # wakes the routing thread (if full, it is busy
                                           # and sees the flag after this look-up)

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

    # --- Admin thread ---------------------------------------------------------------

    def _run_admin(self, lane: str) -> None:
        """A query thread (DEFAULT_LANE) or a change thread (_CHANGE_LANE)."""
        while not self._stopping.is_set():
            taken = self._jobs.take(lane)
            if taken is None:   # closed: the bridge stops
                return
            client_id, job = taken
            try:
                self._answer_job(job)
            finally:
                self._jobs.done(client_id)

    # --- Routing thread -------------------------------------------------------------

    def _run_routing(self) -> None:
        next_refresh_s = time.monotonic() + limits.ROUTING_REFRESH_INTERVAL_S
        last_refresh_s = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if self._refresh_wanted.is_set():   # on demand: sooner, within its own bound
                next_refresh_s = min(next_refresh_s, last_refresh_s
                                     + limits.ROUTING_REFRESH_ON_DEMAND_INTERVAL_S)
            if now >= next_refresh_s:
                self._refresh_wanted.clear()
                self._put_routing_update()
                last_refresh_s = time.monotonic()
                next_refresh_s = last_refresh_s + limits.ROUTING_REFRESH_INTERVAL_S
                continue
            try:
                topic = self._lookups.get(timeout=next_refresh_s - now)
            except queue.Empty:
                continue
            if topic is not None:
                self._put_routing_update(topic)

    # --- Either thread ----------------------------------------------------------------

    def _put(self, result: AdminResult) -> None:
        """Hand a result to the loop, waiting while its queue is full (until stop)."""
        while not self._stopping.is_set():
            try:
                self._results.put(result, timeout=limits.ROUTER_POLL_TIMEOUT_MS / 1000)
            except queue.Full:
                continue
            self.wakeup.wake()
            return

    def _answer_job(self, job: _AnswerRequest) -> None:
        """Queue the reply to an admin request; after a change, the new routing table
        first (an admin thread)."""
        request = job.request
        deadline_s = job.deadline_s()
        try:
            if deadline_s is not None and time.monotonic() >= deadline_s:
                raise _expired(job)
            reply = self._answer(request, job.grants, None if deadline_s is None
                                 else time.time() + deadline_s - time.monotonic())
        except BrokerError as exc:
            reply = protocol.encode_error(request.request_id, exc)
        except AssertionError:
            raise
        except Exception as exc:   # a bug: answer it, and keep the bridge serving
            log.exception("router: internal error answering %s request %d", request.kind,
                          request.request_id)
            reply = protocol.encode_error(request.request_id, InternalError(
                f"router: {type(exc).__name__} answering {request.kind}: {exc}"))
        else:
            if isinstance(request, _CHANGING_REQUESTS):
                self._put_routing_update()
        self._put(AdminReply(job.client_id, reply))

    def _put_routing_update(self, topic: str | None = None) -> None:
        """Queue a fresh routing table (either thread), as the look-up of ``topic``
        if given."""
        with self._routing_lock:
            routing, new = self._fresh_routing()
            # An unchanged table is not queued: the loop has it (or is sent it).
            if new or topic is not None or (self._update_owed and routing is not None):
                self._update_owed = routing is None
                self._put(RoutingUpdate(routing, topic))

    def _answer(self, request: protocol.Request, grants: ClientGrants | None = None,
                deadline_unix_s: float | None = None) -> bytes:
        """The encoded reply to one admin request; raises the controller's BrokerError.
        ``deadline_unix_s``: a change's client's, which the controller keeps too."""
        rid, controller, until = request.request_id, self.controller, deadline_unix_s
        match request:
            case protocol.CreateTopicRequest(topic=topic, partitions=partitions, config=config,
                                             replication_factor=factor):
                return protocol.encode_topics_reply(rid, [controller.create_topic(
                    topic, partitions, config, factor, deadline_unix_s=until)])
            case protocol.CreateTopicsRequest(topics=new_topics, validate_only=True):
                return protocol.encode_topics_reply(
                    rid, controller.validate_new_topics(list(new_topics)))
            case protocol.CreateTopicsRequest(topics=new_topics):
                return protocol.encode_topics_reply(rid, controller.create_topics(
                    list(new_topics), deadline_unix_s=until))
            case protocol.AlterTopicRequest(topic=topic, config=config, partitions=partitions,
                                            delete_config=delete_config):
                info = controller.add_partitions(topic, partitions, deadline_unix_s=until) \
                    if partitions else None
                if config or delete_config or info is None:
                    info = controller.alter_topic(topic, config, delete_config,
                                                  deadline_unix_s=until)
                return protocol.encode_topics_reply(rid, [info])
            case protocol.DeleteTopicRequest(topic=topic, topic_id=topic_id):
                controller.delete_topic(topic, topic_id, deadline_unix_s=until)
                return protocol.encode_ok(rid)
            case protocol.DescribeTopicRequest(topic=topic):
                return protocol.encode_topics_reply(rid, [controller.describe_topic(topic)])
            case protocol.ListOffsetsRequest(topic=topic, partition=partition,
                                             timestamp_ms=timestamp_ms):
                info = controller.partition_offsets(topic, partition, timestamp_ms)
                if request.require_listed and info.remote_not_listed:
                    raise UnavailableError(f"{topic}-{partition}: records before the log start "
                                           f"offset {info.start_offset} may be in object storage; "
                                           f"retry: {info.remote_not_listed}")
                return protocol.encode_offsets_reply(rid, info)
            case protocol.AddShardsRequest(shard_count=count):
                return protocol.encode_moves_reply(rid, controller.add_shards(
                    count, deadline_unix_s=until))
            case protocol.RemoveShardsRequest(shard_count=count):
                return protocol.encode_moves_reply(rid, controller.remove_shards(
                    count, deadline_unix_s=until))
            case protocol.MoveShardRequest():
                return protocol.encode_shard_move_reply(rid, controller.move_shard(
                    request.shard, request.node, deadline_unix_s=until,
                    allow_replicas_on_one_node=request.allow_replicas_on_one_node,
                    accept_data_loss=request.accept_data_loss, force=request.force))
            case protocol.ElectLeadersRequest(election_type=election_type, partitions=partitions):
                return protocol.encode_elections_reply(rid, controller.elect_leaders(
                    election_type, None if partitions is None else list(partitions)))
            case protocol.StatusRequest():
                return protocol.encode_status_reply(rid, controller.status())
            case protocol.ListGroupsPageRequest():
                return protocol.encode_names_page_reply(rid, _visible_page(
                    controller.list_groups_page, request, grants and grants.may_describe_group))
            case protocol.ListTopicsPageRequest():
                return protocol.encode_names_page_reply(rid, _visible_page(
                    controller.list_topics_page, request, grants and grants.may_see_topic))
            case protocol.TopicStatsRequest(topics=names):   # the ACL checked each name
                return protocol.encode_topic_stats_reply(rid, controller.topic_stats(list(names)))
            case protocol.ListGroupsRequest():
                groups = controller.list_groups()
                if grants is not None:   # each state goes, or stays, with its name
                    groups = [g for g in groups if grants.may_describe_group(g.group)]
                return protocol.encode_groups_reply(rid, groups)
            case protocol.ListTopicsRequest():   # without the internal topic (--exclude-internal)
                infos = [i for i in controller.list_topics() if i.name != topics.OFFSETS_TOPIC]
                return protocol.encode_topics_reply(rid, _visible(infos, grants))
            case protocol.MetadataRequest(topics=names):
                infos = controller.list_topics()
                infos = _only(infos, names) if names else _visible(infos, grants)
                return protocol.encode_topics_reply(rid, self._with_direct_addresses(infos))
        raise MalformedRequestError(f"the router does not serve {request.kind} requests")

    def _with_direct_addresses(self, infos: list[protocol.TopicInfo]) -> list[protocol.TopicInfo]:
        """``infos`` with their leaders' direct addresses, if this router advertises
        them and the controller answers (admin thread)."""
        if not self._advertise_direct:
            return infos
        with self._routing_lock:
            routing, new = self._fresh_routing()
            if routing is None:
                return infos
            if new or self._update_owed:
                self._update_owed = False
                self._put(RoutingUpdate(routing, None))
        return [replace(info, direct_addresses=routing.direct_addresses_of(info.name))
                for info in infos]

    def _fresh_routing(self) -> tuple[RoutingTable | None, bool]:
        """The controller's routing table (None if it did not answer), and whether it
        is not the last one it sent (under ``_routing_lock``)."""
        known = self._known_routing
        try:
            routing = self.controller.routing(known)
        except BrokerError as exc:
            log.warning("router: the routing refresh failed: %s", exc)
            self._update_owed = True
            return None, False
        self._known_routing = routing
        return routing, routing is not known


def _expired(job: _AnswerRequest) -> RequestTimedOutError:
    """The answer to a change whose client stopped waiting before its turn came: it
    is not made (logged, as the controller logs one it drops)."""
    request = job.request
    waited_ms = (time.monotonic() - job.arrived_s) * 1000
    log.warning("router: %s request %d not made: its client's timeoutMs %d ran out after "
                "%.0f ms in the change queue", request.kind, request.request_id,
                request.timeout_ms, waited_ms)
    return RequestTimedOutError(
        f"router: {request.kind} was not made: it waited {waited_ms:.0f} ms for the changes "
        f"before it (the controller makes one at a time), past its timeoutMs of "
        f"{request.timeout_ms} ms, when its client stopped waiting; nothing was changed")


def _put_nowait(jobs: queue.Queue, job) -> bool:
    try:
        jobs.put_nowait(job)
    except queue.Full:
        return False
    return True


def _visible(infos: list[protocol.TopicInfo], grants: ClientGrants | None) -> list[protocol.TopicInfo]:
    """The infos of the topics ``grants`` hold any operation on (all without an ACL)."""
    return infos if grants is None else [info for info in infos if grants.may_see_topic(info.name)]


def _visible_page(ask_page, request, visible) -> NamesPage:
    """The page ``request`` (a ListTopicsPageRequest or ListGroupsPageRequest) asks for,
    of the names ``visible`` accepts (all if None: no ACL). With an ACL, the
    controller's pages are walked, ADMIN_LIST_PAGE_NAMES_MAX names at a time, until
    the page is full of names the client may see or the list ends, so that ``more``
    stays exact; the walk is bounded by the names there may be."""
    check_page_args(request.prefix, request.after, request.limit, request.kind)
    if visible is None:
        return ask_page(request.prefix, request.after, request.limit)
    names: list[str] = []
    unanswered: set[str] = set()   # the shards any page walked lacks (NamesPage)
    after, step = request.after, limits.ADMIN_LIST_PAGE_NAMES_MAX
    names_max = max(limits.TOPICS_MAX, limits.GROUPS_PER_SHARD_MAX * limits.SHARDS_MAX)
    for _ in range(names_max // step + 2):
        page = ask_page(request.prefix, after, step)
        unanswered.update(page.unanswered)
        for name in page.names:
            if not visible(name):
                continue
            if request.limit and len(names) == request.limit:
                return NamesPage(names, True, sorted(unanswered))
            names.append(name)
        if not page.more:
            return NamesPage(names, False, sorted(unanswered))
        after = page.names[-1]
    raise InternalError(f"router: the {request.kind} page after {request.after!r} did not end "
                        f"within {names_max} names")


def _only(infos: list[protocol.TopicInfo], names: tuple[str, ...]) -> list[protocol.TopicInfo]:
    """The infos of ``names``, in that order; UnknownTopicError names the first missing."""
    by_name = {info.name: info for info in infos}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise UnknownTopicError(f"unknown topic {missing[0]!r}")
    return [by_name[name] for name in names]
