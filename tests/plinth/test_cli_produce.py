"""`plinth produce` against a broker whose shard takes its records and never answers
(tests/client/produce_broker.py, holding every produce request): the command fails
in about --request-timeout-ms (plus --linger-ms, the delivery timeout it gives its
producer), as the other client commands do, not after the Producer's default
delivery timeout of 120 s."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from plinth.cli import main
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
