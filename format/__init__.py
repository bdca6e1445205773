"""format: the record format, shared by client and shards (see record_batch.py)."""
