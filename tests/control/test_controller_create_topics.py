"""The controller's createTopics (many topics in one call, all or none) and the partition
counts a create, a growth or a delete pushes to the shards: only the changed ones, and
all of them to a shard that missed a push. Without Ray (broker_without_ray.py)."""

from __future__ import annotations

import dataclasses
import time

import pytest
import ray.exceptions

from plinth import limits
from plinth.control import placement
from plinth.errors import (InvalidConfigError, InvalidReplicationFactorError, InvalidTopicError,
                           TopicExistsError, UnavailableError)
from plinth.protocol import NewTopic
from tests.control.broker_without_ray import TWO
from tests.control.test_controller_move_shard import named_nodes


def test_created_topics_are_opened_saved_and_counted_on_every_shard_in_the_order_given(brokers):
    # Given a broker with two shards
    broker = brokers(2)
    # When three topics are created in one call
    infos = broker.controller.create_topics([NewTopic("c", 3, {"retention.ms": "1000"}),
                                             NewTopic("a", 1, {}), NewTopic("b", 2, {})])
    # Then each is answered, in the order given, with its config
    assert [(i.name, i.partitions) for i in infos] == [("c", 3), ("a", 1), ("b", 2)]
    assert infos[0].config["retention.ms"] == "1000"
    # And each is saved, its partitions are open on their shards, and every shard
    # knows every topic's partition count
    assert sorted(broker.metadata_on_disk().topics) == ["a", "b", "c"]
    served = set()
    for shard_id in TWO:
        manifest = broker.manifest(shard_id)
        served |= {(pid.topic, pid.partition) for pid in manifest.partitions}
        assert manifest.partition_counts == {"a": 1, "b": 2, "c": 3}
    assert served == {("a", 0), ("b", 0), ("b", 1), ("c", 0), ("c", 1), ("c", 2)}
    assert broker.produce("c", 2, [b"x"]) == 0


@pytest.mark.parametrize("refused, error, message", [
    (NewTopic("orders", 1, {}), TopicExistsError, "topic 'orders' already exists"),
    (NewTopic("bad/name", 1, {}), InvalidTopicError, "bad/name"),
    (NewTopic("fine", 1, {"retention.ms": "soon"}), InvalidConfigError, "retention.ms"),
    (NewTopic("new-1", 1, {}), TopicExistsError, r"topics \['new-1'\] are given twice"),
])
def test_a_batch_with_one_refused_topic_creates_none_and_names_it(brokers, refused, error,
                                                                   message):
    # Given a broker holding one topic
    broker = brokers(2)
    broker.controller.create_topic("orders", 1, {})
    # When a batch holding one refused topic among good ones is created, Then it fails naming it
    with pytest.raises(error, match=message):
        broker.controller.create_topics([NewTopic("new-1", 1, {}), refused, NewTopic("new-2", 2, {})])
    # And none of the batch exists: not listed, not saved, not counted on a shard
    assert [i.name for i in broker.controller.list_topics()] == ["orders"]
    assert sorted(broker.metadata_on_disk().topics) == ["orders"]
    assert all(broker.manifest(s).partition_counts == {"orders": 1} for s in TWO)


@pytest.mark.parametrize("refused, error, message", [
    (NewTopic("orders", 1, {}), TopicExistsError, "topic 'orders' already exists"),
    (NewTopic("fine", 1, {}, replication_factor=3), InvalidReplicationFactorError,
     "replication factor 3 is more than the broker's 2 shards"),
    (NewTopic("fine", 1, {"retention.ms": "x"}), InvalidConfigError, "retention.ms"),
])
def test_validating_new_topics_refuses_what_creating_them_would_and_creates_nothing(
        brokers, refused, error, message):
    # Given a broker of two shards holding one topic
    broker = brokers(2)
    broker.controller.create_topic("orders", 1, {})
    # When a topic that a create would refuse is validated, Then the same refusal comes
    with pytest.raises(error, match=message):
        broker.controller.validate_new_topics([refused])
    with pytest.raises(error, match=message):
        broker.controller.create_topics([refused])
    # And a good one is answered as created, but is not
    [info] = broker.controller.validate_new_topics([NewTopic("good", 3, {"retention.ms": "9"})])
    assert (info.name, info.partitions, info.config["retention.ms"]) == ("good", 3, "9")
    assert [i.name for i in broker.controller.list_topics()] == ["orders"]
    assert sorted(broker.metadata_on_disk().topics) == ["orders"]
    assert all(broker.manifest(s).partition_counts == {"orders": 1} for s in TWO)


def test_a_batch_a_shard_fails_to_open_creates_none(brokers):
    # Given a shard that is down for its next call
    broker = brokers(2)
    broker.shards.handles["shard-1"].fail_next("open_partitions", ray.exceptions.ActorDiedError())
    # When a batch with partitions on both shards is created, Then it fails
    with pytest.raises(UnavailableError, match="shard-1 is down"):
        broker.controller.create_topics([NewTopic(f"t{i}", 4, {}) for i in range(5)])
    # And none of it exists, nor is counted on the shard that opened its partitions;
    # once the shard is back the same batch is created
    assert broker.controller.list_topics() == []
    assert broker.manifest("shard-0").partition_counts == {}
    assert len(broker.controller.create_topics([NewTopic(f"t{i}", 4, {}) for i in range(5)])) == 5


@pytest.mark.parametrize("count", [0, limits.CREATE_TOPICS_BATCH_MAX + 1])
def test_a_batch_of_no_topics_or_too_many_is_refused_naming_the_limit(brokers, count):
    broker = brokers(2)
    with pytest.raises(InvalidConfigError, match=f"carries {count} topics, outside "
                                                 f"1..{limits.CREATE_TOPICS_BATCH_MAX}"):
        broker.controller.create_topics([NewTopic(f"t{i}", 1, {}) for i in range(count)])
    assert broker.controller.list_topics() == []


def test_a_batch_past_the_topic_limit_is_refused_whole(brokers, monkeypatch):
    # Given a broker one topic short of a (lowered) topic limit
    monkeypatch.setattr(limits, "TOPICS_MAX", 3)
    broker = brokers(2)
    broker.controller.create_topics([NewTopic("a", 1, {}), NewTopic("b", 1, {})])
    # When two more are created in one batch, Then neither is
    with pytest.raises(Exception, match="the broker has 2 topics, and the limit is 3"):
        broker.controller.create_topics([NewTopic("c", 1, {}), NewTopic("d", 1, {})])
    assert [i.name for i in broker.controller.list_topics()] == ["a", "b"]


def test_a_growth_and_a_delete_change_only_their_topic_s_count_on_every_shard(brokers):
    # Given two topics
    broker = brokers(2)
    broker.controller.create_topics([NewTopic("a", 1, {}), NewTopic("b", 1, {})])
    # When one grows and the other is deleted
    broker.controller.add_partitions("a", 4)
    broker.controller.delete_topic("b")
    # Then every shard counts the grown one's partitions and forgot the deleted one
    for shard_id in TWO:
        assert broker.manifest(shard_id).partition_counts == {"a": 4}


def test_a_shard_that_missed_a_push_of_counts_gets_every_count_at_the_next(brokers):
    # Given a shard that misses the push of the count of a topic it holds no partition
    # of ("e" is placed on shard-0 only)
    broker = brokers(2)
    broker.controller.create_topic("a", 1, {})
    assert placement.place_topic("e", 1, list(TWO)) == ["shard-0"]
    broker.shards.handles["shard-1"].fail_next("change_partition_counts",
                                                ray.exceptions.ActorDiedError())
    broker.controller.create_topic("e", 1, {})
    assert broker.manifest("shard-1").partition_counts == {"a": 1}
    # When the next topic is created
    broker.controller.create_topic("c", 2, {})
    # Then that shard has every topic's count, the one it missed too
    assert broker.manifest("shard-1").partition_counts == {"a": 1, "c": 2, "e": 1}
    assert broker.manifest("shard-0").partition_counts == {"a": 1, "c": 2, "e": 1}


def test_a_shard_that_opens_a_new_topics_partitions_records_its_count_in_the_same_call(
        brokers):
    # Given a broker whose controller would die if it pushed counts to shard-1 apart
    broker = brokers(2)
    assert placement.place_topic("b", 2, list(TWO)) == ["shard-1", "shard-1"]
    broker.shards.handles["shard-1"].crash_controller_at("change_partition_counts")
    # When a topic whose partitions are all on shard-1 is created, it is created
    broker.controller.create_topic("b", 2, {})
    # And shard-1 counted it with the partitions it opened, shard-0 by the push
    assert broker.manifest("shard-1").partition_counts == {"b": 2}
    assert broker.manifest("shard-0").partition_counts == {"b": 2}
    assert sorted(p.partition for p in broker.manifest("shard-1").partitions) == [0, 1]


def test_a_create_on_a_full_disk_is_a_storage_error_naming_the_file_and_creates_nothing(
        brokers, monkeypatch):
    import errno

    from plinth.control import metadata
    from plinth.errors import StorageError
    from plinth.shards import shard_manifest

    # Given a broker holding one topic, then a disk that refuses every write (both the
    # shards' manifests and the controller's metadata: the undo's save fails too)
    broker = brokers(2)
    broker.controller.create_topic("orders", 1, {})

    def full_disk(path, data, **_):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(shard_manifest, "write_file_atomically", full_disk)
    monkeypatch.setattr(metadata, "write_file_atomically", full_disk)
    # When a topic is created / Then the shard's error comes, typed and naming its file,
    # not the undo's (an InternalError naming no path before)
    with pytest.raises(StorageError, match=r"topics \['g'\] were not created: .*cannot save "
                                           r"the shard manifest .*manifest.json: No space left"):
        broker.controller.create_topic("g", 4, {})
    monkeypatch.undo()
    # And the topic does not exist, and none of its directories is left on a shard
    assert [i.name for i in broker.controller.list_topics()] == ["orders"]
    assert not list((broker.data_dir / "shards").glob("*/g-*"))


# --- Shards down at a create (a lost node, a stopped shard) -----------------------------

def four_shards_one_lost(brokers, lose_node: bool = True):
    """Shards 0..3 on nodes a..d; shard-3 is down: its process stopped, and with
    ``lose_node`` its node d listed dead, as Ray lists a lost node."""
    nodes = named_nodes("abcd")
    broker = brokers(4, nodes=nodes)
    assert broker.metadata_on_disk().shard_nodes["shard-3"] == "plinth-node:d"
    broker.shards.handles["shard-3"].stop()
    if lose_node:
        nodes[3] = dataclasses.replace(nodes[3], alive=False)
    return broker


FOUR = ["shard-0", "shard-1", "shard-2", "shard-3"]


@pytest.mark.parametrize("lose_node", [True, False], ids=["node lost", "shard stopped"])
def test_a_replicated_topic_created_while_a_shard_is_down_is_placed_on_the_shards_that_answer(
        brokers, lose_node):
    # Given four shards on four nodes, shard-3 down (its node lost, or it stopped)
    broker = four_shards_one_lost(brokers, lose_node)
    # When a factor-3 topic is created, some of whose partitions placement would give
    # shard-3 a replica of
    hashed = [placement.replicas_for("t", p, FOUR, {}, 3) for p in range(8)]
    assert any("shard-3" in r for r in hashed)
    broker.controller.create_topic("t", 8, {}, 3)
    # Then every partition's replicas and leader are shards that answer, each in sync,
    # those placement gave no replica on shard-3 exactly as it gave them
    topic = broker.metadata_on_disk().topics["t"]
    for p in range(8):
        record = topic.leadership[p]
        assert "shard-3" not in record.replicas and len(set(record.replicas)) == 3
        assert record.leader == record.replicas[0] and record.in_sync == record.replicas
        if "shard-3" not in hashed[p]:
            assert record.replicas == hashed[p]
    # And a partition moved off shard-3 takes acks=all writes
    moved = next(p for p in range(8) if "shard-3" in hashed[p])
    assert broker.produce("t", moved, [b"x"], acks=-1) == 0


def test_a_factor_1_topic_placed_on_a_lost_shard_is_refused_at_once_naming_it_and_the_remedy(
        brokers):
    # Given four shards on four nodes, shard-3's node lost
    broker = four_shards_one_lost(brokers)
    on_lost = [p for p, s in enumerate(placement.place_topic("plain", 8, FOUR)) if s == "shard-3"]
    assert on_lost
    # When a factor-1 topic is created, some of whose partitions hash to shard-3
    # Then it is refused without waiting for the shard, naming it, its node and what to do
    started_s = time.monotonic()
    with pytest.raises(UnavailableError, match=f"topic 'plain' was not created: .*{on_lost[0]}.*"
                                               "on shard-3, which is down \\(shard-3 is on node d, "
                                               "which is dead\\).*plinth shards move.*replication "
                                               "factor of 2 or more"):
        broker.controller.create_topic("plain", 8, {}, 1)
    assert time.monotonic() - started_s < limits.STATUS_CALL_TIMEOUT_S
    # And nothing was created
    assert "plain" not in broker.metadata_on_disk().topics
    assert all(pid.topic != "plain" for s in FOUR[:3] for pid in broker.manifest(s).partitions)


def test_a_replicated_topic_too_wide_for_the_shards_that_answer_is_refused_naming_the_down_one(
        brokers):
    # Given three shards on three nodes, shard-2's node lost
    nodes = named_nodes("abc")
    broker = brokers(3, nodes=nodes)
    broker.shards.handles["shard-2"].stop()
    nodes[2] = dataclasses.replace(nodes[2], alive=False)
    # When a factor-3 topic is created, Then it is refused at once: two shards answer
    with pytest.raises(UnavailableError, match="topic 't' was not created: replication factor 3 "
                                               "needs 3 shards that answer, each on its own node, "
                                               "and with shard-2 down .* hold 2; .*plinth shards "
                                               "move"):
        broker.controller.create_topic("t", 2, {}, 3)
    # And a factor-2 topic is placed on the two that answer
    broker.controller.create_topic("t2", 2, {}, 2)
    assert all(set(r.replicas) == {"shard-0", "shard-1"}
               for r in broker.metadata_on_disk().topics["t2"].leadership.values())
