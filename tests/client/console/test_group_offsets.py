"""The consumer-group pages' logic (client/console/group_offsets.py): the group list,
lag per partition, the lag history and chart, and offset resets planned and applied,
over a real broker."""

from __future__ import annotations

import pytest

from plinth import limits, protocol
from plinth.client.admin import Admin
from plinth.client.consumer import Consumer
from plinth.client.console import group_offsets
from plinth.client.producer import Producer
from plinth.errors import (GroupNotEmptyError, InputTooLongError, InvalidTopicError,
                           UnknownGroupError)
from plinth.name_pages import NamesPage
from tests.support import unique_topic, wait_until

# --- Pure parts ------------------------------------------------------------------------


def test_the_lag_history_keeps_a_bounded_number_of_samples_per_group():
    history = group_offsets.LagHistory(samples_max=3, groups_max=10)
    for n in range(5):
        samples = history.add("g", float(n), n * 10)
    assert samples == [(2.0, 20), (3.0, 30), (4.0, 40)]


def test_the_lag_history_forgets_the_least_recently_sampled_group_first():
    history = group_offsets.LagHistory(samples_max=3, groups_max=2)
    history.add("a", 0.0, 1)
    history.add("b", 0.0, 1)
    history.add("a", 1.0, 2)      # a is now the most recent
    history.add("c", 0.0, 1)
    assert (history.samples("a"), history.samples("b"), history.samples("c")) == \
        ([(0.0, 1), (1.0, 2)], [], [(0.0, 1)])


def test_the_chart_puts_the_oldest_sample_left_the_newest_right_and_zero_at_the_bottom():
    chart = group_offsets.chart_geometry([(10.0, 0), (15.0, 40), (20.0, 100)], width=600,
                                         height=100)
    assert (chart.points, chart.y_max, chart.window_s, chart.last) == \
        ("0.0,100.0 300.0,60.0 600.0,0.0", 100, 10.0, 100)


def test_the_chart_axis_rounds_up_to_one_two_or_five_times_a_power_of_ten():
    assert [group_offsets.nice_ceiling(v) for v in (0, 1, 3, 7, 10, 11, 120, 4999)] == \
        [1, 1, 5, 10, 10, 20, 200, 5000]


def test_a_plan_round_trips_through_its_text():
    offsets = {("orders", 0): 5, ("orders", 1): 0, ("audit.log", 3): 12}
    assert group_offsets.parse_plan(group_offsets.format_plan(offsets)) == offsets


@pytest.mark.parametrize("text,message", [
    ("", "the reset plan is empty"),
    ("orders:0=5,orders-0-5", "reset plan item 'orders-0-5' is not topic:partition=offset"),
    ("orders:x=5", "reset plan item 'orders:x=5' is not topic:partition=offset"),
    ("orders:0=1,orders:1=0,orders:0=2", r"names orders:0 twice \(1 and 2\)"),
])
def test_a_bad_plan_is_refused_with_the_item_named(text, message):
    with pytest.raises(ValueError, match=message):
        group_offsets.parse_plan(text)


def test_a_plan_over_its_bound_is_refused_with_the_bound():
    text = ",".join(f"t:{p}=0" for p in range(limits.CONSOLE_RESET_PARTITIONS_MAX + 1))
    with pytest.raises(InputTooLongError, match=f"at most {limits.CONSOLE_RESET_PARTITIONS_MAX}"):
        group_offsets.parse_plan(text)


@pytest.mark.parametrize("params,message", [
    ({"to": "yesterday"}, "to='yesterday' is not one of earliest, latest, timestamp, offset"),
    ({"to": "offset"}, "to=offset needs an offset"),
    ({"to": "offset", "offset": "-4"}, "offset -4 is out of range"),
    ({"to": "timestamp", "timestamp": "soon"}, "timestamp 'soon' is neither ms"),
    ({"to": "earliest", "topic": "bad topic"}, "topic name 'bad topic' may contain only"),
])
def test_a_bad_reset_request_is_refused_with_a_message_naming_it(params, message):
    with pytest.raises((ValueError, InvalidTopicError), match=message):
        group_offsets.parse_reset(params)


# --- Over a real broker ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(shared_broker):
    with Admin(broker=shared_broker.url) as module_admin:
        yield module_admin


@pytest.fixture(scope="module")
def topic(shared_broker, admin):
    """Two partitions of 20 records each, stamped 1000 * n ms (n: 0..19 in each)."""
    name = unique_topic("grp")
    admin.create_topic(name, 2)
    with Producer(broker=shared_broker.url) as producer:
        for n in range(20):
            for partition in (0, 1):
                producer.send(name, b"%d" % n, partition=partition, timestamp_ms=1_000 * n)
        producer.flush()
    return name


def idle_group(admin, topic: str, committed: dict[int, int]) -> str:
    """A group without members whose committed offsets on ``topic`` are ``committed``."""
    group = unique_topic("g")
    admin.reset_group_offsets(group, {(topic, p): o for p, o in committed.items()})
    return group


def test_the_group_list_is_paged_by_prefix_and_after(admin, topic):
    prefix = unique_topic("page") + "-"
    for name in ("a", "b", "c"):
        admin.reset_group_offsets(prefix + name, {(topic, 0): 1})
    first = group_offsets.groups_page(admin, prefix, "", 2)
    assert (first.names, first.more) == ([prefix + "a", prefix + "b"], True)
    second = group_offsets.groups_page(admin, prefix, first.names[-1], 2)
    assert (second.names, second.more) == ([prefix + "c"], False)


def test_a_group_list_page_names_the_shards_whose_groups_it_lacks(scripted):
    # Given a broker whose page of groups lacks shard-1's (it did not answer)
    partial = NamesPage(["g1"], more=False, unanswered=["shard-1"])
    broker = scripted([lambda view: [protocol.encode_names_page_reply(view.request_id,
                                                                      partial)]])
    with Admin(broker=broker.url, request_timeout_ms=5_000) as admin:
        # When the console asks for a page / Then it has the names and says which lack
        page = group_offsets.groups_page(admin, "", "", 10)
    assert (page.names, page.unanswered) == (["g1"], ["shard-1"])


def test_a_group_summary_has_its_state_members_and_topics(admin, topic):
    group = idle_group(admin, topic, {0: 3})
    assert group_offsets.summarize(admin, [group]) == \
        [group_offsets.GroupSummary(group, "Empty", 0, 1)]


def test_the_detail_lag_is_the_admins_lag(admin, topic):
    group = idle_group(admin, topic, {0: 5, 1: 19})
    detail = group_offsets.group_detail(admin, group)
    assert [(r.topic, r.partition, r.committed, r.end, r.lag) for r in detail.rows] == \
        admin.group_lag(group) == [(topic, 0, 5, 20, 15), (topic, 1, 19, 20, 1)]
    assert detail.total_lag == 16 and detail.state == "Empty"


def test_an_unknown_group_is_refused(admin):
    with pytest.raises(UnknownGroupError):
        group_offsets.group_detail(admin, unique_topic("nobody"))


@pytest.mark.parametrize("target,value,new", [
    ("earliest", None, [0, 0]),
    ("latest", None, [20, 20]),
    ("offset", 7, [7, 7]),
    ("timestamp", 12_500, [13, 13]),
    ("timestamp", 99_000, [20, 20]),      # nothing stamped at or after: the end
])
def test_a_dry_run_plans_each_partitions_new_offset_and_changes_nothing(admin, topic, target,
                                                                         value, new):
    group = idle_group(admin, topic, {0: 5, 1: 9})
    plan = group_offsets.plan_reset(admin, group, topic, target, value)
    assert [(r.partition, r.committed, r.new) for r in plan.rows] == \
        [(0, 5, new[0]), (1, 9, new[1])]
    assert admin.describe_group(group).committed == {(topic, 0): 5, (topic, 1): 9}


def test_an_offset_beyond_a_partitions_end_is_clamped_and_the_plan_says_so(admin, topic):
    group = idle_group(admin, topic, {0: 5})
    plan = group_offsets.plan_reset(admin, group, None, "offset", 500)
    assert [(r.partition, r.new, r.clamped) for r in plan.rows] == [(0, 20, True), (1, 20, True)]


def test_applying_a_plan_sets_exactly_its_offsets(admin, topic):
    group = idle_group(admin, topic, {0: 5, 1: 9})
    plan = group_offsets.plan_reset(admin, group, topic, "earliest", None)
    group_offsets.apply_plan(admin, group, group_offsets.parse_plan(
        group_offsets.format_plan(plan.offsets)))
    assert admin.describe_group(group).committed == {(topic, 0): 0, (topic, 1): 0}


def test_applying_is_refused_while_the_group_has_a_member(shared_broker, admin, topic):
    group = idle_group(admin, topic, {0: 5, 1: 9})
    plan = group_offsets.plan_reset(admin, group, topic, "latest", None)
    with Consumer(topic, broker=shared_broker.url, group=group, enable_auto_commit=False):
        wait_until(lambda: admin.describe_group(group).members, timeout_s=30)
        assert group_offsets.plan_reset(admin, group, topic, "latest", None).members == 1
        with pytest.raises(GroupNotEmptyError, match=f"group '{group}' has 1 active member; "
                                                      f"stop them before resetting its offsets"):
            group_offsets.apply_plan(admin, group, plan.offsets)
    assert admin.describe_group(group).committed == {(topic, 0): 5, (topic, 1): 9}


def test_samples_younger_than_the_bound_are_shared_instead_of_taken_again():
    history = group_offsets.LagHistory()
    history.add("g", 100.0, 5)
    assert history.fresh("g", 100.9, 1.0) == [(100.0, 5)]
    assert history.fresh("g", 101.1, 1.0) is None
    assert history.fresh("other", 100.0, 1.0) is None
