"""A shard with many segments on disk: how long it takes to start, and the files it holds.

Writes ``--segments`` one-entry segments over ``--partitions`` partitions of one
topic into a fresh shard directory, as a shard that rolled that often would have
left them (each a .log file of one entry, and its .index and .timeindex, empty
for one entry). Then starts a ShardServer on it (a real ZeroMQ socket, no Ray),
opens every partition as a restarted shard actor does, fetches through the
socket from ``--reads`` older segments spread over every partition, and
produces to every partition. Prints how long the start took and the process's
open file descriptors (/proc/self/fd) after each step: they stay within one per
partition, the shard's own few, and SEGMENT_FILES_OPEN_MAX, however many
segments lie on disk. (tests/shards/test_shard_server_storage.py runs the same
with 1,000 segments in CI.)

    python loadtest/many_segments.py --segments 100000 --partitions 10
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import zmq

from plinth import limits, protocol
from plinth.format.log_entry import build_entry_header, iter_entries
from plinth.format.record_batch import BatchBuilder, decode_records
from plinth.shards.partition_log import LogConfig
from plinth.shards.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, segment_file_name
from plinth.shards.shard_server import ShardServer

TOPIC = "many"
CLIENT = b"many-segments"
REPLY_WAIT_MS = 10_000


def value_of(partition: int, offset: int) -> bytes:
    return b"p%d-%d" % (partition, offset)


def write_segments(shard_dir: Path, partitions: int, segments: int) -> list[int]:
    """Write ``segments`` one-record segments, spread over the partitions of TOPIC, in
    ``shard_dir``; returns how many each partition got (its end offset)."""
    counts = [segments // partitions + (p < segments % partitions) for p in range(partitions)]
    now_ms = time.time_ns() // 1_000_000
    for partition, count in enumerate(counts):
        directory = shard_dir / f"{TOPIC}-{partition}"
        directory.mkdir(parents=True)
        for offset in range(count):
            builder = BatchBuilder()
            builder.append(None, value_of(partition, offset), now_ms)
            batch = builder.build()
            entry = build_entry_header(offset, now_ms, 1, batch) + batch
            (directory / segment_file_name(offset, LOG_SUFFIX)).write_bytes(entry)
            (directory / segment_file_name(offset, INDEX_SUFFIX)).write_bytes(b"")
            (directory / segment_file_name(offset, TIME_INDEX_SUFFIX)).write_bytes(b"")
    return counts


def open_descriptors() -> int:
    """This process's open file descriptors."""
    return len(os.listdir("/proc/self/fd"))


def start_shard(shard_dir: Path, partitions: int) -> ShardServer:
    """A ShardServer on ``shard_dir`` serving every partition of TOPIC, opened as a
    restarted shard actor opens them (shards/actor.py)."""
    server = ShardServer("shard-many", shard_dir, "127.0.0.1")
    server.start()
    for partition in range(partitions):
        server.call(server.open_partition, TOPIC, partition, LogConfig())
    return server


def roundtrip(sock, header: bytes, payload: bytes | None = None):
    sock.send_multipart([CLIENT, header] + ([payload] if payload is not None else []))
    if not sock.poll(REPLY_WAIT_MS):
        raise AssertionError(f"no reply from the shard in {REPLY_WAIT_MS} ms")
    frames = sock.recv_multipart()
    reply = protocol.decode_reply(frames[1])
    if reply.error is not None:
        raise reply.error
    return reply, (frames[2] if len(frames) > 2 else b"")


def fetch_value(sock, partition: int, offset: int) -> bytes:
    """The value at ``offset``, fetched through the shard's socket."""
    _, payload = roundtrip(sock, protocol.encode_fetch(1, TOPIC, partition, offset, 1024, 0))
    header, batch = next(iter_entries(payload))
    return decode_records(TOPIC, partition, header.base_offset, batch, offset)[0].value


def produce(sock, partition: int, value: bytes) -> int:
    """Append one record through the shard's socket; its offset."""
    builder = BatchBuilder()
    builder.append(None, value, time.time_ns() // 1_000_000)
    reply, _ = roundtrip(sock, protocol.encode_produce(2, TOPIC, partition, 1), builder.build())
    return reply.base_offset


def connect(address: str):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument("--dir", default=None, help="where to write them (default: a temp dir)")
    args = parser.parse_args()
    shard_dir = Path(args.dir or tempfile.mkdtemp(prefix="plinth-many-")) / "shard"
    started_s = time.monotonic()
    counts = write_segments(shard_dir, args.partitions, args.segments)
    print(f"wrote {args.segments} segments over {args.partitions} partitions in "
          f"{time.monotonic() - started_s:.1f} s ({shard_dir})")
    before = open_descriptors()
    started_s = time.monotonic()
    server = start_shard(shard_dir, args.partitions)
    print(f"shard started and opened every partition in {time.monotonic() - started_s:.2f} s; "
          f"open descriptors {before} -> {open_descriptors()}")
    sock = connect(server.address)
    try:
        rng = random.Random(11)
        started_s = time.monotonic()
        for _ in range(args.reads):
            partition = rng.randrange(args.partitions)
            offset = rng.randrange(counts[partition] - 1)    # an older segment
            if fetch_value(sock, partition, offset) != value_of(partition, offset):
                raise AssertionError(f"{TOPIC}-{partition} offset {offset} read back wrong")
        print(f"{args.reads} fetches from older segments in {time.monotonic() - started_s:.2f} s; "
              f"open descriptors {open_descriptors()} (at most {limits.SEGMENT_FILES_OPEN_MAX} "
              f"segment files besides the {args.partitions} active ones)")
        for partition in range(args.partitions):
            if produce(sock, partition, b"appended") != counts[partition]:
                raise AssertionError(f"{TOPIC}-{partition}: append not at its end offset")
        print(f"appended to every partition; open descriptors {open_descriptors()}")
    finally:
        sock.close()
        server.stop(30)


if __name__ == "__main__":
    main()
