"""What Producer(compression_type=...) buys (issue 15): records/s and bytes on disk for
realistic JSON events, each codec against uncompressed Plinth batches.

Starts a fresh embedded ``plinth serve`` (its own data dir and port), then for each
of none, gzip, snappy, lz4 and zstd: creates a one-partition topic, produces
``--records`` events with one Producer (linger_ms 5, acks "all", batches up to 1 MiB
of records before compression), timing send() through flush(), and reads the
partition's bytes on the shard's disk (listOffsets' size_bytes: log entries,
headers included). The events are JSON page views of about 270 bytes (user ids,
paths, a user agent, a session id, a timestamp): field names and most values
repeat, as real event streams do, while ids and times vary. The figures are the
median of ``--rounds`` rounds, each on its own topic:

    python -m loadtest.compression_bench
    python -m loadtest.compression_bench --records 200000 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from loadtest.fresh_broker import fresh_broker
from plinth.client.admin import Admin
from plinth.client.producer import Producer

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
PATHS = ["/", "/search", "/cart", "/checkout", "/account"] + [f"/products/{n}" for n in range(400)]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
          "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"]


def events(count: int, seed: int = 15) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``count`` JSON page-view events."""
    rng = random.Random(seed)
    t0_ms = time.time_ns() // 1_000_000 - 3_600_000
    out = []
    for i in range(count):
        user = rng.randrange(50_000)
        event = {"type": rng.choice(["page_view", "page_view", "click", "add_to_cart"]),
                 "user_id": user, "session_id": "%016x" % rng.getrandbits(64),
                 "path": rng.choice(PATHS), "referrer": rng.choice(["", "https://www.google.com/",
                                                                    "https://example.com/ads"]),
                 "user_agent": rng.choice(AGENTS), "country": rng.choice(["DE", "FR", "US", "JP"]),
                 "ts_ms": t0_ms + i * 3, "duration_ms": rng.randrange(20, 5000)}
        out.append((b"user-%d" % user, json.dumps(event, separators=(",", ":")).encode()))
    return out


def one_round(url: str, codec: str | None, records: list[tuple[bytes, bytes]],
              round_no: int) -> dict:
    """Produce ``records`` with ``codec`` to a new topic; records/s and bytes on disk."""
    topic = f"compress-{codec or 'none'}-{round_no}"
    with Admin(broker=url) as admin:
        admin.create_topic(topic, partitions=1)
    with Producer(broker=url, compression_type=codec, linger_ms=5) as producer:
        producer.partitions_for(topic)
        started = time.perf_counter()
        for key, value in records:
            producer.send(topic, value, key=key, partition=0)
        producer.flush()
        elapsed_s = time.perf_counter() - started
    with Admin(broker=url) as admin:
        info = admin.list_offsets(topic, 0)
    if info.end_offset != len(records):
        raise SystemExit(f"{topic}: {info.end_offset} records stored, not {len(records)}")
    return {"records_per_s": len(records) / elapsed_s, "disk_bytes": info.size_bytes}


def run(url: str, record_count: int, rounds: int) -> list[dict]:
    records = events(record_count)
    value_bytes = sum(len(k) + len(v) for k, v in records)
    rows = []
    for codec in CODECS:
        results = [one_round(url, codec, records, n) for n in range(rounds)]
        rows.append({"codec": codec or "none", "records": record_count,
                     "key_value_bytes": value_bytes,
                     "records_per_s": statistics.median(r["records_per_s"] for r in results),
                     "disk_bytes": statistics.median(r["disk_bytes"] for r in results)})
    return rows


def print_table(rows: list[dict]) -> None:
    base = rows[0]
    print(f"{rows[0]['records']:,} JSON events, {base['key_value_bytes'] / base['records']:.0f} "
          f"bytes of key and value each")
    print(f"{'codec':8} {'records/s':>12} {'vs none':>8} {'disk bytes':>14} {'vs none':>8} "
          f"{'bytes/record':>13}")
    for row in rows:
        print(f"{row['codec']:8} {row['records_per_s']:12,.0f} "
              f"{row['records_per_s'] / base['records_per_s']:8.2f} {row['disk_bytes']:14,.0f} "
              f"{row['disk_bytes'] / base['disk_bytes']:8.2f} "
              f"{row['disk_bytes'] / row['records']:13.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plinth", default=shutil.which("plinth") or "plinth")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="plinth-compression-") as work_dir:
        with fresh_broker(args.plinth, Path(work_dir)) as (_, url):
            rows = run(url, args.records, args.rounds)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
