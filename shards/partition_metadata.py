"""A partition directory's topic id: the file ``partition.metadata``, as Kafka keeps one.

A partition's directory is named by its topic's name and partition (``orders-0``),
and a topic deleted and created again gets the same name and a new id
(topics.new_topic_id). A deletion forgets the partition in the shard's manifest
before it removes the directory (shards/actor.py, ``delete_partitions``): a crash
between the two leaves the old log in a directory no manifest names, and the new
topic's partition would open it and serve the deleted topic's records as its own.
So the directory says whose it is, and a shard creating a partition (not
reopening one its manifest names) sets aside a directory that holds records and
does not say it is this topic id's (``foreign_log``, ``set_aside``): renamed
``<name>.<ns>-orphan`` and kept, for an operator to look at and remove (plinth
check lists it). A partition the shard reopens (its manifest, or the controller,
says it is this topic's) keeps its log whatever the file says: a file naming
another id there is damage (a flipped bit makes a valid-looking id), logged.
Which of the file and the manifest is damaged, the controller's id says when it
opens the partition: the file is written again, or the manifest's entry is
(shard_server.py, ``_settle_topic_id``). A log whose file and manifest both name
another id than the controller's is set aside too, never deleted: the topic was
deleted and created again while the shard was down, or the controller's id is
the damaged one, and nothing on disk tells which (``_set_stray_aside``).

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
import os
import time
from pathlib import Path

from plinth.durable_files import fsync_directory, write_file_atomically
from plinth.errors import StorageError

log = logging.getLogger(__name__)

PARTITION_METADATA_FILE = "partition.metadata"
ORPHAN_SUFFIX = "-orphan"
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


def load_topic_id(directory: Path, *, quiet: bool = False) -> str | None:
    """The topic id the directory says it holds; None if it says none (no directory,
    no file, or a file that is not one: logged unless ``quiet``)."""
    path = Path(directory) / PARTITION_METADATA_FILE
    try:
        text = path.read_bytes().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    if text.startswith(_PREFIX) and text.endswith("\n") and \
            _is_topic_id(topic_id := text[len(_PREFIX):-1]):
        return topic_id
    if not quiet:
            log.error("%s is not a partition.metadata file (%d bytes): the file is written "
                  "again", path, len(text))
    return None


def _is_topic_id(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable() and \
        not any(c.isspace() for c in text)


def foreign_log(directory: Path, topic_id: str) -> str:
    """Why the records in ``directory`` may not be topic ``topic_id``'s ("" if they
    are, or there are none): its file names another id, or it has none (a deleted
    topic's leftover from before this file, or a create a crash cut short)."""
    held = load_topic_id(directory, quiet=True)
    if held == topic_id or not _log_bytes(directory):
        return ""
    if held is None:
        return "it does not say whose it is (no partition.metadata, or a bad one)"
    return f"its partition.metadata names topic id {held}"


def set_aside(directory: Path) -> Path:
    """Rename ``directory`` to ``<name>.<ns>-orphan`` beside it, durably; returns the
    new path. StorageError naming it if the disk refuses."""
    directory = Path(directory)
    aside = directory.with_name(f"{directory.name}.{time.time_ns()}{ORPHAN_SUFFIX}")
    try:
        os.replace(directory, aside)
        fsync_directory(directory.parent)
    except OSError as exc:
        raise StorageError(f"cannot set {directory} aside as {aside}: "
                           f"{exc.strerror or exc}") from None
    return aside


def _log_bytes(directory: Path) -> int:
    """The bytes of the .log files in ``directory`` (0 if it is missing)."""
    try:
        with os.scandir(directory) as entries:
            return sum(entry.stat().st_size for entry in entries
                       if entry.name.endswith(".log") and entry.is_file())
    except FileNotFoundError:
        return 0
