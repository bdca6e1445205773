"""Specification of control/data_dir_check.py: a broker does not start on a data dir
whose metadata was lost while its shards hold partitions, nor on a damaged metadata
file or shard manifest; each refusal names the file. Where metadata.json and a
manifest disagree (a topic id, a topic it lacks), plinth check says so, and a start
never deletes the log: it serves it (a damaged manifest) or sets it aside whole.
Real data dirs, written by a controller and its in-process shards
(broker_without_ray.py), damaged as tester D did (one hex digit flipped)."""

from __future__ import annotations

import json
import logging

import pytest

from plinth.control.data_dir_check import load_checked_metadata
from plinth.errors import CorruptDataError
from plinth.shards.shard_calls import PartitionId
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
    assert "would set that partition's log aside and start it empty" in said
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


# --- metadata.json and the manifests disagreeing (tester D's defects 1-3) -----------------
# A shard never deletes a log over a topic-id disagreement it cannot prove is a deletion:
# it keeps it (the damaged file written again) or sets it aside whole; plinth check and
# the start say each disagreement first.

VALUES = [b"%04d" % n for n in range(50)]


@pytest.fixture
def cor_broker(tmp_path):
    """A stopped broker's data dir whose topic cor (1 partition) holds 50 acknowledged
    records; returns (data dir, cor's topic id, the directory of cor-0)."""
    broker = Broker(tmp_path / "data", 2, ONE_NODE)
    broker.controller.start()
    broker.controller.create_topic("cor", 1, {}, 1)
    for value in VALUES:
        broker.produce("cor", 0, [value], acks=-1)
    owner = broker.owner("cor", 0)
    topic_id = broker.metadata_on_disk().topics["cor"].topic_id
    broker.shards.stop_all()
    return broker.data_dir, topic_id, broker.data_dir / "shards" / owner / "cor-0"


def flip_last_hex_digit(path, topic_id: str) -> str:
    """Replace ``topic_id`` in the file at ``path`` by the id whose last hex digit is
    flipped (as ``sed s/...1/...0/`` did); returns that id."""
    flipped = topic_id[:-1] + ("0" if topic_id[-1] != "0" else "1")
    data = path.read_bytes()
    assert topic_id.encode() in data
    path.write_bytes(data.replace(topic_id.encode(), flipped.encode()))
    return flipped


def plinth_check(data_dir):
    from click.testing import CliRunner

    from plinth.cli import main

    return CliRunner().invoke(main, ["check", "--data-dir", str(data_dir)])


def restarted(data_dir) -> Broker:
    broker = Broker(data_dir, 2, ONE_NODE)
    broker.controller.start()
    return broker


def served_values(broker, topic: str) -> list[bytes]:
    from tests.shard_requests import fetch_values

    return fetch_values(broker.address(broker.owner(topic, 0)), topic, 0, 0)


def records_in(directory) -> list[bytes]:
    """The values of the log in ``directory`` (a set-aside one), read from its files."""
    from plinth.format.log_entry import iter_entries
    from plinth.format.record_batch import decode_records
    from plinth.shards.partition_log import LogConfig, PartitionLog

    log = PartitionLog.open(directory, LogConfig())
    try:
        payload = bytes(log.read(0, 1 << 24, log.end_offset))
    finally:
        log.close()
    return [r.value for header, batch in iter_entries(payload)
            for r in decode_records("cor", 0, header.base_offset, batch, 0)]


def set_aside_of(directory) -> list:
    return sorted(p for p in directory.parent.iterdir()
                  if p.name.startswith(f"{directory.name}.") and p.name.endswith("-orphan"))


def test_a_flipped_digit_in_a_manifests_topic_id_keeps_and_serves_the_log(cor_broker, caplog):
    # Given one hex digit of cor's id flipped in its shard's manifest.json (metadata.json
    # and cor-0's partition.metadata still say the right id)
    data_dir, topic_id, directory = cor_broker
    manifest = directory.parent / "manifest.json"
    flipped = flip_last_hex_digit(manifest, topic_id)
    # When checked / Then the manifest is said damaged, with both ids, and what a start does
    result = plinth_check(data_dir)
    assert result.exit_code == 1, result.output
    assert (f"DAMAGED {manifest} says topic cor has id {flipped}, {data_dir / 'metadata.json'} "
            f"{topic_id}, as {directory / 'partition.metadata'} does: the manifest is damaged "
            f"(a start keeps the log of cor-0, serves it, and writes the manifest's entry "
            f"again)") in result.output
    # When the broker starts on it
    with caplog.at_level(logging.WARNING, logger="plinth"):
        broker = restarted(data_dir)
    # Then every acknowledged record is served, nothing set aside, the manifest right
    assert served_values(broker, "cor") == VALUES and set_aside_of(directory) == []
    assert broker.manifest(directory.parent.name).partitions[
        PartitionId("cor", 0)].topic_id == topic_id
    assert directory.joinpath("partition.metadata").read_text().endswith(f"{topic_id}\n")
    # And the damage is an ERROR naming the manifest as the damaged file
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"cor-0: the shard's manifest names topic id {flipped}, but the controller and "
               f"its partition.metadata say {topic_id}: the manifest was damaged" in e
               for e in errors), errors
    broker.shards.stop_all()
    # And a check afterwards is clean
    assert plinth_check(data_dir).exit_code == 0


def test_a_flipped_digit_in_metadata_json_sets_the_log_aside_whole(cor_broker, caplog):
    # Given one hex digit of cor's id flipped in metadata.json (the manifest and
    # partition.metadata still say the id the records were written under)
    data_dir, topic_id, directory = cor_broker
    flipped = flip_last_hex_digit(data_dir / "metadata.json", topic_id)
    # When checked / Then the disagreement is damage, naming the files, ids, and the start
    result = plinth_check(data_dir)
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if "says topic cor has id" in line]
    assert line.startswith(f"DAMAGED {directory.parent / 'manifest.json'} says topic cor has "
                           f"id {topic_id}, {data_dir / 'metadata.json'} {flipped}; "
                           f"{directory / 'partition.metadata'} says {topic_id}: "
                           f"metadata.json is damaged, or the topic was deleted and created "
                           f"again while shard {directory.parent.name} was down")
    assert f"A start sets the log {directory} aside, whole, as cor-0.<ns>-orphan" in line
    # When the broker starts on it
    with caplog.at_level(logging.WARNING, logger="plinth"):
        broker = restarted(data_dir)
    # Then cor-0 opens empty, and its old log is set aside holding every record
    assert served_values(broker, "cor") == []
    broker.shards.stop_all()
    [aside] = set_aside_of(directory)
    assert records_in(aside) == VALUES
    assert f"Set aside as {aside}, whole" in caplog.text and "deleting" not in caplog.text
    assert "every record it held is lost" not in caplog.text


def test_metadata_json_without_a_topic_the_manifests_hold_keeps_its_log_until_created_again(
        cor_broker, caplog):
    # Given metadata.json without topic cor (an older copy restored)
    data_dir, topic_id, directory = cor_broker
    path = data_dir / "metadata.json"
    value = json.loads(path.read_text())
    value["topics"] = {}
    path.write_text(json.dumps(value))
    # When checked / Then the partition is said, with what a start and a create do
    result = plinth_check(data_dir)
    assert result.exit_code == 1, result.output
    assert (f"DAMAGED {directory.parent / 'manifest.json'} names partition cor-0 (topic id "
            f"{topic_id}), but {path} has no topic cor (an older copy restored?): a start "
            f"keeps its log {directory} but serves it to no one, and creating topic cor "
            f"again sets that log aside (cor-0.<ns>-orphan)") in result.output
    # When the broker starts on it / Then one WARNING names the topic
    with caplog.at_level(logging.WARNING, logger="plinth.control.data_dir_check"):
        broker = restarted(data_dir)
    [warning] = [r.getMessage() for r in caplog.records
                 if r.name == "plinth.control.data_dir_check"]
    assert warning.startswith(f"the shard manifests here hold partitions of 1 topic(s) {path} "
                              f"has not: cor (an older copy restored?)")
    assert "cor" not in broker.metadata_on_disk().topics
    # When topic cor is created again
    broker.controller.create_topic("cor", 1, {}, 1)
    # Then it is empty, and the old log is set aside holding every record
    assert served_values(broker, "cor") == []
    broker.shards.stop_all()
    [aside] = set_aside_of(directory)
    assert records_in(aside) == VALUES


def test_a_deletion_still_owed_of_a_topic_created_again_is_a_note_and_the_log_is_set_aside(
        cor_broker, caplog):
    # Given cor deleted while its shard was down (metadata.json owes that shard the
    # deletion) and created again under a new id, the shard's manifest still holding it
    from plinth import topics

    data_dir, topic_id, directory = cor_broker
    shard_id, new_id = directory.parent.name, topics.new_topic_id()
    path = data_dir / "metadata.json"
    value = json.loads(path.read_text())
    value["topics"]["cor"]["topic_id"] = new_id
    value["deletes_owed"] = {shard_id: [["cor", topic_id, [0]]]}
    path.write_text(json.dumps(value))
    # When checked / Then it is a note, not damage, saying what a start does
    result = plinth_check(data_dir)
    assert result.exit_code == 0, result.output
    assert (f"note    {directory.parent / 'manifest.json'} names partition cor-0 of topic id "
            f"{topic_id}, deleted (metadata.json owes shard {shard_id} the deletion) and "
            f"created again as id {new_id}: a start sets the old log {directory} aside as "
            f"cor-0.<ns>-orphan (remove it then) and opens the partition empty"
            ) in result.output
    # When the broker starts on it / Then cor-0 is empty and the old log set aside whole
    broker = restarted(data_dir)
    assert served_values(broker, "cor") == []
    broker.shards.stop_all()
    [aside] = set_aside_of(directory)
    assert records_in(aside) == VALUES


def test_a_topic_id_disagreement_without_a_partition_metadata_cannot_say_which_file_is_damaged(
        cor_broker):
    # Given metadata.json's id of cor flipped, and cor-0 without its partition.metadata
    data_dir, topic_id, directory = cor_broker
    flipped = flip_last_hex_digit(data_dir / "metadata.json", topic_id)
    (directory / "partition.metadata").unlink()
    # When checked / Then neither file is blamed alone, and the start's set-aside is said
    result = plinth_check(data_dir)
    assert result.exit_code == 1, result.output
    assert (f"{data_dir / 'metadata.json'} {flipped}; {directory} has no partition.metadata "
            f"that says an id: metadata.json or the manifest is damaged, or the topic was "
            f"deleted and created again") in result.output
    # And a start keeps every record, aside
    broker = restarted(data_dir)
    broker.shards.stop_all()
    [aside] = set_aside_of(directory)
    assert records_in(aside) == VALUES
