"""control/metrics.py: the replication gauges come from the controller's metadata (a
neighbour here: a controller handle answering as the real one does)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from plinth import __version__
from plinth.control.controller import PartitionReplication
from plinth.control.controller_handle import StartReport
from plinth.control.metrics import BrokerCollector, start_metrics_server
from plinth.errors import RequestTimedOutError, UnavailableError
from tests.support import free_port


class ControllerAnswering:
    """A ControllerHandle's two metric calls, with fixed answers (or an error)."""

    def __init__(self, states: list[PartitionReplication] | None = None, error=None,
                 stats: dict | None = None, report: StartReport | None = None):
        self._states, self._error, self._stats = states or [], error, stats or {}
        self._report = report or StartReport({"shard-0": "ipc://x"}, {})

    def start_report_within(self, timeout_s: float) -> StartReport:
        if self._error is not None:
            raise self._error
        return self._report

    def shard_stats(self) -> dict:
        return self._stats

    def partition_replication(self) -> list[PartitionReplication]:
        if self._error is not None:
            raise self._error
        return self._states


def samples(collector: BrokerCollector) -> dict[tuple[str, str, str], float]:
    return {(s.name, s.labels.get("topic"), s.labels.get("partition")): s.value
            for family in collector.collect() for s in family.samples
            if s.name.startswith("plinth_partition_") and "topic" in s.labels}


def test_each_partition_reports_its_in_sync_size_and_whether_it_is_under_replicated_or_offline():
    # Given a partition with a replica out of sync, one without a leader, and a healthy one
    collector = BrokerCollector(ControllerAnswering([
        PartitionReplication("orders", 0, 3, 2, "shard-1", False),
        PartitionReplication("orders", 1, 3, 1, "", True),
        PartitionReplication("plain", 0, 1, 1, "shard-0", False)]))
    # When the metrics are collected
    got = samples(collector)
    # Then each partition has the three gauges, by topic and partition
    assert [got[("plinth_partition_under_replicated", t, p)] for t, p in
            [("orders", "0"), ("orders", "1"), ("plain", "0")]] == [1, 1, 0]
    assert [got[("plinth_partition_isr_size", t, p)] for t, p in
            [("orders", "0"), ("orders", "1"), ("plain", "0")]] == [2, 1, 1]
    assert [got[("plinth_partition_offline", t, p)] for t, p in
            [("orders", "0"), ("orders", "1"), ("plain", "0")]] == [0, 1, 0]


def test_a_partition_whose_leaders_shard_did_not_answer_the_scrape_is_offline():
    # Given a shard that did not answer its stats (stopped: Ray counts it alive), which
    # leads one partition of one copy
    collector = BrokerCollector(ControllerAnswering([
        PartitionReplication("plain", 0, 1, 1, "shard-0", False),
        PartitionReplication("plain", 1, 1, 1, "shard-1", False)],
        stats={"shard-0": None}))
    # Then that partition is offline, the other is not
    got = samples(collector)
    assert [got[("plinth_partition_offline", "plain", p)] for p in "01"] == [1, 0]


def test_a_controller_that_does_not_answer_leaves_the_gauges_empty_not_the_scrape_failing():
    collector = BrokerCollector(ControllerAnswering(error=UnavailableError("restarting")))
    names = {family.name for family in collector.collect()}
    assert {"plinth_partition_under_replicated", "plinth_partition_isr_size",
            "plinth_partition_offline"} <= names
    assert samples(collector) == {}


def test_group_lag_counts_from_the_leaders_end_offset_not_a_followers():
    # Given a partition whose leader (shard-1) is at 100 and a follower (shard-0) at 90,
    # and a group that committed 40
    class WithShards(ControllerAnswering):
        def shard_stats(self):
            def snap(end, groups):
                return {"partitions": {}, "logs": {("t", 0): {"start_offset": 0, "end_offset": end,
                                                              "size_bytes": 1}},
                        "latency_buckets_s": [], "latency_counts": {}, "latency_sum_s": {},
                        "errors": {}, "groups": groups}
            # the follower last: whichever answered last must not decide
            return {"shard-1": snap(100, {}), "shard-0": snap(90, {"g": {("t", 0): 40}})}

    collector = BrokerCollector(WithShards([PartitionReplication("t", 0, 2, 1, "shard-1", False)]))
    # When the metrics are collected / Then the lag is the leader's end minus the commit
    lag = [s.value for family in collector.collect() for s in family.samples
           if s.name == "plinth_group_lag"]
    assert lag == [60]


def test_each_tiered_partition_reports_its_remote_bytes_upload_lag_errors_and_lost_segments():
    # Given a shard uploading one partition, as RemoteLogManager.stats reports it
    class WithTier(ControllerAnswering):
        def shard_stats(self) -> dict:
            return {"shard-0": {"partitions": {}, "logs": {}, "latency_counts": {},
                                "latency_buckets_s": [], "latency_sum_s": {}, "errors": {}, "groups": {},
                                "tier": {("orders", 1): {
                                    "remote_bytes": 7_000_000, "remote_segments": 7,
                                    "remote_log_start_offset": 0, "remote_end_offset": 7_000,
                                    "upload_lag_bytes": 2_000_000, "upload_lag_s": 4.5,
                                    "uploads": 9, "upload_errors": 2,
                                    "remote_segments_lost": 3, "remote_listed": 0}}}}
    # When the metrics are collected
    got = samples(BrokerCollector(WithTier()))
    # Then each figure is there, by topic and partition
    assert [got[(name, "orders", "1")] for name in (
        "plinth_partition_remote_bytes", "plinth_partition_remote_segments",
        "plinth_partition_remote_upload_lag_bytes", "plinth_partition_remote_upload_lag_seconds",
        "plinth_partition_remote_uploads_total", "plinth_partition_remote_upload_errors_total",
        "plinth_partition_remote_segments_lost_total", "plinth_partition_remote_listed",
    )] == [7_000_000, 7, 2_000_000, 4.5, 9, 2, 3, 0]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_endpoint_serves_the_metrics_on_slash_metrics_and_404_elsewhere():
    # Given the endpoint over a controller with one partition, in a registry of its own
    port = free_port()
    server = start_metrics_server(
        ControllerAnswering([PartitionReplication("orders", 0, 1, 1, "shard-0", False)]),
        port, registry=CollectorRegistry())
    try:
        # Then /metrics has them, and any other path is a 404 without them
        status, text = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and 'plinth_partition_isr_size{partition="0",topic="orders"}' in text
        for path in ("/", "/nosuch", "/metrics/x"):
            status, text = get(f"http://127.0.0.1:{port}{path}")
            assert status == 404 and "plinth_" not in text and "/metrics" in text, path
    finally:
        server.shutdown()
        server.server_close()


def served(controller) -> tuple:
    """The endpoint over ``controller``, in a registry of its own; its port and server."""
    port = free_port()
    return port, start_metrics_server(controller, port, registry=CollectorRegistry())


def stop(server) -> None:
    server.shutdown()
    server.server_close()


def head(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_probes_say_live_and_ready_and_head_is_answered_as_get_without_a_body():
    port, server = served(ControllerAnswering())
    try:
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        assert get(f"http://127.0.0.1:{port}/ready") == (200, "ready\n")
        for path in ("/metrics", "/healthz", "/ready"):
            assert head(f"http://127.0.0.1:{port}{path}") == (200, b""), path
        assert head(f"http://127.0.0.1:{port}/nosuch")[0] == 404
        status, text = get(f"http://127.0.0.1:{port}/metrics")
        assert f'plinth_build_info{{version="{__version__}"}} 1.0' in text
    finally:
        stop(server)


@pytest.mark.parametrize("controller, why", [
    (ControllerAnswering(report=StartReport({}, {"shard-1": "CorruptDataError: line 8"})),
     "not ready: not serving: shard-1: CorruptDataError: line 8\n"),
    (ControllerAnswering(error=RequestTimedOutError("no answer to start_report within 2 s")),
     "not ready: the controller did not answer: no answer to start_report within 2 s\n"),
])
def test_ready_is_503_saying_why_while_a_shard_does_not_serve_or_the_controller_is_silent(
        controller, why):
    port, server = served(controller)
    try:
        # Then not ready, saying why; alive all the same
        assert get(f"http://127.0.0.1:{port}/ready") == (503, why)
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    finally:
        stop(server)


def test_the_log_end_offset_gauge_says_it_is_the_high_watermark_despite_its_name():
    # Given a shard whose snapshot reports t-0's high watermark as its end_offset
    stats = {"shard-0": {"partitions": {}, "logs": {("t", 0): {"end_offset": 7}},
                         "latency_counts": {}, "latency_buckets_s": [], "latency_sum_s": {},
                         "errors": {}, "groups": {}}}
    families = {f.name: f for f in BrokerCollector(ControllerAnswering(stats=stats)).collect()}
    # Then the gauge's HELP says what the value is, and that it is not the log end offset
    # (on a replicated partition the two differ; "High watermark" alone read as a typo)
    doc = families["plinth_partition_log_end_offset"].documentation
    assert doc.startswith("High watermark: ") and "not the log end offset" in doc


SHARD_ERRORS = {"shard-0": {"partitions": {("t", 0): {"records_in": 4}},
                            "logs": {("t", 0): {"end_offset": 4}}, "latency_counts": {},
                            "latency_buckets_s": [], "latency_sum_s": {}, "groups": {},
                            "tier": {}, "errors": {"offsetOutOfRange": 3}}}


def errors_by_source(collector) -> dict[tuple[str, str], float]:
    return {(s.labels["code"], s.labels["source"]): s.value
            for family in collector.collect() if family.name == "plinth_errors"
            for s in family.samples if s.name == "plinth_errors_total"}


def test_the_routers_errors_and_refusals_are_counted_in_plinth_errors_beside_the_shards():
    # Given a shard that answered offsetOutOfRange 3 times, and a router that answered
    # unknownTopic twice and invalidTopic once, refused 5 requests by its ACL and 2
    # handshakes
    collector = BrokerCollector(ControllerAnswering(stats=SHARD_ERRORS),
                                router_refusals=lambda: {"notAuthorized": 5, "handshakeRefused": 2},
                                router="tcp://127.0.0.1:7800",
                                router_errors=lambda: {"unknownTopic": 2, "invalidTopic": 1})
    # When the metrics are collected
    errors = errors_by_source(collector)
    # Then each is there by code, told apart by source: the shard's id, or the router's
    # address (no sample has an empty label, as the shard="" and router="" ones had)
    router = "router:tcp://127.0.0.1:7800"
    assert errors == {("offsetOutOfRange", "shard-0"): 3, ("notAuthorized", router): 5,
                      ("handshakeRefused", router): 2, ("unknownTopic", router): 2,
                      ("invalidTopic", router): 1}
    assert all(value for family in collector.collect() if family.name == "plinth_errors"
               for s in family.samples for value in s.labels.values())


def test_the_routers_memory_is_exported_by_budget_beside_each_budget():
    collector = BrokerCollector(ControllerAnswering(), router="tcp://127.0.0.1:7800",
                                router_memory=lambda: {"requests_in_flight": (300, 1000),
                                                       "replies_unsent": (20, 500)})
    families = {f.name: f for f in collector.collect()}
    router = "tcp://127.0.0.1:7800"
    assert {(s.labels["router"], s.labels["kind"]): s.value
            for s in families["plinth_router_memory_bytes"].samples} == {
        (router, "requests_in_flight"): 300, (router, "replies_unsent"): 20}
    assert {s.labels["kind"]: s.value
            for s in families["plinth_router_memory_bytes_max"].samples} == {
        "requests_in_flight": 1000, "replies_unsent": 500}


def test_a_standalone_routers_endpoint_exports_its_own_series_only():
    # Given the collector of a plinth router's endpoint, over a broker with a shard
    collector = BrokerCollector(ControllerAnswering(
        [PartitionReplication("t", 0, 1, 1, "shard-0", False)], stats=SHARD_ERRORS),
        router="tcp://127.0.0.1:7801", router_errors=lambda: {"unknownTopic": 1},
        broker_wide=False)
    # When the metrics are collected
    families = list(collector.collect())
    # Then only its router's errors are there: the shards', partitions' and groups'
    # series are the server endpoint's, so a Prometheus scraping both counts them once
    assert [f.name for f in families] == ["plinth_build_info", "plinth_errors"]
    assert errors_by_source(collector) == {("unknownTopic", "router:tcp://127.0.0.1:7801"): 1}
    # And the server's endpoint has them, with its own router's errors
    server = BrokerCollector(ControllerAnswering(
        [PartitionReplication("t", 0, 1, 1, "shard-0", False)], stats=SHARD_ERRORS),
        router="tcp://127.0.0.1:7800", router_errors=lambda: {})
    names = {f.name for f in server.collect()}
    assert {"plinth_shard_up", "plinth_partition_records_in", "plinth_partition_offline",
            "plinth_errors"} <= names
    assert errors_by_source(server) == {("offsetOutOfRange", "shard-0"): 3}
