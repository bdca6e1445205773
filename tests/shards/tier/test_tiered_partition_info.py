"""What a shard tells of a tiered partition (ShardServer.partition_info, the listOffsets
reply and the controller's describe): its log start (remote included), its local log
start, and the remote log's start, end and bytes, from the RemoteLogView on the
Partition. A real ShardServer on a file:// store (tiered_shard.py); the segments are
uploaded and deleted locally by hand, as the uploader will."""

from __future__ import annotations

from plinth import protocol
from tests.shards.tier.tiered_shard import TieredShard, tiered


def test_an_untiered_partition_has_its_local_start_as_its_start_and_nothing_remote(tmp_path):
    shard = TieredShard(tmp_path / "shard", f"file://{tmp_path}/store")
    try:
        # Given a partition with records, none uploaded
        end_offset = shard.produce_batches(5)
        # When its offsets are listed
        info = shard.list_offsets()
        # Then the local start is the start, and no offset or byte is remote
        assert (info.start_offset, info.local_start_offset, info.end_offset) == (0, 0, end_offset)
        assert (info.remote_start_offset, info.remote_end_offset, info.remote_bytes) == (
            protocol.NO_REMOTE_OFFSET, protocol.NO_REMOTE_OFFSET, 0)
        assert info.size_bytes > 0
    finally:
        shard.close()


def test_a_tiered_partition_tells_its_local_and_remote_offsets_and_bytes_apart(tmp_path):
    shard = TieredShard(tmp_path / "shard", f"file://{tmp_path}/store")
    try:
        # Given a partition whose rolled segments were uploaded and all but the last three
        # deleted locally
        end_offset, local_start = tiered(shard, f"file://{tmp_path}/store", tmp_path)
        remote = shard.on_loop(lambda part: part.remote)
        local_bytes = shard.on_loop(lambda part: part.log.size_bytes)
        # When its offsets are listed (the reply a router gets)
        info = shard.list_offsets()
        # Then the start is the remote start, the local start where the disk's log begins
        assert (info.start_offset, info.local_start_offset, info.end_offset) == (
            0, local_start, end_offset)
        assert 0 < local_start < end_offset
        # And the remote log spans the uploaded segments, overlapping the local log by
        # the two rolled segments that were uploaded but not deleted
        assert (info.remote_start_offset, info.remote_end_offset) == (0, remote.end_offset)
        assert local_start < info.remote_end_offset < end_offset
        assert info.remote_bytes == sum(s.size_bytes for s in remote.segments) > 0
        # And the size is what the local disk holds, not the remote bytes
        assert info.size_bytes == local_bytes
    finally:
        shard.close()
