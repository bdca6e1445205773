"""``plinth group describe`` (plinth/cli_groups.py) names each partition's member by
its whole id, from a GroupInfo and lag rows as Admin returns them; one whose request
timed out names the group's coordinator. The Admin is
replaced by one that returns the given values; the rendering is the real CLI's."""

from __future__ import annotations

import contextlib

import pytest
from click.testing import CliRunner

from plinth import cli, cli_groups, protocol, topics
from plinth.control import placement
from plinth.errors import PlinthTimeoutError, RequestTimedOutError, UnknownTopicError

# As librdkafka names its members: client id, then a UUID; alike for 8 characters and more.
FIRST = "rdkafka-3f1c2a9e-5b7d-4e0a-9c1f-2d8e6b4a7c10"
SECOND = "rdkafka-8a0b6c4d-1e2f-4a3b-8c5d-6e7f8a9b0c1d"
SHARDS = ["shard-0", "shard-1", "shard-2"]


def described(monkeypatch, info: protocol.GroupInfo, rows: list[tuple]) -> list[str]:
    class Admin:
        def describe_group(self, name):
            return info

        def group_lag(self, name):
            return rows

    monkeypatch.setattr(cli_groups, "admin_for", lambda ctx: contextlib.nullcontext(Admin()))
    result = CliRunner().invoke(cli.main, ["group", "describe", info.group])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_each_partition_names_its_members_whole_id_when_kafka_members_share_a_prefix(monkeypatch):
    info = protocol.GroupInfo("billing", "range", 3, [
        protocol.MemberInfo(FIRST, 3, ["orders"], {("orders", 0)}),
        protocol.MemberInfo(SECOND, 3, ["orders"], {("orders", 1)})])
    lines = described(monkeypatch, info, [("orders", 0, 10, 12, 2), ("orders", 1, None, 5, None)])
    owners = {line.split()[1]: line.split()[-1] for line in lines if line.startswith("orders ")}
    assert owners == {"0": FIRST, "1": SECOND}


class TimedOutAdmin:
    """describe_group times out (``timeout``: the client's, or the broker's); status and
    describe_topic answer as given."""

    def __init__(self, shards: list[protocol.ShardStatus], offsets: protocol.TopicInfo | None,
                 timeout: type = PlinthTimeoutError):
        self.shards, self.offsets, self.timeout = shards, offsets, timeout

    def describe_group(self, name):
        raise self.timeout("no reply within 30000 ms")

    def status(self):
        return protocol.StatusInfo([], self.shards, [])

    def describe_topic(self, name):
        if self.offsets is None or name != topics.OFFSETS_TOPIC:
            raise UnknownTopicError(f"unknown topic {name!r}")
        return self.offsets


def shard(shard_id: str, alive: bool = True) -> protocol.ShardStatus:
    return protocol.ShardStatus(shard_id, "tcp://127.0.0.1:7500", alive, 1, 0, 0.0, 0.0)


@pytest.mark.parametrize("timeout", [PlinthTimeoutError, RequestTimedOutError])
def test_a_group_describe_that_timed_out_names_the_coordinator_hashed_onto_the_shards(
        monkeypatch, timeout):
    # Given unreplicated offsets (no internal topic): the group hashed onto the shards
    coordinator = placement.shard_for_group("billing", SHARDS)
    admin = TimedOutAdmin([shard(s, alive=s != coordinator) for s in SHARDS], None, timeout)
    # When its describe times out
    monkeypatch.setattr(cli_groups, "admin_for", lambda ctx: contextlib.nullcontext(admin))
    result = CliRunner().invoke(cli.main, ["group", "describe", "billing"])
    # Then the error names its coordinator, silent in status too
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {timeout.__name__}: group billing: its coordinator {coordinator} does not "
        f"answer plinth status either (stopped, hung or restarting); no reply within 30000 ms")


def test_a_group_describe_that_timed_out_names_the_leader_of_the_groups_offsets_slot(
        monkeypatch):
    # Given replicated offsets: the group's slot of the internal topic led by shard-2
    slot = topics.offsets_slot("billing", 3)
    leaders = ["shard-0", "shard-1", "shard-2"]
    leaders[slot] = "shard-2"
    offsets = protocol.TopicInfo(topics.OFFSETS_TOPIC, 3, partition_info=[
        protocol.PartitionInfo(p, leaders[p]) for p in range(3)])
    admin = TimedOutAdmin([shard(s) for s in SHARDS], offsets)
    # When its describe times out
    monkeypatch.setattr(cli_groups, "admin_for", lambda ctx: contextlib.nullcontext(admin))
    result = CliRunner().invoke(cli.main, ["group", "describe", "billing"])
    # Then the error names that leader
    assert "group billing: its coordinator shard-2 answers plinth status; no reply" in \
        result.stderr
