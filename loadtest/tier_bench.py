"""Tiered storage through a real broker: hot against cold reads, and a long produce.

Two commands, each starting its own fresh ``plinth serve`` (loadtest/fresh_broker.py):

    reads   Writes ``--mib`` MiB of ``--value-bytes`` records into two topics of one
            partition: one untiered (hot: read from the shard's disk) and one tiered
            to a ``file://`` store with local.retention.bytes of one segment, so that
            once uploaded all but its tail is read from the store (cold). Then a
            broker tiered to moto's S3 (its own process, on 127.0.0.1) does the
            same with ``--moto-mib`` MiB. Each topic is read from offset 0 by one
            Consumer; prints records/s and MB/s of each, and cold/hot (issue 14's
            target: cold from file:// at least 50% of hot). The consumer checks
            that every record is the one written (its number, first 8 bytes).
    soak    Produces at full speed for ``--seconds`` s into a tiered topic of
            ``--partitions`` partitions with local.retention.bytes of
            ``--local-retention-mib`` MiB each and segments of ``--segment-mib``
            MiB, and every ``--sample-s`` s prints the shards' local .log bytes
            (which should stay flat: within local retention plus the active and
            the waiting segments), the remote bytes and the upload backlog (from
            ``plinth status``'s figures), and the total retained (remote plus
            what waits for upload), which grows.
            Stops early if the disk's free space falls under 10 GiB.

    python loadtest/tier_bench.py reads --mib 512 --moto-mib 128
    python loadtest/tier_bench.py soak --seconds 300 --local-retention-mib 256

Needs moto (``pip install -e '.[test]'``) for the S3 rows.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.fresh_broker import fresh_broker   # noqa: E402

MiB = 1024 * 1024
DISK_FREE_BYTES_MIN = 10 * 1024 * MiB
UPLOAD_WAIT_S_MAX = 600


def value(number: int, value_bytes: int) -> bytes:
    return struct.pack(">Q", number) + b"v" * (value_bytes - 8)


def produce(url: str, topic: str, count: int, value_bytes: int) -> float:
    """``count`` records into partition 0; seconds taken (until all acknowledged)."""
    from plinth import Producer
    started_s = time.monotonic()
    with Producer(broker=url, linger_ms=5) as producer:
        for number in range(count):
            producer.send(topic, value(number, value_bytes), partition=0)
        producer.flush(600)
    return time.monotonic() - started_s


def consume(url: str, topic: str, count: int, value_bytes: int) -> tuple[int, float]:
    """Read partition 0 from offset 0 until ``count`` records; (bytes, seconds).
    Raises if a record is not the one written at its offset."""
    from plinth import Consumer
    read_bytes, number = 0, 0
    started_s = time.monotonic()
    with Consumer(broker=url, auto_offset_reset="earliest", consumer_timeout_ms=60_000,
                  fetch_max_bytes=8 * MiB) as consumer:
        consumer.assign([(topic, 0)])
        for record in consumer:
            if record.offset != number or struct.unpack_from(">Q", record.value)[0] != number:
                raise SystemExit(f"{topic}: record at offset {record.offset} is not record "
                                 f"{number}")
            read_bytes += len(record.value)
            number += 1
            if number == count:
                break
    if number != count:
        raise SystemExit(f"{topic}: read {number} of {count} records")
    return read_bytes, time.monotonic() - started_s


def create(url: str, topic: str, config: dict[str, str], partitions: int = 1) -> None:
    from plinth import Admin
    with Admin(broker=url) as admin:
        admin.create_topic(topic, partitions, config=config)


def upload_backlog(url: str) -> tuple[int, int, float, int]:
    """(remote bytes, upload lag bytes, oldest lag s, upload errors) over the shards."""
    from plinth import Admin
    with Admin(broker=url) as admin:
        shards = admin.status().shards
    return (sum(s.remote_bytes for s in shards), sum(s.upload_lag_bytes for s in shards),
            max((s.upload_lag_s for s in shards), default=0.0),
            sum(s.upload_errors for s in shards))


def wait_uploaded(url: str, remote_bytes_min: int) -> None:
    deadline_s = time.monotonic() + UPLOAD_WAIT_S_MAX
    while time.monotonic() < deadline_s:
        remote, lag, _, _ = upload_backlog(url)
        if remote >= remote_bytes_min:
            return
        time.sleep(0.5)
    raise SystemExit(f"uploads did not reach {remote_bytes_min} bytes within "
                     f"{UPLOAD_WAIT_S_MAX} s: {upload_backlog(url)}")


def broker_dir(work_dir: Path, name: str) -> Path:
    """A fresh broker's own directory (fresh_broker runs it from there)."""
    directory = work_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def tiered_config(segment_bytes: int, local_retention_bytes: int) -> dict[str, str]:
    return {"remote.storage.enable": "true", "segment.bytes": str(segment_bytes),
            "local.retention.bytes": str(local_retention_bytes)}


def row(name: str, count: int, read_bytes: int, seconds: float, hot_mb_s: float | None) -> str:
    mb_s = read_bytes / seconds / 1e6
    ratio = f"{mb_s / hot_mb_s:.2f}" if hot_mb_s else "1.00"
    return f"| {name} | {count / seconds:,.0f} | {mb_s:,.1f} | {ratio} |"


def run_reads(args, work_dir: Path) -> None:
    count = args.mib * MiB // args.value_bytes
    segment_bytes = args.segment_mib * MiB
    rows = []
    (work_dir / "store").mkdir(exist_ok=True)   # a file:// store's root must exist
    with fresh_broker(args.plinth, broker_dir(work_dir, "file"), "--tier-url",
                      f"file://{work_dir}/store") as (_, url):
        create(url, "hot", {"segment.bytes": str(segment_bytes)})
        create(url, "cold", tiered_config(segment_bytes, segment_bytes))
        for topic in ("hot", "cold"):
            seconds = produce(url, topic, count, args.value_bytes)
            print(f"produced {count} records into {topic} in {seconds:.1f} s", flush=True)
        wait_uploaded(url, (args.mib - 3 * args.segment_mib) * MiB)
        hot = consume(url, "hot", count, args.value_bytes)
        cold = consume(url, "cold", count, args.value_bytes)
        hot_mb_s = hot[0] / hot[1] / 1e6
        rows += [row("hot, the shard's disk", count, *hot, None),
                 row("cold, file:// store", count, *cold, hot_mb_s)]
    if args.moto_mib:
        rows.append(reads_from_moto(args, work_dir, hot_mb_s))
    print(f"\n{args.mib} MiB ({count} records of {args.value_bytes} bytes; S3: "
          f"{args.moto_mib} MiB), one partition, one consumer from offset 0")
    print("| read | records/s | MB/s | of hot |\n|---|---|---|---|")
    print("\n".join(rows))


def reads_from_moto(args, work_dir: Path, hot_mb_s: float) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tier_store_bench import BUCKET, start_moto   # sets the AWS_* environment
    moto_proc, _ = start_moto()
    try:
        count = args.moto_mib * MiB // args.value_bytes
        segment_bytes = args.segment_mib * MiB
        with fresh_broker(args.plinth, broker_dir(work_dir, "s3"), "--tier-url",
                          f"s3://{BUCKET}/bench") as (_, url):
            create(url, "cold", tiered_config(segment_bytes, segment_bytes))
            produce(url, "cold", count, args.value_bytes)
            wait_uploaded(url, (args.moto_mib - 3 * args.segment_mib) * MiB)
            cold = consume(url, "cold", count, args.value_bytes)
        return row("cold, S3 (moto)", count, *cold, hot_mb_s)
    finally:
        moto_proc.stdin.close()
        moto_proc.wait(timeout=30)


def local_log_bytes(data_dir: Path) -> int:
    """The shards' local .log bytes; a segment retention deletes between the listing
    and its stat counts 0 (the broker runs while this samples it)."""
    total = 0
    for path in data_dir.glob("shards/*/*/*.log"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def run_soak(args, work_dir: Path) -> None:
    """Producer threads at full speed; a sample line every --sample-s s."""
    import threading

    from plinth import Producer
    segment_bytes, retention_bytes = args.segment_mib * MiB, args.local_retention_mib * MiB
    stop = threading.Event()
    produced = [0] * args.producers

    def produce_until_stopped(slot: int, url: str) -> None:
        payload = b"s" * args.value_bytes
        with Producer(broker=url, linger_ms=5) as producer:
            while not stop.is_set():
                for _ in range(1000):
                    producer.send("soak", payload)
                produced[slot] += 1000 * args.value_bytes

    (work_dir / "store").mkdir(exist_ok=True)   # a file:// store's root must exist
    with fresh_broker(args.plinth, broker_dir(work_dir, "soak"), "--tier-url",
                      f"file://{work_dir}/store") as (_, url):
        create(url, "soak", tiered_config(segment_bytes, retention_bytes), args.partitions)
        threads = [threading.Thread(target=produce_until_stopped, args=(slot, url), daemon=True)
                   for slot in range(args.producers)]
        for thread in threads:
            thread.start()
        started_s = time.monotonic()
        bound = args.partitions * (retention_bytes + 2 * segment_bytes)
        print(f"{args.partitions} partitions, local.retention.bytes {retention_bytes} each, "
              f"segments of {segment_bytes}: local bound about {bound / MiB:.0f} MiB")
        print("| t (s) | produced MiB | local .log MiB | remote MiB | retained MiB | "
              "upload lag MiB | lag s | upload errors |\n|---|---|---|---|---|---|---|---|")
        try:
            while time.monotonic() - started_s < args.seconds:
                time.sleep(args.sample_s)
                local = local_log_bytes(work_dir / "soak" / "data")
                remote, lag, lag_s, errors = upload_backlog(url)
                print(f"| {time.monotonic() - started_s:.0f} | {sum(produced) / MiB:,.0f} | "
                      f"{local / MiB:,.0f} | {remote / MiB:,.0f} | "
                      f"{(remote + lag) / MiB:,.0f} | {lag / MiB:,.0f} | {lag_s:.1f} | "
                      f"{errors} |", flush=True)
                if shutil.disk_usage(work_dir).free < DISK_FREE_BYTES_MIN:
                    print("stopping early: under 10 GiB free on the disk")
                    break
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["reads", "soak"])
    parser.add_argument("--plinth", default=shutil.which("plinth") or "plinth")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where brokers and stores go (default: a temp dir, removed)")
    parser.add_argument("--value-bytes", type=int, default=1000)
    parser.add_argument("--segment-mib", type=int, default=16)
    parser.add_argument("--mib", type=int, default=512, help="reads: MiB per topic")
    parser.add_argument("--moto-mib", type=int, default=128, help="reads: MiB through S3 (0: none)")
    parser.add_argument("--seconds", type=float, default=300, help="soak: how long")
    parser.add_argument("--partitions", type=int, default=2, help="soak")
    parser.add_argument("--producers", type=int, default=2, help="soak: producer threads")
    parser.add_argument("--local-retention-mib", type=int, default=256, help="soak, per partition")
    parser.add_argument("--sample-s", type=float, default=10.0, help="soak")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="plinth-tier-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        (run_reads if args.command == "reads" else run_soak)(args, work_dir.resolve())
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
