"""router/kafka/api_cluster.py: DescribeTopicPartitions' paging (partition_page): topics
in name order from the cursor on, at most the limit of partitions per page, and the
cursor where the next page starts; and Metadata's auto-creation, whose refusals are
not tried again at every refresh. The handlers against a real broker are in
tests/e2e/test_kafka_admin_e2e.py and test_kafka_auto_create_e2e.py."""

from __future__ import annotations

import asyncio
import itertools
import logging

from plinth import limits, protocol
from plinth.errors import TooManyTopicsError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka import api_cluster
from plinth.router.kafka.api_cluster import _page_refusal, metadata, partition_page
from plinth.router.kafka.backend import PRINCIPAL
from plinth.router.kafka.codec import API_KEYS, RequestHeader
from plinth.router.kafka.gateway import KafkaCluster, KafkaGateway

COUNTS = {"a": 3, "b": 1, "c": 4}


def pages(names, limit, counts=COUNTS):
    """Every page until the cursor runs out: [[(topic, [indexes])...]...]."""
    out, cursor = [], None
    for _ in range(100):   # bounded: a paging bug must fail, not hang
        page, cursor = partition_page(counts, names, cursor, limit)
        out.append([(name, list(indexes)) for name, indexes in page])
        if cursor is None:
            return out
    raise AssertionError(f"no last page after 100: {out[-3:]}")


def test_a_limit_above_every_partition_answers_one_page():
    assert pages(["a", "b", "c"], 100) == [[("a", [0, 1, 2]), ("b", [0]), ("c", [0, 1, 2, 3])]]


def test_pages_cut_topics_at_the_limit_and_go_on_where_they_stopped():
    assert pages(["a", "b", "c"], 2) == [
        [("a", [0, 1])], [("a", [2]), ("b", [0])], [("c", [0, 1])], [("c", [2, 3])]]


def test_a_page_ending_with_a_topic_points_at_the_next_topic():
    page, cursor = partition_page(COUNTS, ["a", "b", "c"], None, 4)
    assert [(n, list(i)) for n, i in page] == [("a", [0, 1, 2]), ("b", [0])]
    assert cursor == {"topic_name": "c", "partition_index": 0}


def test_the_last_page_ending_exactly_at_the_limit_has_no_next_cursor():
    assert partition_page(COUNTS, ["a", "b"], None, 4)[1] is None


def test_a_cursor_starts_at_its_topic_and_partition():
    page, cursor = partition_page(COUNTS, ["a", "b", "c"],
                                  {"topic_name": "c", "partition_index": 1}, 10)
    assert [(n, list(i)) for n, i in page] == [("c", [1, 2, 3])] and cursor is None


def test_unknown_topics_are_on_the_page_without_partitions_or_room():
    assert pages(["a", "zz-missing"], 3) == [[("a", [0, 1, 2]), ("zz-missing", [])]]


def test_a_cursor_off_the_topics_asked_or_a_limit_below_one_is_refused_with_the_reason():
    assert "not among the 2 topics" in _page_refusal(["a", "b"], {"topic_name": "c",
                                                                   "partition_index": 0}, 10)
    assert "below 1" in _page_refusal(["a"], None, 0)
    assert "negative" in _page_refusal(["a"], {"topic_name": "a", "partition_index": -1}, 5)
    assert _page_refusal([], {"topic_name": "c", "partition_index": 0}, 5) is None


class RefusingBackend:
    """Plinth as the listener's backend sees it: no topics, and every create refused."""

    def __init__(self):
        self.creates = 0
        self._ids = itertools.count(1)

    def next_request_id(self) -> int:
        return next(self._ids)

    async def call(self, request_id, header, payload=None, timeout_ms=0, change=False):
        request = protocol.decode_request(header)
        if request.kind == "createTopic":
            self.creates += 1
            reply = protocol.encode_error(request_id, TooManyTopicsError(
                f"cannot create 1 topics ({request.topic!r} ...): the broker has 10000 topics"))
        else:
            reply = protocol.encode_topics_reply(request_id, [])
        return protocol.decode_reply(reply), None


def asked_for(gateway, name: str) -> list[tuple[str, int]]:
    """Metadata v9 of ``name``, allowing its creation: (name, error code) per topic."""
    header = RequestHeader(API_KEYS["Metadata"], 9, 7, "test")
    body = {"topics": [{"name": name}], "allow_auto_topic_creation": True}
    answer = asyncio.run(metadata(gateway, header, body, None))
    return [(t["name"], t["error_code"]) for t in answer["topics"]]


class Clock:
    """time.monotonic for api_cluster, moved by hand."""

    def __init__(self):
        self.now_s = 1000.0

    def monotonic(self) -> float:
        return self.now_s


def test_a_refused_auto_create_is_not_tried_or_logged_again_for_a_while(caplog, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(api_cluster, "time", clock)
    backend = RefusingBackend()
    gateway = KafkaGateway(backend, KafkaCluster("127.0.0.1:9092", "cluster"),
                           auto_create_topics=True)
    # When a producer asks for a topic whose creation is refused, at every refresh
    with caplog.at_level(logging.WARNING, logger="plinth.router.kafka.api_cluster"):
        answers = [asked_for(gateway, "orders") for _ in range(5)]
    # Then each answer is UNKNOWN_TOPIC_OR_PARTITION, one create was tried, one warning
    assert answers == [[("orders", kafka.UNKNOWN_TOPIC_OR_PARTITION)]] * 5
    assert backend.creates == 1
    [warning] = [r.getMessage() for r in caplog.records
                 if r.name == "plinth.router.kafka.api_cluster"]
    assert "auto-creating topic 'orders' failed (not tried again for 5 s)" in warning
    # And another user tries again at once, the same user once the refusal is old
    token = PRINCIPAL.set("bob")
    try:
        asked_for(gateway, "orders")
    finally:
        PRINCIPAL.reset(token)
    assert backend.creates == 2
    clock.now_s += limits.KAFKA_AUTO_CREATE_REFUSED_TTL_S - 0.1
    asked_for(gateway, "orders")
    assert backend.creates == 2
    clock.now_s += 0.2
    asked_for(gateway, "orders")
    assert backend.creates == 3


def test_the_refusals_remembered_are_bounded_the_oldest_forgotten_first(monkeypatch):
    monkeypatch.setattr(limits, "KAFKA_AUTO_CREATE_REFUSALS_REMEMBERED_MAX", 2)
    refusals = api_cluster.AutoCreateRefusals()
    for name in ("a", "b", "c"):
        refusals.note(name)
    assert [refusals.refused_lately(n) for n in ("a", "b", "c")] == [False, True, True]
