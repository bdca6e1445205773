"""loadtest/wide_consumer.py: a real short run against a real broker (its report's shape
and its counts, not its timings)."""

from __future__ import annotations

import json

from loadtest import wide_consumer
from tests.support import unique_topic


def test_a_short_run_sees_every_record_and_reports_waits_in_order_and_the_idle_cpu(
        shared_broker, capsys):
    # Given a topic of more partitions than a consumer's fetches in flight (256)
    topic = unique_topic("wide")
    # When the benchmark runs 3 records and 1 s idle, printing JSON
    assert wide_consumer.main(["--broker", shared_broker.url, "--topic", topic,
                               "--partitions", "300", "--records", "3", "--idle-s", "1",
                               "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Then every record was seen, and the waits and the CPU are numbers in order
    assert (report["topic"], report["partitions"], report["records"], report["missed"]) == (
        topic, 300, 3, 0)
    wait = report["wait_s"]
    assert 0 < wait["min"] <= wait["p50"] <= wait["max"] < wide_consumer.RECORD_WAIT_S
    assert report["idle_s"] == 1 and report["idle_cpu_cores"] >= 0
