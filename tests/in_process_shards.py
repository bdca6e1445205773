"""Real shard actors reached in process, for the tests of the control plane without Ray.

``InProcessShardHandle`` is a ShardHandle whose actor is a ShardActor in this
process (a real ShardServer on a real disk, listening on 127.0.0.1): each call
runs at once, on the caller's thread, and returns an answered PendingCall. Calls
into one actor run one at a time, as Ray runs a (synchronous) actor's methods:
in process the controller calls shards from several threads (the test's, and each
shard's in-sync thread through alter_in_sync), and two set_leadership calls at
once would race on the actor's manifest (its one temp file).
Everything of the handle but Ray's transport is the real code (argument
checks, result types, error mapping), and a failure reaches the handle as
Ray would report it (``ray.exceptions.ActorDiedError`` for a dead actor).

Faults a test can arm:
- ``fail_next(method, error, after_calls=n)``: the call of ``method`` after n
  more calls of it fails with ``error`` without running (a shard that is down,
  or refuses);
- ``crash_controller_at(method)``: starting that call raises ControllerCrash, a
  BaseException nothing in the controller catches: the controller's process
  died at that moment (its metadata is what it saved so far);
- ``restart()``: the actor's process died and Ray started it again (a new
  ShardActor on the same directory, which announces itself);
- ``kill()``: what ShardHandle.kill does: the actor is gone for good (``death()``
  then says what ``died`` holds: Ray's restarts of it, and how it died).
A shard the controller has not started yet is armed with
``InProcessShards.when_started(shard_id, arm)``.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path

import ray.exceptions

from plinth.control.nodes import Node
from plinth.shards.actor import ShardActor
from plinth.shards.shard_handle import PendingCall, ShardHandle, ShardOptions

SHUTDOWN_GRACE_S = 5.0
ONE_NODE = [Node("node-1", "127.0.0.1", True, "node:127.0.0.1")]


class ControllerCrash(BaseException):
    """The controller's process died (raised where a test armed it)."""


class InProcessShardHandle(ShardHandle):
    def __init__(self, options: ShardOptions, announce_to):
        self.options = options
        self._announce_to = announce_to
        self._failures: dict[str, tuple[int, BaseException]] = {}   # method -> (calls left, error)
        self._crash_at: set[str] = set()
        self._alive = True
        self._one_call_at_a_time = threading.RLock()
        self.died: tuple[int, str] = (0, "")
        super().__init__(options.shard_id, self._new_actor())

    def _new_actor(self) -> ShardActor:
        return ShardActor(self.options.shard_id, self.options.data_dir, self.options.fsync_policy,
                          self.options.fsync_interval_ms, bind_host="127.0.0.1",
                          announce_to=self._announce_to, tier=self.options.tier)

    # --- Faults -----------------------------------------------------------------------

    def fail_next(self, method: str, error: BaseException, *, after_calls: int = 0) -> None:
        self._failures[method] = (after_calls, error)

    def crash_controller_at(self, method: str) -> None:
        self._crash_at.add(method)

    def restart(self) -> None:
        self._actor.shutdown(SHUTDOWN_GRACE_S)
        self._alive = False   # calls while the new actor starts (its announcement's) fail at once
        self._actor = self._new_actor()
        self._alive = True

    def stop(self) -> None:
        """The process is gone (with the controller that owned it)."""
        if self._alive:
            self._alive = False
            self._actor.shutdown(SHUTDOWN_GRACE_S)

    @property
    def actor(self) -> ShardActor:
        return self._actor

    # --- ShardHandle's transport ----------------------------------------------------------

    def kill(self) -> None:
        self.stop()

    def death(self) -> tuple[int, str]:
        return self.died

    def _start(self, method, *args) -> PendingCall:
        name = method.__name__
        if name in self._crash_at:
            raise ControllerCrash(f"the controller died calling {name} on {self.shard_id}")
        future: concurrent.futures.Future = concurrent.futures.Future()
        failure = self._planned_failure(name)
        if not self._alive:
            failure = ray.exceptions.ActorDiedError()
        if failure is not None:
            future.set_exception(failure)
            return PendingCall(self.shard_id, name, future)
        try:
            with self._one_call_at_a_time:
                future.set_result(method(self._actor, *args))
        except Exception as exc:   # Ray would carry it back to the caller
            future.set_exception(exc)
        return PendingCall(self.shard_id, name, future)

    def _planned_failure(self, method: str) -> BaseException | None:
        planned = self._failures.get(method)
        if planned is None:
            return None
        calls_left, error = planned
        if calls_left:
            self._failures[method] = (calls_left - 1, error)
            return None
        del self._failures[method]
        return error


class InProcessShards:
    """The controller's ``start_shard``: makes in-process shard handles and keeps
    them by shard id. ``announce_to`` (set once the controller exists) is told each
    shard's address at every start, as the Ray actors tell the controller."""

    def __init__(self):
        self.handles: dict[str, InProcessShardHandle] = {}
        self.announce_to = None
        self._arms: dict[str, Callable[[InProcessShardHandle], None]] = {}

    def when_started(self, shard_id: str, arm: Callable[[InProcessShardHandle], None]) -> None:
        """Run ``arm(handle)`` on the shard's handle as soon as the controller starts it."""
        self._arms[shard_id] = arm

    def start_shard(self, options: ShardOptions) -> InProcessShardHandle:
        handle = InProcessShardHandle(options, self.announce_to)
        self.handles[options.shard_id] = handle
        arm = self._arms.pop(options.shard_id, None)
        if arm is not None:
            arm(handle)
        return handle

    def find_shard(self, shard_id: str) -> InProcessShardHandle | None:
        """The controller's ``find_shard``: the shard's handle while its actor is alive
        (a restarted controller adopts it), else None."""
        handle = self.handles.get(shard_id)
        return handle if handle is not None and handle._alive else None

    def stop_all(self) -> None:
        for handle in self.handles.values():
            handle.stop()

    def directory(self, shard_id: str) -> Path:
        return Path(self.handles[shard_id].options.data_dir)
