"""Good and bad calls of Producer.send, and the check that a bad call leaves no trace.

Shared by tests/client/test_producer.py (an in-process broker) and
tests/e2e/test_producer_e2e.py (a real one). ``calls(topics)`` is a hypothesis
strategy of call lists that interleave good sends (every form the API allows),
bad ones (wrong types for each argument, oversized records, unknown partitions
and topics, bad headers, unknown arguments), flushes, and optionally a close
followed by more calls; ``calls_with_every_bad_call`` has each bad call once. ``run`` makes the calls, checking each bad one raises
what it should; ``check_stored`` then checks that every good send's future
resolved to the offset where its record is stored, and nothing else was stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from plinth.client.accumulator import RECORD_BYTES_MAX
from plinth.client.partitioner import partition_for_key
from plinth.errors import (ClosedError, PartitionOutOfRangeError, RecordTooLargeError,
                           UnknownTopicError)
from plinth.format.record_batch import RECORD_OVERHEAD_BYTES

INT64_MIN = -(2**63)
T0_MS = 1_700_000_000_000
UNKNOWN_TOPIC = "no-such-topic"
# A value one byte too large for any batch, built once (16 MiB).
OVERSIZED = b"x" * (RECORD_BYTES_MAX - RECORD_OVERHEAD_BYTES + 1)


@dataclass
class Call:
    """One send(): its arguments, and what it must do."""

    args: tuple
    kwargs: dict
    refused_with: tuple[type[BaseException], ...] = ()     # empty: a good send
    label: str = "good"

    def __repr__(self) -> str:   # short: hypothesis prints failing examples
        shown = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) and len(v) > 40 else v)
                 for k, v in self.kwargs.items()}
        return f"{self.label}: send{self.args!r:.60} {shown!r:.160}"


@dataclass
class Flush:
    def __repr__(self) -> str:
        return "flush"


@dataclass
class Close:
    def __repr__(self) -> str:
        return "close"


@dataclass
class Sent:
    """A good send and its future."""

    call: Call
    future: object
    topic: str = ""
    fields: dict = field(default_factory=dict)


def _as_bytes(data) -> bytes | None:
    return None if data is None else bytes(data)


# --- Good calls -----------------------------------------------------------------------

blobs = st.none() | st.binary(max_size=24) | st.binary(max_size=24).map(bytearray) \
    | st.binary(max_size=24).map(memoryview)
# Timestamps a shard stores: from the epoch (a negative one breaks a rule of the
# batch, failing every record in it) to now (a topic refuses records stamped more
# than message.timestamp.after.max.ms ahead of the shard's clock).
timestamps = st.none() | st.sampled_from([0, T0_MS]) | st.integers(0, T0_MS)
headers = st.none() | st.just([]) | st.lists(
    st.tuples(st.text(max_size=8), st.binary(max_size=8)), min_size=1, max_size=3)


@st.composite
def good_call(draw, topics: dict[str, int]) -> Call:
    topic = draw(st.sampled_from(sorted(topics)))
    value, key = draw(blobs), draw(blobs)
    partition = draw(st.none() | st.integers(0, topics[topic] - 1))
    kwargs = {"key": key, "partition": partition, "timestamp_ms": draw(timestamps),
              "headers": draw(headers)}
    kwargs = {name: arg for name, arg in kwargs.items() if arg is not None or draw(st.booleans())}
    if draw(st.booleans()):
        return Call((topic, value), kwargs)
    return Call((topic,), {**kwargs, "value": value})


# --- Bad calls ------------------------------------------------------------------------

def bad_calls(topics: dict[str, int]) -> list[Call]:
    """One call for each way of getting send() wrong, with what it must raise."""
    topic = sorted(topics)[0]
    count = topics[topic]
    refusals = [
        ("topic not a str", (123, b"v"), {}, TypeError),
        ("topic None", (None, b"v"), {}, TypeError),
        ("topic bytes", (topic.encode(), b"v"), {}, TypeError),
        ("unknown topic", (UNKNOWN_TOPIC, b"v"), {}, UnknownTopicError),
        ("key a str", (topic, b"v"), {"key": "text"}, TypeError),
        ("key an int", (topic, b"v"), {"key": 5}, TypeError),
        ("value a str", (topic, "text"), {}, TypeError),
        ("value a dict", (topic, {}), {}, TypeError),
        ("partition a str", (topic, b"v"), {"partition": "0"}, TypeError),
        ("partition a float", (topic, b"v"), {"partition": 1.0}, TypeError),
        ("partition -1", (topic, b"v"), {"partition": -1}, PartitionOutOfRangeError),
        ("partition past the last", (topic, b"v"), {"partition": count},
         PartitionOutOfRangeError),
        ("partition 2**70", (topic, b"v"), {"partition": 2**70}, PartitionOutOfRangeError),
        ("timestamp a str", (topic, b"v"), {"timestamp_ms": "now"}, TypeError),
        ("timestamp a float", (topic, b"v"), {"timestamp_ms": 1.5}, TypeError),
        ("timestamp -1", (topic, b"v"), {"timestamp_ms": -1}, ValueError),
        ("timestamp Int64's smallest", (topic, b"v"), {"timestamp_ms": INT64_MIN}, ValueError),
        ("timestamp past Int64", (topic, b"v"), {"timestamp_ms": 2**63}, OverflowError),
        ("timestamp before Int64", (topic, b"v"), {"timestamp_ms": INT64_MIN - 1},
         OverflowError),
        ("header value a str", (topic, b"v"), {"headers": [("h", "text")]}, TypeError),
        ("header key bytes", (topic, b"v"), {"headers": [(b"h", b"v")]}, TypeError),
        ("headers a str", (topic, b"v"), {"headers": "h"}, TypeError),
        ("headers an int", (topic, b"v"), {"headers": 5}, TypeError),
        ("header of one item", (topic, b"v"), {"headers": [("h",)]}, TypeError),
        ("header of three items", (topic, b"v"), {"headers": [("h", b"v", b"x")]}, TypeError),
        ("header key not text", (topic, b"v"), {"headers": [("\ud800", b"v")]},
         UnicodeEncodeError),
        ("value too large", (topic, OVERSIZED), {}, RecordTooLargeError),
        ("value too large, keyed", (topic, OVERSIZED), {"key": b"k", "partition": 0},
         RecordTooLargeError),
        ("headers too large", (topic, b"v"), {"headers": [("h", OVERSIZED)]},
         RecordTooLargeError),
        ("unknown argument", (topic, b"v"), {"colour": "red"}, TypeError),
        ("a third positional", (topic, b"v", b"k"), {}, TypeError),
        ("value twice", (topic, b"v"), {"value": b"w"}, TypeError),
    ]
    return [Call(args, kwargs, (error,), label) for label, args, kwargs, error in refusals]


def calls(topics: dict[str, int], size_max: int = 40):
    """Lists of good calls, bad calls and flushes; sometimes a close and more calls."""
    step = st.one_of(good_call(topics), good_call(topics), st.sampled_from(bad_calls(topics)),
                     st.just(Flush()))
    return st.tuples(st.lists(step, min_size=1, max_size=size_max), st.booleans(),
                     st.lists(good_call(topics) | st.sampled_from(bad_calls(topics)),
                              max_size=3)).map(
        lambda parts: parts[0] + ([Close()] + parts[2] if parts[1] else []))


def calls_with_every_bad_call(topics: dict[str, int]):
    """Every bad call once, shuffled, each after a few good sends or a flush; for a
    test that can afford only a handful of examples (a real broker)."""
    bad = st.permutations(bad_calls(topics))
    goods = st.lists(st.lists(good_call(topics) | st.just(Flush()), max_size=3),
                     min_size=len(bad_calls(topics)), max_size=len(bad_calls(topics)))
    return st.tuples(bad, goods, st.lists(good_call(topics), min_size=1, max_size=5)).map(
        lambda parts: [step for before, call in zip(parts[1], parts[0])
                       for step in (*before, call)] + parts[2])


def renamed(steps: list, names: dict[str, str]) -> list:
    """``steps`` with each topic name in ``names`` replaced (fresh topics per example)."""
    def rename(call: Call) -> Call:
        topic = call.args[0] if call.args else None
        if not isinstance(topic, str) or topic not in names:
            return call
        return Call((names[topic], *call.args[1:]), call.kwargs, call.refused_with, call.label)

    return [rename(step) if isinstance(step, Call) else step for step in steps]


# --- Running them, and checking what was stored ------------------------------------------

def run(producer, steps: list) -> list[Sent]:
    """Make the calls; every bad one must raise what it should, and every call after
    a close ClosedError (flush too). Returns the good sends that were made, with their futures."""
    sent, closed = [], False
    for step in steps:
        if isinstance(step, Flush) and closed:
            try:
                producer.flush(30)
            except ClosedError:
                continue
            raise AssertionError("flush() after close() did not raise ClosedError")
        elif isinstance(step, Flush):
            producer.flush(30)
        elif isinstance(step, Close):
            producer.close()
            closed = True
        elif closed or step.refused_with:
            # after a close, a call wrong in another way too may say either
            expected = ((ClosedError,) if closed else ()) + step.refused_with
            try:
                producer.send(*step.args, **step.kwargs)
            except expected:
                continue
            raise AssertionError(f"{step!r} did not raise {expected}")
        else:
            sent.append(Sent(step, producer.send(*step.args, **step.kwargs)))
    return sent


def expected_fields(call: Call) -> dict:
    """What the stored record of a good send must hold."""
    args = dict(zip(("topic", "value"), call.args), **call.kwargs)
    return {"key": _as_bytes(args.get("key")), "value": _as_bytes(args.get("value")),
            "headers": list(args.get("headers") or []), "timestamp_ms": args.get("timestamp_ms"),
            "partition": args.get("partition"), "topic": args["topic"]}


def check_stored(sent: list[Sent], read_record, stored_count: int, topics: dict[str, int],
                 timeout_s: float = 30) -> None:
    """Every good send's future resolved to the offset where its record is stored
    (``read_record(topic, partition, offset)``), and nothing else was stored."""
    places = set()
    for one in sent:
        expected = expected_fields(one.call)
        metadata = one.future.get(timeout_s)
        assert metadata.topic == expected["topic"]
        if expected["partition"] is not None:
            assert metadata.partition == expected["partition"]
        elif expected["key"] is not None:
            assert metadata.partition == partition_for_key(expected["key"],
                                                           topics[expected["topic"]])
        record = read_record(metadata.topic, metadata.partition, metadata.offset)
        assert (record.key, record.value, record.headers) == \
            (expected["key"], expected["value"], expected["headers"]), one.call
        if expected["timestamp_ms"] is not None:
            assert record.timestamp_ms == expected["timestamp_ms"]
        places.add((metadata.topic, metadata.partition, metadata.offset))
    assert len(places) == len(sent) == stored_count
