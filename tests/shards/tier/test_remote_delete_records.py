"""deleteRecords on a tiered partition read from object storage, end to end on one shard:
the real uploader (shards/tier/remote_log_manager.py) uploads, drops the local copies,
and deletes remote segments wholly below the floor; fetches through a socket as a
router sends them. A floor inside a remote segment keeps that segment until the floor
passes its end; reads at or above it return exactly the records from it on, reads
below are out of range (as on an untiered partition: test_shard_server_delete_records.py),
and no missing store object ever reaches a client, before, during and after the
remote deletions, and after a restart."""

from __future__ import annotations

import pytest
import zmq

from plinth import limits, protocol
from plinth.errors import OffsetOutOfRangeError
from plinth.format.log_entry import iter_entries
from plinth.format.record_batch import decode_records
from plinth.shards.tier.remote_store import open_remote_store
from tests.moto_s3 import MotoS3
from tests.shards.tier.test_remote_log_manager import (
    WAIT_S, listed, local_segments, orphans, produce_values, remote_ranges, running_shard,
    tiered)
from tests.support import wait_until

CLIENT = b"delete-records-test"
REPLY_WAIT_MS = 30_000
RECORDS = 40   # of 1000 bytes, in 4 KiB segments: about 13 segments
# Every rolled segment goes up and leaves the disk; nothing is deleted but by the floor.
CONFIG = tiered(retention_bytes=-1, retention_ms=-1, local_retention_bytes=0)


@pytest.fixture(autouse=True)
def quick_retention(monkeypatch):
    """Retention passes (and so the uploader's remote ones) every 0.2 s, not every 5 s."""
    monkeypatch.setattr(limits, "REMOTE_UPLOAD_CHECK_INTERVAL_S", 0.1)
    monkeypatch.setattr(limits, "RETENTION_CHECK_INTERVAL_S", 0.2)


def ask(address: str, header: bytes) -> tuple[protocol.ReplyView, bytes]:
    """One request as a router sends it; the reply (its error not raised) and its payload."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send_multipart([CLIENT, header])
        if not sock.poll(REPLY_WAIT_MS):
            raise AssertionError(f"no reply from the shard at {address} in {REPLY_WAIT_MS} ms")
        frames = sock.recv_multipart()
    finally:
        sock.close()
    return protocol.decode_reply(frames[1]), frames[2] if len(frames) > 2 else b""


def fetch(address: str, offset: int) -> tuple[protocol.ReplyView, dict[int, bytes]]:
    """One fetch of t-0 at ``offset``: the reply and offset -> value of the records it
    serves from ``offset`` on (a batch is sent whole; the consumer skips below)."""
    reply, payload = ask(address, protocol.encode_fetch(1, "t", 0, offset, 1 << 20, 0))
    return reply, {record.offset: record.value for header, batch in iter_entries(payload)
                   for record in decode_records("t", 0, header.base_offset, batch, offset)}


def read_all(address: str, offset: int, end_offset: int) -> dict[int, bytes]:
    """offset -> value of every record from ``offset`` to ``end_offset``, fetch after
    fetch (a remote read answers one segment's entries at most). Any error raises."""
    values: dict[int, bytes] = {}
    for _ in range(end_offset - offset + 1):
        if offset >= end_offset:
            break
        reply, served = fetch(address, offset)
        if reply.error is not None:
            raise reply.error
        assert served and min(served) == offset, (offset, sorted(served))
        values.update(served)
        offset = max(served) + 1
    return values


def delete_records(address: str, offset: int) -> int:
    """deleteRecords before ``offset``; the new log start offset."""
    reply, _ = ask(address, protocol.encode_delete_records(1, "t", 0, offset))
    if reply.error is not None:
        raise reply.error
    return reply.offsets.start_offset


def log_start(address: str) -> int:
    reply, _ = ask(address, protocol.encode_list_offsets(1, "t", 0))
    if reply.error is not None:
        raise reply.error
    return reply.offsets.start_offset


def first_at_time_zero(address: str) -> int:
    """The offset of the first record stamped at or after 0 ms: the first one served."""
    reply, _ = ask(address, protocol.encode_list_offsets(1, "t", 0, 0))
    if reply.error is not None:
        raise reply.error
    return reply.offsets.found_offset


def check_reads(address: str, floor: int, middle: int, values: list[bytes]) -> None:
    """What a consumer sees of t-0 with the floor at ``floor``: it starts there (by
    offset and by time), every record from there on reads exactly, below is out of
    range."""
    assert log_start(address) == floor
    assert first_at_time_zero(address) == floor   # a look-up by time skips below it too
    assert read_all(address, floor, len(values)) == dict(enumerate(values[floor:], floor))
    for offset in (middle, floor):
        reply, served = fetch(address, offset)
        assert reply.error is None and reply.log_start_offset == floor, reply
        assert served and min(served) == offset
        assert all(values[at] == value for at, value in served.items())
    for offset in (0, floor - 1):
        reply, _ = fetch(address, offset)
        assert isinstance(reply.error, OffsetOutOfRangeError), (offset, reply)
        assert f"valid offsets are {floor} to {len(values)}" in str(reply.error)


def test_a_floor_inside_a_remote_segment_then_at_a_boundary_reads_from_the_floor_only(
        tmp_path, tier_url):
    # Given a tiered partition whose rolled segments the uploader put in the store and
    # dropped from the disk, so that the oldest several are read from the store only
    shard_dir = tmp_path / "shard"
    store = open_remote_store(tier_url)
    with running_shard(shard_dir, tier_url, CONFIG) as server:
        values = produce_values(server, RECORDS)
        wait_until(lambda: len(remote_ranges(store)) >= 6
                   and local_segments(server)[0][0] >= remote_ranges(store)[5][1],
                   timeout_s=WAIT_S,
                   explain=lambda: f"local {local_segments(server)}, remote {remote_ranges(store)}")
        ranges = remote_ranges(store)
        assert ranges[0][0] == 0 and ranges[2][1] - ranges[2][0] >= 2, ranges

        # When the records below the middle of the third remote segment are deleted
        inside = ranges[2][0] + 1
        assert delete_records(server.address, inside) == inside
        # Then at once (before any remote deletion) reads start at the floor
        check_reads(server.address, inside, ranges[4][0] + 1, values)
        # And the uploader deletes the two segments wholly below it, whole, and keeps the
        # one holding the floor
        wait_until(lambda: remote_ranges(store)[0] == ranges[2] and orphans(store) == set(),
                   timeout_s=WAIT_S, explain=lambda: f"remote {remote_ranges(store)}, "
                                                     f"orphans {orphans(store)}")
        assert remote_ranges(store)[:len(ranges) - 2] == ranges[2:]
        # And reads after the deletion are the same
        check_reads(server.address, inside, ranges[4][0] + 1, values)
        wait_until(lambda: server.call(lambda: server._partitions[("t", 0)].remote.log_start_offset)
                   == ranges[2][0], timeout_s=WAIT_S)
        check_reads(server.address, inside, ranges[4][0] + 1, values)

        # When the records below the fifth remote segment's base offset (a boundary) go
        boundary = ranges[4][0]
        assert delete_records(server.address, boundary) == boundary
        check_reads(server.address, boundary, ranges[5][0] + 1, values)
        # Then the segments ending at or below it go, the one starting at it stays
        wait_until(lambda: remote_ranges(store)[0] == ranges[4] and orphans(store) == set(),
                   timeout_s=WAIT_S, explain=lambda: f"remote {remote_ranges(store)}, "
                                                     f"orphans {orphans(store)}")
        check_reads(server.address, boundary, ranges[5][0] + 1, values)
    kept = remote_ranges(store)

    # When the shard starts again on its directory
    with running_shard(shard_dir, tier_url, CONFIG) as server:
        # Then, once it has listed the store (a look-up by time waits for that), the
        # floor, the remote log and the reads are as before the restart
        wait_until(lambda: server.call(lambda: server._tier.view_synced(
            server._partitions[("t", 0)])), timeout_s=WAIT_S)
        check_reads(server.address, boundary, ranges[5][0] + 1, values)
        assert remote_ranges(store) == kept and orphans(store) == set()
        assert [segment.base_offset for segment in listed(store, "t", 0)][0] == boundary


def test_below_the_floor_is_out_of_range_even_before_the_store_is_listed(tmp_path, monkeypatch):
    # Given a tiered partition read from the store, its records deleted below an offset
    # inside a remote segment, and the segments wholly below deleted from the store
    shard_dir, url = tmp_path / "shard", f"file://{tmp_path}/store"
    store = open_remote_store(url)
    with running_shard(shard_dir, url, CONFIG) as server:
        values = produce_values(server, RECORDS)
        wait_until(lambda: len(remote_ranges(store)) >= 3
                   and local_segments(server)[0][0] >= remote_ranges(store)[2][1],
                   timeout_s=WAIT_S,
                   explain=lambda: f"local {local_segments(server)}, remote {remote_ranges(store)}")
        ranges = remote_ranges(store)
        floor = ranges[1][0] + 1
        assert delete_records(server.address, floor) == floor
        wait_until(lambda: remote_ranges(store)[0] == ranges[1], timeout_s=WAIT_S,
                   explain=lambda: f"remote {remote_ranges(store)}")
    # When the shard starts again with its store unreachable, so that it cannot list it
    unreachable = MotoS3()   # never started: its port refuses connections
    for key, value in unreachable.env.items():
        monkeypatch.setenv(key, value)
    with running_shard(shard_dir, unreachable.url(), CONFIG) as server:
        # Then the log still starts at the floor, and a fetch below it is out of range,
        # as on an untiered partition: the floor is on the shard's disk, no listing can
        # bring those records back, so the consumer is not told to retry
        assert log_start(server.address) == floor
        for offset in (0, ranges[1][0], floor - 1):
            reply, _ = fetch(server.address, offset)
            assert isinstance(reply.error, OffsetOutOfRangeError), (offset, reply.error)
            assert f"valid offsets are {floor} to {len(values)}" in str(reply.error)
        assert server.call(lambda: server._tier.view_synced(server._partitions[("t", 0)])) \
            is False
