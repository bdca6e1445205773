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


def test_fresh_sources_write_at_most_lines_max_lines_an_interval_then_a_summary_counts_the_rest(
        clock, caplog):
    # Given a limit of 3 lines in all a minute, and a client sending a fresh source each try
    limit = LogLimit(log, interval_s=60, sources_max=1000, lines_max=3)
    with caplog.at_level(logging.WARNING, logger="tests.log_limit"):
        # When 500 sources log a line each within the minute
        written = [limit.warning(f"user-{n}", "login failed: user-%d", n) for n in range(500)]
        # Then 3 are written, the third saying that the next are dropped
        assert written == [True] * 3 + [False] * 497
        assert lines(caplog)[2] == ("login failed: user-2 (the last of 3 such lines in 60 s, the "
                                    "limit: the next are dropped and counted)")
        # And when the minute is over, the next call writes how many were dropped, then its line
        clock.now_s += 60
        assert limit.warning("user-500", "login failed: user-%d", 500) is True
    assert lines(caplog)[3:] == [
        "497 lines of this kind were dropped, of any source: over the 3 such lines written "
        "in 60 s (the limit)", "login failed: user-500"]


def test_the_summary_is_written_by_the_first_call_after_the_window_even_one_its_source_drops(
        clock, caplog):
    # Given a window of 2 lines: "a" at 0 s, "b" at 50 s, then "c" dropped
    limit = LogLimit(log, interval_s=60, sources_max=10, lines_max=2)
    with caplog.at_level(logging.WARNING, logger="tests.log_limit"):
        limit.warning("a", "from a")
        clock.now_s += 50
        limit.warning("b", "from b")
        limit.warning("c", "from c")
        # When the window is over (60 s after "a") and "b", within its own interval, logs
        clock.now_s += 10
        assert limit.warning("b", "from b, again") is False
    # Then its call wrote the summary, though its own line was dropped
    assert lines(caplog)[2:] == ["1 lines of this kind were dropped, of any source: over the 2 "
                                 "such lines written in 60 s (the limit)"]
