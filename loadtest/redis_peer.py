"""The peer benchmark: Redis Streams measured the way ``plinth bench`` measures Plinth.

This VM's speed varies by up to 2x from day to day, so an absolute number says
little alone. Each Plinth figure in the README is given beside this peer's,
measured in the same run (``loadtest/compare.py`` runs both), as a ratio.

The peer is as close to Plinth's defaults as Redis allows: its own
``redis-server`` on 127.0.0.1 with ``appendonly yes`` and ``appendfsync always``
(a write is acknowledged only after the append-only file is fsynced; Redis
fsyncs once per event-loop turn, so pipelined writes share an fsync, as
Plinth's group commit does), one stream, and the Python client (redis-py with
hiredis) on the same machine, as Plinth's own Python client is. Records are
stream entries with two fields, ``k`` (the key) and ``v`` (the value).

    produce   one client XADDs ``messages`` records, pipelined ``batch`` at a time
              (Plinth's producer batches too); latency per record from the
              pipeline's send to its reply.
    consume   XRANGE from the start, ``batch`` entries a call, until ``messages``.
    e2e       a producer process XADDs at ``rate`` records/s, in chunks every
              millisecond as ``plinth bench`` paces; a consumer process waits
              with XREAD BLOCK; latency per record from the producer's
              time.time_ns() (the first 8 bytes of the value) to delivery.

With ``--one-at-a-time``, produce and e2e send one XADD, wait for its reply,
then send the next, at ``--rate`` records/s if given (``plinth bench
--one-at-a-time`` measures Plinth the same way): produce times each XADD's
round trip, e2e each record from its XADD to its XREAD BLOCK delivery.
Percentiles are nearest-rank, in whole microseconds, as ``plinth bench``'s.

    python loadtest/redis_peer.py produce --messages 2000000
    python loadtest/redis_peer.py consume --messages 5000000
    python loadtest/redis_peer.py e2e --rate 10000 --messages 100000
    python loadtest/redis_peer.py all --json          # the three, as JSON lines
    python loadtest/redis_peer.py e2e --one-at-a-time --rate 200 --messages 3000 --key-bytes 0

Needs ``redis-server`` on the PATH (Debian: ``apt-get install redis-server``)
and ``pip install redis hiredis``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import socket
import subprocess
import struct
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np

STREAM = "peer"
STAMP = struct.Struct("<q")
PERCENTILES = (50, 90, 95, 99, 99.9)
# How long redis-server may take to accept connections, and the e2e consumer
# to deliver the last record after the producer's last send.
START_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60.0
PACE_INTERVAL_S = 0.001
XREAD_BLOCK_MS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_redis_server() -> None:
    """SystemExit saying how to install redis-server if it is not on PATH: a benchmark
    calls it before it starts a broker, which would take a minute to start and stop."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")


@contextmanager
def redis_server(appendfsync: str = "always"):
    """A fresh redis-server on 127.0.0.1 in a temp dir; yields its port."""
    require_redis_server()
    directory = tempfile.mkdtemp(prefix="redis-peer-")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", directory,
         "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
         "--protected-mode", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"redis-server exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)   # polling an external process's port, with a bound
    raise SystemExit(f"redis-server did not listen on port {port} within {START_TIMEOUT_S} s")


def client(port: int):
    import redis

    return redis.Redis(host="127.0.0.1", port=port)


def records(messages: int, key_bytes: int, value_bytes: int):
    """(key, value) pairs of random bytes, made before the clock starts."""
    rng = np.random.default_rng(7)
    keys = [rng.bytes(key_bytes) for _ in range(min(messages, 1 << 16))]
    value = rng.bytes(value_bytes)
    return keys, value


def summary(name: str, count: int, seconds: float, payload_bytes: int, latencies_ns) -> dict:
    out = {"system": "redis-streams", "command": name, "records": count,
           "seconds": round(seconds, 6), "records_per_s": round(count / seconds, 1),
           "mb_per_s": round(payload_bytes / 1e6 / seconds, 3), "latency_us": None}
    if latencies_ns is not None and len(latencies_ns):
        # inverted_cdf: nearest-rank, the definition plinth/bench.py uses
        values = np.percentile(np.asarray(latencies_ns) // 1000, PERCENTILES,
                               method="inverted_cdf")
        out["latency_us"] = {f"p{p:g}": int(v) for p, v in zip(PERCENTILES, values)}
        out["latency_us"]["max"] = int(np.max(latencies_ns) / 1000)
    return out


def run_produce(port: int, messages: int, key_bytes: int, value_bytes: int, batch: int) -> dict:
    conn = client(port)
    conn.delete(STREAM)
    keys, value = records(messages, key_bytes, value_bytes)
    latencies_ns = np.empty((messages + batch - 1) // batch, dtype=np.int64)
    started = time.perf_counter()
    for chunk, first in enumerate(range(0, messages, batch)):
        pipe = conn.pipeline(transaction=False)
        for n in range(first, min(first + batch, messages)):
            pipe.xadd(STREAM, {"k": keys[n % len(keys)], "v": value})
        sent_ns = time.perf_counter_ns()
        pipe.execute()
        latencies_ns[chunk] = time.perf_counter_ns() - sent_ns
    seconds = time.perf_counter() - started
    # Every record of a pipeline waits as long as its pipeline.
    per_record = np.repeat(latencies_ns, batch)[:messages]
    return summary("produce", messages, seconds, messages * (key_bytes + value_bytes), per_record)


def pace(started_s: float, seq: int, rate: float | None) -> None:
    """Sleep until record ``seq`` is due at ``rate`` records/s (never if behind or None)."""
    if rate is not None:
        delay_s = started_s + seq / rate - time.perf_counter()
        if delay_s > 0:
            time.sleep(delay_s)


def run_produce_one_at_a_time(port: int, messages: int, key_bytes: int, value_bytes: int,
                              rate: float | None) -> dict:
    """Each XADD waits for its reply before the next; latency: its round trip."""
    conn = client(port)
    conn.delete(STREAM)
    keys, value = records(messages, key_bytes, value_bytes)
    latencies_ns = np.empty(messages, dtype=np.int64)
    started = time.perf_counter()
    for n in range(messages):
        pace(started, n, rate)
        sent_ns = time.perf_counter_ns()
        conn.xadd(STREAM, {"k": keys[n % len(keys)], "v": value})
        latencies_ns[n] = time.perf_counter_ns() - sent_ns
    seconds = time.perf_counter() - started
    result = summary("produce", messages, seconds, messages * (key_bytes + value_bytes),
                     latencies_ns)
    result.update(rate=rate, one_at_a_time=True)
    return result


def run_consume(port: int, messages: int, key_bytes: int, value_bytes: int, batch: int) -> dict:
    conn = client(port)
    have = conn.xlen(STREAM)
    if have < messages:
        run_produce(port, messages, key_bytes, value_bytes, batch)
    started = time.perf_counter()
    count, payload, last = 0, 0, "-"
    while count < messages:
        entries = conn.xrange(STREAM, min=last, max="+", count=batch)
        if last != "-":
            entries = entries[1:]   # XRANGE's start is inclusive
        if not entries:
            break
        for _, fields in entries[:messages - count]:
            payload += len(fields[b"k"]) + len(fields[b"v"])
        count += min(len(entries), messages - count)
        last = entries[-1][0]
    seconds = time.perf_counter() - started
    return summary("consume", count, seconds, payload, None)


def _e2e_consumer(port: int, messages: int, ready, out) -> None:
    conn = client(port)
    delivered = np.empty(messages, dtype=np.int64)
    count, last = 0, "$"
    ready.set()
    deadline = None
    while count < messages:
        got = conn.xread({STREAM: last}, count=10_000, block=XREAD_BLOCK_MS)
        now = time.time_ns()
        if not got:
            deadline = deadline or time.monotonic() + DRAIN_TIMEOUT_S
            if time.monotonic() > deadline:
                break
            continue
        for entry_id, fields in got[0][1]:
            if count < messages:
                delivered[count] = now - STAMP.unpack_from(fields[b"v"])[0]
                count += 1
            last = entry_id
    out.put(delivered[:count].tobytes())


def run_e2e(port: int, messages: int, key_bytes: int, value_bytes: int, rate: float | None,
            one_at_a_time: bool = False) -> dict:
    client(port).delete(STREAM)
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    consumer = ctx.Process(target=_e2e_consumer, args=(port, messages, ready, out))
    consumer.start()
    if not ready.wait(START_TIMEOUT_S):
        raise SystemExit("the e2e consumer did not start")
    time.sleep(0.2)   # XREAD '$' must be parked before the first record is sent
    conn = client(port)
    keys, _ = records(messages, key_bytes, 0)
    padding = bytes(max(0, value_bytes - STAMP.size))
    started = time.perf_counter()
    sent = 0
    while sent < messages and one_at_a_time:
        pace(started, sent, rate)
        conn.xadd(STREAM, {"k": keys[sent % len(keys)], "v": STAMP.pack(time.time_ns()) + padding})
        sent += 1
    while sent < messages:
        due = min(messages, int((time.perf_counter() - started) * rate) + 1)
        if due > sent:
            pipe = conn.pipeline(transaction=False)
            for n in range(sent, due):
                pipe.xadd(STREAM, {"k": keys[n % len(keys)],
                                   "v": STAMP.pack(time.time_ns()) + padding})
            pipe.execute()
            sent = due
        else:
            time.sleep(PACE_INTERVAL_S)
    latencies = np.frombuffer(out.get(timeout=DRAIN_TIMEOUT_S + 30), dtype=np.int64)
    consumer.join(30)
    seconds = time.perf_counter() - started
    result = summary("e2e", len(latencies), seconds, len(latencies) * (key_bytes + value_bytes),
                     latencies)
    result.update(rate=rate, one_at_a_time=one_at_a_time)
    return result


def format_row(result: dict) -> str:
    latency = result["latency_us"]
    tail = "" if latency is None else "  " + " ".join(
        f"{name} {value / 1000:.3f} ms" for name, value in latency.items())
    return (f"redis-streams {result['command']:8} {result['records']:>10} records "
            f"{result['records_per_s']:>12,.0f} records/s {result['mb_per_s']:>8.2f} MB/s{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("produce", "consume", "e2e", "all"))
    parser.add_argument("--messages", type=int, default=None,
                        help="records (default: produce 2,000,000; consume 5,000,000; e2e 100,000)")
    parser.add_argument("--key-bytes", type=int, default=16)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000, help="pipeline / XRANGE size")
    parser.add_argument("--rate", type=float, default=None,
                        help="e2e records/s (default 10,000); with --one-at-a-time, produce "
                             "too (default: each XADD right after the last reply)")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="produce and e2e: one XADD at a time, each waiting for its reply")
    parser.add_argument("--appendfsync", choices=("always", "everysec", "no"), default="always")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    commands = ("produce", "consume", "e2e") if args.command == "all" else (args.command,)
    defaults = {"produce": 2_000_000, "consume": 5_000_000, "e2e": 100_000}
    with redis_server(args.appendfsync) as port:
        for command in commands:
            messages = args.messages or defaults[command]
            if command == "e2e":
                result = run_e2e(port, messages, args.key_bytes, args.value_bytes,
                                 args.rate or (None if args.one_at_a_time else 10_000),
                                 args.one_at_a_time)
            elif command == "produce" and args.one_at_a_time:
                result = run_produce_one_at_a_time(port, messages, args.key_bytes,
                                                   args.value_bytes, args.rate)
            else:
                run = run_produce if command == "produce" else run_consume
                result = run(port, messages, args.key_bytes, args.value_bytes, args.batch)
            result["appendfsync"] = args.appendfsync
            print(json.dumps(result) if args.json else format_row(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
