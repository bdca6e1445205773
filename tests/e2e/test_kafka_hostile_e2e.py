"""Hostile input on the Kafka listener of a real ``plinth serve --kafka-listen`` (issue 15).

Random, truncated and oversized frames, API versions the broker does not serve,
a 2 GB declared length, and junk inside frames that decode: produce requests
whose record batches are truncated, bit-flipped, lie about their record count
or are not Kafka batches at all, topic and client names that are not UTF-8,
array counts of two billion. Each gets a clean error (a response that decodes,
with a non-zero error code where a record was refused) or a closed connection,
within WAIT_S: a hang is a failure. After every case the broker still answers
ApiVersions on a new connection, and at the end of the module a real client
(kafka-python) produces and consumes on the same broker. The same style as
tests/faults/test_hostile_input.py, against the whole broker rather than one
shard: the listener, the gateway, the handlers, the backend and the shards.
"""

from __future__ import annotations

import random
import socket
import struct
import urllib.request
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from plinth.client.admin import Admin
from plinth.router.kafka import codec
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.messages import (API_VERSIONS, CREATE_PARTITIONS, CREATE_TOPICS,
                                          DELETE_RECORDS, FETCH, LIST_OFFSETS, METADATA,
                                          OFFSET_COMMIT, PRODUCE)
from tests.conftest import Broker
from tests.support import free_port, unique_topic

WAIT_S = 15.0          # the bound on every wait for a reply or a close
PRODUCE_VERSION = 9    # flexible: compact strings and arrays (unsigned varint counts)
TRIED = {"frames": 0, "answered": 0, "closed": 0}


@pytest.fixture(scope="module")
def kafka_broker(ray_cluster, tmp_path_factory):
    port, metrics_port = free_port(), free_port()
    broker = Broker(tmp_path_factory.mktemp("kafka-hostile"), ray_cluster, shards=2,
                    extra_args=("--kafka-listen", f"127.0.0.1:{port}",
                                "--metrics-port", str(metrics_port)))
    broker.metrics_port = metrics_port
    broker.kafka_host_port = ("127.0.0.1", port)
    broker.kafka_address = f"127.0.0.1:{port}"
    broker.start()
    yield broker
    print(f"hostile Kafka frames tried: {TRIED}")
    broker.stop()


@pytest.fixture(scope="module")
def topic(kafka_broker) -> str:
    name = unique_topic("hostile")
    with Admin(broker=kafka_broker.url) as admin:
        admin.create_topic(name, partitions=1)
    return name


# --- the raw socket side -------------------------------------------------------------

def connect(address) -> socket.socket:
    sock = socket.create_connection(address, timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def read_exactly(sock: socket.socket, count: int) -> bytes | None:
    """``count`` bytes, or None if the broker closed the connection first.
    A socket.timeout (WAIT_S without a byte) propagates: a hang fails the test."""
    data = b""
    while len(data) < count:
        try:
            chunk = sock.recv(count - len(data))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def outcome(address, frame: bytes, hang_up: bool = False) -> tuple[str, bytes | None]:
    """Send one frame on a new connection: ("answered", response) or ("closed", None).
    ``hang_up`` half-closes after sending (a frame shorter than its declared size
    then ends at EOF). Raises socket.timeout if neither happens within WAIT_S."""
    TRIED["frames"] += 1
    with connect(address) as sock:
        try:
            sock.sendall(frame)
            if hang_up:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            TRIED["closed"] += 1
            return "closed", None
        size = read_exactly(sock, 4)
        if size is None:
            TRIED["closed"] += 1
            return "closed", None
        body = read_exactly(sock, struct.unpack(">i", size)[0])
        assert body is not None, "a response was cut short"
        TRIED["answered"] += 1
        return "answered", body


def request(api, version: int, correlation_id: int, body: dict, client_id="hostile") -> bytes:
    return b"".join(bytes(b) for b in codec.encode_request(
        codec.RequestHeader(api.key, version, correlation_id, client_id), body))


def still_serves(address) -> bool:
    with connect(address) as sock:
        sock.sendall(request(API_VERSIONS, 3, 99, {"client_software_name": "probe"}))
        size = read_exactly(sock, 4)
        assert size is not None, "ApiVersions on a fresh connection was closed"
        correlation_id, body = codec.decode_response(
            API_VERSIONS.key, 3, read_exactly(sock, struct.unpack(">i", size)[0]))
    return correlation_id == 99 and body["error_code"] == 0


def assert_clean(address, frame: bytes, hang_up: bool = False) -> tuple[str, bytes | None]:
    result = outcome(address, frame, hang_up)
    assert still_serves(address)
    return result


# --- frames --------------------------------------------------------------------------

def good_batch(count: int = 3) -> bytes:
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i in range(count):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i,
                       value=b"value-%d" % i, headers=[("h", b"x")])
    return bytes(builder.build())


def produce_frame(topic: str, records: bytes | None, correlation_id: int = 7) -> bytes:
    return request(PRODUCE, PRODUCE_VERSION, correlation_id, {
        "transactional_id": None, "acks": -1, "timeout_ms": 5_000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": records}]}]})


def produce_errors(response: bytes) -> list[int]:
    _, body = codec.decode_response(PRODUCE.key, PRODUCE_VERSION, response)
    return [p["error_code"] for t in body["responses"] for p in t["partition_responses"]]


def mutated_batches(rng: random.Random, batch: bytes) -> list[bytes]:
    """Truncations, bit flips (inside and outside the CRC), a lying record count,
    a batch length beyond the bytes sent, a wrong magic."""
    out = [batch[:rng.randrange(1, len(batch))] for _ in range(3)]
    for _ in range(4):
        flipped = bytearray(batch)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        out.append(bytes(flipped))
    lying = bytearray(batch)
    lying[57:61] = struct.pack(">i", 0x7FFF_FFFF)   # records count (covered by the CRC)
    out.append(bytes(lying))
    long = bytearray(batch)
    long[8:12] = struct.pack(">i", 0x7FFF_0000)     # batchLength far beyond the bytes sent
    out.append(bytes(long))
    magic = bytearray(batch)
    magic[16] = 1
    out.append(bytes(magic))
    return out


# --- the cases -----------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    struct.pack(">i", 0x7FFF_FFFF),                                  # 2 GB declared
    struct.pack(">i", 0x7FFF_FFFF) + b"\0" * 4096,                   # ... and bytes after it
    struct.pack(">i", 100 * 1024 * 1024 + 1),                        # one byte over the limit
    struct.pack(">i", -1),
    struct.pack(">i", 0),
    struct.pack(">i", 4) + b"\xde\xad\xbe\xef",
    struct.pack(">i", 10) + struct.pack(">hhih", METADATA.key, 99, 1, 0),   # Metadata v99
    struct.pack(">i", 10) + struct.pack(">hhih", PRODUCE.key, -1, 1, 0),    # negative version
    struct.pack(">i", 10) + struct.pack(">hhih", 31_999, 0, 1, 0),          # unknown API key
    struct.pack(">i", 10) + struct.pack(">hhih", 17, 1, 1, 0),              # SaslHandshake
], ids=["2GB", "2GB-with-bytes", "over-limit", "negative", "empty", "garbage",
        "metadata-v99", "produce-v-1", "unknown-api", "sasl-handshake"])
def test_a_malformed_frame_closes_its_connection_and_the_broker_keeps_serving(kafka_broker, frame):
    # Given a broker; when a frame that cannot be served arrives
    result, _ = assert_clean(kafka_broker.kafka_host_port, frame)
    # Then its connection is closed (no response is owed for an unknown version)
    assert result == "closed"


def test_api_versions_in_a_version_too_new_gets_the_v0_answer_with_unsupported_version(
        kafka_broker):
    frame = struct.pack(">i", 10) + struct.pack(">hhih", API_VERSIONS.key, 77, 3, 0)
    result, response = assert_clean(kafka_broker.kafka_host_port, frame)
    assert result == "answered"
    correlation_id, body = codec.decode_response(API_VERSIONS.key, 0, response)
    assert correlation_id == 3 and body["error_code"] == 35   # UNSUPPORTED_VERSION


def test_every_truncation_of_a_valid_produce_request_is_closed_without_a_hang(
        kafka_broker, topic):
    frame = produce_frame(topic, good_batch())
    size = len(frame) - 4
    for cut in sorted({5, 8, 12, 20, size // 2, size - 1}):
        # A shorter frame whose size says so: the request ends inside a field.
        truncated = struct.pack(">i", cut) + frame[4:4 + cut]
        assert assert_clean(kafka_broker.kafka_host_port, truncated)[0] == "closed"
    # A frame that declares its full size but stops: the broker waits for the rest
    # until the client hangs up, then closes.
    assert assert_clean(kafka_broker.kafka_host_port, frame[:size // 2], hang_up=True)[0] == "closed"


def outside_the_crc(good: bytes, records: bytes) -> bool:
    """True if ``records`` differs from ``good`` only in the baseOffset (bytes 0..8) or
    the partitionLeaderEpoch (12..16): fields the shard overwrites, outside the CRC."""
    if len(records) != len(good):
        return False
    return all(a == b for i, (a, b) in enumerate(zip(good, records))
               if not (0 <= i < 8 or 12 <= i < 16))


def test_a_produce_of_broken_record_batches_is_refused_per_partition_and_nothing_is_stored(
        kafka_broker, topic):
    from kafka import KafkaConsumer, TopicPartition

    # Given a valid batch of 3 records and broken versions of it
    good = good_batch()
    accepted = 0
    for records in mutated_batches(random.Random(15), good) + [b"\0" * 61, b"not a batch"]:
        # When each is produced in a request that decodes
        result, response = assert_clean(kafka_broker.kafka_host_port,
                                        produce_frame(topic, records))
        # Then it is refused with an error code, unless only an overwritten field changed
        if result == "answered":
            [error] = produce_errors(response)
            assert error != 0 or outside_the_crc(good, records), records.hex()
            accepted += error == 0
    # And the partition holds exactly the records of the accepted batches, all intact
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_address,
                             enable_auto_commit=False, consumer_timeout_ms=3_000)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    stored = [r.value for r in consumer]
    consumer.close()
    assert stored == [b"value-%d" % i for i in range(3)] * accepted


def test_names_that_are_not_utf8_and_array_counts_of_two_billion_are_refused_cleanly(
        kafka_broker, topic):
    good = produce_frame(topic, good_batch(), correlation_id=0x0A0B0C0D)
    name = topic.encode()
    at = good.index(name)
    bad_name = good[:at] + b"\xff\xfe" + good[at + 2:]                  # same length, not UTF-8
    header_end = 4 + 2 + 2 + 4 + 2 + len(b"hostile") + 1                # size, key, version, id, client id, tags
    body = good[header_end:]
    # Produce v9's body: transactional_id (compact string, null = 0), acks, timeout,
    # then topic_data's count as an unsigned varint (count + 1): here 2**31.
    huge_topics = (good[:header_end] + body[:1 + 2 + 4]
                   + bytes([0x81, 0x80, 0x80, 0x80, 0x08]) + body[1 + 2 + 4 + 1:])
    huge_topics = struct.pack(">i", len(huge_topics) - 4) + huge_topics[4:]
    bad_client_id = bytearray(good)
    bad_client_id[14:16] = b"\xc3\x28"                                   # invalid UTF-8 pair
    # A topic name that is not UTF-8: refused for its topic, or the connection closed
    result, response = assert_clean(kafka_broker.kafka_host_port, bad_name)
    assert result == "closed" or all(code != 0 for code in produce_errors(response))
    # A count of two billion topics in 200 bytes: the connection is closed, nothing allocated
    assert assert_clean(kafka_broker.kafka_host_port, huge_topics)[0] == "closed"
    # A client id that is not UTF-8 (a label only): served or closed, never a hang
    assert_clean(kafka_broker.kafka_host_port, bytes(bad_client_id))


# --- numbers out of range: each refused for its own entry ---------------------------
# A Kafka int32 or int16 that Plinth's request cannot carry (a negative partition, a
# count or replication factor of 0 or below -1, a negative partition_max_bytes):
# (api, version, body of the value and the topic, the entries' error codes in the
# response, the values drawn, the code the bad entry gets). Where the request has
# room for it, a good entry (partition 0 of the topic) rides along and is served.

def _partition_codes(key: str):
    return lambda body: [p["error_code"] for t in body[key] for p in t[
        "partitions" if "partitions" in t else "partition_responses"]]


def _topic_codes(key: str):
    return lambda body: [t["error_code"] for t in body[key]]


NEGATIVE_INT32 = st.integers(-2**31, -1)
COUNTS_REFUSED_INT32 = st.integers(-2**31, 0).filter(lambda v: v != -1)
COUNTS_REFUSED_INT16 = st.integers(-2**15, 0).filter(lambda v: v != -1)

OUT_OF_RANGE = {
    "list-offsets-partition": (
        LIST_OFFSETS, 1, lambda v, topic: {"replica_id": -1, "topics": [{"name": topic, "partitions": [
            {"partition_index": v, "timestamp": -1}, {"partition_index": 0, "timestamp": -1}]}]},
        _partition_codes("topics"), NEGATIVE_INT32, kafka.UNKNOWN_TOPIC_OR_PARTITION),
    "fetch-partition": (
        FETCH, 4, lambda v, topic: {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1,
                                    "max_bytes": 1 << 20, "isolation_level": 0,
                                    "topics": [{"topic": topic, "partitions": [
                                        {"partition": v, "fetch_offset": 0,
                                         "partition_max_bytes": 1 << 16},
                                        {"partition": 0, "fetch_offset": 0,
                                         "partition_max_bytes": 1 << 16}]}]},
        lambda body: [p["error_code"] for t in body["responses"] for p in t["partitions"]],
        NEGATIVE_INT32, kafka.UNKNOWN_TOPIC_OR_PARTITION),
    "fetch-partition-max-bytes": (
        FETCH, 4, lambda v, topic: {"replica_id": -1, "max_wait_ms": 0, "min_bytes": 1,
                                    "max_bytes": 1 << 20, "isolation_level": 0,
                                    "topics": [{"topic": topic, "partitions": [
                                        {"partition": 0, "fetch_offset": 0,
                                         "partition_max_bytes": v},
                                        {"partition": 0, "fetch_offset": 0,
                                         "partition_max_bytes": 1 << 16}]}]},
        lambda body: [p["error_code"] for t in body["responses"] for p in t["partitions"]],
        NEGATIVE_INT32, kafka.INVALID_REQUEST),
    "produce-partition": (
        PRODUCE, PRODUCE_VERSION, lambda v, topic: {
            "transactional_id": None, "acks": -1, "timeout_ms": 5_000,
            "topic_data": [{"name": topic, "partition_data": [
                {"index": v, "records": good_batch()}, {"index": 0, "records": good_batch()}]}]},
        _partition_codes("responses"), NEGATIVE_INT32, kafka.UNKNOWN_TOPIC_OR_PARTITION),
    "delete-records-partition": (
        DELETE_RECORDS, 1, lambda v, topic: {"timeout_ms": 5_000, "topics": [
            {"name": topic, "partitions": [{"partition_index": v, "offset": 0},
                                           {"partition_index": 0, "offset": 0}]}]},
        _partition_codes("topics"), NEGATIVE_INT32, kafka.UNKNOWN_TOPIC_OR_PARTITION),
    "offset-commit-partition": (
        OFFSET_COMMIT, 2, lambda v, topic: {
            "group_id": "hostile-commit", "generation_id_or_member_epoch": -1, "member_id": "",
            "retention_time_ms": -1, "topics": [{"name": topic, "partitions": [
                {"partition_index": v, "committed_offset": 0, "committed_metadata": None}]}]},
        _partition_codes("topics"), NEGATIVE_INT32, kafka.UNKNOWN_TOPIC_OR_PARTITION),
    "create-partitions-count": (
        CREATE_PARTITIONS, 0, lambda v, topic: {"topics": [
            {"name": topic, "count": v, "assignments": None}], "timeout_ms": 5_000,
            "validate_only": False},
        _topic_codes("results"), COUNTS_REFUSED_INT32, kafka.INVALID_PARTITIONS),
    "create-topics-partitions": (
        CREATE_TOPICS, 0, lambda v, topic: {"topics": [
            {"name": topic + "-new", "num_partitions": v, "replication_factor": -1,
             "assignments": [], "configs": []}], "timeout_ms": 5_000},
        _topic_codes("topics"), COUNTS_REFUSED_INT32, kafka.INVALID_PARTITIONS),
    "create-topics-replication-factor": (
        CREATE_TOPICS, 0, lambda v, topic: {"topics": [
            {"name": topic + "-new", "num_partitions": 1, "replication_factor": v,
             "assignments": [], "configs": []}], "timeout_ms": 5_000},
        _topic_codes("topics"), COUNTS_REFUSED_INT16, kafka.INVALID_REPLICATION_FACTOR),
}


def pipelined(address, api, version: int, body: dict) -> tuple[dict, bool]:
    """Send a request and an ApiVersions behind it on one connection: (the request's
    response body, whether the ApiVersions was answered too)."""
    with connect(address) as sock:
        sock.sendall(request(api, version, 41, body) + request(
            API_VERSIONS, 3, 42, {"client_software_name": "probe"}))
        answers = []
        for key, answer_version in ((api.key, version), (API_VERSIONS.key, 3)):
            size = read_exactly(sock, 4)
            assert size is not None, f"the connection was closed after {len(answers)} answers"
            answers.append(codec.decode_response(key, answer_version, read_exactly(
                sock, struct.unpack(">i", size)[0])))
    (first_id, first), (second_id, second) = answers
    return first, (first_id, second_id, second["error_code"]) == (41, 42, 0)


@pytest.fixture(scope="module")
def numbers_topic(kafka_broker) -> str:
    """A topic of its own (the produce case writes to it)."""
    name = unique_topic("numbers")
    with Admin(broker=kafka_broker.url) as admin:
        admin.create_topic(name, partitions=1)
    return name


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_a_number_out_of_range_is_refused_for_its_entry_alone_and_the_connection_goes_on(
        kafka_broker, numbers_topic, case):
    api, version, body_of, codes_of, values, refused_with = OUT_OF_RANGE[case]

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=values)
    def check(value):
        # Given a request whose one entry holds the value; when it is sent, pipelined
        # with an ApiVersions behind it
        body, next_answered = pipelined(kafka_broker.kafka_host_port, api, version,
                                        body_of(value, numbers_topic))
        # Then the bad entry is refused with Kafka's code, a good one beside it is not,
        # and the request behind it on the same connection is answered
        codes = codes_of(body)
        assert codes[0] == refused_with, (value, codes)
        assert all(code != refused_with for code in codes[1:]), (value, codes)
        assert next_answered

    check()
    assert still_serves(kafka_broker.kafka_host_port)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(api_key=st.integers(-2, 70), version=st.integers(-2, 20),
       payload=st.binary(max_size=300))
def test_random_requests_of_any_api_and_version_never_hang_or_stop_the_broker(
        kafka_broker, api_key, version, payload):
    frame = struct.pack(">hhi", api_key, version, 1) + payload
    outcome(kafka_broker.kafka_host_port, struct.pack(">i", len(frame)) + frame)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_bytes_inside_a_valid_produce_never_hang_or_stop_the_broker(kafka_broker, topic,
                                                                           data):
    frame = bytearray(produce_frame(topic, good_batch()))
    for _ in range(data.draw(st.integers(1, 8))):
        frame[data.draw(st.integers(4, len(frame) - 1))] = data.draw(st.integers(0, 255))
    outcome(kafka_broker.kafka_host_port, bytes(frame))


def kafka_counters(broker) -> Counter:
    """The broker's plinth_kafka_* counters now, by (sample name, api or reason, error)."""
    url = f"http://127.0.0.1:{broker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT_S) as response:
        text = response.read().decode()
    found: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("plinth_kafka_") and sample.name.endswith("_total"):
                assert sample.labels["listener"] == broker.kafka_address
                found[(sample.name, sample.labels.get("api") or sample.labels["reason"],
                       sample.labels.get("error", ""))] = sample.value
    return found


def test_the_metrics_count_each_error_answered_by_api_and_each_close_by_reason(kafka_broker,
                                                                              topic):
    before = kafka_counters(kafka_broker)
    # Given a produce whose partitions are refused for three reasons at once
    broken = good_batch()[:40]
    _, response = assert_clean(kafka_broker.kafka_host_port, request(
        PRODUCE, PRODUCE_VERSION, 8, {
            "transactional_id": None, "acks": -1, "timeout_ms": 5_000, "topic_data": [
                {"name": topic, "partition_data": [{"index": 0, "records": broken},
                                                   {"index": 9, "records": good_batch()}]},
                {"name": unique_topic("absent"), "partition_data": [
                    {"index": 0, "records": good_batch()}, {"index": 1, "records": good_batch()}]}]}))
    refused = Counter(kafka.NAMES[code] for code in produce_errors(response) if code != kafka.NONE)
    # ... a frame that does not decode, and one of 2 GB
    for frame in (struct.pack(">i", 4) + b"\xde\xad\xbe\xef", struct.pack(">i", 0x7FFF_FFFF)):
        assert assert_clean(kafka_broker.kafka_host_port, frame)[0] == "closed"
    # When the broker's metrics are scraped
    grown = kafka_counters(kafka_broker)
    grown.subtract(before)
    # Then each refused partition is one Produce error under Kafka's name for it (the
    # errors the client got, 4 of them), and each close one under its reason
    assert sum(refused.values()) == 4 and len(refused) >= 2
    assert +grown == Counter(
        {("plinth_kafka_errors_total", "Produce", error): n for error, n in refused.items()}
        | {("plinth_kafka_connections_closed_total", "bad_request", ""): 1,
           ("plinth_kafka_connections_closed_total", "request_size", ""): 1})


def kafka_memory_bytes(broker) -> tuple[float, float]:
    """The broker's router memory held for Kafka requests now, and its budget."""
    url = f"http://127.0.0.1:{broker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT_S) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("kind") == "kafka_requests_in_flight":
                found[sample.name] = sample.value
    return found["plinth_router_memory_bytes"], found["plinth_router_memory_bytes_max"]


def test_a_request_being_read_is_in_the_routers_memory_metric_until_its_connection_closes(
        kafka_broker):
    from plinth import limits
    from tests.support import wait_until

    assert kafka_memory_bytes(kafka_broker) == (0, limits.KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX)
    # Given a connection that declared a request of 8 MiB and sent half of it
    declared_bytes = 8 << 20
    with socket.create_connection(kafka_broker.kafka_host_port, timeout=WAIT_S) as connection:
        connection.sendall(struct.pack(">i", declared_bytes) + b"\0" * (declared_bytes // 2))
        # Then the listener's memory for requests holds it, as the metrics say
        wait_until(lambda: kafka_memory_bytes(kafka_broker)[0] == declared_bytes, WAIT_S,
                   explain=lambda: f"kafka_requests_in_flight {kafka_memory_bytes(kafka_broker)}")
    # And once the connection closes, it is given back
    wait_until(lambda: kafka_memory_bytes(kafka_broker)[0] == 0, WAIT_S,
               explain=lambda: f"kafka_requests_in_flight {kafka_memory_bytes(kafka_broker)}")


def test_after_all_of_it_a_real_client_produces_and_consumes(kafka_broker):
    # Given the broker after every hostile frame above (pytest runs them in file order)
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    assert still_serves(kafka_broker.kafka_host_port)
    fresh = unique_topic("after")
    with Admin(broker=kafka_broker.url) as admin:
        admin.create_topic(fresh, partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_address, acks="all")
    offsets = [producer.send(fresh, b"after-%d" % i, partition=0).get(WAIT_S).offset
               for i in range(5)]
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_address,
                             enable_auto_commit=False, consumer_timeout_ms=int(WAIT_S * 1000))
    consumer.assign([TopicPartition(fresh, 0)])
    consumer.seek_to_beginning()
    got = [next(consumer).value for _ in range(5)]
    consumer.close()
    assert offsets == [0, 1, 2, 3, 4]
    assert got == [b"after-%d" % i for i in range(5)]
    assert TRIED["frames"] > 100


def test_connections_sending_maximal_produces_at_once_share_one_budget_of_request_bytes(
        broker_factory):
    import threading
    import time

    from plinth import limits
    from tests.e2e.test_backpressure_e2e import rss_bytes

    # Given a broker with a Kafka listener and no SASL (anyone may send 100 MiB)
    port = free_port()
    broker = broker_factory(shards=1, extra_args=("--kafka-listen", f"127.0.0.1:{port}"))
    address = ("127.0.0.1", port)
    name = unique_topic("budget")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(name, partitions=1)
    frame = produce_frame(name, b"\0" * (limits.KAFKA_REQUEST_BYTES_MAX - 1024))
    assert len(frame) <= limits.KAFKA_REQUEST_BYTES_MAX
    # When 8 raw connections each send a maximal produce at once (800 MiB)
    outcomes: list[str] = []

    def send_one() -> None:
        try:
            outcomes.append(outcome(address, frame)[0])
        except OSError as e:                        # a timeout while muted counts too
            outcomes.append(type(e).__name__)

    rss_before = peak = rss_bytes(broker.proc.pid)
    senders = [threading.Thread(target=send_one) for _ in range(8)]
    for sender in senders:
        sender.start()
    while any(sender.is_alive() for sender in senders):
        peak = max(peak, rss_bytes(broker.proc.pid))
        time.sleep(0.01)
    # Then the router held about one budget of them at a time (and a copy while
    # decoding), not all 8: the listener grew 896 MiB before the budget
    held_bytes = peak - rss_before
    print(f"\n8 maximal produces at once: router RSS +{held_bytes >> 20} MiB; {outcomes}")
    assert held_bytes < 3 * limits.KAFKA_REQUEST_BYTES_IN_FLIGHT_MAX, held_bytes
    # And every one was read in turn, answered or closed, and the listener serves on
    assert len(outcomes) == 8 and set(outcomes) <= {"answered", "closed"}, outcomes
    assert still_serves(address)
