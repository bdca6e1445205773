"""Ray's error messages to a server, in Plinth's words.

Ray's driver (the process that called ``ray.init``: ``plinth serve``, ``plinth
router``) runs a thread that prints every error message the raylets publish,
as ``(raylet) <message>``. The one a user meets is the death of a worker
process: a shard or the controller killed (kill -9, a failover test) or
crashed. Ray's text for it is a paragraph that names the kernel's OOM killer
and ``ray stop --force`` as likely causes, and suggests resource isolation;
after a kill -9 it misleads, and it names no shard.

``route_raylet_messages`` (server process, main thread, after ``ray.init``)
makes that thread log through ``plinth.ray`` instead: a worker's death is one
warning line with its pid and exit type, naming the shard (or the controller)
that ran in it when the broker's controller knows the pid, saying what Ray does
about it; any other raylet message is a warning with Ray's text. Ray's full text of a death
goes to the same logger at DEBUG. Ray's log lines of the workers themselves
(``log_to_driver``) are not touched: they do not pass through here.

The thread calls ``ray._private.worker.print_to_stdstream`` by its module
name at each message, so replacing that name is enough; Ray is pinned
(pyproject.toml), and a Ray without the name fails ``route_raylet_messages``
at start (AttributeError), not silently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

log = logging.getLogger("plinth.ray")

RAYLET = "raylet"   # the "pid" Ray's error thread gives every message it prints
_WORKER_DIED = re.compile(r"A worker died or was killed")
_WORKER_PID = re.compile(r"Worker PID: (\d+)")
_EXIT_TYPE = re.compile(r"Worker exit type: (\w+)")
# Ray's memory monitor's own words when it kills a worker (the kernel's OOM killer's
# SIGKILL reaches Ray only as a lost connection, which says nothing of memory).
_MEMORY_MONITOR = re.compile(r"memory monitor|running low on memory|OutOfMemory", re.IGNORECASE)


# How long the death's line waits for the controller to name the process: Ray's error
# thread waits with it, and a dead controller (restarting) answers nothing.
OWNER_LOOKUP_TIMEOUT_S = 2.0


def worker_death_line(message: str, owner_of_pid: Callable[[int], str] | None = None
                      ) -> str | None:
    """Plinth's one line for Ray's message of a worker process's death; None for
    any other message. ``owner_of_pid(pid)``: the shard id or "controller" that ran
    in it, "" if not known."""
    if not _WORKER_DIED.search(message):
        return None
    pid = _WORKER_PID.search(message)
    exit_type = _EXIT_TYPE.search(message)
    owner = ""
    if pid and owner_of_pid is not None:
        owner = owner_of_pid(int(pid.group(1)))
        owner = "the controller" if owner == "controller" else owner
    hosted = owner or "the controller or shard it hosted"
    how = ("killed by Ray's memory monitor: out of memory" if _MEMORY_MONITOR.search(message)
           else "killed (SIGKILL: kill -9, or the kernel's OOM killer) or crashed")
    return (f"a Ray worker process (pid {pid.group(1) if pid else 'unknown'}"
            f"{f', {owner}' if owner else ''}) ended "
            f"unexpectedly ({exit_type.group(1) if exit_type else 'no exit type'}: {how}); "
            f"Ray restarts {hosted}, which reopens its logs: plinth status shows "
            f"it serving again, and its log (<data dir>/logs) says what it recovered; "
            f"a shard that died SHARD_RESTARTS_MAX times is started anew by the "
            f"controller after a backoff (an ERROR line says so)")


def controller_owner_of_pid(pid: int) -> str:
    """The broker's controller's answer to which shard ran in ``pid`` (Ray's error
    thread); "" if it does not answer within OWNER_LOOKUP_TIMEOUT_S, or Ray is not
    connected: the line is logged without the name then."""
    import ray

    if not ray.is_initialized():
        return ""
    from plinth.control.controller_handle import ControllerHandle

    try:
        return ControllerHandle.find().process_owner(pid, OWNER_LOOKUP_TIMEOUT_S)
    except Exception as exc:   # (dead, restarting, or not there: the name is a nicety)
        log.debug("could not ask the controller whose process %d was: %s", pid, exc)
        return ""


def route_raylet_messages(owner_of_pid: Callable[[int], str] = controller_owner_of_pid
                          ) -> None:
    """Log the raylets' messages through ``plinth.ray`` (see the module). Server
    process, once, after ``ray.init``. ``owner_of_pid``: as worker_death_line's."""
    import ray._private.worker as ray_worker

    printed = ray_worker.print_to_stdstream   # AttributeError if Ray renamed it

    def print_to_stdstream(data, ignore_prefix: bool):
        if data.get("pid") != RAYLET:
            printed(data, ignore_prefix)
            return
        for message in data.get("lines", []):
            line = worker_death_line(message, owner_of_pid)
            if line is None:
                log.warning("ray: %s", message)
            else:
                log.warning("%s", line)
                log.debug("ray: %s", message)

    ray_worker.print_to_stdstream = print_to_stdstream
