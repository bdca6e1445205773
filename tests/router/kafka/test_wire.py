"""Kafka's primitive types (router/kafka/wire.py): known encodings from Kafka's
own tests (ByteUtilsTest), round trips of every value, and bounds checks."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, strategies as st

from plinth.errors import KafkaDecodeError
from plinth.router.kafka.wire import Reader, Writer


def written(method: str, *args) -> bytes:
    w = Writer()
    getattr(w, method)(*args)
    return b"".join(bytes(b) for b in w.finish())


@pytest.mark.parametrize("value, encoded", [
    (0, "00"), (-1, "01"), (1, "02"), (63, "7e"), (-64, "7f"), (64, "8001"), (-65, "8101"),
    (2**31 - 1, "feffffff0f"), (-(2**31), "ffffffff0f")])
def test_varints_are_zigzag_encoded_as_kafka_does(value, encoded):
    assert written("varint", value).hex() == encoded
    assert Reader(bytes.fromhex(encoded)).varint() == value


@given(st.integers(-(2**63), 2**63 - 1))
def test_every_varlong_round_trips(value):
    data = written("varlong", value)
    reader = Reader(data)
    assert reader.varlong() == value and reader.left() == 0 and len(data) <= 10


@given(st.integers(0, 2**32 - 1))
def test_every_unsigned_varint_round_trips(value):
    assert Reader(written("unsigned_varint", value)).unsigned_varint() == value


@given(st.one_of(st.none(), st.text(max_size=50)), st.booleans())
def test_strings_round_trip_in_both_forms(value, compact):
    assert Reader(written("string", value, compact)).string(compact, nullable=True) == value


@given(st.one_of(st.none(), st.binary(max_size=300)), st.booleans())
def test_bytes_round_trip_in_both_forms(value, compact):
    assert Reader(written("bytes", value, compact)).bytes(compact, nullable=True) == value


@pytest.mark.parametrize("method, value, size", [
    ("int8", -128, 1), ("int16", -32768, 2), ("int32", 2**31 - 1, 4), ("int64", -(2**63), 8),
    ("uint16", 65535, 2), ("uint32", 2**32 - 1, 4), ("float64", -1.5, 8), ("bool", True, 1),
    ("uuid", uuid.UUID(int=2**128 - 1), 16)])
def test_fixed_size_types_round_trip_and_refuse_a_short_buffer(method, value, size):
    data = written(method, value)
    assert len(data) == size and getattr(Reader(data), method)() == value
    with pytest.raises(KafkaDecodeError, match=f"needs {size} bytes, {size - 1} left"):
        getattr(Reader(data[:-1]), method)()


def test_a_reader_stops_at_its_end_not_at_the_buffer_end():
    reader = Reader(b"\x00\x00\x00\x07\x00\x00\x00\x08", 0, 4)
    assert reader.int32() == 7
    with pytest.raises(KafkaDecodeError):
        reader.int32()


def test_an_array_count_larger_than_the_bytes_left_is_refused():
    with pytest.raises(KafkaDecodeError, match="array of 1000 elements of at least 4 bytes"):
        Reader(b"\x00\x00\x03\xe8" + b"\x00" * 100).array_count(False, False, 4)


def test_large_records_are_passed_on_uncopied_and_small_ones_copied():
    big, small = memoryview(b"x" * 5000), b"y" * 10
    w = Writer()
    w.int8(1)
    w.records([small, big, small], compact=False)
    chunks = w.finish()
    assert chunks[1] is big and len(chunks) == 3
    assert b"".join(bytes(c) for c in chunks) == b"\x01" + (5020).to_bytes(4, "big") + \
        small + b"x" * 5000 + small
