"""router/kafka/error_counts.py: every error code in a response body is found,
at any depth, and named; and a real listener on 127.0.0.1 counts what it
answered with an error and each connection it closed, by reason, by the time
its client sees the answer or the close."""

from __future__ import annotations

import struct

import pytest

from plinth.router.kafka import error_codes
from plinth.router.kafka.error_counts import (CLOSE_REASONS, KafkaErrorCounts, api_name,
                                              error_codes_in, error_name)
from plinth.router.kafka.listener import KafkaListener
from plinth.router.kafka.messages import API_VERSIONS, HEARTBEAT, SASL_AUTHENTICATE
from tests.router.kafka.test_listener import (TinyHandler, closed_by_peer, connect,
                                              read_response, request, wait_for)
from tests.router.kafka.test_listener_login import (closed_after_any_answer, frame, log_in_on)
from tests.router.kafka.test_listener_login import connect as login_connect
from tests.router.kafka.test_listener_login import start as login_listener

PRODUCE_ANSWER = {"responses": [
    {"name": "orders", "partition_responses": [
        {"index": 0, "error_code": error_codes.NONE, "record_errors": []},
        {"index": 1, "error_code": error_codes.NOT_LEADER_OR_FOLLOWER,
         "record_errors": [{"batch_index": 0, "batch_index_error_message": None}]},
        {"index": 2, "error_code": error_codes.NOT_LEADER_OR_FOLLOWER}]},
    {"name": "gone", "partition_responses": [
        {"index": 0, "error_code": error_codes.UNKNOWN_TOPIC_OR_PARTITION}]}],
    "throttle_time_ms": 0}


def test_every_error_code_in_a_body_is_found_at_any_depth_and_none_is_not_counted():
    assert error_codes_in(PRODUCE_ANSWER) == {error_codes.NOT_LEADER_OR_FOLLOWER: 2,
                                              error_codes.UNKNOWN_TOPIC_OR_PARTITION: 1}
    assert error_codes_in({"error_code": error_codes.UNSUPPORTED_VERSION,
                           "api_keys": [{"api_key": 0}]}) == {error_codes.UNSUPPORTED_VERSION: 1}
    assert error_codes_in({"error_code": 0, "replicas": [1, 2, 3], "records": b"\x07" * 9}) == {}


def test_a_body_answered_counts_each_error_under_its_api_and_kafka_name():
    counts = KafkaErrorCounts()
    counts.answered(0, PRODUCE_ANSWER)
    counts.answered(0, PRODUCE_ANSWER)
    counts.answered(12, {"error_code": error_codes.REBALANCE_IN_PROGRESS})
    counts.answered(3, {"error_code": 0, "topics": []})
    assert counts.errors() == {("Produce", "NOT_LEADER_OR_FOLLOWER"): 4,
                               ("Produce", "UNKNOWN_TOPIC_OR_PARTITION"): 2,
                               ("Heartbeat", "REBALANCE_IN_PROGRESS"): 1}


def test_an_unknown_api_or_error_code_gets_a_bounded_name_not_a_clients_string():
    assert (api_name(31_999), error_name(9_999)) == ("api_31999", "error_9999")
    assert (api_name(1), error_name(-1)) == ("Fetch", "UNKNOWN_SERVER_ERROR")


def test_a_close_reason_outside_the_documented_set_is_a_programmer_error():
    counts = KafkaErrorCounts()
    counts.closed("bad_request")
    with pytest.raises(AssertionError, match="not a close reason"):
        counts.closed("client said so")
    assert counts.closes() == {"bad_request": 1}
    assert {"bad_request", "request_size", "connections_max", "idle"} <= CLOSE_REASONS


def test_a_real_listener_counts_its_error_answers_and_each_close_by_reason():
    listener = KafkaListener("127.0.0.1", 0, TinyHandler(), connections_max=2)
    address = listener.start()
    try:
        # Given a client whose Heartbeats are answered with errors (the tiny handler
        # echoes the generation id as the error code), and one that is answered cleanly
        with connect(address) as sock:
            for correlation_id, code in enumerate([error_codes.ILLEGAL_GENERATION,
                                                   error_codes.ILLEGAL_GENERATION,
                                                   error_codes.REBALANCE_IN_PROGRESS, 0]):
                sock.sendall(request(HEARTBEAT, 4, correlation_id, {"generation_id": code}))
                assert read_response(sock, HEARTBEAT, 4)[1]["error_code"] == code
            sock.sendall(request(API_VERSIONS, 3, 9, {}))
            read_response(sock, API_VERSIONS, 3)
        # When clients send garbage, a 2 GB length and a TLS hello, and one too many connects
        for frame in (struct.pack(">i", 4) + b"\xde\xad\xbe\xef", struct.pack(">i", 0x7FFF_FFFF),
                      b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
            with connect(address) as sock:
                sock.sendall(frame)
                assert closed_by_peer(sock)
        wait_for(lambda: listener.connection_count() == 0, "the closed connections to go")
        with connect(address) as first, connect(address) as second:
            wait_for(lambda: listener.connection_count() == 2, "two connections")
            with connect(address) as third:
                assert closed_by_peer(third)
            first.sendall(request(API_VERSIONS, 3, 1, {}))
            second.sendall(request(API_VERSIONS, 3, 1, {}))
            read_response(first, API_VERSIONS, 3)
            read_response(second, API_VERSIONS, 3)
        # Then each error answer is counted under its API, each close under its reason,
        # and the clean answers and the clients' own hang-ups not at all
        assert listener.counts.errors() == {("Heartbeat", "ILLEGAL_GENERATION"): 2,
                                            ("Heartbeat", "REBALANCE_IN_PROGRESS"): 1}
        assert listener.counts.closes() == {"bad_request": 1, "request_size": 1,
                                            "tls_on_plaintext": 1, "connections_max": 1}
    finally:
        listener.stop()


def test_a_connection_closed_while_its_other_requests_finish_is_counted_once():
    listener = login_listener(connections_per_principal_max=1, login_timeout_ms=60_000)
    try:
        # Given a user holding its one connection
        with log_in_on(login_connect(listener.address), user="kbob"):
            # When another connection logs in as it with two more requests pipelined
            # behind the login: each request's end checks the user's bound again
            with login_connect(listener.address) as extra:
                extra.sendall(frame(SASL_AUTHENTICATE, 0, 1, {"auth_bytes": b"let me in as kbob"})
                              + frame(API_VERSIONS, 0, 2, {}) + frame(API_VERSIONS, 0, 3, {}))
                assert closed_after_any_answer(extra)
            wait_for(lambda: listener.connection_count() == 1, "the extra one to go")
            # Then it is one connection closed, not one per request that found it over
            assert listener.counts.closes() == {"per_user_max": 1}
    finally:
        listener.stop()
