"""Client memory: the RSS of one process that produces and consumes round after round.

The producer's and the consumer's per-record paths are C (client/_producer.c,
format/_record_batch.c); a leak there grows this process's RSS every
round, while a healthy run settles after a few rounds and stays flat. Every
thousandth record carries a header, so the slow paths run too.

    plinth serve &
    python loadtest/client_memory.py --broker tcp://127.0.0.1:7400 --rounds 20
"""

from __future__ import annotations

import argparse
import os

from plinth import Admin, Consumer, Producer
from plinth.errors import TopicExistsError

KEY_COUNT = 1000
HEADER_EVERY_RECORDS = 1000
POLL_TIMEOUT_MS = 5000


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=None)
    parser.add_argument("--topic", default=None, help="default: a fresh topic")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--records-per-round", type=int, default=500_000)
    args = parser.parse_args()
    args.topic = args.topic or f"client-memory-{os.urandom(4).hex()}"
    with Admin(broker=args.broker) as admin:
        try:
            admin.create_topic(args.topic, 4)
        except TopicExistsError:
            pass
    keys = [os.urandom(16) for _ in range(KEY_COUNT)]
    value = b"v" * 100
    with Producer(broker=args.broker) as producer, \
            Consumer(broker=args.broker, auto_offset_reset="earliest") as consumer:
        consumer.subscribe([args.topic])
        read = 0
        for round_index in range(args.rounds):
            for i in range(args.records_per_round):
                headers = [("h", b"x")] if i % HEADER_EVERY_RECORDS == 0 else None
                producer.send(args.topic, value, key=keys[i % KEY_COUNT], headers=headers)
            producer.flush()
            written = (round_index + 1) * args.records_per_round
            while read < written:
                polled = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=100_000)
                if not polled:
                    raise SystemExit(f"no records within {POLL_TIMEOUT_MS} ms after {read}")
                for records in polled.values():
                    read += len(records)
                    _ = records[0].headers   # builds the lazily made headers list
            print(f"round {round_index}: {written} records sent and read, "
                  f"RSS {rss_mib():.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
