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

Comparing still reads every member, and building the value to compare does
too: 7.5 ms of a 9 ms manifest save at 5,000 partitions in a bare process. A
writer that knows what it changed says so instead (``encode_tracked``): it names
every member it added, changed or removed since the last encoding, gives the
values of those only, and every other member keeps its text unread. A change
the writer failed to name would leave a stale member in the file, so with
``PLINTH_CHECK_TRACKED_CHANGES=1`` in the environment (the test suite sets it,
tests/conftest.py) every tracked encoding is compared with the whole document
encoded from scratch, and a difference is an AssertionError naming the members.

One instance per file, used by that file's one writer (the controller's actor
thread, a shard actor's thread).
"""

from __future__ import annotations

import bisect
import copy
import json
import os
from collections.abc import Callable, Collection, Mapping

from plinth.durable_files import compact_json as _dumps

# Read once, at import: whether every tracked encoding is checked (module docstring).
CHECK_TRACKED_CHANGES = os.environ.get("PLINTH_CHECK_TRACKED_CHANGES") == "1"


class JsonFragments:
    def __init__(self, *members_keys: str) -> None:
        """``members_keys``: the document's keys whose values are maps of members."""
        if not members_keys:
            raise AssertionError("JsonFragments needs the keys of the members' maps")
        # Per members key: each member's name -> (a deep copy of the value last
        # encoded, b'"<name>":<text>').
        self._kept: dict[str, dict[str, tuple[object, bytes]]] = {
            key: {} for key in members_keys}
        # Per members key: the kept members' names, sorted, and their texts in that
        # order; kept in step so that a tracked encoding sorts nothing.
        self._sorted_names: dict[str, list[str]] = {key: [] for key in members_keys}
        self._sorted_texts: dict[str, list[bytes]] = {key: [] for key in members_keys}
        # Per members key: the names of the members the last encoding encoded again
        # (new, or no longer equal; or named by the writer): what a writer that checks
        # its members before writing them has to check again.
        self.encoded_again: dict[str, set[str]] = {key: set() for key in members_keys}
        # Whether ``encode`` has run: before it, no text is kept to leave unread.
        self.whole_encoded = False

    def encode(self, value: dict) -> bytes:
        """``value`` as compact JSON with sorted keys, encoding the members of its
        members keys again only where they changed since the last call."""
        self.whole_encoded = True
        return self._document(value, {})

    def encode_tracked(self, value: dict, changed: Mapping[str, Collection[str]],
                       whole: Callable[[], dict]) -> bytes:
        """As ``encode``, but for each members key of ``changed`` the caller names
        every member it added, changed or removed since the last call, and
        ``value[key]`` holds only the named members that still exist (a named one
        absent was removed); the others keep their kept text. ``whole``: the
        whole document, for the check (module docstring). Only after ``encode``."""
        if not self.whole_encoded:
            raise AssertionError("a tracked encoding before the whole document was encoded "
                                 "once: no text is kept for the members not named")
        text = self._document(value, changed)
        if CHECK_TRACKED_CHANGES:
            _check_tracked(text, _dumps(whole()).encode())
        return text

    def _document(self, value: dict, changed: Mapping[str, Collection[str]]) -> bytes:
        """The bytes, joined once from the members' kept texts: the manifest of 6,000
        partitions is 2.7 MB, and each concatenation of it was a copy into new
        memory (the shard's tracked saves spent more time copying than encoding)."""
        pieces = [b"{"]
        for key in sorted(value):
            pieces.append(_dumps(key).encode() + b":")
            if key in changed:
                self._note_named(key, value[key], changed[key])
                pieces += self._member_pieces(key)
            elif key in self._kept:
                self._compare_members(key, value[key])
                pieces += self._member_pieces(key)
            else:
                pieces.append(_dumps(value[key]).encode())
            pieces.append(b",")
        if len(pieces) == 1:
            pieces.append(b"}")
        else:
            pieces[-1] = b"}"   # in place of the last key's comma
        return b"".join(pieces)

    def _member_pieces(self, members_key: str) -> list[bytes]:
        """{"<name>":<member>,...}: each kept text, sorted by name, in pieces."""
        texts = self._sorted_texts[members_key]
        if not texts:
            return [b"{}"]
        pieces = [b","] * (2 * len(texts) + 1)
        pieces[0], pieces[-1] = b"{", b"}"
        pieces[1::2] = texts
        return pieces

    def _compare_members(self, members_key: str, members: dict) -> None:
        if not isinstance(members, dict):
            raise AssertionError(f"{members_key!r} holds a {type(members).__name__}, not the "
                                 f"dict of members JsonFragments encodes")
        kept = self._kept[members_key]
        self._kept[members_key] = now = {}
        self.encoded_again[members_key] = again = set()
        self._sorted_names[members_key] = names = sorted(members)
        for name in names:
            if not isinstance(name, str):   # json.dumps would turn it into a string key
                raise AssertionError(f"member name {name!r} is not a string")
            member = members[name]
            old = kept.get(name)
            if old is None or old[0] != member:
                old = (copy.deepcopy(member), f"{_dumps(name)}:{_dumps(member)}".encode())
                again.add(name)
            now[name] = old
        self._sorted_texts[members_key] = [now[name][1] for name in names]

    def _note_named(self, members_key: str, members: dict, named: Collection[str]) -> None:
        unnamed = members.keys() - set(named)
        if unnamed:
            raise AssertionError(f"{members_key!r} members {sorted(unnamed)[:3]} were given "
                                 f"but not named as changed")
        kept = self._kept[members_key]
        names, texts = self._sorted_names[members_key], self._sorted_texts[members_key]
        self.encoded_again[members_key] = again = set()
        for name in set(named):
            if not isinstance(name, str):   # json.dumps would turn it into a string key
                raise AssertionError(f"member name {name!r} is not a string")
            at = bisect.bisect_left(names, name)
            there = at < len(names) and names[at] == name
            if name not in members:
                if there:
                    del kept[name], names[at], texts[at]
                continue
            member = members[name]
            kept[name] = (copy.deepcopy(member), f"{_dumps(name)}:{_dumps(member)}".encode())
            if there:
                texts[at] = kept[name][1]
            else:
                names.insert(at, name)
                texts.insert(at, kept[name][1])
            again.add(name)


def _check_tracked(text: bytes, expected: bytes) -> None:
    if text == expected:
        return
    got, want = json.loads(text), json.loads(expected)
    differ = sorted(f"{key}/{name}" for key in want if isinstance(want[key], dict)
                    for name in set(want[key]) | set(got.get(key, {}))
                    if want[key].get(name) != got.get(key, {}).get(name))
    raise AssertionError(f"a tracked encoding missed changes, first {differ[:3]} "
                         f"({len(differ)} members): a change was not named")
