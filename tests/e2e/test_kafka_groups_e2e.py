"""Kafka consumer groups on ``plinth serve --kafka-listen`` with unmodified clients (issue 15).

A group of three members, each a process of its own (tests/e2e/kafka_group_member.py),
rebalances when one is SIGKILLed, and no record is lost: every record produced is
consumed by some member, and a record is consumed twice only after the kill (the
killed member's last record may not have been committed). Committed offsets survive
the consumer that committed them; ``seek`` moves to an offset; ``plinth group
describe`` shows a Kafka group's members, committed offsets and lag; a Plinth
consumer that tries to join a Kafka group's name gets an error that says why.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from plinth.client.admin import Admin
from plinth.client.consumer import Consumer
from plinth.errors import GroupNotEmptyError, InconsistentGroupProtocolError
from tests.support import unique_topic, wait_until

TIMEOUT_S = 90          # a rebalance after a kill: the 6 s session timeout, then the joins
PARTITIONS = 6
REFUSAL_WAIT_S = 20    # the refusal comes with the first heartbeat's answer
RECORDS_PER_ROUND = 300
REPO = Path(__file__).resolve().parents[2]


def _create(broker, partitions: int) -> str:
    topic = unique_topic("kg")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, partitions=partitions)
    return topic


class Member:
    """A group member process and what it printed (read by a thread of the test)."""

    def __init__(self, client: str, bootstrap: str, topic: str, group: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.kafka_group_member", client, bootstrap, topic,
             group], cwd=REPO, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def partitions(self) -> set[int] | None:
        """Its partitions after its last rebalance; None before its first."""
        last = [line for line in list(self.lines) if line.startswith("assigned")]
        if not last:
            return None
        return {int(p) for p in last[-1].split(" ", 1)[1].split(",") if p}

    def values(self) -> list[str]:
        return [line.split(" ", 3)[3] for line in list(self.lines) if line.startswith("record ")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def _shares_cover(members: list[Member]) -> bool:
    """Every live member has partitions, none twice, and together all of them."""
    shares = [m.partitions() for m in members]
    if any(not share for share in shares):
        return False
    return sum(len(s) for s in shares) == PARTITIONS and set().union(*shares) == set(
        range(PARTITIONS))


def _produce(bootstrap: str, topic: str, values: list[str]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i, value in enumerate(values):
        producer.send(topic, value.encode(), partition=i % PARTITIONS)
    producer.flush(TIMEOUT_S)
    producer.close()


def _consumed(members: list[Member]) -> Counter:
    return Counter(v for m in members for v in m.values())


def _describe(broker, group: str) -> str:
    return subprocess.run([sys.executable, "-m", "plinth.cli", "--broker", broker.url, "group",
                           "describe", group], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=True).stdout


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_group_of_three_rebalances_when_a_member_is_killed_and_loses_no_record(
        kafka_broker, client):
    topic, group = _create(kafka_broker, PARTITIONS), unique_topic("group")
    members = [Member(client, kafka_broker.kafka_address, topic, group) for _ in range(3)]
    try:
        # Given three members that share the topic's partitions
        wait_until(lambda: _shares_cover(members), TIMEOUT_S,
                   explain=lambda: [m.partitions() for m in members])
        first = [f"a-{i:04d}" for i in range(RECORDS_PER_ROUND)]
        _produce(kafka_broker.kafka_address, topic, first)
        wait_until(lambda: set(first) <= set(_consumed(members)), TIMEOUT_S,
                   explain=lambda: len(set(first) & set(_consumed(members))))
        # And each record consumed exactly once while no member failed
        assert max(_consumed(members).values()) == 1, _consumed(members).most_common(3)

        # When one member is SIGKILLed and more records come
        members[0].process.send_signal(signal.SIGKILL)
        members[0].process.wait(TIMEOUT_S)
        second = [f"b-{i:04d}" for i in range(RECORDS_PER_ROUND)]
        _produce(kafka_broker.kafka_address, topic, second)

        # Then the two survivors take over all partitions and every record is consumed
        wait_until(lambda: _shares_cover(members[1:]), TIMEOUT_S,
                   explain=lambda: [m.partitions() for m in members[1:]])
        wait_until(lambda: set(first + second) <= set(_consumed(members)), TIMEOUT_S,
                   explain=lambda: len(set(first + second) - set(_consumed(members))))
        assert set(_consumed(members)) == set(first + second)

        # And plinth group describe shows the two members, every partition committed, lag 0
        def described_caught_up():
            text = _describe(kafka_broker, group)
            rows = [line.split() for line in text.splitlines() if line.startswith(topic)]
            return (text.count("  member ") == 2 and len(rows) == PARTITIONS
                    and all(row[4] == "0" and row[2] == row[3] for row in rows)
                    and sum(int(row[3]) for row in rows) == 2 * RECORDS_PER_ROUND) and text
        wait_until(described_caught_up, TIMEOUT_S, explain=lambda: _describe(kafka_broker, group))
    finally:
        for member in members:
            member.stop()


def test_committed_offsets_outlive_their_consumer_and_seek_moves_to_an_offset(kafka_broker):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = _create(kafka_broker, 1), unique_topic("commit")
    _produce_one_partition(kafka_broker.kafka_address, topic, 10)
    tp = TopicPartition(topic, 0)

    # Given a group member that read 4 records and committed offset 4
    first = KafkaConsumer(topic, bootstrap_servers=kafka_broker.kafka_address, group_id=group,
                          auto_offset_reset="earliest", enable_auto_commit=False)
    got = _read(first, 4)
    first.commit({tp: OffsetAndMetadata(4, "note", -1)})
    assert first.committed(tp) == 4
    first.close()
    # When another consumer joins the same group
    second = KafkaConsumer(topic, bootstrap_servers=kafka_broker.kafka_address, group_id=group,
                           auto_offset_reset="earliest", enable_auto_commit=False)
    # Then it starts at the committed offset, and seek moves it to any offset
    resumed = _read(second, 1)
    second.seek(tp, 7)
    after_seek = _read(second, 1)
    second.seek(tp, 2)
    back = _read(second, 1)
    second.close()
    assert [r.offset for r in got] == [0, 1, 2, 3]
    assert [r.offset for r in resumed + after_seek + back] == [4, 7, 2]
    assert [r.value for r in after_seek] == [b"r-7"]


def test_a_group_id_with_a_colon_or_an_at_sign_joins_commits_and_is_described(kafka_broker):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    # Given a group id as applications name them (refused before: INVALID_GROUP_ID)
    topic, group = _create(kafka_broker, 1), f"svc:{unique_topic('prod')}@team+1"
    _produce_one_partition(kafka_broker.kafka_address, topic, 3)
    member = KafkaConsumer(topic, bootstrap_servers=kafka_broker.kafka_address, group_id=group,
                           auto_offset_reset="earliest", enable_auto_commit=False)
    # When it joins, reads and commits
    got = _read(member, 3)
    member.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, None, -1)})
    member.close()
    # Then the group is Plinth's as any other: listed, its offset committed
    assert [r.offset for r in got] == [0, 1, 2]
    with Admin(broker=kafka_broker.url) as admin:
        assert group in admin.list_groups()
        assert [(t, p, committed) for t, p, committed, _, _ in admin.group_lag(group)] == \
            [(topic, 0, 3)]


def test_confluent_kafka_reads_what_kafka_python_committed_for_the_group(kafka_broker):
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import TopicPartition
    from kafka import KafkaConsumer as PyConsumer
    from kafka import TopicPartition as PyTopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = _create(kafka_broker, 1), unique_topic("commit")
    _produce_one_partition(kafka_broker.kafka_address, topic, 3)
    committer = PyConsumer(bootstrap_servers=kafka_broker.kafka_address, group_id=group,
                           enable_auto_commit=False)
    committer.assign([PyTopicPartition(topic, 0)])
    committer.commit({PyTopicPartition(topic, 0): OffsetAndMetadata(2, None, -1)})
    committer.close()
    reader = KafkaConsumer({"bootstrap.servers": kafka_broker.kafka_address, "group.id": group})
    [committed] = reader.committed([TopicPartition(topic, 0)], timeout=TIMEOUT_S)
    reader.close()
    assert committed.offset == 2 and committed.error is None


def test_a_kafka_commit_bigger_than_one_plinth_header_is_stored_whole(kafka_broker):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    # Given 40 partitions, each committed with 3,000 bytes of metadata: 120 KB, more
    # than one Plinth request header holds (Kafka's requests may be 100 MB)
    topic, group = _create(kafka_broker, 40), unique_topic("bigcommit")
    tps = [TopicPartition(topic, p) for p in range(40)]
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_address, group_id=group,
                             enable_auto_commit=False)
    try:
        consumer.assign(tps)
        # When kafka-python commits them (it raises for any partition's error)
        consumer.commit({tp: OffsetAndMetadata(tp.partition + 1, "m" * 3000, -1) for tp in tps})
        # Then every offset is stored, with its metadata
        assert [consumer.committed(tp) for tp in tps] == [p + 1 for p in range(40)]
    finally:
        consumer.close()
    with Admin(broker=kafka_broker.url) as admin:
        assert admin.describe_group(group).committed == {(topic, p): p + 1 for p in range(40)}


def test_metadata_committed_by_either_client_is_read_back_by_both(kafka_broker):
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient
    from kafka import KafkaConsumer as PyConsumer
    from kafka import TopicPartition as PyTopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.structs import OffsetAndMetadata

    topic, group = _create(kafka_broker, 2), unique_topic("metadata")
    # Given confluent-kafka committing offset 7 of partition 0 with metadata "hello"
    librdkafka = KafkaConsumer({"bootstrap.servers": kafka_broker.kafka_address,
                                "group.id": group, "enable.auto.commit": False})
    librdkafka.commit(offsets=[TopicPartition(topic, 0, 7, metadata="hello")],
                      asynchronous=False)
    # And kafka-python committing offset 9 of partition 1 with metadata "world"
    py = PyConsumer(bootstrap_servers=kafka_broker.kafka_address, group_id=group,
                    enable_auto_commit=False)
    py.commit({PyTopicPartition(topic, 1): OffsetAndMetadata(9, "world", -1)})
    py.close()
    # When each client reads the group's committed offsets back
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    seen = librdkafka.committed(tps, timeout=TIMEOUT_S)
    librdkafka.close()
    rd_admin = AdminClient({"bootstrap.servers": kafka_broker.kafka_address})
    listed = rd_admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, tps)])[group].result(TIMEOUT_S).topic_partitions
    py_admin = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address)
    try:
        py_listed = py_admin.list_group_offsets(group)[group]   # OffsetFetch v8: by group
    finally:
        py_admin.close()
    # Then every reader has each offset with the metadata committed with it, as sent:
    # kafka-python sees confluent-kafka's with the C string's NUL it sends along, and
    # confluent-kafka reads metadata as a C string, so kafka-python's (no NUL) may run
    # on past its end in its answer (librdkafka#4649), as it would from Kafka
    assert {tp.partition: (om.offset, om.metadata) for tp, om in py_listed.items()} == \
        {0: (7, "hello\0"), 1: (9, "world")}
    for answer in (seen, listed):
        assert [(tp.offset, tp.metadata[:5]) for tp in answer] == [(7, "hello"), (9, "world")]


def test_metadata_over_offset_metadata_max_bytes_is_refused_and_keeps_the_last_commit(
        kafka_broker):
    from kafka import KafkaConsumer as PyConsumer
    from kafka import TopicPartition as PyTopicPartition
    from kafka.errors import OffsetMetadataTooLargeError
    from kafka.structs import OffsetAndMetadata

    from plinth import limits

    topic, group = _create(kafka_broker, 16), unique_topic("metadata-limit")
    tp0, tp1 = PyTopicPartition(topic, 0), PyTopicPartition(topic, 1)
    py = PyConsumer(bootstrap_servers=kafka_broker.kafka_address, group_id=group,
                    enable_auto_commit=False)
    try:
        # Given metadata at the limit (4096 bytes, Kafka's offset.metadata.max.bytes)
        # committed with offset 3
        at_limit = "m" * limits.OFFSET_METADATA_BYTES_MAX
        py.commit({tp0: OffsetAndMetadata(3, at_limit, -1)})
        assert py.committed(tp0, metadata=True).metadata == at_limit
        # When a commit carries 5,000 bytes for one partition and a small one for another
        with pytest.raises(OffsetMetadataTooLargeError):
            py.commit({tp0: OffsetAndMetadata(4, "x" * 5_000, -1),
                       tp1: OffsetAndMetadata(8, "small", -1)})
        # Then it is refused (OFFSET_METADATA_TOO_LARGE), all of it: Plinth's commits are
        # all or none, where Kafka would have committed the other partition
        assert (py.committed(tp0, metadata=True).offset,
                py.committed(tp0, metadata=True).metadata) == (3, at_limit)
        assert py.committed(tp1) is None
        # And so is one of 16 such partitions, more than a Plinth request header holds
        with pytest.raises(OffsetMetadataTooLargeError):
            py.commit({PyTopicPartition(topic, p): OffsetAndMetadata(1, "x" * 5_000, -1)
                       for p in range(16)})
        assert py.committed(tp0) == 3
    finally:
        py.close()


def _produce_one_partition(bootstrap: str, topic: str, count: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(count):
        producer.send(topic, b"r-%d" % i, partition=0)
    producer.flush(TIMEOUT_S)
    producer.close()


def _read(consumer, count: int) -> list:
    got = []
    wait_until(lambda: got.extend(r for rs in consumer.poll(200, max_records=count - len(got))
                                  .values() for r in rs) or len(got) >= count, TIMEOUT_S)
    return got


def test_a_plinth_consumer_cannot_join_a_kafka_group_and_is_told_why(kafka_broker):
    topic, group = _create(kafka_broker, 2), unique_topic("kafka-only")
    member = Member("kafka-python", kafka_broker.kafka_address, topic, group)
    try:
        # Given a Kafka group with a live member
        wait_until(lambda: member.partitions() == {0, 1}, TIMEOUT_S)
        # When a Plinth consumer subscribes in that group's name
        with pytest.raises(InconsistentGroupProtocolError) as refused:
            consumer = Consumer(topic, broker=kafka_broker.url, group=group)
            try:
                wait_until(lambda: consumer.poll(200) and False, REFUSAL_WAIT_S)
            finally:
                consumer.close()
        # Then the error names the group and says what to do
        assert group in str(refused.value) and "Kafka" in str(refused.value)
        # And the Kafka member keeps its partitions
        assert member.partitions() == {0, 1} and member.process.poll() is None
    finally:
        member.stop()


def test_list_consumer_groups_shows_each_groups_state_and_filters_by_state_and_type(
        kafka_broker):
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType
    from confluent_kafka.admin import AdminClient

    topic = _create(kafka_broker, 2)
    live, idle = unique_topic("live"), unique_topic("idle")
    member = Member("kafka-python", kafka_broker.kafka_address, topic, live)
    client = AdminClient({"bootstrap.servers": kafka_broker.kafka_address})

    def listed(**filters) -> dict:
        """Our two groups as librdkafka lists them: name -> (state, type)."""
        answer = client.list_consumer_groups(request_timeout=TIMEOUT_S, **filters) \
            .result(TIMEOUT_S)
        assert answer.errors == []
        return {g.group_id: (g.state, g.type) for g in answer.valid if g.group_id in (live, idle)}

    try:
        # Given a Kafka group with a live member, and a group known only by the
        # offsets a Kafka client committed for it without joining
        wait_until(lambda: member.partitions() == {0, 1}, TIMEOUT_S)
        _commit_without_joining(kafka_broker.kafka_address, topic, idle)
        # When the groups are listed / Then each has its state and type
        assert listed() == {live: (ConsumerGroupState.STABLE, ConsumerGroupType.CLASSIC),
                            idle: (ConsumerGroupState.EMPTY, ConsumerGroupType.CONSUMER)}
        # And a states filter, or a types filter, lets through its groups only
        assert list(listed(states={ConsumerGroupState.STABLE})) == [live]
        assert list(listed(states={ConsumerGroupState.EMPTY})) == [idle]
        assert listed(states={ConsumerGroupState.PREPARING_REBALANCING}) == {}
        assert list(listed(types={ConsumerGroupType.CLASSIC})) == [live]
        assert list(listed(types={ConsumerGroupType.CONSUMER})) == [idle]
    finally:
        member.stop()


def _commit_without_joining(bootstrap: str, topic: str, group: str) -> None:
    from kafka import KafkaConsumer as PyConsumer
    from kafka import TopicPartition as PyTopicPartition
    from kafka.structs import OffsetAndMetadata

    committer = PyConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    committer.assign([PyTopicPartition(topic, 0)])
    committer.commit({PyTopicPartition(topic, 0): OffsetAndMetadata(0, None, -1)})
    committer.close()


def test_delete_groups_is_refused_while_a_kafka_member_is_in_it_then_forgets_its_offsets(
        kafka_broker):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from kafka.admin import KafkaAdminClient

    topic, group = _create(kafka_broker, 2), unique_topic("deleted")
    member = Member("kafka-python", kafka_broker.kafka_address, topic, group)
    client = AdminClient({"bootstrap.servers": kafka_broker.kafka_address})

    def delete_with_librdkafka():
        return client.delete_consumer_groups([group], request_timeout=TIMEOUT_S)[group] \
            .result(TIMEOUT_S)

    try:
        # Given a Kafka group with a live member, which committed what it read
        wait_until(lambda: member.partitions() == {0, 1}, TIMEOUT_S)
        _produce_one_partition(kafka_broker.kafka_address, topic, 3)
        wait_until(lambda: sum(line.startswith("record") for line in member.lines) == 3,
                   TIMEOUT_S)
        # Then neither a Kafka client's DeleteGroups nor Plinth's reset or delete may
        # take its offsets from under it
        with pytest.raises(KafkaException) as refused:
            delete_with_librdkafka()
        assert refused.value.args[0].name() == "NON_EMPTY_GROUP"
        with Admin(broker=kafka_broker.url) as admin:
            for action in (lambda: admin.reset_group_offsets(group, {(topic, 0): 0}),
                           lambda: admin.delete_group(group)):
                with pytest.raises(GroupNotEmptyError, match="1 active Kafka members"):
                    action()
    finally:
        member.stop()
    # Once the member has left, the group is deleted
    wait_until(lambda: _members(kafka_broker, group) == 0, TIMEOUT_S)
    delete_with_librdkafka()
    with Admin(broker=kafka_broker.url) as admin:
        assert group not in admin.list_groups()
    # kafka-python sees it gone: GROUP_ID_NOT_FOUND (69)
    py = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address)
    try:
        answer = py.delete_groups([group])
    finally:
        py.close()
    assert answer == {group: "GroupIdNotFoundError"}


def _members(broker, group: str) -> int:
    from plinth.errors import UnknownGroupError

    with Admin(broker=broker.url) as admin:
        try:
            return len(admin.describe_group(group).members)
        except UnknownGroupError:
            return 0


def test_offset_delete_keeps_a_kafka_groups_subscribed_topics_and_deletes_the_others(
        kafka_broker):
    from kafka import TopicPartition as PyTopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import GroupIdNotFoundError, GroupSubscribedToTopicError, NoError

    subscribed, other = _create(kafka_broker, 1), _create(kafka_broker, 1)
    group = unique_topic("offdel")
    # Given offsets of two topics committed for a group, then a member subscribed to one
    _commit_without_joining(kafka_broker.kafka_address, other, group)
    _commit_without_joining(kafka_broker.kafka_address, subscribed, group)
    member = Member("kafka-python", kafka_broker.kafka_address, subscribed, group)
    py = KafkaAdminClient(bootstrap_servers=kafka_broker.kafka_address,
                          request_timeout_ms=TIMEOUT_S * 1000)
    both = [PyTopicPartition(subscribed, 0), PyTopicPartition(other, 0)]
    try:
        wait_until(lambda: member.partitions() == {0}, TIMEOUT_S)
        # When kafka-python deletes both (OffsetDelete v0)
        answer = py.delete_group_offsets(group, both)
        # Then the subscribed topic's is kept, the other's deleted, as Kafka answers
        assert answer == {both[0]: GroupSubscribedToTopicError, both[1]: NoError}
        with Admin(broker=kafka_broker.url) as admin:
            assert admin.describe_group(group).committed == {(subscribed, 0): 0}
        # And a group that does not exist is GROUP_ID_NOT_FOUND for the whole request
        with pytest.raises(GroupIdNotFoundError):
            py.delete_group_offsets(unique_topic("nobody"), both)
    finally:
        member.stop()
    # Once the member has left, its topic's offset goes too, and so does the group
    wait_until(lambda: _members(kafka_broker, group) == 0, TIMEOUT_S)
    try:
        assert py.delete_group_offsets(group, both[:1]) == {both[0]: NoError}
    finally:
        py.close()
    with Admin(broker=kafka_broker.url) as admin:
        assert group not in admin.list_groups()
