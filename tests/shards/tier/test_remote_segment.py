"""The objects and manifest of one remote segment (shards/tier/remote_segment.py)."""

from __future__ import annotations

import pytest

from plinth.errors import CorruptDataError
from plinth.shards.tier.remote_segment import (
    ObjectDigest, RemoteSegment, manifest_prefix, new_segment_id, partition_prefix,
    segment_id_of_manifest)


ORDERS_ID = "0c5a1e2d3f4b5a697887766554433221"


def a_segment(**changes):
    fields = dict(topic="orders", topic_id=ORDERS_ID, partition=7, segment_id="0123456789abcdef", base_offset=52931,
                  end_offset=60000, max_timestamp_ms=1_700_000_000_000, leader_epoch=4,
                  created_ms=1_700_000_100_000,
                  objects={"log": ObjectDigest(1000, 1), "index": ObjectDigest(16, 2),
                           "timeindex": ObjectDigest(24, 3), "leader-epochs": ObjectDigest(30, 4)})
    fields.update(changes)
    return RemoteSegment(**fields)


def test_object_names_sort_by_offset_and_carry_the_upload_id():
    segment = a_segment()
    assert segment.object_key("log") == \
        f"orders-{ORDERS_ID}/7/00000000000000052931-0123456789abcdef.log"
    assert segment.manifest_key == \
        f"orders-{ORDERS_ID}/7/manifests/00000000000000052931-0123456789abcdef.manifest"
    assert segment.manifest_key.startswith(manifest_prefix("orders", ORDERS_ID, 7))
    assert not manifest_prefix("orders", ORDERS_ID, 70).startswith(
        manifest_prefix("orders", ORDERS_ID, 7))


def test_each_upload_gets_its_own_id():
    assert len({new_segment_id() for _ in range(1000)}) == 1000


def test_a_manifest_reads_back_as_the_segment_it_describes():
    segment = a_segment()
    assert RemoteSegment.from_manifest(segment.to_manifest(), segment.manifest_key) == segment
    assert segment.size_bytes == 1000 and segment.stored_bytes == 1070


@pytest.mark.parametrize("position", [0, 5, 40, -12, -2])
def test_a_flipped_byte_anywhere_in_a_manifest_is_corrupt_data(position):
    segment = a_segment()
    data = bytearray(segment.to_manifest())
    data[position] ^= 0x02
    with pytest.raises(CorruptDataError, match=segment.manifest_key):
        RemoteSegment.from_manifest(bytes(data), segment.manifest_key)


def test_a_torn_manifest_is_corrupt_data():
    segment = a_segment()
    data = segment.to_manifest()
    for length in (0, 10, len(data) - 1):
        with pytest.raises(CorruptDataError):
            RemoteSegment.from_manifest(data[:length], segment.manifest_key)


def test_a_manifest_under_another_name_is_corrupt_data():
    segment = a_segment()
    other = a_segment(segment_id="fedcba9876543210")
    with pytest.raises(CorruptDataError, match="describes"):
        RemoteSegment.from_manifest(segment.to_manifest(), other.manifest_key)


def test_a_manifest_without_its_log_object_is_corrupt_data():
    segment = a_segment(objects={"index": ObjectDigest(16, 2)})
    with pytest.raises(CorruptDataError, match="lack"):
        RemoteSegment.from_manifest(segment.to_manifest(), segment.manifest_key)


def test_an_empty_range_or_a_malformed_id_is_a_programmer_error():
    with pytest.raises(AssertionError):
        a_segment(end_offset=52931)
    with pytest.raises(AssertionError):
        a_segment(segment_id="../../etc")


def test_a_topic_created_again_names_its_segments_under_another_prefix():
    # Given the same segment of a topic and of the topic created again under its name
    old, new = a_segment(), a_segment(topic_id="f" * 32)
    # Then no key of one is under the other's prefix
    assert not new.manifest_key.startswith(manifest_prefix("orders", ORDERS_ID, 7))
    assert not old.object_key("log").startswith(partition_prefix("orders", "f" * 32, 7))


def test_a_manifest_read_under_another_topic_ids_key_is_corrupt():
    # Given a manifest of the topic, found under the key of the topic created again
    segment = a_segment()
    other_key = a_segment(topic_id="f" * 32).manifest_key
    # Then it is refused, naming both keys
    with pytest.raises(CorruptDataError, match=f"manifest {other_key} describes "
                                               f"{segment.manifest_key}"):
        RemoteSegment.from_manifest(segment.to_manifest(), other_key)


def test_a_manifest_of_version_1_without_a_topic_id_is_refused():
    record = a_segment().to_record()
    del record["topic_id"]
    record["version"] = 1
    with pytest.raises(CorruptDataError, match="version is not 2"):
        RemoteSegment.from_record(record, "a manifest")


def test_a_manifests_key_tells_its_segment_id_without_reading_it():
    segment = a_segment()
    assert segment_id_of_manifest(segment.manifest_key) == "0123456789abcdef"
    assert segment_id_of_manifest(segment.object_key("log")) is None
    assert segment_id_of_manifest("orders/7/manifests/junk.manifest") is None


def test_a_topic_id_that_is_not_32_hex_digits_is_a_programmer_error():
    with pytest.raises(AssertionError, match="topic id 'ORDERS'"):
        a_segment(topic_id="ORDERS")
    with pytest.raises(AssertionError, match="topic id ''"):
        partition_prefix("orders", "", 7)
