"""client/connection.py against scripted brokers (real ROUTER sockets answering real
Reply frames, tests/client/scripted_broker.py): matching replies to requests,
retrying, timeouts, several routers, and loading CurveZMQ keys."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest
import zmq.auth

from plinth import limits, protocol
from plinth.client.connection import BrokerAddress, Connection, broker_address, broker_url
from plinth.errors import (ClosedError, NotLeaderError, PlinthTimeoutError, RequestTooLargeError,
                           TopicExistsError, UnavailableError)
from tests.client.scripted_broker import Replies
from tests.support import curve_key_pair, free_port, wait_until


def offsets(request_id: int, partition: int) -> list[bytes]:
    """Reply frames of a listOffsets answer that name ``partition`` (to tell replies apart)."""
    return [protocol.encode_offsets_reply(request_id, protocol.PartitionInfo(partition))]


def answered(request) -> list[bytes]:
    """A script step: answer the request, its reply naming its own id as the partition."""
    return offsets(request.request_id, request.request_id)


def list_offsets(request_id: int) -> bytes:
    return protocol.encode_list_offsets(request_id, "t", 0)


@pytest.fixture
def connections():
    """``connections(url)``: a Connection, closed at the end."""
    made = []

    def make(url) -> Connection:
        made.append(Connection(url))
        return made[-1]

    yield make
    for conn in made:
        conn.close()


def test_replies_are_matched_to_their_requests_whatever_order_they_come_in(scripted, connections):
    # Given a broker that answers three requests at once, in the order 3, 1, 2
    broker = scripted([lambda r: None, lambda r: None,
                       lambda r: Replies([offsets(3, 3), offsets(1, 1), offsets(2, 2)])])
    conn = connections(broker.url)
    for request_id in (1, 2, 3):
        conn.send(list_offsets(request_id))
    # When the caller waits for request 2
    view, _ = conn.wait_for(2, 5_000)
    # Then it gets request 2's reply, and the two that came first wait for recv, in
    # the order they arrived
    assert (view.request_id, view.offsets.partition) == (2, 2)
    assert [conn.recv(0)[0].request_id for _ in range(2)] == [3, 1]
    assert conn.recv(0) is None


def test_a_reply_carrying_an_error_raises_it(scripted, connections):
    broker = scripted([TopicExistsError("topic 't' already exists")])
    conn = connections(broker.url)
    with pytest.raises(TopicExistsError, match="topic 't' already exists"):
        conn.request(list_offsets(1), 1, 5_000)


def test_a_request_without_a_reply_times_out_naming_the_url_and_the_request(scripted, connections):
    broker = scripted([])
    conn = connections(broker.url)
    request_id = conn.next_request_id()
    with pytest.raises(PlinthTimeoutError,
                       match=f"no reply from {broker.url} to request {request_id} within 200 ms"):
        conn.request(list_offsets(request_id), request_id, 200)


THERE_AND_SLOW = "the broker is there and admitted this client, but did not answer in time"
LOST = ("the connection to the broker was lost and has not come back: nothing answers "
        "there now")


def test_a_timeout_says_the_broker_is_there_only_while_its_connection_lasts(scripted,
                                                                              connections):
    # Given a broker that answered the client's first request, then answers nothing
    broker = scripted([answered])
    conn = connections(broker.url)
    conn.request(list_offsets(1), 1, 5_000)
    # When a request times out while it is still connected
    # Then the client is told the broker is there and slow
    with pytest.raises(PlinthTimeoutError, match=THERE_AND_SLOW):
        conn.request(list_offsets(2), 2, 200)
    # When the broker goes away (its socket closed, as a stopped broker's), and a
    # request times out
    broker.close()
    with pytest.raises(PlinthTimeoutError, match=LOST) as err:
        conn.request(list_offsets(3), 3, 500)
    # Then the client is told the connection was lost, not that the broker is there
    assert "is there and admitted" not in str(err.value)
    # And once a broker at the address shook hands again, a silence is its slowness again
    again = scripted([], url=broker.url)
    with pytest.raises(PlinthTimeoutError, match=THERE_AND_SLOW):
        conn.request(list_offsets(4), 4, 1_000)
    assert again.wait_for_requests(1)


def test_request_retrying_backs_off_while_unavailable_with_a_new_id_each_time(scripted, connections):
    # Given a broker answering "unavailable" twice, then properly
    broker = scripted([UnavailableError("shard-0 is restarting")] * 2 + [answered])
    conn = connections(broker.url)
    # When a request is retried
    view, _ = conn.request_retrying(list_offsets, 5_000)
    # Then the third try's answer comes back; each try had its own id, after a
    # backoff that doubled
    assert view.offsets.partition == view.request_id == 3
    assert [request.request_id for request in broker.wait_for_requests(3)] == [1, 2, 3]
    arrivals = [arrival for arrival, _ in broker.requests]
    backoff_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
    assert arrivals[1] - arrivals[0] >= backoff_s * 0.9
    assert arrivals[2] - arrivals[1] >= 2 * backoff_s * 0.9


def test_request_retrying_retries_not_leader_while_the_router_learns_the_new_leader(
        scripted, connections):
    # Given a broker whose shard no longer leads the group's slot, then whose new
    # leader answers
    broker = scripted([NotLeaderError("group g lives in __consumer_offsets-0, which "
                                      "shard-0 does not lead; retry"), answered])
    conn = connections(broker.url)
    # When a request is retried / Then the second try's answer comes back
    view, _ = conn.request_retrying(list_offsets, 5_000)
    assert view.request_id == 2 and len(broker.requests) == 2


def test_request_retrying_raises_the_last_unavailable_once_its_timeout_runs_out(scripted, connections):
    broker = scripted([UnavailableError(f"try {n}") for n in range(100)])
    conn = connections(broker.url)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="try") as raised:
        conn.request_retrying(list_offsets, 300)
    assert time.monotonic() - started < 0.3 + 0.5
    tries = len(broker.requests)
    assert tries > 1 and str(raised.value) == f"try {tries - 1}"


def test_a_retried_request_whose_last_try_gets_no_reply_names_the_answers_before_it(
        scripted, connections):
    # Given a broker answering "unavailable" twice, then not at all (the retries took
    # most of the time: the last try waits only what is left)
    broker = scripted([UnavailableError("shard-4 is restarting or unreachable")] * 2)
    conn = connections(broker.url)
    # When a request is retried until its timeout runs out
    with pytest.raises(PlinthTimeoutError) as raised:
        conn.request_retrying(list_offsets, 1_000)
    # Then the timeout names the whole wait and why the tries failed, not only the last
    # try's few hundred ms
    assert str(raised.value).startswith(
        "no answer within 1000 ms: 2 tries answered UnavailableError: shard-4 is restarting "
        "or unreachable; then no reply from ")


def test_request_retrying_raises_other_errors_at_once(scripted, connections):
    broker = scripted([TopicExistsError("topic 't' already exists"), answered])
    conn = connections(broker.url)
    with pytest.raises(TopicExistsError):
        conn.request_retrying(list_offsets, 5_000)
    assert len(broker.requests) == 1


def test_with_several_routers_requests_go_to_those_that_are_up(scripted, connections):
    # Given two router addresses, of which only the second has a router
    broker = scripted([answered] * 5)
    conn = connections(f"tcp://127.0.0.1:{free_port()},{broker.url}")
    # When five requests are made, each is answered by the one that is up
    for request_id in range(1, 6):
        assert conn.request(list_offsets(request_id), request_id, 5_000)[0].request_id == request_id
    assert len(broker.requests) == 5


def test_with_several_routers_requests_fail_over_when_one_goes_away(scripted, connections):
    # Given two routers, both answering
    first, second = scripted([answered] * 1000), scripted([answered] * 1000)
    conn = connections(f"{first.url},{second.url}")
    for request_id in range(1, 5):
        conn.request(list_offsets(request_id), request_id, 5_000)
    # When the first goes away
    first.close()
    # Then, once the connection knows (requests already queued to it are lost), every
    # request is answered by the second
    def answered_in_time(request_id):
        try:
            return conn.request(list_offsets(request_id), request_id, 200)
        except PlinthTimeoutError:
            return None
    request_ids = iter(range(5, 100))
    while answered_in_time(next(request_ids)) is None:
        pass
    answered_before = len(second.requests)
    for request_id in range(100, 105):
        conn.request(list_offsets(request_id), request_id, 5_000)
    assert len(second.requests) == answered_before + 5


def test_with_several_routers_all_down_a_send_fails_unavailable_after_the_wait(
        connections, monkeypatch):
    monkeypatch.setattr(limits, "CLIENT_ROUTER_CONNECT_WAIT_MS", 200)
    url = f"tcp://127.0.0.1:{free_port()},tcp://127.0.0.1:{free_port()}"
    conn = connections(url)
    started = time.monotonic()
    with pytest.raises(UnavailableError,
                       match=f"none of the routers {url} is reachable \\(waited 200 ms\\)"):
        conn.send(list_offsets(1))
    assert time.monotonic() - started >= 0.2 * 0.9


def test_a_closed_connection_refuses_to_send(scripted):
    broker = scripted([])
    conn = Connection(broker.url)
    conn.close()
    with pytest.raises(ClosedError, match=f"connection to {broker.url} is closed"):
        conn.send(list_offsets(1))


def test_a_header_over_the_limit_is_refused_at_once_and_never_sent(scripted, connections):
    # Given a broker that answers the first request it gets
    broker = scripted([answered])
    conn = connections(broker.url)
    # When a request whose header is over HEADER_BYTES_MAX is sent
    header = protocol.encode_topic_request(1, "describeTopic", "t" * limits.HEADER_BYTES_MAX)
    started = time.monotonic()
    with pytest.raises(RequestTooLargeError) as refused:
        conn.request(header, 1, 5_000)
    # Then it is refused at once, naming its size and the limit, and not sent: the
    # broker's first request is the next one
    assert time.monotonic() - started < 1
    assert f"request header is {len(header)} bytes, over the limit of " \
           f"{limits.HEADER_BYTES_MAX} bytes (64 KiB)" in str(refused.value)
    view, _ = conn.request(list_offsets(2), 2, 5_000)
    assert view.request_id == 2
    assert [r.request_id for r in broker.wait_for_requests(1)] == [2]


# --- Addresses and keys --------------------------------------------------------------

def test_the_broker_url_defaults_to_the_environment_then_the_limits_default(monkeypatch):
    monkeypatch.delenv("PLINTH_BROKER", raising=False)
    assert broker_url(None) == limits.BROKER_URL_DEFAULT
    monkeypatch.setattr(limits, "BROKER_URL_DEFAULT", "tcp://127.0.0.1:7999")
    assert broker_url(None) == "tcp://127.0.0.1:7999"   # read from limits, not a copy
    monkeypatch.setenv("PLINTH_BROKER", "127.0.0.1:7411")
    assert broker_url(None) == "tcp://127.0.0.1:7411"
    assert broker_url(" 127.0.0.1:1 , tcp://127.0.0.1:2") == "tcp://127.0.0.1:1,tcp://127.0.0.1:2"


@pytest.fixture
def keys(tmp_path):
    """(client public .key, client .key_secret, server public .key) paths."""
    client_public, client_secret = curve_key_pair(tmp_path, "client")
    server_public, _ = curve_key_pair(tmp_path, "server")
    return client_public, client_secret, server_public


def test_curve_keys_are_loaded_from_the_arguments_or_the_environment(keys, monkeypatch):
    client_public, client_secret, server_public = keys
    address = broker_address("tcp://127.0.0.1:1", client_secret, server_public)
    assert address == BrokerAddress("tcp://127.0.0.1:1", *zmq.auth.load_certificate(client_secret),
                                    zmq.auth.load_certificate(server_public)[0])
    monkeypatch.setenv("PLINTH_CURVE_KEY_FILE", client_secret)
    monkeypatch.setenv("PLINTH_CURVE_SERVER_KEY_FILE", server_public)
    assert broker_address("tcp://127.0.0.1:1") == address


def test_curve_needs_both_key_files(keys, monkeypatch):
    monkeypatch.delenv("PLINTH_CURVE_KEY_FILE", raising=False)
    monkeypatch.delenv("PLINTH_CURVE_SERVER_KEY_FILE", raising=False)
    with pytest.raises(ValueError, match="needs both curve_key_file .* and curve_server_key_file"):
        broker_address(None, curve_key_file=keys[1])


def test_a_public_key_given_as_the_clients_secret_key_is_refused(keys):
    client_public, _, server_public = keys
    with pytest.raises(ValueError, match=f"{client_public} holds no secret key"):
        broker_address(None, client_public, server_public)


def test_a_key_file_that_cannot_be_loaded_is_named(keys, tmp_path):
    _, client_secret, _ = keys
    missing = tmp_path / "missing.key"
    with pytest.raises(ValueError, match=f"cannot load the CurveZMQ key file {missing}"):
        broker_address(None, client_secret, str(missing))
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=f"cannot load the CurveZMQ key file {garbage}"):
        broker_address(None, str(garbage), client_secret)


def test_a_late_reply_to_a_request_that_timed_out_is_dropped_not_kept(scripted, connections):
    # Given a broker that answers request 1 only together with request 2's answer
    broker = scripted([lambda r: None, lambda r: Replies([offsets(1, 1), offsets(2, 2)])])
    conn = connections(broker.url)
    # When the wait for request 1 times out, and request 2 is then answered
    with pytest.raises(PlinthTimeoutError):
        conn.request(list_offsets(1), 1, 200)
    view, _ = conn.request(list_offsets(2), 2, 5_000)
    # Then request 2 gets its reply, and request 1's late reply is gone: nothing
    # is left waiting for recv
    assert view.request_id == 2
    assert conn.recv(0) is None and conn._early == {}


def test_kafka_pythons_bootstrap_servers_names_the_broker_as_a_string_or_a_list():
    assert broker_address(bootstrap_servers="127.0.0.1:1").url == "tcp://127.0.0.1:1"
    assert broker_address(bootstrap_servers=["127.0.0.1:1", "tcp://127.0.0.1:2"]).url \
        == "tcp://127.0.0.1:1,tcp://127.0.0.1:2"


@pytest.mark.parametrize("broker, bootstrap_servers, message", [
    ("tcp://127.0.0.1:1", "127.0.0.1:2", "both name the broker; give one"),
    (None, "", "bootstrap_servers='': give a router's address"),
    (None, [], r"bootstrap_servers=\[\]: give a router's address"),
    (None, ["127.0.0.1:1", 7400], "give a router's address"),
    (None, ["127.0.0.1:1,127.0.0.1:2"], "give a router's address"),
    (None, 7400, "bootstrap_servers=7400: give a router's address"),
])
def test_a_broker_given_twice_or_a_bootstrap_list_that_names_none_is_refused(
        broker, bootstrap_servers, message):
    with pytest.raises(ValueError, match=message):
        broker_address(broker, bootstrap_servers=bootstrap_servers)


def _clients():
    from plinth.client.aio.admin import AIOAdmin
    from plinth.client.aio.consumer import AIOConsumer
    from plinth.client.aio.producer import AIOProducer
    from plinth import Admin, Consumer, Producer
    return [Admin, AIOAdmin, Producer, AIOProducer, Consumer, AIOConsumer]


@pytest.mark.parametrize("client", _clients(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("option", ["curve_key_file", "curve_server_key_file"])
def test_a_key_file_that_is_not_a_path_is_refused_naming_its_option_by_every_client(
        client, option):
    # An int was taken as one key file given without the other ("CurveZMQ needs both")
    with pytest.raises(TypeError, match=rf"{option} must be a path to a key file \(a str or "
                                        rf"os\.PathLike\), or None, got 5 \(int\)"):
        client(broker="tcp://127.0.0.1:1", **{option: 5})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_key_file_others_may_read_or_change_is_refused_naming_the_chmod(keys, mode):
    # Given the client's secret key, made readable or writable by others
    _, client_secret, server_public = keys
    os.chmod(client_secret, mode)
    # When a client is given it / Then it refuses, as ssh refuses such a private key:
    # whoever reads it is this client to the broker
    with pytest.raises(ValueError, match=rf"the CurveZMQ secret key file {client_secret} has "
                                         rf"mode {mode:o}: other users may read or change it\. "
                                         rf"Run `chmod 600 {client_secret}`"):
        broker_address("tcp://127.0.0.1:1", client_secret, server_public)


def test_the_servers_public_key_file_may_be_read_by_anyone(keys):
    # Given the server's public key, readable by all (it is public)
    _, client_secret, server_public = keys
    os.chmod(server_public, 0o644)
    # When a client is given it / Then it is taken
    assert broker_address("tcp://127.0.0.1:1", client_secret, server_public).curve_server_key


REFUSED = "connection refused: nothing listens there"


def test_a_router_address_where_nothing_listens_is_warned_of_once_and_named_at_the_timeout(
        connections, caplog):
    # Given a port nothing listens on
    url = f"tcp://127.0.0.1:{free_port()}"
    conn = connections(url)
    # When two requests wait past the probe's time, one after the other
    with caplog.at_level(logging.WARNING, logger="plinth.client.connection"):
        started_s = time.monotonic()
        with pytest.raises(PlinthTimeoutError, match=f"the connection was refused at {url}: "
                                                     f"nothing listened there"):
            conn.request(list_offsets(1), 1, limits.CLIENT_CONNECT_PROBE_AFTER_MS + 500)
        with pytest.raises(PlinthTimeoutError, match="the connection was refused"):
            conn.request(list_offsets(2), 2, 300)
    # Then one WARNING named the address, and each request waited its whole timeout
    # (a broker may be starting)
    assert [r.getMessage() for r in caplog.records] == [
        f"{url}: {REFUSED} (is the broker running, and on that port?); waiting for one "
        f"until the request times out"]
    assert time.monotonic() - started_s >= (limits.CLIENT_CONNECT_PROBE_AFTER_MS + 700) / 1000


def test_a_listener_that_accepts_but_never_shakes_hands_is_not_called_refused(
        connections, caplog):
    # Given a TCP listener that accepts connections and never speaks ZeroMQ
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        conn = connections(url)
        # When a request waits past the probe's time
        with caplog.at_level(logging.WARNING, logger="plinth.client.connection"), \
                pytest.raises(PlinthTimeoutError) as err:
            conn.request(list_offsets(1), 1, limits.CLIENT_CONNECT_PROBE_AFTER_MS + 500)
    # Then nothing says it was refused
    assert "refused" not in str(err.value) and caplog.records == []


def test_a_broker_that_shook_hands_is_never_probed(scripted, connections, caplog):
    # Given a broker that admitted the client, answered nothing, and then went away
    # before the probe's time (so a probe now would find its port refused)
    broker = scripted([])
    conn = connections(broker.url)
    wait_until(lambda: conn._handshakes.cause() is None and conn._handshakes.shook_hands,
               timeout_s=limits.CLIENT_CONNECT_PROBE_AFTER_MS / 2000)
    broker.close()
    # When a request waits past the probe's time
    with caplog.at_level(logging.WARNING, logger="plinth.client.connection"), \
            pytest.raises(PlinthTimeoutError, match=LOST) as err:
        conn.request(list_offsets(1), 1, limits.CLIENT_CONNECT_PROBE_AFTER_MS + 500)
    # Then it is told the connection was lost, not that nothing ever listened there
    assert "refused" not in str(err.value) and caplog.records == []
