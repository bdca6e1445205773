"""client.aio: the asyncio client (AIOProducer, AIOConsumer, AIOAdmin), in aiokafka's
conventions with the sync client's options and errors; ``from plinth.aio import ...``.

It shares the sync client's logic rather than copying it: the accumulator and the
C fast path of send (client/producer.py RecordSending), the sender's logic
(client/sender.py SenderCore) with PartitionPipeline, the Fetcher and its C
decoders, the group membership's logic, the protocol encoders; only the waits are
its own, awaited on the caller's event loop (client/aio/connection.py).
"""

from plinth.client.aio.admin import AIOAdmin
from plinth.client.aio.consumer import AIOConsumer, ConsumerRebalanceListener
from plinth.client.aio.futures import AIORecordFuture
from plinth.client.aio.producer import AIOProducer
from plinth.client.futures import RecordMetadata
from plinth.client.fetcher import TopicPartition

__all__ = ["AIOAdmin", "AIOConsumer", "AIOProducer", "AIORecordFuture",
           "ConsumerRebalanceListener", "RecordMetadata", "TopicPartition"]
