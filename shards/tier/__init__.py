"""Tiered storage (issue 14): sealed segments in object storage.

    remote_store.py         the object-store contract and its obstore implementation
    remote_segment.py       the objects of one uploaded segment, its manifest, upload and read
    remote_log_metadata.py  one partition's remote segments and their states, journaled
    remote_log_view.py      an immutable snapshot of them, for the shard's loop thread
    remote_transfer.py      upload, clean up, delete, list and read remote segments
    chunk_cache.py          remote log bytes cached on local disk, bounded, with read-ahead
    remote_fetcher.py       fetches below the local log start (or in a gap of it), on the
                            shard's reader thread
    tier_policy.py          which local segments to upload, and which the disk may drop
    remote_log_manager.py   the shard's uploader thread: uploads, retention, topic deletion,
                            sealed ranges wholly remote, re-syncs for a removed shard's range
"""
