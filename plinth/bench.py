"""``plinth bench``: throughput and latency of a running broker, seen from its clients.

    produce  K producer processes send N records (or send for ``duration_s``),
             flat out or at ``rate``; latency per record from ``send()`` to
             its acknowledgement (with acks=0: to the moment its batch left).
             With ``one_at_a_time`` each producer sends a record, waits for
             its acknowledgement (``send().get()``), then sends the next,
             as the peers' one-at-a-time figures are measured.
    consume  makes sure the topic holds N records (producing the missing ones,
             untimed), then one Consumer reads N from the beginning.
    e2e      a consumer process waits at the log end while the producers send
             records whose value starts with ``time.time_ns()`` (8 bytes, LE);
             latency per record from ``send()`` to the poll that delivered it.
             ``one_at_a_time`` applies to the producers as in produce.

Where code runs:
  * the ``plinth bench`` process: creates the topic, starts the other
    processes, draws the progress bar on stderr, samples broker memory,
    merges the results and builds the report; for ``consume`` it also runs
    the timed consumer.
  * producer processes (spawned, one per ``producers``): one Producer each.
  * the e2e consumer process (spawned).

Latency lives in a LatencyHistogram of 1-microsecond bins, so a run of any
length takes constant memory and no value is rounded to whole milliseconds.
What the bench adds per record: one ``perf_counter_ns()``, the future's
``batch``, a dict lookup and an array append; the sender thread does one
callback per batch, not per record (see _AckTimer). Only the public client API is used,
plus ``RecordFuture.batch`` and ``BatchResult.add_done_callback``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import secrets
import struct
import sys
import threading
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass, field
from operator import attrgetter

import numpy as np
from tqdm import tqdm

from plinth import limits
from plinth.counted import counted
from plinth.client.accumulator import RECORD_BYTES_MAX
from plinth.client.admin import Admin
from plinth.client.consumer import Consumer
from plinth.client.producer import Producer
from plinth.errors import ClientError, PlinthError, PlinthTimeoutError, TopicExistsError
from plinth.format.record_batch import RECORD_OVERHEAD_BYTES

# Distinct random keys per producer, generated before the clock starts, so
# that the numbers are those of traffic with many keys: a per-key cache
# anywhere on the path (there is none now) could not flatter them.
KEY_POOL_SIZE_MAX = 1 << 20
# The pool's bytes: fewer distinct keys when they are long, so that --key-bytes
# near a record's limit does not ask for a terabyte of random bytes.
KEY_POOL_BYTES_MAX = 64 * 1024 * 1024
# Records sent between two looks at progress, acknowledgements and the clock.
CHUNK_RECORDS = 4096
# At a fixed rate, send in chunks about this far apart: a sleep per chunk,
# never a busy wait per record.
PACE_INTERVAL_S = 0.001
# Largest poll of the consumers.
POLL_RECORDS_MAX = 100_000
# How long the processes may take to start, and to answer after the last send.
STARTUP_TIMEOUT_S = 120.0
# How long a producer's final flush may take; its batches fail sooner, at the
# Producer's delivery timeout (2 minutes by default).
FLUSH_TIMEOUT_S = 300.0
PROGRESS_INTERVAL_S = 0.2
# The e2e value starts with the producer's time.time_ns().
_STAMP = struct.Struct("<q")
_STAMP_BYTES = _STAMP.size
_VALUE = attrgetter("value")
_SPAWN = multiprocessing.get_context("spawn")


class BenchError(ClientError):
    """A bench process failed or the broker stopped answering; the message says which."""


# --- Options and report ----------------------------------------------------------

@dataclass(frozen=True)
class BenchConfig:
    """What to measure; built by the CLI from its options. Any process."""

    broker: object = None                 # a URL, a client BrokerAddress, or None: the default
    request_timeout_ms: int = 30_000
    messages: int = 1_000_000
    value_bytes: int = 100
    key_bytes: int = 16
    partitions: int = 4
    replication_factor: int | None = None   # of a created topic; None: the server's default
    producers: int = 1
    linger_ms: float | None = None        # None: the Producer's default
    batch_bytes_max: int | None = None    # None: the Producer's default
    acks: str = "all"                     # the Producer's default (client/producer.py)
    topic: str | None = None              # None: a fresh topic
    rate: float | None = None             # records/s over all producers; None: flat out
    duration_s: float | None = None       # produce: run this long instead of ``messages``
    one_at_a_time: bool = False           # each record waits for its ack before the next
    watch_memory: bool = False
    memory_interval_s: float = 2.0

    def check(self, command: str) -> None:
        """Raise ValueError naming the option whose value cannot work for ``command``."""
        if self.messages < 1 or self.producers < 1 or self.partitions < 1:
            raise ValueError("--messages, --producers and --partitions must be >= 1")
        if self.value_bytes < 0 or self.key_bytes < 0:
            raise ValueError("--value-bytes and --key-bytes must be >= 0")
        record_bytes = self.key_bytes + self.value_bytes + RECORD_OVERHEAD_BYTES
        if record_bytes > RECORD_BYTES_MAX:
            raise ValueError(
                f"--key-bytes {self.key_bytes} + --value-bytes {self.value_bytes} (+ "
                f"{RECORD_OVERHEAD_BYTES} bytes of column entries) is over the "
                f"{RECORD_BYTES_MAX} bytes a record may have (a batch holds at most "
                f"{limits.BATCH_BYTES_MAX} bytes)")
        if command == "e2e" and self.value_bytes < _STAMP_BYTES:
            raise ValueError(f"e2e needs --value-bytes >= {_STAMP_BYTES} for the send time, "
                             f"got {self.value_bytes}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"--rate must be > 0 records/s, got {self.rate}")
        if self.duration_s is not None and (self.duration_s <= 0 or command != "produce"):
            raise ValueError(f"--duration-s is for produce and must be > 0, got {self.duration_s}")
        if self.one_at_a_time and command == "consume":
            raise ValueError("--one-at-a-time is for produce and e2e, not consume")

    def producer_options(self) -> dict:
        """The producers' options. Their delivery timeout is the Producer's default, or
        linger plus request timeout where that is longer (Kafka's least: the Producer
        refuses less), so that a long --linger-ms or --request-timeout-ms is taken."""
        linger_ms = (limits.PRODUCER_LINGER_MS_DEFAULT if self.linger_ms is None
                     else self.linger_ms)
        options = {"broker": self.broker, "request_timeout_ms": self.request_timeout_ms,
                   "acks": "all" if self.acks == "all" else int(self.acks),
                   "delivery_timeout_ms": max(limits.PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT,
                                              linger_ms + self.request_timeout_ms)}
        if self.linger_ms is not None:
            options["linger_ms"] = self.linger_ms
        if self.batch_bytes_max is not None:
            options["batch_bytes_max"] = self.batch_bytes_max
        return options


@dataclass
class BenchReport:
    """One measurement, as printed. Built in the ``plinth bench`` process."""

    command: str
    topic: str
    partitions: int
    records: int
    seconds: float
    payload_bytes: int                    # keys + values of the records counted
    latency: LatencyHistogram | None      # None for consume
    settings: dict
    sent: int | None = None               # e2e: records the producers had acknowledged
    errors: int = 0                       # records whose send failed
    memory: list[dict] = field(default_factory=list)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {"command": self.command, "topic": self.topic, "partitions": self.partitions,
                "records": self.records, "sent": self.sent, "errors": self.errors,
                "seconds": round(self.seconds, 6), "records_per_s": round(self.records_per_s, 1),
                "mb_per_s": round(self.mb_per_s, 3),
                "latency_us": self.latency.summary_us() if self.latency else None,
                "settings": self.settings, "memory": self.memory}

    def format_table(self) -> str:
        """The human-readable report: a settings line, then one row of numbers."""
        head = (f"{'records':>10} {'seconds':>9} {'records/s':>11} {'MB/s':>8}  "
                + " ".join(f"{name + ' ms':>9}" for name in LatencyHistogram.PERCENTILE_NAMES)
                + f" {'max ms':>9}")
        latency = self.latency.summary_us() if self.latency else None
        cells = ([f"{latency[name] / 1000:9.3f}" for name in (*LatencyHistogram.PERCENTILE_NAMES, "max")]
                 if latency else [f"{'-':>9}"] * (len(LatencyHistogram.PERCENTILE_NAMES) + 1))
        row = (f"{self.records:>10} {self.seconds:>9.3f} {self.records_per_s:>11,.0f} "
               f"{self.mb_per_s:>8.2f}  " + " ".join(cells))
        lines = [self._describe(), head, row]
        if self.sent is not None and self.sent != self.records:
            lines.append(f"warning: {counted(self.sent, 'record')} sent, {self.records} "
                         f"delivered")
        if self.errors:
            lines.append(f"warning: {counted(self.errors, 'record')} failed to send")
        return "\n".join(lines + _format_memory(self.memory))

    def _describe(self) -> str:
        s = self.settings
        factor = s.get("replication_factor")
        copies = "" if factor is None else f", factor {factor}"
        head = (f"plinth bench {self.command}: topic {self.topic} "
                f"({counted(self.partitions, 'partition')}"
                f"{copies}), "
                f"{s['key_bytes']}-byte keys, {s['value_bytes']}-byte values, ")
        if self.command == "consume":
            return head + "1 consumer from offset 0"
        rate = "flat out" if s["rate"] is None else f"{s['rate']:,.0f} records/s"
        if s.get("one_at_a_time"):
            rate += ", one record at a time"
        return (head + f"{counted(s['producers'], 'producer')} {rate}, acks={s['acks']} "
                f"linger_ms={s['linger_ms']:g} batch_bytes_max={s['batch_bytes_max']}")


def _settings(config: BenchConfig) -> dict:
    settings = asdict(config)
    for name in ("broker", "topic", "watch_memory", "memory_interval_s"):
        settings.pop(name)
    for name, default in (("linger_ms", limits.PRODUCER_LINGER_MS_DEFAULT),
                          ("batch_bytes_max", limits.PRODUCER_BATCH_BYTES_DEFAULT)):
        if settings[name] is None:
            settings[name] = default   # what the Producer used
    return settings


# --- Latency histogram -------------------------------------------------------------

class LatencyHistogram:
    """Latencies in 1-microsecond bins: exact to the microsecond, constant memory.

    Values of BINS microseconds (about 4.2 s) or more are kept as exact
    values beside the bins. Negative latencies (a wall clock stepped back
    during an e2e run) count as 0. Percentiles are nearest-rank: p(q) is the
    smallest recorded value v such that at least q % of the values are <= v.
    Not thread-safe: one owner at a time. Pickles as its non-empty bins only.
    """

    BINS = 1 << 22
    PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
    PERCENTILE_NAMES = ("p50", "p90", "p95", "p99", "p99.9")

    def __init__(self) -> None:
        self.counts = np.zeros(self.BINS, dtype=np.int64)   # untouched pages cost nothing
        self._overflow_us: list[np.ndarray] = []
        self.count = 0
        self.max_us = 0

    def record_ns(self, latencies_ns: np.ndarray) -> None:
        """Add latencies given in nanoseconds (any integer array)."""
        if len(latencies_ns) == 0:
            return
        latencies_us = np.maximum(np.asarray(latencies_ns, dtype=np.int64) // 1000, 0)
        self.count += len(latencies_us)
        self.max_us = max(self.max_us, int(latencies_us.max()))
        inside = latencies_us < self.BINS
        if not inside.all():
            self._overflow_us.append(latencies_us[~inside])
            latencies_us = latencies_us[inside]
        np.add.at(self.counts, latencies_us, 1)   # ~2 ns a value; bincount costs the range

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts
        self._overflow_us.extend(other._overflow_us)
        self.count += other.count
        self.max_us = max(self.max_us, other.max_us)

    def percentiles_us(self, percentiles: tuple[float, ...]) -> list[int]:
        """Nearest-rank percentiles in microseconds; raises ValueError when empty."""
        if self.count == 0:
            raise ValueError("no latencies recorded")
        cumulative = np.cumsum(self.counts)
        inside = int(cumulative[-1])
        overflow = np.sort(np.concatenate(self._overflow_us)) if self._overflow_us else None
        out = []
        for q in percentiles:
            # round() first: 99.9 / 100 * 1000 is 999.0000000000001 in binary floating point
            rank = min(self.count, max(1, math.ceil(round(q / 100 * self.count, 6))))
            if rank <= inside:
                out.append(int(np.searchsorted(cumulative, rank)))
            else:
                out.append(int(overflow[rank - inside - 1]))
        return out

    def summary_us(self) -> dict[str, int] | None:
        """{"p50", "p90", "p95", "p99", "p99.9", "max"} in microseconds, or None if empty."""
        if self.count == 0:
            return None
        values = self.percentiles_us(self.PERCENTILES)
        return {**dict(zip(self.PERCENTILE_NAMES, values)), "max": self.max_us}

    def __getstate__(self) -> dict:
        occupied = np.flatnonzero(self.counts)
        return {"bins": occupied, "counts": self.counts[occupied], "overflow_us": self._overflow_us,
                "count": self.count, "max_us": self.max_us}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.counts[state["bins"]] = state["counts"]
        self._overflow_us = state["overflow_us"]
        self.count, self.max_us = state["count"], state["max_us"]


# --- The three commands (the ``plinth bench`` process) ---------------------------------

def run_produce(config: BenchConfig, progress: bool | None = None) -> BenchReport:
    """Send ``messages`` records (or for ``duration_s``) and time their acknowledgements."""
    config.check("produce")
    topic, partitions = ensure_topic(config)
    with MemoryWatcher(config) as memory:
        results = run_producers(config, topic, _split(config), stamped=False,
                                desc="produce", progress=progress)
    records = sum(r.records for r in results)
    latency = _merged([r.latency for r in results])
    seconds = (max(r.ended_ns for r in results) - min(r.started_ns for r in results)) / 1e9
    return BenchReport("produce", topic, partitions, records, seconds,
                       records * (config.key_bytes + config.value_bytes), latency,
                       _settings(config), errors=sum(r.errors for r in results),
                       memory=memory.summary())


def run_consume(config: BenchConfig, progress: bool | None = None) -> BenchReport:
    """Fill the topic to ``messages`` records if needed (untimed), then time reading them.

    Key and value bytes are counted record by record (about 50 ns each, a
    tenth of the consumer's time) only if the topic held records before;
    records this run wrote have the configured sizes.
    """
    config.check("consume")
    topic, partitions = ensure_topic(config)
    held = records_held(config, topic)
    if held < config.messages:
        run_producers(config, topic, _split(config, config.messages - held), stamped=False,
                      desc="fill (untimed)", progress=progress)
    with MemoryWatcher(config) as memory:
        records, seconds, payload_bytes = read_from_beginning(config, topic, progress,
                                                              count_bytes=held > 0)
    settings = _settings(config)
    return BenchReport("consume", topic, partitions, records, seconds, payload_bytes, None,
                       settings, memory=memory.summary())


def run_e2e(config: BenchConfig, progress: bool | None = None) -> BenchReport:
    """Time each record from send to delivery in a consumer process at the log end.

    The producers keep the Producer's linger (5 ms) unless told otherwise:
    measured here at 10,000 records/s it gives a lower p50 and p99 than
    linger_ms=0, whose one-record requests cost the broker more than the wait.
    """
    config.check("e2e")
    topic, partitions = ensure_topic(config)
    with MemoryWatcher(config) as memory, _E2EConsumer(config, topic) as consumer:
        produced = run_producers(config, topic, _split(config), stamped=True,
                                 desc="e2e", progress=progress)
        sent = sum(r.records - r.errors for r in produced)
        delivered = consumer.result(sent)
    seconds = (delivered.last_delivery_ns - min(r.started_ns for r in produced)) / 1e9
    return BenchReport("e2e", topic, partitions, delivered.records, max(seconds, 1e-9),
                       delivered.records * (config.key_bytes + config.value_bytes),
                       delivered.latency, _settings(config), sent=sent,
                       errors=sum(r.errors for r in produced), memory=memory.summary())


def ensure_topic(config: BenchConfig) -> tuple[str, int]:
    """The topic to use and its partition count; created with ``partitions`` if missing."""
    name = config.topic or f"bench-{secrets.token_hex(4)}"
    with Admin(broker=config.broker, request_timeout_ms=config.request_timeout_ms) as admin:
        try:
            return name, admin.create_topic(name, config.partitions,
                                            replication_factor=config.replication_factor).partitions
        except TopicExistsError:
            count = admin.partition_count(name)
    if count != config.partitions:   # a run on the topic as it is, not as asked: say so
        print(f"note: topic {name} exists with {counted(count, 'partition')}; "
              f"--partitions {config.partitions} is ignored (it is for a topic the bench "
              f"creates)", file=sys.stderr)
    return name, count


def records_held(config: BenchConfig, topic: str) -> int:
    with Admin(broker=config.broker, request_timeout_ms=config.request_timeout_ms) as admin:
        info = admin.describe_topic(topic)
    return sum(p.end_offset - p.start_offset for p in info.partition_info)


def _split(config: BenchConfig, messages: int | None = None) -> list[int | None]:
    """Records per producer process; None each when running for ``duration_s``."""
    if config.duration_s is not None and messages is None:
        return [None] * config.producers
    total = config.messages if messages is None else messages
    share, extra = divmod(total, config.producers)
    return [share + (index < extra) for index in range(config.producers)]


def _merged(histograms: list[LatencyHistogram]) -> LatencyHistogram:
    merged = LatencyHistogram()
    for histogram in histograms:
        merged.merge(histogram)
    return merged


# --- Producer processes -------------------------------------------------------------

@dataclass(frozen=True)
class _ProducerSpec:
    config: BenchConfig
    topic: str
    index: int
    messages: int | None          # None: until config.duration_s has passed
    stamped: bool                 # e2e: each value starts with time.time_ns()


@dataclass
class ProducerResult:
    """What one producer process measured; its clock is CLOCK_MONOTONIC, shared by all processes."""

    index: int
    records: int
    started_ns: int               # time.monotonic_ns() at the first send
    ended_ns: int                 # time.monotonic_ns() when flush() returned
    latency: LatencyHistogram
    errors: int


def run_producers(config: BenchConfig, topic: str, shares: list[int | None], *, stamped: bool,
                  desc: str, progress: bool | None = None) -> list[ProducerResult]:
    """Run one spawned producer process per share; start them together; collect their results.

    The ``plinth bench`` process only supervises: it waits until every
    producer is connected, releases them at once, draws the progress bar and
    raises BenchError if one fails or dies.
    """
    sent_counts = _SPAWN.Array("q", len(shares), lock=False)
    start, messages = _SPAWN.Event(), _SPAWN.Queue()
    processes = [_SPAWN.Process(target=_producer_main, daemon=True,
                                args=(_ProducerSpec(config, topic, index, share, stamped),
                                      sent_counts, start, messages),
                                name=f"plinth-bench-producer-{index}")
                 for index, share in enumerate(shares)]
    for process in processes:
        process.start()
    try:
        _await(messages, processes, "ready", STARTUP_TIMEOUT_S)
        start.set()
        total = None if None in shares else sum(shares)
        with _progress_bar(desc, total, progress) as bar:
            return _await(messages, processes, "done", None, bar, sent_counts)
    finally:
        _stop(processes)


def _await(messages, processes, kind: str, timeout_s: float | None, bar=None,
           sent_counts=None) -> list:
    """One ``kind`` message from every process, in process order; BenchError on failure."""
    got: dict[int, object] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while len(got) < len(processes):
        try:
            message_kind, index, payload = messages.get(timeout=PROGRESS_INTERVAL_S)
        except queue.Empty:
            _check_alive(processes, got, deadline, kind)
        else:
            if message_kind == "failed":
                raise BenchError(f"producer process {index} failed: {payload}")
            got[index] = payload
        if bar is not None:
            bar.update(sum(sent_counts) - bar.n)
    return [got[index] for index in range(len(processes))]


def _check_alive(processes, got: dict, deadline: float | None, kind: str) -> None:
    for index, process in enumerate(processes):
        if index not in got and process.exitcode is not None:
            raise BenchError(f"producer process {index} exited with status {process.exitcode} "
                             f"before it was {kind}")
    if deadline is not None and time.monotonic() > deadline:
        raise BenchError(f"producer processes not {kind} within {STARTUP_TIMEOUT_S:.0f} s")


def _stop(processes) -> None:
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


def _producer_main(spec: _ProducerSpec, sent_counts, start, messages) -> None:
    """Producer process: connect, report ready, wait for the start, send, report the result."""
    try:
        keys = key_pool(spec.config.key_bytes, spec.messages)
        with Producer(**spec.config.producer_options()) as producer:
            producer.partitions_for(spec.topic)   # metadata before the clock starts
            messages.put(("ready", spec.index, None))
            if not start.wait(STARTUP_TIMEOUT_S):
                raise BenchError(f"no start signal within {STARTUP_TIMEOUT_S:.0f} s")
            result = _ProducerRun(producer, spec, keys, sent_counts).run()
        messages.put(("done", spec.index, result))
    except BaseException as exc:   # the parent must hear of it, whatever it is
        messages.put(("failed", spec.index, f"{type(exc).__name__}: {exc}"))


def key_pool(key_bytes: int, messages: int | None) -> list[bytes | None]:
    """Distinct random keys, as many as ``messages`` up to KEY_POOL_SIZE_MAX and
    KEY_POOL_BYTES_MAX in all (at least one); [None] for 0 bytes."""
    if key_bytes == 0:
        return [None]
    count = max(1, min(KEY_POOL_SIZE_MAX, messages or KEY_POOL_SIZE_MAX,
                       KEY_POOL_BYTES_MAX // key_bytes))
    blob = os.urandom(key_bytes * count)
    return [blob[start:start + key_bytes] for start in range(0, len(blob), key_bytes)]


class _AckTimer:
    """Producer process: each record's send time, and its ack latency once its batch is acked.

    The send loop (the process's main thread) appends each record's
    ``perf_counter_ns()`` to an int64 array of the record's batch: an
    ``array("q")``, not a list, so no int object outlives the append and
    drain() reads the array's bytes directly (measured: 50 ns a record to
    drain, against 200 for lists of ints). The sender thread does one thing
    per batch: ``on_ack`` notes the time. ``drain`` (main thread, between
    chunks) turns the acknowledged batches into latencies with a few numpy
    calls; draining on the main thread, not in the callback, means every
    record of a batch has been filed by then. Memory: 8 bytes per record
    not yet drained, bounded by the Producer's buffer_memory.
    """

    def __init__(self) -> None:
        self.batches: dict = {}                     # BatchResult -> array of send perf_counter_ns
        self._acked: deque = deque()                # (BatchResult, ack perf_counter_ns)
        self.latency = LatencyHistogram()
        self.errors = 0

    def file(self, sent_ns: int, batch) -> None:
        """Main thread: a record sent at ``sent_ns`` went into ``batch`` (the slow path)."""
        sent = self.batches.get(batch)
        if sent is None:
            sent = self.batches[batch] = array("q")
            batch.add_done_callback(self.on_ack)
        sent.append(sent_ns)

    def on_ack(self, batch) -> None:
        """Sender thread (or the main thread if the batch was already done)."""
        self._acked.append((batch, time.perf_counter_ns()))

    def drain(self) -> None:
        """Main thread: latencies of every batch acknowledged so far.

        Batches are small when linger sends them (a few hundred records), so
        the numpy calls are made once per drain, not once per batch.
        """
        acked_ns, groups = [], []
        while self._acked:
            batch, ack_ns = self._acked.popleft()
            sent = self.batches.pop(batch)
            if batch.error is not None:
                self.errors += len(sent)
            else:
                acked_ns.append(ack_ns)
                groups.append(sent)
        if groups:
            sent_ns = np.frombuffer(b"".join(groups), dtype=np.int64)
            acks_ns = np.repeat(np.array(acked_ns, dtype=np.int64), [len(g) for g in groups])
            self.latency.record_ns(acks_ns - sent_ns)

    def settle_all(self, timeout_s: float) -> None:
        """Main thread, after flush(): wait for the last callbacks and drain them."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.drain()
            if not self.batches:
                return
            if time.monotonic() > deadline:
                raise PlinthTimeoutError(f"{len(self.batches)} batches still unacknowledged")
            time.sleep(0.001)


class _ProducerRun:
    """Producer process, main thread: the timed send loop of one producer."""

    def __init__(self, producer: Producer, spec: _ProducerSpec, keys: list, sent_counts):
        self.producer = producer
        self.spec = spec
        self.keys = keys
        self.sent_counts = sent_counts
        self.timer = _AckTimer()
        self.value = os.urandom(spec.config.value_bytes)
        rate = spec.config.rate
        self.rate = None if rate is None else rate / spec.config.producers
        self.chunk = CHUNK_RECORDS if self.rate is None else max(1, round(self.rate * PACE_INTERVAL_S))
        if spec.config.one_at_a_time:
            self.chunk = 1   # paced record by record; progress and the clock per record
        self.waited_ns = array("q")   # one_at_a_time: each record's send() to get() returned

    def run(self) -> ProducerResult:
        if self.spec.config.one_at_a_time:
            send_chunk = self._send_one_at_a_time
        else:
            send_chunk = self._send_stamped if self.spec.stamped else self._send_fixed
        started_ns = time.monotonic_ns()
        seq = 0
        while (count := self._next_chunk(seq, started_ns)) > 0:
            self._pace(seq, started_ns)
            send_chunk(seq, count)
            seq += count
            self.timer.drain()
            self.sent_counts[self.spec.index] = seq
        self.producer.flush(FLUSH_TIMEOUT_S)
        ended_ns = time.monotonic_ns()
        self.timer.settle_all(FLUSH_TIMEOUT_S)
        self.timer.latency.record_ns(np.frombuffer(self.waited_ns, dtype=np.int64))
        return ProducerResult(self.spec.index, seq, started_ns, ended_ns,
                              self.timer.latency, self.timer.errors)

    def _next_chunk(self, seq: int, started_ns: int) -> int:
        """Records to send next: 0 when the count is reached or the duration is over."""
        if self.spec.messages is not None:
            return min(self.chunk, self.spec.messages - seq)
        elapsed_s = (time.monotonic_ns() - started_ns) / 1e9
        return self.chunk if elapsed_s < self.spec.config.duration_s else 0

    def _pace(self, seq: int, started_ns: int) -> None:
        """At a fixed rate, sleep until record ``seq`` is due (never if behind)."""
        if self.rate is not None:
            delay_s = started_ns / 1e9 + seq / self.rate - time.monotonic_ns() / 1e9
            if delay_s > 0:
                time.sleep(delay_s)

    def _send_fixed(self, first: int, count: int) -> None:
        """The hot loop: _AckTimer.file inlined, the same value every time."""
        send, topic, value, keys = self.producer.send, self.spec.topic, self.value, self.keys
        now_ns, key_count = time.perf_counter_ns, len(self.keys)
        batches, on_ack = self.timer.batches, self.timer.on_ack
        last = sent = None
        for seq in range(first, first + count):
            sent_ns = now_ns()
            batch = send(topic, value, key=keys[seq % key_count]).batch
            if batch is not last:
                sent = batches.get(batch)
                if sent is None:
                    sent = batches[batch] = array("q")
                    batch.add_done_callback(on_ack)
                last = batch
            sent.append(sent_ns)

    def _send_one_at_a_time(self, first: int, count: int) -> None:
        """Send each record and wait for its acknowledgement before the next one.

        The latency is what an application calling ``send().get()`` sees:
        the linger (use linger_ms=0 for none), the request, the broker's
        fsync and the wake-up of this thread. A failed record counts as an
        error and is not timed. e2e values carry the send time, as in
        _send_stamped.
        """
        send, topic, keys, waited_ns = self.producer.send, self.spec.topic, self.keys, self.waited_ns
        pack, padding, stamped = _STAMP.pack, self.value[_STAMP_BYTES:], self.spec.stamped
        for seq in range(first, first + count):
            value = pack(time.time_ns()) + padding if stamped else self.value
            sent_ns = time.perf_counter_ns()
            try:
                send(topic, value, key=keys[seq % len(keys)]).get(FLUSH_TIMEOUT_S)
            except PlinthError:
                self.timer.errors += 1
                continue
            waited_ns.append(time.perf_counter_ns() - sent_ns)

    def _send_stamped(self, first: int, count: int) -> None:
        """e2e: each value is the wall-clock send time (8 bytes LE) and padding."""
        send, topic, keys, timer = self.producer.send, self.spec.topic, self.keys, self.timer
        pack, padding, key_count = _STAMP.pack, self.value[_STAMP_BYTES:], len(keys)
        for seq in range(first, first + count):
            sent_ns = time.perf_counter_ns()
            future = send(topic, pack(time.time_ns()) + padding, key=keys[seq % key_count])
            timer.file(sent_ns, future.batch)


# --- Consumers -------------------------------------------------------------------------

def read_from_beginning(config: BenchConfig, topic: str, progress: bool | None = None, *,
                        count_bytes: bool = True) -> tuple[int, float, int]:
    """The ``plinth bench`` process: read ``messages`` records from offset 0 of every partition.

    Returns (records, seconds, key + value bytes); without ``count_bytes``
    the bytes are the configured key_bytes + value_bytes per record. The
    clock runs from the first poll to the last record; the consumer is
    connected before it.
    """
    with Consumer(broker=config.broker, request_timeout_ms=config.request_timeout_ms,
                  auto_offset_reset="earliest") as consumer:
        consumer.subscribe([topic])
        consumer.seek_to_beginning()
        records = payload_bytes = 0
        with _progress_bar("consume", config.messages, progress) as bar:
            started = time.perf_counter()
            while records < config.messages:
                polled = consumer.poll(timeout_ms=config.request_timeout_ms,
                                       max_records=min(POLL_RECORDS_MAX, config.messages - records))
                if not polled:
                    raise BenchError(f"no records within {config.request_timeout_ms} ms after "
                                     f"{records} of {config.messages}")
                for batch in polled.values():
                    records += len(batch)
                    payload_bytes += _payload_bytes(batch) if count_bytes else 0
                bar.update(records - bar.n)
            seconds = time.perf_counter() - started
    if not count_bytes:
        payload_bytes = records * (config.key_bytes + config.value_bytes)
    return records, seconds, payload_bytes


def _payload_bytes(records) -> int:
    # A plain loop: the interpreter's specialized loads of ConsumerRecord's
    # fields make it faster than map/filter/attrgetter (about 50 ns a record).
    total = 0
    for record in records:
        total += len(record.key or b"") + len(record.value or b"")
    return total


@dataclass
class Delivered:
    """What the e2e consumer process saw."""

    records: int
    latency: LatencyHistogram
    last_delivery_ns: int          # time.monotonic_ns() of the poll that brought the last record


class _E2EConsumer:
    """The ``plinth bench`` process's handle on the spawned e2e consumer process.

    Entering starts it and returns once its position is at the log end of
    every partition (an Event, not a sleep); ``result(sent)`` waits for it to
    deliver ``sent`` records, or tells it to stop after a grace period.
    """

    def __init__(self, config: BenchConfig, topic: str):
        self.config = config
        self.ready, self.stop, self.out = _SPAWN.Event(), _SPAWN.Event(), _SPAWN.Queue()
        self.expected = _SPAWN.Value("q", config.messages, lock=False)
        self.process = _SPAWN.Process(target=_e2e_consumer_main, daemon=True,
                                      args=(config, topic, self.expected, self.ready,
                                            self.stop, self.out),
                                      name="plinth-bench-e2e-consumer")

    def __enter__(self) -> _E2EConsumer:
        self.process.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.ready.wait(PROGRESS_INTERVAL_S):
            self._check(deadline, "ready")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)

    def result(self, sent: int) -> Delivered:
        """Wait until ``sent`` records are delivered, at most request_timeout_ms more.

        Past that the consumer is told to stop and answers with what it has.
        """
        self.expected.value = sent
        answer = self._answer(time.monotonic() + self.config.request_timeout_ms / 1000)
        if answer is None:
            self.stop.set()
            answer = self._answer(time.monotonic() + STARTUP_TIMEOUT_S)
        if answer is None:
            raise BenchError(f"e2e consumer process did not answer within {STARTUP_TIMEOUT_S:.0f} s "
                             f"of being told to stop")
        kind, payload = answer
        if kind == "failed":
            raise BenchError(f"e2e consumer process failed: {payload}")
        return payload

    def _answer(self, deadline: float) -> tuple | None:
        while time.monotonic() < deadline:
            try:
                return self.out.get(timeout=PROGRESS_INTERVAL_S)
            except queue.Empty:
                self._check(None, "done")
        return None

    def _check(self, deadline: float | None, what: str) -> None:
        if self.process.exitcode is not None:
            raise BenchError(f"e2e consumer process exited with status {self.process.exitcode} "
                             f"before it was {what}")
        if deadline is not None and time.monotonic() > deadline:
            raise BenchError(f"e2e consumer process not {what} within {STARTUP_TIMEOUT_S:.0f} s")


def _e2e_consumer_main(config: BenchConfig, topic: str, expected, ready, stop, out) -> None:
    """e2e consumer process: position at the log end, signal ready, time every delivery."""
    try:
        with Consumer(broker=config.broker, request_timeout_ms=config.request_timeout_ms,
                      auto_offset_reset="latest") as consumer:
            consumer.subscribe([topic])
            for topic_partition in consumer.assignment():
                consumer.position(*topic_partition)   # resolve the log end now, not at first poll
            ready.set()
            out.put(("done", _receive(consumer, config.value_bytes, expected, stop)))
    except BaseException as exc:
        out.put(("failed", f"{type(exc).__name__}: {exc}"))


def _receive(consumer: Consumer, value_bytes: int, expected, stop) -> Delivered:
    """e2e consumer process: poll until ``expected`` records came or ``stop`` is set."""
    latency = LatencyHistogram()
    records, last_delivery_ns = 0, time.monotonic_ns()
    while records < expected.value and not stop.is_set():
        polled = consumer.poll(timeout_ms=100, max_records=POLL_RECORDS_MAX)
        if not polled:
            continue
        delivered_ns, last_delivery_ns = time.time_ns(), time.monotonic_ns()
        for batch in polled.values():
            latency.record_ns(delivered_ns - send_times_ns(batch, value_bytes))
            records += len(batch)
    return Delivered(records, latency, last_delivery_ns)


def send_times_ns(records, value_bytes: int) -> np.ndarray:
    """The time.time_ns() each record's producer wrote into its value's first 8 bytes."""
    values = b"".join(map(_VALUE, records))
    if len(values) == len(records) * value_bytes:   # every value is the bench's: one reshape
        columns = np.frombuffer(values, dtype=np.uint8).reshape(len(records), value_bytes)
        return np.ascontiguousarray(columns[:, :_STAMP_BYTES]).view("<i8").ravel()
    return np.array([_STAMP.unpack_from(record.value)[0] for record in records], dtype=np.int64)


# --- Progress and broker memory -------------------------------------------------------

def _progress_bar(desc: str, total: int | None, enabled: bool | None) -> tqdm:
    """A tqdm bar on stderr; ``enabled=None`` shows it only when stderr is a terminal."""
    return tqdm(desc=desc, total=total, unit="rec", unit_scale=True, file=sys.stderr,
                disable=None if enabled is None else not enabled, leave=False,
                mininterval=PROGRESS_INTERVAL_S)


class MemoryWatcher:
    """The ``plinth bench`` process, a thread: RSS of the local broker's processes.

    Broker processes are those whose command line contains ``plinth serve``
    or ``plinth.cli serve``, or starts with ``ray::ShardActor`` or
    ``ray::Controller``. If the process listening on the broker's port is
    one of them, only it and its descendants count (another broker on the
    same machine is left out). Samples at entry, every ``memory_interval_s``
    and at exit; does nothing unless ``watch_memory`` is set.
    """

    def __init__(self, config: BenchConfig):
        self.enabled = config.watch_memory
        self.interval_s = config.memory_interval_s
        self.port = _port_of(config.broker)
        self.samples: dict[int, list[int]] = {}     # pid -> RSS bytes, in sample order
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plinth-bench-memory", daemon=True)

    def __enter__(self) -> MemoryWatcher:
        if self.enabled:
            self.sample()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for pid, name in broker_processes(self.port).items():
            rss_bytes = _rss_bytes(pid)
            if rss_bytes is not None:
                self.samples.setdefault(pid, []).append(rss_bytes)
                self.names.setdefault(pid, name)

    def summary(self) -> list[dict]:
        """Per process: pid, name, samples, and first/min/max/last RSS in MiB."""
        mib = 1 << 20
        return [{"pid": pid, "process": self.names[pid], "samples": len(rss),
                 "first_mib": round(rss[0] / mib, 1), "min_mib": round(min(rss) / mib, 1),
                 "max_mib": round(max(rss) / mib, 1), "last_mib": round(rss[-1] / mib, 1)}
                for pid, rss in sorted(self.samples.items())]


def broker_processes(port: int | None = None) -> dict[int, str]:
    """{pid: short name} of the local broker processes (see MemoryWatcher)."""
    found, parents = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        parents[pid] = _parent_pid(pid)
        name = _broker_process_name(_read_cmdline(pid))
        if name is not None:
            found[pid] = name
    listeners = _listening_pids(port) & set(found) if port else set()
    if not listeners:
        return found
    return {pid: name for pid, name in found.items() if _descends(pid, listeners, parents)}


def _broker_process_name(cmdline: str) -> str | None:
    if "plinth serve" in cmdline or "plinth.cli serve" in cmdline:
        return "plinth serve"
    for actor in ("ray::ShardActor", "ray::Controller"):
        if cmdline.startswith(actor):
            return actor
    return None


def _read_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])   # field 4, after "(comm)"
    except (OSError, IndexError, ValueError):
        return None


def _descends(pid: int | None, ancestors: set[int], parents: dict) -> bool:
    for _ in range(64):   # bounded: a process tree is never this deep
        if pid in ancestors:
            return True
        pid = parents.get(pid)
        if pid is None:
            return False
    return False


def _listening_pids(port: int) -> set[int]:
    """Pids holding a TCP socket that listens on ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = [line.split() for line in f.readlines()[1:]]
        except OSError:
            continue
        inodes |= {row[9] for row in rows
                   if row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port}
    pids = set()
    for entry in os.scandir("/proc") if inodes else ():
        if entry.name.isdigit() and _holds_socket(entry.name, inodes):
            pids.add(int(entry.name))
    return pids


def _holds_socket(pid: str, inodes: set[str]) -> bool:
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            link = os.readlink(fd.path)
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def _port_of(broker) -> int | None:
    url = getattr(broker, "url", broker) or os.environ.get("PLINTH_BROKER") or limits.BROKER_URL_DEFAULT
    try:
        return int(url.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _format_memory(memory: list[dict]) -> list[str]:
    if not memory:
        return []
    header = (f"{'pid':>8}  {'process':<16} {'samples':>7} "
              f"{'first':>8} {'min':>8} {'max':>8} {'last':>8}")
    lines = ["broker memory (RSS MiB)", header]
    lines += [f"{m['pid']:>8}  {m['process']:<16} {m['samples']:>7} {m['first_mib']:>8.1f} "
              f"{m['min_mib']:>8.1f} {m['max_mib']:>8.1f} {m['last_mib']:>8.1f}" for m in memory]
    return lines
