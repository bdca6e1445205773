"""actor_failures.py: the error of a call to an actor that died in its constructor is
read down to the exception it raised. Ray's own exception classes, built as Ray
builds them when a creation task fails."""

from __future__ import annotations

import ray.exceptions

from plinth.actor_failures import creation_failure
from plinth.errors import CorruptDataError

REMOTE_TRACEBACK = (
    "ray::ShardActor.__init__() (pid=4321, ip=127.0.0.1, actor_id=abc)\n"
    '  File "/work/main/shards/actor.py", line 90, in __init__\n'
    "    self._manifest = ShardManifest.load(self._manifest_path)\n"
    "plinth.errors.CorruptDataError: /d/shards/shard-0/manifest.json: not a shard manifest: "
    "Unterminated string starting at: line 1 column 40 (char 39)\n")


def died_in_its_constructor() -> ray.exceptions.ActorDiedError:
    cause = CorruptDataError("/d/shards/shard-0/manifest.json: not a shard manifest")
    task_error = ray.exceptions.RayTaskError("ShardActor.__init__", REMOTE_TRACEBACK, cause)
    return ray.exceptions.ActorDiedError(task_error)


def test_an_actor_that_died_in_its_constructor_is_said_in_the_exceptions_one_line():
    assert creation_failure(died_in_its_constructor()) == (
        "CorruptDataError: /d/shards/shard-0/manifest.json: not a shard manifest: "
        "Unterminated string starting at: line 1 column 40 (char 39)")


def test_an_actor_that_died_otherwise_or_any_other_error_is_none():
    assert creation_failure(ray.exceptions.ActorDiedError()) is None
    assert creation_failure(ValueError("x")) is None
