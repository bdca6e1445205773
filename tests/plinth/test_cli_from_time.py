"""``plinth consume --from-time``: the ISO 8601 time it takes, as ms since the epoch
(plinth/cli.py's iso_time_ms), and the refusals that name the value."""

from __future__ import annotations

import click
import pytest

from plinth.cli import iso_time_ms


@pytest.mark.parametrize("text, time_ms", [
    ("1970-01-01T00:00:00Z", 0),
    ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ("2023-11-14T22:13:20.123+00:00", 1_700_000_000_123),
    ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
    ("2023-11-14T22:13:20", 1_700_000_000_000),      # no zone: UTC
    ("2023-11-14", 1_699_920_000_000),
])
def test_an_iso_time_is_its_ms_since_the_epoch_in_utc_unless_it_names_a_zone(text, time_ms):
    assert iso_time_ms(text) == time_ms


@pytest.mark.parametrize("text, says", [
    ("yesterday", "'yesterday' is not an ISO 8601 time"),
    ("2023-13-01", "'2023-13-01' is not an ISO 8601 time"),
    ("", "'' is not an ISO 8601 time"),
    ("1969-12-31T23:59:59.999Z", "'1969-12-31T23:59:59.999Z' is -1 ms since the epoch"),
])
def test_a_bad_or_pre_1970_time_is_refused_naming_it(text, says):
    with pytest.raises(click.BadParameter, match=says):
        iso_time_ms(text)
