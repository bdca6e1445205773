"""``plinth consume`` when its fetches fail with an error the consumer retries (object
storage down, a shard restarting): at the end of --timeout-ms, an error line naming the
partition, the offset and the last error, and exit status 1; a consume that finds no
records in time exits 0 saying nothing, as before. The broker is a scripted one
(tests/client/scripted_broker.py) and the Admin the CLI asks for the partition's offsets
answers from the test."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from plinth import cli, protocol
from plinth.errors import RemoteStorageUnavailableError
from tests.client.scripted_broker import ScriptedBroker

DOWN = ("object storage: get s3://bucket/orders-0/00000000000000000000.log: HTTP error: "
        "error sending request")


pytestmark = pytest.mark.usefixtures("log_start_0_end_200")   # (conftest.py)


@pytest.fixture
def broker_answering():
    """``broker_answering(step)``: a scripted broker answering every request with ``step``."""
    brokers = []

    def make(step) -> ScriptedBroker:
        brokers.append(ScriptedBroker([step] * 10_000))
        return brokers[-1]

    yield make
    for broker in brokers:
        broker.close()


def consume(broker: ScriptedBroker, *args: str):
    return CliRunner().invoke(cli.main, ["--broker", broker.url, "--request-timeout-ms", "500",
                                         "consume", "orders", "--partition", "0", "--offset",
                                         "100", "--max-messages", "1", *args])


def empty_fetch_reply(request):
    return [protocol.encode_fetch_reply(request.request_id, 200, 0), b""]


@pytest.mark.timeout(60)
def test_a_consume_whose_fetches_still_fail_when_its_timeout_ends_says_so_and_exits_1(
        broker_answering):
    # Given a broker whose object storage is down, holding offset 100 only there
    broker = broker_answering(RemoteStorageUnavailableError(DOWN))
    # When offset 100 is consumed for at most 1 s
    result = consume(broker, "--timeout-ms", "1000")
    # Then nothing is printed, and the last line names the partition, the offset and the
    # error (its class, the wire's Error.remoteStorage kept), and the status is 1
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"error: RemoteStorageUnavailableError: orders-0: fetches at offset 100 were still "
        f"failing when --timeout-ms 1000 ended: {DOWN}")


@pytest.mark.timeout(60)
def test_a_consume_that_finds_no_records_before_its_timeout_exits_0_saying_nothing(
        broker_answering):
    # Given a broker that answers every fetch, with no records
    broker = broker_answering(empty_fetch_reply)
    # When offset 100 is consumed for at most 500 ms
    result = consume(broker, "--timeout-ms", "500")
    # Then it ends as before: nothing printed, status 0
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def no_answer(request):
    return None


@pytest.mark.timeout(60)
def test_a_consume_whose_fetches_go_unanswered_says_so_and_exits_1(broker_answering):
    # Given a broker whose shard hangs: it never answers a fetch (SIGSTOPped, say)
    broker = broker_answering(no_answer)
    # When offset 100 is consumed for at most 3 s, with a request timeout of 500 ms
    result = consume(broker, "--timeout-ms", "3000")
    # Then it ends in an error line naming the partition, the offset and the timeout,
    # with status 1: it ended with status 0, as if the log were idle
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert re.fullmatch(
        r"error: PlinthTimeoutError: orders-0: fetches at offset 100 were still failing when "
        r"--timeout-ms 3000 ended: no answer to the fetch of orders-0 at offset 100 within "
        r"fetch_max_wait_ms \+ request_timeout_ms = \d+ ms", result.stderr.splitlines()[-1])


@pytest.mark.timeout(60)
def test_a_group_consume_whose_heartbeats_go_unanswered_says_so_and_exits_1(broker_answering):
    # Given a broker whose group coordinator's shard hangs: it answers metadata, and
    # no heartbeat
    broker = broker_answering(lambda request: [protocol.encode_topics_reply(
        request.request_id, [protocol.TopicInfo("orders", 1)])] if request.kind == "metadata"
        else None)
    # When the topic is consumed in group g for at most 3 s, with 500 ms requests
    result = CliRunner().invoke(cli.main, ["--broker", broker.url, "--request-timeout-ms", "500",
                                           "consume", "orders", "--group", "g", "--max-messages",
                                           "1", "--timeout-ms", "3000"])
    # Then it ends in an error line naming the group and the heartbeats' last error, with
    # status 1: it ended with status 0, as if the topic were idle
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert re.fullmatch(
        r"error: PlinthTimeoutError: group g: heartbeats were still failing when --timeout-ms "
        r"3000 ended: no reply from tcp://127\.0\.0\.1:\d+ to request \d+ within 500 ms; .*",
        result.stderr.splitlines()[-1])
