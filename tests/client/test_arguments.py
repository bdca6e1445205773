"""Specification of plinth.client.arguments: what the clients' checks take, and in
what form they pass it on."""

from __future__ import annotations

import pytest

from plinth import limits
from plinth.client.arguments import checked_commit_offsets, checked_topic_id, checked_wait_s
from plinth.errors import OffsetMetadataTooLargeError

TOPIC_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("given", [
    TOPIC_ID,
    TOPIC_ID.upper(),
    "01234567-89ab-cdef-0123-456789abcdef",
    "01234567-89AB-CDEF-0123-456789ABCDEF",
])
def test_a_topic_id_in_upper_case_or_as_a_dashed_uuid_is_taken_as_32_lowercase_hex_digits(
        given):
    assert checked_topic_id("topic_id", given) == TOPIC_ID


def test_no_topic_id_is_the_empty_string_the_wire_carries_for_any_id():
    assert checked_topic_id("topic_id", None) == ""


@pytest.mark.parametrize("given", [
    "ABC",
    "",
    TOPIC_ID[:-1],
    TOPIC_ID + "0",
    "0123456789abcdef0123456789abcdeg",
    "{01234567-89ab-cdef-0123-456789abcdef}",
    "urn:uuid:01234567-89ab-cdef-0123-456789abcdef",
    "0123456789abcdef_0123456789abcde",
    "0123-4567-89ab-cdef-0123-456789abcdef",
    "ASNFZ4mrze8BI0VniavN7w==",   # Kafka's base64 form of the same id
    " " + TOPIC_ID,
])
def test_a_malformed_topic_id_is_refused_naming_the_argument_and_the_forms_taken(given):
    with pytest.raises(ValueError) as refused:
        checked_topic_id("topic_id", given)
    assert str(refused.value).startswith(f"topic_id={given!r} is not a topic id: 32 hex digits")
    assert "(or as a dashed UUID)" in str(refused.value)


def test_a_topic_id_that_is_not_a_str_is_refused_with_type_error():
    with pytest.raises(TypeError, match="topic_id must be a str of 32 hex digits or None"):
        checked_topic_id("topic_id", 0x0123456789ABCDEF0123456789ABCDEF)


@pytest.mark.parametrize("given, taken", [(None, None), (float("inf"), None), (0, 0),
                                          (1.5, 1.5), (limits.CLIENT_WAIT_S_MAX,
                                                       limits.CLIENT_WAIT_S_MAX)])
def test_a_wait_in_seconds_is_none_inf_or_a_number_from_0_to_the_limit(given, taken):
    assert checked_wait_s("get timeout", given) == taken


@pytest.mark.parametrize("given", ["1", True, [1], b"1"])
def test_a_wait_that_is_not_a_number_is_refused_with_type_error_naming_the_call(given):
    with pytest.raises(TypeError, match=r"get timeout must be a number of seconds in 0\.\..*"
                                        r"or None \(no limit\), got"):
        checked_wait_s("get timeout", given)


@pytest.mark.parametrize("given", [-1, -0.001, float("nan"), float("-inf"),
                                   limits.CLIENT_WAIT_S_MAX + 1])
def test_a_negative_nan_or_too_long_wait_is_refused_naming_the_range(given):
    with pytest.raises(ValueError, match=r"close timeout=.* is outside 0\.\.2147483\.647 s"):
        checked_wait_s("close timeout", given)


# --- Commits: the offsets kafka-python's and aiokafka's commit() take ---------------------

def test_a_commit_takes_kafka_pythons_offset_and_metadata_and_aiokafkas_pair_and_an_int():
    from kafka.structs import OffsetAndMetadata, TopicPartition
    offsets, metadata = checked_commit_offsets("commit", {
        TopicPartition("t", 0): OffsetAndMetadata(7, "", -1),
        TopicPartition("t", 1): OffsetAndMetadata(8, "note", 3),
        ("t", 2): (9, "pair"),
        ("t", 3): (10, None),
        ("t", 4): 11,
    })
    # Every offset as a plain int; the metadata only where not empty (the leader epoch
    # is not stored)
    assert offsets == {("t", 0): 7, ("t", 1): 8, ("t", 2): 9, ("t", 3): 10, ("t", 4): 11}
    assert metadata == {("t", 1): "note", ("t", 2): "pair"}


@pytest.mark.parametrize("value, error, message", [
    ((1, 2, 3), TypeError, r"commit: the value of \('t', 0\) is \(1, 2, 3\): give an offset, "
                           r"an \(offset, metadata\) pair or an OffsetAndMetadata"),
    ((1, b"m"), TypeError, r"the metadata of \('t', 0\) must be a str \(or None\), got b'm'"),
    (("1", ""), TypeError, r"the offset of \('t', 0\) must be an int"),
    ((-1, ""), ValueError, r"the offset of \('t', 0\)=-1 is outside"),
    ((1, "é" * 2049), OffsetMetadataTooLargeError,
     r"the metadata of \('t', 0\) is 4098 UTF-8 bytes, over OFFSET_METADATA_BYTES_MAX=4096"),
])
def test_a_commit_value_that_is_no_offset_or_whose_metadata_is_wrong_is_refused_naming_it(
        value, error, message):
    with pytest.raises(error, match=message):
        checked_commit_offsets("commit", {("t", 0): value})


def test_metadata_of_exactly_the_coordinators_limit_is_taken():
    text = "m" * limits.OFFSET_METADATA_BYTES_MAX
    assert checked_commit_offsets("commit", {("t", 0): (1, text)})[1] == {("t", 0): text}
