"""router/admin_bridge.py: the bridge thread against a fake controller; results are
taken as the router's loop takes them, when the wake-up fd is readable."""

from __future__ import annotations

import select
import time

import pytest

from plinth import limits, protocol
from plinth.errors import (InternalError, MalformedRequestError, RequestTimedOutError,
                           TopicExistsError, UnavailableError)
from plinth.router.admin_bridge import AdminBridge, AdminReply, RoutingUpdate
from tests.router.fakes import WAIT_S, FakeController


@pytest.fixture
def bridge_of():
    """``bridge_of(controller)``: a started AdminBridge, stopped at the end."""
    bridges = []

    def make(controller) -> AdminBridge:
        bridges.append(AdminBridge(controller))
        bridges[-1].start()
        return bridges[-1]

    yield make
    for bridge in bridges:
        bridge.stop()


def controller() -> FakeController:
    return FakeController({"shard-0": "tcp://127.0.0.1:1"}, topics={"t": 1})


def results_of(bridge: AdminBridge, count: int) -> list:
    """The next ``count`` results, each taken once the wake-up fd says so."""
    results, deadline = [], time.monotonic() + WAIT_S
    while len(results) < count:
        readable, _, _ = select.select([bridge.wakeup.fd], [], [], deadline - time.monotonic())
        if not readable:
            raise AssertionError(f"{len(results)} results within {WAIT_S} s, not {count}")
        results += bridge.take_results()
    return results


def reply_of(result: AdminReply) -> protocol.ReplyView:
    return protocol.decode_reply(result.reply)


@pytest.fixture(autouse=True)
def no_refresh(monkeypatch):
    """No routing refresh unless a test asks for one: results come only from jobs."""
    monkeypatch.setattr(limits, "ROUTING_REFRESH_INTERVAL_S", 3600.0)


def test_a_merged_list_offsets_needing_a_listed_remote_log_is_unavailable_until_it_is(
        bridge_of):
    # Given a partition whose history spans shards, one of which has not listed object
    # storage yet (the controller's merged offsets say so)
    fake = controller()
    fake.remote_not_listed = "shard-1 has not listed object storage since it began uploading t-0"
    bridge = bridge_of(fake)
    # When a consumer resetting to the earliest offset asks, and then a request that
    # does not need the start exact
    bridge.submit_request(b"client-1", protocol.ListOffsetsRequest(7, "t", 0, require_listed=True))
    bridge.submit_request(b"client-1", protocol.ListOffsetsRequest(8, "t", 0))
    refused, answered = sorted(results_of(bridge, 2), key=lambda r: reply_of(r).request_id)
    # Then the first is unavailable (retriable), naming the shard's reason
    error = reply_of(refused).error
    assert isinstance(error, UnavailableError)
    assert str(error) == ("t-0: records before the log start offset 0 may be in object "
                          "storage; retry: " + fake.remote_not_listed)
    # And the second is answered with the offsets the shards know
    assert reply_of(answered).offsets.remote_not_listed == fake.remote_not_listed


def test_an_admin_request_is_answered_with_the_controllers_result(bridge_of):
    bridge = bridge_of(controller())
    assert bridge.submit_request(b"client-1", protocol.ListTopicsRequest(7)) is None
    [result] = results_of(bridge, 1)
    assert type(result) is AdminReply and result.client_id == b"client-1"
    view = reply_of(result)
    assert (view.request_id, [t.name for t in view.topics]) == (7, ["t"])


def test_a_topic_change_sends_the_new_routing_table_before_the_reply(bridge_of):
    bridge = bridge_of(controller())
    bridge.submit_request(b"c", protocol.CreateTopicRequest(1, "fresh", 2, {}))
    update, reply = results_of(bridge, 2)
    assert type(update) is RoutingUpdate and update.resolved_topic is None
    assert update.routing.partition_count("fresh") == 2
    assert [t.name for t in reply_of(reply).topics] == ["fresh"]


def test_a_controller_error_becomes_the_reply_and_changes_no_routing(bridge_of):
    bridge = bridge_of(controller())
    bridge.submit_request(b"c", protocol.CreateTopicRequest(1, "t", 1, {}))
    [result] = results_of(bridge, 1)
    assert isinstance(reply_of(result).error, TopicExistsError)


def test_a_request_the_router_does_not_serve_is_answered_malformed(bridge_of):
    bridge = bridge_of(controller())
    bridge.submit_request(b"c", protocol.FetchRequest(3, "t", 0, 0, 1024, 0))
    [result] = results_of(bridge, 1)
    assert isinstance(reply_of(result).error, MalformedRequestError)
    assert "does not serve fetch requests" in str(reply_of(result).error)


def test_an_unexpected_error_is_answered_internal_and_the_bridge_goes_on(bridge_of):
    fake = controller()
    fake.fail_with = RuntimeError("a bug")
    bridge = bridge_of(fake)
    bridge.submit_request(b"c", protocol.StatusRequest(1))
    [result] = results_of(bridge, 1)
    assert isinstance(reply_of(result).error, InternalError)
    assert "RuntimeError answering status: a bug" in str(reply_of(result).error)
    fake.fail_with = None
    bridge.submit_request(b"c", protocol.ListGroupsRequest(2))
    assert reply_of(results_of(bridge, 1)[0]).groups == ["audit"]


def test_a_topic_look_up_returns_the_routing_table_named_for_the_topic(bridge_of):
    bridge = bridge_of(controller())
    assert bridge.resolve_topic("t")
    [update] = results_of(bridge, 1)
    assert (update.resolved_topic, update.routing.partition_count("t")) == ("t", 1)


def test_a_routing_call_that_fails_gives_an_update_without_a_table(bridge_of, monkeypatch):
    fake = controller()
    fake.hold_routing()   # the gate stays shut: the call times out
    monkeypatch.setattr("tests.router.fakes.WAIT_S", 0.1)
    bridge = bridge_of(fake)
    bridge.resolve_topic("t")
    [update] = results_of(bridge, 1)
    assert (update.routing, update.resolved_topic) == (None, "t")


def refreshing_bridge(bridge_of, monkeypatch) -> tuple[FakeController, AdminBridge, RoutingUpdate]:
    """A bridge refreshing its routing table every 50 ms, its fake controller, and the
    update its first refresh queued."""
    monkeypatch.setattr(limits, "ROUTING_REFRESH_INTERVAL_S", 0.05)
    fake = controller()
    bridge = bridge_of(fake)
    [first] = results_of(bridge, 1)
    return fake, bridge, first


def test_a_periodic_refresh_queues_a_changed_table_and_nothing_while_it_is_unchanged(
        bridge_of, monkeypatch):
    # Given a bridge refreshing its routing table every 50 ms, without any job
    fake, bridge, first = refreshing_bridge(bridge_of, monkeypatch)
    # Then its first refresh brings the table
    assert type(first) is RoutingUpdate and first.resolved_topic is None
    assert first.routing.partition_count("t") == 1
    # And while it is unchanged, the refreshes go on and queue nothing (each put
    # comes before the next call, so the calls before the last one queued none)
    fake.wait_for_routing_calls(fake.routing_calls + 3)
    assert bridge.take_results() == []
    # When a topic appears (created through another router)
    fake.add_topic("other", 2)
    # Then the next refresh brings it
    [update] = results_of(bridge, 1)
    assert type(update) is RoutingUpdate and update.resolved_topic is None
    assert update.routing.partition_count("other") == 2


def test_a_full_look_up_queue_refuses_more_look_ups_without_blocking(bridge_of, monkeypatch):
    # Given a bridge with room for 3 look-ups, busy in a call the controller does not answer
    monkeypatch.setattr(limits, "ROUTER_ADMIN_JOBS_QUEUED_MAX", 3)
    fake = controller()
    fake.hold_routing()
    bridge = bridge_of(fake)
    assert bridge.resolve_topic("a")
    fake.wait_for_routing_call()
    # When 3 more look-ups are queued, the next one is refused at once
    assert [bridge.resolve_topic(name) for name in "bcd"] == [True] * 3
    started = time.monotonic()
    assert bridge.resolve_topic("e") is False
    assert time.monotonic() - started < 1.0
    # And when the controller answers, every queued look-up gets its result, in order
    fake.allow_routing()
    assert [u.resolved_topic for u in results_of(bridge, 4)] == ["a", "b", "c", "d"]


def test_a_full_admin_queue_refuses_more_requests_without_blocking(bridge_of, monkeypatch):
    # Given a bridge with room for 2 admin requests, busy in a call the controller holds
    monkeypatch.setattr(limits, "ROUTER_ADMIN_JOBS_QUEUED_MAX", 2)
    fake = controller()
    fake.hold_admin()
    bridge = bridge_of(fake)
    assert bridge.submit_request(b"c", protocol.ListTopicsRequest(1)) is None
    fake.wait_for_admin_call()
    # When 2 more are queued, the next one is refused at once
    assert [bridge.submit_request(b"c", protocol.ListTopicsRequest(rid)) for rid in (2, 3)] \
        == [None, None]
    assert "ROUTER_ADMIN_JOBS_QUEUED_MAX" in bridge.submit_request(b"c", protocol.ListTopicsRequest(4))
    # And once the controller answers, the queued ones are answered in order
    fake.allow_admin()
    assert [reply_of(r).request_id for r in results_of(bridge, 3)] == [1, 2, 3]


def test_a_look_up_is_answered_while_an_admin_call_waits_for_the_controller(bridge_of):
    # Given a describe the controller has not answered (it waits for a dead shard)
    fake = controller()
    fake.hold_admin()
    bridge = bridge_of(fake)
    bridge.submit_request(b"c", protocol.DescribeTopicRequest(1, "t"))
    fake.wait_for_admin_call()
    # When the loop looks a topic up, its routing table comes meanwhile
    assert bridge.resolve_topic("t")
    [update] = results_of(bridge, 1)
    assert type(update) is RoutingUpdate and update.resolved_topic == "t"
    # And an admin request waiting meanwhile is still answered after
    fake.allow_admin()
    [reply] = results_of(bridge, 1)
    assert reply_of(reply).request_id == 1


def test_an_admin_request_is_answered_while_a_routing_call_waits(bridge_of):
    # Given a routing refresh the controller has not answered
    fake = controller()
    fake.hold_routing()
    bridge = bridge_of(fake)
    bridge.resolve_topic("t")
    fake.wait_for_routing_call()
    # When a client asks for its topics, the answer comes meanwhile
    bridge.submit_request(b"c", protocol.ListTopicsRequest(9))
    [reply] = results_of(bridge, 1)
    assert reply_of(reply).request_id == 9
    fake.allow_routing()


def test_stop_returns_while_the_loop_is_not_taking_results(monkeypatch):
    # Given a bridge whose results queue (1) is full and whose thread waits to put more
    monkeypatch.setattr(limits, "ROUTER_ADMIN_RESULTS_QUEUED_MAX", 1)
    fake = controller()
    bridge = AdminBridge(fake)
    bridge.start()
    for name in "abc":
        bridge.resolve_topic(name)
    fake.wait_for_routing_calls(2)   # the second result has nowhere to go
    # When it is stopped, its thread ends well before stop() would give up on it
    started = time.monotonic()
    bridge.stop(wait_s=WAIT_S)
    assert time.monotonic() - started < WAIT_S / 2


def describe_held(bridge_of, client_id: bytes) -> tuple[FakeController, AdminBridge]:
    """A bridge whose controller holds ``client_id``'s describe (request 1) of "slow"."""
    fake = controller()
    fake.add_topic("slow", 1)
    fake.hold_admin("slow")
    bridge = bridge_of(fake)
    assert bridge.submit_request(client_id, protocol.DescribeTopicRequest(1, "slow")) is None
    fake.wait_for_admin_call()
    return fake, bridge


def test_another_clients_request_is_answered_while_one_clients_describe_waits(bridge_of):
    # Given a describe of a topic whose leader is dead: the controller holds it
    fake, bridge = describe_held(bridge_of, b"console")
    # When another client asks for the topics, its answer comes meanwhile
    assert bridge.submit_request(b"operator", protocol.ListTopicsRequest(2)) is None
    [reply] = results_of(bridge, 1)
    assert (reply.client_id, reply_of(reply).request_id) == (b"operator", 2)
    # And the describe is answered once the controller answers it
    fake.allow_admin()
    [reply] = results_of(bridge, 1)
    assert (reply.client_id, reply_of(reply).request_id) == (b"console", 1)


def test_one_clients_requests_are_answered_in_the_order_it_sent_them(bridge_of, monkeypatch):
    # Given two admin threads, one busy with a client's describe the controller holds,
    # and two more requests of that client queued after it
    monkeypatch.setattr(limits, "ROUTER_ADMIN_THREADS", 2)
    fake, bridge = describe_held(bridge_of, b"c")
    for rid in (2, 3):
        assert bridge.submit_request(b"c", protocol.ListTopicsRequest(rid)) is None
    # When another client sends one after them, the free thread answers it first
    assert bridge.submit_request(b"other", protocol.ListTopicsRequest(9)) is None
    [reply] = results_of(bridge, 1)
    assert (reply.client_id, reply_of(reply).request_id) == (b"other", 9)
    # And the first client's requests come once its describe is answered, in order
    fake.allow_admin()
    assert [reply_of(r).request_id for r in results_of(bridge, 3)] == [1, 2, 3]


def test_after_a_failed_look_up_the_next_refresh_queues_the_table_even_if_unchanged(
        bridge_of, monkeypatch):
    # Given a bridge that has the controller's table, in the middle of a periodic refresh
    fake, bridge, first = refreshing_bridge(bridge_of, monkeypatch)
    fake.hold_routing()
    fake.wait_for_routing_call()
    answered = fake.routing_calls
    # When a look-up of a topic that does not exist is queued, the refresh answers (the
    # table unchanged), and the controller fails the look-up
    assert bridge.resolve_topic("ghost")
    fake.allow_routing(1)
    fake.wait_for_routing_calls(answered + 1)
    fake.wait_for_routing_call()
    fake.fail_routing(1)
    fake.allow_routing()
    # Then the loop hears that the look-up failed, and then gets the unchanged table from
    # the next refresh, by which it answers the requests held for the topic
    failed, table = results_of(bridge, 2)
    assert (failed.routing, failed.resolved_topic) == (None, "ghost")
    assert table.resolved_topic is None and table.routing is first.routing


def changes_held(bridge_of, client_ids: list[bytes]) -> tuple[FakeController, AdminBridge]:
    """A bridge whose controller holds every alter of "slow" (a change waiting for a
    stopped shard); each of ``client_ids`` has sent one (request 1), in that order."""
    fake = controller()
    fake.add_topic("slow", 1)
    fake.hold_admin("slow")
    bridge = bridge_of(fake)
    for client_id in client_ids:
        assert bridge.submit_request(
            client_id, protocol.AlterTopicRequest(1, "slow", {"retention.ms": "1"})) is None
    fake.wait_for_admin_call()
    return fake, bridge


def test_queries_are_answered_while_more_changes_than_admin_threads_wait(bridge_of):
    # Given more changes from different clients than the bridge has query threads,
    # all waiting for the controller's one change thread
    clients = [b"alter-%d" % i for i in range(limits.ROUTER_ADMIN_THREADS + 1)]
    fake, bridge = changes_held(bridge_of, clients)
    # When another client lists, describes and asks for metadata
    for request in (protocol.ListTopicsRequest(2), protocol.DescribeTopicRequest(3, "t"),
                    protocol.MetadataRequest(4, ("t",))):
        assert bridge.submit_request(b"operator", request) is None
    # Then it is answered while the changes still wait
    assert [reply_of(r).request_id for r in results_of(bridge, 3)] == [2, 3, 4]
    assert fake.admin_waiting >= 1
    # And the changes are answered once the controller makes them
    fake.allow_admin()
    replies = results_of(bridge, len(clients))
    assert sorted(r.client_id for r in replies) == sorted(clients)


def test_a_full_change_queue_refuses_a_change_naming_its_limit_but_still_takes_queries(
        bridge_of, monkeypatch):
    # Given room for 2 changes, one change waiting for the controller and 2 queued
    monkeypatch.setattr(limits, "ROUTER_ADMIN_CHANGES_QUEUED_MAX", 2)
    fake, bridge = changes_held(bridge_of, [b"a", b"b"])
    assert bridge.submit_request(b"c", protocol.DeleteTopicRequest(1, "slow")) is None
    # When a fourth change comes, it is refused at once, naming the limit
    refusal = bridge.submit_request(b"d", protocol.CreateTopicRequest(1, "new", 1, {}))
    assert refusal is not None and "ROUTER_ADMIN_CHANGES_QUEUED_MAX 2" in refusal
    # And the same client's query is still queued and answered
    assert bridge.submit_request(b"d", protocol.ListTopicsRequest(2)) is None
    [reply] = results_of(bridge, 1)
    assert (reply.client_id, reply_of(reply).request_id) == (b"d", 2)
    fake.allow_admin()
    results_of(bridge, 3)


def test_a_clients_query_after_its_change_waits_for_the_change_while_others_are_answered(
        bridge_of):
    # Given a client's change waiting for the controller, and its describe sent after it
    fake, bridge = changes_held(bridge_of, [b"c"])
    assert bridge.submit_request(b"c", protocol.DescribeTopicRequest(2, "t")) is None
    # When another client's list, sent later, is answered on a free query thread
    assert bridge.submit_request(b"other", protocol.ListTopicsRequest(9)) is None
    [reply] = results_of(bridge, 1)
    assert (reply.client_id, reply_of(reply).request_id) == (b"other", 9)
    # Then the describe, older in the same lane, is still queued behind its client's change
    assert bridge._jobs.queued_count() == 1
    # And it is answered after the change
    fake.allow_admin()
    assert [reply_of(r).request_id for r in results_of(bridge, 2)] == [1, 2]


def test_a_change_whose_clients_time_ran_out_in_the_queue_is_answered_timed_out_and_not_made(
        bridge_of):
    # Given a change waiting for the controller, and another client's create, queued
    # behind it, whose client waits 50 ms
    fake, bridge = changes_held(bridge_of, [b"a"])
    queued_s = time.monotonic()
    assert bridge.submit_request(
        b"b", protocol.CreateTopicRequest(2, "late", 1, {}, timeout_ms=50)) is None
    # When the first change is made only after those 50 ms
    while time.monotonic() < queued_s + 0.05:   # the condition under test: time passing
        time.sleep(0.01)
    fake.allow_admin()
    # Then the create is answered requestTimedOut, saying nothing was changed
    replies = {r.client_id: reply_of(r) for r in results_of(bridge, 2)}
    error = replies[b"b"].error
    assert isinstance(error, RequestTimedOutError), error
    assert "createTopic was not made" in str(error) and "timeoutMs of 50 ms" in str(error)
    assert "nothing was changed" in str(error)
    # And the controller was never asked to make it
    assert "late" not in fake.topics
    assert fake.change_deadlines == [None]   # the held alter's only


def test_a_change_with_time_left_is_made_and_the_controller_is_given_its_clients_deadline(
        bridge_of):
    fake = controller()
    bridge = bridge_of(fake)
    asked_s = time.time()
    bridge.submit_request(b"c", protocol.CreateTopicRequest(1, "fresh", 1, {}, timeout_ms=5_000))
    _update, reply = results_of(bridge, 2)
    assert [t.name for t in reply_of(reply).topics] == ["fresh"]
    [deadline_unix_s] = fake.change_deadlines
    assert asked_s + 4.0 < deadline_unix_s <= time.time() + 5.0


def test_a_change_that_gives_no_timeout_is_bounded_by_the_controller_handle_alone(bridge_of):
    fake = controller()
    bridge = bridge_of(fake)
    bridge.submit_request(b"c", protocol.DeleteTopicRequest(1, "t"))
    assert reply_of(results_of(bridge, 2)[1]).error is None
    assert fake.change_deadlines == [None]
