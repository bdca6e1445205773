"""AIOProducer against the sync Producer, in one run: records/s and their ratio.

Each side sends ``--records`` records of ``--value-bytes`` bytes (no key, the
producers' defaults otherwise) to a topic of ``--partitions`` partitions as
fast as it can, then awaits every acknowledgement; records/s is the count over
the time from the first send to the last acknowledgement. The AIO side sends
with ``await producer.send(...)`` and awaits the futures in bulk, two ways:
one ``await`` per future in send order ("aio-each") and one
``asyncio.gather`` of them all ("aio-gather"). Rounds interleave the sides,
so that a slow minute of a shared machine hurts each alike; the median of
the rounds is reported, with AIO ÷ sync (issue 16's target: at least 0.5).

    python -m loadtest.aio_bench                        # a fresh broker of its own
    python -m loadtest.aio_bench --broker tcp://127.0.0.1:7400 --records 200000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from plinth import Admin, Producer
from plinth.aio import AIOProducer


def sync_round(url: str, topic: str, records: int, value: bytes) -> float:
    with Producer(broker=url) as producer:
        producer.send(topic, b"warm-up").get(60)   # the topic's routes are learnt
        started_s = time.perf_counter()
        futures = [producer.send(topic, value) for _ in range(records)]
        for future in futures:
            future.get(120)
        return records / (time.perf_counter() - started_s)


async def aio_round(url: str, topic: str, records: int, value: bytes, gather: bool) -> float:
    async with AIOProducer(broker=url) as producer:
        await producer.send_and_wait(topic, b"warm-up")
        started_s = time.perf_counter()
        send = producer.send
        futures = [await send(topic, value) for _ in range(records)]
        if gather:
            await asyncio.gather(*futures)
        else:
            for future in futures:
                await future
        return records / (time.perf_counter() - started_s)


def measure(url: str, records: int, value_bytes: int, partitions: int, rounds: int) -> dict:
    topic = f"aio-bench-{uuid.uuid4().hex[:8]}"
    with Admin(broker=url) as admin:
        admin.create_topic(topic, partitions)
    value = b"x" * value_bytes
    rates: dict[str, list[float]] = {"sync": [], "aio-each": [], "aio-gather": []}
    for _ in range(rounds):
        rates["sync"].append(sync_round(url, topic, records, value))
        rates["aio-each"].append(asyncio.run(aio_round(url, topic, records, value, False)))
        rates["aio-gather"].append(asyncio.run(aio_round(url, topic, records, value, True)))
    medians = {side: statistics.median(r) for side, r in rates.items()}
    return {"topic": topic, "records": records, "value_bytes": value_bytes, "partitions": partitions,
            "rounds": rounds, "records_per_s": medians, "each_round": rates,
            "ratio_aio_each_to_sync": medians["aio-each"] / medians["sync"],
            "ratio_aio_gather_to_sync": medians["aio-gather"] / medians["sync"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", help="a running broker's URL (default: start a fresh one)")
    parser.add_argument("--plinth", default=shutil.which("plinth") or "plinth",
                        help="the plinth executable for the fresh broker")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.broker:
        result = measure(args.broker, args.records, args.value_bytes, args.partitions, args.rounds)
    else:
        from loadtest.fresh_broker import fresh_broker

        work_dir = Path(tempfile.mkdtemp(prefix="aio-bench-"))
        try:
            with fresh_broker(args.plinth, work_dir) as (_, url):
                result = measure(url, args.records, args.value_bytes, args.partitions, args.rounds)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    for side, rate in result["records_per_s"].items():
        print(f"{side:>11}: {rate:12,.0f} records/s")
    print(f"aio-each / sync:   {result['ratio_aio_each_to_sync']:.2f}")
    print(f"aio-gather / sync: {result['ratio_aio_gather_to_sync']:.2f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
