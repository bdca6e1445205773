"""``plinth consume``'s start options (plinth/cli.py): an --offset the partition does not
hold is one error line naming the partition, the offset and the valid range, and two
options that each pick the start are a usage error naming both. The Admin the CLI asks
for the partition's offsets is replaced by one that answers from the test; the broker
named is one nobody listens at, so a consume not refused ends at its --timeout-ms with
nothing printed and exit status 0."""

from __future__ import annotations

import contextlib

import pytest
from click.testing import CliRunner

from plinth import cli, protocol
from tests.support import free_port


@pytest.fixture
def log_start_100_end_102(monkeypatch):
    """Every partition holds offsets 100..101 (its records before 100 deleted)."""
    class Admin:
        def list_offsets(self, topic, partition):
            return protocol.PartitionInfo(partition, "shard-0", start_offset=100,
                                          end_offset=102)

    monkeypatch.setattr(cli, "_admin", lambda ctx: contextlib.nullcontext(Admin()))


def consume(*args: str):
    return CliRunner().invoke(cli.main, ["--broker", f"tcp://127.0.0.1:{free_port()}",
                                         "--request-timeout-ms", "500", "consume", "orders",
                                         "--timeout-ms", "200", *args])


@pytest.mark.parametrize("offset", [5, 99, 103, 999])
@pytest.mark.timeout(60)
def test_an_offset_before_the_log_start_or_past_the_end_is_an_error_naming_the_range(
        log_start_100_end_102, offset):
    # When a partition whose log holds 100..101 is consumed from an offset outside it
    result = consume("--partition", "0", "--offset", str(offset))
    # Then one line names the partition, the offset and the range, and the status is 1
    assert result.exit_code == 1, result.output
    assert result.stderr == (f"error: OffsetOutOfRangeError: orders-0: --offset {offset} is "
                             f"outside the partition's offsets 100 (log start) .. 102 (end: "
                             f"the next record's)\n")


@pytest.mark.parametrize("offset", [100, 101, 102])
@pytest.mark.timeout(60)
def test_an_offset_from_the_log_start_to_the_end_is_taken(log_start_100_end_102, offset):
    # (the end itself: wait for the next record, as at any end of the log)
    result = consume("--partition", "0", "--offset", str(offset))
    assert result.exit_code == 0, result.output


def test_an_offset_and_from_beginning_together_are_a_usage_error_naming_both():
    result = consume("--partition", "0", "--offset", "1", "--from-beginning")
    assert result.exit_code == 2, result.output
    assert ("--offset 1 and --from-beginning each pick where to start; give one of them"
            in result.stderr)
