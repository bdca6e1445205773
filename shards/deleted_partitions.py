"""DeletedPartitions: the partitions a shard deleted with their topic, remembered a while.

Loop thread only (shards/shard_server.py owns one).

Why. A request reaches a shard that does not hold its partition when the map it was
routed by is older than a change: a router between its refreshes, a direct client
between its metadata looks. For a partition that moved, or a shard that restarted on
another's port, "not here, retry" is right: the retry finds the new owner. For a
partition whose topic was deleted it is wrong: nothing will ever serve it, and Kafka
answers UNKNOWN_TOPIC_OR_PARTITION. Only the shard knows, at that moment, which of the
two it is (the router learns of the delete at its next refresh), so it remembers the
partitions it deleted with their topic (ShardServer.delete_partition without
``keep_remote``; a copy dropped after a move or a pruned range is not remembered) and
answers a request for one with UnknownTopicError naming the topic, its id and when.

A topic created again under the same name is a new topic (another id), which must be
served, not refused: a partition opened here again is forgotten at once
(``forget``), and so is every partition of a topic the controller's partition counts
name again (``forget_topics``: the topic exists, wherever its partitions are), so a
stale map's request for it is answered "not here, retry" as before.

Bounds: at most SHARD_DELETED_PARTITIONS_REMEMBERED_MAX partitions (the oldest
deletion forgotten first), each for SHARD_DELETED_PARTITIONS_REMEMBERED_S. Not kept
across a restart: afterwards the answer is the retriable one, as before this module.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from plinth import limits
from plinth.errors import UnknownTopicError


@dataclass(frozen=True)
class Deletion:
    """One deleted partition's topic id ("" unknown) and when it was deleted."""

    topic_id: str
    deleted_unix_s: float      # for the message
    deleted_monotonic_s: float # for the expiry


class DeletedPartitions:
    """(topic, partition) -> Deletion, bounded in number and age. Loop thread only."""

    def __init__(self, remembered_max: int = limits.SHARD_DELETED_PARTITIONS_REMEMBERED_MAX,
                 remembered_s: float = limits.SHARD_DELETED_PARTITIONS_REMEMBERED_S):
        self._remembered_max = remembered_max
        self._remembered_s = remembered_s
        self._deleted: OrderedDict[tuple[str, int], Deletion] = OrderedDict()   # oldest first

    def __len__(self) -> int:
        return len(self._deleted)

    def deleted(self, key: tuple[str, int], topic_id: str) -> None:
        """``key``'s partition was deleted with its topic (of id ``topic_id``) just now."""
        self._deleted.pop(key, None)   # (deleted again: it goes to the young end)
        self._deleted[key] = Deletion(topic_id, time.time(), time.monotonic())
        while len(self._deleted) > self._remembered_max:
            self._deleted.popitem(last=False)

    def forget(self, key: tuple[str, int]) -> None:
        """``key``'s partition opened here again (its topic created again)."""
        self._deleted.pop(key, None)

    def forget_topics(self, names: Iterable[str]) -> None:
        """The topics ``names`` exist (the controller's partition counts): a request for
        one of their partitions is a live topic's, wherever its partitions are now."""
        live = set(names)
        for key in [key for key in self._deleted if key[0] in live]:
            del self._deleted[key]

    def error_for(self, topic: str, partition: int, shard_id: str) -> UnknownTopicError | None:
        """UnknownTopicError naming the topic, its id and when it was deleted, if
        ``topic``-``partition`` was deleted here within the bound; else None."""
        self._expire(time.monotonic())
        deletion = self._deleted.get((topic, partition))
        if deletion is None:
            return None
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deletion.deleted_unix_s))
        of_id = f" (topic id {deletion.topic_id})" if deletion.topic_id else ""
        return UnknownTopicError(
            f"topic {topic!r}{of_id} was deleted (at {at}): {shard_id} deleted partition "
            f"{topic}-{partition} with it")

    def _expire(self, now_s: float) -> None:
        while self._deleted:
            key, deletion = next(iter(self._deleted.items()))
            if now_s - deletion.deleted_monotonic_s < self._remembered_s:
                return
            del self._deleted[key]
