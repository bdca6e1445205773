"""``plinth group describe`` (plinth/cli_groups.py) names each partition's member by
its whole id, from a GroupInfo and lag rows as Admin returns them. The Admin is
replaced by one that returns the given values; the rendering is the real CLI's."""

from __future__ import annotations

import contextlib

from click.testing import CliRunner

from plinth import cli, cli_groups, protocol

# As librdkafka names its members: client id, then a UUID; alike for 8 characters and more.
FIRST = "rdkafka-3f1c2a9e-5b7d-4e0a-9c1f-2d8e6b4a7c10"
SECOND = "rdkafka-8a0b6c4d-1e2f-4a3b-8c5d-6e7f8a9b0c1d"


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
