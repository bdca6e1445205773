"""`plinth produce` against a broker whose shard takes its records and never answers
(tests/client/produce_broker.py, holding every produce request): the command fails
in about --request-timeout-ms (plus --linger-ms, the delivery timeout it gives its
producer), as the other client commands do, not after the Producer's default
delivery timeout of 120 s."""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner

from plinth.cli import main
from plinth.errors import RecordTooLargeError
from tests.client.produce_broker import ProduceBroker


@pytest.fixture
def silent_shard():
    broker = ProduceBroker({"t": 1})
    broker.hold()   # metadata is answered; produce requests never are
    yield broker
    broker.close()


@pytest.mark.timeout(60)   # far below the 120 s it took
def test_produce_to_a_shard_that_never_answers_fails_in_about_the_request_timeout(
        silent_shard):
    # Given a broker whose shard never answers
    started_s = time.monotonic()
    # When a record is produced with a request timeout of 1 s and a linger of 5 ms
    result = CliRunner().invoke(main, ["--broker", silent_shard.url, "--request-timeout-ms",
                                       "1000", "produce", "t", "--linger-ms", "5"],
                                input="a\n")
    took_s = time.monotonic() - started_s
    # Then the command fails with one error line naming the delivery timeout it was given
    assert result.exit_code == 1, result.output
    assert ("error: PlinthTimeoutError: t-0: a batch of 1 records was not acknowledged "
            "within delivery_timeout_ms=1005" in result.output)
    # And within a few seconds of it (the bound leaves room for a loaded machine)
    assert took_s < 15
    assert silent_shard.arrivals   # the record was sent, and not answered


def test_produce_help_says_that_a_record_fails_after_its_linger_and_the_request_timeout():
    shown = CliRunner().invoke(main, ["produce", "--help"]).output
    assert "--linger-ms plus --request-timeout-ms" in " ".join(shown.split())


def test_produce_says_how_many_records_were_acknowledged_before_a_batch_was_refused():
    # Given a broker that stores the first two batches and refuses the ones after
    broker = ProduceBroker({"t": 1})
    broker.faults.extend([None, None] + [RecordTooLargeError(
        "t-0: a batch of 300 bytes is over the topic's max.message.bytes=200")] * 3)
    try:
        # When five records are produced one per batch (--batch-bytes-max below two of them)
        result = CliRunner().invoke(main, ["--broker", broker.url, "produce", "t",
                                           "--batch-bytes-max", "200", "--linger-ms", "0"],
                                    input="".join(f"{'x' * 100}{i}\n" for i in range(5)))
        stored = broker.record_count()
    finally:
        broker.close()
    # Then it fails with the refusal, saying first how many of the records sent went in
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"2 records of the [3-5] sent were acknowledged before the first "
                        r"failure stopped the input", lines[-2]), lines
    assert lines[-1] == ("error: RecordTooLargeError: t-0: a batch of 300 bytes is over the "
                         "topic's max.message.bytes=200")
    assert stored == 2


def test_produce_takes_a_batch_size_within_the_broker_s_batch_limit():
    result = CliRunner().invoke(main, ["produce", "t", "--batch-bytes-max", "0"])
    assert result.exit_code == 2 and "--batch-bytes-max" in result.output
