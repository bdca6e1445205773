"""The batch formats a log entry may hold, and the one call per format each reader makes.

A log entry's ``attributes`` field names the format of its batch
(format/log_entry.py):

    BATCH_FORMAT_PLINTH    Plinth's RecordBatch      format/record_batch.py
    BATCH_FORMAT_KAFKA_V2  Kafka's RecordBatch v2    format/kafka_batch.py

Storage never parses a batch; only these calls do, once per batch, and they
dispatch on the format here so that no caller needs to know how many there
are. Who calls what:

  * ``summarize``  the shard actor: a produced batch (untrusted), a replicated
                   one, and the batches replayed to rebuild producer state.
  * ``decode``     the consumer (client): the records of a fetched batch.

Any thread may call them.
"""

from __future__ import annotations

from plinth.errors import InvalidBatchError
from plinth.format import kafka_batch, record_batch
from plinth.format.log_entry import BATCH_FORMAT_KAFKA_V2, BATCH_FORMAT_PLINTH, BATCH_FORMATS
from plinth.format.record_batch import BatchSummary, ConsumerRecord

__all__ = ["summarize", "decode", "BATCH_FORMATS"]


def summarize(batch_format: int, batch: bytes | memoryview) -> BatchSummary:
    """Check an untrusted batch in ``batch_format`` and summarize it for the shard.

    Raises what the format's summarize raises (InvalidBatchError,
    RecordTooLargeError, CorruptDataError); a format the shard does not know is
    an InvalidBatchError naming it.
    """
    if batch_format == BATCH_FORMAT_PLINTH:
        return record_batch.summarize_batch(batch)
    if batch_format == BATCH_FORMAT_KAFKA_V2:
        return kafka_batch.summarize_kafka_batch(batch)
    raise _unknown(batch_format)


def decode(batch_format: int, topic: str, partition: int, base_offset: int,
           batch: bytes | memoryview, offset_min: int = 0) -> list[ConsumerRecord]:
    """The records of one stored batch with offset >= ``offset_min``, in order.

    ``base_offset`` is the log entry's; a Kafka batch carries the same one
    (the shard stamped it there).
    """
    if batch_format == BATCH_FORMAT_PLINTH:
        return record_batch.decode_records(topic, partition, base_offset, batch, offset_min)
    if batch_format == BATCH_FORMAT_KAFKA_V2:
        return kafka_batch.decode_kafka_records(topic, partition, batch, offset_min)
    raise _unknown(batch_format)


def _unknown(batch_format: int) -> InvalidBatchError:
    return InvalidBatchError(f"batch format {batch_format} is none of the known formats "
                             f"{BATCH_FORMATS}")
