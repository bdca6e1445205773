"""Lists at scale through a real broker (issue 16): pages of topics and groups, searched by
prefix, topic stats, and the rates out that ``plinth status`` shows."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import zmq

from plinth import limits, protocol
from plinth.client.admin import Admin
from plinth.client.consumer import Consumer
from plinth.client.producer import Producer
from plinth.control import placement
from plinth.errors import RequestTooLargeError, UnknownTopicError
from plinth.schemas import protocol as schema
from tests.support import wait_until

PLINTH = [sys.executable, "-m", "plinth.cli"]
PREFIXES = ("alpha.", "beta.", "gamma-")
TOPIC_COUNT = 250


def plinth(url: str, *args: str):
    env = dict(os.environ, PLINTH_BROKER=url)
    return subprocess.run(PLINTH + list(args), capture_output=True, text=True, env=env,
                          timeout=120)


def walk(ask_page, prefix: str, limit: int) -> list[str]:
    """Every name of ``prefix``, a page at a time; checks each page's own rules."""
    names, after = [], ""
    for _ in range(TOPIC_COUNT + 2):
        page = ask_page(prefix=prefix, after=after, limit=limit)
        assert len(page.names) <= limit
        assert page.names == sorted(page.names)
        assert all(n.startswith(prefix) and n > after for n in page.names)
        names += page.names
        if not page.more:
            return names
        after = page.names[-1]
    raise AssertionError("the walk did not end")


@pytest.fixture(scope="module")
def many_topics(shared_broker):
    """TOPIC_COUNT topics of one partition under three prefixes."""
    names = [f"{PREFIXES[i % 3]}{i:04d}" for i in range(TOPIC_COUNT)]
    with Admin(broker=shared_broker.url) as admin:
        for name in names:
            admin.create_topic(name, 1)
    return names


def test_topic_pages_walked_to_the_end_equal_the_full_sorted_list(shared_broker, many_topics):
    with Admin(broker=shared_broker.url) as admin:
        everything = admin.list_topics()
        assert set(many_topics) <= set(everything)
        for limit in (1, 37, limits.ADMIN_LIST_PAGE_NAMES_MAX):
            assert walk(admin.list_topics_page, "", limit) == everything


def test_a_prefix_search_finds_exactly_the_topics_starting_with_it(shared_broker, many_topics):
    with Admin(broker=shared_broker.url) as admin:
        for prefix in PREFIXES:
            assert walk(admin.list_topics_page, prefix, 40) == \
                sorted(n for n in many_topics if n.startswith(prefix))
        page = admin.list_topics_page(prefix="beta.00", limit=100)
        assert page.names == sorted(n for n in many_topics if n.startswith("beta.00"))
        assert not page.more
        assert admin.list_topics_page(prefix="nothing-like-it").names == []


def test_a_page_over_the_limit_is_refused_by_the_client_and_by_the_broker(shared_broker):
    too_many = limits.ADMIN_LIST_PAGE_NAMES_MAX + 1
    with Admin(broker=shared_broker.url) as admin:
        with pytest.raises(RequestTooLargeError, match="ADMIN_LIST_PAGE_NAMES_MAX"):
            admin.list_topics_page(limit=too_many)
        with pytest.raises(RequestTooLargeError, match="ADMIN_TOPIC_STATS_NAMES_MAX"):
            admin.topic_stats([f"t{i}" for i in range(limits.ADMIN_TOPIC_STATS_NAMES_MAX + 1)])
    # A request that skips the client's check is answered requestTooLarge, naming the limit
    for kind in ("listTopicsPage", "listGroupsPage"):
        msg = schema.Request.new_message(requestId=5)
        msg.init(kind).limit = too_many
        reply = raw_request(shared_broker.url, msg.to_bytes())
        assert isinstance(reply.error, RequestTooLargeError)
        assert str(too_many) in str(reply.error) and "ADMIN_LIST_PAGE_NAMES_MAX" in str(reply.error)


def raw_request(url: str, header: bytes) -> protocol.ReplyView:
    return protocol.decode_reply(raw_reply(url, header))


def raw_reply(url: str, header: bytes) -> bytes:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 30_000)
    try:
        sock.connect(url)
        sock.send(header)
        return sock.recv_multipart()[0]
    finally:
        sock.close()


def test_the_listing_of_an_old_client_still_answers_every_topic(shared_broker, many_topics):
    # Given a client from before pages, which sends listTopics
    frame = raw_reply(shared_broker.url, protocol.encode_list_topics(9))
    # Then it gets every topic, with its config, as before: larger than a request's
    # header, and read whole all the same (a reply's reader limit grows with its size)
    assert len(frame) > limits.HEADER_BYTES_MAX
    assert set(many_topics) <= {t.name for t in protocol.decode_reply(frame).topics}


def test_the_cli_lists_a_page_and_says_how_to_get_the_next(shared_broker, many_topics):
    whole = plinth(shared_broker.url, "topic", "list")
    assert whole.returncode == 0, whole.stderr
    assert set(many_topics) <= set(whole.stdout.split())
    page = plinth(shared_broker.url, "topic", "list", "--prefix", "gamma-", "--limit", "5")
    assert page.returncode == 0, page.stderr
    gammas = sorted(n for n in many_topics if n.startswith("gamma-"))
    assert page.stdout.split() == gammas[:5]
    assert f"--after {gammas[4]}" in page.stderr
    searched = plinth(shared_broker.url, "topic", "list", "--prefix", "alpha.")
    assert searched.stdout.split() == sorted(n for n in many_topics if n.startswith("alpha."))


def test_group_pages_merge_the_groups_of_both_shards(shared_broker, many_topics):
    # Given groups with committed offsets, coordinated by each of the two shards
    topic = many_topics[0]
    groups = [f"team-{i:03d}" for i in range(60)]
    with Admin(broker=shared_broker.url) as admin:
        for group in groups:
            admin.reset_group_offsets(group, {(topic, 0): 0})
        shard_ids = sorted(s.shard_id for s in admin.status().shards)
        assert len({placement.shard_for_group(g, shard_ids) for g in groups}) == 2
        # When the pages are walked, Then each group comes once, in order
        everything = admin.list_groups()
        assert set(groups) <= set(everything)
        for limit in (1, 7, 100):
            assert walk(admin.list_groups_page, "", limit) == everything
        assert walk(admin.list_groups_page, "team-05", 3) == [f"team-05{i}" for i in range(10)]
    listed = plinth(shared_broker.url, "group", "list", "--prefix", "team-", "--limit", "4")
    assert listed.stdout.split() == groups[:4]


def test_topic_stats_of_a_page_and_rates_out_rise_while_a_consumer_reads(shared_broker, many_topics):
    # Given a topic with 2000 records that nobody has read yet
    topic = "delta.read"
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(topic, 1)
        with Producer(broker=shared_broker.url, linger_ms=5) as producer:
            for i in range(2000):
                producer.send(topic, b"v" * 100, partition=0)
        assert admin.topic_stats([topic])[topic].records_out_per_s == 0.0
        # When a consumer reads them all
        with Consumer(topic, broker=shared_broker.url, auto_offset_reset="earliest",
                      consumer_timeout_ms=20_000) as consumer:
            read = 0
            for _ in consumer:
                read += 1
                if read == 2000:
                    break
        assert read == 2000

        # Then the topic's rate out, and its shard's in status, show them within the window
        def rates():
            stats = admin.topic_stats([topic])[topic]
            shards = admin.status().shards
            out = sum(s.records_out_per_s for s in shards)
            return (stats, out) if stats.records_out_per_s > 0 and out > 0 else None

        stats, _ = wait_until(rates, timeout_s=limits.SHARD_STATS_SAMPLE_INTERVAL_S * 5)
        window_s = limits.SHARD_STATS_SAMPLE_INTERVAL_S * limits.SHARD_STATS_RATE_WINDOW_SAMPLES
        assert stats.records_out_per_s >= 2000 / window_s * 0.5
        assert stats.bytes_out_per_s >= stats.records_out_per_s * 100
        assert stats.records_in_per_s > 0 and stats.size_bytes >= 2000 * 100
        # And the stats of one page of topics answer every topic on it
        page = admin.list_topics_page(prefix="alpha.", limit=50)
        by_name = admin.topic_stats(page.names)
        assert sorted(by_name) == page.names
        assert all(s.partitions == s.partitions_answered == 1 for s in by_name.values())
        with pytest.raises(UnknownTopicError):
            admin.topic_stats(["no-such-topic"])
    status = plinth(shared_broker.url, "status")
    assert "records/s out" in status.stdout and "MB/s out" in status.stdout
