"""The ACL file: what each client key may do, on which topics and groups, and how fast.

Any process may load the file. The router checks every request against it
(router/security.py), filters the answers to listGroups (admin_bridge.py)
and fetchOffsets (security.py) with it, and meters the quotas it sets
(router/quotas.py). The file is one JSON object mapping a client's CurveZMQ
public key (Z85, 40 characters, as ``plinth keygen`` writes it), or a Kafka client's
SASL user as ``"User:<name>"`` (router/kafka/sasl_users.py; the Kafka
listener reaches the router with an internal key per user, which
router/security.py maps back to that name), to its grants, and may hold one
more member, ``"quotas"``:

    {
      "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7": [
        {"operations": ["produce", "consume"], "topics": "orders.*", "groups": "billing"},
        {"operations": ["admin"], "groups": "billing"},
        {"operations": ["cluster"]}
      ],
      "*": [{"operations": ["consume"], "topics": "public.*"}],
      "quotas": {
        "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7": {"producer_byte_rate": 1048576},
        "*": {"producer_byte_rate": 10485760, "consumer_byte_rate": 20971520}
      }
    }

Resources and operations, as Kafka's (topics, groups, the cluster):

    operation  on topics matching ``topics``         on groups matching ``groups``
    produce    produce                               -
    consume    fetch, listOffsets                    heartbeat (join, leave), commitOffsets,
                                                     fetchOffsets; each also needs consume on
                                                     every topic it names; Kafka's classic
                                                     join, sync, heartbeat and leave (their
                                                     topics are opaque to the broker)
    admin      createTopic, alterTopic, deleteTopic, describeGroup, resetOffsets (which also
               describeTopic, deleteRecords (as      needs consume on every topic it resets),
               Kafka's DELETE on the topic)          deleteGroup, deleteOffsets (which also
                                                     needs consume on every topic it names)
    cluster    status, addShards, removeShards, moveShard, electLeaders (as Kafka's ALTER
               on the cluster): takes neither pattern (replicaFetch
               too, which is shard to shard: a router answers it malformed)

listTopics, metadata of every topic and listGroups (and their pages) need any
grant; metadata of named topics and topicStats need, for each, a grant of any
operation whose ``topics`` matches it. The answers show only what the client may see: listTopics and
metadata of every topic the topics it has a grant of any operation on (as
Kafka's Describe, which every topic operation implies), listGroups the groups
it may describe (admin on the group), and fetchOffsets the partitions of
topics it may consume.

Patterns are shell-style (``fnmatch``, case-sensitive) and never match an
empty name. A key's grants are its own entry's plus those of ``"*"``, which
apply to every authenticated client; a key in neither may do nothing.

Quotas are Kafka's ``producer_byte_rate`` (bytes of record batches produced
per second) and ``consumer_byte_rate`` (bytes of log entries fetched per
second), each optional; a key's own entry replaces that of ``"*"``, whose
rates apply to each key separately.

Loading is strict, so that a typo never grants more than meant: a duplicate
key, an unknown field, an unknown operation, a pattern that is not a
non-empty string, an operation without the pattern it needs (produce needs
``topics``; consume and admin need ``topics`` or ``groups``), a pattern no
operation of its grant uses, or a rate that is not a positive integer is an
InvalidConfigError naming the file, the key and the field.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from plinth import protocol, protocol_classic
from plinth.durable_files import refuse_duplicate_keys
from plinth.errors import InvalidConfigError, NotAuthorizedError
from plinth.router.kafka.sasl_users import PRINCIPAL_PREFIX, check_user_name

OPERATIONS = ("produce", "consume", "admin", "cluster")
GRANT_FIELDS = ("operations", "topics", "groups")
QUOTA_FIELDS = ("producer_byte_rate", "consumer_byte_rate")
ANY_KEY = "*"
QUOTAS_MEMBER = "quotas"
_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 ".-:+=^!/*?&<>()[]{}@%$#")
_KEY_CHARS = 40
# The patterns each operation can use; the first of them it needs at least one of.
_PATTERNS_OF = {"produce": ("topics",), "consume": ("topics", "groups"),
                "admin": ("topics", "groups"), "cluster": ()}


@dataclass(frozen=True, slots=True)
class Grant:
    operations: frozenset[str]
    topics: str | None            # None: the grant covers no topic
    groups: str | None            # None: the grant covers no group


@dataclass(frozen=True, slots=True)
class QuotaRates:
    """Bytes per second; None: that direction is not limited."""

    producer_byte_rate: int | None = None
    consumer_byte_rate: int | None = None


# What a request needs: (operation or None for any, topic or None, group or None).
Need = tuple[str | None, str | None, str | None]

# How a refusal names what a request does to a topic or group, by the operation it
# needs (None: any, as Kafka's Describe); router/kafka/plinth_errors.py reads the
# resource ("topic '...'", "group '...'", "the cluster operation") from the text.
_DOING_TO = {"produce": "produce to", "consume": "consume from", "admin": "administer",
             None: "see"}
_DOING_IN_GROUP = {"consume": "consume in", "admin": "administer"}
# What a request asks of the cluster, for refusals of requests on no topic or group.
_ASKING = {"status": "read the cluster's status", "addShards": "add shards",
           "removeShards": "remove shards", "moveShard": "move a shard",
           "electLeaders": "elect leaders", "createTopics": "create topics",
           "replicaFetch": "fetch replicas", "replicaFetchAll": "fetch replicas",
           "metadata": "read the cluster's metadata", "listTopics": "list topics",
           "listTopicsPage": "list topics", "listGroups": "list groups",
           "listGroupsPage": "list groups", "topicStats": "read topic statistics"}


class ClientGrants:
    """One client key's grants: its own and those of ``"*"``. Immutable, so any
    thread may use it (the router's loop checks with it, its admin thread filters)."""

    __slots__ = ("key", "grants")

    def __init__(self, key: str, grants: tuple[Grant, ...]):
        self.key = key
        self.grants = grants

    def may(self, operation: str | None, topic: str | None = None,
            group: str | None = None) -> bool:
        """Whether a grant holds ``operation`` (None: any) on ``topic`` or ``group``
        (both None: the operation alone, as for cluster)."""
        return any(_allows(grant, operation, topic, group) for grant in self.grants)

    def may_describe_group(self, group: str) -> bool:
        return self.may("admin", group=group)

    def may_consume_topic(self, topic: str) -> bool:
        return self.may("consume", topic=topic)

    def may_see_topic(self, topic: str) -> bool:
        return self.may(None, topic=topic)

    def check(self, request: protocol.Request) -> None:
        """Raise NotAuthorizedError unless every need of ``request`` is granted."""
        needs = needs_of(request)
        if needs is None:   # a request kind without a rule is refused, never let through
            raise NotAuthorizedError(f"{self.who} may not send {request.kind} "
                                     f"requests: the ACL has no rule for them")
        for operation, topic, group in needs:
            if not self.may(operation, topic, group):
                refusal = self._refusal(request, operation, topic, group)
                if not self.grants:
                    raise NotAuthorizedError(f"{self.who} has no grants, so it {refusal}")
                raise NotAuthorizedError(f"{self.who} {refusal}")

    @property
    def who(self) -> str:
        """How messages name the client: a SASL principal in full, a key by its start."""
        shown = self.key if self.key.startswith(PRINCIPAL_PREFIX) else f"{self.key[:8]}..."
        return f"client {shown}"

    def _refusal(self, request, operation, topic, group) -> str:
        """"may not ...": what the client may not do, the request and the grant it
        lacks."""
        kind = request.kind
        grant = (f"a grant of {operation}" if operation is not None
                 else "a grant of any operation (produce, consume or admin)")
        if topic is not None:
            return (f"may not {_DOING_TO[operation]} topic {topic!r} ({kind}): it "
                    f"needs {grant} on it")
        if group is not None:
            return (f"may not {_DOING_IN_GROUP[operation]} group {group!r} ({kind}): "
                    f"it needs {grant} on it")
        asking = _ASKING.get(kind, f"send {kind} requests")
        if operation is None:
            return f"may not {asking}: it needs {grant}"
        return f"may not {asking}: it needs a grant of the {operation} operation"


def _allows(grant: Grant, operation: str | None, topic: str | None, group: str | None) -> bool:
    if operation is not None and operation not in grant.operations:
        return False
    if topic is not None:
        return _matches(topic, grant.topics)
    if group is not None:
        return _matches(group, grant.groups)
    return True


def _matches(name: str, pattern: str | None) -> bool:
    """A pattern never matches an empty name, nor a grant without that pattern."""
    return bool(name) and pattern is not None and fnmatch.fnmatchcase(name, pattern)


def needs_of(request: protocol.Request) -> list[Need] | None:
    """Everything ``request`` needs granted; None for a kind without a rule."""
    match request:
        case protocol.ProduceRequest(topic=topic):
            return [("produce", topic, None)]
        case protocol.FetchRequest(topic=topic) | protocol.ListOffsetsRequest(topic=topic):
            return [("consume", topic, None)]
        case protocol.CreateTopicRequest(topic=topic) | protocol.AlterTopicRequest(topic=topic) | \
                protocol.DeleteTopicRequest(topic=topic) | protocol.DescribeTopicRequest(topic=topic) | \
                protocol.DeleteRecordsRequest(topic=topic):
            return [("admin", topic, None)]
        case protocol.CreateTopicsRequest(topics=new_topics):
            return [("admin", t.name, None) for t in new_topics] or [("cluster", None, None)]
        case protocol.MetadataRequest(topics=topics) if topics:
            return [(None, topic, None) for topic in topics]
        case protocol.MetadataRequest() | protocol.ListTopicsRequest() | protocol.ListGroupsRequest() | \
                protocol.ListTopicsPageRequest() | protocol.ListGroupsPageRequest():
            return [(None, None, None)]
        case protocol.TopicStatsRequest(topics=topics):
            return [(None, topic, None) for topic in topics] or [(None, None, None)]
        case protocol.GroupHeartbeatRequest(group=group, topics=topics, owned=owned):
            return _group_and_topics("consume", group, set(topics) | {t for t, _ in owned})
        case protocol.CommitOffsetsRequest(group=group, offsets=offsets):
            return _group_and_topics("consume", group, {t for t, _ in offsets})
        case protocol.FetchOffsetsRequest(group=group):
            return [("consume", None, group)]
        case protocol_classic.ClassicJoinRequest(group=group) | \
                protocol_classic.ClassicSyncRequest(group=group) | \
                protocol_classic.ClassicHeartbeatRequest(group=group) | \
                protocol_classic.ClassicLeaveRequest(group=group):
            return [("consume", None, group)]   # the topics are opaque to the broker
        case protocol.DescribeGroupRequest(group=group) | protocol.DeleteGroupRequest(group=group):
            return [("admin", None, group)]
        case protocol.DeleteOffsetsRequest(group=group, partitions=partitions):
            return [("admin", None, group)] + [("consume", t, None)
                                               for t in sorted({t for t, _ in partitions})]
        case protocol.ResetOffsetsRequest(group=group, offsets=offsets):
            return [("admin", None, group)] + [("consume", t, None) for t in sorted({t for t, _ in offsets})]
        case protocol.StatusRequest() | protocol.AddShardsRequest() | protocol.RemoveShardsRequest():
            return [("cluster", None, None)]
        case protocol.MoveShardRequest() | protocol.ElectLeadersRequest():
            return [("cluster", None, None)]
        case protocol.ReplicaFetchRequest() | protocol.ReplicaFetchAllRequest():   # shard to shard; a router never serves it
            return [("cluster", None, None)]
    return None


def _group_and_topics(operation: str, group: str, topics: set[str]) -> list[Need]:
    return [(operation, None, group)] + [(operation, topic, None) for topic in sorted(topics)]


class Acl:
    """The loaded file: grants and quotas per key. Immutable after ``load``; any thread."""

    def __init__(self, grants: dict[str, tuple[Grant, ...]],
                 quotas: dict[str, QuotaRates] | None = None, path: Path | None = None):
        self.path = path              # the file it was loaded from (None: built in memory)
        self._own = dict(grants)
        star = grants.get(ANY_KEY, ())
        self._by_key = {key: ClientGrants(key, own + star)
                        for key, own in grants.items() if key != ANY_KEY}
        self._star = star
        self._quotas = dict(quotas or {})

    @classmethod
    def load(cls, path: Path) -> "Acl":
        """Read and check the file; InvalidConfigError names what is wrong and where."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(), object_pairs_hook=refuse_duplicate_keys)
        except (OSError, ValueError) as exc:
            raise InvalidConfigError(f"cannot read ACL file {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidConfigError(f"ACL file {path}: expected an object of client key -> grants")
        quotas = _quotas(path, raw.pop(QUOTAS_MEMBER, {}))
        grants = {_key(path, key): _grants(path, key, value) for key, value in raw.items()}
        return cls(grants, quotas, path)

    def entries(self) -> dict[str, tuple[Grant, ...]]:
        """Each key's own grants as the file gives them (``"*"`` its own entry), in the
        file's order: what the Kafka listener's DescribeAcls describes."""
        return dict(self._own)

    def grants_for(self, client_key: str) -> ClientGrants:
        found = self._by_key.get(client_key)
        return found if found is not None else ClientGrants(client_key, self._star)

    def quota_for(self, client_key: str) -> QuotaRates | None:
        """The key's own quota, else that of ``"*"``, else None."""
        found = self._quotas.get(client_key)
        return found if found is not None else self._quotas.get(ANY_KEY)

    @property
    def has_quotas(self) -> bool:
        return bool(self._quotas)

    def check(self, client_key: str, request: protocol.Request) -> ClientGrants:
        """Raise NotAuthorizedError unless ``client_key`` may send ``request``; else
        its grants (to filter the answer with)."""
        grants = self.grants_for(client_key)
        grants.check(request)
        return grants


# --- Loading -----------------------------------------------------------------------

def _key(path: Path, key: str) -> str:
    if key == ANY_KEY or (len(key) == _KEY_CHARS and set(key) <= _Z85):
        return key
    if key.startswith(PRINCIPAL_PREFIX) and key[len(PRINCIPAL_PREFIX):]:
        check_user_name(key[len(PRINCIPAL_PREFIX):], f"ACL file {path}: key {key!r}")
        return key
    raise InvalidConfigError(
        f"ACL file {path}: {key!r} is not a client public key (40 Z85 characters, as in the "
        f".key file plinth keygen writes), nor a Kafka SASL user ({PRINCIPAL_PREFIX}<name>), "
        f"nor '*', nor {QUOTAS_MEMBER!r}")


def _grants(path: Path, key: str, value) -> tuple[Grant, ...]:
    if not isinstance(value, list):
        raise InvalidConfigError(f"ACL file {path}: key {key}: expected a list of grants, "
                                 f"got {type(value).__name__}")
    return tuple(_grant(path, f"key {key}, grant {i}", raw) for i, raw in enumerate(value))


def _grant(path: Path, where: str, raw) -> Grant:
    if not isinstance(raw, dict):
        raise InvalidConfigError(f"ACL file {path}: {where}: expected an object with "
                                 f"{', '.join(GRANT_FIELDS)}, got {type(raw).__name__}")
    for field in raw:
        if field not in GRANT_FIELDS:
            raise InvalidConfigError(f"ACL file {path}: {where}: unknown field {field!r} "
                                     f"(known: {', '.join(GRANT_FIELDS)})")
    operations = _operations(path, where, raw.get("operations"))
    patterns = {field: _pattern(path, where, field, raw[field])
                for field in ("topics", "groups") if field in raw}
    for operation in operations:
        usable = _PATTERNS_OF[operation]
        if usable and not any(field in patterns for field in usable):
            raise InvalidConfigError(f"ACL file {path}: {where}: operation {operation!r} needs "
                                     f"field {' or '.join(map(repr, usable))}")
    for field in patterns:
        if not any(field in _PATTERNS_OF[operation] for operation in operations):
            raise InvalidConfigError(
                f"ACL file {path}: {where}: field {field!r} is used by none of the operations "
                f"{sorted(operations)} (cluster takes no pattern; groups are for consume and admin)")
    return Grant(frozenset(operations), patterns.get("topics"), patterns.get("groups"))


def _operations(path: Path, where: str, raw) -> list[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(op, str) for op in raw):
        raise InvalidConfigError(f"ACL file {path}: {where}: field 'operations' must be a "
                                 f"non-empty list of {', '.join(OPERATIONS)}")
    unknown = sorted(set(raw) - set(OPERATIONS))
    if unknown:
        raise InvalidConfigError(f"ACL file {path}: {where}: field 'operations': unknown "
                                 f"operations {unknown} (known: {', '.join(OPERATIONS)})")
    return raw


def _pattern(path: Path, where: str, field: str, raw) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidConfigError(f"ACL file {path}: {where}: field {field!r} must be a "
                                 f"non-empty pattern string, got {raw!r}")
    return raw


def _quotas(path: Path, raw) -> dict[str, QuotaRates]:
    if not isinstance(raw, dict):
        raise InvalidConfigError(f"ACL file {path}: {QUOTAS_MEMBER!r} must be an object of "
                                 f"client key -> rates, got {type(raw).__name__}")
    return {_key(path, key): _rates(path, key, value) for key, value in raw.items()}


def _rates(path: Path, key: str, raw) -> QuotaRates:
    where = f"quotas of key {key}"
    if not isinstance(raw, dict) or not raw:
        raise InvalidConfigError(f"ACL file {path}: {where}: expected an object with "
                                 f"{' and/or '.join(QUOTA_FIELDS)}, got {raw!r}")
    for field, value in raw.items():
        if field not in QUOTA_FIELDS:
            raise InvalidConfigError(f"ACL file {path}: {where}: unknown field {field!r} "
                                     f"(known: {', '.join(QUOTA_FIELDS)})")
        if type(value) is not int or value <= 0:
            raise InvalidConfigError(f"ACL file {path}: {where}: field {field!r} must be a "
                                     f"positive integer (bytes per second), got {value!r}")
    return QuotaRates(raw.get("producer_byte_rate"), raw.get("consumer_byte_rate"))
