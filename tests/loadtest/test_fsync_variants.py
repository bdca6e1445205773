"""loadtest/fsync_variants.py on this machine's disk: every variant timed, nothing left behind."""

from __future__ import annotations

import json

import pytest

from loadtest import fsync_variants


def test_each_variant_times_every_write_and_leaves_no_file_behind(tmp_path):
    for variant in fsync_variants.VARIANTS:
        times_us = fsync_variants.time_syncs(tmp_path, variant, 20, 64, rate=0)
        assert len(times_us) == 20 and all(t > 0 for t in times_us)
    assert list(tmp_path.iterdir()) == []


def test_the_summary_orders_its_percentiles_for_every_variant(tmp_path):
    results = fsync_variants.run(tmp_path, rounds=2, syncs=10, record_bytes=32, rate=0)
    assert set(results) == set(fsync_variants.VARIANTS)
    for result in results.values():
        assert 0 < result["p50_us"] <= result["p99_us"] <= result["max_us"]


def test_the_command_prints_one_json_object_with_every_variant(tmp_path, capsys):
    assert fsync_variants.main(["--dir", str(tmp_path), "--rounds", "1", "--syncs", "5",
                                "--rate", "0", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(fsync_variants.VARIANTS)


def test_a_run_of_no_syncs_is_refused_naming_the_options(capsys):
    with pytest.raises(SystemExit):
        fsync_variants.main(["--syncs", "0"])
    assert "--syncs" in capsys.readouterr().err
