"""Small helpers shared by the tests (not fixtures: those are in conftest.py)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import secrets
import socket
import time
from pathlib import Path


# Ports for the servers the tests start: below the kernel's ephemeral range (32768 and
# up here), which outgoing connections take from, and above Ray's worker ports
# (10002-19999). A port from the ephemeral range, free when picked, was once taken by
# a connection before the broker bound it ("Address already in use").
TEST_PORT_FIRST, TEST_PORT_LAST = 20_000, 32_767
TEST_PORT_TRIES_MAX = 200


def fill_file_system(directory: Path) -> None:
    """Fill the file system ``directory`` is on to its last byte, as another process
    would (a file named ``filler`` in it)."""
    with open(Path(directory) / "filler", "wb") as filler:
        with contextlib.suppress(OSError):   # ENOSPC: full
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
    assert shutil.disk_usage(directory).free == 0


def free_port() -> int:
    """A loopback TCP port nothing is bound to now, outside the ephemeral range."""
    for _ in range(TEST_PORT_TRIES_MAX):
        port = secrets.randbelow(TEST_PORT_LAST - TEST_PORT_FIRST + 1) + TEST_PORT_FIRST
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:   # all tried were taken: any the kernel gives
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curve_key_pair(directory, name: str) -> tuple[str, str]:
    """(public .key, .key_secret) written in ``directory`` as ``plinth keygen`` writes
    them: the secret mode 0600, which servers and clients check."""
    import zmq.auth

    public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    Path(secret_file).chmod(0o600)
    return public_file, secret_file


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def topic_id_in(data_dir, topic: str) -> str:
    """The id the controller gave ``topic``, from the broker's metadata.json in ``data_dir``
    (its remote segments' keys carry it: shards/tier/remote_segment.py)."""
    return json.loads((Path(data_dir) / "metadata.json").read_text())["topics"][topic]["topic_id"]


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.05, explain=None):
    """Poll a condition with a bound; used only for external processes' state.
    ``explain()``, if given, says on timeout what the state was (its text ends the
    AssertionError), so that a flaky wait explains itself."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    message = f"condition not met within {timeout_s} s"
    if explain is not None:
        try:
            message += f"; the state then:\n{explain()}"
        except Exception as exc:   # the report must not hide the timeout
            message += f"; its state could not be read ({type(exc).__name__}: {exc})"
    raise AssertionError(message)


class NumberedWriter:
    """A producer thread sending numbered records ("0", "1", ...) round-robin over
    partitions, remembering (partition, offset) of each acknowledged one.

    The producer is idempotent and retries through broker faults for up to
    ``delivery_timeout_ms``; records it gave up on are kept in ``errors``.
    """

    def __init__(self, url: str, topic: str, partitions: int, *, request_timeout_ms: int = 2_000,
                 delivery_timeout_ms: int = 120_000, chunk: int = 200, linger_ms: float = 1,
                 send_interval_s: float = 0):
        """``send_interval_s``: a pause after each send (a steady stream, rather than
        bursts that keep the sender thread from running)."""
        import threading

        self.url, self.topic, self.partitions = url, topic, partitions
        self.linger_ms, self.send_interval_s = linger_ms, send_interval_s
        self.pipelined_sends = 0   # the producer's, once stopped (client/sender.py)
        self.request_timeout_ms, self.delivery_timeout_ms = request_timeout_ms, delivery_timeout_ms
        self.chunk = chunk
        self.acked: dict[int, tuple[int, int]] = {}
        self.errors: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from plinth import Producer

        seq = 0
        with Producer(broker=self.url, linger_ms=self.linger_ms,
                      request_timeout_ms=self.request_timeout_ms,
                      delivery_timeout_ms=self.delivery_timeout_ms) as producer:
            while not self._stop.is_set():
                futures = []
                for n in range(seq, seq + self.chunk):
                    futures.append((n, producer.send(self.topic, b"%d" % n,
                                                     partition=n % self.partitions)))
                    if self.send_interval_s:
                        time.sleep(self.send_interval_s)
                seq += self.chunk
                for n, future in futures:
                    try:
                        meta = future.get(timeout=self.delivery_timeout_ms / 1000 + 30)
                    except Exception as exc:   # not acknowledged: may or may not be stored
                        self.errors.append(exc)
                        continue
                    self.acked[n] = (meta.partition, meta.offset)
            self.pipelined_sends = producer._sender.pipelined_sends

    def wait_for_more(self, count: int, timeout_s: float = 120) -> None:
        target = len(self.acked) + count
        wait_until(lambda: len(self.acked) >= target, timeout_s=timeout_s)

    def stop(self, timeout_s: float = 180) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "writer did not stop"


def read_all(url: str, topic: str) -> list:
    from plinth import Consumer

    with Consumer(topic, broker=url, auto_offset_reset="earliest", consumer_timeout_ms=5_000) as c:
        return list(c)


def values_to_high_watermark(url: str, topic: str) -> set[bytes]:
    """Every value of every partition of ``topic`` below its high watermark as described
    now: read until each partition's position reaches it (no wait for silence)."""
    from plinth import Admin, Consumer

    with Admin(broker=url) as admin:
        ends = {p.partition: p.high_watermark for p in admin.describe_topic(topic).partition_info}
    values: set[bytes] = set()
    with Consumer(broker=url, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, p) for p in ends])
        while any(consumer.position(topic, p) < end for p, end in ends.items()):
            for records in consumer.poll(timeout_ms=1000).values():
                values.update(r.value for r in records)
    return values


def check_exactly_once_in_order(records: list, acked: dict, partitions: int) -> None:
    """Every acknowledged record is stored once, at the offset it was given, in send order."""
    seen = {}
    for r in records:
        n = int(r.value)
        assert n not in seen, f"record {n} appears twice"
        seen[n] = (r.partition, r.offset)
    missing = [n for n in acked if n not in seen]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    moved = [n for n in acked if seen[n] != acked[n]]
    assert not moved, f"{len(moved)} records not at their acknowledged offset, e.g. {moved[:5]}"
    for p in range(partitions):
        numbers = [int(r.value) for r in records if r.partition == p]
        assert numbers == sorted(numbers), f"partition {p} out of order"


def start_until_ready(cmd: list[str], marker: str, timeout_s: float = 120, env=None,
                      start_new_session: bool = False):
    """Start ``cmd``; return (process, output lines so far) once a line holds ``marker``.

    A thread keeps reading the output into the list, so the pipe never fills.
    ``start_new_session``: in a session and process group of its own, which a test
    can signal whole (``os.killpg``), as systemd stops a service.
    """
    import subprocess
    import threading

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=env, start_new_session=start_new_session)
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                ready.set()
        ready.set()   # the process ended; the caller sees it below

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(timeout_s) or proc.poll() is not None:
        proc.kill()
        raise RuntimeError(f"{cmd[2:5]} did not get ready:\n" + "".join(lines[-50:]))
    return proc, lines


def topic_that_moves(partitions: int, shards_before: list[str], shards_after: list[str]) -> str:
    """A fresh topic name some of whose partitions move when the shards change, and
    some stay (with a random name, none moves now and then)."""
    from plinth.control import placement

    while True:
        topic = unique_topic("scale")
        moving = sum(placement.shard_for(topic, p, shards_before) != placement.shard_for(topic, p, shards_after)
                     for p in range(partitions))
        if 0 < moving < partitions:
            return topic


class ManualClock:
    """A stand-in for ``time.monotonic`` that moves only when a test sets ``now_s``."""

    def __init__(self, now_s: float = 1000.0):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def processes_naming(text: str) -> list[int]:
    """Pids of this machine's processes whose command line contains ``text``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


class LostWriteback:
    """os.fsync as the kernel answers it when a writeback fails (PostgreSQL's
    "fsyncgate"; seen on ext4 over a disk that ran out of room under it): the next
    fsync of a ``.log`` file fails once, the bytes written since its last good fsync
    are gone (zeros, as the unwritten extents read back), and later fsyncs succeed.
    ``within``: only a ``.log`` file whose path holds it (one shard's, say)."""

    def __init__(self, monkeypatch, within: str = "/"):
        self._within = within
        self._fsync = os.fsync
        # (device, inode) -> the file's size at its last good fsync
        self._synced_bytes: dict[tuple[int, int], int] = {}
        self.armed = False
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        stat = os.fstat(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if self.armed and path.endswith(".log") and self._within in path:
            self.armed = False
            synced = self._synced_bytes.get((stat.st_dev, stat.st_ino), 0)
            os.pwrite(fd, bytes(stat.st_size - synced), synced)
            self._fsync(fd)
            raise OSError(errno.EIO, "Input/output error")
        self._fsync(fd)
        self._synced_bytes[(stat.st_dev, stat.st_ino)] = stat.st_size
