"""The controller's pages of topics and groups and its topic stats (control/controller.py),
with real shards in process: the console's lists at scale (issue 16)."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from plinth import limits, protocol, topics
from plinth.control import placement
from plinth.errors import RequestTimedOutError, RequestTooLargeError, UnknownTopicError
from plinth.shards.shard_handle import PendingCall
from tests.control.broker_without_ray import THREE, TWO
from tests.shard_requests import commit_offsets, fetch_values, join_group
from tests.support import wait_until


def walk(ask_page, prefix: str, limit: int) -> list[str]:
    names, after = [], ""
    for _ in range(1000):
        page = ask_page(prefix, after, limit)
        assert len(page.names) <= limit
        names += page.names
        if not page.more:
            return names
        after = page.names[-1]
    raise AssertionError("the walk did not end")


def test_topic_pages_walked_to_the_end_are_the_sorted_topics_without_the_internal_one(brokers):
    # Given topics under two prefixes, and the internal offsets topic of the groups
    broker = brokers(2)
    names = [f"orders.{i}" for i in range(12)] + [f"pay.{i}" for i in range(5)]
    for name in names:
        broker.controller.create_topic(name, 1, {})
    commit_offsets(broker.address("shard-0"), "g", {("orders.1", 0): 0})
    # When the pages are walked, all of them and those of one prefix
    everything = walk(broker.controller.list_topics_page, "", 5)
    # Then they are the sorted names, the internal topic left out as listTopics does
    assert everything == sorted(names)
    assert topics.OFFSETS_TOPIC not in everything
    assert walk(broker.controller.list_topics_page, "pay.", 2) == [f"pay.{i}" for i in range(5)]
    assert broker.controller.list_topics_page("orders.1", "", 0).names == \
        ["orders.1", "orders.10", "orders.11"]


def test_a_page_over_the_limit_is_refused_naming_it(brokers):
    broker = brokers(1)
    with pytest.raises(RequestTooLargeError, match="ADMIN_LIST_PAGE_NAMES_MAX"):
        broker.controller.list_topics_page("", "", limits.ADMIN_LIST_PAGE_NAMES_MAX + 1)
    with pytest.raises(RequestTooLargeError, match="ADMIN_TOPIC_STATS_NAMES_MAX"):
        broker.controller.topic_stats(["t"] * (limits.ADMIN_TOPIC_STATS_NAMES_MAX + 1))


def test_group_pages_merge_the_groups_of_both_shards_in_order_with_more_exact(brokers):
    # Given groups coordinated by each of two shards
    broker = brokers(2)
    broker.controller.create_topic("t", 1, {})
    groups = [f"g{i:02d}" for i in range(40)]
    for group in groups:
        shard = placement.shard_for_group(group, TWO)
        commit_offsets(broker.address(shard), group, {("t", 0): 0})
    by_shard = {s: [g for g in groups if placement.shard_for_group(g, TWO) == s] for s in TWO}
    assert all(by_shard.values()), "the groups must be spread over both shards"
    # When the pages are walked
    # Then every group comes once, in order, and the last page says no more
    for limit in (1, 7, 40, 100):
        assert walk(broker.controller.list_groups_page, "", limit) == groups
    assert walk(broker.controller.list_groups_page, "g1", 3) == [f"g1{i}" for i in range(10)]
    page = broker.controller.list_groups_page("", "g38", 1)
    assert (page.names, page.more) == (["g39"], False)


def test_topic_stats_sum_sizes_and_show_rates_in_and_out_from_the_shards_counters(brokers):
    # Given a topic with two partitions, one produced to and fetched from
    broker = brokers(2)
    broker.controller.create_topic("busy", 2, {})
    broker.controller.create_topic("idle", 1, {})
    for _ in range(3):
        broker.produce("busy", 0, [b"x" * 100] * 10)
    fetch_values(broker.address(broker.owner("busy", 0)), "busy", 0, 0)

    # When the stats are asked, once the shards sampled their counters twice
    def busy_stats():
        stats = {s.name: s for s in broker.controller.topic_stats(["busy", "idle"])}
        return stats if stats["busy"].records_in_per_s > 0 and stats["busy"].records_out_per_s > 0 \
            else None

    stats = wait_until(busy_stats, timeout_s=limits.SHARD_STATS_SAMPLE_INTERVAL_S * 5)
    # Then the busy topic has its bytes on disk and rates of 30 records in and out over
    # the window; the idle one has none
    busy, idle = stats["busy"], stats["idle"]
    assert busy.partitions == busy.partitions_answered == 2
    assert busy.size_bytes >= 30 * 100
    assert busy.records_in_per_s > 0 and busy.bytes_in_per_s > busy.records_in_per_s
    assert busy.records_out_per_s > 0 and busy.bytes_out_per_s > 0
    assert (idle.size_bytes, idle.records_in_per_s, idle.records_out_per_s) == (0, 0.0, 0.0)
    assert idle.partitions_answered == 1


def test_topic_stats_of_an_unknown_topic_name_it(brokers):
    broker = brokers(1)
    with pytest.raises(UnknownTopicError, match="nope"):
        broker.controller.topic_stats(["nope"])


def test_the_group_list_has_each_groups_state_from_the_shard_coordinating_it(brokers):
    # Given a group with a member and one with committed offsets only, on each shard
    broker = brokers(2)
    broker.controller.create_topic("t", 1, {})
    names = [f"g{i:02d}" for i in range(40)]
    live = next(g for g in names if placement.shard_for_group(g, TWO) == "shard-1")
    idle = next(g for g in names if placement.shard_for_group(g, TWO) == "shard-0")
    join_group(broker.address("shard-1"), live, ["t"], limits.SESSION_TIMEOUT_MS_MAX)
    commit_offsets(broker.address("shard-0"), idle, {("t", 0): 3})
    # When the controller lists the groups
    # Then by name, the one with a member Stable, the other Empty
    assert broker.controller.list_groups() == sorted(
        [protocol.GroupListing(live, "Stable"), protocol.GroupListing(idle, "Empty")],
        key=lambda listing: listing.group)


def groups_on_each_shard(broker, shard_ids: list[str]) -> dict[str, list[str]]:
    """Groups with committed offsets coordinated by each of ``shard_ids`` (unreplicated
    offsets: hashed onto the shards), by shard."""
    broker.controller.create_topic("t", 1, {})
    groups = [f"g{i:02d}" for i in range(40)]
    for group in groups:
        commit_offsets(broker.address(placement.shard_for_group(group, shard_ids)), group,
                       {("t", 0): 0})
    return {s: [g for g in groups if placement.shard_for_group(g, shard_ids) == s]
            for s in shard_ids}


def test_a_hung_shard_is_left_out_of_the_group_pages_and_named_within_a_status_calls_time(
        brokers, monkeypatch):
    # Given groups on each of two shards, and shard-1 hung: its calls never answer
    broker = brokers(2)
    by_shard = groups_on_each_shard(broker, TWO)
    hung = broker.shards.handles["shard-1"]
    for method in ("group_names_page", "group_listings"):
        monkeypatch.setattr(hung, method, lambda *args, method=method: PendingCall(
            "shard-1", method, concurrent.futures.Future()))
    monkeypatch.setattr(limits, "STATUS_CALL_TIMEOUT_S", 0.5)
    # When a page of the groups is asked
    started_s = time.monotonic()
    page = broker.controller.list_groups_page("", "", 100)
    # Then it comes after a status call's time, not a change's (CONTROL_CALL_TIMEOUT_S),
    # with shard-0's groups, exact over them, and names shard-1
    assert time.monotonic() - started_s < limits.CONTROL_CALL_TIMEOUT_S / 2
    assert (page.names, page.more, page.unanswered) == (by_shard["shard-0"], False, ["shard-1"])
    assert broker.controller.list_groups_page("", "", 1).more
    # And listGroups, whose reply cannot say a shard is missing, fails as soon, naming it
    started_s = time.monotonic()
    with pytest.raises(RequestTimedOutError, match="listGroups: shard-1 did not answer within "
                                                   "0.5 s.* cannot be listed"):
        broker.controller.list_groups()
    assert time.monotonic() - started_s < limits.CONTROL_CALL_TIMEOUT_S / 2


def test_a_shard_silent_at_the_last_leader_check_is_not_asked_for_groups_but_named(brokers):
    # Given three shards on one node with a replicated topic (leader checks run), groups
    # on each, and shard-2 silent at the last check
    broker = brokers(3, allow_replicas_on_one_node=True, offsets_replication_factor=1)
    by_shard = groups_on_each_shard(broker, THREE)
    broker.controller.create_topic("r", 1, {}, 3)
    broker.shards.handles["shard-2"].fail_next("address", RequestTimedOutError("silent"))
    broker.controller.check_leaders()
    # When the groups are listed (a call to shard-2 would raise ControllerCrash)
    broker.shards.handles["shard-2"].crash_controller_at("group_names_page")
    page = broker.controller.list_groups_page("", "", 100)
    # Then the page has the others' groups and names shard-2
    assert page.names == sorted(by_shard["shard-0"] + by_shard["shard-1"])
    assert page.unanswered == ["shard-2"]
    # And once it answers a check, it is asked again
    broker.shards.handles["shard-2"]._crash_at.clear()
    broker.controller.check_leaders()
    page = broker.controller.list_groups_page("", "", 100)
    assert (page.names, page.unanswered) == (sorted(sum(by_shard.values(), [])), [])
