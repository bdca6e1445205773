"""One segment in object storage: its objects, their names, and the manifest that makes it visible.

Any thread may use this module (it holds no state). A segment uploaded from a
partition's log (segment.py) becomes up to five data objects and one manifest,
under the store's URL (remote_store.py):

    <topic>-<topic id>/<partition>/00000000000000052931-9f2c41d07a6be315.log
                                   00000000000000052931-9f2c41d07a6be315.index
                                   00000000000000052931-9f2c41d07a6be315.timeindex
                                   00000000000000052931-9f2c41d07a6be315.leader-epochs
                                   00000000000000052931-9f2c41d07a6be315.producers    (if any)
    <topic>-<topic id>/<partition>/manifests/00000000000000052931-9f2c41d07a6be315.manifest

- ``<topic>-<topic id>``: the topic's name, "-", and its id (32 lowercase hex
  digits, given by the controller when the topic was created: plinth/topics.py
  new_topic_id), as KIP-405's keys carry the topic id. A topic deleted and
  created again under the same name has another id, so it never shares a
  prefix with the old one's leftovers: a listing (a new leader rebuilding its
  metadata, a pending deletion) finds one incarnation's segments only. The
  name comes first so that a listing of the store reads as the topics; the id
  is fixed-length at the end, so the two never run together ambiguously.
- ``<partition>``: the partition number, in decimal.
- The name is the segment's base offset (20 digits, so listings sort by
  offset) and a random segment id (16 hex digits, 64 bits) picked for each
  upload attempt, so two attempts (a retry, or two leaders in turn) never
  write the same object and an upload never overwrites anything.
- ``.log``, ``.index`` and ``.timeindex`` are the local files' bytes exactly
  (segment.py, offset_index.py, time_index.py): a reader finds an offset's
  position with the index and reads the log by range. ``.leader-epochs`` is
  the partition's leader-epoch checkpoint (leader_epochs.py) at upload time,
  ``.producers`` the producer-state snapshot (producer_state.py) that holds
  just after the segment's last entry, so that a replica rebuilding from
  object storage recovers both.
- The manifest is written LAST, with a conditional put (if absent), after
  every data object is in place. Only manifests make segments visible: a
  reader lists ``<topic>-<topic id>/<partition>/manifests/`` and believes
  nothing else, so a crash in the middle of an upload leaves unreferenced data objects
  (removed by the uploader's cleanup, remote_transfer.py), never a visible
  half-written segment. Any shard can find and read a partition's remote
  segments this way (issue 14), without the uploader's local metadata. A
  manifest whose topic id is not the one in its key is corrupt, and one under
  another id's prefix is another topic's: neither is ever adopted or read.

The manifest (``RemoteSegment.to_manifest``) is two lines of UTF-8:

    {"base_offset": 52931, "created_ms": ..., ...}     one JSON object, sorted keys
    crc32c 3a24e72f                                     CRC-32C of line 1 and its "\\n",
                                                        8 lowercase hex digits, then "\\n"

JSON fields: ``version`` (MANIFEST_VERSION: 2; version 1, before topic ids,
is not read), ``topic``, ``topic_id`` (the id in its key), ``partition``,
``segment_id``, ``base_offset`` and ``end_offset`` (the offsets [base, end)
the log holds), ``max_timestamp_ms`` (its newest record's timestamp),
``leader_epoch`` (the newest leader epoch that wrote into it, or -1),
``created_ms`` (when the upload started, the uploader's clock), and
``objects``: for each object kind present (``log``, ``index``, ``timeindex``,
``leader-epochs``, ``producers``), ``{"size_bytes": N, "crc32c": C}`` with C
the CRC-32C of the whole object as an integer. The small objects are read
whole and checked against it; the log is read by range and each entry's own
CRC is checked (log_entry.py).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field

import crc32c

from plinth import limits, topics
from plinth.errors import CorruptDataError

__all__ = ["OBJECT_KINDS", "RemoteSegment", "manifest_prefix", "new_segment_id",
           "partition_prefix", "segment_id_of_manifest"]

MANIFEST_VERSION = 2
MANIFESTS_DIR = "manifests"
MANIFEST_SUFFIX = ".manifest"
CRC_PREFIX = "crc32c "
OFFSET_DIGITS = 20
SEGMENT_ID_HEX_DIGITS = 16
LOG, INDEX, TIME_INDEX, LEADER_EPOCHS, PRODUCERS = (
    "log", "index", "timeindex", "leader-epochs", "producers")
OBJECT_KINDS = (LOG, INDEX, TIME_INDEX, LEADER_EPOCHS, PRODUCERS)
REQUIRED_KINDS = (LOG, INDEX, TIME_INDEX, LEADER_EPOCHS)
_SEGMENT_ID = re.compile(f"^[0-9a-f]{{{SEGMENT_ID_HEX_DIGITS}}}$")


def new_segment_id() -> str:
    """A fresh random id for one upload attempt."""
    return secrets.token_hex(SEGMENT_ID_HEX_DIGITS // 2)


def partition_prefix(topic: str, topic_id: str, partition: int) -> str:
    """``<topic>-<topic id>/<partition>/``: every object of the partition's remote segments."""
    if not topics.is_topic_id(topic_id):
        raise AssertionError(f"{topic}-{partition}: topic id {topic_id!r} is not "
                             f"{topics.TOPIC_ID_HEX_DIGITS} lowercase hex digits")
    return f"{topic}-{topic_id}/{partition}/"


def manifest_prefix(topic: str, topic_id: str, partition: int) -> str:
    """Where the partition's manifests are: list this to find its remote segments."""
    return f"{partition_prefix(topic, topic_id, partition)}{MANIFESTS_DIR}/"


def segment_id_of_manifest(key: str) -> str | None:
    """The segment id in a manifest's key (its name's last part), or None if the key
    is not a manifest's: a listing tells known segments without reading them."""
    name = key.rpartition("/")[2]
    if not name.endswith(MANIFEST_SUFFIX):
        return None
    segment_id = name[:-len(MANIFEST_SUFFIX)].rpartition("-")[2]
    return segment_id if _SEGMENT_ID.match(segment_id) else None


def whole_crc(data) -> int:
    """CRC-32C of a whole object, as the manifest records it."""
    return crc32c.crc32c(data)


@dataclass(frozen=True)
class ObjectDigest:
    """Size and CRC-32C of one object of a remote segment."""

    size_bytes: int
    crc32c: int


@dataclass(frozen=True)
class RemoteSegment:
    """What is known of one remote segment: its manifest's contents. Any thread."""

    topic: str
    topic_id: str
    partition: int
    segment_id: str
    base_offset: int
    end_offset: int
    max_timestamp_ms: int
    leader_epoch: int
    created_ms: int
    objects: dict[str, ObjectDigest] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not topics.is_topic_id(self.topic_id):
            raise AssertionError(f"topic id {self.topic_id!r} of {self.topic}/{self.partition} "
                                 f"is not {topics.TOPIC_ID_HEX_DIGITS} lowercase hex digits")
        if not _SEGMENT_ID.match(self.segment_id):
            raise AssertionError(f"segment id {self.segment_id!r} is not "
                                 f"{SEGMENT_ID_HEX_DIGITS} lowercase hex digits")
        if not 0 <= self.base_offset < self.end_offset < 10 ** OFFSET_DIGITS:
            raise AssertionError(f"remote segment {self.segment_id} of {self.topic}/"
                                 f"{self.partition}: offsets [{self.base_offset}, "
                                 f"{self.end_offset}) are not a non-empty range")

    @property
    def size_bytes(self) -> int:
        """Bytes of its log object (what retention.bytes counts)."""
        return self.objects[LOG].size_bytes

    @property
    def stored_bytes(self) -> int:
        """Bytes of every object of it, the manifest aside (what the store bills)."""
        return sum(digest.size_bytes for digest in self.objects.values())

    @property
    def name(self) -> str:
        return f"{self.base_offset:0{OFFSET_DIGITS}d}-{self.segment_id}"

    def object_key(self, kind: str) -> str:
        if kind not in OBJECT_KINDS:
            raise AssertionError(f"{kind!r} is not one of {OBJECT_KINDS}")
        return f"{partition_prefix(self.topic, self.topic_id, self.partition)}{self.name}.{kind}"

    @property
    def manifest_key(self) -> str:
        return (f"{manifest_prefix(self.topic, self.topic_id, self.partition)}"
                f"{self.name}{MANIFEST_SUFFIX}")

    def describe(self) -> str:
        """For messages: topic (and its id), partition, offsets and segment id."""
        return (f"remote segment {self.topic}/{self.partition} (topic id {self.topic_id}) "
                f"offsets [{self.base_offset}, {self.end_offset}) id {self.segment_id}")

    # --- The manifest -----------------------------------------------------------

    def to_record(self) -> dict:
        """The JSON object of the manifest (and of the metadata journal's entries)."""
        record = asdict(self)
        record["version"] = MANIFEST_VERSION
        return record

    @classmethod
    def from_record(cls, record: dict, source: str) -> RemoteSegment:
        """The inverse of ``to_record``; CorruptDataError naming ``source`` if malformed."""
        try:
            if record.pop("version") != MANIFEST_VERSION:
                raise ValueError(f"version is not {MANIFEST_VERSION}")
            objects = {kind: ObjectDigest(**digest) for kind, digest in record.pop("objects").items()}
            segment = cls(objects=objects, **record)
            missing = [kind for kind in REQUIRED_KINDS if kind not in objects]
            if missing or not set(objects) <= set(OBJECT_KINDS):
                raise ValueError(f"objects {sorted(objects)} lack {missing} or have unknown kinds")
        except (KeyError, TypeError, ValueError, AssertionError) as error:
            raise CorruptDataError(f"{source}: not a remote segment manifest: {error}") from error
        return segment

    def to_manifest(self) -> bytes:
        """The manifest's bytes, as in the module docstring."""
        line = json.dumps(self.to_record(), sort_keys=True, separators=(",", ":")) + "\n"
        body = line.encode()
        return body + f"{CRC_PREFIX}{crc32c.crc32c(body):08x}\n".encode()

    @classmethod
    def from_manifest(cls, data: bytes, key: str) -> RemoteSegment:
        """Parse and check a manifest read from ``key``; CorruptDataError if it is torn,
        flipped or malformed, or if its name does not match its contents."""
        if len(data) > limits.REMOTE_MANIFEST_BYTES_MAX:
            raise CorruptDataError(f"manifest {key} is {len(data)} bytes, over "
                                   f"{limits.REMOTE_MANIFEST_BYTES_MAX}")
        body_end = data.find(b"\n") + 1
        crc_line = data[body_end:]
        expected = f"{CRC_PREFIX}{crc32c.crc32c(data[:body_end]):08x}\n".encode()
        if body_end == 0 or crc_line != expected:
            raise CorruptDataError(f"manifest {key}: CRC line {crc_line[:40]!r} does not match "
                                   f"its {body_end}-byte body (expected {expected!r})")
        try:
            record = json.loads(data[:body_end])
        except ValueError as error:
            raise CorruptDataError(f"manifest {key}: {error}") from error
        segment = cls.from_record(record, f"manifest {key}")
        if segment.manifest_key != key:
            raise CorruptDataError(f"manifest {key} describes {segment.manifest_key}")
        return segment
