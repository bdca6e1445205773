"""A count with its noun, for messages: ``counted(1, "partition")`` is "1 partition",
``counted(3, "shard")`` "3 shards". Used by the controller's errors and the CLI's
lines alike (any process, any thread)."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, the noun plural (an "s", "es" after an "s") unless the
    count is 1."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith("s") else f"{count} {noun}s"
