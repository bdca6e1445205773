"""Specification of plinth.client.arguments: what the clients' checks take, and in
what form they pass it on."""

from __future__ import annotations

import pytest

from plinth.client.arguments import checked_topic_id

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
