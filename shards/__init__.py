"""shards: the storage actors; each owns its partitions' logs and serves their reads
(shard_server.py), hosted by a Ray actor (actor.py) behind a typed handle
(shard_handle.py)."""
