"""``--json`` of ``plinth status``, ``topic list|describe`` and ``group list|describe``
(plinth/cli_json.py): one JSON document on stdout, the shape README's Operations
gives. Against a real broker, each document is what Admin returns for the same broker;
with an Admin replaced by one returning given values, a DOWN shard's bytes and an
offline partition's offsets are null, a page's cursor is in the document, and an
error leaves stdout empty."""

from __future__ import annotations

import contextlib
import json

import pytest
from click.testing import CliRunner

from plinth import cli, cli_groups, limits, protocol
from plinth.cli_json import shard_json
from plinth.client.admin import Admin
from plinth.client.producer import Producer
from plinth.errors import RequestTimedOutError
from plinth.name_pages import NamesPage, page_of
from tests.support import unique_topic


def plinth_json(url: str, *args: str) -> dict:
    """The document ``plinth ARGS --json`` prints on stdout, and nothing on stderr."""
    result = CliRunner().invoke(cli.main, ["--broker", url, *args, "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def orders(shared_broker):
    """A topic of 2 partitions holding 3 and 5 records, and a group (no members) that
    committed offset 1 on partition 0 only."""
    name, group = unique_topic("orders"), unique_topic("billing")
    with Admin(broker=shared_broker.url) as admin:
        admin.create_topic(name, partitions=2)
        with Producer(broker=shared_broker.url) as producer:
            for n in range(8):
                producer.send(name, b"%d" % n, partition=0 if n < 3 else 1)
            producer.flush(30)
        admin.reset_group_offsets(group, {(name, 0): 1})
    return name, group


# --- against a real broker ------------------------------------------------------

def test_status_json_shows_the_shards_nodes_and_routers_admin_status_returns(shared_broker):
    # Given the broker's status as Admin sees it
    with Admin(broker=shared_broker.url) as admin:
        info = admin.status()
    # When status is printed as JSON
    document = plinth_json(shared_broker.url, "status")
    # Then it holds the same shards (rates move between the two calls: only their type
    # is compared), nodes, routers and partition counts
    shards = {s["shard_id"]: s for s in document["shards"]}
    assert sorted(shards) == sorted(s.shard_id for s in info.shards)
    for shard in info.shards:
        got = shards[shard.shard_id]
        assert (got["alive"], got["address"], got["partitions"], got["node"], got["pid"]) == \
            (True, shard.address, shard.partitions, shard.node or None, shard.pid or None)
        assert isinstance(got["size_bytes"], int) and isinstance(got["records_per_s"], float)
    assert [(n["node_id"], n["address"], n["alive"]) for n in document["nodes"]] == \
        [tuple(node) for node in info.nodes]
    assert [(r["address"], r["node_address"]) for r in document["routers"]] == \
        [tuple(router) for router in info.routers]
    assert (document["under_replicated_partitions"], document["offline_partitions"]) == (0, 0)


def test_topic_describe_json_has_each_partitions_offsets_as_admin_describes_them(
        shared_broker, orders):
    name, _ = orders
    with Admin(broker=shared_broker.url) as admin:
        info = admin.describe_topic(name)
    document = plinth_json(shared_broker.url, "topic", "describe", name)
    assert (document["name"], document["topic_id"], document["partition_count"],
            document["replication_factor"]) == (name, info.topic_id, 2, 1)
    assert document["config"]["min.insync.replicas"] == "1"   # factor 1 stores none: its default
    assert {k: document["config"][k] for k in info.config} == info.config
    rows = [(p["partition"], p["leader"], p["start_offset"], p["end_offset"], p["size_bytes"],
             p["high_watermark"], p["replicas"], p["remote_start_offset"])
            for p in document["partitions"]]
    assert rows == [(p.partition, p.shard, p.start_offset, p.end_offset, p.size_bytes,
                     p.high_watermark, p.replicas, None) for p in info.partition_info]
    assert [p["end_offset"] for p in document["partitions"]] == [3, 5]


def test_topic_list_json_pages_by_its_next_after_cursor(shared_broker):
    # Given three topics of one prefix
    prefix = unique_topic("page") + "."
    names = [prefix + suffix for suffix in ("a", "b", "c")]
    with Admin(broker=shared_broker.url) as admin:
        for name in names:
            admin.create_topic(name)
    # When a page of two is listed, then the page after its cursor
    first = plinth_json(shared_broker.url, "topic", "list", "--prefix", prefix, "--limit", "2")
    second = plinth_json(shared_broker.url, "topic", "list", "--prefix", prefix, "--limit", "2",
                         "--after", first["next_after"])
    # Then the cursor is in the document (stderr stays empty), null after the last page
    assert first == {"topics": names[:2], "next_after": names[1]}
    assert second == {"topics": names[2:], "next_after": None}
    assert set(names) <= set(plinth_json(shared_broker.url, "topic", "list")["topics"])


def test_group_describe_json_has_the_committed_offsets_and_lag_admin_returns(
        shared_broker, orders):
    name, group = orders
    with Admin(broker=shared_broker.url) as admin:
        info, rows = admin.describe_group(group), admin.group_lag(group)
    document = plinth_json(shared_broker.url, "group", "describe", group)
    assert (document["group"], document["epoch"], document["members"]) == \
        (group, info.epoch, [])
    assert [(p["topic"], p["partition"], p["committed_offset"], p["end_offset"], p["lag"])
            for p in document["partitions"]] == [tuple(row) for row in rows]
    # partition 1 has no committed offset: its offset and lag are null, not 0
    assert document["partitions"] == [
        {"topic": name, "partition": 0, "committed_offset": 1, "end_offset": 3, "lag": 2,
         "member_id": None},
        {"topic": name, "partition": 1, "committed_offset": None, "end_offset": 5, "lag": None,
         "member_id": None}]


def test_group_list_json_lists_the_group_and_every_shard_answered(shared_broker, orders):
    _, group = orders
    document = plinth_json(shared_broker.url, "group", "list", "--prefix", group)
    assert document == {"groups": [group], "next_after": None, "unanswered_shards": []}


def test_an_error_with_json_is_one_error_line_on_stderr_and_nothing_on_stdout(shared_broker):
    result = CliRunner().invoke(cli.main, ["--broker", shared_broker.url, "topic", "describe",
                                           unique_topic("missing"), "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: UnknownTopicError") and \
        len(result.stderr.splitlines()) == 1


# --- from given values ------------------------------------------------------------

def with_admin(monkeypatch, admin, args: list[str]):
    """``plinth ARGS`` run with ``admin`` as every command's Admin."""
    for module, name in ((cli, "_admin"), (cli_groups, "admin_for")):
        monkeypatch.setattr(module, name, lambda ctx: contextlib.nullcontext(admin))
    return CliRunner().invoke(cli.main, args)


class DownShardAdmin:
    """shard-1 is DOWN: it did not answer status, so its bytes and rates came as 0 (it
    holds 1,148,440 bytes)."""

    def status(self):
        return protocol.StatusInfo([("n" * 40, "10.0.0.1", True)], [
            protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7500", True, 3, 2048, 10.0, 900.0,
                                 node="a", pid=4242),
            protocol.ShardStatus("shard-1", "tcp://127.0.0.1:7501", False, 3, 0, 0.0, 0.0,
                                 node="a", direct_address="tcp://127.0.0.1:7601")],
            [("tcp://127.0.0.1:7400", "10.0.0.1")], 0, 3, {"n" * 40: "a"})


def test_a_down_shards_bytes_and_rates_are_null_in_json_not_0(monkeypatch):
    result = with_admin(monkeypatch, DownShardAdmin(), ["status", "--json"])
    assert result.exit_code == 0, result.output
    up, down = json.loads(result.stdout)["shards"]
    assert (up["size_bytes"], up["records_per_s"], up["pid"]) == (2048, 10.0, 4242)
    assert (down["alive"], down["partitions"], down["direct_address"]) == \
        (False, 3, "tcp://127.0.0.1:7601")
    for key in ("size_bytes", "records_per_s", "bytes_per_s", "records_out_per_s",
                "bytes_out_per_s", "requests_direct", "requests_via_router", "remote_bytes",
                "upload_lag_bytes", "upload_lag_s", "upload_errors", "pid",
                "remote_partitions_not_listed", "partitions_appends_failing"):
        assert down[key] is None, key


def test_an_offline_partitions_offsets_and_bytes_are_null(monkeypatch):
    class OfflineAdmin:
        def describe_topic(self, name):
            return protocol.TopicInfo(name, 1, {}, [protocol.PartitionInfo(
                0, "", start_offset=0, end_offset=0, replicas=["shard-0", "shard-1"],
                leader_epoch=4)])

    result = with_admin(monkeypatch, OfflineAdmin(), ["topic", "describe", "pay", "--json"])
    partition = json.loads(result.stdout)["partitions"][0]
    assert (partition["leader"], partition["leader_epoch"]) == (None, 4)
    assert [partition[k] for k in ("start_offset", "end_offset", "size_bytes", "high_watermark",
                                   "local_start_offset")] == [None] * 5


def test_a_remote_log_not_listed_yet_has_null_remote_fields_and_says_why(monkeypatch):
    # Given a tiered partition whose leader has not listed the store yet
    class NotListedAdmin:
        def describe_topic(self, name):
            return protocol.TopicInfo(name, 1, {"remote.storage.enable": "true"}, [
                protocol.PartitionInfo(0, "shard-2", end_offset=9, size_bytes=900,
                                       remote_not_listed="shard-2 has not listed ...")])

    # When it is described with --json
    result = with_admin(monkeypatch, NotListedAdmin(), ["topic", "describe", "rt", "--json"])
    partition = json.loads(result.stdout)["partitions"][0]
    # Then its remote fields are null (unknown), not 0, and the reason is given
    assert [partition[k] for k in ("remote_start_offset", "remote_end_offset",
                                   "remote_bytes")] == [None] * 3
    assert partition["remote_not_listed"] == "shard-2 has not listed ..."
    assert partition["size_bytes"] == 900


GROUPS = [f"g{i:03d}" for i in range(limits.ADMIN_LIST_PAGE_NAMES_MAX + 5)]


class PagesAdmin:
    """Pages of GROUPS lacking shard-1's groups; the page after ``fail_after`` times out."""

    def __init__(self, fail_after: str | None = None):
        self.fail_after = fail_after

    def list_groups_page(self, prefix="", after="", limit=100) -> NamesPage:
        if self.fail_after is not None and after == self.fail_after:
            raise RequestTimedOutError("listGroupsPage: no reply within 30000 ms")
        page = page_of(GROUPS, prefix, after, limit)
        return NamesPage(page.names, page.more, ["shard-1"])


def test_group_list_json_has_the_cursor_and_the_unanswered_shards(monkeypatch):
    result = with_admin(monkeypatch, PagesAdmin(), ["group", "list", "--limit", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"groups": GROUPS[:3], "next_after": GROUPS[2],
                                         "unanswered_shards": ["shard-1"]}
    # the warning stays on stderr; the "# more:" hint is the document's next_after
    assert result.stderr.startswith("# not answered: shard-1") and "# more" not in result.stderr


def test_a_list_whose_second_page_fails_prints_no_partial_json(monkeypatch):
    # Given a walk of every group whose second page times out
    admin = PagesAdmin(fail_after=GROUPS[limits.ADMIN_LIST_PAGE_NAMES_MAX - 1])
    # When the groups are listed as JSON
    result = with_admin(monkeypatch, admin, ["group", "list", "--json"])
    # Then the error is its one line, and stdout has no first page
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: RequestTimedOutError")


def test_a_down_shards_json_says_why_it_is_down_and_an_up_ones_null():
    down = protocol.ShardStatus("shard-1", "tcp://127.0.0.1:7501", False, 3, 0, 0.0, 0.0,
                                down_reason="restarting: died 101 times, next start in 40 s")
    assert shard_json(down)["down_reason"] == "restarting: died 101 times, next start in 40 s"
    up = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7500", True, 3, 0, 0.0, 0.0)
    assert shard_json(up)["down_reason"] is None
