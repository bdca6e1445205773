"""What one durable append costs on this disk, by the way it is made durable (issue 13).

A shard acknowledges a produce after the segment's fsync (shards/segment.py:
``os.writev`` then ``os.fsync``). Databases also use ``fdatasync``, which
skips the inode's timestamps, and preallocated files, whose appends change no
file size, so that ``fdatasync`` has no metadata to write at all. This times
each way on one file in ``--dir`` (the data directory's disk), paced like
issue 13's one-record-at-a-time benchmark:

    append-fsync           os.pwrite at the end, os.fsync       (what segments do)
    append-fdatasync       os.pwrite at the end, os.fdatasync
    fallocated-fdatasync   into space posix_fallocate reserved, os.fdatasync
    zero-filled-fdatasync  into blocks written with zeros and synced first, os.fdatasync

Each variant writes ``--syncs`` records of ``--record-bytes`` at ``--rate`` a
second (0: back to back), in ``--rounds`` rounds that alternate the variants so
that a slow minute of the machine hurts them alike, and prints the p50, p99 and
max of the write + sync time in µs, medians over the rounds.

    python -m loadtest.fsync_variants --dir /path/on/the/data/disk
    python -m loadtest.fsync_variants --syncs 200 --rate 0 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Room reserved (or zero-filled) ahead of the appends: more than any run writes.
PREPARED_BYTES_MIN = 1 << 20


def _append_fsync(fd: int, prepared_bytes: int) -> Callable[[int], None]:
    return os.fsync


def _append_fdatasync(fd: int, prepared_bytes: int) -> Callable[[int], None]:
    return os.fdatasync


def _fallocated_fdatasync(fd: int, prepared_bytes: int) -> Callable[[int], None]:
    os.posix_fallocate(fd, 0, prepared_bytes)
    os.fsync(fd)
    return os.fdatasync


def _zero_filled_fdatasync(fd: int, prepared_bytes: int) -> Callable[[int], None]:
    os.pwrite(fd, bytes(prepared_bytes), 0)
    os.fsync(fd)
    return os.fdatasync


# name -> prepares the empty file, returns the sync call to time after each write
VARIANTS: dict[str, Callable[[int, int], Callable[[int], None]]] = {
    "append-fsync": _append_fsync,
    "append-fdatasync": _append_fdatasync,
    "fallocated-fdatasync": _fallocated_fdatasync,
    "zero-filled-fdatasync": _zero_filled_fdatasync,
}


def time_syncs(directory: Path, variant: str, syncs: int, record_bytes: int,
               rate: float) -> list[float]:
    """The write + sync time of each of ``syncs`` records, in µs, on a new file."""
    path = directory / f"fsync-variants-{variant}.log"
    prepared_bytes = max(PREPARED_BYTES_MIN, 2 * syncs * record_bytes)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        sync = VARIANTS[variant](fd, prepared_bytes)
        record = b"r" * record_bytes
        interval_s = 1 / rate if rate > 0 else 0.0
        next_s = time.monotonic()
        times_us = []
        for position in range(0, syncs * record_bytes, record_bytes):
            if interval_s:
                next_s += interval_s
                time.sleep(max(0.0, next_s - time.monotonic()))   # the pacing itself
            started_ns = time.perf_counter_ns()
            os.pwrite(fd, record, position)
            sync(fd)
            times_us.append((time.perf_counter_ns() - started_ns) / 1000)
        return times_us
    finally:
        os.close(fd)
        path.unlink()


def percentiles(times_us: list[float]) -> dict[str, float]:
    ordered = sorted(times_us)
    return {"p50_us": ordered[len(ordered) // 2],
            "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max_us": ordered[-1]}


def run(directory: Path, rounds: int, syncs: int, record_bytes: int,
        rate: float) -> dict[str, dict[str, float]]:
    """Per variant, the medians over ``rounds`` of each round's percentiles."""
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            per_round[name].append(percentiles(
                time_syncs(directory, name, syncs, record_bytes, rate)))
    return {name: {key: round(statistics.median(r[key] for r in results), 1)
                   for key in results[0]}
            for name, results in per_round.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="a directory on the disk to measure (default: a temporary one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--syncs", type=int, default=2000, help="records per variant per round")
    parser.add_argument("--record-bytes", type=int, default=180,
                        help="bytes per write (a 100-byte record in its batch frame)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="writes per second (0: back to back)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.syncs < 1 or args.record_bytes < 1 or args.rate < 0:
        parser.error("--rounds, --syncs and --record-bytes must be at least 1, --rate at least 0")
    with tempfile.TemporaryDirectory(prefix="plinth-fsync-", dir=args.dir) as work:
        results = run(Path(work), args.rounds, args.syncs, args.record_bytes, args.rate)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{args.syncs} writes of {args.record_bytes} bytes at "
          f"{args.rate:g}/s per variant, medians of {args.rounds} rounds (µs):")
    print(f"  {'variant':24s} {'p50':>8s} {'p99':>8s} {'max':>8s}")
    for name, result in results.items():
        print(f"  {name:24s} {result['p50_us']:8.1f} {result['p99_us']:8.1f} "
              f"{result['max_us']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
