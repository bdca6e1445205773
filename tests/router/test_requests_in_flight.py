"""router/requests_in_flight.py: counted requests per client and shard, and the mark that
keeps an uncounted request's reply from uncounting anything."""

from __future__ import annotations

from plinth.router.requests_in_flight import RequestsInFlight, is_marked, mark, unmark

CLIENT, OTHER = b"\x00\x80\x00\x00\x01", b"\x00\x80\x00\x00\x02"


def test_a_marked_identity_is_recognised_and_unmarks_to_its_client():
    # Given a client's identity as libzmq assigns it / When marked / Then only the
    # marked one is recognised, and unmarking gives the client back
    assert is_marked(mark(CLIENT)) and not is_marked(CLIENT)
    assert unmark(mark(CLIENT)) == CLIENT


def test_requests_count_per_client_across_shards_until_answered():
    # Given two requests of a client at two shards, and one of another client
    in_flight = RequestsInFlight()
    in_flight.forwarded("shard-0", CLIENT)
    in_flight.forwarded("shard-1", CLIENT)
    in_flight.forwarded("shard-0", OTHER)
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (2, 1)
    # When shard-0 answers the client / Then only that one is uncounted
    in_flight.answered("shard-0", CLIENT)
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (1, 1)


def test_an_answer_to_nothing_counted_uncounts_nothing():
    # Given a client with one request at shard-1
    in_flight = RequestsInFlight()
    in_flight.forwarded("shard-1", CLIENT)
    # When replies come that answer nothing counted: from a shard it has nothing at,
    # twice from shard-1, and from a shard never known
    in_flight.answered("shard-0", CLIENT)
    in_flight.answered("shard-1", CLIENT)
    in_flight.answered("shard-1", CLIENT)
    in_flight.answered("shard-9", OTHER)
    # Then the count never goes below what was counted
    assert (in_flight.count(CLIENT), in_flight.count(OTHER)) == (0, 0)
    in_flight.forwarded("shard-1", CLIENT)
    assert in_flight.count(CLIENT) == 1


def test_a_forgotten_shard_takes_its_requests_with_it_and_its_late_answers_count_nothing():
    # Given a client with requests at two shards
    in_flight = RequestsInFlight()
    for shard_id in ("shard-0", "shard-0", "shard-1"):
        in_flight.forwarded(shard_id, CLIENT)
    # When shard-0 restarts (its requests are lost)
    in_flight.forget_shard("shard-0")
    # Then only shard-1's request counts, and a late answer from shard-0 changes nothing
    assert in_flight.count(CLIENT) == 1
    in_flight.answered("shard-0", CLIENT)
    assert in_flight.count(CLIENT) == 1
