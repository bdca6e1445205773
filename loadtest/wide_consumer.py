"""An idle consumer of many partitions: how long a record waits to be seen, and what
the consumer costs while nothing comes.

On a running broker: a topic of ``--partitions`` partitions (created if missing), one
consumer of all of it without a group (``auto_offset_reset="latest"``), polling. Then,
``--records`` times, one record is produced to a random partition (``send().get()``,
linger 0) and timed until the consumer hands it out; and for ``--idle-s`` seconds,
nothing is produced while the consumer polls, and its process's CPU time is counted.

A consumer of more partitions than it may have fetches in flight (256) takes turns,
each fetch parked for its share of ``fetch_max_wait_ms`` (client/fetcher.py), so the
wait grows with the partitions beyond 1,280. There is no peer in this run: Redis
answers one XREAD over every stream, Kafka one fetch per broker.

    plinth serve --data-dir /tmp/w --listen tcp://127.0.0.1:7470 &
    python -m loadtest.wide_consumer --broker tcp://127.0.0.1:7470 --partitions 4096
"""

from __future__ import annotations

import argparse
import json
import random
import time

from plinth import Admin, Consumer, Producer
from plinth.errors import TopicExistsError

RECORD_WAIT_S = 30          # a record not seen within this is counted as lost


def wait_until_seen(consumer: Consumer, started_s: float) -> float | None:
    """Seconds from ``started_s`` until the consumer hands out a record, or None."""
    while time.monotonic() - started_s < RECORD_WAIT_S:
        if any(consumer.poll(timeout_ms=100).values()):
            return time.monotonic() - started_s
    return None


def run(broker: str, topic: str, partitions: int, records: int, idle_s: float) -> dict:
    with Admin(broker=broker) as admin:
        try:
            admin.create_topic(topic, partitions=partitions)
        except TopicExistsError:
            partitions = admin.partition_count(topic)
    waits_s, missed = [], 0
    with Consumer(topic, broker=broker, auto_offset_reset="latest") as consumer, \
            Producer(broker=broker, linger_ms=0) as producer:
        consumer.poll(timeout_ms=3000)   # every partition's position taken
        for _ in range(records):
            started_s = time.monotonic()
            producer.send(topic, b"x", partition=random.randrange(partitions)).get(timeout=30)
            seen_s = wait_until_seen(consumer, started_s)
            missed += seen_s is None
            waits_s += [] if seen_s is None else [seen_s]
        cpu_start_s, idle_start_s = time.process_time(), time.monotonic()
        while time.monotonic() - idle_start_s < idle_s:
            consumer.poll(timeout_ms=200)
        cpu_s = time.process_time() - cpu_start_s
    waits_s.sort()
    return {"topic": topic, "partitions": partitions, "records": records, "missed": missed,
            "wait_s": {"min": waits_s[0] if waits_s else None,
                       "p50": waits_s[len(waits_s) // 2] if waits_s else None,
                       "max": waits_s[-1] if waits_s else None},
            "idle_s": idle_s, "idle_cpu_cores": cpu_s / idle_s if idle_s else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="tcp://127.0.0.1:7400")
    parser.add_argument("--topic", default=None, help="default: wide-<partitions>")
    parser.add_argument("--partitions", type=int, default=4096)
    parser.add_argument("--records", type=int, default=10)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.broker, args.topic or f"wide-{args.partitions}", args.partitions,
                 args.records, args.idle_s)
    if args.json:
        print(json.dumps(report))
        return 0
    wait = report["wait_s"]
    print(f"{report['partitions']} partitions, {report['records']} records "
          f"({report['missed']} not seen within {RECORD_WAIT_S} s): wait min / p50 / max "
          f"{wait['min']:.3f} / {wait['p50']:.3f} / {wait['max']:.3f} s; idle consumer "
          f"{report['idle_cpu_cores']:.2f} of a core over {report['idle_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
