"""ShardManifest: what a shard serves, on a real disk; a damaged file is refused by name."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from plinth import json_fragments
from plinth.errors import CorruptDataError, InvalidConfigError
from plinth.shards.shard_calls import Leadership, PartitionId, PartitionSpec
from plinth.shards.shard_manifest import ShardManifest
from plinth.version import VERSION


def test_a_manifest_saved_and_loaded_is_equal_and_readable_as_the_previous_format(tmp_path):
    # Given a manifest with an open, a sealed and a moved-in partition
    manifest = ShardManifest(partition_counts={"t": 3})
    manifest.serve([PartitionSpec("t", 0, {"retention.ms": "1"}),
                    PartitionSpec("t", 1, {}, 40, sealed=True),
                    PartitionSpec("t", 2, {}, 7, producers=[[12, 0, 3, 5, 9]])])
    # When it is saved and loaded
    path = tmp_path / "manifest.json"
    manifest.save(path)
    # Then it is the same, and the file has the keys the previous version read
    assert ShardManifest.load(path) == manifest
    on_disk = json.loads(path.read_text())
    assert on_disk["partitions"]["t/1"] == {"config": {}, "initial_offset": 40, "sealed": True,
                                            "producers": None}
    assert on_disk["partition_counts"] == {"t": 3}


def test_a_replicated_partitions_leadership_survives_a_save_and_a_change(tmp_path):
    # Given a manifest with a partition replicated on three shards
    manifest = ShardManifest(partition_counts={"t": 1})
    first = Leadership(("shard-0", "shard-1", "shard-2"), "shard-0", 0,
                       ("shard-0", "shard-1", "shard-2"), 0, 1)
    manifest.serve([PartitionSpec("t", 0, {}, leadership=first)])
    # When its leader changes and it is saved and loaded
    second = Leadership(first.replicas, "shard-1", 1, ("shard-1", "shard-2"), 1, 1)
    manifest.set_leadership([(PartitionId("t", 0), second)])
    path = tmp_path / "manifest.json"
    manifest.save(path)
    # Then the loaded manifest holds the new record
    assert ShardManifest.load(path).partitions[PartitionId("t", 0)].leadership == second


def test_sealing_and_altering_change_only_the_named_partitions():
    # Given two open partitions
    manifest = ShardManifest()
    manifest.serve([PartitionSpec("t", 0, {}), PartitionSpec("t", 1, {})])
    # When one is sealed and the other gets a new config
    manifest.seal([PartitionId("t", 0)])
    manifest.set_config([PartitionId("t", 1)], {"retention.ms": "5"})
    # Then each changed as told, and nothing else
    assert manifest.partitions == {PartitionId("t", 0): PartitionSpec("t", 0, {}, sealed=True),
                                   PartitionId("t", 1): PartitionSpec("t", 1, {"retention.ms": "5"})}


def test_changing_a_partition_the_manifest_does_not_hold_is_a_programmer_error():
    with pytest.raises(AssertionError, match="t-3 is not in the manifest"):
        ShardManifest().seal([PartitionId("t", 3)])


def test_a_missing_file_is_an_empty_manifest(tmp_path):
    assert ShardManifest.load(tmp_path / "manifest.json") == ShardManifest()


@pytest.mark.parametrize("content,problem", [
    ("{not json", "not a shard manifest"),
    ('{"version": 0, "partitions": {}, "partition_counts": {}}', "version 0 is not 1"),
    ('{"version": "1", "partitions": {}, "partition_counts": {}}', "version '1' is not 1"),
    ('{"version": true, "partitions": {}, "partition_counts": {}}', "version True is not 1"),
    ('{"partitions": {"t-0": {"config": {}, "initial_offset": 0, "sealed": false}}, '
     '"partition_counts": {}}', "not a shard manifest"),
    ('{"partitions": {"t/0": {"config": {}, "initial_offset": -1, "sealed": false}}, '
     '"partition_counts": {}}', "initial offset -1"),
    ('{"partitions": {"t/0": {"config": {"a": 1}, "initial_offset": 0, "sealed": false}}, '
     '"partition_counts": {}}', "config must map str to str"),
    ('{"partitions": {}, "partition_counts": {"t": 0}}', "partition count of 't' is 0"),
    ('{"partitions": {}}', "partition_counts"),
])
def test_a_damaged_manifest_is_refused_with_its_path_and_the_problem(tmp_path, content, problem):
    # Given a manifest file that is not one
    path = tmp_path / "manifest.json"
    path.write_text(content)
    # When it is loaded, Then the error names the file and what is wrong
    with pytest.raises(CorruptDataError) as raised:
        ShardManifest.load(path)
    assert str(path) in str(raised.value) and problem in str(raised.value)


# --- Saves encode only what changed (plinth/json_fragments.py) -----------------------

def test_a_save_encodes_again_only_the_partitions_changed_since_the_last(tmp_path, monkeypatch):
    # Given a saved manifest of 50 partitions
    manifest = ShardManifest(partition_counts={"t": 50})
    manifest.serve([PartitionSpec("t", p, {"retention.ms": str(p)}) for p in range(50)])
    path = tmp_path / "manifest.json"
    manifest.save(path)
    encoded = []
    real_dumps = json_fragments._dumps
    monkeypatch.setattr(json_fragments, "_dumps",
                        lambda value: encoded.append(value) or real_dumps(value))
    # When one partition is sealed, another forgotten and a third altered
    manifest.seal([PartitionId("t", 3)])
    manifest.forget([PartitionId("t", 4)])
    manifest.set_config([PartitionId("t", 5)], {"retention.ms": "9"})
    manifest.save(path)
    # Then the file holds every change, and only the changed entries were encoded
    assert ShardManifest.load(path) == manifest
    entries = [v for v in encoded if isinstance(v, dict) and "initial_offset" in v]
    assert sorted(e["config"]["retention.ms"] for e in entries) == ["3", "9"]


def test_every_kind_of_change_saved_one_after_another_loads_as_the_manifest(tmp_path):
    path = tmp_path / "manifest.json"
    manifest = ShardManifest(partition_counts={"t": 3})
    record = Leadership(("shard-0", "shard-1"), "shard-0", 0, ("shard-0", "shard-1"), 0, 1)
    changes = [
        lambda: manifest.serve([PartitionSpec("t", p, {}) for p in range(3)]),
        lambda: manifest.serve([PartitionSpec("r", 0, {}, leadership=record)]),
        lambda: manifest.seal([PartitionId("t", 0)]),
        lambda: manifest.set_config([PartitionId("t", 1)], {"retention.ms": "5"}),
        lambda: manifest.set_leadership([(PartitionId("r", 0), replace(record, leader="shard-1",
                                                                       leader_epoch=1))]),
        lambda: manifest.forget([PartitionId("t", 2), PartitionId("gone", 0)]),
        lambda: manifest.serve([PartitionSpec("t", 2, {}, 80)]),   # back, moved in
        lambda: manifest.change_partition_counts({"r": 1, "t": 4}, ["gone"]),
        lambda: manifest.set_partition_counts({"r": 2, "new": 1}),
    ]
    for change in changes:
        change()
        manifest.save(path)
        assert ShardManifest.load(path) == manifest


def test_the_manifest_keeps_its_own_copy_of_a_spec_it_is_given(tmp_path):
    # Given a partition served from a spec the caller keeps
    spec = PartitionSpec("t", 0, {"retention.ms": "1"}, producers=[[12, [[0, 3, 5]], 9]])
    manifest = ShardManifest()
    manifest.serve([spec])
    path = tmp_path / "manifest.json"
    manifest.save(path)
    # When the caller changes that spec's config and producers in place
    spec.config["retention.ms"] = "2"
    spec.producers.append([13, [], 0])
    # Then the manifest, and what it saves next, still hold what it was given
    manifest.save(path)
    assert ShardManifest.load(path).partitions[spec.id] == \
        PartitionSpec("t", 0, {"retention.ms": "1"}, producers=[[12, [[0, 3, 5]], 9]])


def test_a_change_made_around_the_manifests_methods_fails_the_next_saves_check(tmp_path):
    # Given a saved manifest (the test suite checks every tracked save)
    manifest = ShardManifest()
    manifest.serve([PartitionSpec("t", 0, {}), PartitionSpec("t", 1, {})])
    path = tmp_path / "manifest.json"
    manifest.save(path)
    # When an entry is replaced without a method, which does not note the change
    manifest.partitions[PartitionId("t", 1)] = PartitionSpec("t", 1, {}, sealed=True)
    # Then the save refuses to write the stale entry, naming it
    with pytest.raises(AssertionError, match=r"missed changes, first \['partitions/t/1'\]"):
        manifest.save(path)


def test_a_manifest_of_a_later_version_is_refused_as_a_newer_plinths_not_as_damage(tmp_path):
    # Given a manifest of version 2, which only a later Plinth writes
    path = tmp_path / "manifest.json"
    text = '{"version": 2, "partitions": {}, "partition_counts": {}}'
    path.write_text(text)
    # When it is loaded / Then it is refused as written by a newer Plinth, naming the
    # file, both versions and this build
    with pytest.raises(InvalidConfigError) as refused:
        ShardManifest.load(path)
    assert str(refused.value) == (
        f"{path}: shard manifest version 2 was written by a newer Plinth; this one "
        f"({VERSION}) reads versions up to 1: run the Plinth that wrote it (the data "
        f"directory is unchanged)")
    # And the file is as it was
    assert path.read_text() == text
