"""actor_failures.py: the error of a call to an actor that died in its constructor is
read down to the exception it raised. Ray's own exception classes, built as Ray
builds them when a creation task fails."""

from __future__ import annotations

import ray.exceptions

from plinth.actor_failures import creation_failure, died_in_constructor, killed_how
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


def test_a_death_by_sigkill_is_said_to_be_possibly_the_oom_killer():
    assert killed_how("The worker was killed by signal 9 (SIGKILL)") == (
        "killed by SIGKILL (possibly the kernel's OOM killer)")


def test_a_death_by_rays_memory_monitor_is_said_to_be_out_of_memory():
    assert killed_how("Task was killed due to the node running low on memory. Ray's "
                      "memory monitor ...").startswith("killed: out of memory")


def test_a_sigkilled_workers_death_as_ray_says_it_is_a_vanished_process_not_an_oom():
    # Ray's DeathCause of an actor whose process got SIGKILL (checked on Ray 2.60): its
    # list of common causes names the OOM killer whatever happened, and is not read
    assert killed_how(
        "The actor is dead because its worker process has died. Worker exit type: "
        "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error "
        "code 2. End of file. Some common causes include: (1) the process was killed by the "
        "OOM killer due to high memory usage, (2) ray stop --force") == (
        "its process vanished: killed (SIGKILL: kill -9 or the kernel's OOM killer) or crashed")
    assert killed_how("The actor is dead because it was killed by `ray.kill`.") == ""


def test_a_death_cause_of_a_constructor_that_raised_is_told_from_any_other_death():
    # Given Ray's actor table's death causes (protobuf text), one per kind of death
    raised = 'creation_task_failure_context {\n  error_message: "StorageError: locked"\n}'
    killed = 'actor_died_error_context {\n  error_message: "The actor is dead because ..."\n}'
    # Then only the constructor's is a death in the constructor
    assert died_in_constructor(raised)
    assert not died_in_constructor(killed) and not died_in_constructor("")
