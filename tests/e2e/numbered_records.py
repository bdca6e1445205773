"""Records that say what they are, for the end-to-end tests that read back everything
they produced (tiered storage, scaling in): record ``n`` is ``VALUE_BYTES`` bytes, its
number in 10 digits, repeated, so that every byte read back can be checked without
keeping what was sent. Test thread only."""

from __future__ import annotations

from plinth import Consumer, Producer

MiB = 1024 * 1024
VALUE_BYTES = 1000


def value(number: int) -> bytes:
    return b"%010d" % number * (VALUE_BYTES // 10)


def produce(url: str, topic: str, first: int, count: int,
            partitions: int) -> dict[int, tuple[int, int]]:
    """Send records ``first`` .. ``first + count - 1`` round-robin over ``partitions``;
    number -> (partition, offset) of each acknowledged one (all of them, or it raises)."""
    with Producer(broker=url, linger_ms=5) as producer:
        futures = [(n, producer.send(topic, value(n), partition=n % partitions))
                   for n in range(first, first + count)]
        producer.flush(300)
        return {n: (future.get(0).partition, future.get(0).offset) for n, future in futures}


def check_everything_reads_back(url: str, topic: str, acknowledged: dict) -> None:
    """Every acknowledged record at its offset, byte for byte, read from the first of
    them in each partition (0, or a tail's start), and nothing else."""
    expected = {where: n for n, where in acknowledged.items()}
    first_offsets: dict[int, int] = {}
    for partition, offset in expected:
        first_offsets[partition] = min(offset, first_offsets.get(partition, offset))
    seen = 0
    with Consumer(broker=url, auto_offset_reset="earliest", consumer_timeout_ms=10_000,
                  fetch_max_bytes=4 * MiB) as consumer:
        consumer.assign([(topic, p) for p in sorted(first_offsets)])
        for partition, offset in first_offsets.items():
            consumer.seek(topic, partition, offset)
        for record in consumer:
            number = expected.get((record.partition, record.offset))
            assert number is not None, f"record at {record.partition}/{record.offset} never sent"
            assert record.value == value(number), \
                f"record {number} at {record.partition}/{record.offset} differs"
            seen += 1
            if seen == len(expected):
                break
    assert seen == len(expected), f"{seen} of {len(expected)} acknowledged records read"
