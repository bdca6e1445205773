"""The controller and tiered storage's configs (issue 14): remote.storage.enable needs
the server's --tier-url, stays on once on, and every shard gets the server's tier
options (a real controller and in-process shard actors, broker_without_ray.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plinth import protocol
from plinth.errors import InvalidConfigError
from plinth.shards.shard_handle import TierOptions
from plinth.shards.tier.remote_log_view import RemoteLogView
from tests.control.broker_without_ray import THREE, TWO, topic_that_moves
from tests.shards.tier.test_remote_log_metadata import remote_segment
from tests.support import wait_until

TIER = TierOptions("memory://", 64 * 1024 * 1024)


def test_without_a_tier_url_a_topic_with_remote_storage_is_refused_naming_the_option(brokers):
    # Given a broker started without --tier-url
    broker = brokers(2)
    # When a topic with remote storage is created, Then it is refused and nothing is made
    with pytest.raises(InvalidConfigError, match=r"topic 'logs': remote.storage.enable=true "
                       r"needs tiered storage.*without --tier-url"):
        broker.controller.create_topic("logs", 2, {"remote.storage.enable": "true"})
    assert broker.controller.list_topics() == []
    # And a topic without it cannot be altered to have it
    broker.controller.create_topic("plain", 2, {})
    with pytest.raises(InvalidConfigError, match="without --tier-url"):
        broker.controller.alter_topic("plain", {"remote.storage.enable": "true"})
    assert broker.metadata_on_disk().topics["plain"].config["remote.storage.enable"] == "false"


def test_with_a_tier_url_remote_storage_is_taken_and_reaches_the_shards(brokers):
    # Given a broker with tiered storage
    broker = brokers(2, tier=TIER)
    # When a topic is created with remote storage and a local retention of an hour
    info = broker.controller.create_topic("logs", 2, {"remote.storage.enable": "true",
                                                      "local.retention.ms": "3600000"})
    # Then its config says so, on disk and in every shard's manifest
    assert info.config["remote.storage.enable"] == "true"
    assert broker.metadata_on_disk().topics["logs"].config["local.retention.ms"] == "3600000"
    for shard_id in ("shard-0", "shard-1"):
        specs = broker.manifest(shard_id).partitions.values()
        assert specs and all(s.config["remote.storage.enable"] == "true" for s in specs)


def test_remote_storage_once_on_cannot_be_turned_off_and_the_topic_keeps_it(brokers):
    broker = brokers(2, tier=TIER)
    broker.controller.create_topic("logs", 2, {"remote.storage.enable": "true"})
    with pytest.raises(InvalidConfigError, match="remote.storage.enable cannot go from true "
                       "back to false.*remote.log.delete.on.disable"):
        broker.controller.alter_topic("logs", {"remote.storage.enable": "false"})
    assert broker.metadata_on_disk().topics["logs"].config["remote.storage.enable"] == "true"
    # And other changes to it are still taken
    broker.controller.alter_topic("logs", {"local.retention.bytes": "1048576"})
    assert broker.metadata_on_disk().topics["logs"].config["local.retention.bytes"] == "1048576"


def test_every_shard_actor_starts_with_the_servers_tier_options(brokers):
    broker = brokers(2, tier=TIER)
    for handle in broker.shards.handles.values():
        assert handle.options.tier == TIER
        assert handle.actor._server.tier == TIER


def test_a_broker_with_tiered_topics_refuses_to_start_without_a_tier_url(brokers):
    # Given a broker whose topic has remote storage on
    brokers(2, tier=TIER).controller.create_topic("logs", 2, {"remote.storage.enable": "true"})
    # When it restarts without --tier-url, Then it refuses, naming the topic and the option
    with pytest.raises(InvalidConfigError, match=r"1 topic\(s\) have remote.storage.enable=true "
                       r"\(logs\) but the server was started without --tier-url"):
        brokers(2)
    # And with it, it starts and serves the topic
    assert [t.name for t in brokers(2, tier=TIER).controller.list_topics()] == ["logs"]


def test_describe_shows_the_tiering_defaults_of_a_topic_stored_before_them(brokers):
    # Given a topic whose stored config predates tiered storage
    broker = brokers(2)
    broker.controller.create_topic("old", 1, {})
    for key in ("remote.storage.enable", "local.retention.ms", "local.retention.bytes"):
        del broker.controller._metadata.topics["old"].config[key]
    # When it is described, Then the defaults are shown
    config = broker.controller.describe_topic("old").config
    assert (config["remote.storage.enable"], config["local.retention.ms"],
            config["local.retention.bytes"]) == ("false", "-2", "-2")


def publish_remote(broker, shard_id: str, topic: str, partition: int, *segments) -> None:
    """Hand the shard's partition a remote log of ``segments``, as the uploader will."""
    server = broker.shards.handles[shard_id].actor._server

    def publish():
        server._partitions[(topic, partition)].remote = RemoteLogView.of(segments)
    server.call(publish)


def test_describe_merges_the_local_and_remote_offsets_and_bytes_of_every_range(brokers):
    # Given a tiered topic with records 0..2 in each partition, whose writes then move
    # to a new shard for some partitions, which take record 3 there
    broker = brokers(2, tier=TIER)
    topic = topic_that_moves(8, TWO, THREE)
    broker.controller.create_topic(topic, 8, {"remote.storage.enable": "true"})
    for partition in range(8):
        broker.produce(topic, partition, [b"a", b"b", b"c"])
    moved = broker.controller.add_shards(1)[0]
    broker.produce(topic, moved.partition, [b"d"])
    # And offsets 0..1 of the old range and 3 of the new one are in object storage
    publish_remote(broker, moved.from_shard, topic, moved.partition,
                   remote_segment(0, 2, size_bytes=500))
    publish_remote(broker, "shard-2", topic, moved.partition,
                   remote_segment(3, 4, size_bytes=300))
    # When the topic is described
    infos = broker.controller.describe_topic(topic).partition_info
    # Then the moved partition's remote log spans both ranges' remote segments, its
    # bytes summed, and its local start is the old range's (nothing was deleted)
    merged = infos[moved.partition]
    assert (merged.start_offset, merged.local_start_offset, merged.end_offset) == (0, 0, 4)
    assert (merged.remote_start_offset, merged.remote_end_offset, merged.remote_bytes) == (
        0, 4, 800)
    assert merged.size_bytes > 0
    # And a partition with nothing remote says so
    other = next(p for p in infos if p.partition != moved.partition)
    assert not other.has_remote and other.remote_bytes == 0
    assert other.local_start_offset == other.start_offset == 0


@pytest.mark.parametrize("unlisted_first", [False, True])
def test_describe_says_a_partitions_remote_log_is_not_listed_if_any_range_says_so(
        unlisted_first):
    from plinth.control.controller import _merge_ranges

    # Given a partition whose old range's shard listed the store and whose new range's
    # leader has not yet (a failover with the store down)
    why = "shard-2 has not listed object storage since it began uploading t-0: ..."
    old = protocol.PartitionInfo(0, "shard-0", 0, 3, 100, remote_start_offset=0,
                                 remote_end_offset=2, remote_bytes=500)
    new = protocol.PartitionInfo(0, "shard-2", 3, 4, 50, local_start_offset=3,
                                 remote_not_listed=why)
    # When describe merges the ranges' infos, in either order
    merged = _merge_ranges([new, old] if unlisted_first else [old, new], ["shard-2"])[0]
    # Then the partition's remote log is not listed, and says why
    assert merged.remote_not_listed == why and merged.shard == "shard-2"


def test_a_broker_records_the_store_of_its_tiered_topics_and_forgets_it_with_the_last(
        brokers):
    # Given a broker with tiered storage but no tiered topic: nothing is recorded
    broker = brokers(2, tier=TierOptions("s3://bucket/plinth?token=s3cr3t"))
    broker.controller.create_topic("plain", 1, {})
    assert broker.metadata_on_disk().tier_store is None
    # When a tiered topic is created, Then its store is recorded, without the secret
    broker.controller.create_topic("logs", 1, {"remote.storage.enable": "true"})
    assert broker.metadata_on_disk().tier_store == "s3://bucket/plinth"
    assert "s3cr3t" not in (broker.data_dir / "metadata.json").read_text()
    # And when the last tiered topic is deleted, it is forgotten
    broker.controller.delete_topic("logs")
    assert broker.metadata_on_disk().tier_store is None


def test_a_broker_with_tiered_topics_refuses_to_start_on_another_store_naming_both(
        brokers, tmp_path):
    # Given a broker whose tiered topic's segments are in the store at a/
    first = TierOptions(f"file://{tmp_path}/a")
    brokers(2, tier=first).controller.create_topic("logs", 2, {"remote.storage.enable": "true"})
    # When it restarts with a store at b/, Then it refuses, naming the topic and both stores
    with pytest.raises(InvalidConfigError, match=(
            rf"1 topic\(s\) have remote.storage.enable=true \(logs\) and their remote "
            rf"segments are in file://{tmp_path}/a, but the server was started with "
            rf"--tier-url file://{tmp_path}/b: start it with --tier-url file://{tmp_path}/a")):
        brokers(2, tier=TierOptions(f"file://{tmp_path}/b"))
    # And without a tier URL, the message names the store to give
    with pytest.raises(InvalidConfigError, match=rf"without --tier-url: start it with the "
                       rf"--tier-url their remote segments are in file://{tmp_path}/a$"):
        brokers(2)
    # And the same store, written with a trailing "/" and a query, is taken
    again = brokers(2, tier=TierOptions(f"file://{tmp_path}/a/?v=2"))
    assert [t.name for t in again.controller.list_topics()] == ["logs"]
    assert again.metadata_on_disk().tier_store == f"file://{tmp_path}/a"


def test_a_data_dir_from_before_the_store_was_recorded_takes_the_store_it_is_given(
        brokers, tmp_path):
    # Given a tiered topic in metadata that records no store (written before it did)
    broker = brokers(2, tier=TIER)
    broker.controller.create_topic("logs", 1, {"remote.storage.enable": "true"})
    metadata = broker.metadata_on_disk()
    metadata.tier_store = None
    metadata.save(broker.data_dir / "metadata.json")
    # When it restarts with a store, Then it starts and records that store
    again = brokers(2, tier=TierOptions(f"file://{tmp_path}/c"))
    assert again.metadata_on_disk().tier_store == f"file://{tmp_path}/c"


def deleted_while_the_store_was_away(brokers, tmp_path) -> tuple[str, Path]:
    """(the store's URL, shard-0's pending deletions): a broker's last tiered topic,
    deleted while its store (a file:// directory) was away, so the shard's deletion
    of its remote segments is pending on its disk."""
    (tmp_path / "a").mkdir()
    store = f"file://{tmp_path}/a"
    broker = brokers(1, tier=TierOptions(store))
    broker.controller.create_topic("logs", 2, {"remote.storage.enable": "true"})
    (tmp_path / "a").rename(tmp_path / "away")
    broker.controller.delete_topic("logs")
    pending = tmp_path / "data" / "shards" / "shard-0" / "remote-deletions"
    assert len(list(pending.iterdir())) == 2
    return store, pending


def test_a_broker_whose_shards_still_delete_a_stores_segments_refuses_to_start_without_it(
        brokers, tmp_path):
    # Given a broker's last tiered topic, deleted while its store was away
    store, pending = deleted_while_the_store_was_away(brokers, tmp_path)
    (tmp_path / "b").mkdir()
    # When it restarts without --tier-url, Then it refuses, naming the deletions, their
    # store, and the way out (metadata no longer records the store: no topic is tiered)
    refusal = (rf"2 deleted partition\(s\) of tiered topics \(logs-0, logs-1\) still have "
               rf"remote segments to delete in {store}, but the server was started "
               rf"{{}}: start it with --tier-url {store} to finish their deletion \(or, to "
               rf"leave those objects in the store for good, remove {pending} \(shard-0\)\)$")
    with pytest.raises(InvalidConfigError, match=refusal.format("without --tier-url")):
        brokers(1)
    # And with another store, it refuses too (there it would delete nothing)
    with pytest.raises(InvalidConfigError,
                       match=refusal.format(rf"with --tier-url file://{tmp_path}/b")):
        brokers(1, tier=TierOptions(f"file://{tmp_path}/b"))
    assert len(list(pending.iterdir())) == 2
    # And with its store, back in place, it starts and the deletions finish
    (tmp_path / "away").rename(tmp_path / "a")
    brokers(1, tier=TierOptions(store))
    wait_until(lambda: not any(pending.iterdir()), timeout_s=60)


def test_pending_deletions_that_record_no_store_refuse_a_start_without_one(brokers, tmp_path):
    # Given pending deletions written before their store was recorded
    _, pending = deleted_while_the_store_was_away(brokers, tmp_path)
    for record_file in pending.glob("*/deletion.json"):
        record = json.loads(record_file.read_text())
        del record["store"]
        record_file.write_text(json.dumps(record))
    # When the broker restarts without --tier-url, Then it refuses, asking for the store
    with pytest.raises(InvalidConfigError, match=(
            r"2 deleted partition\(s\) of tiered topics \(logs-0, logs-1\) still have remote "
            r"segments to delete in the store they were uploaded to \(not recorded: deleted "
            r"by an older Plinth\), but the server was started without --tier-url: start it "
            r"with the --tier-url of that store to finish their deletion")):
        brokers(1)
