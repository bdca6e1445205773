"""What Kafka's RecordBatch v2 costs Plinth (issue 15): format/kafka_batch.py per batch.

Prints µs per batch and records per second, for batches of ``--records`` records of
``--value-bytes``-byte values (8-byte keys), of:

- ``summarize_kafka_batch`` (the shard's check of a produced batch: CRC, header, and
  for an uncompressed batch the walk over every record), uncompressed and zstd;
- ``decode_kafka_records`` (the Plinth consumer: records section, decompressed for
  zstd, to ConsumerRecords), uncompressed and zstd;
- ``kafka_batch_from_plinth`` (a stored Plinth batch for a Kafka consumer), from the
  canonical layout and from pycapnp's (every tenth record with a header);
- and, for scale, Plinth's own ``summarize_batch`` and ``decode_records`` of the same
  records.

The values are hex text (about 2:1 under zstd). Each figure is the median of
``--rounds`` rounds of timed calls, one round lasting about 0.2 s:

    python -m loadtest.kafka_batch_bench
    python -m loadtest.kafka_batch_bench --records 1000 --value-bytes 100 --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import struct
import time

import cramjam
import crc32c

from plinth.format.kafka_batch import (
    COMPRESSION_ZSTD, KAFKA_BATCH_HEADER_BYTES, decode_kafka_records, kafka_batch_from_plinth,
    summarize_kafka_batch,
)
from plinth.format.record_batch import BatchBuilder, decode_records, summarize_batch

T0_MS = 1_700_000_000_000
ROUND_S = 0.2
HEADER_EVERY = 10     # records with a header in the pycapnp-layout batch


def plinth_batch(records: int, value_bytes: int, with_headers: bool) -> bytes:
    rng = random.Random(15)
    builder = BatchBuilder()
    for i in range(records):
        value = rng.randbytes(value_bytes // 2 + 1).hex()[:value_bytes].encode()
        headers = [("trace", b"%08d" % i)] if with_headers and i % HEADER_EVERY == 0 else None
        builder.append(b"key-%04d" % (i % 10_000), value, T0_MS + i, headers)
    return builder.build(producer_id=1, base_sequence=0)


def zstd_kafka_batch(uncompressed: bytes) -> bytes:
    """The same batch with its records as one zstd block: attributes, batchLength, CRC."""
    records = bytes(cramjam.zstd.compress(uncompressed[KAFKA_BATCH_HEADER_BYTES:]))
    out = bytearray(uncompressed[:KAFKA_BATCH_HEADER_BYTES] + records)
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, COMPRESSION_ZSTD)
    struct.pack_into(">I", out, 17, crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def per_call_us(function, *args) -> float:
    """Median over rounds of the µs one call takes."""
    calls = 1
    while True:   # calls per round: enough for ROUND_S
        started = time.perf_counter()
        for _ in range(calls):
            function(*args)
        elapsed_s = time.perf_counter() - started
        if elapsed_s >= ROUND_S / 4:
            break
        calls *= 4
    calls = max(1, int(calls * ROUND_S / elapsed_s))
    rounds = []
    for _ in range(per_call_us.rounds):
        started = time.perf_counter()
        for _ in range(calls):
            function(*args)
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds)


per_call_us.rounds = 5


def cases(records: int, value_bytes: int) -> dict:
    canonical = plinth_batch(records, value_bytes, with_headers=False)
    with_headers = plinth_batch(records, value_bytes, with_headers=True)
    uncompressed = kafka_batch_from_plinth(canonical, 0, 0)
    zstd = zstd_kafka_batch(uncompressed)
    return {
        "summarize_kafka uncompressed": (summarize_kafka_batch, uncompressed),
        "summarize_kafka zstd": (summarize_kafka_batch, zstd),
        "decode_kafka uncompressed": (decode_kafka_records, "t", 0, uncompressed),
        "decode_kafka zstd": (decode_kafka_records, "t", 0, zstd),
        "plinth_to_kafka canonical": (kafka_batch_from_plinth, canonical, 0, 0),
        "plinth_to_kafka with headers": (kafka_batch_from_plinth, with_headers, 0, 0),
        "plinth summarize_batch": (summarize_batch, canonical),
        "plinth decode_records": (decode_records, "t", 0, 0, canonical),
    }, {"plinth_batch_bytes": len(canonical), "kafka_batch_bytes": len(uncompressed),
        "kafka_zstd_batch_bytes": len(zstd)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="records per batch")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    per_call_us.rounds = args.rounds
    table, sizes = cases(args.records, args.value_bytes)
    report = {"records": args.records, "value_bytes": args.value_bytes, **sizes, "results": {}}
    for name, (function, *call_args) in table.items():
        us = per_call_us(function, *call_args)
        report["results"][name] = {"us_per_batch": round(us, 2),
                                   "records_per_s": round(args.records / us * 1e6)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.records} records of {args.value_bytes}-byte values per batch: Plinth batch "
          f"{sizes['plinth_batch_bytes']} bytes, Kafka {sizes['kafka_batch_bytes']} bytes, "
          f"zstd {sizes['kafka_zstd_batch_bytes']} bytes")
    for name, result in report["results"].items():
        print(f"  {name:30} {result['us_per_batch']:10.1f} us/batch "
              f"{result['records_per_s']:14,} records/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
