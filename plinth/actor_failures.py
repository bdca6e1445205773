"""An actor that died in its constructor, in one line (any process).

A shard actor whose manifest cannot be read, or a controller whose metadata cannot,
raises in its constructor; Ray does not restart it, and every call to it then
fails with a RayActorError whose only record of the cause is text: the remote
traceback, whose last line is the exception. ``creation_failure`` reads that line,
so that the shard and controller handles can say why the actor is gone, not that
it is "down or restarting".
"""

from __future__ import annotations

import re


def creation_failure(error: BaseException) -> str | None:
    """``error`` (from a call to an actor) says the actor died in its constructor: the
    exception it raised, as "<class name>: <message>" (no module path); else None."""
    if not getattr(error, "_actor_init_failed", False):
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return "its constructor raised"
    name, colon, message = lines[-1].partition(": ")
    return f"{name.rpartition('.')[2]}{colon}{message}"


_KILLED = ("SIGKILL", "signal 9", "killed by signal", "exit code 137")
_OOM = re.compile(r"out of memory|\boom\b|memory monitor", re.IGNORECASE)
# Ray's words for a worker whose process vanished (its connection to the raylet hit end
# of file) without exiting through Ray: a signal killed it (SIGKILL: kill -9, or the
# kernel's OOM killer, which Ray cannot tell apart) or it crashed. Ray 2.x's text,
# checked against a SIGKILLed actor's DeathCause.
_VANISHED = "unexpectedly exits with a connection error"


def killed_how(cause: str) -> str:
    """Ray's text of an actor's death cause (its ActorDiedError, its actor table's
    DeathCause) in a few words, when it says the process was killed: "" otherwise.
    A DeathCause whose context is ``oom_context`` (_DEATH_CAUSE_OOM) is a kill by
    Ray's memory monitor, whatever its message says.
    The kernel's OOM killer sends SIGKILL, so a SIGKILL is said to be possibly it;
    Ray reports a SIGKILLed worker only as one whose process vanished (_VANISHED).
    Ray's list of "common causes" it appends to any lost worker (the OOM killer among
    them) is not read: it says nothing of this death."""
    if _death_cause_context(cause) == _DEATH_CAUSE_OOM:
        return "killed by Ray's memory monitor: its node ran low on memory"
    cause = cause.split("Some common causes")[0]
    lowered = cause.lower()
    if _OOM.search(cause):
        return "killed: out of memory (the kernel's OOM killer or Ray's memory monitor)"
    if any(word.lower() in lowered for word in _KILLED):
        return "killed by SIGKILL (possibly the kernel's OOM killer)"
    if _VANISHED in lowered:
        return "its process vanished: killed (SIGKILL: kill -9 or the kernel's OOM killer) or crashed"
    return ""


# Fields of Ray's ActorDeathCause (its actor table's DeathCause, in protobuf's text
# format: the one field of its ``context`` oneof that is set, then its message in
# braces; Ray 2.60's gcs.proto/common.proto). The actor raised in its constructor
# (Ray does not restart it):
_CREATION_FAILED = "creation_task_failure_context"
# Ray's memory monitor killed its worker (an OomContext: error_message, fail_immediately);
# the kernel's OOM killer is not told apart from any SIGKILL (actor_died_error_context).
_DEATH_CAUSE_OOM = "oom_context"
_CONTEXT_FIELD = re.compile(r"\s*([a-z_]+)\s*\{")


def _death_cause_context(cause: str) -> str:
    """The field an actor table's DeathCause text sets (e.g. "oom_context"); "" if the
    text is not one (an exception's message, nothing)."""
    field = _CONTEXT_FIELD.match(cause)
    return field.group(1) if field else ""


def died_in_constructor(cause: str) -> bool:
    """Ray's text of an actor's death cause (its actor table's DeathCause) says it
    raised in its constructor (its directory locked by another process, a manifest
    it cannot read): Ray did not restart it, and the controller does not either."""
    return _death_cause_context(cause) == _CREATION_FAILED
