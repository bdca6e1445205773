"""Topic ids (issue 14): the controller gives each topic a random id when it creates it,
keeps it in metadata.json and hands it to the shards with each partition; a topic
created again under a deleted one's name gets another; a metadata file written before
topics had ids loads, its topics get ids, and those are saved. Real in-process shards
and a real disk (broker_without_ray.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from plinth import topics
from plinth.control.metadata import BrokerMetadata
from plinth.errors import CorruptDataError, UnknownTopicIdError
from plinth.shards.shard_handle import PartitionId
from tests.control.broker_without_ray import MAIN_DATA_DIR


def test_a_created_topic_gets_a_topic_id_saved_and_given_to_every_shard_that_holds_it(brokers):
    # Given a broker of two shards
    broker = brokers(2)
    # When a topic is created
    broker.controller.create_topic("orders", 4, {})
    # Then it has a topic id of 32 hex digits, saved in metadata.json
    topic_id = broker.metadata_on_disk().topics["orders"].topic_id
    assert topics.is_topic_id(topic_id)
    raw = json.loads((broker.data_dir / "metadata.json").read_text())
    assert raw["topics"]["orders"]["topic_id"] == topic_id
    # And every shard holding a partition of it has that id in its manifest
    specs = [spec for shard_id in ("shard-0", "shard-1")
             for pid, spec in broker.manifest(shard_id).partitions.items() if pid.topic == "orders"]
    assert len(specs) == 4 and {spec.topic_id for spec in specs} == {topic_id}


def test_two_topics_get_different_ids_and_a_topic_created_again_gets_a_new_one(brokers):
    # Given two topics
    broker = brokers(2)
    broker.controller.create_topic("orders", 1, {})
    broker.controller.create_topic("events", 1, {})
    first = broker.metadata_on_disk().topics["orders"].topic_id
    assert first != broker.metadata_on_disk().topics["events"].topic_id
    # When one is deleted and created again under the same name
    broker.controller.delete_topic("orders")
    broker.controller.create_topic("orders", 1, {})
    # Then it is another topic: another id, in the metadata and on its shard
    second = broker.metadata_on_disk().topics["orders"].topic_id
    assert topics.is_topic_id(second) and second != first
    owner = broker.owner("orders", 0)
    assert broker.manifest(owner).partitions[PartitionId("orders", 0)].topic_id == second


def test_a_topic_keeps_its_id_across_a_restart_of_the_broker(brokers):
    # Given a topic with an id
    broker = brokers(2)
    broker.controller.create_topic("orders", 2, {})
    topic_id = broker.metadata_on_disk().topics["orders"].topic_id
    # When the broker restarts on the same data dir
    broker = brokers(2)
    # Then the topic has the same id, on disk and on its shards
    assert broker.metadata_on_disk().topics["orders"].topic_id == topic_id
    assert broker.manifest(broker.owner("orders", 0)).partitions[
        PartitionId("orders", 0)].topic_id == topic_id


def test_a_metadata_file_without_topic_ids_loads_and_each_topic_gets_a_distinct_one(tmp_path):
    # Given main's metadata.json, written before topics had ids
    path = tmp_path / "metadata.json"
    shutil.copy(MAIN_DATA_DIR / "metadata.json", path)
    assert not any("topic_id" in t for t in json.loads(path.read_text())["topics"].values())
    # When it is loaded
    metadata = BrokerMetadata.load(path)
    # Then every topic has an id, each its own
    ids = [topic.topic_id for topic in metadata.topics.values()]
    assert all(topics.is_topic_id(i) for i in ids) and len(set(ids)) == len(ids) >= 2
    # And once saved, loading gives the same ids
    metadata.save(path)
    assert [t.topic_id for t in BrokerMetadata.load(path).topics.values()] == ids


def test_a_broker_started_on_a_data_dir_without_topic_ids_saves_the_ids_and_tells_its_shards(
        brokers, tmp_path):
    # Given main's data dir, written before topics had ids
    data_dir = tmp_path / "main-data"
    shutil.copytree(MAIN_DATA_DIR, data_dir)
    # When a broker starts on it
    broker = brokers(None, data_dir=data_dir)
    # Then metadata.json holds an id for every topic
    saved = {name: t.get("topic_id") for name, t in
             json.loads((data_dir / "metadata.json").read_text())["topics"].items()}
    assert all(topics.is_topic_id(i) for i in saved.values()), saved
    # And every partition a shard serves carries its topic's id in the shard's manifest
    for shard_id in broker.metadata_on_disk().shards:
        for pid, spec in broker.manifest(shard_id).partitions.items():
            assert spec.topic_id == saved[pid.topic], (shard_id, pid)
    # And a second start keeps them
    broker = brokers(None, data_dir=data_dir)
    assert {n: t.topic_id for n, t in broker.metadata_on_disk().topics.items()} == saved


def test_metadata_whose_topic_id_is_malformed_or_shared_is_refused_by_name(tmp_path):
    # Given a file whose two topics claim the same id, then one with a malformed id
    path = tmp_path / "metadata.json"
    shared = "0123456789abcdef0123456789abcdef"
    topic = {"partitions": 1, "config": {}, "placement": ["shard-0"], "topic_id": shared}
    path.write_text(json.dumps({"version": 1, "shards": ["shard-0"],
                                "topics": {"a": topic, "b": topic}}))
    # Then loading refuses each, naming the file and the id
    with pytest.raises(CorruptDataError, match=f"{path}.*{shared}"):
        BrokerMetadata.load(path)
    path.write_text(json.dumps({"version": 1, "shards": ["shard-0"],
                                "topics": {"a": {**topic, "topic_id": "XYZ"}}}))
    with pytest.raises(CorruptDataError, match=f"{path}.*'XYZ'"):
        BrokerMetadata.load(path)


def test_describe_list_and_create_answer_the_topic_id_the_metadata_keeps(brokers):
    # Given a topic created on a broker of two shards
    broker = brokers(2)
    created = broker.controller.create_topic("orders", 2, {})
    topic_id = broker.metadata_on_disk().topics["orders"].topic_id
    # Then the create's answer, the describe and the list each show that id
    assert created.topic_id == topic_id
    assert broker.controller.describe_topic("orders").topic_id == topic_id
    assert {t.name: t.topic_id for t in broker.controller.list_topics()}["orders"] == topic_id


def test_a_delete_guarded_by_a_stale_topic_id_is_refused_and_the_topic_stays(brokers):
    # Given a topic whose id was read, then deleted and created again under its name
    broker = brokers(2)
    stale = broker.controller.create_topic("orders", 2, {}).topic_id
    broker.controller.delete_topic("orders")
    current = broker.controller.create_topic("orders", 2, {}).topic_id
    # When it is deleted guarded by the id read before
    with pytest.raises(UnknownTopicIdError) as refused:
        broker.controller.delete_topic("orders", topic_id=stale)
    # Then it is refused, naming the topic and both ids, and the new topic stays, saved
    assert str(refused.value) == (
        f"topic 'orders' has topic id {current}, not {stale}: nothing deleted (was it "
        f"created again under the name since {stale} was read?)")
    assert broker.metadata_on_disk().topics["orders"].topic_id == current
    assert broker.controller.describe_topic("orders").partitions == 2
    assert broker.manifest(broker.owner("orders", 0)).partitions[
        PartitionId("orders", 0)].topic_id == current


def test_a_delete_guarded_by_the_topics_own_id_deletes_it(brokers):
    # Given a topic and its id
    broker = brokers(2)
    topic_id = broker.controller.create_topic("orders", 2, {}).topic_id
    # When it is deleted guarded by that id
    broker.controller.delete_topic("orders", topic_id=topic_id)
    # Then it is gone, from the metadata and from its shards
    assert "orders" not in broker.metadata_on_disk().topics
    assert not [pid for shard_id in ("shard-0", "shard-1")
                for pid in broker.manifest(shard_id).partitions if pid.topic == "orders"]
