"""Soak test: produce and consume for minutes while faults are injected; count
what was acknowledged, lost and duplicated, and watch broker memory.

It starts its own broker (``plinth serve``, embedded Ray on 127.0.0.1, in a
temporary data dir), an idempotent producer writing numbered records and a
consumer reading them, and every ``--fault-every-s`` seconds SIGKILLs either a
shard actor (Ray restarts it) or the whole server (the script restarts it).
At the end it reads every partition from the start and checks each
acknowledged record is there exactly once.

    python loadtest/soak.py --minutes 10
    python loadtest/soak.py --minutes 20 --port 8210 --work-dir /tmp/soak   # kept

Not part of the test suite (it runs for minutes); the README's Reliability
section shows its latest output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from plinth import Admin, Consumer, Producer

# Without the web console `plinth serve` starts by default (an environment variable,
# which builds from before the console ignore, rather than --console-listen off).
NO_CONSOLE_ENV = {**os.environ, "PLINTH_CONSOLE_LISTEN": "off"}

PARTITIONS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data_dir: Path, url: str, shards: int):
        self.data_dir, self.url, self.shards, self.proc = data_dir, url, shards, None

    def start(self) -> None:
        self.starts = getattr(self, "starts", 0) + 1
        self.log_path = self.data_dir.parent / f"serve-{self.starts}.log"
        log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(self.data_dir),
             "--listen", self.url, "--shards", str(self.shards)],
            stdout=log_file, stderr=subprocess.STDOUT, text=True, env=NO_CONSOLE_ENV)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "ready" in self.log_path.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"broker not ready:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)


def processes(prefixes: tuple[str, ...], data_dir: Path) -> dict[int, str]:
    """pid -> cmdline of this broker's processes whose command line starts with a prefix.

    Ray workers inherit the server's environment, which names the data dir (the
    Ray token path), so other brokers on the machine are left alone.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                if not cmdline.startswith(prefixes):
                    continue
                if str(data_dir).encode() not in (entry / "environ").read_bytes():
                    continue
            except OSError:
                continue
            found[int(entry.name)] = cmdline
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def broker_memory_mb(broker: Broker) -> float:
    shards = processes(("ray::ShardActor", "ray::Controller"), broker.data_dir)
    return rss_mb(broker.proc.pid) + sum(rss_mb(pid) for pid in shards)


class Writer(threading.Thread):
    def __init__(self, url: str, topic: str):
        super().__init__(daemon=True)
        self.url, self.topic = url, topic
        # acked[n] is 1 once record n is acknowledged. A flat bytearray, not a dict
        # of tuples: tens of millions of GC-tracked objects slowed this very script
        # down over a run (each full collection walks them all).
        self.acked = bytearray()
        self.acked_count = 0
        self.failed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        seq = 0
        with Producer(broker=self.url, linger_ms=2, request_timeout_ms=3_000,
                      delivery_timeout_ms=180_000) as producer:
            while not self.stopping.is_set():
                futures = [(n, producer.send(self.topic, b"%d" % n, partition=n % PARTITIONS))
                           for n in range(seq, seq + 500)]
                seq += 500
                self.acked.extend(bytes(500))
                for n, future in futures:
                    try:
                        future.get(timeout=240)
                        self.acked[n] = 1
                        self.acked_count += 1
                    except Exception:
                        self.failed += 1


class Reader(threading.Thread):
    """A live consumer, so the soak also exercises fetch and long-poll under faults.

    After an error it reconnects and resumes where it was, not from the start.
    """

    def __init__(self, url: str, topic: str):
        super().__init__(daemon=True)
        self.url, self.topic, self.read, self.errors = url, topic, 0, 0
        self.positions: dict[int, int] = {p: 0 for p in range(PARTITIONS)}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with Consumer(broker=self.url, request_timeout_ms=3_000) as consumer:
                    consumer.assign([(self.topic, p) for p in range(PARTITIONS)])
                    for partition, offset in self.positions.items():
                        consumer.seek(self.topic, partition, offset)
                    while not self.stopping.is_set():
                        for tp, records in consumer.poll(timeout_ms=500).items():
                            self.read += len(records)
                            self.positions[tp.partition] = records[-1].offset + 1
            except Exception:
                self.errors += 1   # broker down: reconnect and resume
                time.sleep(1)


def inject_fault(broker: Broker, rng: random.Random) -> str:
    shards = processes(("ray::ShardActor",), broker.data_dir)
    if shards and rng.random() < 0.6:
        pid = rng.choice(sorted(shards))
        os.kill(pid, signal.SIGKILL)
        return f"SIGKILL shard actor pid {pid}"
    broker.kill()
    broker.start()
    return "SIGKILL server + restart"


def verify(url: str, topic: str, acked: bytearray) -> tuple[int, int, int]:
    """(records stored, acknowledged records lost, records stored twice)."""
    copies = bytearray(len(acked))   # how many times each record is stored (capped at 255)
    stored = 0
    with Consumer(topic, broker=url, auto_offset_reset="earliest", consumer_timeout_ms=10_000) as c:
        for record in c:
            n = int(record.value)
            copies[n] = min(copies[n] + 1, 255)
            stored += 1
    lost = sum(1 for n, was_acked in enumerate(acked) if was_acked and not copies[n])
    return stored, lost, sum(count - 1 for count in copies if count > 1)


@contextlib.contextmanager
def _work_dir(given: Path | None):
    """``given``, made if missing and kept; or a temporary directory, removed after."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="plinth-soak-") as tmp:
        yield Path(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--fault-every-s", type=float, default=45)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=0,
                        help="the broker's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the broker's data dir and logs go, kept after the run "
                             "(default: a temporary directory, removed)")
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with _work_dir(args.work_dir) as work_dir:
        broker = Broker(work_dir / "data", f"tcp://127.0.0.1:{args.port or free_port()}",
                        args.shards)
        broker.start()
        topic = "soak"
        with Admin(broker=broker.url) as admin:
            admin.create_topic(topic, PARTITIONS)
        writer, reader = Writer(broker.url, topic), Reader(broker.url, topic)
        writer.start()
        reader.start()
        started = time.monotonic()
        next_fault = started + args.fault_every_s
        faults = []
        print(f"{'t_s':>6} {'acked':>10} {'read':>10} {'broker_rss_mb':>14}  event", flush=True)
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(15)
            event = ""
            if time.monotonic() >= next_fault:
                event = inject_fault(broker, rng)
                faults.append(event)
                next_fault = time.monotonic() + args.fault_every_s
            print(f"{time.monotonic() - started:6.0f} {writer.acked_count:10d} {reader.read:10d} "
                  f"{broker_memory_mb(broker):14.0f}  {event}", flush=True)
            if broker.proc.poll() is not None:
                print(f"broker exited with {broker.proc.returncode}:\n"
                      f"{broker.log_path.read_text()[-3000:]}", flush=True)
                break
        writer.stopping.set()
        reader.stopping.set()
        writer.join(300)
        reader.join(30)
        stored, lost, duplicated = verify(broker.url, topic, writer.acked)
        broker.stop()
    print(f"faults injected: {len(faults)}")
    print(f"records acknowledged: {writer.acked_count}, not acknowledged (gave up): {writer.failed}")
    print(f"records stored: {stored}, acknowledged but lost: {lost}, duplicated: {duplicated}")
    sys.exit(0 if lost == 0 and duplicated == 0 else 1)


if __name__ == "__main__":
    main()
