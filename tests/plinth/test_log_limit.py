"""plinth/log_limit.py: one line per source per interval, saying what was dropped."""

from __future__ import annotations

import logging

import pytest

from plinth.log_limit import LogLimit
from tests.support import ManualClock

log = logging.getLogger("tests.log_limit")


@pytest.fixture
def clock(monkeypatch):
    clock = ManualClock()
    monkeypatch.setattr("plinth.log_limit.time.monotonic", clock)
    return clock


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_a_source_logs_once_per_interval_and_its_next_line_says_how_many_were_dropped(
        clock, caplog):
    limit = LogLimit(log, interval_s=60, sources_max=10)
    with caplog.at_level(logging.WARNING, logger="tests.log_limit"):
        written = [limit.warning("key-a", "refused %s", n) for n in range(1000)]
        clock.now_s += 60
        limit.warning("key-a", "refused %s", "again")
    assert written == [True] + [False] * 999
    assert lines(caplog) == ["refused 0", "refused again (and 999 such lines of this source "
                                          "dropped in the last 60 s)"]


def test_each_source_has_its_own_turn(clock, caplog):
    limit = LogLimit(log, interval_s=60, sources_max=10)
    with caplog.at_level(logging.WARNING, logger="tests.log_limit"):
        for source in ("a", "b", "a", "b", "c"):
            limit.warning(source, "from %s", source)
    assert lines(caplog) == ["from a", "from b", "from c"]


def test_past_its_bound_the_least_recently_logged_source_is_forgotten(clock, caplog):
    # Given a limit that remembers 2 sources, and 3 that logged in turn
    limit = LogLimit(log, interval_s=60, sources_max=2)
    with caplog.at_level(logging.WARNING, logger="tests.log_limit"):
        for source in ("a", "b", "c"):
            limit.warning(source, "from %s", source)
        # Then the first was forgotten (its line is written at once), the last not
        assert limit.warning("a", "from a, again") is True
        assert limit.warning("c", "from c, again") is False
        # And remembering "a" again forgot "b", the least recently logged
        assert limit.warning("b", "from b, again") is True


def test_a_limit_without_an_interval_or_a_source_is_a_programmer_error():
    with pytest.raises(AssertionError, match="both must be positive"):
        LogLimit(log, interval_s=0)
    with pytest.raises(AssertionError, match="both must be positive"):
        LogLimit(log, sources_max=0)


def test_a_line_names_the_place_that_logged_it_not_the_limit(clock, caplog):
    limit = LogLimit(log, interval_s=60, sources_max=10)
    with caplog.at_level(logging.INFO, logger="tests.log_limit"):
        limit.warning("a", "warned")
        limit.log(logging.INFO, "b", "said")
    assert [r.filename for r in caplog.records] == ["test_log_limit.py"] * 2


def test_a_bound_on_all_sources_drops_lines_past_it_and_the_next_line_says_how_many(
        clock, caplog):
    # Given a limit of 3 lines a minute over all sources, and 10 sources failing at once
    limit = LogLimit(log, interval_s=60, sources_max=100, lines_max=3)
    with caplog.at_level(logging.WARNING, logger="tests.log_limit"):
        written = [limit.warning(f"address-{n}", "failed from %s", n) for n in range(10)]
        # When a minute has passed and another source fails
        clock.now_s += 60
        limit.warning("address-99", "failed from %s", 99)
    # Then 3 lines were written in the first minute, and the next says 7 were dropped
    assert written == [True] * 3 + [False] * 7
    assert lines(caplog) == ["failed from 0", "failed from 1", "failed from 2",
                             "failed from 99 (and 7 lines of any source dropped over the "
                             "bound of 3 every 60 s)"]


def test_a_bound_on_all_sources_that_is_not_positive_is_a_programmer_error():
    with pytest.raises(AssertionError, match="must be positive or None"):
        LogLimit(log, lines_max=0)
