"""loadtest/tier_read_bench.py runs end to end on a small log and prints its table
(hot, cold through file:// with and without the chunk cache, cold through moto)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_read_benchmark_reads_every_record_cold_and_prints_four_rows():
    # Given a 4 MiB log in 1 MiB segments / When the benchmark runs
    done = subprocess.run(
        [sys.executable, str(ROOT / "loadtest" / "tier_read_bench.py"), "--mib", "4",
         "--segment-mib", "1", "--batch-kib", "16", "--records-per-batch", "8",
         "--fetch-mib", "1", "--moto-mib", "1", "--cache-mib", "2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    # Then it succeeds (it fails if a cold read gives other records than the hot one)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| hot")
            or line.startswith("| cold")]
    assert len(rows) == 4
    # and every row read something
    assert all(float(row.split("|")[2]) > 0 for row in rows)
