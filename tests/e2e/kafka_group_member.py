"""One member of a Kafka consumer group, in a process of its own, for
tests/e2e/test_kafka_groups_e2e.py (a member the test can SIGKILL).

    python -m tests.e2e.kafka_group_member CLIENT BOOTSTRAP TOPIC GROUP

CLIENT is ``confluent`` (confluent-kafka, librdkafka) or ``kafka-python``. The
member subscribes to TOPIC in GROUP and prints, flushed, one line per event:

    assigned P1,P2,...     its partitions after each rebalance ("" for none)
    record P OFFSET VALUE  a record it consumed (committed synchronously right after)

It runs until SIGTERM (then closes, leaving the group) or SIGKILL.
"""

from __future__ import annotations

import signal
import sys

SESSION_TIMEOUT_MS = 6_000    # Kafka's group.min.session.timeout.ms: a killed member goes soon
HEARTBEAT_INTERVAL_MS = 500
POLL_S = 0.2

stopping = False


def _stop(*_):
    global stopping
    stopping = True


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_confluent(bootstrap: str, topic: str, group: str) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": SESSION_TIMEOUT_MS,
                         "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                         "partition.assignment.strategy": "range"})
    consumer.subscribe([topic], on_assign=lambda c, ps: say(
        "assigned " + ",".join(str(p.partition) for p in ps)),
        on_revoke=lambda c, ps: say("assigned "))
    while not stopping:
        message = consumer.poll(POLL_S)
        if message is None or message.error() is not None:
            continue
        say(f"record {message.partition()} {message.offset()} {message.value().decode()}")
        consumer.commit(message=message, asynchronous=False)
    consumer.close()


def run_kafka_python(bootstrap: str, topic: str, group: str) -> None:
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=SESSION_TIMEOUT_MS,
                             heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS)
    assigned = None
    while not stopping:
        batches = consumer.poll(int(POLL_S * 1000))
        now = sorted(tp.partition for tp in consumer.assignment())
        if now != assigned:
            assigned = now
            say("assigned " + ",".join(map(str, now)))
        for tp, records in batches.items():
            for record in records:
                say(f"record {tp.partition} {record.offset} {record.value.decode()}")
                consumer.commit({tp: OffsetAndMetadata(record.offset + 1, None, -1)})
    consumer.close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    client, bootstrap, topic, group = sys.argv[1:5]
    {"confluent": run_confluent, "kafka-python": run_kafka_python}[client](bootstrap, topic, group)
