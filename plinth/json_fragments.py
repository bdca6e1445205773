"""Encoding a large JSON document again after a small change, re-encoding only what changed.

The controller's ``metadata.json`` and each shard's ``manifest.json`` are
rewritten whole after every change, before it is acknowledged, and hold one
member per topic (per partition): 2 MB at 5,000 topics. Encoding them took
most of a topic's creation at that size (json.dumps alone: 17 ms of the
controller's 30 ms in a bare process, more in a Ray worker), although a create
changes one member. ``JsonFragments`` keeps each member's encoded text and the
value it encoded, and encodes only the members whose value is no longer equal
(``==``) to the one kept.

The bytes are exactly ``json.dumps(value, sort_keys=True, separators=(",", ":"))``
(the files' format does not change; ``tests/plinth/test_json_fragments.py`` checks it):

    {"<key>":<value>,...}                      the document's keys, sorted
    "<members key>":{"<name>":<member>,...}    the keys given to JsonFragments ("topics";
                                               "partitions", "partition_counts"): their
                                               members, sorted, each the text kept for it
                                               if its value is still equal

Values are compared with ``==``, so members must keep their types (1, 1.0 and
True are equal and encode differently): both files build theirs from typed
fields. The values kept are deep copies, so a caller that changes a value in
place after encoding it cannot make a kept text stale.

One instance per file, used by that file's one writer (the controller's actor
thread, a shard actor's thread).
"""

from __future__ import annotations

import copy

from plinth.durable_files import compact_json as _dumps


class JsonFragments:
    def __init__(self, *members_keys: str) -> None:
        """``members_keys``: the document's keys whose values are maps of members."""
        if not members_keys:
            raise AssertionError("JsonFragments needs the keys of the members' maps")
        # Per members key: each member's name -> (a deep copy of the value last
        # encoded, b'"<name>":<text>').
        self._kept: dict[str, dict[str, tuple[object, bytes]]] = {
            key: {} for key in members_keys}
        # Per members key: the names of the members the last ``encode`` encoded again
        # (new, or no longer equal): what a writer that checks its members before
        # writing them has to check again.
        self.encoded_again: dict[str, set[str]] = {key: set() for key in members_keys}

    def encode(self, value: dict) -> bytes:
        """``value`` as compact JSON with sorted keys, encoding the members of its
        members keys again only where they changed since the last call."""
        parts = []
        for key in sorted(value):
            if key in self._kept:
                text = self._encode_members(key, value[key])
            else:
                text = _dumps(value[key]).encode()
            parts.append(_dumps(key).encode() + b":" + text)
        return b"{" + b",".join(parts) + b"}"

    def _encode_members(self, members_key: str, members: dict) -> bytes:
        if not isinstance(members, dict):
            raise AssertionError(f"{members_key!r} holds a {type(members).__name__}, not the "
                                 f"dict of members JsonFragments encodes")
        kept = self._kept[members_key]
        self._kept[members_key] = now = {}
        self.encoded_again[members_key] = again = set()
        parts = []
        for name in sorted(members):
            if not isinstance(name, str):   # json.dumps would turn it into a string key
                raise AssertionError(f"member name {name!r} is not a string")
            member = members[name]
            old = kept.get(name)
            if old is None or old[0] != member:
                old = (copy.deepcopy(member), f"{_dumps(name)}:{_dumps(member)}".encode())
                again.add(name)
            now[name] = old
            parts.append(old[1])
        return b"{" + b",".join(parts) + b"}"
