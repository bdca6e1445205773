"""How many partitions a shard may hold open: its process's limit on open files.

Runs in the shard actor, on its actor thread. Each open partition holds one
file open, its active segment's .log (segment.py); rolled segments share
SEGMENT_FILES_OPEN_MAX more (segment_files.py), and the sockets, the Ray
worker's own files and the short-lived opens of indexes and snapshots need
SHARD_FILES_RESERVED. So a shard whose soft limit on open files is L may hold

    L - SEGMENT_FILES_OPEN_MAX - SHARD_FILES_RESERVED      partitions.

A create or a growth that would need more is refused before any of its
partitions opens (``check_room``: InvalidPartitionsError, naming the shard, the
counts and the limit). Before, the shard opened files until one open failed
with EMFILE, and every later create and segment roll on it failed too.

The soft limit is often 1,024 while the hard limit allows far more; a shard
raises its soft limit to the hard one when it starts (``raise_soft_limit``), as
Go's runtime does for every program.
"""

from __future__ import annotations

import resource

from plinth import limits
from plinth.errors import InvalidPartitionsError


def raise_soft_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit; returns the
    (before, after) soft limits. Any thread; once, at the process's start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return soft, hard
    return soft, soft


def partitions_max() -> int:
    """How many partitions this process may hold open (the module docstring)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _room_under(soft)


def _room_under(files_max: int) -> int:
    """How many partitions a shard whose soft limit on open files is ``files_max`` may
    hold open."""
    if files_max == resource.RLIM_INFINITY:
        return limits.PARTITIONS_PER_TOPIC_MAX * limits.TOPICS_MAX
    return max(0, files_max - limits.SEGMENT_FILES_OPEN_MAX - limits.SHARD_FILES_RESERVED)


def start_warning() -> str | None:
    """What ``plinth serve`` says at start if the shards it starts on this machine
    (they inherit its limits, and raise their soft limit to the hard one) will have
    room for fewer than SHARD_PARTITIONS_ROOM_WARN_MIN partitions each; else None.
    Any thread."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = _room_under(hard)
    if room >= limits.SHARD_PARTITIONS_ROOM_WARN_MIN:
        return None
    return (f"the open-file limit here is {hard} (ulimit -Hn), so each shard will have room "
            f"for {room} partitions ({limits.SEGMENT_FILES_OPEN_MAX} files are kept for "
            f"rolled segments and {limits.SHARD_FILES_RESERVED} for sockets and the rest), "
            f"fewer than {limits.SHARD_PARTITIONS_ROOM_WARN_MIN}: raise it where the broker "
            f"starts (ulimit -n, LimitNOFILE= under systemd)")


def check_room(shard_id: str, open_count: int, new_count: int) -> None:
    """InvalidPartitionsError unless ``new_count`` more partitions fit beside the
    ``open_count`` this shard holds. Opening none is always taken: a shard reopening
    what it holds (the controller's call at every start) on a limit that has room
    for fewer serves them as before, and refusing made `plinth serve` say "not
    ready" about partitions that served (tester D, session 39, at ulimit -n 256)."""
    room = partitions_max()
    if new_count == 0 or open_count + new_count <= room:
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise InvalidPartitionsError(
        f"{shard_id} cannot open {new_count} more partitions: it holds {open_count}, and its "
        f"limit of {soft} open files leaves room for {room} ({limits.SEGMENT_FILES_OPEN_MAX} "
        f"are kept for rolled segments and {limits.SHARD_FILES_RESERVED} for sockets and the "
        f"rest); raise the limit (ulimit -n, LimitNOFILE= under systemd) where the broker "
        f"starts" + (", or add shards (plinth shards add)" if room else ""))
