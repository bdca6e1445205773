"""Two tenants on one broker: A floods it with everything issue 11 found, B works at a steady rate.

Plinth serves several teams at once, so one tenant must not be able to read,
stall or crash another's data. This module is both the multi-tenant end-to-end
test's tooling (tests/e2e/test_multi_tenant_e2e.py asserts that B loses
nothing and sees no error, and that the broker's memory stays bounded) and a
benchmark of what the flood costs B (B's latency with and without it):

    python loadtest/tenant_flood.py                      # 30 s quiet, then 30 s flooded
    python loadtest/tenant_flood.py --seconds 60 --rate 200
    python loadtest/tenant_flood.py --seconds 20 --rate 50 --kinds group_churn   # one kind

The benchmark starts its own ``plinth serve`` on 127.0.0.1 with CurveZMQ keys
and an ACL file, as a multi-tenant deployment would, and prints B's end-to-end
latency (send to consume) and produce latency (send to acknowledgement) for
each phase, and their ratio.

Tenant A holds produce/consume/admin on topics and groups ``a.*`` and produce on
``shared.*``; tenant B holds produce and consume on ``shared.*`` and groups
``b.*``; both produce to one shared topic. A's flood, one thread per kind
(each kind paced, so the flood tests the broker's bounds rather than the two
CPUs of this machine):

- ``unknown_topics``: produces with a large payload to topics nobody created
  (the router holds them while it looks the topic up), and fetches carrying
  extra large frames;
- ``parked_fetches``: acks=0 produces to a partition that does not exist (each
  answered with an error) between long-poll fetches on an empty topic, as many
  as the broker lets it park;
- ``group_churn``: joins to ever new groups, ever new members of one group, and
  joins to B's group (which the ACL refuses);
- ``producer_ids``: idempotent produces, each with a new producer id, to the
  shared topic;
- ``unread_replies``: connections that send large fetches and never read.

Tenant B (``SteadyTenant``): an idempotent producer sending numbered records
at a fixed rate to the shared topic (key ``B``), and a consumer in group
``b.readers`` reading them back. It records every error it sees.

Client process only; every socket is on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from plinth import limits, protocol
from plinth.format.record_batch import BatchBuilder

# Without the web console `plinth serve` starts by default (an environment variable,
# which builds from before the console ignore, rather than --console-listen off).
NO_CONSOLE_ENV = {**os.environ, "PLINTH_CONSOLE_LISTEN": "off"}

SHARED_TOPIC = "shared.events"
A_PARK_TOPIC = "a.park"
A_BULK_TOPIC = "a.bulk"
B_GROUP = "b.readers"
B_KEY = b"B"
# B's record value: its sequence number and its send time (time.time_ns()).
_B_VALUE = struct.Struct(">QQ")
# How long a thread of the flood waits for a socket before it checks stop().
_POLL_MS = 100
# Bytes of A's bulk topic, which the unread fetches read.
BULK_BYTES = 32 * limits.MiB
_BULK_RECORD_BYTES = 256 * 1024
# The large frames of the unknown-topic flood: well inside a frame, big enough
# that holding a few hundred of them would cost the router gigabytes.
_LARGE_FRAME_BYTES = 8 * limits.MiB
_LARGE_FRAMES_PER_S = 4            # about 50 MB/s of frames the broker must not keep
# Every this many large frames, a burst of look-ups of unknown topics.
_LOOKUP_BURST_EVERY_TICKS = 8
_LOOKUP_BURST_REQUESTS = 2 * limits.ROUTER_ADMIN_JOBS_QUEUED_MAX
_UNREAD_CONNECTIONS = 4
_UNREAD_FETCHES_PER_CONNECTION = 64


@dataclass(frozen=True)
class TenantKeys:
    """A client's CurveZMQ key files (``plinth keygen``) and the server's public key file."""

    public_file: Path
    secret_file: Path
    server_public_file: Path

    def client_options(self) -> dict:
        """Keyword arguments for Producer, Consumer and Admin."""
        return dict(curve_key_file=str(self.secret_file),
                    curve_server_key_file=str(self.server_public_file))

    def public_key(self) -> str:
        import zmq.auth

        return zmq.auth.load_certificate(str(self.public_file))[0].decode()

    def dealer(self, context: zmq.Context, url: str, rcvhwm: int = limits.SOCKET_MESSAGES_HWM) -> zmq.Socket:
        """A DEALER speaking CurveZMQ with these keys, connected to ``url``."""
        import zmq.auth

        public, secret = zmq.auth.load_certificate(str(self.secret_file))
        server_public, _ = zmq.auth.load_certificate(str(self.server_public_file))
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
        sock.connect(url)
        return sock


@dataclass
class Deployment:
    """Keys, authorized keys and an ACL file for the server, an admin and the two tenants."""

    directory: Path
    server_secret_file: Path
    authorized_dir: Path
    acl_file: Path
    admin: TenantKeys
    tenant_a: TenantKeys
    tenant_b: TenantKeys

    @classmethod
    def create(cls, directory: Path) -> "Deployment":
        """Run ``plinth keygen`` for each party and write the ACL (client process)."""
        keys, authorized = directory / "keys", directory / "authorized"
        authorized.mkdir(parents=True, exist_ok=True)
        server_public, server_secret = _keygen(keys, "server")
        parties = {}
        for name in ("admin", "tenant-a", "tenant-b"):
            public, secret = _keygen(keys, name)
            (authorized / public.name).write_text(public.read_text())
            parties[name] = TenantKeys(public, secret, server_public)
        acl_file = directory / "acl.json"
        acl_file.write_text(json.dumps({
            parties["admin"].public_key(): [
                {"operations": ["produce", "consume", "admin"], "topics": "*", "groups": "*"},
                {"operations": ["cluster"]}],
            parties["tenant-a"].public_key(): [
                {"operations": ["produce", "consume", "admin"], "topics": "a.*", "groups": "a.*"},
                {"operations": ["produce"], "topics": "shared.*"}],
            parties["tenant-b"].public_key(): [
                {"operations": ["produce", "consume"], "topics": "shared.*", "groups": "b.*"}],
        }, indent=2))
        return cls(directory, server_secret, authorized, acl_file, parties["admin"],
                   parties["tenant-a"], parties["tenant-b"])

    def serve_args(self) -> list[str]:
        """``plinth serve`` options that turn on CurveZMQ and the ACL."""
        return ["--curve-secret-key", str(self.server_secret_file),
                "--authorized-keys", str(self.authorized_dir), "--acl", str(self.acl_file)]

    def create_topics(self, url: str, shared_partitions: int = 2) -> None:
        """The shared topic, A's empty topic to park fetches on, and A's bulk topic, filled."""
        from plinth import Admin, Producer

        with Admin(broker=url, **self.admin.client_options()) as admin:
            admin.create_topic(SHARED_TOPIC, shared_partitions)
            admin.create_topic(A_PARK_TOPIC, 2)
            admin.create_topic(A_BULK_TOPIC, 1)
        with Producer(broker=url, linger_ms=5, **self.tenant_a.client_options()) as producer:
            value = bytes(_BULK_RECORD_BYTES)
            futures = [producer.send(A_BULK_TOPIC, value) for _ in range(BULK_BYTES // len(value))]
            for future in futures:
                future.get(60)


def _keygen(directory: Path, name: str) -> tuple[Path, Path]:
    subprocess.run([sys.executable, "-m", "plinth.cli", "keygen", name, "--out", str(directory)],
                   check=True, capture_output=True)
    return directory / f"{name}.key", directory / f"{name}.key_secret"


# --- Tenant A ------------------------------------------------------------------

@dataclass
class FloodCounts:
    """What each kind of A's flood sent, and the replies it got, by kind of answer."""

    sent: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)

    def add(self, table: dict[str, int], key: str, count: int = 1) -> None:
        table[key] = table.get(key, 0) + count


class Flood:
    """Tenant A's hostile traffic, one thread per kind, until ``stop()``. Client process."""

    KINDS = ("unknown_topics", "parked_fetches", "group_churn", "producer_ids", "unread_replies")

    def __init__(self, url: str, keys: TenantKeys, kinds: tuple[str, ...] = KINDS):
        self.url, self.keys = url, keys
        self.counts = FloodCounts()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._context = zmq.Context()
        self._request_ids = iter(range(1, 2**62))
        self.failures: list[BaseException] = []
        self._threads = [threading.Thread(target=self._guarded, args=(getattr(self, f"_{kind}"),),
                                          name=f"flood-{kind}", daemon=True) for kind in kinds]

    def start(self) -> "Flood":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 30) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout_s)
            if thread.is_alive():
                raise AssertionError(f"{thread.name} did not stop within {timeout_s} s")
        self._context.destroy(linger=0)

    # --- Helpers --------------------------------------------------------------

    def _guarded(self, body) -> None:
        try:
            body()
        except BaseException as exc:   # a flood thread that dies floods nothing: say so
            self.failures.append(exc)

    def _next_id(self) -> int:
        with self._lock:
            return next(self._request_ids)

    def _count(self, kind: str, sent: int = 0, answers: list[bytes] | None = None) -> None:
        with self._lock:
            if sent:
                self.counts.add(self.counts.sent, kind, sent)
            for frame in answers or ():
                error = protocol.decode_reply(frame).error
                self.counts.add(self.counts.answers, f"{kind}:{type(error).__name__ if error else 'ok'}")

    def _drain(self, sock: zmq.Socket, kind: str, wait_ms: int = 0) -> int:
        """Read every reply waiting on ``sock``; returns how many."""
        frames_read = []
        while sock.poll(wait_ms if not frames_read else 0):
            frames_read.append(sock.recv_multipart()[0])
        self._count(kind, answers=frames_read)
        return len(frames_read)

    def _paced(self, per_s: float):
        """Yield once per tick at ``per_s`` ticks a second until stop()."""
        interval_s = 1.0 / per_s
        next_s = time.monotonic()
        while not self._stopping.is_set():
            yield
            next_s += interval_s
            self._stopping.wait(max(0.0, next_s - time.monotonic()))

    # --- The kinds ------------------------------------------------------------

    def _unknown_topics(self) -> None:
        sock = self.keys.dealer(self._context, self.url)
        large = bytes(_LARGE_FRAME_BYTES)
        for tick, _ in enumerate(self._paced(_LARGE_FRAMES_PER_S)):
            if tick % _LOOKUP_BURST_EVERY_TICKS == 0:
                self._burst_of_lookups(sock)
            topic = f"a.unknown-{secrets.token_hex(4)}"
            if tick % 2:
                sock.send_multipart([protocol.encode_produce(self._next_id(), topic, 0, 1), large])
            else:   # a fetch takes no payload: these extra frames must not be kept
                sock.send_multipart([protocol.encode_fetch(self._next_id(), topic, 0, 0, 1024, 0),
                                     large, large])
            self._count("unknown_topics", sent=1)
            self._drain(sock, "unknown_topics")
        sock.close()

    def _burst_of_lookups(self, sock: zmq.Socket) -> None:
        """Small fetches to more distinct unknown topics than the router's queue of
        look-ups holds, so that the large requests after them find it full."""
        for _ in range(_LOOKUP_BURST_REQUESTS):
            sock.send(protocol.encode_fetch(self._next_id(), f"a.unknown-{secrets.token_hex(6)}",
                                            0, 0, 1024, 0))
        self._count("unknown_topics", sent=_LOOKUP_BURST_REQUESTS)

    def _parked_fetches(self) -> None:
        sock = self.keys.dealer(self._context, self.url)
        for tick, _ in enumerate(self._paced(2_000)):
            if tick % 2:
                header = protocol.encode_produce(self._next_id(), A_PARK_TOPIC, 99, 0)
                sock.send_multipart([header, _small_batch()])
            else:
                sock.send(protocol.encode_fetch(self._next_id(), A_PARK_TOPIC, tick // 2 % 2, 0,
                                                1024, limits.FETCH_WAIT_MS_MAX))
            self._count("parked_fetches", sent=1)
            if tick % 64 == 0:
                self._drain(sock, "parked_fetches")
        sock.close()

    def _group_churn(self) -> None:
        sock = self.keys.dealer(self._context, self.url)
        for tick, _ in enumerate(self._paced(300)):
            group = (f"a.g-{tick}", "a.crowded", B_GROUP)[tick % 3]
            sock.send(protocol.encode_group_heartbeat(
                self._next_id(), group, "", 0, [A_PARK_TOPIC], set(),
                limits.SESSION_TIMEOUT_MS_MAX, ""))
            self._count("group_churn", sent=1)
            self._drain(sock, "group_churn")
        sock.close()

    def _producer_ids(self) -> None:
        sock = self.keys.dealer(self._context, self.url)
        for tick, _ in enumerate(self._paced(1_000)):
            builder = BatchBuilder()
            builder.append(b"A", b"churn", int(time.time() * 1000), [])
            batch = builder.build(producer_id=random.getrandbits(62), base_sequence=0)
            sock.send_multipart([protocol.encode_produce(self._next_id(), SHARED_TOPIC, tick % 2, 1),
                                 batch])
            self._count("producer_ids", sent=1)
            self._drain(sock, "producer_ids")
        sock.close()

    def _unread_replies(self) -> None:
        socks = []
        for _ in range(_UNREAD_CONNECTIONS):
            sock = self.keys.dealer(self._context, self.url, rcvhwm=1)
            sock.setsockopt(zmq.RCVBUF, 64 * 1024)   # the kernel holds little for it either
            socks.append(sock)
        for sock in socks:
            for _ in range(_UNREAD_FETCHES_PER_CONNECTION):
                sock.send(protocol.encode_fetch(self._next_id(), A_BULK_TOPIC, 0, 0,
                                                limits.FETCH_BYTES_MAX, 0))
            self._count("unread_replies", sent=_UNREAD_FETCHES_PER_CONNECTION)
        self._stopping.wait()   # and never read
        for sock in socks:
            sock.close()


def _small_batch() -> bytes:
    builder = BatchBuilder()
    builder.append(None, b"x", int(time.time() * 1000), [])
    return builder.build()


# --- Tenant B ------------------------------------------------------------------

class SteadyTenant:
    """Tenant B: numbered records at ``rate_per_s`` to the shared topic, read back by a
    consumer in its group. Client process; two threads."""

    def __init__(self, url: str, keys: TenantKeys, rate_per_s: float):
        self.url, self.keys, self.rate_per_s = url, keys, rate_per_s
        self.errors: list[str] = []
        self.acked: set[int] = set()
        self.produce_latency_ms: list[tuple[float, float]] = []    # (when sent, latency)
        self.e2e_latency_ms: list[tuple[float, float]] = []        # (when sent, latency)
        self.read: dict[int, int] = {}                             # sequence -> times read
        self._sent = 0
        self._stopping = threading.Event()
        self._producing = threading.Event()
        self._consumer_ready = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._consume, name="tenant-b-consume", daemon=True),
                         threading.Thread(target=self._produce, name="tenant-b-produce", daemon=True)]

    def start(self, ready_timeout_s: float = 60) -> "SteadyTenant":
        """Start the consumer, wait until it has its partitions, then the producer."""
        self._threads[0].start()
        if not self._consumer_ready.wait(ready_timeout_s):
            raise AssertionError(f"tenant B's consumer got no partitions in {ready_timeout_s} s; "
                                 f"errors: {self.errors}")
        self._threads[1].start()
        return self

    def stop_producing(self, timeout_s: float = 180) -> None:
        self._producing.set()
        self._threads[1].join(timeout_s)
        if self._threads[1].is_alive():
            raise AssertionError(f"tenant B's producer did not finish within {timeout_s} s")

    def wait_read_all(self, timeout_s: float = 120) -> None:
        """Until every acknowledged record was read (bounded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                missing = self.acked - self.read.keys()
            if not missing:
                return
            time.sleep(0.1)
        raise AssertionError(f"tenant B never read {len(missing)} acknowledged records, e.g. "
                             f"{sorted(missing)[:10]}")

    def stop(self, timeout_s: float = 60) -> None:
        self._producing.set()
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout_s)

    @property
    def sent(self) -> int:
        return self._sent

    def _produce(self) -> None:
        from plinth import Producer

        try:
            with Producer(broker=self.url, acks="all", linger_ms=0,
                          **self.keys.client_options()) as producer:
                self._send_at_rate(producer)
                producer.flush(120)
        except Exception as exc:
            self.errors.append(f"producer: {exc!r}")

    def _send_at_rate(self, producer) -> None:
        interval_s = 1.0 / self.rate_per_s
        next_s = time.monotonic()
        while not self._producing.is_set():
            sequence, sent_ns = self._sent, time.time_ns()
            future = producer.send(SHARED_TOPIC, _B_VALUE.pack(sequence, sent_ns), key=B_KEY)
            future.add_callback(lambda _, s=sequence, t=sent_ns: self._on_ack(s, t, None))
            future.add_errback(lambda exc, s=sequence, t=sent_ns: self._on_ack(s, t, exc))
            self._sent += 1
            next_s += interval_s
            self._producing.wait(max(0.0, next_s - time.monotonic()))

    def _on_ack(self, sequence: int, sent_ns: int, error: BaseException | None) -> None:
        if error is not None:
            self.errors.append(f"record {sequence} not acknowledged: {error!r}")
            return
        with self._lock:
            self.acked.add(sequence)
            self.produce_latency_ms.append((sent_ns / 1e9, (time.time_ns() - sent_ns) / 1e6))

    def _consume(self) -> None:
        from plinth import Consumer

        try:
            with Consumer(SHARED_TOPIC, broker=self.url, group=B_GROUP, auto_offset_reset="earliest",
                          on_assign=lambda partitions: self._consumer_ready.set(),
                          **self.keys.client_options()) as consumer:
                while not self._stopping.is_set():
                    for records in consumer.poll(timeout_ms=200).values():
                        self._on_records(records)
        except Exception as exc:
            self.errors.append(f"consumer: {exc!r}")
            self._consumer_ready.set()

    def _on_records(self, records) -> None:
        now_ns = time.time_ns()
        with self._lock:
            for record in records:
                if record.key != B_KEY:
                    continue   # A's producer-id churn writes to the shared topic too
                sequence, sent_ns = _B_VALUE.unpack(record.value)
                self.read[sequence] = self.read.get(sequence, 0) + 1
                self.e2e_latency_ms.append((sent_ns / 1e9, (now_ns - sent_ns) / 1e6))


# --- Broker memory -------------------------------------------------------------

def broker_rss_bytes(server_pid: int, data_dir: Path) -> int:
    """Resident bytes of the server process and of every process holding a file in
    its data directory (its shard actors, wherever Ray runs them on this machine)."""
    pids = {server_pid} | _pids_holding(data_dir)
    return sum(_rss_bytes(pid) for pid in pids)


def _pids_holding(directory: Path) -> set[int]:
    prefix = str(directory.resolve())
    holders = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                if os.readlink(fd.path).startswith(prefix):
                    holders.add(int(entry.name))
                    break
        except OSError:   # gone, or not ours to read
            continue
    return holders


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class RssSampler:
    """The broker's resident bytes every ``interval_s``, the largest kept. One thread."""

    def __init__(self, server_pid: int, data_dir: Path, interval_s: float = 0.5):
        self.largest_bytes = 0
        self.samples = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server_pid, data_dir, interval_s),
                                        name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self, server_pid: int, data_dir: Path, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            self.largest_bytes = max(self.largest_bytes, broker_rss_bytes(server_pid, data_dir))
            self.samples += 1

    def stop(self) -> int:
        self._stopping.set()
        self._thread.join(30)
        return self.largest_bytes


# --- The benchmark ---------------------------------------------------------------

def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    if not latencies_ms:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(latencies_ms)
    return {"p50": statistics.median(ordered), "p99": ordered[int(0.99 * (len(ordered) - 1))],
            "max": ordered[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="length of each phase")
    parser.add_argument("--rate", type=float, default=200, help="tenant B's records per second")
    parser.add_argument("--plinth", default="plinth", help="the plinth executable to run")
    parser.add_argument("--kinds", default=",".join(Flood.KINDS),
                        help=f"comma-separated kinds of flood (default: all of {', '.join(Flood.KINDS)})")
    args = parser.parse_args()
    from redis_peer import free_port   # loadtest/, this script's folder

    work = Path(tempfile.mkdtemp(prefix="plinth-tenants-"))
    deployment = Deployment.create(work)
    url = f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen([args.plinth, "serve", "--data-dir", str(work / "data"), "--listen", url,
                               *deployment.serve_args()], cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=NO_CONSOLE_ENV)
    try:
        _wait_ready(server, url)
        deployment.create_topics(url)
        tenant = SteadyTenant(url, deployment.tenant_b, args.rate).start()
        quiet_end = time.time() + args.seconds
        time.sleep(args.seconds)
        kinds = tuple(args.kinds.split(","))
        unknown = set(kinds) - set(Flood.KINDS)
        if unknown:
            raise SystemExit(f"unknown kinds of flood {sorted(unknown)}; known: {', '.join(Flood.KINDS)}")
        flood = Flood(url, deployment.tenant_a, kinds).start()
        time.sleep(args.seconds)
        flood.stop()
        tenant.stop_producing()
        tenant.wait_read_all()
        tenant.stop()
        _print_phases(tenant, quiet_end, flood)
    finally:
        server.terminate()
        server.wait(120)
    return 0


def _wait_ready(server: subprocess.Popen, url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    for line in server.stdout:
        if f"ready: listening on {url}" in line:
            threading.Thread(target=server.stdout.read, daemon=True).start()   # keep draining
            return
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"plinth serve did not become ready (exit status {server.poll()})")


def _print_phases(tenant: SteadyTenant, quiet_end: float, flood: Flood) -> None:
    print(f"tenant B: {tenant.sent} sent, {len(tenant.acked)} acknowledged, "
          f"{len(tenant.read)} read, errors: {len(tenant.errors)}")
    print(f"flood sent: {flood.counts.sent}")
    print(f"{'latency (ms)':<26}{'quiet p50':>10}{'p99':>8}{'flooded p50':>13}{'p99':>8}{'p99 ratio':>11}")
    for name, samples in (("B produce -> ack", tenant.produce_latency_ms),
                          ("B produce -> consume", tenant.e2e_latency_ms)):
        quiet = percentiles([ms for at, ms in samples if at < quiet_end])
        flooded = percentiles([ms for at, ms in samples if at >= quiet_end])
        print(f"{name:<26}{quiet['p50']:>10.1f}{quiet['p99']:>8.1f}{flooded['p50']:>13.1f}"
              f"{flooded['p99']:>8.1f}{flooded['p99'] / quiet['p99']:>10.1f}x")


if __name__ == "__main__":
    sys.exit(main())
