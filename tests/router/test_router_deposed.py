"""router/router.py: requests waiting at a shard the routing table no longer names as
their partition's leader are answered at once (``_answer_deposed``), and a late answer
from that shard counts nothing (tester T-rk's F1: one stopped leader held a Kafka
client's whole connection for its request timeout)."""

from __future__ import annotations

from plinth import limits, protocol
from plinth.errors import NotLeaderError, TooManyRequestsError, UnavailableError
from tests.router import fakes


def fetch(request_id: int, partition: int = 0, bytes_max: int = 1024,
          max_wait_ms: int = 0) -> bytes:
    return protocol.encode_fetch(request_id, "t", partition, 0, bytes_max, max_wait_ms)


def replies_by_id(client: fakes.Client, count: int) -> dict[int, protocol.ReplyView]:
    replies = {}
    while len(replies) < count:
        view, _ = client.recv()
        replies[view.request_id] = view
    return replies


def in_flight_bytes(rig) -> int:
    return rig.router.memory_bytes()["requests_in_flight"][0]


def test_produces_and_fetches_waiting_at_a_deposed_leader_are_answered_unavailable_at_once(
        router_rig):
    # Given t-0 led by shard-0 and t-1 by shard-1, both stopped (they hold every
    # request unanswered; their connections stay up), with a client's produce and
    # fetch of t-0 waiting at shard-0 and a produce of t-1 at shard-1
    rig = router_rig(topics={"t": 2}, owners={"t": ("shard-0", "shard-1")})
    rig.shards["shard-0"].holding = rig.shards["shard-1"].holding = True
    client = rig.client()
    client.send(protocol.encode_produce(1, "t", 0, -1), b"batch")
    client.send(fetch(2))
    client.send(protocol.encode_produce(3, "t", 1, -1), b"batch")
    rig.shards["shard-0"].wait_for_requests(2)
    rig.shards["shard-1"].wait_for_requests(1)
    # When the controller makes shard-1 the leader of t-0 (the router's timed refresh
    # brings the table)
    rig.controller.owners["t"] = ("shard-1", "shard-1")
    # Then the two at shard-0 are answered unavailable (retriable) at once, naming the
    # partition and the shard; the produce says it may or may not have been stored
    replies = replies_by_id(client, 2)
    assert sorted(replies) == [1, 2]
    for view in replies.values():
        assert isinstance(view.error, UnavailableError)
        assert "t-0 is no longer led by shard-0, which has not answered" in view.error.message
    assert "may or may not have been stored" in replies[1].error.message
    assert "stored" not in replies[2].error.message
    # And the produce at shard-1, which still leads t-1, waits for shard-1's own answer
    assert not client.has_reply(0.3)
    rig.shards["shard-1"].release(1)
    view, _ = client.recv()
    assert (view.request_id, view.kind, view.error) == (3, "produce", None)
    # And when shard-0 answers late, the answers are relayed (the client drops them: it
    # waits for those ids no more) and count nothing: nothing is left in flight
    rig.shards["shard-0"].release(2)
    assert sorted(replies_by_id(client, 2)) == [1, 2]
    assert in_flight_bytes(rig) == 0
    # And the retry reaches the new leader
    rig.shards["shard-1"].holding = False
    retried = client.request(protocol.encode_produce(4, "t", 0, -1), b"batch")
    assert retried.error is None and rig.shards["shard-1"].requests()[-1].request_id == 4


def test_parked_fetches_at_a_deposed_leader_free_their_fetch_bytes_and_late_answers_free_none(
        router_rig):
    # Given a client whose long polls of t-0 fill its fetch bytes, parked at shard-0 (its
    # leader, stopped), and t-1 led by shard-1, which holds what it gets too
    rig = router_rig(topics={"t": 2}, owners={"t": ("shard-0", "shard-1")})
    rig.shards["shard-0"].holding = rig.shards["shard-1"].holding = True
    client = rig.client()
    fitting = limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // limits.FETCH_BYTES_MAX
    for request_id in range(1, fitting + 1):
        client.send(fetch(request_id, 0, limits.FETCH_BYTES_MAX, 30_000))
    rig.shards["shard-0"].wait_for_requests(fitting)
    # When shard-1 becomes t-0's leader
    rig.controller.owners["t"] = ("shard-1", "shard-1")
    # Then every parked fetch is answered unavailable at once
    replies = replies_by_id(client, fitting)
    assert all(isinstance(view.error, UnavailableError) for view in replies.values())
    # And their fetch bytes are free: the client's retries, reusing the same ids, fill
    # them again at the new leader
    for request_id in range(1, fitting + 1):
        client.send(fetch(request_id, 0, limits.FETCH_BYTES_MAX, 30_000))
    rig.shards["shard-1"].wait_for_requests(fitting)
    assert not client.has_reply(0.3)
    # And when shard-0 answers the old ones late, that frees none of the new ones' bytes
    # (they are not its requests): one more fetch is still over the client's limit
    rig.shards["shard-0"].release(fitting)
    late = replies_by_id(client, fitting)
    assert all(view.error is None for view in late.values())
    view = client.request(fetch(fitting + 1, 1, limits.FETCH_BYTES_MAX))
    assert isinstance(view.error, TooManyRequestsError)
    assert str(limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX) in view.error.message


def test_an_acks_zero_produce_at_a_deposed_leader_is_answered_once_and_frees_its_count(
        router_rig):
    # Given an acks=0 produce of t-0 waiting at shard-0 (its leader, stopped), which
    # will answer it notLeader when it resumes
    not_leader = lambda request: [protocol.encode_error(request.request_id, NotLeaderError(
        f"shard-0 does not lead {request.topic}-{request.partition}"))]
    rig = router_rig(shards={"shard-0": {"handler": not_leader}, "shard-1": {}},
                     topics={"t": 1}, owners={"t": ("shard-0",)})
    rig.shards["shard-0"].holding = True
    client = rig.client()
    client.send(protocol.encode_produce(1, "t", 0, 0), b"batch")
    rig.shards["shard-0"].wait_for_requests(1)
    assert in_flight_bytes(rig) > 0
    # When shard-1 becomes t-0's leader
    rig.controller.owners["t"] = ("shard-1",)
    # Then its client hears of it once, at once: the batch may not have been stored
    view, _ = client.recv()
    assert view.request_id == 1 and isinstance(view.error, UnavailableError)
    assert "may or may not have been stored" in view.error.message
    assert in_flight_bytes(rig) == 0
    # And shard-0's late notLeader is not relayed a second time
    rig.shards["shard-0"].release(1)
    assert not client.has_reply(0.5)
    assert in_flight_bytes(rig) == 0
