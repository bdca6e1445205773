"""A partition directory's topic id: the file ``partition.metadata``, as Kafka keeps one.

A partition's directory is named by its topic's name and partition (``orders-0``),
and a topic deleted and created again gets the same name and a new id
(topics.new_topic_id). A deletion forgets the partition in the shard's manifest
before it removes the directory (shards/actor.py, ``delete_partitions``): a crash
between the two leaves the old log in a directory no manifest names, and the new
topic's partition would open it and serve the deleted topic's records as its own.
So the directory says whose it is, and a shard opening a partition of topic id X
deletes a directory that says another id first (shard_server.py,
``open_partition``), as it deletes an open partition of a deleted topic.

The file, ASCII text, written whole and replaced atomically (durable_files.py:
temp file, fsync, rename, fsync of the directory) when the partition first opens
with its topic's id:

    version: 1\\n
    topic_id: <the topic's id>\\n

No file is a log written before this file existed, or one whose topic id was not
known: it is taken as the topic's and the file is written. A file that is not
one ``save_topic_id`` wrote is the same (logged): refusing to open a partition
over a damaged file of a few bytes would hide records that are there. Runs on
the shard's loop thread, every function.
"""

from __future__ import annotations

import logging
from pathlib import Path

from plinth.durable_files import write_file_atomically
from plinth.errors import StorageError

log = logging.getLogger(__name__)

PARTITION_METADATA_FILE = "partition.metadata"
VERSION = 1


_PREFIX = f"version: {VERSION}\ntopic_id: "


def metadata_bytes(topic_id: str) -> bytes:
    """The file's bytes for ``topic_id``, as in the module docstring."""
    if not _is_topic_id(topic_id):
        raise AssertionError(f"topic id {topic_id!r} is not one")
    return f"{_PREFIX}{topic_id}\n".encode("ascii")


def save_topic_id(directory: Path, topic_id: str) -> None:
    """Make ``topic_id`` the directory's, durably; StorageError naming the file if the
    disk refuses."""
    path = Path(directory) / PARTITION_METADATA_FILE
    try:
        write_file_atomically(path, metadata_bytes(topic_id), sync_dir=True)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None


def load_topic_id(directory: Path) -> str | None:
    """The topic id the directory says it holds; None if it says none (no directory,
    no file, or a file that is not one: logged)."""
    path = Path(directory) / PARTITION_METADATA_FILE
    try:
        text = path.read_bytes().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    if text.startswith(_PREFIX) and text.endswith("\n") and \
            _is_topic_id(topic_id := text[len(_PREFIX):-1]):
        return topic_id
    log.error("%s is not a partition.metadata file (%d bytes): the log is taken as its "
              "topic's, and the file written again", path, len(text))
    return None


def _is_topic_id(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable() and \
        not any(c.isspace() for c in text)
