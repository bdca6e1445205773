"""loadtest/kafka_batch_bench.py: a real short run (its report's shape, not its timings)."""

from __future__ import annotations

import json

import pytest

from loadtest import kafka_batch_bench


def test_a_short_run_reports_every_operation_per_batch_and_per_record(capsys):
    # Given a run of batches of 20 records, one round each, printed as JSON
    assert kafka_batch_bench.main(["--records", "20", "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Then it says what it ran, with the sizes of the batches it measured
    assert (report["records"], report["value_bytes"]) == (20, 100)
    assert report["kafka_zstd_batch_bytes"] < report["kafka_batch_bytes"]
    # And every operation has a positive time per batch and its records per second
    assert list(report["results"]) == [
        "summarize_kafka uncompressed", "summarize_kafka zstd", "decode_kafka uncompressed",
        "decode_kafka zstd", "plinth_to_kafka canonical", "plinth_to_kafka with headers",
        "plinth summarize_batch", "plinth decode_records"]
    for name, result in report["results"].items():
        assert result["us_per_batch"] > 0, name
        # (the time is printed to 0.01 us, the rate from the unrounded time: the rounding
        # alone is up to 0.005 us, 1.8 % of a 0.28 us batch, seen on a quiet machine)
        rounding = 0.005 / result["us_per_batch"]
        assert result["records_per_s"] == pytest.approx(20 / result["us_per_batch"] * 1e6,
                                                        rel=0.01 + rounding)
