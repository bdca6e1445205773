"""control/shard_reviver.py: the controller's thread has its actor look for shards to start
again when poked, keeps looking while a look asks it to, waits for each new actor's
first answer without holding up its looks, reports a new actor whose first call
failed, and outlives a failed look (the look and the report are neighbours here)."""

from __future__ import annotations

import concurrent.futures
import queue
import threading

from plinth.control.shard_reviver import RevivalLook, ShardReviver
from plinth.errors import RequestTimedOutError, UnavailableError
from plinth.shards.shard_handle import PendingCall, ShardHandle

WAIT_S = 10.0
INTERVAL_S = 0.01


class NewActor(ShardHandle):
    """A new shard actor whose first call (``address``) answers when the test says."""

    def __init__(self, shard_id: str):
        super().__init__(shard_id, actor=None)
        self.first_call: concurrent.futures.Future = concurrent.futures.Future()

    def address(self) -> PendingCall[str]:
        return PendingCall(self.shard_id, "address", self.first_call)


class Looks:
    """The controller's look: hands out ``started`` once, asks again while ``again``; the
    first ``failures`` looks fail as a call to a busy actor does."""

    def __init__(self, started: dict | None = None, again: bool = False, failures: int = 0):
        self.count = 0
        self.again = again
        self._started = started or {}
        self._failures = failures
        self._looked = threading.Condition()

    def __call__(self) -> RevivalLook:
        with self._looked:
            self.count += 1
            self._looked.notify_all()
            if self.count <= self._failures:
                raise RequestTimedOutError("the controller did not answer revive_dead_shards")
            started, self._started = self._started, {}
            return RevivalLook(started, self.again)

    def wait_for(self, count: int) -> None:
        with self._looked:
            if not self._looked.wait_for(lambda: self.count >= count, WAIT_S):
                raise AssertionError(f"{self.count} looks within {WAIT_S} s, not {count}")


def reviver(looks: Looks, failed=lambda shard_id, why: None) -> ShardReviver:
    made = ShardReviver(looks, failed, interval_s=INTERVAL_S)
    made.start()
    return made


def test_a_poked_reviver_looks_and_keeps_looking_while_a_look_asks_it_to():
    # Given a reviver whose looks ask for more (a shard is scheduled)
    looks = Looks(again=True)
    shard_reviver = reviver(looks)
    try:
        # When it is poked (a stats call missed a shard)
        shard_reviver.poke()
        # Then it looks, and again at each interval, without another poke
        looks.wait_for(5)
    finally:
        shard_reviver.stop(WAIT_S)


def test_the_reviver_looks_again_after_a_failed_look():
    # Given a reviver whose first two looks fail (the actor was busy)
    looks = Looks(failures=2)
    shard_reviver = reviver(looks)
    try:
        # When it is poked once
        shard_reviver.poke()
        # Then it looks until a look succeeds
        looks.wait_for(3)
    finally:
        shard_reviver.stop(WAIT_S)


def test_a_new_actor_whose_first_call_fails_is_reported_while_the_looks_go_on_meanwhile():
    # Given a look that started shard-1's new actor, whose first call has no answer yet
    # (its constructor waits for its directory's lock)
    new_actor = NewActor("shard-1")
    looks = Looks(started={"shard-1": new_actor})
    failures: queue.Queue = queue.Queue()
    shard_reviver = reviver(looks, lambda shard_id, why: failures.put((shard_id, why)))
    try:
        shard_reviver.poke()
        # Then the reviver keeps looking while it waits for that answer
        looks.wait_for(5)
        assert failures.empty()
        # When the constructor raises
        new_actor.first_call.set_exception(UnavailableError(
            "shard-1 could not start, and is not restarted: StorageError: locked"))
        # Then the reviver reports it, with the call's error
        assert failures.get(timeout=WAIT_S) == (
            "shard-1", "shard-1 could not start, and is not restarted: StorageError: locked")
    finally:
        shard_reviver.stop(WAIT_S)
