"""Topic and group names, partition counts and per-topic configuration: validation.

Any process may call these functions; the controller calls them before it
creates anything, the client calls them to fail fast. Config keys are Kafka's
topic config names where Kafka has one.

Two keys concern replication and depend on the topic's replication factor R:
``min.insync.replicas`` (1..R; default 1 for R <= 2, 2 for R >= 3, as Kafka
recommends: an acks="all" write survives the loss of one replica) and
``unclean.leader.election.enable`` ("true"/"false", default "false": a replica
that may miss acknowledged records never becomes leader). A factor-1 topic's
config gets them only if they are given, so that it is stored exactly as before
replication existed.

Three keys concern tiered storage (issue 14; Kafka's KIP-405 names and meanings):
``remote.storage.enable`` ("true"/"false", default "false": sealed segments go to
the object store of the server's ``--tier-url``), and ``local.retention.ms`` and
``local.retention.bytes``, how much of the log the shards' disks keep (-2, the
default: as much as ``retention.*``; -1: everything). ``retention.*`` keep
their meaning: the whole log, local plus remote, so a local retention may not
exceed it (Kafka's rule, ``_check_local_retention``; checked whether remote
storage is on or not, where Kafka 3.9 checks it only when on, so that turning
it on never meets a config that was taken before). Once a topic's remote
storage is on it stays on (``check_config_change``), and it may be turned on
only on a broker that has an object store (``check_remote_storage_allowed``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from plinth import limits
from plinth.errors import (InvalidConfigError, InvalidGroupError, InvalidPartitionsError,
                           InvalidReplicationFactorError, InvalidTopicError)

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
TOPIC_ID_HEX_DIGITS = 32   # 16 random bytes, as Kafka's topic UUIDs
_TOPIC_ID = re.compile(f"^[0-9a-f]{{{TOPIC_ID_HEX_DIGITS}}}$")

SEGMENT_BYTES = "segment.bytes"
SEGMENT_MS = "segment.ms"
RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
MESSAGE_TIMESTAMP_BEFORE_MAX_MS = "message.timestamp.before.max.ms"
MESSAGE_TIMESTAMP_AFTER_MAX_MS = "message.timestamp.after.max.ms"
MIN_INSYNC_REPLICAS = "min.insync.replicas"
UNCLEAN_LEADER_ELECTION_ENABLE = "unclean.leader.election.enable"
REMOTE_STORAGE_ENABLE = "remote.storage.enable"
LOCAL_RETENTION_MS = "local.retention.ms"
LOCAL_RETENTION_BYTES = "local.retention.bytes"
MAX_MESSAGE_BYTES = "max.message.bytes"
LOCAL_RETENTION_AS_TOTAL = -2   # Kafka's local.retention.* default: as retention.*
_INT64_MAX = 2**63 - 1
_BOOLEANS = ("true", "false")

# key -> (minimum, maximum, default); all integers.
TOPIC_CONFIG_KEYS: dict[str, tuple[int, int, int]] = {
    # At least 1 MiB and a minute: each segment is files the shard keeps.
    SEGMENT_BYTES: (limits.SEGMENT_BYTES_CONFIG_MIN, limits.SEGMENT_BYTES_MAX,
                    limits.SEGMENT_BYTES_DEFAULT),
    SEGMENT_MS: (limits.SEGMENT_MS_CONFIG_MIN, 2**62, limits.SEGMENT_MS_DEFAULT),
    # -1: keep forever. Whole segments are deleted, never the active one.
    RETENTION_MS: (-1, 2**62, limits.RETENTION_MS_DEFAULT),
    RETENTION_BYTES: (-1, 2**62, limits.RETENTION_BYTES_DEFAULT),
    # How far before and after the shard's clock a record's timestamp may be; a
    # produce with a record outside is refused with InvalidTimestampError.
    MESSAGE_TIMESTAMP_BEFORE_MAX_MS: (0, _INT64_MAX,
                                      limits.MESSAGE_TIMESTAMP_BEFORE_MS_MAX_DEFAULT),
    MESSAGE_TIMESTAMP_AFTER_MAX_MS: (0, _INT64_MAX, limits.MESSAGE_TIMESTAMP_AFTER_MS_MAX_DEFAULT),
    # The largest record batch a produce may append, in bytes as sent (compressed, if
    # it is): a larger one is refused with RecordTooLargeError (Kafka's
    # MESSAGE_TOO_LARGE). By default, and at most, the broker's own limit.
    MAX_MESSAGE_BYTES: (1, limits.BATCH_BYTES_MAX, limits.BATCH_BYTES_MAX),
    # What the shards' disks keep of a tiered topic: -2, as retention.*; -1, all.
    LOCAL_RETENTION_MS: (LOCAL_RETENTION_AS_TOTAL, 2**62, LOCAL_RETENTION_AS_TOTAL),
    LOCAL_RETENTION_BYTES: (LOCAL_RETENTION_AS_TOTAL, 2**62, LOCAL_RETENTION_AS_TOTAL),
}
# Kafka's keys whose one value in Plinth is what every topic does: given with that
# value (a comma list of it too, as Kafka's cleanup.policy may be), they are accepted
# and not stored; any other value is refused, saying why (FIXED_TOPIC_CONFIGS).
# cleanup.policy: whole segments past retention.ms or retention.bytes are deleted.
CLEANUP_POLICY = "cleanup.policy"
CLEANUP_POLICY_DELETE = "delete"
# compression.type: every batch is stored as its producer sent it (Kafka's "producer").
COMPRESSION_TYPE = "compression.type"
COMPRESSION_TYPE_PRODUCER = "producer"
# message.timestamp.type: each record keeps the timestamp its producer gave it.
MESSAGE_TIMESTAMP_TYPE = "message.timestamp.type"
MESSAGE_TIMESTAMP_TYPE_CREATE_TIME = "CreateTime"
# key -> (the value taken, why any other is refused)
FIXED_TOPIC_CONFIGS: dict[str, tuple[str, str]] = {
    CLEANUP_POLICY: (
        CLEANUP_POLICY_DELETE,
        f"Plinth has no log compaction; its only policy is {CLEANUP_POLICY_DELETE!r} "
        f"(segments past retention.ms or retention.bytes are deleted)"),
    COMPRESSION_TYPE: (
        COMPRESSION_TYPE_PRODUCER,
        f"Plinth stores each batch as its producer sent it, compressed or not (Kafka's "
        f"{COMPRESSION_TYPE_PRODUCER!r}); choose the codec with the producer's "
        f"compression_type (compression.type of a Kafka client)"),
    MESSAGE_TIMESTAMP_TYPE: (
        MESSAGE_TIMESTAMP_TYPE_CREATE_TIME,
        f"Plinth keeps the timestamp each record's producer gave it (Kafka's "
        f"{MESSAGE_TIMESTAMP_TYPE_CREATE_TIME!r}); it never stamps records with the "
        f"broker's time (LogAppendTime)"),
}
# Boolean keys every topic has: key -> default.
TOPIC_CONFIG_BOOLEANS: dict[str, str] = {REMOTE_STORAGE_ENABLE: "false"}
# The local retention keys and the whole log's retention each may not exceed.
_LOCAL_RETENTION_KEYS = ((LOCAL_RETENTION_MS, RETENTION_MS),
                         (LOCAL_RETENTION_BYTES, RETENTION_BYTES))


def validate_topic_name(name: str) -> None:
    size = len(name.encode())
    if not name or size > limits.TOPIC_NAME_BYTES_MAX:
        raise InvalidTopicError(
            f"topic name {name!r} is {size} bytes; it must be 1 to "
            f"{limits.TOPIC_NAME_BYTES_MAX} bytes")
    if name in (".", ".."):   # path components, as Kafka refuses them too
        raise InvalidTopicError(f"topic name {name!r} is not allowed: '.' and '..' are not "
                                f"topic names")
    if not _TOPIC_NAME.match(name):
        raise InvalidTopicError(
            f"topic name {name!r} may contain only ASCII letters, digits, '.', '_' and '-'")


# Kafka takes any group id; applications name them "svc:prod", "team@app",
# "orders.v2+retry". Plinth takes printable ASCII but the space (the CLI's and the
# logs' columns) and '/' (a path separator in the console's URLs), and not "." or
# ".." (path components, as for topics).
_GROUP_NAME = re.compile(r"^[!-.0-~]+$")
GROUP_NAME_RULE = "printable ASCII without spaces or '/'"


def validate_group_name(name: str) -> None:
    """InvalidGroupError unless ``name`` may name a consumer group (the coordinator's
    rule, checked by the clients too, in their constructors)."""
    if not isinstance(name, str) or not name or len(name.encode()) > limits.GROUP_NAME_BYTES_MAX \
            or not _GROUP_NAME.match(name) or name in (".", ".."):
        raise InvalidGroupError(
            f"group name {name!r} must be 1 to {limits.GROUP_NAME_BYTES_MAX} bytes of "
            f"{GROUP_NAME_RULE}, and not '.' or '..'")


def new_topic_id() -> str:
    """A fresh topic id (KIP-516's topic UUID): 16 random bytes as 32 lowercase hex
    digits. The controller gives one to every topic it creates; a topic deleted and
    created again under the same name gets another, so nothing that names objects
    by id (the remote segments' keys, shards/tier/remote_segment.py) can mistake
    one for the other."""
    return secrets.token_hex(TOPIC_ID_HEX_DIGITS // 2)


def is_topic_id(value) -> bool:
    """Whether ``value`` is a topic id as ``new_topic_id`` makes them."""
    return isinstance(value, str) and _TOPIC_ID.match(value) is not None


def validate_partition_count(name: str, partitions: int) -> None:
    """InvalidPartitionsError (Kafka's INVALID_PARTITIONS, as for a growth) unless a new
    topic may have ``partitions``: InvalidTopicError read as a bad name."""
    if not 1 <= partitions <= limits.PARTITIONS_PER_TOPIC_MAX:
        raise InvalidPartitionsError(
            f"topic {name!r}: {partitions} partitions requested; a topic has 1 to "
            f"{limits.PARTITIONS_PER_TOPIC_MAX} partitions")


def validate_partition_growth(name: str, partitions_now: int, partition_count: int) -> None:
    """InvalidPartitionsError unless a topic of ``partitions_now`` partitions may grow to
    ``partition_count`` (0 now: only the count's own bounds are checked)."""
    if type(partition_count) is not int or not 1 <= partition_count <= limits.PARTITIONS_PER_TOPIC_MAX:
        raise InvalidPartitionsError(
            f"topic {name!r}: {partition_count!r} partitions requested; a topic has 1 to "
            f"{limits.PARTITIONS_PER_TOPIC_MAX} partitions")
    if partition_count == partitions_now:
        raise InvalidPartitionsError(
            f"topic {name!r} already has {partitions_now} partitions; {partition_count} "
            f"requested: ask for more than {partitions_now} to add partitions")
    if partition_count < partitions_now:
        raise InvalidPartitionsError(
            f"topic {name!r} has {partitions_now} partitions; {partition_count} requested: "
            f"partitions can only be added, never removed")


# Keys of the replication configs, checked against the topic's factor.
REPLICATION_CONFIG_KEYS = (MIN_INSYNC_REPLICAS, UNCLEAN_LEADER_ELECTION_ENABLE)
# Every config key a topic takes, sorted: the one list every unknown-key message shows
# (create's and alter's listed 12 keys, --delete-config's the 3 fixed ones too).
KNOWN_TOPIC_CONFIGS = tuple(sorted({*TOPIC_CONFIG_KEYS, *TOPIC_CONFIG_BOOLEANS,
                                    *REPLICATION_CONFIG_KEYS, *FIXED_TOPIC_CONFIGS}))


def default_min_insync_replicas(replication_factor: int) -> int:
    """Kafka's recommendation: 2 of 3 (or more) copies; 1 with one or two copies."""
    return 1 if replication_factor <= 2 else 2


def validate_replication_factor(name: str, replication_factor, *,
                                what: str = "replication factor") -> int:
    """The factor as an int if it is one in 1..REPLICATION_FACTOR_MAX (what the
    cluster can hold is the controller's check). ``name``: the topic, or "" for a
    server option (``what`` names it)."""
    where = f"topic {name!r}: " if name else ""
    if isinstance(replication_factor, bool) or not isinstance(replication_factor, int):
        raise InvalidReplicationFactorError(
            f"{where}{what} {replication_factor!r} is not an integer "
            f"(1 to {limits.REPLICATION_FACTOR_MAX})")
    if not 1 <= replication_factor <= limits.REPLICATION_FACTOR_MAX:
        raise InvalidReplicationFactorError(
            f"{where}{what} {replication_factor} is outside "
            f"1..{limits.REPLICATION_FACTOR_MAX}")
    return replication_factor


def config_without(name: str, config: dict[str, str], changes: dict[str, str],
                   deleted_keys) -> dict[str, str]:
    """``config`` without ``deleted_keys`` (an alter sets them back to their defaults:
    normalize_topic_config fills them in again). InvalidConfigError for an unknown
    key, a key both changed and deleted, or more keys than limits.CONFIG_ENTRIES_MAX."""
    deleted = set(deleted_keys)
    if len(deleted) > limits.CONFIG_ENTRIES_MAX:
        raise InvalidConfigError(f"topic {name!r}: {len(deleted)} config keys to delete, over "
                                 f"the limit of {limits.CONFIG_ENTRIES_MAX}")
    unknown = sorted(deleted - set(KNOWN_TOPIC_CONFIGS))
    if unknown:
        raise InvalidConfigError(f"topic {name!r}: cannot delete unknown config "
                                 f"{', '.join(unknown)}; known: {', '.join(KNOWN_TOPIC_CONFIGS)}")
    both = sorted(deleted & set(changes))
    if both:
        raise InvalidConfigError(f"topic {name!r}: config {', '.join(both)} both set and "
                                 f"deleted (set back to its default) in one alter")
    return {key: value for key, value in config.items() if key not in deleted}


def normalize_topic_config(name: str, config: dict[str, str],
                           replication_factor: int = 1) -> dict[str, str]:
    """Check every key and value; return the config with defaults filled in (the
    replication keys only for a factor above 1, or when given)."""
    if len(config) > limits.CONFIG_ENTRIES_MAX:
        raise InvalidConfigError(
            f"topic {name!r}: {len(config)} config entries, over the limit of "
            f"{limits.CONFIG_ENTRIES_MAX}")
    unknown = sorted(set(config) - set(KNOWN_TOPIC_CONFIGS))
    if unknown:
        raise InvalidConfigError(
            f"topic {name!r}: unknown config {', '.join(unknown)}; known: "
            f"{', '.join(KNOWN_TOPIC_CONFIGS)}")
    config = _without_fixed_keys(name, config)
    out = {}
    for key, (lowest, highest, default) in TOPIC_CONFIG_KEYS.items():
        out[key] = str(_config_int(name, key, config.get(key, default), lowest, highest))
    for key, default in TOPIC_CONFIG_BOOLEANS.items():
        out[key] = _config_bool(name, key, config.get(key, default))
    _check_local_retention(name, out)
    if replication_factor > 1 or MIN_INSYNC_REPLICAS in config:
        raw = config.get(MIN_INSYNC_REPLICAS, default_min_insync_replicas(replication_factor))
        out[MIN_INSYNC_REPLICAS] = str(_min_insync(name, raw, replication_factor))
    if replication_factor > 1 or UNCLEAN_LEADER_ELECTION_ENABLE in config:
        raw = config.get(UNCLEAN_LEADER_ELECTION_ENABLE, "false")
        out[UNCLEAN_LEADER_ELECTION_ENABLE] = _config_bool(name, UNCLEAN_LEADER_ELECTION_ENABLE, raw)
    return out


def unstored_config_defaults(config: dict[str, str]) -> dict[str, str]:
    """The values of the keys a topic's stored ``config`` leaves out, as Kafka describes
    every key a topic has: the FIXED_TOPIC_CONFIGS values, and for a factor-1 topic
    (which stores no replication keys) min.insync.replicas 1 and
    unclean.leader.election.enable false."""
    defaults = {key: taken for key, (taken, _) in FIXED_TOPIC_CONFIGS.items()}
    defaults[MIN_INSYNC_REPLICAS] = str(default_min_insync_replicas(1))
    defaults[UNCLEAN_LEADER_ELECTION_ENABLE] = "false"
    return {key: value for key, value in defaults.items() if key not in config}


def _without_fixed_keys(name: str, config: dict[str, str]) -> dict[str, str]:
    """``config`` without the FIXED_TOPIC_CONFIGS keys, each given as its one value;
    InvalidConfigError saying why for any other value."""
    for key, (taken, why) in FIXED_TOPIC_CONFIGS.items():
        value = config.get(key)
        if value is not None and {v.strip() for v in value.split(",")} != {taken}:
            raise InvalidConfigError(f"topic {name!r}: {key} {value!r} is not supported: {why}")
    return {key: value for key, value in config.items() if key not in FIXED_TOPIC_CONFIGS}


def min_insync_replicas(config: dict[str, str]) -> int:
    """The topic's min.insync.replicas (1 if the config has none: a factor-1 topic)."""
    return int(config.get(MIN_INSYNC_REPLICAS, 1))


def unclean_leader_election(config: dict[str, str]) -> bool:
    return config.get(UNCLEAN_LEADER_ELECTION_ENABLE, "false") == "true"


def remote_storage_enabled(config: dict[str, str]) -> bool:
    """The topic's remote.storage.enable ("false" if the config has none: a topic
    created before tiered storage)."""
    return config.get(REMOTE_STORAGE_ENABLE, "false") == "true"


def with_tiering_defaults(config: dict[str, str]) -> dict[str, str]:
    """``config`` with the tiering keys' defaults where it has none (a topic created
    before tiered storage), as describe shows it."""
    return {REMOTE_STORAGE_ENABLE: TOPIC_CONFIG_BOOLEANS[REMOTE_STORAGE_ENABLE],
            LOCAL_RETENTION_MS: str(LOCAL_RETENTION_AS_TOTAL),
            LOCAL_RETENTION_BYTES: str(LOCAL_RETENTION_AS_TOTAL), **config}


def check_config_change(name: str, old: dict[str, str], new: dict[str, str]) -> None:
    """InvalidConfigError if going from the normalized config ``old`` to ``new`` is
    not allowed: turning remote storage off once it was on (Kafka 3.9 allows that
    only with remote.log.delete.on.disable=true, which deletes the remote data)."""
    if remote_storage_enabled(old) and not remote_storage_enabled(new):
        raise InvalidConfigError(
            f"topic {name!r}: {REMOTE_STORAGE_ENABLE} cannot go from true back to false: its "
            f"segments in object storage would be left behind. Kafka 3.9 allows it only "
            f"with remote.log.delete.on.disable=true (which deletes them); Plinth does not "
            f"offer remote.log.delete.on.disable yet")


def check_remote_storage_allowed(name: str, config: dict[str, str], *,
                                 tier_url_given: bool) -> None:
    """InvalidConfigError if the topic asks for remote storage on a broker that has no
    object store (it was started without ``--tier-url``)."""
    if remote_storage_enabled(config) and not tier_url_given:
        raise InvalidConfigError(
            f"topic {name!r}: {REMOTE_STORAGE_ENABLE}=true needs tiered storage, and this "
            f"broker was started without --tier-url; start plinth serve with --tier-url "
            f"URL (s3://bucket/prefix, gs://..., az://... or file:///path)")


def _check_local_retention(name: str, config: dict[str, str]) -> None:
    """Kafka's rule: where retention.ms (.bytes) bounds the whole log, local.retention.ms
    (.bytes) is -2 or at most that bound (-1, keep everything locally, exceeds it)."""
    for local_key, total_key in _LOCAL_RETENTION_KEYS:
        local, total = int(config[local_key]), int(config[total_key])
        if local == LOCAL_RETENTION_AS_TOTAL or total == -1:
            continue
        if local == -1 or local > total:
            what = f"{local_key}=-1 (keep everything locally)" if local == -1 else \
                f"{local_key}={local}"
            raise InvalidConfigError(
                f"topic {name!r}: {what} exceeds {total_key}={total}: the shards' disks "
                f"cannot keep more than the whole log; set {local_key} to at most {total}, "
                f"or to -2 (the same as {total_key})")


def _min_insync(name: str, raw, replication_factor: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidConfigError(
            f"topic {name!r}: {MIN_INSYNC_REPLICAS}={raw!r} is not an integer") from None
    if not 1 <= value <= replication_factor:
        raise InvalidConfigError(
            f"topic {name!r}: {MIN_INSYNC_REPLICAS}={value} is outside 1..{replication_factor}: "
            f"at least 1 and at most the replication factor, {replication_factor}")
    return value


def _config_bool(name: str, key: str, raw) -> str:
    value = str(raw).strip().lower()
    if value not in _BOOLEANS:
        raise InvalidConfigError(f"topic {name!r}: {key}={raw!r} is not true or false")
    return value


def _config_int(name: str, key: str, raw, lowest: int, highest: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidConfigError(f"topic {name!r}: {key}={raw!r} is not an integer") from None
    if not lowest <= value <= highest:
        raise InvalidConfigError(
            f"topic {name!r}: {key}={value} is outside {lowest}..{highest}")
    return value


# --- The internal topic of committed offsets (issue 12: group state replicates) -----------

# A replicated broker keeps consumer groups' committed offsets and settings in this
# topic, one partition per group slot (Kafka's __consumer_offsets); the leader of a
# group's slot coordinates the group. Users may not produce to it or delete it.
OFFSETS_TOPIC = "__consumer_offsets"


def offsets_slot(group: str, slots: int) -> int:
    """The partition of OFFSETS_TOPIC that holds ``group`` (the router and the shards
    must agree): a stable hash of the name, as Kafka's abs(hash) % partitions."""
    if slots < 1:
        raise AssertionError(f"placing group {group!r}: {OFFSETS_TOPIC} has {slots} partitions")
    digest = hashlib.blake2b(f"\0group\0{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % slots


def collision_name(name: str) -> str:
    """The name Kafka compares topic names by: "." and "_" alike (they become the same
    metric names), so that "a.b" and "a_b" cannot both exist."""
    return name.replace(".", "_")


def refuse_collisions(new_names: list[str], existing: Iterable[str]) -> None:
    """InvalidTopicError for the first of ``new_names`` that differs from an
    ``existing`` topic's name, or an earlier new one's, only in "." and "_", as Kafka
    refuses it: a topic moved back to Kafka must keep its name. Names without either
    character collide with none, so only those with one are compared."""
    if not any("." in name or "_" in name for name in new_names):
        return
    seen = {collision_name(name): name for name in existing if "." in name or "_" in name}
    new = set()
    for name in new_names:
        other = seen.setdefault(collision_name(name), name)
        new.add(name)
        if other != name:
            where = "a topic of the same request" if other in new else "an existing topic"
            raise InvalidTopicError(
                f"topic {name!r} collides with {where}, {other!r}: names that differ only "
                f"in '.' and '_' are one name to Kafka (its metrics), which refuses the "
                f"second, as Plinth does; choose another name")


def refuse_internal(name: str, what: str) -> None:
    """InvalidTopicError if ``name`` is the internal topic, which users may not ``what``."""
    if name == OFFSETS_TOPIC:
        raise InvalidTopicError(
            f"topic {name!r} is internal (the consumer groups' committed offsets); clients "
            f"may not {what} it")
