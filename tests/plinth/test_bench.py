"""``plinth bench`` against a real broker, and its latency histogram with known values.

The bench runs as the user runs it, in a subprocess. No test asserts a speed:
only counts, the order of the percentiles and what the pacing implies.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from plinth import Producer, bench
from plinth.client.admin import Admin
from plinth.format.record_batch import ConsumerRecord
from tests.support import unique_topic

PLINTH = [sys.executable, "-m", "plinth.cli"]


def run_bench(url: str, *args: str, timeout_s: float = 120) -> dict:
    """Run ``plinth bench ... --json`` and return the JSON report."""
    done = subprocess.run([*PLINTH, "bench", *args, "--json"], capture_output=True, text=True,
                          env=dict(os.environ, PLINTH_BROKER=url), timeout=timeout_s, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_percentiles_ordered(latency_us: dict) -> None:
    values = [latency_us[name] for name in ("p50", "p95", "p99", "p99.9", "max")]
    assert values[0] > 0
    assert values == sorted(values)


# --- Against a broker -----------------------------------------------------------------

def test_produce_acknowledges_every_record_and_reports_ordered_latencies(shared_broker):
    # Given a broker, when the bench produces 20,000 records to a fresh topic
    report = run_bench(shared_broker.url, "produce", "--messages", "20000", "--watch-memory")
    # Then every record was acknowledged and timed, with the Producer's default acks="all"
    assert report["records"] == 20000 and report["errors"] == 0
    assert report["settings"]["acks"] == "all"
    assert report["records_per_s"] > 0 and report["mb_per_s"] > 0
    assert_percentiles_ordered(report["latency_us"])
    # And the broker's own process was sampled at the start and the end
    serve = [m for m in report["memory"] if m["process"] == "plinth serve"]
    assert serve and serve[0]["samples"] >= 2 and serve[0]["max_mib"] > 0


def test_consume_reads_the_records_a_produce_run_left_without_adding_any(shared_broker):
    # Given a topic that a produce run filled with 20,000 records
    topic = unique_topic("bench")
    run_bench(shared_broker.url, "produce", "--messages", "20000", "--topic", topic)
    # When the consume bench reads 20,000 records of it
    report = run_bench(shared_broker.url, "consume", "--messages", "20000", "--topic", topic)
    # Then it read them all, timed no latency, and produced nothing more
    assert report["records"] == 20000 and report["latency_us"] is None
    # And it counted the bytes it read: 16-byte keys and 100-byte values
    assert report["mb_per_s"] == pytest.approx(report["records_per_s"] * 116 / 1e6, rel=1e-3)
    with Admin(broker=shared_broker.url) as admin:
        held = sum(p.end_offset for p in admin.describe_topic(topic).partition_info)
    assert held == 20000


def test_consume_fills_a_fresh_topic_before_reading_it(shared_broker):
    report = run_bench(shared_broker.url, "consume", "--messages", "5000", "--producers", "2",
                       "--partitions", "3")
    assert report["records"] == 5000 and report["partitions"] == 3
    assert report["mb_per_s"] == pytest.approx(report["records_per_s"] * 116 / 1e6, rel=1e-3)


def test_e2e_at_a_fixed_rate_delivers_every_record_to_the_consumer_process(shared_broker):
    # When 4,000 records are sent at 2,000 records/s to a consumer waiting at the log end
    report = run_bench(shared_broker.url, "e2e", "--rate", "2000", "--messages", "4000")
    # Then the consumer got every one, each with a delivery latency
    assert report["sent"] == 4000 and report["records"] == 4000
    assert_percentiles_ordered(report["latency_us"])
    # And the pacing held the rate (the last chunk is due 1.999 s after the first)
    assert report["records_per_s"] <= 2000 * 1.01


def test_produce_with_several_processes_sums_their_records(shared_broker):
    report = run_bench(shared_broker.url, "produce", "--messages", "3001", "--producers", "2",
                       "--key-bytes", "0", "--acks", "all")
    assert report["records"] == 3001
    assert_percentiles_ordered(report["latency_us"])


def test_the_bench_defaults_to_the_producers_acks_and_says_which_it_used():
    # Given the Producer's default acks
    producer_acks = inspect.signature(Producer.__init__).parameters["acks"].default
    # Then the bench's default is the same, and its report's first line names it
    config = bench.BenchConfig()
    assert config.acks == str(producer_acks) == "all"
    assert config.producer_options()["acks"] == producer_acks
    report = bench.BenchReport("produce", "t", 4, 0, 1.0, 0, None, bench._settings(config))
    assert "acks=all " in report.format_table().splitlines()[0]


def test_e2e_refuses_values_too_short_for_the_send_time():
    done = subprocess.run([*PLINTH, "bench", "e2e", "--value-bytes", "4"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--value-bytes >= 8" in done.stderr


# --- The latency histogram --------------------------------------------------------------

def histogram_of_us(values_us) -> bench.LatencyHistogram:
    histogram = bench.LatencyHistogram()
    histogram.record_ns(np.asarray(values_us, dtype=np.int64) * 1000)
    return histogram


def test_percentiles_are_nearest_rank_in_whole_microseconds():
    # Given the latencies 1, 2, ..., 1000 µs, shuffled
    histogram = histogram_of_us(np.random.default_rng(1).permutation(np.arange(1, 1001)))
    # Then p(q) is the smallest value with q % of the values at or below it
    assert histogram.summary_us() == {"p50": 500, "p95": 950, "p99": 990, "p99.9": 999, "max": 1000}
    assert histogram.count == 1000


def test_latencies_keep_microseconds_and_drop_only_the_nanoseconds():
    histogram = bench.LatencyHistogram()
    histogram.record_ns(np.array([1_999, 2_000, 2_500_999, 2_501_000]))
    assert histogram.percentiles_us((25, 50, 75, 100)) == [1, 2, 2500, 2501]


def test_a_single_slow_record_shows_in_max_and_the_top_percentile_only():
    values_us = [100] * 999 + [7_000_123]   # one value beyond the 1-µs bins
    histogram = histogram_of_us(values_us)
    assert histogram.summary_us() == {"p50": 100, "p95": 100, "p99": 100, "p99.9": 100,
                                      "max": 7_000_123}
    assert histogram.percentiles_us((100,)) == [7_000_123]


def test_merged_histograms_equal_one_histogram_of_all_values():
    rng = np.random.default_rng(7)
    first, second = rng.integers(0, 50_000, 3000), rng.integers(0, 9_000_000, 500)
    merged = histogram_of_us(first)
    merged.merge(histogram_of_us(second))
    assert merged.summary_us() == histogram_of_us(np.concatenate([first, second])).summary_us()


def test_a_histogram_survives_pickling_between_processes():
    histogram = histogram_of_us([5, 5, 17, 4_500_000])
    assert pickle.loads(pickle.dumps(histogram)).summary_us() == histogram.summary_us()


def test_negative_latencies_count_as_zero_and_an_empty_histogram_has_no_summary():
    assert bench.LatencyHistogram().summary_us() is None
    histogram = bench.LatencyHistogram()
    histogram.record_ns(np.array([-5_000, 3_000]))
    assert histogram.percentiles_us((50, 100)) == [0, 3]


# --- Pieces of the e2e consumer and the memory watcher ----------------------------------------

def stamped(send_ns: int, value_bytes: int) -> ConsumerRecord:
    value = send_ns.to_bytes(8, "little", signed=True) + b"x" * (value_bytes - 8)
    return ConsumerRecord("t", 0, 0, None, value, [], 0)


@pytest.mark.parametrize("value_bytes", [8, 100])
def test_send_times_come_from_the_first_eight_bytes_of_each_value(value_bytes):
    records = [stamped(1_700_000_000_000_000_000 + i, value_bytes) for i in range(5)]
    assert bench.send_times_ns(records, value_bytes).tolist() == [
        1_700_000_000_000_000_000 + i for i in range(5)]
    # Values of another length (not the bench's) are read one by one
    assert bench.send_times_ns(records, value_bytes + 1)[0] == 1_700_000_000_000_000_000


def test_consumed_bytes_count_keys_and_values_and_nothing_for_nulls():
    # Given records with null, empty and non-empty keys and values
    records = [ConsumerRecord("t", 0, 0, None, b"abc", [], 0),
               ConsumerRecord("t", 0, 1, b"k", None, [], 0),
               ConsumerRecord("t", 0, 2, b"", b"", [], 0),
               ConsumerRecord("t", 0, 3, None, None, [], 0)]
    # When counted / Then only the bytes present count
    assert bench._payload_bytes(records) == 4


@pytest.mark.parametrize("cmdline, name", [
    ("/usr/bin/python3 /usr/local/bin/plinth serve --data-dir d", "plinth serve"),
    ("python -m plinth.cli serve --listen tcp://127.0.0.1:7401", "plinth serve"),
    ("ray::ShardActor", "ray::ShardActor"),
    ("ray::Controller.create_topic", "ray::Controller"),
    ("python -m plinth.cli bench produce", None),
    ("ray::DashboardAgent", None),
])
def test_broker_processes_are_recognised_by_their_command_line(cmdline, name):
    assert bench._broker_process_name(cmdline) == name
