"""``plinth topic describe``'s output (plinth/cli.py), from a TopicInfo as Admin returns it:
the partition table, and for a tiered topic the tiered-storage table of local and remote
offsets and bytes. The Admin is replaced by one that returns the given TopicInfo; the
rendering is the real CLI's."""

from __future__ import annotations

import contextlib

from click.testing import CliRunner

from plinth import cli, protocol


def describe(monkeypatch, info: protocol.TopicInfo) -> list[str]:
    """The lines ``plinth topic describe`` prints for ``info``."""
    class Admin:
        def describe_topic(self, name):
            assert name == info.name
            return info

    monkeypatch.setattr(cli, "_admin", lambda ctx: contextlib.nullcontext(Admin()))
    result = CliRunner().invoke(cli.main, ["topic", "describe", info.name])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def partition(p: int, **fields) -> protocol.PartitionInfo:
    return protocol.PartitionInfo(p, "shard-0", replicas=["shard-0"],
                                  in_sync_replicas=["shard-0"], **fields)


def test_an_untiered_topic_shows_one_row_per_partition_and_no_tiered_table(monkeypatch):
    info = protocol.TopicInfo("plain", 2, {"remote.storage.enable": "false"},
                              [partition(0, end_offset=5, size_bytes=100), partition(1)])
    lines = describe(monkeypatch, info)
    assert len(lines) == 4 and lines[0].startswith("topic plain  partitions 2")
    assert lines[2].split()[:5] == ["0", "shard-0", "0", "5", "100"]
    assert not any("tiered" in line or "remote" in line for line in lines[1:])


def test_the_topic_id_is_printed_after_the_name_as_kafka_topics_prints_it(monkeypatch):
    # Given a topic with its id
    info = protocol.TopicInfo("orders", 1, {}, [partition(0)],
                              topic_id="0123456789abcdef0123456789abcdef")
    # When it is described / Then the first line names it after the topic
    assert describe(monkeypatch, info)[0].startswith(
        "topic orders  topic id 0123456789abcdef0123456789abcdef  partitions 1")


def test_a_tiered_topic_shows_local_and_remote_starts_and_bytes_per_partition(monkeypatch):
    # Given a tiered topic: partition 0 has offsets 0..399 remote (9000 bytes) and
    # 300..999 local (7000 bytes); partition 1 has nothing remote yet
    info = protocol.TopicInfo("logs", 2, {"remote.storage.enable": "true"}, [
        partition(0, start_offset=0, end_offset=1000, size_bytes=7000, local_start_offset=300,
                  remote_start_offset=0, remote_end_offset=400, remote_bytes=9000),
        partition(1, start_offset=20, end_offset=30, size_bytes=500, local_start_offset=20)])
    # When it is described
    lines = describe(monkeypatch, info)
    # Then the partition table is as for any topic, its start the log start
    assert lines[2].split()[:5] == ["0", "shard-0", "0", "1000", "7000"]
    # And a tiered-storage table follows: local start, local bytes, remote start, end, bytes
    at = lines.index("tiered storage")
    assert lines[at + 1].split() == ["partition", "local", "start", "local", "bytes", "remote",
                                     "start", "remote", "end", "remote", "bytes"]
    assert lines[at + 2].split() == ["0", "300", "7000", "0", "400", "9000"]
    assert lines[at + 3].split() == ["1", "20", "500", "-", "-", "0"]


def test_remote_offsets_are_shown_even_if_the_config_is_not_in_the_reply(monkeypatch):
    info = protocol.TopicInfo("logs", 1, {}, [partition(
        0, end_offset=10, local_start_offset=5, remote_start_offset=0, remote_end_offset=5,
        remote_bytes=64)])
    lines = describe(monkeypatch, info)
    assert lines[lines.index("tiered storage") + 2].split() == ["0", "5", "0", "0", "5", "64"]


def test_a_remote_log_its_leader_has_not_listed_yet_is_shown_unknown_with_why(monkeypatch):
    # Given a tiered topic whose partition 0 has a new leader that has not listed the
    # store (it is down), and partition 1 whose remote log is listed
    why = ("shard-2 has not listed object storage since it began uploading rt-0: the last "
           "try failed: RemoteStorageUnavailableError: object storage unavailable")
    info = protocol.TopicInfo("rt", 2, {"remote.storage.enable": "true"}, [
        partition(0, end_offset=16927, size_bytes=9084474, remote_not_listed=why),
        partition(1, end_offset=10, size_bytes=64, local_start_offset=5,
                  remote_start_offset=0, remote_end_offset=5, remote_bytes=64)])
    # When it is described
    lines = describe(monkeypatch, info)
    # Then partition 0's remote start, end and bytes are "?", not "nothing remote"
    at = lines.index("tiered storage")
    assert lines[at + 2].split() == ["0", "0", "9084474", "?", "?", "?"]
    assert lines[at + 3].split() == ["1", "5", "64", "0", "5", "64"]
    # And a line under the table says why
    assert lines[at + 4] == f"partition 0: remote log unknown (?): {why}"


def test_an_offline_partition_shows_dashes_where_its_offsets_and_bytes_would_be(monkeypatch):
    # Given partition 1 offline (no leader: its replicas are down), known to hold records
    info = protocol.TopicInfo("t", 2, {}, [
        partition(0, end_offset=4000, size_bytes=448288, high_watermark=4000),
        protocol.PartitionInfo(1, "", replicas=["shard-2", "shard-0"],
                               in_sync_replicas=["shard-2"], leader_epoch=1)])
    # When it is described / Then its offsets, bytes and high watermark are "-", not the
    # zeros of an empty log
    lines = describe(monkeypatch, info)
    assert lines[3].split() == ["1", "OFFLINE", "-", "-", "-", "1", "-", "shard-2,shard-0",
                                "shard-2"]
    assert lines[2].split()[:7] == ["0", "shard-0", "0", "4000", "448288", "0", "4000"]


def test_a_factor_1_topic_shows_every_config_key_the_unstored_ones_at_their_defaults(
        monkeypatch):
    # Given a replication-factor-1 topic, whose stored config has no replication keys
    info = protocol.TopicInfo("plain", 1, {"retention.ms": "1000"}, [partition(0)])
    # When it is described
    shown = describe(monkeypatch, info)[0].split()
    # Then its replication keys and the fixed ones are shown with their defaults, as
    # Kafka's DescribeConfigs shows them, beside what is stored
    for entry in ("retention.ms=1000", "min.insync.replicas=1",
                  "unclean.leader.election.enable=false", "cleanup.policy=delete",
                  "compression.type=producer", "message.timestamp.type=CreateTime"):
        assert entry in shown
