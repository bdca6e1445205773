"""Producer: send records to topics; batches per partition in the background.

Client side, in the conventions of kafka-python and aiokafka: keyword-only
options named with their units. ``send`` may be called from any thread; it
never touches a socket. The accumulator batches records per partition and
the sender thread ships the batches (see accumulator.py and sender.py).

    with Producer(broker="tcp://127.0.0.1:7400", linger_ms=5) as producer:
        future = producer.send("orders", b"hello", key=b"customer-1")
        print(future.get(timeout=10))   # RecordMetadata(topic, partition, offset)

Acknowledgements (``acks``, Kafka's option): "all" (the default, as in Kafka
3.0+; -1 on the wire) waits until every in-sync replica of the partition has
the batch durably; 1 until its leader has; 0 for nothing. With fewer in-sync
replicas than the topic's min.insync.replicas, an "all" batch is refused
(NotEnoughReplicasError) and retried until ``delivery_timeout_ms``.

Retries: a batch refused for a passing reason (such as a shard that no longer
leads its partition, or is restarting; too few in-sync replicas; no reply
within ``request_timeout_ms``) is retried, after a backoff from
``retry_backoff_ms`` doubling up to ``retry_backoff_max_ms``, until
``delivery_timeout_ms`` after it was created; then it fails with
PlinthTimeoutError naming its attempts and the last error (client/sender.py).
Any other error fails it at once.

Idempotence (``enable_idempotence``, Kafka's option and rule): each batch carries
a producer id and sequence number, so that a retry is never stored twice, nor
after a later batch of its partition. None (the default) means on with
acks="all" and off with acks=0 or 1, as Kafka's producer turns it off when the
user did not set it; True with acks=0 or 1 is refused (ValueError), as Kafka and
aiokafka refuse it. Without idempotence batches are retried all the same (as
Kafka's are), but the shard cannot tell a retry from a new batch: one whose
reply was lost may be stored twice, and, with several requests in flight, a
retry may be stored after a later batch of the same partition.
``max_in_flight_requests_per_connection=1`` keeps each partition's order
(Kafka's advice too), at the cost of one request at a time. With acks=0 a
record's future completes once its batch is sent (offset -1) and only a send that
fails (no router reachable) is retried; the batch's request still waits in the
window of requests in flight until the shard has stored it, so a fast acks=0
producer is held back to what the shards store, and ``flush`` waits for those
answers too (client/sender.py).

Partitioning: an explicit ``partition`` wins; else a key is hashed with
Kafka's murmur2 (same partition number as Kafka's default partitioner);
else records go to a sticky partition that changes with each batch.
"""

from __future__ import annotations

import logging
import threading
import time

from plinth import limits
from plinth.client._producer import ProducerBase
from plinth.client.accumulator import RecordAccumulator
from plinth.client.admin import Admin
from plinth.client.arguments import (checked_bool, checked_callable, checked_int, checked_ms,
                                     checked_wait_s)
from plinth.client.compression import codec_for
from plinth.client.connection import broker_address
from plinth.client.futures import RecordFuture
from plinth.client.kafka_option_names import kafka_option_names
from plinth.client.partition_counts import PartitionCounts
from plinth.client.sender import Sender
from plinth.errors import ClosedError, PartitionOutOfRangeError, PlinthError, PlinthTimeoutError
from plinth.format.record_batch import checked_headers

log = logging.getLogger(__name__)


def _as_bytes(data, what: str) -> bytes | None:
    """A key or value as bytes or None; TypeError for anything else."""
    if data is None or type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or None (or set {what}_serializer), "
                    f"got {type(data).__name__}")


def _serialized(data, what: str):
    """What ``what``_serializer returned, if bytes or None; TypeError naming the
    serializer otherwise (_as_bytes would ask to set the serializer that is set)."""
    if data is None or isinstance(data, (bytes, bytearray, memoryview)):
        return data
    raise TypeError(f"{what}_serializer returned {type(data).__name__}: it must return bytes "
                    f"(or None)")


def _as_int(number, what: str) -> int | None:
    """A partition or timestamp as an int or None; TypeError for anything else, a bool
    included (True is not partition 1, as elect_leaders says too)."""
    if number is None or type(number) is int:
        return number
    if isinstance(number, int) and not isinstance(number, bool):
        return int(number)
    raise TypeError(f"{what} must be an int or None, got {type(number).__name__}")


def _as_topic(topic) -> str:
    if type(topic) is str:
        return topic
    if isinstance(topic, str):
        return str(topic)
    raise TypeError(f"topic must be a str, got {type(topic).__name__}")


def _wire_acks(acks) -> int:
    """The wire's acks for Kafka's option: 0 (no reply), 1 (the leader has it durably),
    "all" or -1 (every in-sync replica has it durably: the default, as in Kafka 3.0+)."""
    if acks == "all" or (type(acks) is int and acks in (-1, 0, 1)):
        return -1 if acks == "all" else acks
    raise ValueError(f"acks={acks!r} is not one of the choices: 0, 1, 'all' (or -1, the same "
                     f"as 'all')")


def _idempotence(enable_idempotence, acks: int) -> bool:
    """Whether the producer is idempotent, by Kafka's rule (its ProducerConfig) for
    ``enable_idempotence`` and the wire's ``acks``: None (not set) is on with acks="all"
    and off otherwise (logged, as Kafka logs it); an explicit True with acks=0 or 1 is
    refused, naming both (Kafka raises ConfigException, aiokafka ValueError).

    Kafka's other conflicts have no counterpart here: Plinth has no ``retries`` (a
    batch is retried until ``delivery_timeout_ms``), and
    ``max_in_flight_requests_per_connection`` counts the requests of every partition,
    while an idempotent partition keeps its own at most
    PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX (5, Kafka's bound) whatever it is."""
    if enable_idempotence is not None and not isinstance(enable_idempotence, bool):
        raise TypeError(f"enable_idempotence must be True, False or None (on unless acks is "
                        f"not 'all'), got {enable_idempotence!r} "
                        f"({type(enable_idempotence).__name__})")
    if acks == -1:
        return enable_idempotence is not False
    if enable_idempotence:
        raise ValueError(f"enable_idempotence=True needs acks='all' (got acks={acks}), as in "
                         f"Kafka: a retry is safe only once every in-sync replica has the "
                         f"batches before it; pass acks='all', or enable_idempotence=False (or "
                         f"leave it unset) to send with acks={acks}")
    if enable_idempotence is None:
        log.info("enable_idempotence is off: acks=%d is not 'all' (a retried batch may be "
                 "stored twice, or after a later one)", acks)
    return False


def checked_options(acks, compression_type, *, enable_idempotence: bool | None,
                    batch_bytes_max: int, linger_ms: float, buffer_memory: int,
                    max_block_ms: float, request_timeout_ms: float,
                    max_in_flight_requests_per_connection: int, delivery_timeout_ms: float,
                    retry_backoff_ms: float, retry_backoff_max_ms: float,
                    direct_to_shards: bool, metadata_max_age_ms: float
                    ) -> tuple[int, int | None, bool]:
    """The wire's acks, the compression codec and whether the producer is idempotent;
    TypeError or ValueError naming an option of the wrong type or out of range, or
    (ValueError) enable_idempotence=True with acks 0 or 1 (Producer's and
    AIOProducer's options, checked alike, before anything is built). Any thread."""
    acks = _wire_acks(acks)
    codec = codec_for(compression_type)
    checked_int("batch_bytes_max", batch_bytes_max, 1, limits.BATCH_BYTES_MAX)
    checked_int("buffer_memory", buffer_memory, 1, limits.PRODUCER_BUFFER_BYTES_MAX)
    checked_int("max_in_flight_requests_per_connection", max_in_flight_requests_per_connection,
                1, limits.PRODUCER_REQUESTS_IN_FLIGHT_MAX)
    checked_ms("linger_ms", linger_ms, 0)
    checked_ms("max_block_ms", max_block_ms, 0)
    # 0 ms would time every request out at once ("within 1 ms").
    checked_ms("request_timeout_ms", request_timeout_ms, 1)
    checked_ms("delivery_timeout_ms", delivery_timeout_ms, 1)
    checked_ms("retry_backoff_ms", retry_backoff_ms, 0)
    checked_ms("retry_backoff_max_ms", retry_backoff_max_ms, 0)
    checked_bool("direct_to_shards", direct_to_shards)
    checked_ms("metadata_max_age_ms", metadata_max_age_ms, 0)
    # Kafka's rule: a batch may linger, then wait one request, within its delivery time.
    if delivery_timeout_ms < linger_ms + request_timeout_ms:
        raise ValueError(f"delivery_timeout_ms={delivery_timeout_ms} must be at least "
                         f"linger_ms={linger_ms} + request_timeout_ms={request_timeout_ms}")
    # Last: it logs when it turns idempotence off, which a refused option makes moot.
    return acks, codec, _idempotence(enable_idempotence, acks)


def checked_serializers(key_serializer, value_serializer) -> tuple:
    """The producers' serializers, each a callable or None (TypeError naming it)."""
    return (checked_callable("key_serializer", key_serializer,
                             "a callable turning a key into bytes"),
            checked_callable("value_serializer", value_serializer,
                             "a callable turning a value into bytes"))


class RecordSending(ProducerBase):
    """What ``send`` does with a record until it is in a batch, shared by Producer and
    the asyncio producer (client/aio/producer.py): serializers, the C fast path, the
    checks of the slow path, the accumulator. Never waits on the network: the
    partition count comes from ``partitions_for``, which the asyncio producer
    answers from what it learnt before (it awaits an unknown topic's count first).

    Needs ``_key_serializer``, ``_value_serializer``, ``_append_fast``,
    ``_accumulator``, ``_closed``, ``partitions_for(topic)`` and
    ``_asked_again(topic)``."""

    # send(topic, value=None, *, key=None, partition=None, headers=None,
    # timestamp_ms=None) -> RecordFuture is ProducerBase.send, in C: the
    # per-record hot path. It appends a record of plain bytes without headers
    # to an open batch with room in one C call, and hands every other call to
    # _send, which is what send means.

    def _send(self, topic: str, value=None, *, key=None, partition: int | None = None,
              headers: list[tuple[str, bytes | None]] | None = None,
              timestamp_ms: int | None = None) -> RecordFuture:
        """Queue one record; returns a future for its RecordMetadata. Any thread.

        Everything send() does; send() calls it for what its C fast path does
        not take (and so does nothing twice: the fast path changes nothing
        when it declines). Serializers, then the same fast path, then the
        accumulator's slow path.
        """
        if self._key_serializer is not None and key is not None:
            key = _serialized(self._key_serializer(key), "key")
        if self._value_serializer is not None and value is not None:
            value = _serialized(self._value_serializer(value), "value")
        if headers is None:
            future = self._append_fast(topic, value, key, partition, timestamp_ms)
            if future is not None:
                return future
        return self._send_slow(topic, value, key, partition, headers, timestamp_ms)

    def _send_slow(self, topic: str, value, key, partition: int | None, headers,
                   timestamp_ms: int | None) -> RecordFuture:
        """send() for what the C fast path does not take (see client/_producer.c).

        Every argument is checked and made its plain type before anything
        changes, so a refused call leaves no trace; where the record goes and
        whether it fits is C's decision (Appender.add, via the accumulator).
        """
        if self._closed:
            raise ClosedError("producer is closed")
        topic = _as_topic(topic)
        key = _as_bytes(key, "key")
        value = _as_bytes(value, "value")
        partition = _as_int(partition, "partition")
        timestamp_ms = _as_int(timestamp_ms, "timestamp_ms")
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        elif -(2**63) <= timestamp_ms < 0:   # (outside Int64: add()'s OverflowError)
            # A rule of the batch: refused here, it cannot fail the records batched with it.
            raise ValueError(f"timestamp_ms {timestamp_ms} is negative; a record's timestamp "
                             f"is ms since the epoch, 0 or more")
        entries, headers_bytes = checked_headers(headers) if headers is not None else ((), 0)
        self.partitions_for(topic)
        try:
            return self._accumulator.append(topic, partition, key, value, timestamp_ms,
                                            entries, headers_bytes)
        except PartitionOutOfRangeError:
            # A partition beyond the count known: the topic may have grown since. As
            # Kafka's send waits for metadata that has the partition, ask again (when
            # allowed: client/partition_counts.py) and place the record once more.
            if partition < 0 or not self._asked_again(topic):
                raise
            return self._accumulator.append(topic, partition, key, value, timestamp_ms,
                                            entries, headers_bytes)


@kafka_option_names
class Producer(RecordSending):
    def __init__(self, *, broker: str | None = None,
                 bootstrap_servers: str | list[str] | None = None, acks: int | str = "all",
                 linger_ms: float = limits.PRODUCER_LINGER_MS_DEFAULT,
                 batch_bytes_max: int = limits.PRODUCER_BATCH_BYTES_DEFAULT,
                 buffer_memory: int = limits.PRODUCER_BUFFER_BYTES_MAX,
                 max_block_ms: float = limits.PRODUCER_MAX_BLOCK_MS_DEFAULT,
                 request_timeout_ms: float = limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT,
                 max_in_flight_requests_per_connection: int = limits.PRODUCER_REQUESTS_IN_FLIGHT_MAX,
                 enable_idempotence: bool | None = None,
                 delivery_timeout_ms: float = limits.PRODUCER_DELIVERY_TIMEOUT_MS_DEFAULT,
                 retry_backoff_ms: float = limits.PRODUCER_RETRY_BACKOFF_MS_DEFAULT,
                 retry_backoff_max_ms: float = limits.PRODUCER_RETRY_BACKOFF_MAX_MS_DEFAULT,
                 key_serializer=None, value_serializer=None,
                 curve_key_file: str | None = None, curve_server_key_file: str | None = None,
                 direct_to_shards: bool = True, compression_type: str | None = None,
                 metadata_max_age_ms: float = limits.PRODUCER_METADATA_MAX_AGE_MS_DEFAULT):
        """``direct_to_shards`` (Kafka has no such option: its clients always talk to the
        partition leader): send batches straight to the leader shard's direct socket
        where the broker offers one (a plaintext broker on loopback), skipping the
        router hop; False sends everything through the router.

        ``metadata_max_age_ms`` (Kafka's metadata.max.age.ms, 300000 by default): a
        topic's partition count is asked again when it is this old, so that a topic that
        grew gets records in its new partitions; it is also asked again once a batch is
        refused because its partition does not exist (client/partition_counts.py).

        ``compression_type`` (Kafka's option): "gzip", "snappy", "lz4" or "zstd"
        sends each batch as a Kafka RecordBatch of that compression, which the shard
        stores as sent and every consumer reads (client/compression.py); None (the
        default) sends uncompressed Plinth batches.

        ``enable_idempotence`` (Kafka's option): None (the default) is on with
        acks="all", off with acks=0 or 1; True with acks=0 or 1 raises ValueError.
        Idempotent or not, a batch refused for a passing reason is retried until
        ``delivery_timeout_ms``; without idempotence a retry may be stored twice, or
        after a later batch of its partition unless
        ``max_in_flight_requests_per_connection`` is 1, as in Kafka (see the
        module's docstring). Any thread."""
        acks, codec, idempotent = checked_options(
            acks, compression_type, enable_idempotence=enable_idempotence,
            batch_bytes_max=batch_bytes_max, linger_ms=linger_ms,
            buffer_memory=buffer_memory, max_block_ms=max_block_ms,
            request_timeout_ms=request_timeout_ms,
            max_in_flight_requests_per_connection=max_in_flight_requests_per_connection,
            delivery_timeout_ms=delivery_timeout_ms, retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms, direct_to_shards=direct_to_shards,
            metadata_max_age_ms=metadata_max_age_ms)
        self._key_serializer, self._value_serializer = checked_serializers(key_serializer,
                                                                           value_serializer)
        address = broker_address(broker, curve_key_file, curve_server_key_file,
                                 bootstrap_servers)
        # Held while asking a topic's partition count: one question at a time.
        self._admin_lock = threading.Lock()
        # Its one call, a topic's partition count, blocks send(): bounded by
        # max_block_ms too, as Kafka bounds send()'s wait for metadata (at least the
        # 1 ms an Admin takes: max_block_ms=0 still asks once).
        self._admin = Admin(broker=address,
                            request_timeout_ms=max(1, min(request_timeout_ms, max_block_ms)))
        try:
            self._sender = Sender(
                address, acks, request_timeout_ms=request_timeout_ms,
                in_flight_max=max_in_flight_requests_per_connection,
                idempotent=idempotent, delivery_timeout_ms=delivery_timeout_ms,
                retry_backoff_ms=retry_backoff_ms, retry_backoff_max_ms=retry_backoff_max_ms,
                direct_to_shards=direct_to_shards, compression=codec)
        except BaseException:   # leave no socket open
            self._admin.close()
            raise
        try:
            self._accumulator = RecordAccumulator(
                batch_bytes_max=batch_bytes_max, linger_ms=linger_ms,
                buffer_bytes_max=buffer_memory, max_block_ms=max_block_ms, wake=self._sender.wake)
        except BaseException:
            self._sender.close(0)
            self._admin.close()
            raise
        self._counts = PartitionCounts(self._accumulator,
                                       metadata_max_age_ms=metadata_max_age_ms)
        self._sender.partition_counts = self._counts
        self._append_fast = self._accumulator.append_fast
        has_serializers = key_serializer is not None or value_serializer is not None
        self._set_fast_path(None if has_serializers else self._accumulator.appender)
        self._sender.start(self._accumulator)
        self._closed = False

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def partitions_for(self, topic: str) -> int:
        """The topic's partition count, asked of the broker at the first send to it and
        again when due (client/partition_counts.py: a partition found missing, or
        ``metadata_max_age_ms``), waiting at most max_block_ms (and
        request_timeout_ms) for it. Any thread; one question at a time. ClosedError once
        the producer is closed: its admin is closed, and a closed producer asks the
        broker nothing."""
        if self._closed:
            raise ClosedError("producer is closed")
        counts = self._counts
        if counts.due(topic):
            with self._admin_lock:
                if counts.due(topic):   # (another thread may have asked meanwhile)
                    try:
                        count = self._admin.partition_count(topic)
                    except PlinthError as exc:
                        counts.not_learned(topic, exc)
                    else:
                        counts.learned(topic, count)
        return counts.known(topic)

    def _asked_again(self, topic: str) -> bool:
        """A send named a partition beyond the topic's count known: whether the count was
        asked again now (not if it was asked less than PRODUCER_METADATA_REFRESH_MS_MIN
        ago). Any thread."""
        self._counts.missing(topic)
        if not self._counts.due(topic):
            return False
        self.partitions_for(topic)
        return True

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued and wait for every acknowledgement (or error);
        PlinthTimeoutError after ``timeout`` seconds (None: no limit). With acks=0 too:
        the records' futures complete once sent, and the flush waits until the shards
        have answered every request sent (or it had no answer within
        request_timeout_ms), as Kafka's flush waits for its requests. Any thread;
        ClosedError once the producer is closed (its sender is gone: nothing would
        send, and close() already waited for what it could)."""
        timeout = checked_wait_s("flush timeout", timeout)
        if self._closed:
            raise ClosedError("producer is closed: flush() has nothing to send with")
        self._flush(timeout)

    def _flush(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = self._accumulator.begin_flush()
        try:
            for result in pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not result.wait(remaining):
                    raise PlinthTimeoutError(f"flush did not finish within {timeout} s")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._sender.wait_acks0_answered(remaining):
                raise PlinthTimeoutError(f"flush did not finish within {timeout} s: acks=0 "
                                         f"requests sent still await the shards' answer")
        finally:
            self._accumulator.end_flush()

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the sender thread, within ``timeout`` seconds in all (None:
        until done); records still unacknowledged then fail with ClosedError. If records
        failed meanwhile (those too, or out of delivery_timeout_ms), one WARNING says how
        many and why; each record's future raises its own error."""
        timeout = checked_wait_s("close timeout", timeout)
        if self._closed:
            return
        self._closed = True
        deadline_s = None if timeout is None else time.monotonic() + timeout
        self._accumulator.refuse_appends()
        self._sender.begin_close()   # what fails from now on is logged as it ends
        try:
            self._flush(timeout)
        except PlinthTimeoutError:
            pass   # what is left fails below, in the sender
        finally:
            # The flush's time is the close's: what is left of it, not another timeout.
            self._sender.close(None if deadline_s is None
                               else max(0.0, deadline_s - time.monotonic()))
            self._admin.close()
