"""A real ShardServer with a tier URL, and a router's DEALER to it, for the remote-read tests.

``TieredShard`` produces records into one partition with small segments, does
by hand what the uploader (another slice of issue 14) will do on its own:
uploads rolled segments with remote_transfer.upload_segment into a
RemoteLogMetadata, publishes ``metadata.view()``
into the partition and deletes the local prefix, each on the loop thread
through ``server.call``; and fetches through the socket as a router would.
Test thread only.

Its partition is not tiered (LOG_CONFIG), so the shard's own uploader leaves it
alone. Made tiered, it would not be: the uploader keeps its own journal beside
the one here, adopts these segments when it lists the store, deletes them by
its retention (deleteRecords' floor, total retention), and each ``upload`` here
then publishes a view that still lists them (their objects gone: a read of one
is the store's 404, as for a segment lost while listed). Tests of what the
uploader deletes use the real uploader (test_remote_log_manager.py,
test_remote_delete_records.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from plinth import limits, protocol
from plinth.format.log_entry import iter_entries
from plinth.format.record_batch import BatchBuilder, decode_records
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_calls import TierOptions
from plinth.shards.shard_server import ShardServer
from plinth.shards.tier.remote_log_metadata import RemoteLogMetadata
from plinth.shards.tier.remote_store import RemoteStore, open_remote_store
from plinth.shards.tier.remote_transfer import LocalSegment, upload_segment

TOPIC, PARTITION = "t", 0
TOPIC_ID = "5c0e3b6a91d24f7e8a1b2c3d4e5f6071"   # the id a controller would have given t
KEY = (TOPIC, PARTITION)
CLIENT = b"remote-reader-test"
REPLY_WAIT_S = 30.0   # the bound on every wait for a reply
# Segments of 4 KiB holding batches of 3 records of 300 bytes: several entries per
# segment, and an index entry every 1 KiB, so that reads start from indexed positions.
LOG_CONFIG = LogConfig(segment_bytes_max=limits.SEGMENT_BYTES_MIN, index_interval_bytes=1024)
RECORDS_PER_BATCH = 3
BATCHES = 40   # 120 records of 300 bytes: about 30 segments of 4 KiB


def record_value(offset: int) -> bytes:
    """The value of the record at ``offset``: 300 bytes that name it."""
    return (f"record {offset:06d} ".encode() * 20)[:300]


class TieredShard:
    """One ShardServer with partition t-0, and a DEALER playing a router."""

    def __init__(self, data_dir: Path, tier_url: str):
        self.server = ShardServer("shard-tier", data_dir, "127.0.0.1",
                                  tier=TierOptions(tier_url, limits.TIER_CACHE_BYTES_MIN))
        self.server.start()
        self.server.call(lambda: self.server.open_partition(TOPIC, PARTITION, LOG_CONFIG,
                                                               topic_id=TOPIC_ID))
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(self.server.address)
        self._request_id = 0
        self.metadata: RemoteLogMetadata | None = None

    def close(self) -> None:
        self.socket.close()
        self.server.stop(5)
        if self.metadata is not None:
            self.metadata.close()

    # --- Requests through the socket --------------------------------------------

    def next_id(self) -> int:
        self._request_id += 1
        return self._request_id

    def produce_batches(self, batches: int, stamp=None) -> int:
        """Append ``batches`` batches of RECORDS_PER_BATCH records (acks=1); the end offset.
        ``stamp(offset)``: each record's timestamp (ms), the clock's if None."""
        end_offset = 0
        for _ in range(batches):
            builder = BatchBuilder()
            for index in range(RECORDS_PER_BATCH):
                offset = end_offset + index
                builder.append(None, record_value(offset),
                               time.time_ns() // 1_000_000 if stamp is None else stamp(offset),
                               None)
            request_id = self.next_id()
            self.socket.send_multipart([CLIENT, protocol.encode_produce(
                request_id, TOPIC, PARTITION, 1), builder.build()])
            reply, _ = self.reply()
            assert reply.error is None and reply.request_id == request_id, reply
            end_offset = reply.base_offset + RECORDS_PER_BATCH
        return end_offset

    def send_fetch(self, offset: int, bytes_max: int = 1 << 20) -> int:
        request_id = self.next_id()
        self.socket.send_multipart([CLIENT, protocol.encode_fetch(
            request_id, TOPIC, PARTITION, offset, bytes_max, 0)])
        return request_id

    def reply(self, wait_s: float = REPLY_WAIT_S) -> tuple[protocol.ReplyView, bytes]:
        """The next reply and its payload (b"" if none)."""
        if not self.socket.poll(int(wait_s * 1000)):
            raise AssertionError(f"no reply from {self.server.address} within {wait_s} s")
        _, header, *payload = self.socket.recv_multipart()
        return protocol.decode_reply(header), payload[0] if payload else b""

    def fetch(self, offset: int, bytes_max: int = 1 << 20,
              wait_s: float = REPLY_WAIT_S) -> tuple[protocol.ReplyView, bytes]:
        request_id = self.send_fetch(offset, bytes_max)
        reply, payload = self.reply(wait_s)
        assert reply.request_id == request_id, (reply, request_id)
        return reply, payload

    def read_all(self, start_offset: int, end_offset: int,
                 bytes_max: int = 1 << 20) -> dict[int, bytes]:
        """offset -> value of every record in [start_offset, end_offset), fetched in turn."""
        values, offset = {}, start_offset
        for _ in range(end_offset - start_offset):
            if offset >= end_offset:
                return values
            reply, payload = self.fetch(offset, bytes_max)
            if reply.error is not None:
                raise reply.error
            for record in records_of(payload, offset):
                values[record.offset] = record.value
            offset = max(values) + 1 if values else offset
        raise AssertionError(f"read stopped at offset {offset} of {end_offset}")

    def send_list_offsets(self, timestamp_ms: int = protocol.NO_TIME_LOOKUP) -> int:
        """Send listOffsets (by time, if ``timestamp_ms`` is given); its request id."""
        request_id = self.next_id()
        self.socket.send_multipart([CLIENT, protocol.encode_list_offsets(
            request_id, TOPIC, PARTITION, timestamp_ms)])
        return request_id

    def list_offsets(self) -> protocol.PartitionInfo:
        request_id = self.next_id()
        self.socket.send_multipart([CLIENT, protocol.encode_list_offsets(
            request_id, TOPIC, PARTITION)])
        reply, _ = self.reply()
        if reply.error is not None:
            raise reply.error
        return reply.offsets

    # --- What the uploader will do, by hand ---------------------------------------

    def on_loop(self, fn):
        """``fn(partition)`` on the loop thread."""
        return self.server.call(lambda: fn(self.server._partitions[KEY]))

    def rolled_segments(self) -> list[LocalSegment]:
        """Every rolled segment of the partition, oldest first, as the uploader takes them."""
        def local(part):
            return [LocalSegment.of(segment, topic=TOPIC, topic_id=TOPIC_ID, partition=PARTITION,
                                    leader_epochs=part.leader_epochs)
                    for segment in part.log.segments[:-1]]
        return self.on_loop(local)

    def upload(self, store: RemoteStore, segments: list[LocalSegment], metadata_dir: Path) -> None:
        """Upload ``segments`` and publish what is in the store to the partition."""
        if self.metadata is None:
            self.metadata, _ = RemoteLogMetadata.open(metadata_dir)
        for local in segments:
            upload_segment(store, self.metadata, local)
        view = self.metadata.view()

        def publish(part):
            part.remote = view
        self.on_loop(publish)

    def delete_local_before(self, offset: int) -> int:
        """Delete the local segments ending at or before ``offset``; the local start."""
        def delete(part):
            part.log.delete_segments_before(offset)
            return part.log.start_offset
        return self.on_loop(delete)

    def stats(self) -> dict:
        return self.server.call(self.server.stats_snapshot)


def tiered(shard: TieredShard, url: str, tmp_path: Path, *, keep_local_segments: int = 3,
           upload=slice(None), stamp=None) -> tuple[int, int]:
    """Produce BATCHES batches (records stamped ``stamp(offset)``, or now), upload the
    rolled segments to the store at ``url`` (``upload`` picks which), and delete all
    but the last ``keep_local_segments`` locally. Returns (end offset, local start)."""
    end_offset = shard.produce_batches(BATCHES, stamp)
    rolled = shard.rolled_segments()
    shard.upload(open_remote_store(url), rolled[upload], tmp_path / "metadata")
    local_start = shard.delete_local_before(rolled[-keep_local_segments].base_offset)
    return end_offset, local_start


def records_of(payload: bytes, offset_min: int):
    return [record for header, batch in iter_entries(payload)
            for record in decode_records(TOPIC, PARTITION, header.base_offset, batch, offset_min)]
