"""BrokerMetadata: the controller's metadata.json, on a real disk: version 2 written,
the version 1 every earlier broker wrote read as before; a later version is refused
as a newer Plinth's, damaged files by name, and broken metadata is never written."""

from __future__ import annotations

import json
import shutil

import pytest

from plinth import json_fragments
from plinth import limits
from plinth.control.metadata import (METADATA_VERSION, BrokerMetadata, OwedDelete, ShardRange,
                                     TopicMetadata)
from plinth.errors import CorruptDataError, InvalidConfigError
from plinth.shards.shard_handle import Leadership
from plinth.version import VERSION
from tests.control.broker_without_ray import MAIN_DATA_DIR


def metadata_with_a_moved_partition() -> BrokerMetadata:
    topic = TopicMetadata(2, {"retention.ms": "1000"}, ["shard-0", "shard-1"])
    topic.move_writes(1, 52, "shard-2")
    return BrokerMetadata(shards=["shard-0", "shard-2"], draining=["shard-1"],
                          shard_nodes={"shard-0": "node:127.0.0.1"}, topics={"orders": topic})


def test_metadata_saved_and_loaded_is_equal_and_keeps_the_documented_format(tmp_path):
    # Given metadata with a partition whose writes moved, during a group move
    metadata = metadata_with_a_moved_partition()
    metadata.groups_moving_from = ["shard-0", "shard-1"]
    path = tmp_path / "metadata.json"
    # When it is saved and loaded
    metadata.save(path)
    # Then it is the same, and the file reads as the module documents it
    assert BrokerMetadata.load(path) == metadata
    on_disk = json.loads(path.read_text())
    assert on_disk["topics"]["orders"]["ranges"] == {"1": [[0, "shard-1"], [52, "shard-2"]]}
    assert on_disk["groups_moving_from"] == ["shard-0", "shard-1"]
    assert on_disk["version"] == METADATA_VERSION == 2


def test_the_metadata_main_wrote_loads_with_every_field_and_saves_as_version_2(tmp_path):
    # Given the metadata.json of a data dir main wrote (format version 1)
    path = tmp_path / "metadata.json"
    shutil.copy(MAIN_DATA_DIR / "metadata.json", path)
    raw = json.loads(path.read_text())
    assert raw["version"] == 1
    # When it is loaded
    metadata = BrokerMetadata.load(path)
    assert metadata.file_version == 1
    # Then every value is there, typed, and saving it again writes the same JSON
    assert metadata.shards == raw["shards"] and metadata.draining == raw.get("draining", [])
    assert set(metadata.topics) == set(raw["topics"])
    for name, topic in metadata.topics.items():
        assert topic.placement == raw["topics"][name]["placement"]
        assert {str(p): [list(r) for r in ranges] for p, ranges in topic.ranges.items()} \
            == raw["topics"][name].get("ranges", {})
    assert any(topic.ranges for topic in metadata.topics.values()), "the fixture has a move"
    metadata.save(path)
    # (with the id each topic got on load: main's file predates topic ids)
    with_ids = {name: {**topic, "topic_id": metadata.topics[name].topic_id}
                for name, topic in raw["topics"].items()}
    # (and as format version 2, with nothing else changed)
    assert json.loads(path.read_text()) == {"draining": [], **raw, "topics": with_ids,
                                            "version": 2}
    assert metadata.file_version == 2


def test_a_missing_file_is_a_new_broker(tmp_path):
    assert BrokerMetadata.load(tmp_path / "metadata.json") == BrokerMetadata()


def test_a_file_without_the_keys_added_by_later_changes_loads(tmp_path):
    # Given the metadata of a broker that never changed its shards
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"version": 1, "shards": ["shard-0"], "topics": {
        "t": {"partitions": 1, "config": {}, "placement": ["shard-0"]}}}))
    # Then it loads with the empty defaults
    metadata = BrokerMetadata.load(path)
    assert (metadata.draining, metadata.shard_nodes, metadata.groups_moving_from) == ([], {}, None)
    assert metadata.topics["t"].ranges_of(0) == [ShardRange(0, "shard-0")]
    # And, from before replication, as factor 1 with controller epoch 0
    assert (metadata.topics["t"].replication_factor, metadata.topics["t"].leadership) == (1, {})
    assert metadata.controller_epoch == 0


@pytest.mark.parametrize("version", [1, 2])
def test_versions_1_and_2_are_read_and_a_save_writes_2(tmp_path, version):
    # Given a file of each version this build reads
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"version": version, "shards": ["shard-0"], "topics": {}}))
    # When it is loaded / Then it is read, and knows the version it was read as
    metadata = BrokerMetadata.load(path)
    assert (metadata.shards, metadata.file_version) == (["shard-0"], version)
    # And a save writes version 2
    metadata.save(path)
    assert json.loads(path.read_text())["version"] == 2 and metadata.file_version == 2


def test_a_later_version_is_refused_saying_a_newer_plinth_wrote_it_and_what_to_do(tmp_path):
    # Given a file of version 3, which only a later Plinth writes
    path = tmp_path / "metadata.json"
    text = json.dumps({"version": 3, "shards": [], "topics": {}})
    path.write_text(text)
    # Then loading refuses it, naming the file, both versions and this build
    with pytest.raises(InvalidConfigError) as refused:
        BrokerMetadata.load(path)
    assert str(refused.value) == (
        f"{path}: metadata version 3 was written by a newer Plinth; this one ({VERSION}) "
        f"reads versions up to 2: run the Plinth that wrote it (the data directory is "
        f"unchanged)")
    # And nothing was written
    assert path.read_text() == text and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("version", [0, "1", None, True])
def test_a_version_no_plinth_writes_is_refused_as_damage(tmp_path, version):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps({"version": version, "shards": [], "topics": {}}))
    with pytest.raises(InvalidConfigError, match=f"metadata version {version!r} is not one "
                                                 f"Plinth writes .* the file is damaged"):
        BrokerMetadata.load(path)


def metadata_with_a_replicated_topic() -> BrokerMetadata:
    replicas = ("shard-1", "shard-0", "shard-2")
    record = Leadership(replicas, "shard-1", 2, ("shard-1", "shard-2"), 5, 3, ("shard-0",))
    topic = TopicMetadata(1, {"min.insync.replicas": "2"}, ["shard-1"], {}, 3, {0: record})
    return BrokerMetadata(shards=["shard-0", "shard-1", "shard-2"], topics={"events": topic},
                          controller_epoch=3)


def test_a_replicated_topic_saves_its_factor_and_records_and_the_controller_epoch(tmp_path):
    # Given metadata with a factor-3 topic whose leader changed twice
    metadata = metadata_with_a_replicated_topic()
    path = tmp_path / "metadata.json"
    # When it is saved and loaded
    metadata.save(path)
    # Then it is the same, and the file reads as the module documents it
    assert BrokerMetadata.load(path) == metadata
    on_disk = json.loads(path.read_text())
    assert on_disk["controller_epoch"] == 3
    assert on_disk["topics"]["events"]["replication_factor"] == 3
    assert on_disk["topics"]["events"]["leadership"] == {"0": {
        "replicas": ["shard-1", "shard-0", "shard-2"], "leader": "shard-1", "leader_epoch": 2,
        "in_sync": ["shard-1", "shard-2"], "partition_epoch": 5, "controller_epoch": 3,
        "eligible": ["shard-0"]}}
    # And every replica serves the partition with its record; the leader is its writer
    topic = metadata.topics["events"]
    specs = topic.specs_of("events", 0)
    assert sorted(specs) == ["shard-0", "shard-1", "shard-2"]
    assert all(spec.leadership == topic.leadership[0] and not spec.sealed for spec in specs.values())
    assert topic.leader_of(0) == "shard-1" and topic.replicas_of(0) == ("shard-1", "shard-0", "shard-2")


def test_a_factor_1_topic_is_written_exactly_as_before_replication(tmp_path):
    # Given a factor-1 topic, and no controller start yet
    metadata = metadata_with_a_moved_partition()
    # When it is written / Then it has no replication key at all
    value = metadata.to_json()
    assert set(value["topics"]["orders"]) == {"partitions", "config", "placement", "ranges",
                                              "topic_id"}   # (ids came later, for every topic)
    assert "controller_epoch" not in value
    assert metadata.topics["orders"].replicas_of(0) == ("shard-0",)


def broken_replicated(change) -> dict:
    value = metadata_with_a_replicated_topic().to_json()
    change(value, value["topics"]["events"], value["topics"]["events"]["leadership"]["0"])
    return value


@pytest.mark.parametrize("value,problem", [
    (broken_replicated(lambda m, t, r: r.update(replicas=["shard-1", "shard-0"], in_sync=["shard-1"],
                                                eligible=[])),
     "partition 0 has 2 replicas, not its replication factor 3"),
    (broken_replicated(lambda m, t, r: r.update(leader="shard-0")), "must be in sync"),
    (broken_replicated(lambda m, t, r: r["replicas"].__setitem__(2, "shard-9")), "must be replicas"),
    (broken_replicated(lambda m, t, r: r.update(replicas=["shard-2", "shard-0", "shard-1"])),
     "preferred leader 'shard-2' is not its placement 'shard-1'"),
    (broken_replicated(lambda m, t, r: r.update(controller_epoch=4)),
     "controller epoch 4 is newer than the controller's 3"),
    (broken_replicated(lambda m, t, r: t.pop("leadership")), "leadership records for partitions []"),
    (broken_replicated(lambda m, t, r: t.update(replication_factor=1)),
     "replication factor 1 but leadership records"),
    (broken_replicated(lambda m, t, r: t.update(replication_factor=9)), "replication factor 9, outside"),
    (broken_replicated(lambda m, t, r: t.update(replication_factor="3")), "not broker metadata"),
    (broken_replicated(lambda m, t, r: r.update(leader_epoch=-1)), "leader_epoch -1 is not an int >= 0"),
    (broken_replicated(lambda m, t, r: m.update(controller_epoch="1")), "not broker metadata"),
])
def test_damaged_replication_metadata_is_refused_with_the_problem(tmp_path, value, problem):
    # Given a metadata file whose replication keys break their rules
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(value))
    # When it is loaded, Then the error names the file and the problem
    with pytest.raises(CorruptDataError) as raised:
        BrokerMetadata.load(path)
    assert str(path) in str(raised.value) and problem in str(raised.value)


def broken(change) -> dict:
    value = metadata_with_a_moved_partition().to_json()
    change(value, value["topics"]["orders"])
    return value


@pytest.mark.parametrize("value,problem", [
    (broken(lambda m, t: t.update(partitions=3)), "3 partitions but 2 placed"),
    (broken(lambda m, t: t.update(partitions=0, placement=[], ranges={})), "0 partitions"),
    (broken(lambda m, t: t["placement"].__setitem__(0, "shard-9")), "unknown shard 'shard-9'"),
    (broken(lambda m, t: t["ranges"]["1"].reverse()), "not >= 0 and ascending"),
    (broken(lambda m, t: t["ranges"].update({"1": [[0, "shard-1"]]})), "the last range is on 'shard-1'"),
    (broken(lambda m, t: t["ranges"].update({"5": [[0, "shard-0"]]})), "partition 5: ranges of a"),
    (broken(lambda m, t: t["ranges"]["1"].insert(0, [0, "shard-7"])), "a range on unknown shard 'shard-7'"),
    (broken(lambda m, t: m.update(draining=["shard-0", "shard-1"])), "both taking writes and draining"),
    (broken(lambda m, t: m.update(shards=["shard-0", "shard-0"])), "distinct ids"),
    (broken(lambda m, t: t.update(partitions="2")), "not broker metadata"),
    (broken(lambda m, t: t["ranges"]["1"].append([True, "shard-2"])), "not broker metadata"),
    (broken(lambda m, t: m.pop("topics")), "not broker metadata"),
    (broken(lambda m, t: m.update(tier_store=7)), "tier store 7 is not a URL"),
    (broken(lambda m, t: m.update(tier_store="")), "tier store '' is not a URL"),
    (broken(lambda m, t: m.update(deletes_owed={"shard-1": [["old", "nothex", [0]]]})),
     "'nothex' is not a topic id"),
    (broken(lambda m, t: m.update(deletes_owed={"shard-1": [["old", "a" * 32, []]]})),
     "owed delete of 'old': partitions []"),
    (broken(lambda m, t: m.update(deletes_owed={"shard-1": [["old", "a" * 32, [-1]]]})),
     "owed delete of 'old': partitions [-1]"),
])
def test_damaged_metadata_is_refused_with_its_path_and_the_problem(tmp_path, value, problem):
    # Given a metadata file whose content is inconsistent
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(value))
    # When it is loaded, Then the error names the file and the first problem
    with pytest.raises(CorruptDataError) as raised:
        BrokerMetadata.load(path)
    assert str(path) in str(raised.value) and problem in str(raised.value)


def test_the_tiered_topics_store_is_saved_and_loaded_and_absent_when_none(tmp_path):
    path = tmp_path / "metadata.json"
    metadata = metadata_with_a_moved_partition()
    metadata.save(path)
    assert "tier_store" not in json.loads(path.read_text())
    assert BrokerMetadata.load(path).tier_store is None
    metadata.tier_store = "s3://bucket/plinth"
    metadata.save(path)
    assert json.loads(path.read_text())["tier_store"] == "s3://bucket/plinth"
    assert BrokerMetadata.load(path) == metadata


def saved_then_broken(path) -> tuple[BrokerMetadata, bytes]:
    """Good metadata saved at ``path``, then changed by a bug that places a partition on
    a shard that does not exist; and the file's bytes."""
    metadata = metadata_with_a_moved_partition()
    metadata.save(path)
    before = path.read_bytes()
    metadata.topics["orders"].placement[0] = "shard-9"
    return metadata, before


def test_broken_metadata_is_never_written(tmp_path):
    # Given good metadata on disk, then a bug that places a partition on a shard that
    # does not exist
    path = tmp_path / "metadata.json"
    metadata, before = saved_then_broken(path)
    # Then saving refuses, and the file on disk is untouched
    with pytest.raises(AssertionError, match="unknown shard 'shard-9'"):
        metadata.save(path)
    assert path.read_bytes() == before


def test_a_save_after_a_refused_one_checks_the_unchanged_broken_topic_again(tmp_path):
    # Given metadata whose save was refused for a partition on an unknown shard
    path = tmp_path / "metadata.json"
    metadata, before = saved_then_broken(path)
    with pytest.raises(AssertionError, match="unknown shard 'shard-9'"):
        metadata.save(path)
    # When another topic is added, the broken one unchanged since that save
    metadata.topics["events"] = TopicMetadata(1, {}, ["shard-0"])
    # Then the next save is refused too, and the file on disk is untouched
    with pytest.raises(AssertionError, match="unknown shard 'shard-9'"):
        metadata.save(path)
    assert path.read_bytes() == before


def test_a_shard_removed_under_an_unchanged_topic_is_refused(tmp_path):
    # Given saved metadata with a topic on shard-0
    path = tmp_path / "metadata.json"
    metadata = metadata_with_a_moved_partition()
    metadata.save(path)
    # When a bug forgets shard-0 while the topic still has a partition on it
    metadata.shards = ["shard-2"]
    # Then saving refuses, though the topic itself did not change
    with pytest.raises(AssertionError, match="unknown shard 'shard-0'"):
        metadata.save(path)


def test_a_save_told_the_changed_topics_encodes_only_those_and_writes_them_all(
        tmp_path, monkeypatch):
    # Given saved metadata of 30 topics
    path = tmp_path / "metadata.json"
    metadata = BrokerMetadata(shards=["shard-0"])
    metadata.topics = {f"t{i}": TopicMetadata(1, {"retention.ms": str(i)}, ["shard-0"])
                       for i in range(30)}
    metadata.save(path)
    encoded = []
    real_dumps = json_fragments._dumps
    monkeypatch.setattr(json_fragments, "_dumps",
                        lambda value: encoded.append(value) or real_dumps(value))
    # When one topic is added, one altered and one deleted, and the save is told so
    metadata.topics["new"] = TopicMetadata(2, {"retention.ms": "100"}, ["shard-0", "shard-0"])
    metadata.topics["t3"].config = {"retention.ms": "300"}
    del metadata.topics["t4"]
    metadata.save(path, topics_changed=["new", "t3", "t4"])
    # Then the file holds every topic as it is, and only the two were encoded
    assert BrokerMetadata.load(path) == metadata
    topics_encoded = [v for v in encoded if isinstance(v, dict) and "placement" in v]
    assert sorted(t["config"]["retention.ms"] for t in topics_encoded) == ["100", "300"]
    assert metadata.topics_encoded_again == {"new", "t3"}


def test_a_save_told_too_few_topics_is_refused_by_the_suites_check(tmp_path):
    # Given saved metadata (the test suite checks every save told its changed topics)
    path = tmp_path / "metadata.json"
    metadata = metadata_with_a_moved_partition()
    metadata.save(path)
    before = path.read_bytes()
    # When a topic changes but the save is told of another
    metadata.topics["orders"].config = {"retention.ms": "5"}
    metadata.topics["events"] = TopicMetadata(1, {}, ["shard-0"])
    # Then it refuses, naming the topic it was not told of, and writes nothing
    with pytest.raises(AssertionError, match=r"missed changes, first \['topics/orders'\]"):
        metadata.save(path, topics_changed=["events"])
    assert path.read_bytes() == before


def test_the_first_save_of_loaded_metadata_writes_every_topic_whatever_it_is_told(tmp_path):
    # Given metadata loaded from a file, not yet saved by this instance
    path = tmp_path / "metadata.json"
    metadata_with_a_moved_partition().save(path)
    metadata = BrokerMetadata.load(path)
    # When a topic is added and the save is told of it alone
    metadata.topics["events"] = TopicMetadata(1, {}, ["shard-0"])
    metadata.save(path, topics_changed=["events"])
    # Then the file holds the loaded topics too
    assert BrokerMetadata.load(path) == metadata and "orders" in metadata.topics


def test_specs_by_shard_of_named_topics_holds_only_theirs_and_skips_unknown_names():
    # Given a moved partition's topic and two more
    metadata = metadata_with_a_moved_partition()
    metadata.topics["audit"] = TopicMetadata(1, {}, ["shard-2"])
    metadata.topics["events"] = TopicMetadata(2, {}, ["shard-0", "shard-2"])
    # When the specs of two of them, and of a name no topic has, are asked for
    specs = metadata.specs_by_shard({"orders", "events", "nosuch"})
    # Then each shard gets exactly those topics' partitions (the moved one's old range
    # too), the same as from the specs of every topic
    named = {s: [sp.id for sp in shard_specs] for s, shard_specs in specs.items()}
    every = {s: [sp.id for sp in shard_specs if sp.id.topic != "audit"]
             for s, shard_specs in metadata.specs_by_shard().items()}
    assert {s: set(ids) for s, ids in named.items()} == \
        {s: set(ids) for s, ids in every.items() if ids}
    assert sorted(named) == ["shard-0", "shard-1", "shard-2"]
    assert all(pid.topic != "audit" for ids in named.values() for pid in ids)


def test_a_partition_that_moves_keeps_its_history_and_forgets_ranges_retention_emptied():
    # Given a partition that moved from shard-0 to shard-1 at 10, then to shard-2 at 25
    topic = TopicMetadata(1, {}, ["shard-0"])
    topic.move_writes(0, 10, "shard-1")
    topic.move_writes(0, 25, "shard-2")
    assert topic.placement == ["shard-2"]
    assert topic.ranges_of(0) == [(0, "shard-0"), (10, "shard-1"), (25, "shard-2")]
    # When retention emptied its range on shard-0
    topic.forget_ranges_on(0, "shard-0")
    # Then the history starts at shard-1; the owner's range cannot be forgotten
    assert topic.ranges_of(0) == [(10, "shard-1"), (25, "shard-2")]
    with pytest.raises(AssertionError, match="it owns the partition's writes"):
        topic.forget_ranges_on(0, "shard-2")


OLD_ID, NEW_ID = "a" * 32, "b" * 32


def test_deletes_owed_are_saved_as_documented_and_absent_when_none(tmp_path):
    path = tmp_path / "metadata.json"
    metadata = metadata_with_a_moved_partition()
    metadata.save(path)
    assert "deletes_owed" not in json.loads(path.read_text())
    metadata.owe_deletes("shard-1", OwedDelete("old", OLD_ID, (0, 2)))
    metadata.save(path)
    assert json.loads(path.read_text())["deletes_owed"] == {"shard-1": [["old", OLD_ID, [0, 2]]]}
    assert BrokerMetadata.load(path) == metadata


def test_a_delete_is_owed_until_its_shard_settles_it_by_topic_id():
    metadata = BrokerMetadata()
    metadata.owe_deletes("shard-1", OwedDelete("t", OLD_ID, (0,)))
    metadata.owe_deletes("shard-1", OwedDelete("t", NEW_ID, (1,)))
    assert not metadata.settle_deletes("shard-0", {("t", OLD_ID)})
    assert metadata.settle_deletes("shard-1", {("t", OLD_ID)})
    assert metadata.deletes_owed == {"shard-1": [OwedDelete("t", NEW_ID, (1,))]}
    assert metadata.settle_deletes("shard-1", {("t", NEW_ID)})
    assert metadata.deletes_owed == {}


def test_a_growth_cancels_the_owed_deletes_of_the_partitions_it_opens_and_no_others():
    metadata = BrokerMetadata()
    metadata.owe_deletes("shard-1", OwedDelete("t", OLD_ID, (2, 3, 5)))
    metadata.owe_deletes("shard-2", OwedDelete("t", OLD_ID, (4,)))
    metadata.owe_deletes("shard-2", OwedDelete("t", NEW_ID, (4,)))   # another topic's id
    assert metadata.cancel_deletes("t", OLD_ID, range(2, 5))
    assert metadata.deletes_owed == {"shard-1": [OwedDelete("t", OLD_ID, (5,))],
                                     "shard-2": [OwedDelete("t", NEW_ID, (4,))]}
    assert not metadata.cancel_deletes("t", OLD_ID, range(2, 5))


def test_a_shard_owes_at_most_the_limit_and_the_oldest_are_dropped_and_returned(monkeypatch):
    monkeypatch.setattr(limits, "OWED_DELETES_PER_SHARD_MAX", 2)
    metadata = BrokerMetadata()
    owed = [OwedDelete(f"t{i}", OLD_ID, (0,)) for i in range(3)]
    assert metadata.owe_deletes("shard-1", owed[0]) == []
    assert metadata.owe_deletes("shard-1", owed[1]) == []
    assert metadata.owe_deletes("shard-1", owed[2]) == [owed[0]]
    assert metadata.deletes_owed == {"shard-1": owed[1:]}
