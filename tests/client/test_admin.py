"""The admin client against a scripted broker: which answers it retries."""

from __future__ import annotations

import pytest

from plinth import Admin, limits, protocol
from plinth.name_pages import NamesPage
from plinth.client.fetcher import TopicPartition
from plinth.errors import (GroupSubscribedToTopicError, InvalidReplicationFactorError,
                           RequestTimedOutError, UnavailableError, UnknownTopicError)
from tests.client.scripted_broker import this_protocols_topics_reply


def topics(*names):
    infos = [protocol.TopicInfo(name=name, partitions=1, config={}) for name in names]
    return lambda view: [protocol.encode_topics_reply(view.request_id, infos)]


def page(*names, more: bool = False):
    """The answer to a page request: a page of ``names``."""
    return lambda view: [protocol.encode_names_page_reply(view.request_id,
                                                          NamesPage(list(names), more))]


def test_an_unavailable_answer_is_retried_within_the_request_timeout(scripted):
    broker = scripted([UnavailableError("the controller is restarting"),
                       UnavailableError("the controller is restarting"), page("orders")])
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        assert admin.list_topics() == ["orders"]
    assert [view.kind for _, view in broker.requests] == ["listTopicsPage"] * 3


# A look-up by time in object storage, answered requestTimedOut by the shard's bound
# (REMOTE_TIME_LOOKUP_WAIT_MS_MAX) while its read goes on, twice, then found.
SLOW_STORE_LOOK_UP_SCRIPT = [RequestTimedOutError("t-0: the look-up by time 5 waited 2000 ms "
                                                  "for the remote reader; the store is slow: "
                                                  "retry")] * 2 + [
    lambda view: [protocol.encode_offsets_reply(
        view.request_id, protocol.PartitionInfo(0, found_offset=7, found_timestamp_ms=5))]]


def test_a_look_up_by_time_the_store_is_slow_to_answer_is_retried_until_found(scripted):
    # Given a broker whose look-up by time times out twice on a slow store, then finds it
    broker = scripted(SLOW_STORE_LOOK_UP_SCRIPT)
    # When the admin looks it up / Then it retries and gets the record's offset
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        assert admin.list_offsets("t", 0, 5).found_offset == 7
    assert [view.kind for _, view in broker.requests] == ["listOffsets"] * 3


def test_a_request_timed_out_is_not_retried_for_a_call_other_than_a_look_up(scripted):
    # Given a broker answering a topic listing requestTimedOut (a shard did not answer)
    broker = scripted([RequestTimedOutError("shard-1 did not answer"), page("orders")])
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        # When topics are listed / Then the error is raised at once, not retried
        with pytest.raises(RequestTimedOutError, match="shard-1 did not answer"):
            admin.list_topics()
    assert len(broker.requests) == 1


def test_listing_every_topic_walks_the_pages_from_the_last_name_of_each(scripted):
    # Given a broker whose list comes in two pages
    broker = scripted([page("a", "b", more=True), page("c")])
    # When every topic is listed
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        assert admin.list_topics() == ["a", "b", "c"]
    # Then the second page was asked from after the first page's last name, each as
    # large as a page may be
    asked = [view for _, view in broker.requests]
    assert [(view.after, view.limit) for view in asked] == [
        ("", limits.ADMIN_LIST_PAGE_NAMES_MAX), ("b", limits.ADMIN_LIST_PAGE_NAMES_MAX)]


def test_listing_every_group_is_refused_naming_the_shards_that_did_not_answer(scripted):
    # Given a broker whose group listing lacks a shard's groups (it did not answer)
    partial = NamesPage(["g1"], more=False, unanswered=["shard-1"])
    broker = scripted([lambda view: [protocol.encode_names_page_reply(view.request_id,
                                                                      partial)]] * 2)
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        # When every group is listed / Then the call fails naming the shard, rather than
        # return a list that reads as complete
        with pytest.raises(RequestTimedOutError, match=r"listGroupsPage: shard-1 did not "
                                                       r"answer in time"):
            admin.list_groups()
        # And the paged call gives the rest and names it
        assert admin.list_groups_page() == partial


def test_an_unavailable_answer_past_the_request_timeout_is_raised(scripted):
    broker = scripted([UnavailableError("the controller is restarting")] * 100)
    with Admin(broker=broker.url, request_timeout_ms=300) as admin:
        with pytest.raises(UnavailableError, match="restarting"):
            admin.list_topics()


def test_adding_shards_is_not_repeated_after_an_unavailable_answer(scripted):
    broker = scripted([UnavailableError("shard-1 does not answer")] * 2)
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        with pytest.raises(UnavailableError, match="shard-1"):
            admin.add_shards(1)
    assert len(broker.requests) == 1


# --- Replication factor ----------------------------------------------------------

def test_create_topic_sends_its_replication_factor_and_0_for_the_servers_default(scripted):
    # Given a broker that answers two creates
    broker = scripted([topics("a"), topics("b"), topics("c")])
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        # When topics are created with a factor, without one, and in the old call shape
        admin.create_topic("a", 3, replication_factor=3, config={"min.insync.replicas": 2})
        admin.create_topic("b", 1)
        admin.create_topic("c", 2, config={"unclean.leader.election.enable": True})
    # Then the wire carries the factor, 0 (the server's default) when not given, and
    # Python values as config text
    sent = [view for _, view in broker.requests]
    assert [(v.topic, v.replication_factor) for v in sent] == [("a", 3), ("b", 0), ("c", 0)]
    assert sent[0].config == {"min.insync.replicas": "2"}
    assert sent[2].config == {"unclean.leader.election.enable": "true"}


def test_create_topics_takes_a_new_topic_of_a_name_only_or_a_name_and_a_count(scripted):
    # Given NewTopic from the package, as kafka-python users import theirs, and from
    # the asyncio client's module (both are the same class)
    from plinth import NewTopic
    from plinth.aio import NewTopic as AIONewTopic
    assert AIONewTopic is NewTopic
    broker = scripted([lambda view: [protocol.encode_topics_reply(
        view.request_id, [protocol.TopicInfo(t.name, t.partitions, {}) for t in view.topics])]])
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        # When topics are made of a name alone and of a name and a count (config was
        # required: NewTopic(name, partitions) was a TypeError)
        admin.create_topics([NewTopic("a"), NewTopic("b", 3)])
    # Then the wire carries one partition and no config for the first, 3 for the second
    [(_, sent)] = broker.requests
    assert [(t.name, t.partitions, t.config, t.replication_factor) for t in sent.topics] == [
        ("a", 1, {}, 0), ("b", 3, {}, 0)]


@pytest.mark.parametrize("factor, message", [
    (0, "replication factor 0 is outside 1..5"), ("three", "'three' is not an integer"),
    (-3, "replication factor -3 is outside"), (99, "replication factor 99 is outside 1..5")])
def test_a_replication_factor_a_new_user_might_write_is_refused_before_anything_is_sent(
        scripted, factor, message):
    broker = scripted([])
    with Admin(broker=broker.url, request_timeout_ms=1_000) as admin:
        with pytest.raises(InvalidReplicationFactorError, match=message):
            admin.create_topic("t", 1, replication_factor=factor)
    assert broker.requests == []


# --- Arguments checked before anything is sent (Admin's and AIOAdmin's alike) ----------

BAD_CALLS = [
    (lambda a: a.list_offsets("t", -1), ValueError, r"partition=-1 is outside 0\.\.4095"),
    (lambda a: a.list_offsets("t", 2**40), ValueError, r"partition=1099511627776 is outside"),
    (lambda a: a.list_offsets("t", True), TypeError, r"partition must be an int"),
    (lambda a: a.list_offsets("t", 0, 2**63), ValueError,
     r"timestamp_ms=9223372036854775808 is outside 0\.\.9223372036854775807"),
    (lambda a: a.list_offsets("t", 0, "5"), TypeError, r"timestamp_ms must be an int of ms"),
    (lambda a: a.list_offsets(None, 0), TypeError, r"topic must be a str, got None"),
    (lambda a: a.describe_topic(None), TypeError, r"name must be a str, got None"),
    (lambda a: a.describe_topic(5), TypeError, r"name must be a str, got 5"),
    (lambda a: a.delete_topic(None), TypeError, r"name must be a str, got None"),
    (lambda a: a.partition_count(b"t"), TypeError, r"name must be a str, got b't'"),
    (lambda a: a.describe_group(None), TypeError, r"group must be a str, got None"),
    (lambda a: a.delete_group(7), TypeError, r"group must be a str, got 7"),
    (lambda a: a.add_shards(-1), ValueError, r"count=-1 is outside 1\.\.256"),
    (lambda a: a.add_shards(True), TypeError, r"count must be an int"),
    (lambda a: a.remove_shards(0), ValueError, r"count=0 is outside 1\.\.256"),
    (lambda a: a.create_topic("x", partitions=True), TypeError, r"partitions must be an int"),
    (lambda a: a.create_topic("x", partitions=2.0), TypeError, r"partitions must be an int"),
    (lambda a: a.create_topic(None), TypeError, r"name must be a str, got None"),
    (lambda a: a.create_topics([protocol.NewTopic("x", 2.0, {}, 0)]), TypeError,
     r"partitions must be an int"),
    (lambda a: a.reset_group_offsets("g", {("t", 0): "1"}), TypeError,
     r"reset_group_offsets: the offset of \('t', 0\) must be an int in 0\.\."),
    (lambda a: a.reset_group_offsets("g", {"t": 1}), TypeError,
     r"reset_group_offsets: 't' is not a \(topic, partition\) pair"),
    (lambda a: a.reset_group_offsets("g", {("t", 0): -7}), ValueError,
     r"reset_group_offsets: the offset of \('t', 0\)=-7 is outside 0\.\.9223372036854775807"),
    (lambda a: a.reset_group_offsets("g", {("t", 0): 2**64}), ValueError,
     r"the offset of \('t', 0\)=18446744073709551616 is outside"),
    (lambda a: a.delete_group_offsets("g", "t"), TypeError,
     r"delete_group_offsets takes \(topic, partition\) pairs, not a str: for every partition "
     r"of 't', pass \[\('t', p\) for p in range\(count\)\]"),
    (lambda a: a.delete_group_offsets("g", ("t", 0)), TypeError,
     r"delete_group_offsets takes a list of \(topic, partition\) pairs, not \('t', 0\)"),
    (lambda a: a.delete_group_offsets("g", [("t", -1)]), ValueError,
     r"delete_group_offsets: the partition of \('t', -1\)=-1 is outside 0\.\.4095"),
    (lambda a: a.delete_group_offsets(None, [("t", 0)]), TypeError,
     r"group must be a str, got None"),
    (lambda a: a.delete_records({("t", 0): "1"}), TypeError,
     r"delete_records: the offset of \('t', 0\) must be an int"),
    (lambda a: a.topic_stats("ad-d"), TypeError,
     r"names takes a list of topic names, not a str: \['ad-d'\], not 'ad-d'"),
    # a list of pairs raised AttributeError ('list' object has no attribute 'items')
    (lambda a: a.create_topic("x", config=[("retention.ms", "1")]), TypeError,
     r"config must be a dict of str to str \(config key to value\), got "
     r"\[\('retention\.ms', '1'\)\] \(list\)"),
    (lambda a: a.create_topic("x", config={5: "1"}), TypeError,
     r"config must be a dict of str to str \(config key to value\), got 5: '1' \(int: str\)"),
    (lambda a: a.create_topic("x", config={"retention.ms": None}), TypeError,
     r"config must be a dict of str to str .*got 'retention\.ms': None \(str: NoneType\)"),
    (lambda a: a.alter_topic("x", config=[("retention.ms", "1")]), TypeError,
     r"config must be a dict of str to str"),
    (lambda a: a.create_topics([protocol.NewTopic("x", 1, [("retention.ms", "1")], 0)]),
     TypeError, r"config must be a dict of str to str"),
    # kafka-python's NewTopic(name, num_partitions, replication_factor): the factor was
    # told as a config that is no dict
    (lambda a: a.create_topics([protocol.NewTopic("x", 2, 1)]), TypeError,
     r"NewTopic\('x', 2, 1\): the third argument is config \(a dict\); kafka-python's "
     r"NewTopic\(name, num_partitions, replication_factor\) is NewTopic\(name, partitions, "
     r"replication_factor=1\) here"),
]


@pytest.mark.parametrize("call, error, message", BAD_CALLS)
def test_an_argument_of_the_wrong_type_or_range_is_refused_naming_it_before_anything_is_sent(
        scripted, call, error, message):
    broker = scripted([])
    with Admin(broker=broker.url, request_timeout_ms=1_000) as admin:
        with pytest.raises(error, match=message):
            call(admin)
    assert broker.requests == []


def group_with_offsets(committed: dict):
    """A script step: the answer to describeGroup, a group without members."""
    return lambda view: [protocol.encode_group_reply(view.request_id, protocol.GroupInfo(
        "g", "sticky", 1, committed=committed))]


def end_offset(end: int):
    """A script step: the answer to listOffsets."""
    return lambda view: [protocol.encode_offsets_reply(view.request_id, protocol.PartitionInfo(
        view.partition, "shard-0", 0, end))]


# describeGroup; metadata of 'gone' (deleted since the group committed); metadata and
# listOffsets of 't'.
LAG_SCRIPT = [group_with_offsets({("gone", 0): 5, ("t", 0): 3}),
              UnknownTopicError("unknown topic 'gone'"), topics("t"), end_offset(10)]


def test_group_lag_leaves_out_a_topic_deleted_since_the_group_committed_and_shows_the_rest(
        scripted):
    broker = scripted(LAG_SCRIPT)
    with Admin(broker=broker.url, request_timeout_ms=2_000) as admin:
        assert admin.group_lag("g") == [("t", 0, 3, 10, 7)]


def test_group_lag_shows_no_lag_for_a_negative_committed_offset_a_kafka_client_committed(
        scripted):
    broker = scripted([group_with_offsets({("t", 0): -1}), topics("t"), end_offset(10)])
    with Admin(broker=broker.url, request_timeout_ms=2_000) as admin:
        assert admin.group_lag("g") == [("t", 0, -1, 10, None)]


def offset_deletions(refused: dict):
    """A script step: the answer to deleteOffsets, each partition asked deleted but those
    in ``refused`` (partition -> error)."""
    return lambda view: [protocol.encode_offset_deletions_reply(view.request_id, [
        protocol.OffsetDeletion(t, p, refused.get((t, p))) for t, p in sorted(view.partitions)])]


SUBSCRIBED = GroupSubscribedToTopicError("group 'g': cannot delete the offset of a-0: ...")
# An unavailable answer (retried), then deleteOffsets of topic a, then of topic b.
SUBSCRIBED_SAID = ("GroupSubscribedToTopicError", str(SUBSCRIBED))
# (first the broker's protocol version, which a delete of offsets asks: broker_protocol.py)
DELETE_OFFSETS_SCRIPT = [this_protocols_topics_reply, UnavailableError("shard-0 restarts"),
                         offset_deletions({("a", 0): SUBSCRIBED}), offset_deletions({})]


def described(outcomes: dict) -> dict:
    """Each outcome as (error class name, message), None as None (errors compare by identity)."""
    return {tp: None if e is None else (type(e).__name__, str(e)) for tp, e in outcomes.items()}


def test_deleting_group_offsets_asks_a_topic_at_a_time_and_answers_each_partition(scripted):
    broker = scripted(DELETE_OFFSETS_SCRIPT)
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        outcomes = admin.delete_group_offsets("g", [TopicPartition("b", 2), ("a", 1), ("a", 0),
                                                    ("a", 1)])
    assert described(outcomes) == {("a", 0): SUBSCRIBED_SAID, ("a", 1): None, ("b", 2): None}
    assert broker.requests[0][1].kind == "metadata"
    assert [(view.group, view.partitions) for _, view in broker.requests[1:]] == [
        ("g", {("a", 0), ("a", 1)})] * 2 + [("g", {("b", 2)})]


BAD_ADMIN_OPTIONS = [
    # -5 timed every call out "within 1 ms"; 'x' and None failed inside the first call
    ({"request_timeout_ms": 0}, ValueError, r"request_timeout_ms=0 is outside 1\.\.2147483647"),
    ({"request_timeout_ms": -5}, ValueError, r"request_timeout_ms=-5 is outside 1\.\."),
    ({"request_timeout_ms": "x"}, TypeError, r"request_timeout_ms must be a number of ms in 1"),
    ({"request_timeout_ms": None}, TypeError, r"request_timeout_ms must be a number of ms"),
    ({"request_timeout_ms": float("nan")}, ValueError, r"request_timeout_ms=nan is outside"),
]


@pytest.mark.parametrize("options, error, message", BAD_ADMIN_OPTIONS)
def test_a_request_timeout_out_of_range_is_refused_in_the_constructor_as_the_producers_is(
        options, error, message):
    with pytest.raises(error, match=message):
        Admin(broker="tcp://127.0.0.1:1", **options)
