"""deleteRecords answers that wait for a replicated partition's in-sync followers.

Runs on a shard's loop thread only (shard_server.py, replica_server.py), every
method; no locks.

Kafka's DeleteRecords answers once every replica's low watermark has reached the
new log start offset (its DelayedDeleteRecords), so that a failover cannot start
a partition lower than an answered deletion. Here: the leader saves its floor
(Partition.delete_records), wakes its followers' parked fetches (their answers
carry it: ReplicaFetchResult.log_start_floor), each follower adopts it and says
so in its next fetch (ReplicaFetchPartition.log_start_offset, kept in
``Led.follower_log_starts``), and the answer waits here until every follower in
the partition's in-sync set has. A follower that leaves the in-sync set is not
waited for (it cannot be elected until it has caught up, and catching up brings
the floor). After DELETE_RECORDS_WAIT_MS_MAX the answer is requestTimedOut: the
leader's floor holds all the same, as Kafka's does on its timeout. A partition no
longer led here answers its waits with the error it stopped with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from plinth import limits
from plinth.errors import BrokerError, RequestTimedOutError, TooManyRequestsError

# answer(None): every in-sync follower holds the floor; answer(error): it did not.
Answer = Callable[[BrokerError | None], None]


class DeletionWait(NamedTuple):
    floor: int
    deadline_s: float
    answer: Answer


class DeletionWaits:
    """The waiting deleteRecords answers of the partitions this shard leads, by key."""

    def __init__(self, shard_id: str):
        self.shard_id = shard_id
        self._waits: dict[tuple[str, int], list[DeletionWait]] = {}
        self._count = 0

    def wait(self, led, floor: int, answer: Answer, now_s: float) -> None:
        """Answer once ``led``'s in-sync followers hold ``floor``: at once if they do.
        TooManyRequestsError, answering nothing, past DELETE_RECORDS_PENDING_MAX."""
        if followers_hold(led, self.shard_id, floor):
            answer(None)
            return
        if self._count >= limits.DELETE_RECORDS_PENDING_MAX:
            raise TooManyRequestsError(
                f"{self.shard_id} has {self._count} deleteRecords waiting for followers, "
                f"the limit is {limits.DELETE_RECORDS_PENDING_MAX}; the records before {floor} "
                f"of {led.part.name} are deleted on the leader: retry to learn when its "
                f"followers hold it too")
        deadline_s = now_s + limits.DELETE_RECORDS_WAIT_MS_MAX / 1000
        self._waits.setdefault(led.part.key, []).append(DeletionWait(floor, deadline_s, answer))
        self._count += 1

    def check(self, led) -> None:
        """A follower fetched, or the in-sync set changed: answer what is held now."""
        waits = self._waits.get(led.part.key)
        if not waits:
            return
        held = [w for w in waits if followers_hold(led, self.shard_id, w.floor)]
        if held:
            self._remove(led.part.key, held)
            for wait in held:
                wait.answer(None)

    def expire(self, now_s: float, led_of: Callable[[tuple[str, int]], object]) -> None:
        """Answer the waits whose partition's followers hold the floor (an in-sync set
        that shrank), and those past their deadline, requestTimedOut."""
        for key in list(self._waits):
            led = led_of(key)
            if led is not None:
                self.check(led)
            late = [w for w in self._waits.get(key, ()) if w.deadline_s <= now_s]
            if late:
                self._remove(key, late)
                for wait in late:
                    wait.answer(RequestTimedOutError(
                        f"the records of {key[0]}-{key[1]} before offset {wait.floor} are "
                        f"deleted on its leader {self.shard_id}, but not every in-sync "
                        f"follower held the new log start offset within "
                        f"{limits.DELETE_RECORDS_WAIT_MS_MAX} ms"))

    def fail(self, key: tuple[str, int], error: BrokerError) -> None:
        """The partition is no longer led here: its waits are answered ``error``."""
        waits = self._waits.pop(key, [])
        self._count -= len(waits)
        for wait in waits:
            wait.answer(error)

    def next_deadline_s(self) -> float | None:
        deadlines = [w.deadline_s for waits in self._waits.values() for w in waits]
        return min(deadlines) if deadlines else None

    def _remove(self, key: tuple[str, int], done: list[DeletionWait]) -> None:
        done_ids = {id(w) for w in done}
        left = [w for w in self._waits[key] if id(w) not in done_ids]
        self._count -= len(self._waits[key]) - len(left)
        if left:
            self._waits[key] = left
        else:
            del self._waits[key]


def followers_hold(led, shard_id: str, floor: int) -> bool:
    """Whether every in-sync follower of ``led`` said its log starts at ``floor`` or later."""
    return all(led.follower_log_starts.get(replica, 0) >= floor
               for replica in led.leadership.in_sync if replica != shard_id)
