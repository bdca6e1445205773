"""Checks of what the client's calls and options are given, before anything is sent.

Client side, any thread: pure functions, shared by the sync and asyncio clients.
Each returns the value as its plain type, or raises TypeError (the wrong type)
or ValueError (out of range) naming the argument, the value and what is
allowed: a wrong argument never reaches the wire, where it would fail as a
Cap'n Proto "Value out-of-range" or a struct.error, or be sent as something
else. A bool is refused where an int is wanted (True is not partition 1), as
elect_leaders refuses it; nan fails every range check.

Checks that cost a call run in constructors and on slow paths only, never on
the producer's per-record fast path (client/_producer.c).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from plinth import limits
from plinth.errors import OffsetMetadataTooLargeError
from plinth.topics import TOPIC_ID_HEX_DIGITS, is_topic_id

# A topic id written as a UUID: 8-4-4-4-12 hex digits, either case.
_DASHED_UUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


def checked_int(name: str, value, lowest: int, highest: int) -> int:
    """``value`` as an int in lowest..highest."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in {lowest}..{highest}, got {value!r} "
                        f"({type(value).__name__})")
    if not lowest <= value <= highest:
        raise ValueError(f"{name}={value} is outside {lowest}..{highest}")
    return int(value)


def checked_ms(name: str, value, lowest: float,
               highest: float = limits.CLIENT_OPTION_MS_MAX, *,
               inf_means: str | None = None) -> float:
    """A time option in ms (an int or a float) in lowest..highest; nan is refused, and
    so is inf unless ``inf_means`` says what it means (consumer_timeout_ms's default,
    float("inf"): never, as in kafka-python)."""
    also = f", or inf ({inf_means})" if inf_means else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of ms in {lowest}..{highest}{also}, got "
                        f"{value!r} ({type(value).__name__})")
    if inf_means and value == float("inf"):
        return value
    if not lowest <= value <= highest:
        raise ValueError(f"{name}={value} is outside {lowest}..{highest} ms{also}")
    return value


def checked_wait_s(name: str, value) -> float | None:
    """A call's wait in seconds (future.get, flush, close): None or inf (no limit), or
    a number in 0..CLIENT_WAIT_S_MAX. A str or a negative wait would otherwise fail
    deep inside threading, or be taken as "give up at once"."""
    highest = limits.CLIENT_WAIT_S_MAX
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds in 0..{highest}, or None "
                        f"(no limit), got {value!r} ({type(value).__name__})")
    if value == float("inf"):
        return None
    if not 0 <= value <= highest:
        raise ValueError(f"{name}={value} is outside 0..{highest} s (None: no limit)")
    return value


def checked_bool(name: str, value) -> bool:
    """A switch: True or False only. A str such as "false" (read from a config file)
    would otherwise be taken as True, and 0 or 1 as what the caller may not mean."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def checked_int_type(name: str, value) -> int:
    """``value`` as an int, its range left to the caller's own check (and error)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def checked_str(name: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} ({type(value).__name__})")
    return str(value)


def checked_topic_id(name: str, value) -> str:
    """A topic id as describe_topic shows it (32 lowercase hex digits), or None for
    none: "" (what the wire carries for "any id"). The same id in upper case, or
    as a dashed UUID (8-4-4-4-12 hex digits, as a user may copy it from a UUID
    tool), is taken too and returned as describe_topic shows it: one id has one
    form on the wire. Kafka's base64 form is not taken."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str of {TOPIC_ID_HEX_DIGITS} hex digits or None, "
                        f"got {value!r} ({type(value).__name__})")
    # A strict pattern, not uuid.UUID(value): that also takes braces, "urn:uuid:"
    # and digits split by underscores (int()'s rules).
    dashed = _DASHED_UUID.match(value) is not None
    normalized = (value.replace("-", "") if dashed else value).lower()
    if not value.isascii() or not is_topic_id(normalized):
        raise ValueError(f"{name}={value!r} is not a topic id: {TOPIC_ID_HEX_DIGITS} hex "
                         f"digits, as describe_topic shows it (or as a dashed UUID)")
    return normalized


def checked_topic_names(name: str, topics) -> list[str]:
    """A list (any iterable) of topic names. A single str is refused rather than read
    as the list of its characters (kafka-python's and aiokafka's calls take a list)."""
    if isinstance(topics, (str, bytes)):
        raise TypeError(f"{name} takes a list of topic names, not a {type(topics).__name__}: "
                        f"[{topics!r}], not {topics!r}")
    try:
        names = list(topics)
    except TypeError:
        raise TypeError(f"{name} takes a list of topic names, got {topics!r} "
                        f"({type(topics).__name__})") from None
    return [checked_str(f"each topic name in {name}", topic) for topic in names]


def checked_partition(name: str, partition) -> int:
    return checked_int(name, partition, 0, limits.PARTITIONS_PER_TOPIC_MAX - 1)


def checked_offset(name: str, offset) -> int:
    """An offset to read from or commit: 0 or more, and an Int64."""
    return checked_int(name, offset, 0, limits.INT64_MAX)


def checked_topic_partition(name: str, key) -> tuple[str, int]:
    """A (topic, partition) pair (a TopicPartition is one)."""
    if not isinstance(key, tuple) or len(key) != 2:
        raise TypeError(f"{name}: {key!r} is not a (topic, partition) pair")
    return (checked_str(f"{name}: the topic of {key!r}", key[0]),
            checked_partition(f"{name}: the partition of {key!r}", key[1]))


def checked_offsets(name: str, offsets) -> dict[tuple[str, int], int]:
    """{(topic, partition): offset} with every key and offset checked (commits and
    resets of a group's offsets)."""
    if not isinstance(offsets, Mapping):
        raise TypeError(f"{name} takes {{(topic, partition): offset}}, got {offsets!r} "
                        f"({type(offsets).__name__})")
    return {checked_topic_partition(name, key): checked_offset(f"{name}: the offset of {key!r}",
                                                               offset)
            for key, offset in offsets.items()}


def checked_commit_offsets(name: str, offsets) -> tuple[dict[tuple[str, int], int],
                                                        dict[tuple[str, int], str]]:
    """A commit's {(topic, partition): offset} as (offsets, metadata where not empty).
    Each value is an offset (an int), kafka-python's and aiokafka's OffsetAndMetadata
    (anything with ``.offset`` and ``.metadata``: its leader epoch is not stored), or
    aiokafka's ``(offset, metadata)``; the metadata a str, or None for none. Metadata
    over OFFSET_METADATA_BYTES_MAX UTF-8 bytes is refused here, naming the partition,
    as the coordinator would refuse the whole commit (Kafka's offset.metadata.max.bytes)."""
    if not isinstance(offsets, Mapping):
        raise TypeError(f"{name} takes {{(topic, partition): offset}}, got {offsets!r} "
                        f"({type(offsets).__name__})")
    plain, metadata = {}, {}
    for key, value in offsets.items():
        tp = checked_topic_partition(name, key)
        offset, text = _offset_and_metadata(name, key, value)
        plain[tp] = checked_offset(f"{name}: the offset of {key!r}", offset)
        if text is not None and _checked_metadata(name, key, text):
            metadata[tp] = text
    return plain, metadata


def _offset_and_metadata(name: str, key, value) -> tuple[object, object]:
    """(offset, metadata) of one commit value: an offset, an OffsetAndMetadata, or an
    (offset, metadata) pair; the metadata not checked yet."""
    if hasattr(value, "offset") and hasattr(value, "metadata"):
        return value.offset, value.metadata
    if isinstance(value, tuple) and len(value) == 2:
        return value
    if isinstance(value, (tuple, list)):
        raise TypeError(f"{name}: the value of {key!r} is {value!r}: give an offset, an "
                        f"(offset, metadata) pair or an OffsetAndMetadata")
    return value, None


def _checked_metadata(name: str, key, text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name}: the metadata of {key!r} must be a str (or None), got "
                        f"{text!r} ({type(text).__name__})")
    size_bytes = len(text.encode())
    if size_bytes > limits.OFFSET_METADATA_BYTES_MAX:
        raise OffsetMetadataTooLargeError(
            f"{name}: the metadata of {key!r} is {size_bytes} UTF-8 bytes, over "
            f"OFFSET_METADATA_BYTES_MAX={limits.OFFSET_METADATA_BYTES_MAX}; nothing was "
            f"committed")
    return text


def checked_time_ms(name: str, timestamp_ms, *specials: int) -> int:
    """A time in ms since the epoch (0..INT64_MAX), or one of ``specials`` (the wire's
    markers, such as protocol.MAX_TIMESTAMP)."""
    if timestamp_ms in specials and not isinstance(timestamp_ms, bool):
        return int(timestamp_ms)
    also = f" or one of {specials}" if specials else ""
    if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int):
        raise TypeError(f"{name} must be an int of ms since the epoch, 0..{limits.INT64_MAX}"
                        f"{also}, got {timestamp_ms!r} ({type(timestamp_ms).__name__})")
    if not 0 <= timestamp_ms <= limits.INT64_MAX:
        raise ValueError(f"{name}={timestamp_ms} is outside 0..{limits.INT64_MAX} (ms since "
                         f"the epoch){also}")
    return int(timestamp_ms)


def checked_callable(name: str, value, what: str):
    """An option that is called later (a serializer, a callback), or None: checked
    here, where a str such as "json" would otherwise fail only at the first record
    as "'str' object is not callable", far from the option that caused it."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be {what}, or None, got {value!r} "
                        f"({type(value).__name__})")
    return value


LISTENER_METHODS = ("on_partitions_revoked", "on_partitions_assigned")


def checked_listener(name: str, listener):
    """A rebalance listener: an object with callable ``on_partitions_revoked`` and
    ``on_partitions_assigned`` (kafka-python's and aiokafka's
    ConsumerRebalanceListener), or None. A function alone is not one: it would fail
    at the first rebalance with an AttributeError."""
    if listener is None:
        return None
    missing = [method for method in LISTENER_METHODS
               if not callable(getattr(listener, method, None))]
    if missing:
        raise TypeError(f"{name} must be a ConsumerRebalanceListener (an object with "
                        f"on_partitions_revoked and on_partitions_assigned methods), got "
                        f"{listener!r} ({type(listener).__name__}), which has no callable "
                        f"{' nor '.join(missing)}")
    return listener


def checked_key_file(name: str, path):
    """A key file's path (a str or an os.PathLike), or None. An int or bytes would
    otherwise be taken for "no key" or fail as a mismatch of the two curve options."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path to a key file (a str or os.PathLike), or "
                        f"None, got {path!r} ({type(path).__name__})")
    return path


def checked_topic_partitions(name: str, partitions) -> list[tuple[str, int]]:
    """A list (any iterable) of (topic, partition) pairs, each checked; a single str or
    pair is refused rather than read as its characters or its two fields."""
    if isinstance(partitions, (str, bytes)) or _is_pair(partitions):
        raise TypeError(f"{name} takes a list of (topic, partition) pairs, not "
                        f"{partitions!r}: [{partitions!r}]"
                        + (", or every partition of the topic through subscribe"
                           if isinstance(partitions, str) else ""))
    try:
        pairs = list(partitions)
    except TypeError:
        raise TypeError(f"{name} takes a list of (topic, partition) pairs, got "
                        f"{partitions!r} ({type(partitions).__name__})") from None
    return [checked_topic_partition(name, pair) for pair in pairs]


def _is_pair(value) -> bool:
    """A (topic, partition) pair itself, where a list of them is wanted."""
    return (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int))
