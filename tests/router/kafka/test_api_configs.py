"""What AlterConfigs and IncrementalAlterConfigs entries mean for a Plinth topic:
the keys to set and the keys to set back to their defaults."""

from __future__ import annotations

import pytest

from plinth import limits
from plinth.errors import InvalidConfigError, MalformedRequestError
from plinth.router.kafka import api_configs

CONFIG = {"retention.ms": "5000", "retention.bytes": "-1", "segment.bytes": "1048576"}


def entry(name, value, operation=None):
    return {"name": name, "value": value} | ({} if operation is None
                                             else {"config_operation": operation})


def test_alter_configs_sets_the_keys_given_and_deletes_every_other():
    changes, deleted = api_configs._whole_config_changes(
        "t", [entry("retention.ms", "60000"), entry("segment.bytes", None)], CONFIG)
    assert changes == {"retention.ms": "60000"}
    assert deleted == ("retention.bytes", "segment.bytes")


def test_incremental_alter_configs_sets_and_deletes_only_what_it_names():
    changes, deleted = api_configs._incremental_changes(
        "t", [entry("retention.ms", "60000", api_configs.OP_SET),
              entry("retention.bytes", None, api_configs.OP_DELETE)], CONFIG)
    assert (changes, deleted) == ({"retention.ms": "60000"}, ("retention.bytes",))


@pytest.mark.parametrize("bad, error, says", [
    (entry("retention.ms", None, api_configs.OP_SET), InvalidConfigError, "SET retention.ms without a value"),
    (entry("retention.ms", "1", api_configs.OP_APPEND), InvalidConfigError, "not a list"),
    (entry("retention.ms", "1", api_configs.OP_SUBTRACT), InvalidConfigError, "not a list"),
    (entry("retention.ms", "1", 9), InvalidConfigError, "config operation 9 for retention.ms"),
])
def test_an_incremental_entry_plinth_cannot_apply_is_refused_naming_it(bad, error, says):
    with pytest.raises(error, match=says):
        api_configs._incremental_changes("t", [bad], CONFIG)


def test_a_key_named_twice_is_a_malformed_request_as_in_kafka():
    twice = [entry("retention.ms", "1", api_configs.OP_SET),
             entry("retention.ms", None, api_configs.OP_DELETE)]
    with pytest.raises(MalformedRequestError, match="retention.ms named more than once"):
        api_configs._incremental_changes("t", twice, CONFIG)
    with pytest.raises(MalformedRequestError, match="retention.ms named more than once"):
        api_configs._whole_config_changes("t", [entry("retention.ms", "1")] * 2, CONFIG)


def test_more_entries_than_a_config_holds_are_refused_with_the_limit():
    many = [entry(f"k{i}", "1", api_configs.OP_SET) for i in range(limits.CONFIG_ENTRIES_MAX + 1)]
    with pytest.raises(InvalidConfigError, match=f"over the limit of {limits.CONFIG_ENTRIES_MAX}"):
        api_configs._incremental_changes("t", many, CONFIG)
