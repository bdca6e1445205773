"""topics.py: names, partition counts and config are checked with clear messages."""

import pytest

from plinth import limits, topics
from plinth.errors import (InvalidConfigError, InvalidPartitionsError,
                           InvalidReplicationFactorError, InvalidTopicError)
from plinth.topics import normalize_topic_config, validate_partition_count, validate_topic_name


@pytest.mark.parametrize("name", ["orders", "a.b_c-D9", "x" * limits.TOPIC_NAME_BYTES_MAX])
def test_good_topic_names_pass(name):
    validate_topic_name(name)


@pytest.mark.parametrize("name,message", [
    ("", "1 to 249 bytes"), ("x" * 250, "250 bytes"), ("a/b", "only ASCII"),
    (".", "'.' is not allowed: '.' and '..' are not topic names"),
    ("..", "'..' is not allowed: '.' and '..' are not topic names"),
    ("spa ce", "only ASCII"), ("é", "only ASCII")])
def test_bad_topic_names_are_refused_with_the_reason(name, message):
    with pytest.raises(InvalidTopicError, match=message):
        validate_topic_name(name)


def test_partition_counts_outside_the_limit_name_the_limit():
    with pytest.raises(InvalidPartitionsError,
                       match=f"0 partitions.*{limits.PARTITIONS_PER_TOPIC_MAX}"):
        validate_partition_count("t", 0)
    validate_partition_count("t", limits.PARTITIONS_PER_TOPIC_MAX)


def test_config_is_filled_with_defaults_and_checked_key_by_key():
    config = normalize_topic_config("t", {"segment.bytes": "8388608"})
    assert config == {"segment.bytes": "8388608", "segment.ms": str(limits.SEGMENT_MS_DEFAULT),
                      "retention.ms": str(limits.RETENTION_MS_DEFAULT),
                      "retention.bytes": str(limits.RETENTION_BYTES_DEFAULT),
                      "message.timestamp.before.max.ms": str(2**63 - 1),
                      "message.timestamp.after.max.ms": "3600000",
                      "max.message.bytes": str(limits.BATCH_BYTES_MAX),
                      "remote.storage.enable": "false", "local.retention.ms": "-2",
                      "local.retention.bytes": "-2"}
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


@pytest.mark.parametrize("value", [0, -1, limits.BATCH_BYTES_MAX + 1])
def test_a_max_message_bytes_over_the_brokers_batch_limit_or_below_1_is_refused(value):
    with pytest.raises(InvalidConfigError, match=f"topic 't': max.message.bytes={value} is "
                                                 f"outside 1..{limits.BATCH_BYTES_MAX}"):
        normalize_topic_config("t", {"max.message.bytes": str(value)})


def test_the_smallest_allowed_segments_and_any_window_are_taken():
    config = normalize_topic_config("t", {"segment.bytes": "1048576", "segment.ms": "60000",
                                          "message.timestamp.before.max.ms": "0",
                                          "message.timestamp.after.max.ms": str(2**63 - 1)})
    assert (config["segment.bytes"], config["segment.ms"]) == ("1048576", "60000")


# --- Replication configs --------------------------------------------------------------

@pytest.mark.parametrize("factor, min_insync", [(2, "1"), (3, "2"), (5, "2")])
def test_a_replicated_topic_gets_kafkas_min_insync_default_and_no_unclean_election(
        factor, min_insync):
    # Given a topic with several replicas and no replication config
    # When its config is normalized
    config = normalize_topic_config("t", {}, factor)
    # Then min.insync.replicas is 1 for two copies, 2 for three or more, and unclean
    # leader election is off
    assert config["min.insync.replicas"] == min_insync
    assert config["unclean.leader.election.enable"] == "false"


def test_a_factor_1_topic_gets_no_replication_keys_unless_it_names_them():
    # Given a factor-1 topic / When its config is normalized / Then it is as before
    # replication (stored exactly as before)
    assert set(normalize_topic_config("t", {})) == \
        set(topics.TOPIC_CONFIG_KEYS) | set(topics.TOPIC_CONFIG_BOOLEANS)
    # And a key it names is checked and kept
    assert normalize_topic_config("t", {"min.insync.replicas": "1"})["min.insync.replicas"] == "1"


@pytest.mark.parametrize("config, factor, message", [
    ({"min.insync.replicas": "4"}, 3,
     r"topic 't': min.insync.replicas=4 is outside 1..3: .*replication factor, 3"),
    ({"min.insync.replicas": "2"}, 1, r"min.insync.replicas=2 is outside 1..1"),
    ({"min.insync.replicas": "0"}, 3, r"min.insync.replicas=0 is outside 1..3"),
    ({"min.insync.replicas": "two"}, 3, r"min.insync.replicas='two' is not an integer"),
    ({"unclean.leader.election.enable": "maybe"}, 3,
     r"unclean.leader.election.enable='maybe' is not true or false"),
    ({"min.insync.replica": "2"}, 3, r"unknown config min.insync.replica; known: .*min.insync.replicas"),
])
def test_wrong_replication_configs_are_refused_naming_the_key_the_value_and_the_limit(
        config, factor, message):
    # Given a replication config a new user could write / When it is checked
    # Then it is refused, naming the key, the value and the limit
    with pytest.raises(InvalidConfigError, match=message):
        normalize_topic_config("t", config, factor)


def test_unclean_election_takes_true_in_any_case():
    config = normalize_topic_config("t", {"unclean.leader.election.enable": "TRUE"}, 3)
    assert config["unclean.leader.election.enable"] == "true"
    assert topics.unclean_leader_election(config) and topics.min_insync_replicas(config) == 2


@pytest.mark.parametrize("factor, message", [
    (0, "replication factor 0 is outside 1..5"), (-1, "replication factor -1 is outside 1..5"),
    (6, "replication factor 6 is outside 1..5"), ("three", "replication factor 'three' is not an integer"),
    (True, "replication factor True is not an integer"), (2.0, "replication factor 2.0 is not an integer")])
def test_replication_factors_outside_1_to_the_limit_or_not_integers_are_refused(factor, message):
    with pytest.raises(InvalidReplicationFactorError, match=f"topic 't': {message}"):
        topics.validate_replication_factor("t", factor)
    assert topics.validate_replication_factor("t", limits.REPLICATION_FACTOR_MAX) == 5


# --- Tiered storage's configs (issue 14) ------------------------------------------------

def test_every_topic_gets_remote_storage_off_and_local_retention_as_the_whole_log():
    # Given a topic created without tiering configs / When its config is normalized
    config = normalize_topic_config("t", {})
    # Then it carries Kafka's defaults, so that describe shows them
    assert config["remote.storage.enable"] == "false"
    assert config["local.retention.ms"] == "-2" and config["local.retention.bytes"] == "-2"
    assert not topics.remote_storage_enabled(config)


def test_remote_storage_enable_takes_true_or_false_in_any_case_and_nothing_else():
    assert normalize_topic_config("t", {"remote.storage.enable": "True"})[
        "remote.storage.enable"] == "true"
    assert topics.remote_storage_enabled(normalize_topic_config(
        "t", {"remote.storage.enable": "TRUE"}))
    with pytest.raises(InvalidConfigError,
                       match=r"topic 't': remote.storage.enable='yes' is not true or false"):
        normalize_topic_config("t", {"remote.storage.enable": "yes"})


@pytest.mark.parametrize("config, message", [
    # Above a bounded retention: both keys, both values
    ({"retention.ms": "86400000", "local.retention.ms": "86400001"},
     r"topic 't': local.retention.ms=86400001 exceeds retention.ms=86400000: .*at most "
     r"86400000, or to -2"),
    ({"retention.bytes": "1000000", "local.retention.bytes": "2000000"},
     r"topic 't': local.retention.bytes=2000000 exceeds retention.bytes=1000000: .*at most "
     r"1000000, or to -2"),
    # -1 keeps everything locally, more than a bounded whole log (Kafka's rule)
    ({"retention.ms": "3600000", "local.retention.ms": "-1"},
     r"topic 't': local.retention.ms=-1 \(keep everything locally\) exceeds "
     r"retention.ms=3600000"),
    ({"retention.bytes": "1000000", "local.retention.bytes": "-1"},
     r"local.retention.bytes=-1 \(keep everything locally\) exceeds retention.bytes=1000000"),
    # Below -2 means nothing; not an integer neither
    ({"local.retention.ms": "-3"}, r"topic 't': local.retention.ms=-3 is outside -2\.\."),
    ({"local.retention.bytes": "1GB"}, r"local.retention.bytes='1GB' is not an integer"),
])
def test_local_retention_beyond_the_whole_logs_is_refused_naming_both_keys_and_values(
        config, message):
    with pytest.raises(InvalidConfigError, match=message):
        normalize_topic_config("t", config)


@pytest.mark.parametrize("config", [
    {"retention.ms": "86400000", "local.retention.ms": "86400000"},   # equal is allowed
    {"retention.ms": "86400000", "local.retention.ms": "0"},
    {"retention.ms": "-1", "local.retention.ms": "-1"},               # everything, everywhere
    {"retention.ms": "-1", "local.retention.ms": str(2**62)},
    {"retention.bytes": "1000000", "local.retention.bytes": "-2"},
    {"retention.bytes": "-1", "local.retention.bytes": "268435456"},
])
def test_local_retention_within_the_whole_logs_is_taken_as_given(config):
    normalized = normalize_topic_config("t", config)
    assert {key: normalized[key] for key in config} == config


def test_lowering_retention_below_an_existing_local_retention_is_refused():
    # Given a topic that keeps a day locally and a week in all
    config = normalize_topic_config("t", {"retention.ms": "604800000",
                                          "local.retention.ms": "86400000"})
    # When retention.ms is altered to an hour (the controller normalizes the merged config)
    # Then it is refused, naming both keys and both values
    with pytest.raises(InvalidConfigError,
                       match="local.retention.ms=86400000 exceeds retention.ms=3600000"):
        normalize_topic_config("t", {**config, "retention.ms": "3600000"})


def test_remote_storage_cannot_be_turned_off_once_on_and_the_message_says_why():
    on = normalize_topic_config("t", {"remote.storage.enable": "true"})
    off = normalize_topic_config("t", {**on, "remote.storage.enable": "false"})
    with pytest.raises(InvalidConfigError, match=r"topic 't': remote.storage.enable cannot go "
                       r"from true back to false.*remote.log.delete.on.disable=true.*does not "
                       r"offer remote.log.delete.on.disable yet"):
        topics.check_config_change("t", on, off)
    # And the other changes are allowed: on to on, off to on, off to off
    topics.check_config_change("t", on, on)
    topics.check_config_change("t", off, on)
    topics.check_config_change("t", off, off)
    # A topic stored before tiered storage (no key) counts as off
    topics.check_config_change("t", {"retention.ms": "1"}, off)


def test_remote_storage_is_refused_on_a_broker_without_a_tier_url_naming_the_option():
    on = normalize_topic_config("t", {"remote.storage.enable": "true"})
    with pytest.raises(InvalidConfigError,
                       match=r"topic 't': remote.storage.enable=true needs tiered storage.*"
                             r"started without --tier-url"):
        topics.check_remote_storage_allowed("t", on, tier_url_given=False)
    topics.check_remote_storage_allowed("t", on, tier_url_given=True)
    topics.check_remote_storage_allowed("t", normalize_topic_config("t", {}),
                                        tier_url_given=False)


def test_topic_ids_are_32_lowercase_hex_digits_and_never_repeat():
    ids = {topics.new_topic_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(topics.is_topic_id(i) for i in ids)
    for not_an_id in ("", "0" * 31, "0" * 33, "A" * 32, "g" * 32, None, 7):
        assert not topics.is_topic_id(not_an_id)


@pytest.mark.parametrize("policy", ["delete", "delete,delete", " delete "])
def test_cleanup_policy_delete_is_accepted_as_what_every_topic_does(policy):
    config = normalize_topic_config("t", {"cleanup.policy": policy, "retention.ms": "5"})
    assert config == normalize_topic_config("t", {"retention.ms": "5"})


@pytest.mark.parametrize("policy", ["compact", "compact,delete", "delete,compact", ""])
def test_cleanup_policy_compact_is_refused_saying_plinth_has_no_compaction(policy):
    with pytest.raises(InvalidConfigError, match="Plinth has no log compaction"):
        normalize_topic_config("t", {"cleanup.policy": policy})


def test_cleanup_policy_may_be_deleted_from_a_topics_config():
    assert topics.config_without("t", {"retention.ms": "5"}, {}, ["cleanup.policy"]) == {
        "retention.ms": "5"}


@pytest.mark.parametrize("codec", ["producer", " producer "])
def test_compression_type_producer_is_accepted_as_what_every_topic_does(codec):
    config = normalize_topic_config("t", {"compression.type": codec, "retention.ms": "5"})
    assert config == normalize_topic_config("t", {"retention.ms": "5"})


@pytest.mark.parametrize("codec", ["zstd", "gzip", "uncompressed", ""])
def test_another_compression_type_is_refused_naming_the_producers_option(codec):
    with pytest.raises(InvalidConfigError,
                       match=f"compression.type '{codec}' is not supported: Plinth stores each "
                             f"batch as its producer sent it.*compression_type"):
        normalize_topic_config("t", {"compression.type": codec})


def test_compression_type_may_be_deleted_from_a_topics_config():
    assert topics.config_without("t", {"retention.ms": "5"}, {}, ["compression.type"]) == {
        "retention.ms": "5"}


@pytest.mark.parametrize("timestamp_type", ["CreateTime", " CreateTime "])
def test_message_timestamp_type_create_time_is_accepted_as_what_every_topic_does(timestamp_type):
    config = normalize_topic_config("t", {"message.timestamp.type": timestamp_type})
    assert config == normalize_topic_config("t", {})


@pytest.mark.parametrize("timestamp_type", ["LogAppendTime", "createtime", ""])
def test_another_message_timestamp_type_is_refused_saying_the_producers_timestamp_is_kept(
        timestamp_type):
    with pytest.raises(InvalidConfigError,
                       match=f"message.timestamp.type '{timestamp_type}' is not supported: "
                             f"Plinth keeps the timestamp each record's producer gave it"):
        normalize_topic_config("t", {"message.timestamp.type": timestamp_type})


def test_the_keys_a_factor_1_topic_does_not_store_are_described_with_what_plinth_does():
    stored = normalize_topic_config("t", {})
    assert topics.unstored_config_defaults(stored) == {
        "cleanup.policy": "delete", "compression.type": "producer",
        "message.timestamp.type": "CreateTime", "min.insync.replicas": "1",
        "unclean.leader.election.enable": "false"}


def test_a_replicated_topics_own_replication_keys_are_not_described_again():
    stored = normalize_topic_config("t", {}, replication_factor=3)
    assert set(topics.unstored_config_defaults(stored)) == {
        "cleanup.policy", "compression.type", "message.timestamp.type"}


def test_a_name_differing_from_an_existing_topics_only_in_dot_and_underscore_is_refused():
    with pytest.raises(InvalidTopicError, match="topic 'adm_1' collides with an existing topic, "
                                                "'adm.1': names that differ only in '.' and '_'"):
        topics.refuse_collisions(["adm_1"], ["orders", "adm.1"])


def test_two_names_of_one_request_that_collide_refuse_the_second():
    with pytest.raises(InvalidTopicError, match="topic 'a.b.c' collides with a topic of the "
                                                "same request, 'a_b.c'"):
        topics.refuse_collisions(["x", "a_b.c", "a.b.c"], ["a.bc"])


@pytest.mark.parametrize("new, existing", [
    (["a.b"], ["ab", "a-b", "a.b.c"]),    # "-" is not "_"; another length
    (["ab"], ["a_b", "a.b"]),             # no "." or "_": collides with nothing
    (["a_b"], []),
])
def test_names_that_differ_otherwise_do_not_collide(new, existing):
    topics.refuse_collisions(new, existing)


def test_every_unknown_config_message_lists_the_same_known_keys_fixed_ones_included():
    # Given an unknown key to set (create, alter) and one to delete (--delete-config)
    with pytest.raises(InvalidConfigError) as set_refused:
        normalize_topic_config("t", {"no.such.key": "1"})
    with pytest.raises(InvalidConfigError) as delete_refused:
        topics.config_without("t", {}, {}, ["no.such.key"])
    # Then both list every key a topic takes, the same keys, and cleanup.policy among
    # them: it is taken (as "delete"), so it is known (create listed 12 keys, delete 15)
    set_known = str(set_refused.value).partition("; known: ")[2]
    delete_known = str(delete_refused.value).partition("; known: ")[2]
    assert set_known == delete_known == ", ".join(topics.KNOWN_TOPIC_CONFIGS)
    assert "cleanup.policy" in set_known.split(", ")
    assert normalize_topic_config("t", {"cleanup.policy": "delete"}) == normalize_topic_config(
        "t", {})
