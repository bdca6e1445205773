"""topics.py: names, partition counts and config are checked with clear messages."""

import pytest

from plinth import limits
from plinth.errors import InvalidConfigError, InvalidTopicError
from plinth.topics import normalize_topic_config, validate_partition_count, validate_topic_name


@pytest.mark.parametrize("name", ["orders", "a.b_c-D9", "x" * limits.TOPIC_NAME_BYTES_MAX])
def test_good_topic_names_pass(name):
    validate_topic_name(name)


@pytest.mark.parametrize("name,message", [
    ("", "1 to 249 bytes"), ("x" * 250, "250 bytes"), ("a/b", "only ASCII"), ("..", "only ASCII"),
    ("spa ce", "only ASCII"), ("é", "only ASCII")])
def test_bad_topic_names_are_refused_with_the_reason(name, message):
    with pytest.raises(InvalidTopicError, match=message):
        validate_topic_name(name)


def test_partition_counts_outside_the_limit_name_the_limit():
    with pytest.raises(InvalidTopicError, match=f"0 partitions.*{limits.PARTITIONS_PER_TOPIC_MAX}"):
        validate_partition_count("t", 0)
    validate_partition_count("t", limits.PARTITIONS_PER_TOPIC_MAX)


def test_config_is_filled_with_defaults_and_checked_key_by_key():
    config = normalize_topic_config("t", {"segment.bytes": "8388608"})
    assert config == {"segment.bytes": "8388608", "segment.ms": str(limits.SEGMENT_MS_DEFAULT),
                      "retention.ms": str(limits.RETENTION_MS_DEFAULT),
                      "retention.bytes": str(limits.RETENTION_BYTES_DEFAULT),
                      "message.timestamp.before.max.ms": str(2**63 - 1),
                      "message.timestamp.after.max.ms": "3600000"}
    with pytest.raises(InvalidConfigError, match="unknown config retention.foo"):
        normalize_topic_config("t", {"retention.foo": "1"})
    with pytest.raises(InvalidConfigError, match="segment.bytes=1 is outside 1048576"):
        normalize_topic_config("t", {"segment.bytes": "1"})
    with pytest.raises(InvalidConfigError, match="not an integer"):
        normalize_topic_config("t", {"segment.ms": "soon"})


@pytest.mark.parametrize("key, value, bounds", [
    ("segment.bytes", 4096, "1048576..1073741824"),
    ("segment.bytes", 1048575, "1048576.."),
    ("segment.ms", 1, "60000.."),
    ("segment.ms", 59_999, "60000.."),
    ("message.timestamp.before.max.ms", -1, f"0..{2**63 - 1}"),
    ("message.timestamp.after.max.ms", 2**63, f"0..{2**63 - 1}"),
])
def test_segments_smaller_than_1_mib_or_a_minute_and_negative_windows_are_refused(key, value, bounds):
    # Given a topic config a user could turn into a weapon (a segment, so files, per
    # produce) or that means nothing / When it is checked / Then it is refused, naming
    # the key, the value and the bounds
    with pytest.raises(InvalidConfigError, match=f"topic 't': {key}={value} is outside {bounds}"):
        normalize_topic_config("t", {key: str(value)})


def test_the_smallest_allowed_segments_and_any_window_are_taken():
    config = normalize_topic_config("t", {"segment.bytes": "1048576", "segment.ms": "60000",
                                          "message.timestamp.before.max.ms": "0",
                                          "message.timestamp.after.max.ms": str(2**63 - 1)})
    assert (config["segment.bytes"], config["segment.ms"]) == ("1048576", "60000")
