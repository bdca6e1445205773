"""Specification of control/data_dir_check.py: a broker does not start on a data dir
whose metadata was lost while its shards hold partitions, nor on a damaged metadata
file or shard manifest; each refusal names the file. Real data dirs, written by a
controller and its in-process shards (broker_without_ray.py)."""

from __future__ import annotations

import pytest

from plinth.control.data_dir_check import load_checked_metadata
from plinth.errors import CorruptDataError
from plinth.shards.shard_manifest import ShardManifest
from tests.control.broker_without_ray import Broker
from tests.in_process_shards import ONE_NODE


@pytest.fixture
def stopped_broker(tmp_path):
    """A data dir where a broker with topics orders (3 partitions) and audit ran."""
    broker = Broker(tmp_path / "data", 2, ONE_NODE)
    broker.controller.start()
    broker.controller.create_topic("orders", 3, {}, 1)
    broker.controller.create_topic("audit", 1, {}, 1)
    assert broker.produce("orders", 0, [b"a", b"b"], acks=-1) == 0
    broker.shards.stop_all()
    return broker


def test_a_new_data_dir_has_empty_metadata(tmp_path):
    assert load_checked_metadata(tmp_path / "new").topics == {}


def test_a_data_dir_as_its_broker_left_it_gives_its_metadata(stopped_broker):
    assert sorted(load_checked_metadata(stopped_broker.data_dir).topics) == ["audit", "orders"]


def test_lost_metadata_beside_manifests_naming_partitions_is_refused_saying_what_and_why(
        stopped_broker):
    # Given the broker's metadata.json lost, its shards' manifests and logs still there
    metadata = stopped_broker.data_dir / "metadata.json"
    metadata.unlink()
    # When a broker would start on it / Then it is refused, naming the file, what the
    # manifests hold, the harm, and the two ways on
    with pytest.raises(CorruptDataError) as refused:
        load_checked_metadata(stopped_broker.data_dir)
    said = str(refused.value)
    assert said.startswith(f"{metadata} is missing, but 2 shard manifest(s) here name 4 "
                           f"partition(s) of topic(s) audit, orders")
    assert "would delete that partition's log" in said
    assert f"move {stopped_broker.data_dir / 'shards'} away first" in said
    # And a controller refuses to start on it too (a broker started without plinth serve)
    with pytest.raises(CorruptDataError, match="metadata.json is missing"):
        Broker(stopped_broker.data_dir, 2, ONE_NODE)


def test_lost_metadata_beside_manifests_that_name_no_partition_is_a_new_broker(stopped_broker):
    # Given every topic deleted before the metadata was lost
    for path in (stopped_broker.data_dir / "shards").glob("*/manifest.json"):
        ShardManifest().save(path)
    (stopped_broker.data_dir / "metadata.json").unlink()
    assert load_checked_metadata(stopped_broker.data_dir).topics == {}


@pytest.mark.parametrize("damaged, says", [
    ("metadata.json", "not broker metadata"),
    ("shards/shard-0/manifest.json", "not a shard manifest"),
])
def test_a_damaged_metadata_file_or_manifest_is_refused_naming_it(stopped_broker, damaged, says):
    path = stopped_broker.data_dir / damaged
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(CorruptDataError, match=f"{path}: {says}"):
        load_checked_metadata(stopped_broker.data_dir)
