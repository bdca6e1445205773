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
    with pytest.raises(AssertionError, match="all must be positive"):
        LogLimit(log, interval_s=0)
    with pytest.raises(AssertionError, match="all must be positive"):
        LogLimit(log, sources_max=0)


def test_a_line_names_the_place_that_logged_it_not_the_limit(clock, caplog):
    limit = LogLimit(log, interval_s=60, sources_max=10)
    with caplog.at_level(logging.INFO, logger="tests.log_limit"):
        limit.warning("a", "warned")
        limit.log(logging.INFO, "b", "said")
    assert [r.filename for r in caplog.records] == ["test_log_limit.py"] * 2


def test_a_new_source_per_line_writes_at_most_lines_max_lines_per_interval_then_says_how_many_were_dropped(
        clock, caplog):
    # Given a limit of 3 lines per 60 s in all
    limit = LogLimit(log, interval_s=60, sources_max=1000, lines_max=3)
    with caplog.at_level(logging.WARNING, logger="tests.log_limit"):
        # When 500 sources (a fresh key per try) each send one line
        written = [limit.warning(f"key-{n}", "refused key-%s", n) for n in range(500)]
        # Then 3 were written, the last saying the rest of the interval's are dropped
        assert written == [True] * 3 + [False] * 497
        assert lines(caplog) == [
            "refused key-0", "refused key-1",
            "refused key-2 (3 such lines in 60 s, the limit: the rest of this interval's are "
            "dropped and counted)"]
        # And the first line of the next interval says how many were dropped
        clock.now_s += 60
        assert limit.warning("key-new", "refused %s", "key-new") is True
    assert lines(caplog)[-1] == ("refused key-new (and 497 such lines of all sources dropped "
                                 "over the limit of 3 in 60 s)")
