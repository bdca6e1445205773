"""Which local segments to upload, and which uploaded ones the local disk may drop.

Runs on the shard actor's data thread (it reads segments' end offsets and
timestamps, which may load an unopened segment's indexes). Pure decisions over
a partition's segments (partition_log.py) and its remote metadata
(remote_log_metadata.py); the shard acts on them (remote_log_manager.py).

Uploading (issue 14, after KIP-405): a segment is uploaded once it has rolled
(it is not the active segment), is wholly below the high watermark (every
record in it is replicated and acknowledged), holds entries, and is not in
object storage yet. Segments go up oldest first, one at a time.

"In object storage" (``held_remotely``) is judged per segment: the remote
log's readable segments cover every offset of it, or this shard's own uploads
reached past it (total retention may have deleted those remotely since: they
must neither go up again nor stay locally for good). Not "below the remote
end offset": a shard that adopted another shard's later segments (a partition
that came back to it, a draining shard restarted) would count its own
unuploaded ones as uploaded, and drop them.

Local retention: a local segment may be deleted only once it is uploaded
and it is past local retention: ``local.retention.ms`` (its time, as partition_log.py measures it:
its newest record's timestamp capped by its last write, is older) or
``local.retention.bytes`` (the local log without it still holds that much).
Kafka's -2 means "the same as retention.*" (``resolve_local_retention``).
A segment that was never uploaded is never deleted for local retention, and
only a prefix goes, never the active segment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from plinth.shards.segment import Segment
from plinth.shards.tier.remote_log_view import RemoteLogView
from plinth.topics import LOCAL_RETENTION_AS_TOTAL

__all__ = ["LOCAL_RETENTION_AS_TOTAL", "held_remotely", "local_segments_past_retention",
           "resolve_local_retention", "segments_to_upload"]

Uploaded = Callable[[Segment], bool]


def held_remotely(view: RemoteLogView, own_end_offset: int | None = None) -> Uploaded:
    """Whether object storage holds a local segment (module docstring): ``view``
    covers it, or it ends at or below ``own_end_offset``, how far this shard's own
    uploads (and the remote deletions of total retention) reached."""
    def uploaded(segment: Segment) -> bool:
        if own_end_offset is not None and segment.end_offset <= own_end_offset:
            return True
        return not view.is_empty and view.covers(segment.base_offset, segment.end_offset)
    return uploaded


def resolve_local_retention(local_value: int, total_value: int) -> int:
    """local.retention.ms/bytes as used: -2 takes retention.ms/bytes; -1 is unbounded.

    A local retention beyond the total one is the total one (Kafka refuses such
    a config; a log cannot keep locally what it no longer keeps at all)."""
    if local_value == LOCAL_RETENTION_AS_TOTAL:
        return total_value
    if local_value < -1:
        raise AssertionError(f"local retention {local_value}: -2, -1 or >= 0")
    if total_value >= 0 and (local_value < 0 or local_value > total_value):
        return total_value
    return local_value


def segments_to_upload(segments: Sequence[Segment], *, high_watermark: int,
                       uploaded: Uploaded) -> list[Segment]:
    """The rolled segments to upload next, oldest first (module docstring).

    ``segments`` is the partition's, oldest first, the active one last;
    ``uploaded`` says which of them object storage holds (``held_remotely``)."""
    candidates = []
    for segment in segments[:-1]:
        if segment.is_empty or uploaded(segment):
            continue
        if segment.end_offset > high_watermark:
            break   # and so is every later one
        candidates.append(segment)
    return candidates


def local_segments_past_retention(segments: Sequence[Segment], *, now_ms: int,
                                  local_retention_ms: int, local_retention_bytes: int,
                                  uploaded: Uploaded | None) -> list[Segment]:
    """The prefix of uploaded segments the local disk may drop (module docstring).

    The retention values are resolved (``resolve_local_retention``): -1 disables.
    ``uploaded``: which segments object storage holds (None: none is known to)."""
    if uploaded is None:
        return []
    local_bytes = sum(segment.size_bytes for segment in segments)
    doomed = []
    for segment in segments[:-1]:
        if segment.is_empty:
            doomed.append(segment)   # holds nothing (a gap left by continue_at)
            continue
        if not uploaded(segment):
            break   # not uploaded: it stays, and so does every later one
        too_big = local_retention_bytes >= 0 and \
            local_bytes - segment.size_bytes >= local_retention_bytes
        if not (too_big or _too_old(segment, now_ms, local_retention_ms)):
            break
        doomed.append(segment)
        local_bytes -= segment.size_bytes
    return doomed


def _too_old(segment: Segment, now_ms: int, retention_ms: int) -> bool:
    """As PartitionLog measures a segment's age: its newest record, capped by its last write."""
    if retention_ms < 0:
        return False
    return (now_ms - segment.last_written_ms > retention_ms
            or now_ms - segment.max_timestamp_ms > retention_ms)
