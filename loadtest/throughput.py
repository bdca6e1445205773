"""Rough produce and consume throughput against a running broker.

Shows what one Python producer and one consumer reach with the defaults
(acks=1, fsync before acknowledgement). ``plinth bench`` will replace it.

    plinth serve &                       # another terminal
    python loadtest/throughput.py --messages 500000
"""

from __future__ import annotations

import argparse
import secrets
import time

from plinth import Admin, Consumer, Producer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=None)
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--key-bytes", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--linger-ms", type=float, default=5)
    args = parser.parse_args()

    topic = f"throughput-{secrets.token_hex(4)}"
    with Admin(broker=args.broker) as admin:
        admin.create_topic(topic, args.partitions)
    value = b"v" * args.value_bytes
    keys = [secrets.token_bytes(args.key_bytes) for _ in range(1024)] if args.key_bytes else [None]

    with Producer(broker=args.broker, linger_ms=args.linger_ms) as producer:
        started = time.perf_counter()
        for i in range(args.messages):
            last = producer.send(topic, value, key=keys[i % len(keys)])
        producer.flush()
        produce_s = time.perf_counter() - started
    last.get(0)
    report("produce", args.messages, produce_s, args)

    with Consumer(topic, broker=args.broker, auto_offset_reset="earliest") as consumer:
        started, count = time.perf_counter(), 0
        while count < args.messages:
            batch = consumer.poll(timeout_ms=5_000, max_records=100_000)
            if not batch:
                break
            count += sum(map(len, batch.values()))
        consume_s = time.perf_counter() - started
    report("consume", count, consume_s, args)


def report(what: str, count: int, seconds: float, args) -> None:
    mb = count * (args.value_bytes + args.key_bytes) / 1e6
    print(f"{what}: {count} records in {seconds:.2f} s = {count / seconds:,.0f} records/s, "
          f"{mb / seconds:,.1f} MB/s")


if __name__ == "__main__":
    main()
