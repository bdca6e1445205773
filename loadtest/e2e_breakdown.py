"""Where a record's end-to-end time goes, at a paced rate: a timestamp per stage.

    python -m loadtest.e2e_breakdown --rate 10000 --messages 50000 --linger-ms 1

Against a running broker (``PLINTH_BROKER``), like ``plinth bench e2e``: a
producer process sends records whose value starts with ``time.time_ns()``; a
consumer process, at the log end, polls them. Both clocks are the machine's.
Each record's time is cut into stages, joined by (partition, offset):

    wait    its send() -> its batch handed to the socket by the sender thread
            (the linger, and a partition with its window of batches in
            flight: an idempotent producer has up to 5 per partition)
    ack     its batch sent -> the batch's acknowledgement read by the sender
            (router, shard, fsync, router)
    fetch   its send() -> the fetch reply carrying it read by the consumer
    hand    that fetch reply read -> poll() returned it
    e2e     its send() -> poll() returned it
    ack_to_fetch  the acknowledgement read -> the fetch reply read (negative:
            the consumer had it first)

To see the stages it wraps three private methods in its own processes:
``Sender._send`` and ``Sender._settle`` (client/sender.py) and
``Fetcher.on_reply`` (client/fetcher.py); nothing else changes. Prints
percentiles per stage, in ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import struct
import sys
import time
from bisect import bisect_right

import numpy as np

STAMP = struct.Struct("<q")
KEYS = 4096
PACE_INTERVAL_S = 0.001      # send in chunks this far apart, as plinth bench does
RESULT_TIMEOUT_S = 300.0
PERCENTILES = (50, 90, 99, 99.9)
STAGES = ("wait", "ack", "fetch", "hand", "e2e", "ack_to_fetch")


def producer_main(broker: str, topic: str, rate: float, messages: int, linger_ms: float,
                  acks, out) -> None:
    """Producer process: paced sends; puts every acknowledged batch as
    (partition, base offset, records, sent ns, acknowledged ns)."""
    from plinth.client import sender
    from plinth.client.producer import Producer

    acked, sent_ns = [], {}
    send, settle = sender.Sender._send, sender.Sender._settle

    def timed_send(self, batch, *args):
        sent_ns[id(batch)] = time.time_ns()
        return send(self, batch, *args)

    def timed_settle(self, batch, base_offset, error, *args, **kwargs):
        if error is None and base_offset is not None:
            acked.append((batch.partition, base_offset, batch.builder.record_count,
                          sent_ns.pop(id(batch)), time.time_ns()))
        return settle(self, batch, base_offset, error, *args, **kwargs)

    sender.Sender._send, sender.Sender._settle = timed_send, timed_settle
    keys, padding = [os.urandom(16) for _ in range(KEYS)], bytes(92)
    chunk = max(1, round(rate * PACE_INTERVAL_S))
    with Producer(broker=broker, linger_ms=linger_ms, acks=acks) as producer:
        started_s, seq = time.monotonic(), 0
        while seq < messages:
            delay_s = started_s + seq / rate - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
            for n in range(seq, min(messages, seq + chunk)):
                producer.send(topic, STAMP.pack(time.time_ns()) + padding, key=keys[n % KEYS])
            seq += chunk
        producer.flush(RESULT_TIMEOUT_S)
    out.put(acked)


def consumer_main(broker: str, topic: str, messages: int, ready, out) -> None:
    """Consumer process: puts (delivered, replies): every record as (partition, offset,
    send ns, delivered ns), every fetch reply with records as (partition, first
    offset, records, read ns)."""
    from plinth.client import fetcher
    from plinth.client.consumer import Consumer

    replies, delivered = [], []
    on_reply = fetcher.Fetcher.on_reply

    def timed_on_reply(self, view, payload):
        read_ns = time.time_ns()
        tp = self._fetches.get(view.request_id)
        state = self.partitions.get(tp) if tp is not None else None
        first = state.fetch_offset if state is not None else None
        on_reply(self, view, payload)
        if state is not None and state.fetch_offset != first:
            replies.append((tp.partition, first, state.fetch_offset - first, read_ns))

    fetcher.Fetcher.on_reply = timed_on_reply
    with Consumer(broker=broker, auto_offset_reset="latest") as consumer:
        consumer.subscribe([topic])
        for tp in consumer.assignment():
            consumer.position(*tp)
        ready.set()
        deadline_s = time.monotonic() + RESULT_TIMEOUT_S
        while len(delivered) < messages and time.monotonic() < deadline_s:
            polled = consumer.poll(timeout_ms=100, max_records=100_000)
            now_ns = time.time_ns()
            delivered += [(tp.partition, r.offset, STAMP.unpack_from(r.value)[0], now_ns)
                          for tp, records in polled.items() for r in records]
    out.put((delivered, replies))


def breakdown(acked: list, replies: list, delivered: list) -> dict[str, np.ndarray]:
    """Each stage's time per delivered record, in ns (see the module docstring)."""
    batches, fetched = _by_partition(acked), _by_partition(replies)
    stages = {name: [] for name in STAGES}
    for partition, offset, sent, delivered_ns in delivered:
        _, _, batch_sent, batch_acked = _containing(batches[partition], offset)
        _, _, reply_read = _containing(fetched[partition], offset)
        for name, value in (("wait", batch_sent - sent), ("ack", batch_acked - batch_sent),
                            ("fetch", reply_read - sent), ("hand", delivered_ns - reply_read),
                            ("e2e", delivered_ns - sent),
                            ("ack_to_fetch", reply_read - batch_acked)):
            stages[name].append(value)
    return {name: np.array(values, dtype=np.int64) for name, values in stages.items()}


def _by_partition(rows: list) -> dict[int, tuple[list, list]]:
    """partition -> (first offsets, sorted rows without the partition)."""
    grouped: dict[int, list] = {}
    for partition, *rest in rows:
        grouped.setdefault(partition, []).append(tuple(rest))
    return {p: ([r[0] for r in sorted(rs)], sorted(rs)) for p, rs in grouped.items()}


def _containing(index: tuple[list, list], offset: int) -> tuple:
    """The row (first offset, count, times...) whose range holds ``offset``."""
    firsts, rows = index
    row = rows[bisect_right(firsts, offset) - 1]
    if not row[0] <= offset < row[0] + row[1]:
        raise AssertionError(f"offset {offset} is in no batch or reply (nearest {row[:2]})")
    return row


def format_table(stages: dict[str, np.ndarray]) -> str:
    lines = ["stage          " + " ".join(f"{'p%g' % q:>8s}" for q in PERCENTILES) + "   (ms)"]
    for name, values in stages.items():
        cells = np.percentile(values, PERCENTILES, method="inverted_cdf") / 1e6
        lines.append(f"{name:14s} " + " ".join(f"{v:8.2f}" for v in cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("PLINTH_BROKER", "tcp://127.0.0.1:7400"))
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--linger-ms", type=float, default=1)
    parser.add_argument("--acks", choices=("0", "1", "all"), default="all")
    args = parser.parse_args(argv)
    acks = "all" if args.acks == "all" else int(args.acks)
    acked, (delivered, replies) = run(args.broker, args.rate, args.messages, args.partitions,
                                      args.linger_ms, acks)
    print(f"{len(delivered)} records at {args.rate:g}/s over {args.partitions} partitions, "
          f"linger {args.linger_ms:g} ms, acks={args.acks}: {len(acked)} batches "
          f"({len(delivered) / max(1, len(acked)):.1f} records each), {len(replies)} fetch replies")
    print(format_table(breakdown(acked, replies, delivered)))
    return 0


def run(broker: str, rate: float, messages: int, partitions: int, linger_ms: float, acks):
    """Create a fresh topic, run the consumer then the producer; return what they saw."""
    from plinth.client.admin import Admin

    topic = f"breakdown-{os.urandom(4).hex()}"
    with Admin(broker=broker) as admin:
        admin.create_topic(topic, partitions=partitions)
    spawn = multiprocessing.get_context("spawn")
    acked_out, delivered_out, ready = spawn.Queue(), spawn.Queue(), spawn.Event()
    consumer = spawn.Process(target=consumer_main, args=(broker, topic, messages, ready,
                                                          delivered_out), daemon=True)
    consumer.start()
    if not ready.wait(RESULT_TIMEOUT_S):
        raise SystemExit("the consumer process did not start")
    producer = spawn.Process(target=producer_main, args=(broker, topic, rate, messages,
                                                          linger_ms, acks, acked_out), daemon=True)
    producer.start()
    acked, seen = acked_out.get(timeout=RESULT_TIMEOUT_S), delivered_out.get(timeout=RESULT_TIMEOUT_S)
    producer.join(RESULT_TIMEOUT_S)
    consumer.join(RESULT_TIMEOUT_S)
    return acked, seen


if __name__ == "__main__":
    sys.exit(main())
