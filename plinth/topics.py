"""Topic names, partition counts and per-topic configuration: validation.

Any process may call these functions; the controller calls them before it
creates anything, the client calls them to fail fast. Config keys are Kafka's
topic config names where Kafka has one.
"""

from __future__ import annotations

import re

from plinth import limits
from plinth.errors import InvalidConfigError, InvalidTopicError

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

SEGMENT_BYTES = "segment.bytes"
SEGMENT_MS = "segment.ms"
RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
MESSAGE_TIMESTAMP_BEFORE_MAX_MS = "message.timestamp.before.max.ms"
MESSAGE_TIMESTAMP_AFTER_MAX_MS = "message.timestamp.after.max.ms"
_INT64_MAX = 2**63 - 1

# key -> (minimum, maximum, default); all integers.
TOPIC_CONFIG_KEYS: dict[str, tuple[int, int, int]] = {
    # At least 1 MiB and a minute: each segment is files the shard keeps.
    SEGMENT_BYTES: (limits.SEGMENT_BYTES_CONFIG_MIN, limits.SEGMENT_BYTES_MAX,
                    limits.SEGMENT_BYTES_DEFAULT),
    SEGMENT_MS: (limits.SEGMENT_MS_CONFIG_MIN, 2**62, limits.SEGMENT_MS_DEFAULT),
    # -1: keep forever. Whole segments are deleted, never the active one.
    RETENTION_MS: (-1, 2**62, limits.RETENTION_MS_DEFAULT),
    RETENTION_BYTES: (-1, 2**62, limits.RETENTION_BYTES_DEFAULT),
    # How far before and after the shard's clock a record's timestamp may be; a
    # produce with a record outside is refused with InvalidTimestampError.
    MESSAGE_TIMESTAMP_BEFORE_MAX_MS: (0, _INT64_MAX,
                                      limits.MESSAGE_TIMESTAMP_BEFORE_MS_MAX_DEFAULT),
    MESSAGE_TIMESTAMP_AFTER_MAX_MS: (0, _INT64_MAX, limits.MESSAGE_TIMESTAMP_AFTER_MS_MAX_DEFAULT),
}


def validate_topic_name(name: str) -> None:
    size = len(name.encode())
    if not name or size > limits.TOPIC_NAME_BYTES_MAX:
        raise InvalidTopicError(
            f"topic name {name!r} is {size} bytes; it must be 1 to "
            f"{limits.TOPIC_NAME_BYTES_MAX} bytes")
    if not _TOPIC_NAME.match(name) or name in (".", ".."):
        raise InvalidTopicError(
            f"topic name {name!r} may contain only ASCII letters, digits, '.', '_' and '-'")


def validate_partition_count(name: str, partitions: int) -> None:
    if not 1 <= partitions <= limits.PARTITIONS_PER_TOPIC_MAX:
        raise InvalidTopicError(
            f"topic {name!r}: {partitions} partitions requested; a topic has 1 to "
            f"{limits.PARTITIONS_PER_TOPIC_MAX} partitions")


def normalize_topic_config(name: str, config: dict[str, str]) -> dict[str, str]:
    """Check every key and value; return the config with defaults filled in."""
    if len(config) > limits.CONFIG_ENTRIES_MAX:
        raise InvalidConfigError(
            f"topic {name!r}: {len(config)} config entries, over the limit of "
            f"{limits.CONFIG_ENTRIES_MAX}")
    unknown = sorted(set(config) - set(TOPIC_CONFIG_KEYS))
    if unknown:
        raise InvalidConfigError(
            f"topic {name!r}: unknown config {', '.join(unknown)}; known: "
            f"{', '.join(sorted(TOPIC_CONFIG_KEYS))}")
    out = {}
    for key, (lowest, highest, default) in TOPIC_CONFIG_KEYS.items():
        out[key] = str(_config_int(name, key, config.get(key, default), lowest, highest))
    return out


def _config_int(name: str, key: str, raw, lowest: int, highest: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidConfigError(f"topic {name!r}: {key}={raw!r} is not an integer") from None
    if not lowest <= value <= highest:
        raise InvalidConfigError(
            f"topic {name!r}: {key}={value} is outside {lowest}..{highest}")
    return value
