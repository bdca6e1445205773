"""loadtest/shard_round_trip.py: a real short run of all three servers (its report's shape,
not its timings), each figure's floor, and its child processes ending however the run ends."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from loadtest import shard_round_trip


def children_named(*names: str) -> list[str]:
    """This process's live children with those names (active_children() reaps the dead)."""
    return [child.name for child in multiprocessing.active_children() if child.name in names]


def test_a_short_run_reports_every_percentile_of_every_server_with_its_ratio_to_its_floor(capsys):
    # Given a run of 20 records at a high rate, printed as JSON
    assert shard_round_trip.main(["--records", "20", "--rate", "2000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Then it says what it ran
    assert (report["records"], report["rate"], report["fsync_policy"]) == (20, 2000.0, "always")
    servers = report["servers"]
    assert list(servers) == ["floor", "floor_fsync", "shard"]
    # And every server has every percentile, in order, each above 0 ms
    for name, result in servers.items():
        figures = [result["latency_ms"][p] for p, _ in shard_round_trip.PERCENTILES]
        assert all(figure > 0 for figure in figures), (name, figures)
        assert figures == sorted(figures), (name, figures)
        assert len(result["load_average"]) == 3 and all(v >= 0 for v in result["load_average"])
    # And the floor with fsync is divided by the bare floor, the shard (fsync always) by
    # the floor with fsync; every ratio is positive
    assert (servers["floor"]["ratio_to"], servers["floor_fsync"]["ratio_to"],
            servers["shard"]["ratio_to"]) == (None, "floor", "floor_fsync")
    assert servers["floor"]["ratio"] is None
    for name in ("floor_fsync", "shard"):
        assert all(servers[name]["ratio"][p] > 0 for p, _ in shard_round_trip.PERCENTILES)
    # And no child process is left
    assert children_named(*shard_round_trip.SERVERS) == []


def test_the_table_has_a_row_per_server_with_each_ratio_beside_its_figure():
    # Given figures where the floor takes 0.5 ms, the floor with fsync 1.0 ms and the shard 1.5 ms
    results = {name: {"latency_ms": {p: ms for p, _ in shard_round_trip.PERCENTILES},
                      "load_average": [2.0, 1.5, 1.0]}
               for name, ms in (("floor", 0.5), ("floor_fsync", 1.0), ("shard", 1.5))}
    # When the ratios are added and the table made
    table = shard_round_trip.format_table(shard_round_trip.with_ratios(results, "always"),
                                          3000, 200.0, "always")
    lines = table.splitlines()
    # Then the header names the run, and a row per server follows
    assert "3000 records at 200/s" in lines[0]
    assert lines[1].split()[:5] == ["p50", "p90", "p99", "p99.9", "max"]
    assert len(lines) == 5
    # And the bare floor has no ratio, the floor with fsync is 2x it, the shard 1.5x the
    # floor with fsync; the load average ends each row
    assert lines[2].split()[-8:] == ["0.500"] * 5 + ["2.00", "1.50", "1.00"]
    assert lines[3].split()[-13:-3] == ["1.000", "(2.00x)"] * 5
    assert lines[4].split()[-13:-3] == ["1.500", "(1.50x)"] * 5


def test_a_shard_without_fsync_per_request_is_divided_by_the_bare_floor():
    assert shard_round_trip.floor_of("shard", "never") == "floor"
    assert shard_round_trip.floor_of("shard", "interval") == "floor"
    assert shard_round_trip.floor_of("shard", "always") == "floor_fsync"


def test_a_child_is_stopped_when_the_run_fails_inside_the_block(tmp_path):
    # Given a floor in its child process
    with pytest.raises(ValueError, match="the run failed"):
        with shard_round_trip.child_server("floor-test", shard_round_trip.serve_floor,
                                           str(tmp_path / "log"), False) as address:
            assert address.startswith("tcp://127.0.0.1:")
            # When the run fails while it serves
            raise ValueError("the run failed")
    # Then the child has ended
    assert children_named("floor-test") == []


def test_a_child_that_dies_before_its_address_is_an_error_naming_its_exit_code(tmp_path):
    # Given a floor whose log file cannot be made (its directory does not exist)
    # When it is started, then the parent says it ended without an address
    with pytest.raises(RuntimeError, match="ended with exit code 1 before sending its address"):
        with shard_round_trip.child_server("floor-test", shard_round_trip.serve_floor,
                                           str(tmp_path / "missing" / "log"), False):
            pass
    assert children_named("floor-test") == []


def deaf_server(conn, sleep_s: float) -> None:
    """A child that sends an address and then ignores the stop word."""
    conn.send("tcp://127.0.0.1:1")
    time.sleep(sleep_s)


def test_a_child_that_ignores_the_stop_word_is_killed(monkeypatch):
    # Given a child that would sleep for a minute after sending its address
    monkeypatch.setattr(shard_round_trip, "STOP_TIMEOUT_S", 1.0)
    started_s = time.monotonic()
    with shard_round_trip.child_server("deaf-test", deaf_server, 60.0):
        pass
    # Then it was killed after the bound, long before its minute was up
    assert children_named("deaf-test") == []
    assert time.monotonic() - started_s < 30


def test_a_short_transport_comparison_reports_both_sockets_and_the_block_difference(capsys):
    # Given 2 blocks of 10 requests each way, printed as JSON
    assert shard_round_trip.main(["--transports", "2", "--records", "10", "--rate", "2000",
                                  "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Then both transports have every percentile, in order, each above 0 ms
    for name in shard_round_trip.TRANSPORTS:
        figures = [report[name]["latency_ms"][p] for p, _ in shard_round_trip.PERCENTILES]
        assert all(figure > 0 for figure in figures) and figures == sorted(figures), figures
    # And ipc's block difference and count are there, and no child process is left
    assert isinstance(report["ipc"]["block_p50_difference_us"], float)
    assert 0 <= report["ipc"]["blocks_faster"] <= 2
    assert children_named(*shard_round_trip.TRANSPORTS) == []


def test_a_negative_block_count_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit):
        shard_round_trip.main(["--transports", "-1"])
    assert "--transports at least 0" in capsys.readouterr().err
