"""Reading a partition's log hot (local segments) against cold (object storage), at the storage layer.

Writes ``--mib`` MiB into a PartitionLog (batches of ``--batch-kib`` KiB holding
``--records-per-batch`` records each; segments of ``--segment-mib`` MiB), uploads
every rolled segment (shards/tier/remote_transfer.py) to a ``file://`` store
in a temp dir and to moto's S3 on 127.0.0.1 (in its own process), then reads
every entry from offset 0 in fetches of ``--fetch-mib`` MiB:

- hot: ``PartitionLog.read`` (the local segment files, page-cached);
- cold, file://: ``read_remote_entries`` through a RemoteChunkCache (empty at
  the start, so every chunk comes from the store once, read-ahead on), and
  again without the cache (a local store needs none);
- cold, S3 (moto): the same against moto (``--moto-mib`` MiB of it only:
  moto is slow).

Every entry read cold has its CRC checked (as hot reads do). Prints records/s
and MB/s of each, and cold/hot. No broker, no network hop: this is the storage
layer's share of issue 14's "cold reads from file:// at least 50% of hot".

    python loadtest/tier_read_bench.py --mib 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from plinth.format.log_entry import iter_entries
from plinth.shards.leader_epochs import LeaderEpochs
from plinth.shards.partition_log import LogConfig, PartitionLog
from plinth.shards.tier.chunk_cache import RemoteChunkCache
from plinth.shards.tier.remote_log_metadata import RemoteLogMetadata
from plinth.shards.tier.remote_store import open_remote_store
from plinth.shards.tier.remote_transfer import (
    LocalSegment, load_remote_index, read_remote_entries, upload_segment)

MiB = 1024 * 1024
TOPIC = "bench"
TOPIC_ID = "be0c" * 8   # any id: the bench has no controller


def write_log(directory: Path, args) -> PartitionLog:
    log = PartitionLog.open(directory, LogConfig(segment_bytes_max=args.segment_mib * MiB))
    batch = os.urandom(args.batch_kib * 1024)
    while log.size_bytes < args.mib * MiB:
        log.append(batch, args.records_per_batch, int(time.time() * 1000))
    log.append(batch, args.records_per_batch, int(time.time() * 1000))
    log.flush()
    return log


def upload_all(store, log: PartitionLog, metadata_dir: Path, mib_max: int) -> list:
    metadata, _ = RemoteLogMetadata.open(metadata_dir)
    epochs = LeaderEpochs()
    epochs.assign(0, 0)
    segments, uploaded_bytes = [], 0
    for segment in log.segments[:-1]:
        if uploaded_bytes >= mib_max * MiB:
            break
        local = LocalSegment.of(segment, topic=TOPIC, topic_id=TOPIC_ID, partition=0,
                                leader_epochs=epochs)
        segments.append(upload_segment(store, metadata, local))
        uploaded_bytes += segment.size_bytes
    metadata.close()
    return segments


def read_hot(log: PartitionLog, end_offset: int, fetch_bytes: int) -> tuple[int, int, float]:
    records = total_bytes = 0
    offset = 0
    started = time.perf_counter()
    while offset < end_offset:
        data = log.read(offset, fetch_bytes, end_offset)
        for header, _ in iter_entries(data, verify_crc=False):   # read() checked the CRCs
            records += header.record_count
            offset = header.end_offset
        total_bytes += len(data)
    return records, total_bytes, time.perf_counter() - started


def read_cold(store, segments, cache: RemoteChunkCache | None,
              fetch_bytes: int) -> tuple[int, int, float]:
    records = total_bytes = 0
    started = time.perf_counter()
    for segment in segments:
        index = load_remote_index(store, segment)   # a shard keeps these in memory
        offset = segment.base_offset
        while offset < segment.end_offset:
            data = read_remote_entries(store, segment, offset, fetch_bytes, offset_index=index,
                                       cache=cache)
            for header, _ in iter_entries(data, verify_crc=False):   # checked by the read
                records += header.record_count
                offset = header.end_offset
            total_bytes += len(data)
    return records, total_bytes, time.perf_counter() - started


def row(name: str, result: tuple[int, int, float], hot_mb_s: float | None) -> str:
    records, total_bytes, elapsed_s = result
    mb_s = total_bytes / MiB / elapsed_s
    ratio = f"{mb_s / hot_mb_s:.2f}" if hot_mb_s else "1.00"
    return (f"| {name} | {total_bytes / MiB:.0f} | {records / elapsed_s:,.0f} | {mb_s:,.0f} | "
            f"{ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--segment-mib", type=int, default=32)
    parser.add_argument("--batch-kib", type=int, default=64)
    parser.add_argument("--records-per-batch", type=int, default=64)
    parser.add_argument("--fetch-mib", type=int, default=4)
    parser.add_argument("--moto-mib", type=int, default=64)
    parser.add_argument("--cache-mib", type=int, default=1024)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from tier_store_bench import start_moto

    temp_dir = Path(tempfile.mkdtemp(prefix="tier-read-"))
    moto_proc = None
    try:
        log = write_log(temp_dir / "log", args)
        (temp_dir / "store").mkdir()   # a file:// store's root must exist
        file_store = open_remote_store(f"file://{temp_dir}/store")
        file_segments = upload_all(file_store, log, temp_dir / "meta-file", args.mib)
        moto_proc, _ = start_moto()
        s3_store = open_remote_store("s3://bench/tier")
        s3_segments = upload_all(s3_store, log, temp_dir / "meta-s3", args.moto_mib)
        fetch_bytes = args.fetch_mib * MiB
        end_offset = file_segments[-1].end_offset
        hot = read_hot(log, end_offset, fetch_bytes)
        cold_file = read_cold(file_store, file_segments, RemoteChunkCache(
            temp_dir / "cache-file", args.cache_mib * MiB), fetch_bytes)
        cold_file_direct = read_cold(file_store, file_segments, None, fetch_bytes)
        cold_s3 = read_cold(s3_store, s3_segments, RemoteChunkCache(
            temp_dir / "cache-s3", args.cache_mib * MiB), fetch_bytes)
        if cold_file[0] != hot[0]:
            raise AssertionError(f"cold read {cold_file[0]} records, hot {hot[0]}")
        hot_mb_s = hot[1] / MiB / hot[2]
        print(f"\n{args.mib} MiB in {args.segment_mib} MiB segments, batches of "
              f"{args.batch_kib} KiB x {args.records_per_batch} records, fetches of "
              f"{args.fetch_mib} MiB\n")
        print("| read | MiB | records/s | MB/s | / hot |")
        print("|---|---|---|---|---|")
        print(row("hot (local segments)", hot, None))
        print(row("cold, file:// store, through the chunk cache", cold_file, hot_mb_s))
        print(row("cold, file:// store, direct (no cache)", cold_file_direct, hot_mb_s))
        print(row("cold, S3 (moto), through the chunk cache", cold_s3, hot_mb_s))
        log.close()
    finally:
        if moto_proc is not None:
            moto_proc.stdin.close()
            moto_proc.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
