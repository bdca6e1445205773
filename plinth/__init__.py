"""Plinth: a durable, partitioned log broker.

    from plinth import Producer, Consumer, Admin, NewTopic, TopicPartition
"""

from plinth.version import VERSION as __version__

__all__ = ["Producer", "Consumer", "Admin", "NewTopic", "TopicPartition", "OffsetAndMetadata",
           "__version__"]


def __getattr__(name):
    # Lazy, so that `import plinth.limits` in a shard or router does not pull
    # in the client and its sockets.
    if name == "Producer":
        from plinth.client.producer import Producer
        return Producer
    if name == "Consumer":
        from plinth.client.consumer import Consumer
        return Consumer
    if name == "Admin":
        from plinth.client.admin import Admin
        return Admin
    if name == "NewTopic":   # Admin.create_topics' argument (kafka-python's name)
        from plinth.client.admin import NewTopic
        return NewTopic
    if name == "TopicPartition":   # what poll() keys its records by (kafka-python's name)
        from plinth.client.fetcher import TopicPartition
        return TopicPartition
    if name == "OffsetAndMetadata":   # committed(tp, metadata=True)'s (kafka-python's name)
        from plinth.client.fetcher import OffsetAndMetadata
        return OffsetAndMetadata
    raise AttributeError(f"module 'plinth' has no attribute {name!r}")
