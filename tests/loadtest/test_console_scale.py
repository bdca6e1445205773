"""loadtest/console_scale.py against a real broker, with a small N: it creates the topics
and groups it says, and times every call it reports."""

from __future__ import annotations

from loadtest import console_scale
from plinth.client.admin import Admin


def test_a_small_run_creates_what_it_says_and_times_every_call(shared_broker):
    # When the script runs with 30 topics and groups and pages of 10
    report = console_scale.run(shared_broker.url, 30, 10, 2, 600.0, batch=7)
    # Then it made them all, and timed each call of the console
    assert (report["topics"]["made"], report["groups"]["made"]) == (30, 30)
    timings = report["timings"]
    assert {"topics_first_page", "topics_middle_page", "topics_prefix_search",
            "topic_stats_of_a_page", "groups_first_page", "groups_middle_page",
            "groups_prefix_search"} <= set(timings)
    assert all(t["median_ms"] > 0 for name, t in timings.items() if name != "prefixes")
    # And its prefix search names the ten topics console-00010 .. console-00019
    assert timings["prefixes"] == {"topics": "console-0001", "groups": "console-group-0001",
                                   "topics_found": 10}
    assert "pages of 10 names" in console_scale._text(report)


def test_create_topics_makes_every_topic_asked_for_in_batches(shared_broker):
    # When 150 topics are asked for, 100 per createTopics (the last batch short)
    console_scale.create_topics(shared_broker.url, 150)
    # Then the broker holds each of them
    with Admin(broker=shared_broker.url) as admin:
        names = set(admin.list_topics())
    assert {console_scale.topic_name(i) for i in range(150)} <= names
