"""What Consumer and AIOConsumer share (client/consumer_base.py), against a scripted
group broker: the commits they send."""

from __future__ import annotations

import asyncio
import time

from kafka.structs import OffsetAndMetadata, TopicPartition

from plinth import Consumer, protocol
from plinth.client.aio.consumer import AIOConsumer
from tests.client.test_consumer import GroupBroker

# kafka-python's commit value, and aiokafka's pair: metadata with one, none with the other.
KAFKA_STYLE = {TopicPartition("t", 0): OffsetAndMetadata(7, "note", -1),
               TopicPartition("t", 1): (8, "")}


class CommittingBroker(GroupBroker):
    """GroupBroker whose coordinator takes every commit."""

    def answer(self, request):
        if type(request) is protocol.CommitOffsetsRequest:
            return [protocol.encode_ok(request.request_id)]
        return super().answer(request)


def commits(broker) -> list[tuple[dict, dict]]:
    return [(request.offsets, request.metadata) for _, request in broker.requests
            if type(request) is protocol.CommitOffsetsRequest]


def test_commit_sends_kafka_pythons_offsets_and_metadata_as_the_offsets_and_their_metadata(
        scripted):
    broker = scripted([CommittingBroker().answer] * 1_000)
    consumer = Consumer("t", broker=broker.url, group="g", direct_to_shards=False)
    try:
        # When a group member commits as kafka-python's and aiokafka's commit() are called
        consumer.commit(KAFKA_STYLE)
        # Then the offsets went, with the metadata that is not empty
        assert commits(broker) == [({("t", 0): 7, ("t", 1): 8}, {("t", 0): "note"})]
    finally:
        consumer.close(autocommit=False)


def test_commit_async_sends_them_alike_and_hands_its_callback_the_offsets(scripted):
    broker = scripted([CommittingBroker().answer] * 1_000)
    consumer = Consumer("t", broker=broker.url, group="g", direct_to_shards=False)
    ended = []
    try:
        consumer.commit_async(KAFKA_STYLE, callback=lambda offsets, error: ended.append(
            (dict(offsets), error)))
        deadline_s = time.monotonic() + 10
        while not ended and time.monotonic() < deadline_s:
            consumer.poll(100)
        assert ended == [({("t", 0): 7, ("t", 1): 8}, None)]
        assert commits(broker) == [({("t", 0): 7, ("t", 1): 8}, {("t", 0): "note"})]
    finally:
        consumer.close(autocommit=False)


def test_the_aio_consumers_commit_sends_them_alike(scripted):
    broker = scripted([CommittingBroker().answer] * 1_000)

    async def scenario():
        consumer = AIOConsumer("t", broker=broker.url, group="g", direct_to_shards=False,
                               enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.commit(KAFKA_STYLE)
        finally:
            await consumer.stop()

    asyncio.run(asyncio.wait_for(scenario(), 20))
    assert commits(broker) == [({("t", 0): 7, ("t", 1): 8}, {("t", 0): "note"})]
