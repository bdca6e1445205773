"""The controller without Ray: topics, the shard count across restarts, and a data dir
written by main, on real shard actors reached in process and a real disk
(broker_without_ray.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import replace

import pytest
import ray.exceptions

from plinth import limits, protocol, topics
from plinth.control import placement
from plinth.control.controller import Controller
from plinth.errors import (InvalidConfigError, InvalidTopicError, RequestTimedOutError,
                           TopicExistsError, UnavailableError, UnknownTopicError)
from plinth.version import VERSION
from tests.control.broker_without_ray import MAIN_DATA_DIR, THREE, TWO, topic_that_moves
from tests.in_process_shards import ONE_NODE, InProcessShards
from tests.shard_requests import committed_offsets, produce
from tests.support import unique_topic


def test_a_created_topic_is_placed_by_rendezvous_hashing_opened_on_its_shards_and_saved(brokers):
    # Given a broker with two shards
    broker = brokers(2)
    # When a topic with 8 partitions is created
    info = broker.controller.create_topic("orders", 8, {"retention.ms": "1000"})
    # Then each partition is owned by its rendezvous shard, which serves it with the config
    owners = placement.place_topic("orders", 8, TWO)
    assert list(broker.controller.routing().owners["orders"]) == owners
    for shard_id in TWO:
        manifest = broker.manifest(shard_id)
        assert sorted(pid.partition for pid in manifest.partitions) == \
            [p for p in range(8) if owners[p] == shard_id]
        assert all(spec.config["retention.ms"] == "1000" for spec in manifest.partitions.values())
        assert manifest.partition_counts == {"orders": 8}
    # And the topic is in the metadata on disk, and takes writes
    assert broker.metadata_on_disk().topics["orders"].placement == owners
    assert info.config["retention.ms"] == "1000" and info.partitions == 8
    assert broker.produce("orders", 5, [b"a", b"b"]) == 0


def test_a_topic_a_shard_fails_to_open_is_not_created(brokers):
    # Given a shard that is down for its next call
    broker = brokers(2)
    broker.shards.handles["shard-1"].fail_next("open_partitions", ray.exceptions.ActorDiedError())
    # When a topic with partitions on both shards is created, Then it fails
    with pytest.raises(UnavailableError, match="shard-1 is down"):
        broker.controller.create_topic("orders", 8, {})
    # And the topic exists nowhere: not listed, not on disk; the shard that opened its
    # partitions deleted them again (else they would open at its every restart)
    assert broker.controller.list_topics() == []
    assert "orders" not in broker.metadata_on_disk().topics
    assert [pid for pid in broker.manifest("shard-0").partitions if pid.topic == "orders"] == []
    assert list((broker.data_dir / "shards" / "shard-0").glob("orders-*")) == []
    # And once the shard is back it can be created, once
    assert broker.controller.create_topic("orders", 8, {}).partitions == 8
    with pytest.raises(TopicExistsError, match="topic 'orders' already exists"):
        broker.controller.create_topic("orders", 8, {})


def test_a_topic_whose_name_differs_from_anothers_only_in_dot_and_underscore_is_not_created(
        brokers):
    # Given a broker with a topic "pay.ments"
    broker = brokers(1)
    broker.controller.create_topic("pay.ments", 1, {})
    # When "pay_ments" is created, alone or beside another new topic / Then it is refused,
    # as Kafka refuses it, and neither topic of the request is created
    with pytest.raises(InvalidTopicError, match="'pay_ments' collides with an existing topic"):
        broker.controller.create_topic("pay_ments", 1, {})
    with pytest.raises(InvalidTopicError, match="'pay_ments' collides"):
        broker.controller.create_topics([protocol.NewTopic("fresh", 1, {}),
                                         protocol.NewTopic("pay_ments", 1, {})])
    assert [t.name for t in broker.controller.list_topics()] == ["pay.ments"]


def test_a_growth_a_shard_fails_to_open_changes_nothing_and_leaves_no_partition_behind(brokers):
    # Given a topic of 2 partitions, and a shard that is down for its next call
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    broker.shards.handles["shard-1"].fail_next("open_partitions", ray.exceptions.ActorDiedError())
    # When it is grown to 8, with new partitions on both shards / Then it fails
    assert set(placement.place_topic("orders", 8, TWO)[2:]) == set(TWO)
    with pytest.raises(UnavailableError, match="shard-1 is down"):
        broker.controller.add_partitions("orders", 8)
    # And it still has 2 partitions, and no shard keeps one of the 6 new ones
    assert broker.controller.describe_topic("orders").partitions == 2
    for shard_id in TWO:
        assert all(pid.partition < 2 for pid in broker.manifest(shard_id).partitions)
        assert {path.name for path in (broker.data_dir / "shards" / shard_id).glob("orders-*")} \
            <= {"orders-0", "orders-1"}


def test_an_altered_config_reaches_every_shard_that_holds_a_range_of_the_topic(brokers):
    # Given a topic one of whose partitions moved to a third shard
    broker = brokers(2)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    moves = broker.controller.add_shards(1)
    # When its retention is changed
    broker.controller.alter_topic(topic, {"retention.ms": "5000"})
    # Then every shard serving any range of it, sealed or not, has the new config
    holders = {m.from_shard for m in moves} | {m.to_shard for m in moves}
    for shard_id in holders:
        specs = [s for s in broker.manifest(shard_id).partitions.values() if s.topic == topic]
        assert specs and all(s.config["retention.ms"] == "5000" for s in specs)
    assert broker.metadata_on_disk().topics[topic].config["retention.ms"] == "5000"


def test_a_deleted_config_key_goes_back_to_its_default_on_the_shards_and_on_disk(brokers):
    broker = brokers(1)
    topic = unique_topic("delete-config")
    created = broker.controller.create_topic(topic, 1, {"retention.ms": "5000"})
    default = created.config["retention.bytes"]
    broker.controller.alter_topic(topic, {"retention.bytes": "1048576"})
    # When retention.ms is deleted and retention.bytes changed in one alter
    info = broker.controller.alter_topic(topic, {"retention.bytes": default}, ("retention.ms",))
    # Then retention.ms holds its default again, everywhere the config lives
    assert info.config["retention.ms"] == str(topics.TOPIC_CONFIG_KEYS["retention.ms"][2])
    assert broker.metadata_on_disk().topics[topic].config == info.config
    specs = [s for s in broker.manifest("shard-0").partitions.values() if s.topic == topic]
    assert specs and all(s.config == info.config for s in specs)


def test_an_alter_logs_each_key_old_to_new_and_each_deleted_key_back_at_its_default(
        brokers, caplog):
    # Given a topic with retention.ms and retention.bytes set
    broker = brokers(1)
    topic = unique_topic("audit")
    created = broker.controller.create_topic(topic, 1, {"retention.ms": "5000",
                                                        "retention.bytes": "1048576"})
    default_ms = str(topics.TOPIC_CONFIG_KEYS["retention.ms"][2])
    # When one alter deletes retention.ms and changes retention.bytes
    with caplog.at_level("INFO", logger="plinth.control.controller"):
        broker.controller.alter_topic(topic, {"retention.bytes": "2097152"}, ("retention.ms",))
        broker.controller.alter_topic(topic, {"retention.bytes": "2097152"})
    # Then the audit line names both, with the old and new values (it logged "{}" for a
    # --delete-config alone), and an alter that changes nothing says so
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("altered")]
    assert lines == [
        f"altered topic {topic}: retention.bytes '1048576' -> '2097152'; retention.ms reset "
        f"to its default '{default_ms}' (was '5000')",
        f"altered topic {topic}: nothing changed"]
    assert created.config["retention.ms"] == "5000"


def test_deleting_an_unknown_key_or_one_also_set_is_refused_and_changes_nothing(brokers):
    broker = brokers(1)
    topic = unique_topic("delete-config")
    before = broker.controller.create_topic(topic, 1, {"retention.ms": "5000"}).config
    with pytest.raises(InvalidConfigError, match="cannot delete unknown config retention.hours"):
        broker.controller.alter_topic(topic, {}, ("retention.hours",))
    with pytest.raises(InvalidConfigError, match="retention.ms both set and deleted"):
        broker.controller.alter_topic(topic, {"retention.ms": "1"}, ("retention.ms",))
    assert broker.controller.describe_topic(topic).config == before


def test_a_deleted_topic_is_forgotten_first_and_its_logs_deleted_on_every_shard(brokers):
    # Given a topic with records on both shards
    broker = brokers(2)
    broker.controller.create_topic("orders", 8, {})
    for partition in range(8):
        broker.produce("orders", partition, [b"x"])
    # When it is deleted
    broker.controller.delete_topic("orders")
    # Then it is gone from the metadata, from every manifest and from disk
    assert broker.metadata_on_disk().topics == {}
    for shard_id in TWO:
        assert broker.manifest(shard_id).partitions == {}
        assert list((broker.data_dir / "shards" / shard_id).glob("orders-*")) == []
    with pytest.raises(UnknownTopicError):
        broker.controller.describe_topic("orders")


def test_a_restart_keeps_the_shard_count_changed_since_the_command_line(brokers):
    # Given a broker started with 2 shards that grew to 3
    brokers(2).controller.add_shards(1)
    # When it restarts with --shards 2
    broker = brokers(2)
    # Then it runs three shards
    assert broker.controller.routing().shard_ids == tuple(THREE)


def test_a_restart_with_another_shard_count_warns_in_the_start_report_for_the_server(brokers):
    # Given a broker started with 2 shards that grew to 3
    first = brokers(2)
    first.controller.add_shards(1)
    # When it restarts with --shards 1
    report = brokers(1).controller.start_report()
    # Then the start report carries the warning that plinth serve prints on its stderr
    # (it was only in <data dir>/logs/controller.log)
    assert report.warnings == (f"{first.data_dir / 'metadata.json'} has 3 shards, kept: "
                               f"--shards 1 applies to a new data directory only (use plinth "
                               f"shards add or remove to change the count)",)
    # And a start as the metadata says warns of nothing
    assert brokers(3).controller.start_report().warnings == ()


def test_a_new_data_dir_without_a_shard_count_gets_the_default_and_keeps_it(brokers):
    # Given a new data dir started without --shards on one node where Ray schedules 4 CPUs
    four_cpus = [replace(ONE_NODE[0], cpus=4)]
    # Then it gets a shard per CPU but one, whatever this machine's own CPU count
    assert brokers(None, four_cpus).controller.routing().shard_ids == tuple(THREE)
    # And when it restarts without --shards on a node with more CPUs, it keeps that count
    assert brokers(None, [replace(ONE_NODE[0], cpus=8)]).controller.routing().shard_ids == \
        tuple(THREE)


def test_a_shard_count_out_of_range_is_refused(tmp_path):
    with pytest.raises(InvalidConfigError, match="--shards 0 is outside 1..256"):
        Controller(str(tmp_path), 0, start_shard=InProcessShards().start_shard, nodes=lambda: ONE_NODE)


def test_a_data_dir_written_by_main_starts_and_serves_what_it_held(brokers, tmp_path,
                                                                   monkeypatch, caplog):
    # Given a data dir main wrote (two shards, a third added then removed, records, a
    # group), of format version 1
    data_dir = tmp_path / "from-main"
    shutil.copytree(MAIN_DATA_DIR, data_dir)
    raw = json.loads((data_dir / "metadata.json").read_text())
    expected = json.loads((data_dir / "expected.json").read_text())
    assert raw["version"] == 1
    # (the version metadata.json says as each shard starts, reopening its partitions)
    versions_at_shard_start = []
    start_shard = InProcessShards.start_shard

    def start_shard_noting_the_version(shards, options):
        on_disk = json.loads((data_dir / "metadata.json").read_text())["version"]
        versions_at_shard_start.append((options.shard_id, on_disk))
        return start_shard(shards, options)

    monkeypatch.setattr(InProcessShards, "start_shard", start_shard_noting_the_version)
    # When the controller starts on it
    with caplog.at_level("WARNING", logger="plinth.control.controller"):
        broker = brokers(None, data_dir=data_dir)
    # Then metadata.json was saved as version 2 before any shard started
    assert versions_at_shard_start == [("shard-0", 2), ("shard-1", 2), ("shard-2", 2)]
    # And the start said so once, naming the file, both versions and the way back
    upgrades = [r.getMessage() for r in caplog.records if "upgraded" in r.getMessage()]
    assert upgrades == [
        f"{data_dir / 'metadata.json'}: upgraded the data directory's format from version 1 "
        f"to 2 (Plinth {VERSION}); Plinth builds before 0.2.0 refuse this data dir from now "
        f"on (back up the data dir before upgrading to be able to go back)"]
    assert broker.controller.start_report().warnings == tuple(upgrades)
    # Then it has the same shards and topics, each partition with its offsets, and its group
    assert list(broker.controller.routing().shard_ids) == raw["shards"]
    for name, ends in expected["end_offsets"].items():
        infos = broker.controller.describe_topic(name).partition_info
        assert [i.end_offset for i in infos] == ends
        assert [broker.produce(name, p, [b"new"]) for p in range(len(ends))] == ends
    group, offsets = expected["group"], expected["committed"]
    coordinator = placement.shard_for_group(group, raw["shards"])
    assert committed_offsets(broker.address(coordinator), group) == \
        {(t, int(p)): o for t, per_topic in offsets.items() for p, o in per_topic.items()}
    # And the draining shard serves its older ranges for reads only
    assert raw["draining"] == ["shard-2"]
    older = [(name, int(p)) for name, t in raw["topics"].items() for p, ranges in t["ranges"].items()
             if any(shard == "shard-2" for _, shard in ranges)]
    assert older
    for name, partition in older:
        with pytest.raises(UnavailableError, match="moved away"):
            produce(broker.address("shard-2"), name, partition, [b"late"])
    # And a second start, on version 2, upgrades nothing and says nothing of it
    caplog.clear()
    with caplog.at_level("WARNING", logger="plinth.control.controller"):
        broker = brokers(None, data_dir=data_dir)
    assert not [r for r in caplog.records if "upgraded" in r.getMessage()]
    assert broker.controller.start_report().warnings == ()
    assert json.loads((data_dir / "metadata.json").read_text())["version"] == 2


def test_a_data_dir_of_a_later_format_version_is_refused_before_anything_starts(tmp_path):
    # Given a data dir of main's whose metadata.json a later Plinth wrote (version 3)
    data_dir = tmp_path / "from-later"
    shutil.copytree(MAIN_DATA_DIR, data_dir)
    path = data_dir / "metadata.json"
    text = path.read_text().replace('"version": 1', '"version": 3')
    path.write_text(text)
    manifests = {p: p.read_bytes() for p in data_dir.glob("shards/*/manifest.json")}
    # When a controller is made on it / Then it is refused, naming the file and both versions
    shards = InProcessShards()
    with pytest.raises(InvalidConfigError) as refused:
        Controller(str(data_dir), None, start_shard=shards.start_shard, nodes=lambda: ONE_NODE)
    assert str(refused.value).startswith(
        f"{path}: metadata version 3 was written by a newer Plinth; this one ({VERSION}) "
        f"reads versions up to 2")
    # And no shard started, and metadata.json and the manifests are as they were
    assert shards.handles == {}
    assert path.read_text() == text
    assert {p: p.read_bytes() for p in data_dir.glob("shards/*/manifest.json")} == manifests


def test_an_add_of_shards_one_of_which_does_not_start_adds_none_and_stops_those_started(brokers):
    # Given a broker of 2 shards, whose shard-3 will not say where it listens once started
    broker = brokers(2)
    broker.shards.when_started("shard-3", lambda handle: handle.fail_next(
        "address", ray.exceptions.ActorDiedError()))
    # When 2 shards are added
    with pytest.raises(UnavailableError, match=r"shard-3 did not start .* none was added "
                                               r"\(the 2 shards started for it were stopped\)"):
        broker.controller.add_shards(2)
    # Then neither is routed or saved, and both actors were stopped, shard-2's too
    assert broker.controller.routing().shard_ids == tuple(TWO)
    assert broker.shards.find_shard("shard-2") is None
    assert broker.shards.find_shard("shard-3") is None
    assert set(broker.metadata_on_disk().shard_nodes) <= set(TWO)
    # And a later add starts them afresh, and they serve
    broker.controller.add_shards(2)
    assert broker.controller.routing().shard_ids == ("shard-0", "shard-1", "shard-2", "shard-3")
    assert broker.shards.find_shard("shard-3") is not None


@pytest.mark.parametrize("count", [limits.SHARDS_MAX - 1, 100_000])
def test_an_add_of_shards_past_shards_max_is_refused_before_any_shard_starts(brokers, count):
    # Given a broker of 2 shards
    broker = brokers(2)
    # When more shards are added than SHARDS_MAX leaves room for / Then it is refused,
    # naming the option, the count asked, the count there is and the limit
    with pytest.raises(InvalidConfigError) as refused:
        broker.controller.add_shards(count)
    assert str(refused.value) == (
        f"cannot add {count} shards (count {count}) to the 2 there are: at most "
        f"{limits.SHARDS_MAX} shards in all (SHARDS_MAX), so count may be at most "
        f"{limits.SHARDS_MAX - 2}; no shard was started")
    # And no shard was started, routed or saved
    assert broker.shards.find_shard("shard-2") is None
    assert broker.controller.routing().shard_ids == tuple(TWO)
    assert broker.metadata_on_disk().shards == list(TWO)


def test_a_change_of_shards_is_refused_at_once_while_a_shard_does_not_answer(brokers):
    # Given a topic some of whose partitions would move, and shard-1 silent
    broker = brokers(2)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    owners = broker.controller.routing().owners[topic]
    silent = broker.shards.handles["shard-1"]
    # When a shard is added, or one removed, while it does not answer
    for change, call in (("add 1 shard", broker.controller.add_shards),
                         ("remove 1 shard", broker.controller.remove_shards)):
        silent.fail_next("address", RequestTimedOutError("shard-1 did not answer address"))
        # Then the change is refused, naming the shard and what to do
        with pytest.raises(UnavailableError, match=f"cannot {change}: shard-1 did not answer "
                                                   f"within 5 s .* retry once it answers"):
            call(1)
    # And nothing was changed or started
    assert broker.metadata_on_disk().shards == TWO
    assert broker.controller.routing().owners[topic] == owners
    assert broker.shards.find_shard("shard-2") is None
    # And once it answers, the shard is added
    broker.controller.add_shards(1)
    assert broker.controller.routing().shard_ids == tuple(THREE)


def orders_on(broker, shard_id: str) -> list:
    """The partitions of topic "orders" in ``shard_id``'s manifest."""
    return sorted(pid.partition for pid in broker.manifest(shard_id).partitions
                  if pid.topic == "orders")


def restart_shard_1(broker) -> None:
    """shard-1's process restarts and, once up, announces itself (as a Ray shard actor
    does: in process, the calls made while the new actor starts fail)."""
    handle = broker.shards.handles["shard-1"]
    handle.restart()
    broker.controller.shard_started("shard-1", handle.actor.address())


def deleted_without_shard_1(broker) -> str:
    """Topic "orders" (8 partitions, on both shards) deleted while shard-1 dies before
    it runs the delete; returns the deleted topic's id."""
    broker.controller.create_topic("orders", 8, {})
    topic_id = broker.controller.describe_topic("orders").topic_id
    broker.shards.handles["shard-1"].fail_next("delete_partitions",
                                                ray.exceptions.ActorDiedError())
    with pytest.raises(UnavailableError, match="topic 'orders' is deleted, but not yet every"):
        broker.controller.delete_topic("orders")
    return topic_id


def test_a_shard_that_died_before_deleting_a_topic_deletes_its_partitions_when_it_restarts(
        brokers):
    # Given a topic deleted while shard-1 died before it ran the delete
    broker = brokers(2)
    topic_id = deleted_without_shard_1(broker)
    # Then the delete is owed, on disk, and shard-1 still holds the partitions
    [owed] = broker.metadata_on_disk().deletes_owed["shard-1"]
    assert (owed.topic, owed.topic_id, owed.partitions) == ("orders", topic_id,
                                                            tuple(orders_on(broker, "shard-1")))
    assert "shard-0" not in broker.metadata_on_disk().deletes_owed and orders_on(broker, "shard-0") == []
    # When shard-1 restarts (it opens them again from its manifest)
    restart_shard_1(broker)
    # Then it is sent the delete again: its partitions and their directories are gone,
    # and nothing is owed any more
    assert orders_on(broker, "shard-1") == []
    assert list((broker.data_dir / "shards" / "shard-1").glob("orders-*")) == []
    assert broker.metadata_on_disk().deletes_owed == {}


def test_deletes_owed_when_the_server_restarts_are_sent_at_its_start(brokers):
    broker = brokers(2)
    deleted_without_shard_1(broker)
    broker = brokers(2)   # new shard actors reopen their manifests; the controller starts
    assert orders_on(broker, "shard-1") == []
    assert broker.metadata_on_disk().deletes_owed == {}


def test_an_owed_delete_never_touches_a_new_topic_of_the_same_name(brokers):
    # Given a topic deleted while shard-1 died before it ran the delete, and a topic of
    # the same name created since, with records on shard-1
    broker = brokers(2)
    deleted_without_shard_1(broker)
    new_id = broker.controller.create_topic("orders", 8, {}).topic_id
    on_shard_1 = orders_on(broker, "shard-1")
    assert on_shard_1 and broker.produce("orders", on_shard_1[0], [b"kept"]) == 0
    # When shard-1 restarts and is sent the delete it owes
    restart_shard_1(broker)
    # Then the new topic's partitions stay, with their records
    assert orders_on(broker, "shard-1") == on_shard_1
    assert {broker.manifest("shard-1").partitions[pid].topic_id
            for pid in broker.manifest("shard-1").partitions if pid.topic == "orders"} == {new_id}
    assert broker.produce("orders", on_shard_1[0], [b"more"]) == 1
    assert broker.metadata_on_disk().deletes_owed == {}


def test_a_growth_made_after_an_undone_one_keeps_its_partitions_though_their_delete_was_owed(
        brokers):
    # Given a growth undone while shard-1 fails both the open and the delete of its part
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    shard_1 = broker.shards.handles["shard-1"]
    shard_1.fail_next("open_partitions", ray.exceptions.ActorDiedError())
    shard_1.fail_next("delete_partitions", ray.exceptions.ActorDiedError())
    with pytest.raises(UnavailableError, match="shard-1 is down"):
        broker.controller.add_partitions("orders", 8)
    assert "shard-1" in broker.metadata_on_disk().deletes_owed
    # When the growth is made again, and shard-1 restarts
    assert broker.controller.add_partitions("orders", 8).partitions == 8
    assert broker.metadata_on_disk().deletes_owed == {}
    grown = [p for p in orders_on(broker, "shard-1") if p >= 2]
    restart_shard_1(broker)
    # Then its new partitions stay and take writes
    assert grown and [p for p in orders_on(broker, "shard-1") if p >= 2] == grown
    assert broker.produce("orders", grown[0], [b"a"]) == 0


def test_a_partition_whose_shard_does_not_answer_is_offline_in_describe_and_status_not_empty(
        brokers):
    # Given a topic of one copy over two shards, with a record in every partition
    broker = brokers(2)
    broker.controller.create_topic("orders", 4, {})
    owners = broker.metadata_on_disk().topics["orders"].placement
    for p in range(4):
        broker.produce("orders", p, [b"x"])
    hung = owners[0]
    # When that shard does not answer (stopped or hung: Ray still counts it alive)
    broker.shards.handles[hung].fail_next("partition_infos", ray.exceptions.ActorDiedError())
    broker.shards.handles[hung].fail_next("stats", ray.exceptions.ActorDiedError())
    described = broker.controller.describe_topic("orders").partition_info
    status = broker.controller.status()
    # Then its partitions have no leader shown (the CLI prints OFFLINE, not 0 records),
    # the others keep theirs and their offsets, and status counts them offline
    assert [p.shard for p in described] == [owner if owner != hung else "" for owner in owners]
    assert all(p.end_offset == 1 for p in described if p.shard)
    assert status.offline_partitions == owners.count(hung)


def test_status_shows_each_shards_process_and_a_silent_ones_from_its_last_announcement(brokers):
    # Given two shards (in this process: under Ray each has a ray::ShardActor of its own),
    # shard-1 having announced a restart in process 4242, and silent since
    broker = brokers(2)
    broker.controller.shard_started("shard-1", broker.address("shard-1"), "", 4242)
    broker.shards.handles["shard-1"].fail_next("stats", ray.exceptions.ActorDiedError())
    # When the status is asked
    shards = {s.shard_id: s for s in broker.controller.status().shards}
    # Then shard-0 shows the process it answered from, and shard-1, down, the one it
    # announced: the process to continue or kill
    assert (shards["shard-0"].pid, shards["shard-0"].alive) == (os.getpid(), True)
    assert (shards["shard-1"].pid, shards["shard-1"].alive) == (4242, False)


def test_a_draining_shards_row_counts_the_partitions_it_still_serves_as_its_note_does(brokers):
    # Given three shards, a topic with records on the third, which is then removed
    broker = brokers(3)
    topic = topic_that_moves(4, TWO, THREE)
    broker.controller.create_topic(topic, 4, {})
    held = [p for p in range(4) if placement.shard_for(topic, p, THREE) == "shard-2"]
    for partition in held:
        broker.produce(topic, partition, [b"a"])
    broker.controller.remove_shards(1)
    # When the status is asked
    shards = {s.shard_id: s for s in broker.controller.status().shards}
    # Then the removed shard's partitions are those whose older ranges it serves, the
    # count its drain note gives (it showed 0: it holds no current range), and the
    # others count every partition they serve
    draining = shards["shard-2"]
    assert draining.draining and draining.partitions == len(held)
    assert draining.draining_reason.startswith(f"{len(held)} partition")
    assert shards["shard-0"].partitions + shards["shard-1"].partitions == 4


def test_an_add_of_shards_waits_for_its_new_shards_only_within_its_callers_deadline(brokers):
    # Given a broker of 2 shards, whose shard-2 will not say where it listens once started
    broker = brokers(2)
    broker.shards.when_started("shard-2", lambda handle: handle.fail_next(
        "address", ray.exceptions.ActorDiedError()))
    # When a shard is added by a caller who waits 10 s more (a CLI's request timeout)
    # Then the wait for it keeps SHARD_ADD_ANSWER_MARGIN_S to answer within them
    left_s = 10 - limits.SHARD_ADD_ANSWER_MARGIN_S
    with pytest.raises(UnavailableError, match=f"shard-2 did not start within {left_s:.0f} s; "
                                               f"none was added"):
        broker.controller.run_change("add_shards", time.time() + 10, 1)
    assert broker.controller.routing().shard_ids == tuple(TWO)


def test_an_add_of_shards_with_too_little_of_its_callers_time_left_starts_none(brokers):
    broker = brokers(2)
    with pytest.raises(RequestTimedOutError, match="cannot add shards: .* s of the request's "
                                                   "timeout would be left to start them, under "
                                                   "the 5 s a shard may need; nothing was added"):
        broker.controller.run_change("add_shards", time.time() + 6, 1)
    assert broker.controller.routing().shard_ids == tuple(TWO)
    assert broker.shards.find_shard("shard-2") is None


def test_the_controller_names_the_shard_that_ran_in_a_process_its_restarts_included(brokers):
    # Given a shard that announced itself from pid 900001, then restarted in 900002
    broker = brokers(2)
    address = broker.address("shard-1")
    broker.controller.shard_started("shard-1", address, pid=900001)
    broker.controller.shard_started("shard-1", address, pid=900002)
    # Then both pids name it (Ray's death message may come after the restart), the
    # controller's own names it, and an unknown one names nothing
    assert broker.controller.process_owner(900001) == "shard-1"
    assert broker.controller.process_owner(900002) == "shard-1"
    assert broker.controller.process_owner(os.getpid()) == "controller"
    assert broker.controller.process_owner(900003) == ""


def test_a_start_that_finds_a_shards_directory_gone_says_which_partitions_came_back_empty(
        brokers, caplog):
    # Given a broker with records in every partition, stopped, and one shard's directory
    # then lost (a data dir restored without all of shards/)
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    for partition in (0, 1):
        broker.produce("orders", partition, [b"a", b"b"])
    lost_shard = broker.owner("orders", 1)
    broker.shards.stop_all()
    shutil.rmtree(broker.data_dir / "shards" / lost_shard)
    # When it starts again
    with caplog.at_level(logging.ERROR, logger="plinth.control.controller"):
        report = brokers(2).controller.start_report()
    # Then its start report (what plinth serve prints) says which partitions came back
    # empty, and what to do, once
    [line] = [w for w in report.warnings if "came back EMPTY" in w]
    assert line.startswith("1 partition(s) of one copy came back EMPTY: their directories were "
                           f"missing (orders-1 on {lost_shard}), so every record they held")
    assert "restore them from the backup" in line and str(broker.data_dir / "shards") in line
    assert [r.getMessage() for r in caplog.records if "came back EMPTY" in r.getMessage()] == [line]
    # And the next start, which finds the directory, says nothing of it
    assert not [w for w in brokers(2).controller.start_report().warnings if "EMPTY" in w]


def test_a_shard_that_restarts_while_the_broker_runs_without_its_directory_logs_it_each_time_but_the_start_report_does_not_grow(
        brokers, caplog):
    # Given a running broker with records in a partition of one shard
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    broker.produce("orders", 1, [b"a"])
    lost_shard = broker.owner("orders", 1)
    warnings_at_start = broker.controller.start_report().warnings
    # When that shard restarts twice, each time having lost its directory (its disk)
    with caplog.at_level(logging.ERROR, logger="plinth.control.controller"):
        for _ in range(2):
            broker.shards.handles[lost_shard].stop()
            shutil.rmtree(broker.data_dir / "shards" / lost_shard)
            broker.shards.handles[lost_shard].restart()
            # (its announcement came while it started: in process, said again here)
            broker.controller.shard_started(lost_shard, broker.address(lost_shard))
    # Then each restart's ERROR names the partition that came back empty
    lines = [r.getMessage() for r in caplog.records if "came back EMPTY" in r.getMessage()]
    assert len(lines) == 2 and all(f"orders-1 on {lost_shard}" in line for line in lines)
    # And the start report (read by plinth serve at start only) is as the start left it
    assert broker.controller.start_report().warnings == warnings_at_start
