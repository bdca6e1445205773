"""The asyncio client: ``from plinth.aio import AIOProducer, AIOConsumer, AIOAdmin``.

A re-export of client/aio/ (see its package docstring); importing it pulls in
the client and its sockets, as ``from plinth import Producer`` does.
"""

from plinth.client.admin import NewTopic
from plinth.client.aio import (AIOAdmin, AIOConsumer, AIOProducer, AIORecordFuture,
                               ConsumerRebalanceListener, RecordMetadata, TopicPartition)

__all__ = ["AIOAdmin", "AIOConsumer", "AIOProducer", "AIORecordFuture",
           "ConsumerRebalanceListener", "NewTopic", "RecordMetadata", "TopicPartition"]
