"""loadtest/create_at_scale.py: its summary of the timed creates, and a small run
against a real broker."""

from __future__ import annotations

import pytest

from loadtest import create_at_scale
from plinth.client.admin import Admin


def test_the_summary_gives_the_percentiles_slowest_and_rate_of_the_creates():
    seconds = [0.01 * n for n in range(1, 11)]   # 10 ms .. 100 ms
    report = create_at_scale.summary(seconds, 5000)
    assert report == {"topics_held": 5000, "creates": 10, "p50_ms": 60.0, "p90_ms": 100.0,
                      "max_ms": 100.0, "creates_per_s": round(10 / sum(seconds), 1)}


def test_a_small_run_creates_and_times_each_topic(shared_broker):
    # When 3 single creates are timed
    seconds = create_at_scale.time_creates(shared_broker.url, 3)
    # Then each took some time, and the broker holds the three topics
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    with Admin(broker=shared_broker.url) as admin:
        assert {"single-00000", "single-00001", "single-00002"} <= set(admin.list_topics())


def test_more_topics_and_creates_than_a_broker_holds_are_refused_before_a_broker_starts(capsys):
    with pytest.raises(SystemExit) as exited:
        create_at_scale.main(["--topics", "10000", "--creates", "100"])
    assert exited.value.code == 2
    assert "--topics 10000 plus --creates 100 is more than a broker's limit of 10000 topics" \
        in capsys.readouterr().err
