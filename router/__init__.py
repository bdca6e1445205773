"""router: the broker's front door; forwards each request to the shard that holds
its partition or coordinates its group (router.py)."""
