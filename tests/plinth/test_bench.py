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
from plinth.errors import PlinthTimeoutError, TopicExistsError
from plinth.client.accumulator import RECORD_BYTES_MAX
from plinth.format.record_batch import RECORD_OVERHEAD_BYTES, ConsumerRecord
from tests.support import unique_topic

PLINTH = [sys.executable, "-m", "plinth.cli"]


def run_bench(url: str, *args: str, timeout_s: float = 120) -> dict:
    """Run ``plinth bench ... --json`` and return the JSON report."""
    done = subprocess.run([*PLINTH, "bench", *args, "--json"], capture_output=True, text=True,
                          env=dict(os.environ, PLINTH_BROKER=url), timeout=timeout_s, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_percentiles_ordered(latency_us: dict) -> None:
    values = [latency_us[name] for name in ("p50", "p90", "p95", "p99", "p99.9", "max")]
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


@pytest.mark.parametrize("options", [
    {"request_timeout_ms": 3_600_000},                  # --request-timeout-ms at its bound
    {"linger_ms": 100_000},                             # a linger past 120 s - 30 s
    {"linger_ms": 2_143_883_647, "request_timeout_ms": 3_600_000},   # both at their bounds
])
def test_the_bench_producers_take_a_long_linger_or_request_timeout_the_cli_allows(options):
    # Given bench options the CLI takes, each of which left the Producer's default delivery
    # timeout (120 s) below linger + request timeout, so that the producers refused them
    producer_options = bench.BenchConfig(broker="tcp://127.0.0.1:1", **options).producer_options()
    # Then the producers' delivery timeout covers both, and a Producer takes them
    assert producer_options["delivery_timeout_ms"] >= (
        options.get("linger_ms", 5) + options.get("request_timeout_ms", 30_000))
    Producer(**producer_options).close(timeout=0)


def test_the_bench_producers_keep_the_producers_default_delivery_timeout_when_it_is_enough():
    assert bench.BenchConfig().producer_options()["delivery_timeout_ms"] == 120_000


def test_produce_one_at_a_time_times_every_record_from_send_to_its_acknowledgement(shared_broker):
    # When 300 records go one at a time at 300 records/s, as issue 13's peers were measured
    report = run_bench(shared_broker.url, "produce", "--one-at-a-time", "--rate", "300",
                       "--messages", "300", "--linger-ms", "0", "--partitions", "1",
                       "--key-bytes", "0")
    # Then every record was acknowledged and timed, and the report says how it was sent
    assert report["records"] == 300 and report["errors"] == 0
    assert report["settings"]["one_at_a_time"] is True
    assert_percentiles_ordered(report["latency_us"])
    # And the pacing held the rate (the last record is due 299/300 s after the first)
    assert report["records_per_s"] <= 300 * 1.01
    with Admin(broker=shared_broker.url) as admin:
        (partition,) = admin.describe_topic(report["topic"]).partition_info
    assert partition.end_offset == 300


def test_e2e_one_at_a_time_delivers_every_record_to_the_consumer_process(shared_broker):
    report = run_bench(shared_broker.url, "e2e", "--one-at-a-time", "--rate", "300",
                       "--messages", "300", "--linger-ms", "0", "--partitions", "1")
    assert report["sent"] == 300 and report["records"] == 300 and report["errors"] == 0
    assert report["settings"]["one_at_a_time"] is True
    assert_percentiles_ordered(report["latency_us"])


def test_consume_has_no_one_at_a_time_mode():
    with pytest.raises(ValueError, match="--one-at-a-time is for produce and e2e"):
        bench.BenchConfig(one_at_a_time=True).check("consume")
    done = subprocess.run([*PLINTH, "bench", "consume", "--one-at-a-time"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "No such option" in done.stderr


def test_the_report_names_the_one_at_a_time_mode_and_prints_p90():
    config = bench.BenchConfig(one_at_a_time=True, rate=200)
    report = bench.BenchReport("produce", "t", 1, 1, 1.0, 100, histogram_of_us([1500]),
                               bench._settings(config))
    head, columns, row = report.format_table().splitlines()
    assert "200 records/s, one record at a time," in head
    assert columns.split()[4:] == ["p50", "ms", "p90", "ms", "p95", "ms", "p99", "ms",
                                   "p99.9", "ms", "max", "ms"]
    assert row.split()[4:] == ["1.500"] * 6


def test_the_report_counts_one_partition_and_one_producer_in_the_singular():
    # Given a run of one producer on a topic of one partition
    report = bench.BenchReport("produce", "t", 1, 1, 1.0, 100, histogram_of_us([1500]),
                               bench._settings(bench.BenchConfig(producers=1)))
    # Then its first line says so in the singular ("(1 partitions)" before)
    head = report.format_table().splitlines()[0]
    assert "topic t (1 partition), " in head and " 1 producer flat out" in head


@pytest.mark.parametrize("partitions, note", [
    (7, "note: topic orders exists with 3 partitions; --partitions 7 is ignored (it is for a "
        "topic the bench creates)\n"),
    (3, ""),   # as asked: nothing to say
])
def test_partitions_for_a_topic_that_exists_with_another_count_are_said_to_be_ignored(
        monkeypatch, capsys, partitions, note):
    # Given a topic orders that exists with 3 partitions
    class Admin:
        def __init__(self, **_):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def create_topic(self, name, partitions, replication_factor=None):
            raise TopicExistsError(f"topic {name!r} exists")

        def partition_count(self, name):
            return 3

    monkeypatch.setattr(bench, "Admin", Admin)
    # When the bench is asked for it with --partitions
    topic = bench.ensure_topic(bench.BenchConfig(topic="orders", partitions=partitions))
    # Then it runs on the topic as it is, and says on stderr that --partitions was ignored
    assert topic == ("orders", 3)
    assert capsys.readouterr().err == note


class _Future:
    def __init__(self, log: list, seq: int, error: Exception | None):
        self.log, self.seq, self.error = log, seq, error

    def get(self, timeout):
        self.log.append(("get", self.seq))
        if self.error is not None:
            raise self.error


class _OrderRecordingProducer:
    """Stands in for the Producer (not under test): records the order of send and get."""

    def __init__(self, failing: set[int]):
        self.log, self.failing = [], failing

    def send(self, topic, value, key=None):
        seq = len([entry for entry in self.log if entry[0] == "send"])
        assert not self.log or self.log[-1] == ("get", seq - 1), "sent before the last ack"
        self.log.append(("send", seq))
        return _Future(self.log, seq, PlinthTimeoutError("t") if seq in self.failing else None)


def test_one_at_a_time_waits_for_each_acknowledgement_before_the_next_send():
    # Given the bench's send loop over a producer that fails record 2
    spec = bench._ProducerSpec(bench.BenchConfig(one_at_a_time=True, value_bytes=16), "t", 0, 4,
                               stamped=True)
    producer = _OrderRecordingProducer(failing={2})
    run = bench._ProducerRun(producer, spec, [None], sent_counts=None)
    # When it sends four records
    run._send_one_at_a_time(0, 4)
    # Then each send came after the previous record's get, every record was awaited,
    # the failed one counts as an error and the other three were timed
    assert producer.log == [(kind, seq) for seq in range(4) for kind in ("send", "get")]
    assert run.timer.errors == 1 and len(run.waited_ns) == 3
    assert all(ns > 0 for ns in run.waited_ns)


def test_e2e_refuses_values_too_short_for_the_send_time():
    done = subprocess.run([*PLINTH, "bench", "e2e", "--value-bytes", "4"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--value-bytes >= 8" in done.stderr


def test_a_record_larger_than_a_batch_holds_is_refused_before_any_key_is_drawn():
    # Given a key and a value that together are one byte over what a record may have
    config = bench.BenchConfig(key_bytes=16,
                               value_bytes=RECORD_BYTES_MAX - RECORD_OVERHEAD_BYTES - 15)
    # When the bench checks them / Then it names both options and the limit
    with pytest.raises(ValueError, match=rf"--key-bytes 16 \+ --value-bytes \d+ .* over the "
                                         rf"{RECORD_BYTES_MAX} bytes a record may have"):
        config.check("produce")
    # and one byte less is taken
    bench.BenchConfig(key_bytes=15, value_bytes=config.value_bytes).check("produce")


def test_the_cli_refuses_a_value_too_large_for_a_record_in_one_line():
    done = subprocess.run([*PLINTH, "bench", "produce", "--value-bytes", str(1 << 30)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "bytes a record may have" in done.stderr
    assert "Traceback" not in done.stderr


def test_long_keys_make_a_smaller_pool_within_its_bytes_bound():
    pool = bench.key_pool(1 << 20, messages=1_000_000)
    assert len(pool) == bench.KEY_POOL_BYTES_MAX // (1 << 20)
    assert len(set(pool)) == len(pool) and all(len(key) == 1 << 20 for key in pool)


# --- The latency histogram --------------------------------------------------------------

def histogram_of_us(values_us) -> bench.LatencyHistogram:
    histogram = bench.LatencyHistogram()
    histogram.record_ns(np.asarray(values_us, dtype=np.int64) * 1000)
    return histogram


def test_percentiles_are_nearest_rank_in_whole_microseconds():
    # Given the latencies 1, 2, ..., 1000 µs, shuffled
    histogram = histogram_of_us(np.random.default_rng(1).permutation(np.arange(1, 1001)))
    # Then p(q) is the smallest value with q % of the values at or below it
    assert histogram.summary_us() == {"p50": 500, "p90": 900, "p95": 950, "p99": 990, "p99.9": 999,
                                      "max": 1000}
    assert histogram.count == 1000


def test_latencies_keep_microseconds_and_drop_only_the_nanoseconds():
    histogram = bench.LatencyHistogram()
    histogram.record_ns(np.array([1_999, 2_000, 2_500_999, 2_501_000]))
    assert histogram.percentiles_us((25, 50, 75, 100)) == [1, 2, 2500, 2501]


def test_a_single_slow_record_shows_in_max_and_the_top_percentile_only():
    values_us = [100] * 999 + [7_000_123]   # one value beyond the 1-µs bins
    histogram = histogram_of_us(values_us)
    assert histogram.summary_us() == {"p50": 100, "p90": 100, "p95": 100, "p99": 100,
                                      "p99.9": 100, "max": 7_000_123}
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
