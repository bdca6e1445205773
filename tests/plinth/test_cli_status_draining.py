"""``plinth status`` and ``plinth shards remove`` say why a removed shard still drains
(and status why a DOWN shard is down, when the controller knows),
status's columns line up whatever the addresses' length, and a DOWN shard's bytes
and rates are "-", not 0 (plinth/cli.py), from a
StatusInfo as Admin returns it. The Admin is replaced by one that
returns the given values; the rendering is the real CLI's."""

from __future__ import annotations

import contextlib

from click.testing import CliRunner

from plinth import cli, protocol

UPLOADING = "2 partitions of tiered topics still uploading to object storage"


def shard(shard_id: str, draining: bool = False, reason: str = "",
          address: str = "tcp://127.0.0.1:7500", direct_address: str = "") -> protocol.ShardStatus:
    return protocol.ShardStatus(shard_id, address, True, 0 if draining else 3,
                                1000, 0.0, 0.0, draining=draining, draining_reason=reason,
                                direct_address=direct_address)


def run(monkeypatch, args: list[str], shards: list[protocol.ShardStatus],
        moves: list[protocol.PartitionMove] = ()) -> list[str]:
    """The lines the command prints, given the shards status returns."""
    class Admin:
        def status(self):
            return protocol.StatusInfo([], shards, [])

        def remove_shards(self, count):
            return list(moves)

    monkeypatch.setattr(cli, "_admin", lambda ctx: contextlib.nullcontext(Admin()))
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_status_says_why_each_draining_shard_has_not_retired(monkeypatch):
    lines = run(monkeypatch, ["status"], [shard("shard-0"), shard("shard-2", True, UPLOADING)])
    at = next(i for i, line in enumerate(lines) if line.startswith("draining"))
    assert lines[at + 1].split(maxsplit=1) == ["shard-2", UPLOADING]
    assert not any(line.split()[:1] == ["shard-0"] for line in lines[at + 1:])


def test_status_without_draining_shards_prints_no_draining_table(monkeypatch):
    lines = run(monkeypatch, ["status"], [shard("shard-0"), shard("shard-1")])
    assert not any(line.startswith("draining") for line in lines)


def test_shards_remove_prints_the_moves_then_why_the_removed_shard_still_drains(monkeypatch):
    moves = [protocol.PartitionMove("logs", 1, "shard-2", "shard-0", 812)]
    lines = run(monkeypatch, ["shards", "remove", "1"],
                [shard("shard-0"), shard("shard-2", True, UPLOADING)], moves)
    assert lines[:2] == ["logs-1: shard-2 -> shard-0 from offset 812",
                         "removed 1 shard; the writes of 1 partition moved"]
    assert lines[2].startswith("draining")
    assert lines[3].split(maxsplit=1) == ["shard-2", UPLOADING]


def test_shards_remove_prints_nothing_more_when_the_removed_shard_retired_at_once(monkeypatch):
    lines = run(monkeypatch, ["shards", "remove", "1"], [shard("shard-0")])
    assert lines == ["removed 1 shard; the writes of 0 partitions moved"]


def test_status_columns_line_up_when_a_shards_ipc_address_is_longer_than_the_column(monkeypatch):
    long_path = "ipc:///var/lib/plinth/data/sockets/shard-1"
    lines = run(monkeypatch, ["status"], [
        shard("shard-0", direct_address="ipc:///s/shard-0.direct"),
        shard("shard-1", address=long_path, direct_address=long_path + ".direct")])
    for title, column in (("shards", "partitions"), ("direct sockets", "requests direct")):
        header = lines.index(title) + 1
        column_end = lines[header].index(column) + len(column)
        for row in lines[header + 1:header + 3]:
            # the right-aligned number ends where its heading does
            assert row[:column_end].endswith("3" if title == "shards" else "0"), (title, row)
            assert row[column_end] == " ", (title, row)


def test_shards_remove_says_when_a_partition_keeps_its_leader_but_gets_a_new_replica_set(
        monkeypatch):
    moves = [protocol.PartitionMove("pay", 2, "shard-2", "shard-2", 3725),
             protocol.PartitionMove("logs", 1, "shard-3", "shard-0", 812)]
    lines = run(monkeypatch, ["shards", "remove", "1"], [shard("shard-0")], moves)
    assert lines[:3] == [
        "pay-2: a new replica set, still led by shard-2, from offset 3725",
        "logs-1: shard-3 -> shard-0 from offset 812",
        "removed 1 shard; the writes of 2 partitions moved (1 of them to a new replica set, "
        "led by the same shard)"]


def test_status_shows_each_shards_process_id_after_its_node_and_a_dash_when_not_known(
        monkeypatch):
    known = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7500", True, 3, 0, 0.0, 0.0,
                                 node="a", pid=31337)
    unknown = protocol.ShardStatus("shard-1", "tcp://127.0.0.1:7501", False, 3, 0, 0.0, 0.0,
                                   node="a")
    lines = run(monkeypatch, ["status"], [known, unknown])
    header = lines.index("shards") + 1
    assert lines[header].split()[:4] == ["shard", "state", "node", "pid"]
    assert lines[header + 1].split()[:4] == ["shard-0", "up", "a", "31337"]
    assert lines[header + 2].split()[:4] == ["shard-1", "DOWN", "a", "-"]


def test_a_down_shards_bytes_rates_and_request_counts_are_dashes_not_0(monkeypatch):
    # Given shard-1 DOWN: it did not answer status, so its numbers came as 0
    up = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7500", True, 3, 2048, 10.0, 0.0)
    down = protocol.ShardStatus("shard-1", "tcp://127.0.0.1:7501", False, 3, 0, 0.0, 0.0,
                                direct_address="tcp://127.0.0.1:7601")
    # When status is printed
    lines = run(monkeypatch, ["status"], [up, down])
    # Then its bytes, rates and request counts say not known, where shard-0's are numbers
    header = lines.index("shards") + 1
    assert lines[header + 1].split()[5:] == ["2048", "10", "0.00", "0", "0.00"]
    assert lines[header + 2].split()[5:] == ["-"] * 5
    direct = lines.index("direct sockets") + 1
    assert lines[direct + 1].split() == ["shard-1", "tcp://127.0.0.1:7601", "-", "-"]


def test_status_marks_remote_bytes_a_shard_has_not_listed_yet_and_says_why_below(monkeypatch):
    # Given a shard that uploads 3 tiered partitions, 2 not listed yet (a new leader,
    # the store down): its remote bytes may be 0 although the store holds segments
    unlisted = protocol.ShardStatus("shard-1", "tcp://127.0.0.1:7501", True, 3, 1000, 0.0, 0.0,
                                    remote_partitions_not_listed=2)
    listed = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7500", True, 3, 1000, 0.0, 0.0,
                                  remote_bytes=5000)
    lines = run(monkeypatch, ["status"], [listed, unlisted])
    # Then the tiered table shows it, its remote bytes marked "?", and a line says why
    at = lines.index("tiered storage")
    assert lines[at + 2].split()[:2] == ["shard-0", "5000"]
    assert lines[at + 3].split()[:2] == ["shard-1", "0?"]
    assert lines[at + 4] == ("  ? shard-1 has not listed object storage for 2 partitions yet: "
                             "its remote bytes may lack their segments (plinth topic describe "
                             "says why)")


def test_status_says_a_disk_refuses_produces_when_its_appends_fail_whatever_the_reserve(
        monkeypatch):
    # Given a full disk without a reserve (--produce-free-bytes-min 0), whose shard's
    # appends to two partitions fail (T-ext: status said "taken")
    full = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7500", True, 3, 1000, 0.0, 0.0,
                                disk_free_bytes=0, disk_total_bytes=1 << 30,
                                partitions_appends_failing=2)
    lines = run(monkeypatch, ["status"], [full])
    # Then the disks table says produces are refused, and why
    at = lines.index(next(line for line in lines if line.startswith("disks")))
    assert lines[at + 1].endswith("produces")
    assert lines[at + 2].endswith("REFUSED (the disk refused the last append to 2 partitions: "
                                  "see the shard's log)")


def test_status_says_why_a_down_shard_is_down_when_the_controller_knows(monkeypatch):
    restarting = "restarting: died 101 times, next start in 40 s"
    down = protocol.ShardStatus("shard-1", "tcp://127.0.0.1:7501", False, 3, 0, 0.0, 0.0,
                                down_reason=restarting)
    unknown = protocol.ShardStatus("shard-2", "tcp://127.0.0.1:7502", False, 3, 0, 0.0, 0.0)
    lines = run(monkeypatch, ["status"], [shard("shard-0"), down, unknown])
    at = lines.index("down shards")
    assert lines[at + 1].split(maxsplit=1) == ["shard-1", restarting]
    assert len(lines) == at + 2 or not lines[at + 2].split()[:1] == ["shard-2"]
