"""``plinth consume`` when a partition's shard hangs (SIGSTOPped, say): its fetch, or the
reset of its position, goes unanswered. A healthy shard answers a fetch within its wait
(fetch_max_wait_ms, 500 ms) even with no record, so at the end of --timeout-ms a fetch
unanswered for clearly longer (CONSUMER_FETCH_OVERDUE_MARGIN_MS more) is reported: an
error line naming the partitions, how long, and `plinth status`, and exit status 1. It
used to print nothing and exit 0, as if the partition were empty, unless --timeout-ms
outlasted the request timeout (30 s). The broker is a scripted one
(tests/client/scripted_broker.py) that never answers; the Admin the CLI asks for the
partition's offsets answers from the test."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from plinth import cli, limits, protocol
from tests.client.scripted_broker import ScriptedBroker

# How long each consume runs: a fetch sent at its start is overdue after 2.5 s (the
# fetch's wait and the margin), so 1.5 s is left for the broker's first answers and a
# retry's backoff on a loaded machine (with 0.5 s, CI once saw a retried fetch not yet
# overdue).
TIMEOUT_MS = 4000

# What a consume of TIMEOUT_MS ends in when a fetch has gone unanswered all along: WAITED
# is how long, the rest as the test's partitions fill it in.
OVERDUE = re.compile(
    r"error: PlinthTimeoutError: no answer for (?P<waited>\d+) ms or more, when --timeout-ms "
    rf"{TIMEOUT_MS} ended, to the fetches of (?P<named>.+): a shard answers within fetch_max_wait_ms "
    r"\(500 ms\) even with no record, so the records may be there, unread; is their shard "
    r"hung\? See `plinth status`")


pytestmark = pytest.mark.usefixtures("log_start_0_end_200")   # (conftest.py)


@pytest.fixture
def hung_broker():
    """A scripted broker that answers metadata (topic orders, 2 partitions) and nothing
    else: the shard of every partition hangs."""
    def answer(request):
        if request.kind == "metadata":
            return [protocol.encode_topics_reply(request.request_id,
                                                 [protocol.TopicInfo("orders", 2)])]
        return None

    broker = ScriptedBroker([answer] * 10_000)
    yield broker
    broker.close()


def consume(broker: ScriptedBroker, *args: str):
    """``plinth consume orders ARGS --timeout-ms TIMEOUT_MS``, with the default request
    timeout (30 s): no request is given up on before --timeout-ms ends."""
    return CliRunner().invoke(cli.main, ["--broker", broker.url, "consume", "orders", *args,
                                         "--timeout-ms", str(TIMEOUT_MS)])


def overdue_ms_min() -> int:
    """The least wait a fetch is reported after (at the default fetch wait)."""
    return limits.FETCH_WAIT_MS_DEFAULT + limits.CONSUMER_FETCH_OVERDUE_MARGIN_MS


@pytest.mark.timeout(60)
def test_a_consume_whose_fetch_goes_unanswered_past_its_wait_names_the_partition_and_exits_1(
        hung_broker):
    # Given a broker whose shard of orders-0 hangs: it never answers a fetch
    # When offset 100 of orders-0 is consumed for 4 s
    result = consume(hung_broker, "--partition", "0", "--offset", "100")
    # Then nothing is printed, and the last line names the partition, the fetch's offset
    # and how long it waited, past the fetch's wait and the margin; the status is 1
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    line = OVERDUE.fullmatch(result.stderr.splitlines()[-1])
    assert line is not None, result.stderr
    assert line["named"] == "orders-0 at offset 100"
    assert int(line["waited"]) > overdue_ms_min()


@pytest.mark.timeout(60)
def test_a_consume_from_the_beginning_whose_shard_hangs_names_the_partitions_and_exits_1(
        hung_broker):
    # Given a broker whose shard of both partitions of orders hangs: the reset of their
    # positions (where the beginning is) is never answered (an offline partition)
    # When the topic is consumed from the beginning for 4 s
    result = consume(hung_broker, "--from-beginning")
    # Then nothing is printed, and the last line names both partitions as waiting for
    # their start, and how long; the status is 1
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    line = OVERDUE.fullmatch(result.stderr.splitlines()[-1])
    assert line is not None, result.stderr
    assert line["named"] == ("orders-0 (asking its start offset), "
                             "orders-1 (asking its start offset)")
    assert int(line["waited"]) > limits.CONSUMER_FETCH_OVERDUE_MARGIN_MS


@pytest.mark.timeout(60)
def test_a_group_consume_whose_coordinator_hangs_names_the_group_and_exits_1(hung_broker):
    # Given a broker whose group coordinator's shard hangs: it answers metadata, and
    # no heartbeat
    # When the topic is consumed in group g for 4 s, with the default request timeout
    result = consume(hung_broker, "--group", "g")
    # Then nothing is printed, and the last line names the group and how long its
    # heartbeat waited; the status is 1
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    line = re.fullmatch(
        r"error: PlinthTimeoutError: group g: no answer to its heartbeat for (\d+) ms when "
        rf"--timeout-ms {TIMEOUT_MS} ended: a coordinator answers at once, so the member may not have "
        r"joined, nor read anything; is the group's coordinator shard hung\? See "
        r"`plinth status`", result.stderr.splitlines()[-1])
    assert line is not None, result.stderr
    assert int(line[1]) > limits.CONSUMER_FETCH_OVERDUE_MARGIN_MS


@pytest.mark.timeout(60)
def test_a_consume_whose_fetch_failed_on_object_storage_then_hangs_names_the_store():
    from plinth.errors import UnavailableError

    # Given a broker whose first fetch of orders-0 fails on object storage, and whose
    # next ones go unanswered: a read below the local log start waits for a hung store
    fetches = []

    def answer(request):
        if request.kind == "metadata":
            return [protocol.encode_topics_reply(request.request_id,
                                                 [protocol.TopicInfo("orders", 2)])]
        if request.kind == "fetch":
            fetches.append(request)
            if len(fetches) == 1:
                return [protocol.encode_error(request.request_id, UnavailableError(
                    "object storage unavailable: get s3://tier/p/orders-0/0.index: timed out"))]
        return None

    broker = ScriptedBroker([answer] * 10_000)
    try:
        # When offset 100 of orders-0 is consumed for 4 s
        result = consume(broker, "--partition", "0", "--offset", "100")
    finally:
        broker.close()
    # Then the last line blames the store the fetch failed on, not the shard
    assert result.exit_code == 1, result.output
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: PlinthTimeoutError: no answer for "), result.stderr
    assert last.endswith("orders-0's fetch before failed on object storage (UnavailableError: "
                         "object storage unavailable: get s3://tier/p/orders-0/0.index: timed "
                         "out): is the tier store hung? See `plinth status` (tier store "
                         "claim, upload errors)"), result.stderr
