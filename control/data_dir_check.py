"""What a broker checks of its data dir's stored state before it starts on it.

Called by ``plinth serve`` before Ray starts (so that a damaged file is one line on
the terminal, not an actor that dies in its constructor), and by the controller
actor at its start (a broker started another way). Any process; reads only.

Two kinds of file say what a broker holds:

    <data dir>/metadata.json                      the controller's: topics, their ids,
                                                  configs, replica sets, shards
    <data dir>/shards/<shard id>/manifest.json    a shard's: the partitions it serves

and the partition logs beside each manifest are the data. A broker must not start:

- on a metadata.json or a manifest that cannot be read as one: CorruptDataError
  naming the file (a broker that went on without it would serve less than it
  acknowledged);
- without metadata.json while a manifest on this node names partitions: it would
  start as an empty broker, serve none of them, and a topic created again under one
  of their names (a new topic id) would delete that partition's log. The metadata
  was lost (a wiped file, a data dir copied in part): CorruptDataError saying so,
  and what to do.

A manifest that is missing is not refused: the controller opens the shard's
partitions again from metadata.json (controller.py, "a shard that lost its
manifest").
"""

from __future__ import annotations

from pathlib import Path

from plinth.control.metadata import METADATA_FILE, BrokerMetadata
from plinth.control.shard_set import SHARDS_DIR
from plinth.errors import CorruptDataError
from plinth.shards.shard_handle import MANIFEST_FILE, ShardManifest

# Topics named in the lost-metadata refusal, at most.
TOPICS_NAMED_MAX = 5


def load_checked_metadata(data_dir: Path,
                          manifests: dict[Path, ShardManifest] | None = None) -> BrokerMetadata:
    """The broker metadata of ``data_dir`` (empty for a new broker), or CorruptDataError
    if a broker must not start on it (above). ``manifests``, by path: the ones already
    read (plinth check passes those it could read, and reports the others); by
    default every one is read here, and one that cannot be is CorruptDataError."""
    data_dir = Path(data_dir)
    if manifests is None:
        manifests = {path: ShardManifest.load(path)
                     for path in sorted((data_dir / SHARDS_DIR).glob(f"*/{MANIFEST_FILE}"))}
    metadata_path = data_dir / METADATA_FILE
    if metadata_path.exists():
        return BrokerMetadata.load(metadata_path)
    holding = {path: manifest for path, manifest in manifests.items() if manifest.partitions}
    if holding:
        raise CorruptDataError(_lost_metadata(metadata_path, holding))
    return BrokerMetadata()


def _lost_metadata(metadata_path: Path, holding: dict[Path, ShardManifest]) -> str:
    partitions = sum(len(manifest.partitions) for manifest in holding.values())
    names = sorted({pid.topic for manifest in holding.values() for pid in manifest.partitions})
    shown = ", ".join(names[:TOPICS_NAMED_MAX]) + (
        f" and {len(names) - TOPICS_NAMED_MAX} more" if len(names) > TOPICS_NAMED_MAX else "")
    return (f"{metadata_path} is missing, but {len(holding)} shard manifest(s) here name "
            f"{partitions} partition(s) of topic(s) {shown} (first: {next(iter(holding))}): "
            f"a broker started without its metadata would serve none of them, and a topic "
            f"created again under one of their names would delete that partition's log. "
            f"Restore {metadata_path.name} from a backup; or, to start an empty broker "
            f"here, move {metadata_path.parent / SHARDS_DIR} away first")
