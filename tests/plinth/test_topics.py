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
    config = normalize_topic_config("t", {"segment.bytes": "8192"})
    assert config == {"segment.bytes": "8192", "segment.ms": str(limits.SEGMENT_MS_DEFAULT),
                      "retention.ms": str(limits.RETENTION_MS_DEFAULT),
                      "retention.bytes": str(limits.RETENTION_BYTES_DEFAULT)}
    with pytest.raises(InvalidConfigError, match="unknown config retention.foo"):
        normalize_topic_config("t", {"retention.foo": "1"})
    with pytest.raises(InvalidConfigError, match="segment.bytes=1 is outside 4096"):
        normalize_topic_config("t", {"segment.bytes": "1"})
    with pytest.raises(InvalidConfigError, match="not an integer"):
        normalize_topic_config("t", {"segment.ms": "soon"})
