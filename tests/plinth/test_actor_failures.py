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


def rays_death_cause(**context) -> str:
    """The actor table's DeathCause text of a real ActorDeathCause (Ray's own generated
    protobuf class, Ray 2.60), its one ``context`` field set to ``context``'s, as
    ShardHandle.death reads it (str() of the message: protobuf's text format)."""
    from google.protobuf import text_format
    from ray.core.generated import common_pb2

    [(field, values)] = context.items()
    cause = common_pb2.ActorDeathCause()
    for name, value in values.items():
        setattr(getattr(cause, field), name, value)
    assert str(cause) == text_format.MessageToString(cause)
    return str(cause)


# Ray 2.60's raylet's words for a worker its memory monitor killed (its format strings,
# filled in): nothing in them says "out of memory" or "oom"
RAYS_MEMORY_MONITOR_MESSAGE = (
    "1 worker(s) were killed due to the node running low on memory. Memory on the node "
    "(IP: 10.0.0.5, ID: 5f1c) was 7.61GB used / 7.70GB limit (0.988312)")


def test_a_death_by_rays_memory_monitor_is_read_from_its_actor_tables_oom_context_field():
    # Given the DeathCause Ray's actor table holds for an actor its memory monitor killed
    cause = rays_death_cause(oom_context={"error_message": RAYS_MEMORY_MONITOR_MESSAGE,
                                          "fail_immediately": True})
    assert cause.startswith("oom_context {")
    # Then it is said to be Ray's memory monitor, from the field, whatever the message
    assert killed_how(cause) == "killed by Ray's memory monitor: its node ran low on memory"
    assert killed_how(rays_death_cause(oom_context={"fail_immediately": False})) == (
        "killed by Ray's memory monitor: its node ran low on memory")
    assert not died_in_constructor(cause)
    # And Ray's other death causes are not, though their messages name oom_context or memory
    died = rays_death_cause(actor_died_error_context={
        "error_message": "The actor is dead because it was killed by `ray.kill`: "
                         "oom_context { } is not set"})
    raised = rays_death_cause(creation_task_failure_context={
        "formatted_exception_string": "StorageError: the node running low on memory"})
    assert killed_how(died) == "" and killed_how(raised) == ""
    # And the constructor's, from Ray's own class too, is a death in the constructor
    assert died_in_constructor(raised) and not died_in_constructor(died)
