"""The Prometheus endpoint: per-partition rates and offsets, latencies, errors, lag,
and replication (in-sync sizes, under-replicated and offline partitions).

Runs in the server process (``plinth serve --metrics-port P``; a ``plinth
router`` may serve one too). At each scrape the collector asks the
controller for every shard's ShardStats snapshot (one Ray call) and turns it
into metric families; nothing is sampled in between, so a scrape costs the
broker nothing when nobody scrapes.

Broker-wide series (the shards', the partitions', the groups') are exported by
the server's endpoint only: a ``plinth router``'s (``broker_wide=False``)
exports its own router's series alone, so that a Prometheus scraping every
Plinth process counts each once. ``plinth_errors_total`` is labelled by
``source``: the shard that made the error reply, or ``router:<listen address>``
for the errors a router made (its refusals, and the controller's answers to
admin requests), each counted by the one process that made it.

The HTTP server binds ``--metrics-host`` (127.0.0.1 by default) and answers
``/metrics``, and two probes for load balancers and Kubernetes (404 elsewhere):
``/healthz`` is 200 while the process serves HTTP (liveness: nothing it asks may
be slow); ``/ready`` is 200 once the controller answers within
METRICS_READY_CHECK_TIMEOUT_S and every shard of its start serves, else 503
saying why (one controller call per probe). HEAD is answered as GET, without
the body. ``plinth_build_info{version}`` says which Plinth answers.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable

from prometheus_client.core import (REGISTRY, CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from plinth import limits
from plinth.control.controller_handle import ControllerHandle
from plinth.errors import BrokerError
from plinth.version import VERSION

log = logging.getLogger(__name__)

# The paths the endpoint answers: Prometheus's default metrics_path, and the probes.
METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
READY_PATH = "/ready"

_PARTITION_LABELS = ["topic", "partition", "shard"]
_COUNTERS = (("records_in", "plinth_partition_records_in", "Records appended"),
             ("bytes_in", "plinth_partition_bytes_in", "RecordBatch bytes appended"),
             ("fetches", "plinth_partition_fetch_requests", "Fetch requests answered"),
             ("bytes_out", "plinth_partition_bytes_out", "Log bytes returned by fetches"),
             ("records_out", "plinth_partition_records_out",
              "Records returned by fetches, from the offset each asked"))
_GAUGES = (("start_offset", "plinth_partition_log_start_offset",
            "First offset stored, in object storage or locally"),
           ("local_start_offset", "plinth_partition_local_log_start_offset",
            "First offset on the shard's disk"),
           # The value is the shard's high watermark (shard_server.stats_snapshot), not
           # its log end: the name is kept, as dashboards and alerts use it.
           ("end_offset", "plinth_partition_log_end_offset",
            "High watermark: the offset after the last record consumers may read (despite "
            "the name, not the log end offset: on a replicated partition it trails the "
            "leader's log end until the in-sync replicas hold the records)"),
           ("size_bytes", "plinth_partition_size_bytes", "Bytes of log files"))


# Fetches read from object storage, and the shard's cache of remote chunks (ShardStats.remote).
# Reads are counted once however many requests joined them (remote_fetch_waits.py), so a
# store that fails every read moves plinth_remote_fetch_errors, never the other two.
_REMOTE_FETCH_COUNTERS = (
    ("fetches", "plinth_remote_fetches", "Reads for fetches from object storage that the "
     "shard's remote reader answered with data (fetches of one offset share one read; "
     "failed reads are in plinth_remote_fetch_errors)"),
    ("bytes", "plinth_remote_fetch_bytes", "Log bytes returned by fetches from object storage"),
    ("errors", "plinth_remote_fetch_errors", "Reads from object storage that failed, for "
     "fetches and look-ups by time, and those requests refused by a full reader queue"),
    ("time_lookups", "plinth_remote_time_lookups",
     "Reads for look-ups by time (ListOffsets, offsets_for_times) that object storage "
     "answered, with a record or none in the segment (look-ups of one segment, time and "
     "floor share one read; failed reads are in plinth_remote_fetch_errors)"),
    ("fetch_waits_expired", "plinth_remote_fetch_waits_expired",
     "Fetches from object storage answered with no records because their read was not "
     f"back within {limits.REMOTE_FETCH_WAIT_MS_MAX} ms: the store is slow"),
    ("time_lookup_waits_expired", "plinth_remote_time_lookup_waits_expired",
     "Look-ups by time in object storage answered requestTimedOut (retriable) because "
     f"their read was not back within {limits.REMOTE_TIME_LOOKUP_WAIT_MS_MAX} ms: the store "
     "is slow"),
    ("cache_hits", "plinth_tier_cache_hits", "Remote chunks read from the shard's cache"),
    ("cache_misses", "plinth_tier_cache_misses", "Ranged gets from object storage"))

# Uploads to object storage, per partition a shard uploads (RemoteLogManager.stats).
_UPLOAD_COUNTERS = (
    ("uploads", "plinth_partition_remote_uploads", "Segments uploaded to object storage"),
    ("upload_errors", "plinth_partition_remote_upload_errors",
     "Failed attempts to upload a segment to object storage"),
    ("remote_segments_lost", "plinth_partition_remote_segments_lost",
     "Remote segments gone from object storage that retention did not delete (deleted out "
     "of band, or lost by the store): their records can no longer be read"))
_UPLOAD_GAUGES = (
    ("remote_bytes", "plinth_partition_remote_bytes", "Log bytes in object storage"),
    ("remote_segments", "plinth_partition_remote_segments", "Segments in object storage"),
    ("remote_listed", "plinth_partition_remote_listed",
     "1 if the shard has listed object storage since it began uploading the partition; "
     "0: the remote gauges may lack segments the store holds (a new leader, the store down)"),
    ("upload_lag_bytes", "plinth_partition_remote_upload_lag_bytes",
     "Log bytes below the high watermark not yet in object storage"),
    ("upload_lag_s", "plinth_partition_remote_upload_lag_seconds",
     "Age of the oldest rolled segment waiting to be uploaded"))

_REPLICATION_GAUGES = (
    ("plinth_partition_under_replicated", "1 if a replica of the partition is out of sync"),
    ("plinth_partition_isr_size", "Replicas in the partition's in-sync set"),
    ("plinth_partition_offline", "1 if the partition has no leader, or its leader's shard "
                                 "does not serve"))


class BrokerCollector:
    """Collects from the controller behind ``controller`` (a ControllerHandle; a
    standalone router's finds a new controller after its server restarts)."""

    def __init__(self, controller: ControllerHandle,
                 router_refusals: Callable[[], dict[str, int]] | None = None,
                 router: str = "", router_errors: Callable[[], dict[str, int]] | None = None,
                 broker_wide: bool = True, kafka=None,
                 router_memory: Callable[[], dict[str, tuple[int, int]]] | None = None,
                 tier_claim: Callable[[], object] | None = None):
        """``router_refusals()``: this process's router's refusals by code (its
        Security's ``refusals``; None: a router without CurveZMQ refuses nothing), and
        ``router_errors()`` the other error replies it made (Router.errors; None: no
        router here), both reported in plinth_errors_total under ``source``
        "router:<router>", its listen address. ``broker_wide``: also the shards' and
        partitions' series (the server's endpoint); False for a standalone router's.
        ``kafka``: this process's Kafka listener as (its KafkaErrorCounts, its bound
        "host:port"), or None without one. ``router_memory()``: this process's
        router's bytes held against each of its budgets (Router.memory_bytes), or
        None without a router. ``tier_claim()``: the server's claim on its tier store
        (store_claim.ClaimKeeper.state), or None without one."""
        self._controller = controller
        self._tier_claim = tier_claim
        self._router_memory = router_memory
        self._kafka = kafka
        self._router_refusals = router_refusals
        self._router_errors = router_errors
        self._router = router
        self._broker_wide = broker_wide

    def collect(self):
        router_errors = Counter(self._router_errors() if self._router_errors else {})
        router_errors.update(self._router_refusals() if self._router_refusals else {})
        yield _build_info()
        if self._kafka is not None:   # this process's listener, on either endpoint
            yield from _kafka_families(*self._kafka)
        if self._router_memory is not None:
            yield from _router_memory_families(self._router_memory(), self._router)
        if not self._broker_wide:   # a standalone router's endpoint: its own series only
            yield _errors({}, router_errors, self._router)
            return
        if self._tier_claim is not None:
            yield _tier_claim_family(self._tier_claim())
        try:
            snapshots = self._controller.shard_stats()
        except BrokerError as exc:   # the controller is down: report that, not a 500
            log.warning("metrics: controller did not answer: %s", exc)
            snapshots = {}
        yield _shard_up(snapshots)
        live = {shard: snap for shard, snap in snapshots.items() if snap is not None}
        yield from _disk_families(live)
        states = self._partition_replication()
        yield from _partition_families(live)
        yield from _latency_families(live)
        yield _errors(live, router_errors, self._router)
        yield _requests_by_socket(live)
        yield from _remote_fetch_families(live)
        yield from _upload_families(live)
        yield _group_lag(live, {(s.topic, s.partition): s.leader for s in states})
        yield from _replication_families(states, {shard for shard, snap in snapshots.items()
                                                   if snap is None})

    def _partition_replication(self) -> list:
        try:
            return self._controller.partition_replication()
        except BrokerError as exc:
            log.warning("metrics: controller did not answer: %s", exc)
            return []


def _replication_families(states, silent: set[str]):
    """Each partition's in-sync size, and whether it is under-replicated or offline,
    from the controller's metadata (not from the shards: a dead leader's shard cannot
    report itself offline), offline too where its leader's shard is ``silent`` (did
    not answer this scrape's stats: stopped or hung, which Ray still counts alive)."""
    families = [GaugeMetricFamily(name, doc, labels=["topic", "partition"])
                for name, doc in _REPLICATION_GAUGES]
    for state in states:
        labels = [state.topic, str(state.partition)]
        families[0].add_metric(labels, 1 if state.under_replicated else 0)
        families[1].add_metric(labels, state.in_sync)
        families[2].add_metric(labels, 1 if state.offline or state.leader in silent else 0)
    yield from families


def _shard_up(snapshots):
    family = GaugeMetricFamily("plinth_shard_up", "1 if the shard answered", labels=["shard"])
    for shard, snap in sorted(snapshots.items()):
        family.add_metric([shard], 0 if snap is None else 1)
    return family


_DISK_GAUGES = (
    ("free_bytes", "plinth_shard_disk_free_bytes",
     "Bytes free on the file system of the shard's directory (as df shows them)"),
    ("total_bytes", "plinth_shard_disk_total_bytes",
     "Size of the file system of the shard's directory"),
    ("reserve_bytes", "plinth_shard_disk_reserve_bytes",
     "Bytes the shard keeps free: produces that would leave less are refused "
     "(plinth serve --produce-free-bytes-min)"))


def _disk_families(live):
    """Each shard's disk: free and total bytes, and the reserve below which it refuses
    produces, so that a disk filling up is seen before produces fail (tester D)."""
    for field, name, doc in _DISK_GAUGES:
        family = GaugeMetricFamily(name, doc, labels=["shard"])
        for shard, snap in sorted(live.items()):
            disk = snap.get("disk", {})   # none from a shard before session 39
            if field in disk:
                family.add_metric([shard], disk[field])
        yield family


def _partition_families(live):
    for field, name, doc in _COUNTERS:
        family = CounterMetricFamily(name, doc, labels=_PARTITION_LABELS)
        for shard, snap in live.items():
            for (topic, partition), counters in snap["partitions"].items():
                if field in counters:   # a snapshot from before the field existed has none
                    family.add_metric([topic, str(partition), shard], counters[field])
        yield family
    for field, name, doc in _GAUGES:
        family = GaugeMetricFamily(name, doc, labels=_PARTITION_LABELS)
        for shard, snap in live.items():
            for (topic, partition), values in snap["logs"].items():
                if field in values:   # a snapshot from before the field existed has none
                    family.add_metric([topic, str(partition), shard], values[field])
        yield family


def _latency_families(live):
    family = HistogramMetricFamily("plinth_request_latency_seconds",
                                   "Shard time from receiving a request to answering it "
                                   "(produce: after fsync; fetch: including a long poll)",
                                   labels=["kind", "shard"])
    for shard, snap in live.items():
        bounds = snap["latency_buckets_s"]
        for kind, counts in snap["latency_counts"].items():
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, counts):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            family.add_metric([kind, shard], buckets, snap["latency_sum_s"].get(kind, 0.0))
    yield family


def _tier_claim_family(state) -> GaugeMetricFamily:
    """Whether the server holds the claim on its tier store: 0 while it does not (the
    store did not answer at start, or another copy of its data dir took it), when
    its shards delete no remote segments and retention of the store stands still."""
    family = GaugeMetricFamily(
        "plinth_tier_store_claim_held", "1 if the server holds the claim on its tier store "
        "(its shards delete remote segments only then), 0 if not (plinth status says why)",
        labels=["store"])
    family.add_metric([state.store], 1 if state.held else 0)
    return family


def _router_memory_families(held: dict[str, tuple[int, int]], router: str):
    """The bytes this process's router holds for its clients, by budget, and each
    budget (plinth/limits.py), so that an alert can fire before clients get
    tooManyRequests (tester M, session 40: the router was the largest process)."""
    now = GaugeMetricFamily("plinth_router_memory_bytes",
                            "Bytes the router holds for its clients, by budget: requests "
                            "in flight (at the shards or held), requests held for their "
                            "topic's look-up, replies not yet sent, and its Kafka "
                            "listener's requests read and not yet answered",
                            labels=["router", "kind"])
    most = GaugeMetricFamily("plinth_router_memory_bytes_max",
                             "Each budget of plinth_router_memory_bytes: beyond it, a request "
                             "or reply is refused tooManyRequests (a Kafka connection's next "
                             "request waits to be read)", labels=["router", "kind"])
    for kind, (held_bytes, limit_bytes) in sorted(held.items()):
        now.add_metric([router, kind], held_bytes)
        most.add_metric([router, kind], limit_bytes)
    yield now
    yield most


def _errors(live, router_errors: dict[str, int], router: str):
    """Error replies by code and ``source``: a shard's (its id), and those the router
    of this process made (``router:<listen address>``): its own refusals (unknown
    topic, partition out of range, too many requests, malformed...), the
    controller's answers to admin requests it relayed (invalid topic, invalid
    config, unknown group...), the ACL's, a revoked key's, and refused handshakes
    (``handshakeRefused``, which get no reply), so that what an operator alerts on
    is here, not only in the log. No sample has an empty label."""
    family = CounterMetricFamily("plinth_errors", "Error replies by code, and the shard or "
                                 "router that made them", labels=["code", "source"])
    for shard, snap in live.items():
        for code, count in snap["errors"].items():
            family.add_metric([code, shard], count)
    for code, count in sorted(router_errors.items()):
        family.add_metric([code, f"router:{router}"], count)
    return family


def _kafka_families(counts, listener: str):
    """The Kafka listener's error answers by API and Kafka's error name (as Kafka's
    ErrorsPerSec{request, error}: one per error code in a response, so a Produce with
    two partitions refused counts 2), and the connections it closed, by reason
    (router/kafka/error_counts.py)."""
    errors = CounterMetricFamily(
        "plinth_kafka_errors", "Kafka listener: error codes in its responses, by API and "
        "Kafka error name", labels=["listener", "api", "error"])
    for (api, error), count in sorted(counts.errors().items()):
        errors.add_metric([listener, api, error], count)
    yield errors
    closes = CounterMetricFamily(
        "plinth_kafka_connections_closed", "Kafka listener: connections it closed or "
        "refused because of what their client did, by reason", labels=["listener", "reason"])
    for reason, count in sorted(counts.closes().items()):
        closes.add_metric([listener, reason], count)
    yield closes


def _requests_by_socket(live):
    family = CounterMetricFamily(
        "plinth_shard_requests", "Requests a shard took, by socket: from a router, or on "
        "its direct socket (clients' produce and fetch without the router)",
        labels=["shard", "socket"])
    for shard, snap in live.items():
        for socket_name, count in snap.get("requests_by_socket", {}).items():
            family.add_metric([shard, socket_name], count)
    return family


def _remote_fetch_families(live):
    for field, name, doc in _REMOTE_FETCH_COUNTERS:
        family = CounterMetricFamily(name, doc, labels=["shard"])
        for shard, snap in live.items():
            if "remote_fetch" in snap:   # (not in a snapshot from before remote fetches)
                family.add_metric([shard], snap["remote_fetch"].get(field, 0))
        yield family
    family = GaugeMetricFamily("plinth_tier_cache_bytes", "Bytes of remote chunks cached on "
                               "the shard's disk", labels=["shard"])
    for shard, snap in live.items():
        if "remote_fetch" in snap:
            family.add_metric([shard], snap["remote_fetch"]["cache_bytes"])
    yield family


def _upload_families(live):
    for fields, kind in ((_UPLOAD_COUNTERS, CounterMetricFamily),
                         (_UPLOAD_GAUGES, GaugeMetricFamily)):
        for field, name, doc in fields:
            family = kind(name, doc, labels=_PARTITION_LABELS)
            for shard, snap in live.items():
                for (topic, partition), values in snap.get("tier", {}).items():
                    family.add_metric([topic, str(partition), shard], values[field])
            yield family


def _group_lag(live, leaders: dict[tuple[str, int], str]):
    """``leaders``: (topic, partition) -> its leader's shard: of a replicated partition,
    the leader's end offset counts (a follower's may lag behind it)."""
    family = GaugeMetricFamily("plinth_group_lag", "Log end offset minus committed offset",
                               labels=["group", "topic", "partition"])
    ends: dict[tuple[str, int], int] = {}
    for shard, snap in live.items():
        for key, logs in snap["logs"].items():
            if leaders.get(key) == shard:
                ends[key] = logs["end_offset"]            # the leader's (or owner's) wins
            elif leaders.get(key) not in live:            # it does not answer: the furthest
                ends[key] = max(ends.get(key, 0), logs["end_offset"])
    for snap in live.values():
        for group, committed in snap["groups"].items():
            for (topic, partition), offset in committed.items():
                if (topic, partition) in ends:
                    family.add_metric([group, topic, str(partition)],
                                      max(0, ends[(topic, partition)] - offset))
    return family


def _build_info() -> GaugeMetricFamily:

    family = GaugeMetricFamily("plinth_build_info", "1, labelled with the version of Plinth "
                               "serving this endpoint", labels=["version"])
    family.add_metric([VERSION], 1)
    return family


def start_metrics_server(controller: ControllerHandle, port: int, host: str = "127.0.0.1",
                         registry=REGISTRY,
                         router_refusals: Callable[[], dict[str, int]] | None = None,
                         router: str = "",
                         router_errors: Callable[[], dict[str, int]] | None = None,
                         broker_wide: bool = True, kafka=None,
                         router_memory: Callable[[], dict[str, tuple[int, int]]] | None = None,
                         tier_claim: Callable[[], object] | None = None):
    """Serve the metrics on http://host:port/metrics from a daemon thread (any other
    path is a 404); returns the HTTP server (its ``shutdown()`` stops it). Called
    once by the server process's main thread (BrokerCollector says what the router
    arguments and ``broker_wide`` are). OSError naming the address if it
    cannot listen there (in use, not this machine's); then nothing is registered,
    so a later call may try again."""
    try:
        server = _metrics_http_server(host, port, registry, lambda: _readiness(controller))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on http://{host}:{port}{METRICS_PATH}: "
                                 f"{exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics-http").start()
    registry.register(BrokerCollector(controller, router_refusals, router, router_errors,
                                      broker_wide, kafka, router_memory, tier_claim))
    log.info("metrics on http://%s:%d%s%s", host, port, METRICS_PATH,
             "" if broker_wide else ": this router's series only (the broker's are on "
                                    "plinth serve's --metrics-port)")
    return server


def _readiness(controller: ControllerHandle) -> str | None:
    """Why the broker is not ready (``/ready``'s 503), or None: the controller must
    answer within METRICS_READY_CHECK_TIMEOUT_S and every shard of its start serve.
    The HTTP server's request threads."""
    try:
        report = controller.start_report_within(limits.METRICS_READY_CHECK_TIMEOUT_S)
    except BrokerError as exc:
        return f"the controller did not answer: {exc}"
    if report.not_serving:
        return "not serving: " + "; ".join(f"{shard}: {why}" for shard, why
                                           in sorted(report.not_serving.items()))
    return None


def _metrics_http_server(host: str, port: int, registry, readiness: Callable[[], str | None]):
    """prometheus_client's start_http_server, but for its app: that answers every path
    with the metrics, so a mistyped scrape path or a probe of / looked like a
    working endpoint."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args) -> None:   # a line per scrape would drown the log
            pass

    return make_server(address[0], port, _routes(make_wsgi_app(registry), readiness), Server,
                       handler_class=QuietHandler)


def _text() -> list[tuple[str, str]]:
    """The probes' headers: a new list for each response (wsgiref adds its
    Content-Length to the list it is given)."""
    return [("Content-Type", "text/plain; charset=utf-8")]


def _routes(metrics_app, readiness: Callable[[], str | None]):
    """The endpoint's WSGI app: the metrics, the two probes, 404 elsewhere; HEAD as
    GET without the body (probers send it; prometheus_client's app refuses it)."""
    def app(environ, start_response):
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if head:
            environ = {**environ, "REQUEST_METHOD": "GET"}
        body = _answer(environ.get("PATH_INFO"), environ, start_response, metrics_app,
                       readiness)
        return [] if head else body

    return app


def _answer(path, environ, start_response, metrics_app, readiness) -> list[bytes]:
    if path == METRICS_PATH:
        return list(metrics_app(environ, start_response))
    if path == HEALTH_PATH:
        start_response("200 OK", _text())
        return [b"ok\n"]
    if path == READY_PATH:
        why = readiness()
        start_response("200 OK" if why is None else "503 Service Unavailable", _text())
        return [b"ready\n" if why is None else f"not ready: {why}\n".encode()]
    start_response("404 Not Found", _text())
    return [f"404: not found; the metrics are at {METRICS_PATH}, the probes at "
            f"{HEALTH_PATH} and {READY_PATH}\n".encode()]
