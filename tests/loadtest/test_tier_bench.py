"""loadtest/tier_bench.py runs end to end on small sizes: three read rows (hot, cold
from file://, cold from moto's S3) and soak samples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, str(ROOT / "loadtest" / "tier_bench.py")]


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    plinth = str(Path(sys.executable).parent / "plinth")
    return subprocess.run(BENCH + list(args) + ["--plinth", plinth, "--work-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_the_read_benchmark_reads_every_record_hot_and_cold_and_prints_three_rows(tmp_path):
    # When it runs on 8 MiB (2 through S3) in 1 MiB segments
    done = run("reads", "--mib", "8", "--moto-mib", "2", "--segment-mib", "1",
               tmp_path=tmp_path)
    # Then it succeeds (it fails if a record read is not the one written at its offset)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [line.split("|") for line in done.stdout.splitlines()
            if line.startswith(("| hot", "| cold"))]
    assert [row[1].split(",")[0].strip() for row in rows] == ["hot", "cold", "cold"]
    assert all(float(row[3].replace(",", "")) > 0 for row in rows)


def test_the_soak_prints_a_sample_with_remote_bytes_growing(tmp_path):
    done = run("soak", "--seconds", "6", "--sample-s", "3", "--segment-mib", "1",
               "--local-retention-mib", "2", "--partitions", "1", "--producers", "1",
               tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    samples = [line.split("|") for line in done.stdout.splitlines()
               if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(samples) >= 2
    assert float(samples[-1][4].replace(",", "")) > 0   # remote MiB
