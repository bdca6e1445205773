"""router/requests_in_flight.py: counted requests per client and shard, and the mark that
keeps an uncounted request's reply from uncounting anything."""

from __future__ import annotations

from plinth import limits, topics
from plinth.router.requests_in_flight import (FetchBytesInFlight, RequestsInFlight, counted_bytes,
                                             is_marked, mark, unmark)

CLIENT, OTHER = b"\x00\x80\x00\x00\x01", b"\x00\x80\x00\x00\x02"


def slot(number: int) -> tuple:
    """Where a group request of a group in slot ``number`` waits."""
    return ("groupHeartbeat", topics.OFFSETS_TOPIC, number, None)


def leading(leaders: dict):
    """``deposed``'s check: a shard serves a request if it leads what it waits for."""
    return lambda shard_id, where: leaders.get(where[1:3]) == shard_id


def test_a_marked_identity_is_recognised_and_unmarks_to_its_client():
    # Given a client's identity as libzmq assigns it / When marked / Then only the
    # marked one is recognised, and unmarking gives the client back
    assert is_marked(mark(CLIENT)) and not is_marked(CLIENT)
    assert unmark(mark(CLIENT)) == CLIENT


def test_requests_count_per_client_across_shards_until_answered():
    # Given two requests of a client at two shards, and one of another client
    in_flight = RequestsInFlight()
    in_flight.forwarded("shard-0", CLIENT, 1)
    in_flight.forwarded("shard-1", CLIENT, 2)
    in_flight.forwarded("shard-0", OTHER, 1)
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (2, 1)
    # When shard-0 answers the client / Then only that one is uncounted
    in_flight.answered("shard-0", CLIENT, 1)
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (1, 1)


def test_an_answer_to_nothing_counted_uncounts_nothing():
    # Given a client with one request at shard-1
    in_flight = RequestsInFlight()
    in_flight.forwarded("shard-1", CLIENT, 5)
    # When replies come that answer nothing counted: from a shard it has nothing at,
    # to an id never sent, twice from shard-1, and from a shard never known
    in_flight.answered("shard-0", CLIENT, 5)
    in_flight.answered("shard-1", CLIENT, 6)
    in_flight.answered("shard-1", CLIENT, 5)
    in_flight.answered("shard-1", CLIENT, 5)
    in_flight.answered("shard-9", OTHER, 5)
    # Then the count never goes below what was counted
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (0, 0)
    in_flight.forwarded("shard-1", CLIENT, 5)
    assert in_flight.count(CLIENT) == 1


def test_a_request_id_in_flight_is_refused_again_until_answered_naming_it():
    # Given a client's request 7 at shard-0
    in_flight = RequestsInFlight()
    in_flight.forwarded("shard-0", CLIENT, 7)
    # When it sends another request 7 / Then it is refused, naming the id and the shard;
    # another client's 7 is not
    why = in_flight.refusal(CLIENT, 7)
    assert why is not None and "request 7 is in flight already (at shard-0)" in why
    assert in_flight.refusal(OTHER, 7) is None
    # And once answered, the id may be used again
    in_flight.answered("shard-0", CLIENT, 7)
    assert in_flight.refusal(CLIENT, 7) is None


def test_a_forgotten_shard_returns_its_requests_in_order_and_its_late_answers_count_nothing():
    # Given a client with requests at two shards, and another client's at the first
    in_flight = RequestsInFlight()
    for shard_id, client, request_id in (("shard-0", CLIENT, 1), ("shard-1", CLIENT, 2),
                                         ("shard-0", OTHER, 9), ("shard-0", CLIENT, 3)):
        in_flight.forwarded(shard_id, client, request_id)
    # When shard-0's connection drops (its requests are lost)
    lost = in_flight.forget_shard("shard-0")
    # Then its requests come back, oldest first, to be answered; only shard-1's counts,
    # a late answer from shard-0 changes nothing, and the ids are free again
    assert lost == [(CLIENT, 1), (OTHER, 9), (CLIENT, 3)]
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (1, 0)
    in_flight.answered("shard-0", CLIENT, 1)
    assert in_flight.count(CLIENT) == 1 and in_flight.refusal(CLIENT, 1) is None
    assert in_flight.forget_shard("shard-0") == []


def test_request_bytes_count_per_client_until_answered_forgotten_or_deposed():
    # Given a client with requests of 100, 200 and 400 bytes at two shards (the last
    # a group request of slot 3), and another client's request of 50
    in_flight = RequestsInFlight()
    in_flight.forwarded("shard-0", CLIENT, 1, size_bytes=100)
    in_flight.forwarded("shard-1", CLIENT, 2, size_bytes=200)
    in_flight.forwarded("shard-0", CLIENT, 3, slot(3), size_bytes=400)
    in_flight.forwarded("shard-0", OTHER, 1, size_bytes=50)
    assert (in_flight.bytes_for(CLIENT), in_flight.bytes_for(OTHER)) == (700, 50)
    assert in_flight.total_bytes == 750
    # When shard-0 answers request 1 / Then its bytes leave, and only its
    in_flight.answered("shard-0", CLIENT, 1)
    assert (in_flight.bytes_for(CLIENT), in_flight.bytes_for(OTHER)) == (600, 50)
    assert in_flight.total_bytes == 650
    # When slot 3 gets another leader / Then the group request's bytes leave
    in_flight.deposed(lambda shard_id, where: shard_id == "shard-1")
    assert in_flight.bytes_for(CLIENT) == 200
    # When shard-1 is forgotten and shard-0 answers the other / Then nothing is left
    in_flight.forget_shard("shard-1")
    in_flight.answered("shard-0", OTHER, 1)
    assert (in_flight.bytes_for(CLIENT), in_flight.bytes_for(OTHER)) == (0, 0)
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (0, 0)
    assert in_flight.total_bytes == 0


def test_a_clients_fetches_may_ask_for_its_fetch_bytes_in_all_and_no_more():
    # Given a client whose maximal fetches at the shards fill its fetch bytes
    fetches = FetchBytesInFlight()
    count = limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // limits.FETCH_BYTES_MAX
    for request_id in range(count):
        assert fetches.refusal(CLIENT, request_id, limits.FETCH_BYTES_MAX) is None
        fetches.forwarded("shard-0", CLIENT, request_id, limits.FETCH_BYTES_MAX)
    # When it asks for one more, even a tiny one / Then it is refused, naming the limit,
    # while another client is not
    why = fetches.refusal(CLIENT, count, 1)
    assert why is not None and str(limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX) in why
    assert fetches.refusal(OTHER, 0, limits.FETCH_BYTES_MAX) is None
    # And once one is answered, a fetch fits again
    fetches.answered(CLIENT, 0)
    assert fetches.refusal(CLIENT, count, limits.FETCH_BYTES_MAX) is None


def test_a_tiny_fetch_counts_an_entrys_worth_so_many_cannot_ask_for_gigabytes():
    # Given fetches asking for 1 byte each (each still brings back a whole entry)
    fetches = FetchBytesInFlight()
    admitted = 0
    while fetches.refusal(CLIENT, admitted, 1) is None:
        fetches.forwarded("shard-0", CLIENT, admitted, 1)
        admitted += 1
    # Then only as many as the limit holds at the counted minimum went
    assert admitted == limits.CLIENT_FETCH_BYTES_IN_FLIGHT_MAX // counted_bytes(1)
    assert counted_bytes(1) == limits.FETCH_BYTES_COUNTED_MIN


def test_fetch_bytes_leave_with_their_reply_or_their_shard():
    # Given fetches of a client at two shards
    fetches = FetchBytesInFlight()
    fetches.forwarded("shard-0", CLIENT, 1, 4 * limits.MiB)
    fetches.forwarded("shard-1", CLIENT, 2, 8 * limits.MiB)
    # When shard-1 restarts and a reply comes to nothing counted
    fetches.forget_shard("shard-1")
    fetches.answered(CLIENT, 99)
    assert fetches.bytes_for(CLIENT) == 4 * limits.MiB
    # When the last reply comes / Then nothing is counted for the client
    fetches.answered(CLIENT, 1)
    assert fetches.bytes_for(CLIENT) == 0


def test_group_requests_at_a_shard_that_no_longer_leads_their_slot_are_deposed():
    # Given requests at shard-0 of groups in slots 0 and 1, of an unreplicated group and a
    # produce, and one at shard-1 in slot 0
    in_flight = RequestsInFlight()
    in_flight.forwarded("shard-0", CLIENT, 1, slot(0))
    in_flight.forwarded("shard-0", CLIENT, 2, slot(1))
    in_flight.forwarded("shard-0", OTHER, 3)
    in_flight.forwarded("shard-0", OTHER, 5)
    in_flight.forwarded("shard-1", OTHER, 4, slot(0))
    # When slot 0 is led by shard-1 now, slot 1 still by shard-0
    leaders = leading({(topics.OFFSETS_TOPIC, 0): "shard-1", (topics.OFFSETS_TOPIC, 1): "shard-0"})
    # Then only shard-0's request in slot 0 is deposed, once, and no longer counted
    assert in_flight.deposed(leaders) == [("shard-0", CLIENT, 1, slot(0))]
    assert in_flight.deposed(leaders) == []
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (1, 3)
    assert in_flight.forget_shard("shard-0") == [(CLIENT, 2), (OTHER, 3), (OTHER, 5)]
    assert in_flight.forget_shard("shard-1") == [(OTHER, 4)]
    # And a forgotten request is never deposed later
    assert in_flight.deposed(lambda shard_id, where: False) == []


def test_partition_requests_at_a_shard_that_no_longer_leads_are_deposed_and_counts_stay_exact():
    # Given a produce and a fetch of t-0 at shard-0 (its leader), a produce of t-1 at
    # shard-1, another client's acks=0 produce of t-0 (counted marked), and a request
    # that waits for no partition
    in_flight = RequestsInFlight()
    in_flight.forwarded("shard-0", CLIENT, 1, ("produce", "t", 0, None), size_bytes=1000)
    in_flight.forwarded("shard-0", CLIENT, 2, ("fetch", "t", 0, 42), size_bytes=60)
    in_flight.forwarded("shard-1", CLIENT, 3, ("produce", "t", 1, None), size_bytes=500)
    in_flight.forwarded("shard-0", mark(OTHER), 1, ("produce", "t", 0, None), size_bytes=300)
    in_flight.forwarded("shard-0", OTHER, 2, None, size_bytes=70)
    # When t-0 is led by shard-2 now, t-1 still by shard-1
    leaders = leading({("t", 0): "shard-2", ("t", 1): "shard-1"})
    # Then the three requests waiting for t-0 at shard-0 are deposed, in the order they
    # were sent, each with what it waited for, and once only
    assert in_flight.deposed(leaders) == [
        ("shard-0", CLIENT, 1, ("produce", "t", 0, None)),
        ("shard-0", CLIENT, 2, ("fetch", "t", 0, 42)),
        ("shard-0", mark(OTHER), 1, ("produce", "t", 0, None))]
    assert in_flight.deposed(leaders) == []
    # And only the others count, requests and bytes alike
    assert (in_flight.count(CLIENT), in_flight.bytes_for(CLIENT)) == (1, 500)
    assert (in_flight.count(mark(OTHER)), in_flight.bytes_for(mark(OTHER))) == (0, 0)
    assert (in_flight.count(OTHER), in_flight.total_bytes) == (1, 570)
    # When shard-0 answers the deposed ones late, after the client sent id 1 again to
    # the new leader / Then the late answers count nothing (and say so), and the new
    # request is uncounted by its own shard's answer only
    in_flight.forwarded("shard-2", CLIENT, 1, ("produce", "t", 0, None), size_bytes=1000)
    assert not in_flight.answered("shard-0", CLIENT, 1)
    assert not in_flight.answered("shard-0", CLIENT, 2)
    assert not in_flight.answered("shard-0", mark(OTHER), 1)
    assert (in_flight.count(CLIENT), in_flight.bytes_for(CLIENT)) == (2, 1500)
    assert in_flight.answered("shard-2", CLIENT, 1)
    assert in_flight.answered("shard-1", CLIENT, 3) and in_flight.answered("shard-0", OTHER, 2)
    assert (in_flight.count(CLIENT), in_flight.count(OTHER), in_flight.total_bytes) == (0, 0, 0)
