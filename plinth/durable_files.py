"""Replacing small files so that a crash leaves the old or the new one, never a mix;
and reading small JSON config files strictly.

Any process or thread may call these (each file has one writer).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_file_atomically(path: Path, data: bytes, *, sync_dir: bool = False) -> None:
    """Write ``data`` to a temp file, fsync it, rename it over ``path``.

    The fsync before the rename means a crash never leaves a well-formed but
    empty file in place of a full one. ``sync_dir`` also fsyncs the directory,
    making the rename itself durable (for files whose loss would lose state).
    """
    path = Path(path)
    temporary_path = path.with_name(path.name + ".tmp")
    fd = os.open(temporary_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary_path, path)
    if sync_dir:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_json_atomically(path: Path, value) -> None:
    """``value`` as compact JSON (keys sorted), replaced atomically and durably.

    Compact, not indented: json's C encoder serves only ``indent=None``; with an
    indent it falls back to pure Python, 3 to 4 times slower (4 MB and 345 ms
    indented, 83 ms compact, for a metadata.json of 10,000 topics). The two files
    rewritten at every topic created, the controller's metadata.json and each
    shard's manifest.json, are written in this same format through
    plinth/json_fragments.py, which encodes only their changed members."""
    write_file_atomically(path, compact_json(value).encode(), sync_dir=True)


def compact_json(value) -> str:
    """The JSON of the files this module writes: keys sorted, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json's object_pairs_hook for a config file: a key given twice is a ValueError
    (json would keep the last silently): the ACL, the Kafka users file."""
    seen: dict = {}
    for name, value in pairs:
        if name in seen:
            raise ValueError(f"{name!r} appears twice in one object")
        seen[name] = value
    return seen
