"""An actor that died in its constructor, in one line (any process).

A shard actor whose manifest cannot be read, or a controller whose metadata cannot,
raises in its constructor; Ray does not restart it, and every call to it then
fails with a RayActorError whose only record of the cause is text: the remote
traceback, whose last line is the exception. ``creation_failure`` reads that line,
so that the shard and controller handles can say why the actor is gone, not that
it is "down or restarting".
"""

from __future__ import annotations


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
