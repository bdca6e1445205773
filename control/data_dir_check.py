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
  acknowledged), or, for one of a later version, InvalidConfigError saying a newer
  Plinth wrote it, and which versions this one reads (control/metadata.py,
  "Format versions");
- with tiered topics (remote.storage.enable) and no --tier-url, or another store
  than the one metadata.json records for them (``refuse_tiered_topics_without_their_store``:
  InvalidConfigError naming both; checked before the server claims a store, so a
  wrong store is never written to);
- without metadata.json while a manifest on this node names partitions: it would
  start as an empty broker, serve none of them, and a topic created again under one
  of their names (a new topic id) would set that partition's log aside and start it
  empty. The metadata
  was lost (a wiped file, a data dir copied in part): CorruptDataError saying so,
  and what to do.

A manifest that is missing is not refused: the controller opens the shard's
partitions again from metadata.json (controller.py, "a shard that lost its
manifest").

Nor is a start refused where metadata.json and a manifest disagree about a
partition (``disagreements``: plinth check says each as damage, a start logs
the second kind once as a WARNING); a shard never deletes a log for it:

- a topic id other than metadata.json's: if the partition's partition.metadata
  says metadata.json's id, the manifest is the damaged file, and the shard keeps
  the log and serves it (writing the manifest's entry again); else the shard sets
  the log aside whole (``<name>.<ns>-orphan``) and opens the partition empty.
  metadata.json's id may be the damaged one (a flipped digit), or the topic was
  deleted and created again while the shard was down: nothing on disk tells
  which. A deletion metadata.json still owes that shard (``deletes_owed``) is
  neither: the start completes it;
- a partition of a topic metadata.json does not have (an older metadata.json
  restored, say): the shard keeps the log but no one is routed to it; creating
  the topic again sets it aside and starts the partition empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from plinth import topics
from plinth.control.metadata import (METADATA_FILE, METADATA_VERSION, BrokerMetadata,
                                     upgrade_line)
from plinth.control.shard_set import SHARDS_DIR
from plinth.errors import CorruptDataError, InvalidConfigError
from plinth.shards.shard_handle import (MANIFEST_FILE, PARTITION_METADATA_FILE, PartitionSpec,
                                        ShardManifest, load_topic_id)

log = logging.getLogger(__name__)

# Topics named in the lost-metadata refusal, at most.
TOPICS_NAMED_MAX = 5


def load_checked_metadata(data_dir: Path,
                          manifests: dict[Path, ShardManifest] | None = None) -> BrokerMetadata:
    """The broker metadata of ``data_dir`` (empty for a new broker), or CorruptDataError
    if a broker must not start on it (above). ``manifests``, by path: the ones already
    read (plinth check passes those it could read, and reports the others); by
    default (a start) every one is read here, one that cannot be is CorruptDataError,
    and partitions they hold of topics metadata.json lacks are one WARNING."""
    data_dir = Path(data_dir)
    starting = manifests is None
    if manifests is None:
        manifests = {path: ShardManifest.load(path)
                     for path in sorted((data_dir / SHARDS_DIR).glob(f"*/{MANIFEST_FILE}"))}
    metadata_path = data_dir / METADATA_FILE
    if metadata_path.exists():
        metadata = BrokerMetadata.load(metadata_path)
        if starting:
            _warn_unknown_topics(metadata_path, metadata, manifests)
        return metadata
    holding = {path: manifest for path, manifest in manifests.items() if manifest.partitions}
    if holding:
        raise CorruptDataError(_lost_metadata(metadata_path, holding))
    return BrokerMetadata()


def refuse_tiered_topics_without_their_store(metadata: BrokerMetadata,
                                             tier_store: str | None) -> None:
    """InvalidConfigError if a topic of ``metadata`` is tiered and the server has no
    tier store (``tier_store`` None), or one (its identity: remote_store.store_identity)
    naming another store than metadata's ``tier_store`` (none recorded: a data dir
    from before it was; the store given is taken)."""
    tiered = sorted(name for name, topic in metadata.topics.items()
                    if topics.remote_storage_enabled(topic.config))
    recorded = metadata.tier_store
    if not tiered or (tier_store is not None and recorded in (None, tier_store)):
        return
    names = f"({', '.join(tiered[:10])}{', ...' if len(tiered) > 10 else ''})"
    if tier_store is None:
        wanted = f" {recorded}" if recorded else ""
        raise InvalidConfigError(
            f"{len(tiered)} topic(s) have {topics.REMOTE_STORAGE_ENABLE}=true {names} but "
            f"the server was started without --tier-url: start it with the --tier-url "
            f"their remote segments are in{wanted}")
    raise InvalidConfigError(
        f"{len(tiered)} topic(s) have {topics.REMOTE_STORAGE_ENABLE}=true {names} and "
        f"their remote segments are in {recorded}, but the server was started with "
        f"--tier-url {tier_store}: start it with --tier-url {recorded} (its "
        f"credentials may differ; its bucket and prefix may not)")


def tier_notes(metadata: BrokerMetadata) -> list[str]:
    """plinth check's line for a data dir with tiered topics: their remote segments,
    in the store metadata.json records, are not read (the check reads the disk only,
    and needs no credentials). Any process; writes nothing."""
    tiered = sorted(name for name, topic in metadata.topics.items()
                    if topics.remote_storage_enabled(topic.config))
    if not tiered:
        return []
    names = ", ".join(tiered[:TOPICS_NAMED_MAX]) + (", ..." if len(tiered) > TOPICS_NAMED_MAX
                                                    else "")
    return [f"{len(tiered)} tiered topic(s) ({names}): their remote segments in "
            f"{metadata.tier_store or 'the tier store'} are not checked, only the local logs "
            f"(a start lists the store, and says as an ERROR any segment it lost)"]


def format_notes(metadata_path: Path, metadata: BrokerMetadata) -> list[str]:
    """plinth check's line if a start of this build upgrades the data dir's format
    (``metadata``, read from ``metadata_path``, is of an older version: metadata.py,
    "Format versions"); nothing if it does not. Any process; writes nothing."""
    if metadata.file_version == METADATA_VERSION:
        return []
    return [upgrade_line(metadata_path, metadata.file_version, done=False)]


def _lost_metadata(metadata_path: Path, holding: dict[Path, ShardManifest]) -> str:
    partitions = sum(len(manifest.partitions) for manifest in holding.values())
    names = sorted({pid.topic for manifest in holding.values() for pid in manifest.partitions})
    shown = ", ".join(names[:TOPICS_NAMED_MAX]) + (
        f" and {len(names) - TOPICS_NAMED_MAX} more" if len(names) > TOPICS_NAMED_MAX else "")
    return (f"{metadata_path} is missing, but {len(holding)} shard manifest(s) here name "
            f"{partitions} partition(s) of topic(s) {shown} (first: {next(iter(holding))}): "
            f"a broker started without its metadata would serve none of them, and a topic "
            f"created again under one of their names would set that partition's log aside "
            f"and start it empty. "
            f"Restore {metadata_path.name} from a backup; or, to start an empty broker "
            f"here, move {metadata_path.parent / SHARDS_DIR} away first")


def missing_shard_directories(metadata_path: Path, metadata: BrokerMetadata) -> list[str]:
    """One line per shard whose directory is missing while metadata.json places
    partitions of one copy on it: a start opens them empty (controller.py says so
    then), every record they held gone from this data dir (a copy or a restore without
    all of shards/: tester B, session 40). Only for a broker whose shards are all on
    one node (this one): another node's shards have their directories there. Any
    process; reads only."""
    if len(set(metadata.shard_nodes.values())) > 1:
        return []
    shards_dir = metadata_path.parent / SHARDS_DIR
    lines = []
    for shard_id, specs in sorted(metadata.specs_by_shard().items()):
        one_copy = sorted(f"{spec.topic}-{spec.partition}" for spec in specs
                          if spec.leadership is None)
        if not one_copy or (shards_dir / shard_id).is_dir():
            continue
        shown = ", ".join(one_copy[:TOPICS_NAMED_MAX]) + (
            f" and {len(one_copy) - TOPICS_NAMED_MAX} more"
            if len(one_copy) > TOPICS_NAMED_MAX else "")
        lines.append(f"{shards_dir / shard_id} is missing, but {metadata_path} places "
                     f"{len(one_copy)} partition(s) of one copy on shard {shard_id} ({shown}): "
                     f"every record they held is lost unless the directory is restored, and "
                     f"a start opens them empty")
    return lines


@dataclass
class Disagreements:
    """What ``disagreements`` found, one line each."""

    damaged: list[str] = field(default_factory=list)
    # deleted topics created again, whose deletion a shard still owes: not damage
    notes: list[str] = field(default_factory=list)


def disagreements(metadata_path: Path, metadata: BrokerMetadata,
                  manifests: dict[Path, ShardManifest]) -> Disagreements:
    """Where metadata.json (``metadata``, read from ``metadata_path``) and the
    manifests (by path) disagree about a partition, naming the files, the ids and
    what a start does (module docstring). Reads each such partition's
    partition.metadata. Any process."""
    found = Disagreements()
    for path, manifest in manifests.items():
        owed = _owed(metadata, path.parent.name)
        for pid, spec in sorted(manifest.partitions.items()):
            topic = metadata.topics.get(pid.topic)
            directory = path.parent / f"{pid.topic}-{pid.partition}"
            if (pid.topic, spec.topic_id, pid.partition) in owed:
                if topic is not None:   # (else the start deletes it, as owed)
                    found.notes.append(_created_again_line(metadata_path, path, spec,
                                                           topic.topic_id, directory))
            elif topic is None:
                found.damaged.append(_unknown_topic_line(metadata_path, path, spec, directory))
            elif spec.topic_id and spec.topic_id != topic.topic_id:
                found.damaged.append(_topic_id_line(metadata_path, path, spec, topic.topic_id,
                                                    directory))
    return found


def _created_again_line(metadata_path: Path, manifest_path: Path, spec: PartitionSpec,
                        topic_id: str, directory: Path) -> str:
    return (f"{manifest_path} names partition {spec.topic}-{spec.partition} of topic id "
            f"{spec.topic_id}, deleted ({metadata_path.name} owes shard "
            f"{manifest_path.parent.name} the deletion) and created again as id {topic_id}: "
            f"a start sets the old log {directory} aside as {directory.name}.<ns>-orphan "
            f"(remove it then) and opens the partition empty")


def _owed(metadata: BrokerMetadata, shard_id: str) -> set[tuple[str, str, int]]:
    return {(owed.topic, owed.topic_id, partition)
            for owed in metadata.deletes_owed.get(shard_id, []) for partition in owed.partitions}


def _unknown_topic_line(metadata_path: Path, manifest_path: Path, spec: PartitionSpec,
                        directory: Path) -> str:
    return (f"{manifest_path} names partition {spec.topic}-{spec.partition} (topic id "
            f"{spec.topic_id or 'none'}), but {metadata_path} has no topic {spec.topic} (an "
            f"older copy restored?): a start keeps its log {directory} but serves it to no "
            f"one, and creating topic {spec.topic} again sets that log aside "
            f"({directory.name}.<ns>-orphan) and starts the partition empty. Restore the "
            f"{metadata_path.name} that has the topic to serve it")


def _topic_id_line(metadata_path: Path, manifest_path: Path, spec: PartitionSpec,
                   topic_id: str, directory: Path) -> str:
    """The line of a partition whose manifest entry has another id than metadata.json:
    which file is damaged, by what its partition.metadata says, and what a start does."""
    held = load_topic_id(directory, quiet=True)
    said = (f"{manifest_path} says topic {spec.topic} has id {spec.topic_id}, "
            f"{metadata_path} {topic_id}")
    if held == topic_id:
        return (f"{said}, as {directory / PARTITION_METADATA_FILE} does: the manifest is "
                f"damaged (a start keeps the log of {spec.topic}-{spec.partition}, serves "
                f"it, and writes the manifest's entry again)")
    files, damaged = (
        (f"{directory / PARTITION_METADATA_FILE} says {held}", metadata_path.name)
        if held is not None else
        (f"{directory} has no {PARTITION_METADATA_FILE} that says an id",
         f"{metadata_path.name} or the manifest"))
    return (f"{said}; {files}: {damaged} is damaged, or the topic was deleted "
            f"and created again while shard {manifest_path.parent.name} was down (nothing "
            f"on disk tells which). A start sets the log {directory} aside, whole, as "
            f"{directory.name}.<ns>-orphan, and opens the partition empty; if "
            f"{metadata_path.name} is damaged, restore it first")


def _warn_unknown_topics(metadata_path: Path, metadata: BrokerMetadata,
                         manifests: dict[Path, ShardManifest]) -> None:
    """One WARNING naming the topics the manifests hold partitions of and metadata.json
    lacks (a start goes on: their logs stay, unserved)."""
    unknown = sorted({pid.topic for path, manifest in manifests.items()
                      for pid, spec in manifest.partitions.items()
                      if pid.topic not in metadata.topics
                      and (pid.topic, spec.topic_id, pid.partition)
                      not in _owed(metadata, path.parent.name)})
    if not unknown:
        return
    shown = ", ".join(unknown[:TOPICS_NAMED_MAX]) + (
        f" and {len(unknown) - TOPICS_NAMED_MAX} more" if len(unknown) > TOPICS_NAMED_MAX
        else "")
    log.warning("the shard manifests here hold partitions of %d topic(s) %s has not: %s "
                "(an older copy restored?). Their logs stay, served to no one, until "
                "%s is restored with them (then they are served), or a topic of that "
                "name is created again (then its old log is set aside as "
                "<name>.<ns>-orphan, whole); plinth check names each partition",
                len(unknown), metadata_path, shown, metadata_path.name)
