"""Admin: create, list, describe and delete topics; delete a partition's older records.

Lists at scale (a console with 10,000 topics and groups) come a page at a time,
searchable by prefix: ``list_topics_page``, ``list_groups_page``; and the sizes
and rates of the topics on a page, from the shards' counters: ``topic_stats``.

Client side. One Admin may be used by one thread at a time. Every call waits
at most ``request_timeout_ms`` for the broker, then raises PlinthTimeoutError.
An "unavailable" answer (no router reachable yet, the controller restarting) is
retried with backoff within that time, except for adding and removing shards,
which are not safe to repeat blindly. A change (create, alter, grow or delete
topics; add, remove or move shards) tells the broker how long it still waits:
one the broker could not start within that time is not made at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from plinth import limits, protocol, topics
from plinth.client.arguments import (checked_bool, checked_int, checked_int_type, checked_ms, checked_offsets,
                                     checked_partition, checked_str, checked_time_ms,
                                     checked_topic_id, checked_topic_names,
                                     checked_topic_partition, checked_topic_partitions)
from plinth.client.broker_protocol import check_protocol
from plinth.client.connection import RETRIED_ERRORS, Connection, broker_address
from plinth.client.fetcher import TopicPartition
from plinth.client.kafka_option_names import kafka_option_names
from plinth.errors import (TRANSIENT_ERRORS, BrokerError, InternalError, InvalidTopicError,
                           RequestTimedOutError, UnknownTopicError)
from plinth.name_pages import NamesPage, check_page_args

# What list_offsets retries: every transient error, as the consumer's position resets
# (the same request) do. A read changes nothing, and a look-up by time in object
# storage answered requestTimedOut (REMOTE_TIME_LOOKUP_WAIT_MS_MAX: the store is slow)
# joins the shard's read still under way on its retry, as Kafka clients retry
# REQUEST_TIMED_OUT.
LIST_OFFSETS_RETRIED_ERRORS = TRANSIENT_ERRORS

# What list_topics_page and list_groups_page return: ``.names`` and ``.more``.
TopicsPage = NamesPage
GroupsPage = NamesPage


def timed_change(encode, timeout_ms: float):
    """``encode`` of a change (create, alter or delete topics; add, remove or move shards),
    each request it makes carrying how long its client still waits, from the first
    one on (timeoutMs): a retry sent late carries what is left, so that a router never
    starts a change its client has given up on (router/admin_bridge.py)."""
    deadline_s: float | None = None

    def encode_timed(request_id: int, *args) -> bytes:
        nonlocal deadline_s
        if deadline_s is None:
            deadline_s = time.monotonic() + timeout_ms / 1000
        return encode(request_id, *args, timeout_ms=(deadline_s - time.monotonic()) * 1000)

    return encode_timed


def unknown_topic(name: str, error: UnknownTopicError) -> BrokerError:
    """What to raise for a topic the broker does not know: InvalidTopicError naming the
    rule, if no topic may have that name (a space in it), else ``error``. Asked only
    once a topic is unknown, never per record (the producers ask its partition count
    before its first record)."""
    try:
        topics.validate_topic_name(name)
    except InvalidTopicError as invalid:
        return invalid
    return error


def checked_admin_timeout(request_timeout_ms) -> float:
    """Admin's and AIOAdmin's ``request_timeout_ms``, checked as the producer's and the
    consumer's: 0 or less timed every call out at once ("within 1 ms"), and a str or
    None failed inside the first call."""
    return checked_ms("request_timeout_ms", request_timeout_ms, 1)


def check_names_page_args(kind: str, prefix: str, after: str, limit: int) -> None:
    """ValueError or RequestTooLargeError for a page request the broker would refuse;
    limit 0 (the wire's "every name") is refused too: a page is never the whole list."""
    if isinstance(limit, int) and not isinstance(limit, bool) and limit == 0:
        raise ValueError(f"{kind}: limit must be 1 to {limits.ADMIN_LIST_PAGE_NAMES_MAX}: "
                         f"a page is never the whole list (list_topics, list_groups are)")
    check_page_args(prefix, after, limit, kind)


# One topic of ``create_topics``: name, partitions, config, replication factor (0: the
# server's default), as Kafka's NewTopic.
NewTopic = protocol.NewTopic


def checked_new_topics(new_topics: list[NewTopic]) -> list[NewTopic]:
    """``new_topics`` with their config values as the wire carries them; ValueError (or
    InvalidTopicError ...) for what the broker would refuse of one of them, or for a
    count outside 1..CREATE_TOPICS_BATCH_MAX."""
    if not 1 <= len(new_topics) <= limits.CREATE_TOPICS_BATCH_MAX:
        raise ValueError(f"create_topics: {len(new_topics)} topics, outside "
                         f"1..{limits.CREATE_TOPICS_BATCH_MAX} (send more in several calls)")
    checked = []
    for new in new_topics:
        check_new_topic(new.name, new.partitions, new.replication_factor or None)   # 0: default
        if isinstance(new.config, int) and not isinstance(new.config, bool):
            raise TypeError(
                f"NewTopic({new.name!r}, {new.partitions!r}, {new.config!r}): the third "
                f"argument is config (a dict); kafka-python's NewTopic(name, num_partitions, "
                f"replication_factor) is NewTopic(name, partitions, "
                f"replication_factor={new.config!r}) here")
        checked.append(NewTopic(new.name, new.partitions,
                                checked_config(new.config),
                                new.replication_factor or 0))
    return checked


def check_new_topic(name: str, partitions: int, replication_factor: int | None) -> None:
    """TypeError for a name or partition count of the wrong type; InvalidTopicError,
    InvalidPartitionsError or InvalidReplicationFactorError for one the broker would
    refuse (client side, either client)."""
    topics.validate_topic_name(checked_str("name", name))
    topics.validate_partition_count(name, checked_int_type("partitions", partitions))
    if replication_factor is not None:   # its type too: InvalidReplicationFactorError
        topics.validate_replication_factor(name, replication_factor)


def refuse_partial(kind: str, page: NamesPage) -> None:
    """A whole listing's page (either client): RequestTimedOutError if a shard did not
    answer it, naming them (a list without their names would read as complete)."""
    if page.unanswered:
        raise RequestTimedOutError(
            f"{kind}: {', '.join(page.unanswered)} did not answer in time (stopped, hung or "
            f"restarting: see plinth status), so the list would lack what they hold; the "
            f"paged call lists the rest and names them in .unanswered")


def list_offsets_args(topic: str, partition: int, timestamp_ms: int,
                      require_listed: bool) -> tuple[str, int, int, bool]:
    """list_offsets' arguments checked (client side, either client)."""
    return (checked_str("topic", topic), checked_partition("partition", partition),
            checked_time_ms("timestamp_ms", timestamp_ms, protocol.NO_TIME_LOOKUP,
                            protocol.MAX_TIMESTAMP),
            checked_bool("require_listed", require_listed))


def checked_shard_count(count: int) -> int:
    """add_shards' and remove_shards' ``count``."""
    return checked_int("count", count, 1, limits.SHARDS_MAX)


def _config_value(value) -> str:
    """A config value as the wire carries it: Python's booleans as Kafka's "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def checked_config(config) -> dict[str, str]:
    """A topic's ``config`` (create_topic, create_topics, alter_topic; either client) as
    the wire carries it: {key: value} of str keys, each value a str, or an int, float
    or bool written as text (``{"retention.ms": 86_400_000}``); None for none.
    TypeError naming ``config`` for anything else (a list of pairs, kafka-python's
    ConfigResource style, raised AttributeError), and for a key or value of another
    type (None would be sent as "None"), before anything is sent."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of str to str (config key to value), got "
                        f"{config!r} ({type(config).__name__})")
    for key, value in config.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float)):
            raise TypeError(f"config must be a dict of str to str (config key to value), got "
                            f"{key!r}: {value!r} ({type(key).__name__}: "
                            f"{type(value).__name__})")
    return {key: _config_value(value) for key, value in config.items()}


def alter_topic_args(config, delete_config) -> tuple[dict[str, str], tuple[str, ...]]:
    """Admin.alter_topic's arguments as the wire carries them (client side, either
    client): values as text, the keys to delete as a tuple (one key may be a str)."""
    config = checked_config(config)
    deleted = (delete_config,) if isinstance(delete_config, str) else tuple(delete_config)
    if not all(isinstance(key, str) for key in deleted):
        raise TypeError(f"delete_config takes config keys (str), not {deleted!r}")
    return config, deleted


def checked_records_to_delete(records_to_delete: dict) -> dict[TopicPartition, int]:
    """delete_records' argument keyed by TopicPartition (client side, either client);
    ValueError for a negative offset but -1 (the high watermark)."""
    wanted = {TopicPartition(*checked_topic_partition("delete_records", key)):
              checked_int(f"delete_records: the offset of {key!r}", offset,
                          -(2**63), limits.INT64_MAX)
              for key, offset in records_to_delete.items()}
    for tp, offset in wanted.items():
        if offset < 0 and offset != protocol.DELETE_RECORDS_TO_HIGH_WATERMARK:
            raise ValueError(f"delete_records: offset {offset} for {tp.topic}-{tp.partition} "
                             f"is negative; records are deleted before an offset >= 0, or "
                             f"{protocol.DELETE_RECORDS_TO_HIGH_WATERMARK} (the high watermark)")
    return wanted


def election_type_code(election_type: str | int) -> int:
    """elect_leaders' ``election_type`` as the wire carries it (client side, either
    client): "preferred" or 0, "unclean" or 1; ValueError naming both otherwise."""
    if isinstance(election_type, str) and election_type in protocol.ELECTION_TYPES:
        return protocol.ELECTION_TYPES[election_type]
    if type(election_type) is int and election_type in protocol.ELECTION_TYPES.values():
        return election_type
    raise ValueError(f"elect_leaders: election_type {election_type!r} is neither "
                     f"'preferred' (0) nor 'unclean' (1)")


def election_partitions(topic_partitions) -> list[tuple[str, int]] | None:
    """elect_leaders' ``topic_partitions`` as (topic, partition) pairs (client side,
    either client); None stays None (every partition)."""
    if topic_partitions is None:
        return None
    if isinstance(topic_partitions, (str, bytes)):
        # A topic's name alone was read as its characters: ('p',) is not a pair.
        raise TypeError(f"elect_leaders takes (topic, partition) pairs or {{topic: [partitions]}}, "
                        f"not a {type(topic_partitions).__name__}: for every partition of "
                        f"{topic_partitions!r}, pass {{{topic_partitions!r}: range(count)}}")
    if isinstance(topic_partitions, dict):
        pairs = [(topic, p) for topic, ps in topic_partitions.items() for p in ps]
    else:
        pairs = [tuple(tp) for tp in topic_partitions]
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str) or isinstance(pair[1], bool) \
                or not isinstance(pair[1], int) \
                or not 0 <= pair[1] < limits.PARTITIONS_PER_TOPIC_MAX:
            raise ValueError(f"elect_leaders: {pair!r} is not a (topic, partition) pair with "
                             f"0 <= partition < {limits.PARTITIONS_PER_TOPIC_MAX}")
    return pairs


def offsets_to_delete(partitions) -> dict[str, set[int]]:
    """delete_group_offsets' ``partitions`` by topic (client side, either client): each
    a (topic, partition) pair, a TopicPartition or not; TypeError or ValueError naming
    the first that is not, before anything is sent."""
    if isinstance(partitions, str):   # not read as its characters
        raise TypeError(f"delete_group_offsets takes (topic, partition) pairs, not a str: "
                        f"for every partition of {partitions!r}, pass "
                        f"[({partitions!r}, p) for p in range(count)]")
    by_topic: dict[str, set[int]] = {}
    for topic, partition in checked_topic_partitions("delete_group_offsets", partitions):
        by_topic.setdefault(topic, set()).add(partition)
    return by_topic


def offset_deletions(view: protocol.ReplyView) -> dict[TopicPartition, BrokerError | None]:
    """A deleteOffsets reply's outcomes, by TopicPartition."""
    return {TopicPartition(d.topic, d.partition): d.error for d in view.offset_deletions}


def group_topics(info: protocol.GroupInfo) -> list[str]:
    """group_lag's topics, sorted: those the group has committed offsets or members for."""
    return sorted({t for t, _ in info.committed} | {t for m in info.members for t in m.topics})


def lag_row(topic: str, partition: int, committed_offsets: dict, end_offset: int
            ) -> tuple[str, int, int | None, int, int | None]:
    """One row of group_lag: (topic, partition, committed, end, lag). No lag for a
    negative committed offset, which a Kafka client may commit (Kafka's broker takes
    it, and its consumer-groups tool shows no lag for it): end - (-1) is no lag."""
    committed = committed_offsets.get((topic, partition))
    return (topic, partition, committed, end_offset,
            None if committed is None or committed < 0 else end_offset - committed)


@kafka_option_names
class Admin:
    def __init__(self, *, broker=None, bootstrap_servers: str | list[str] | None = None,
                 request_timeout_ms: int = limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT,
                 curve_key_file: str | None = None, curve_server_key_file: str | None = None):
        self.request_timeout_ms = checked_admin_timeout(request_timeout_ms)
        self._conn = Connection(broker_address(broker, curve_key_file, curve_server_key_file,
                                               bootstrap_servers))
        self._broker_protocol: int | None = None   # asked before the first guarded call

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _call(self, encode, *args, retry: bool = True, retried: tuple = RETRIED_ERRORS):
        if not retry:
            request_id = self._conn.next_request_id()
            return self._conn.request(encode(request_id, *args), request_id, self.request_timeout_ms)[0]
        view, _ = self._conn.request_retrying(lambda request_id: encode(request_id, *args),
                                              self.request_timeout_ms, retried)
        return view

    def _change(self, encode, *args, retry: bool = True):
        """``_call`` of a change: its requests carry the time left (``timed_change``)."""
        return self._call(timed_change(encode, self.request_timeout_ms), *args, retry=retry)

    def _require_protocol(self, call: str) -> None:
        """UnsupportedVersionError, before ``call`` is sent, if the broker's protocol
        lacks it (client/broker_protocol.py); the version is asked once."""
        if self._broker_protocol is None:
            self._broker_protocol = self._call(protocol.encode_metadata, []).protocol_version
        check_protocol(call, self._broker_protocol, self._conn.url)

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int | None = None,
                     config: dict[str, str] | None = None) -> protocol.TopicInfo:
        """Create a topic with ``replication_factor`` copies of each partition (None: the
        server's --default-replication-factor); raises TopicExistsError,
        InvalidTopicError, InvalidPartitionsError, InvalidConfigError,
        InvalidReplicationFactorError."""
        check_new_topic(name, partitions, replication_factor)
        config = checked_config(config)
        return self._change(protocol.encode_create_topic, name, partitions, config,
                            "createTopic", replication_factor or 0).topics[0]

    def create_topics(self, new_topics: list[NewTopic], *,
                      validate_only: bool = False) -> list[protocol.TopicInfo]:
        """Create 1 to CREATE_TOPICS_BATCH_MAX topics in one request (Kafka's CreateTopics),
        all or none: the first one refused raises, naming it, and none is created. Far
        cheaper than as many ``create_topic`` calls at thousands of topics (each create
        rewrites the broker's metadata whole; a batch rewrites it once). Returns each
        topic's info, in order. ``validate_only`` (kafka-python's name): the broker makes
        every check a create would (names, reserved and colliding names, counts, factors,
        each config key and value) and raises what the create would, creating none; its
        infos carry no topic id ("")."""
        checked = checked_new_topics(new_topics)
        if checked_bool("validate_only", validate_only):   # a question: not retried as a change
            self._require_protocol("create_topics(validate_only=True)")
            return self._call(protocol.encode_create_topics, checked, True).topics
        return self._change(protocol.encode_create_topics, checked).topics

    def alter_topic(self, name: str, config: dict[str, str] | None = None,
                    delete_config: Iterable[str] = ()) -> protocol.TopicInfo:
        """Change config entries (e.g. retention.ms) and set ``delete_config``'s keys back
        to their defaults (Kafka's DELETE config operation); the others keep their values.
        InvalidConfigError for an unknown key, a bad value, or a key in both."""
        config, deleted = alter_topic_args(config, delete_config)
        return self._change(protocol.encode_create_topic, name, 0, config, "alterTopic",
                            0, deleted).topics[0]

    def create_partitions(self, name: str, total_count: int) -> protocol.TopicInfo:
        """Grow the topic to ``total_count`` partitions (Kafka's CreatePartitions, whose
        NewPartitions also takes the total, not the number to add). The old partitions
        keep their records; keys hash over the new count from now on. A Producer running
        now keeps the count it learned until it is restarted. InvalidPartitionsError if
        ``total_count`` is not above the topic's count."""
        topics.validate_partition_growth(name, 0, total_count)
        return self._change(protocol.encode_create_topic, name, total_count, {},
                            "alterTopic").topics[0]

    def list_topics(self) -> list[str]:
        """Names of all topics, sorted: every page of ``list_topics_page``, walked
        ADMIN_LIST_PAGE_NAMES_MAX names at a time (one listTopics answer, which carries
        each topic's config, outgrows what a reader walks beyond ~100 topics)."""
        return self._all_names("listTopicsPage", limits.TOPICS_MAX)

    def list_topics_page(self, prefix: str = "", after: str = "",
                         limit: int = limits.ADMIN_LIST_PAGE_NAMES_DEFAULT) -> TopicsPage:
        """One page of the topic names: ``.names``, sorted, each starting with ``prefix``
        and after ``after``, at most ``limit`` (1 to ADMIN_LIST_PAGE_NAMES_MAX, else
        ValueError or RequestTooLargeError), and ``.more``, whether names follow. Walk
        the list by passing the last name as ``after`` while ``more``."""
        return self._names_page("listTopicsPage", prefix, after, limit)

    def topic_stats(self, names: list[str]) -> dict[str, protocol.TopicStats]:
        """Each topic's size on the shards' disks (``size_bytes``) and rates over the
        last ~10 s (``records_in_per_s``, ``bytes_in_per_s``, ``records_out_per_s``,
        ``bytes_out_per_s``), by name; at most ADMIN_TOPIC_STATS_NAMES_MAX names
        (RequestTooLargeError), UnknownTopicError for one that does not exist.
        ``partitions_answered`` < ``partitions``: a shard did not answer."""
        names = checked_topic_names("names", names)
        return {s.name: s for s in self._call(protocol.encode_topic_stats_request,
                                              names).topic_stats}

    def describe_topic(self, name: str) -> protocol.TopicInfo:
        """Its ``topic_id`` (32 hex digits: another after a delete and a create under
        the same name), partitions with their leader shard, start and end offsets, bytes on disk,
        replicas, in-sync replicas, leader epoch and high watermark; and, for tiered
        storage, the local log start, the remote log's start and end offsets
        (protocol.NO_REMOTE_OFFSET while nothing is remote) and its bytes.
        ``start_offset`` is the log start, remote included."""
        return self._call(protocol.encode_topic_request, "describeTopic",
                          checked_str("name", name)).topics[0]

    def delete_topic(self, name: str, topic_id: str | None = None) -> None:
        """Delete the topic ``name``; with ``topic_id`` (as describe_topic's
        ``topic_id`` showed it) only if it still has that id: UnknownTopicIdError,
        nothing deleted, if it was deleted and created again since. UnsupportedVersionError,
        nothing deleted, from a broker too old to keep that guard."""
        name, topic_id = checked_str("name", name), checked_topic_id("topic_id", topic_id)
        if topic_id:
            self._require_protocol("delete_topic(topic_id=...)")
        self._change(protocol.encode_topic_request, "deleteTopic", name, topic_id)

    def partition_count(self, name: str) -> int:
        """The topic's partition count; UnknownTopicError, or InvalidTopicError naming the
        rule its name breaks (``unknown_topic``)."""
        try:
            return self._call(protocol.encode_metadata,
                              [checked_str("name", name)]).topics[0].partitions
        except UnknownTopicError as exc:
            raise unknown_topic(name, exc) from None

    def add_shards(self, count: int) -> list[tuple[str, int, str, str, int]]:
        """Add shards; returns the partitions whose writes moved, as
        (topic, partition, from shard, to shard, offset). No data is copied."""
        return self._change(protocol.encode_shards_change, "addShards",
                            checked_shard_count(count), retry=False).moves

    def remove_shards(self, count: int) -> list[tuple[str, int, str, str, int]]:
        """Remove the ``count`` newest shards; their partitions' writes and their consumer
        groups move to the others (no data copied; older records stay readable where
        they are). Returns the moves, as ``add_shards`` does."""
        return self._change(protocol.encode_shards_change, "removeShards",
                            checked_shard_count(count), retry=False).moves

    def move_shard(self, shard: str, node: str, *, allow_replicas_on_one_node: bool = False,
                   accept_data_loss: bool = False, force: bool = False) -> protocol.ShardMove:
        """Re-create ``shard`` on ``node`` (its name in ``status().node_names``) after its
        node was lost for good: its replicas are rebuilt there from their leaders and
        rejoin the in-sync sets. Refused (InvalidConfigError) if ``node`` holds a replica
        of one of its partitions (unless ``allow_replicas_on_one_node``), if a partition
        has no other copy (unless ``accept_data_loss``: it comes back empty), or if its
        node is alive and it serves (unless ``force``). Not retried."""
        return self._change(lambda request_id, timeout_ms: protocol.encode_move_shard(
            request_id, shard, node, allow_replicas_on_one_node=allow_replicas_on_one_node,
            accept_data_loss=accept_data_loss, force=force, timeout_ms=timeout_ms),
            retry=False).shard_move

    def elect_leaders(self, election_type: str | int = "preferred",
                      topic_partitions=None) -> list[protocol.ElectionResult]:
        """Elect leaders (Kafka's ElectLeaders, as kafka-python's
        ``KafkaAdminClient.elect_leaders``). ``election_type`` "preferred" (0): each
        replicated partition's preferred leader (the first of its replicas) leads it
        again, once it holds the current leader's whole log (a hand-over: no
        acknowledged record is cut); "unclean" (1): an offline partition gets a leader
        among any replica that answers, records may be lost. ``topic_partitions``:
        None (every partition of every topic), ``{topic: [partition, ...]}``, or
        TopicPartitions or (topic, partition) pairs. Returns one ElectionResult per
        partition, by topic then partition; each one's ``error`` says why it was not
        elected (ElectionNotNeededError where it has that leader already). Not
        retried."""
        return self._call(protocol.encode_elect_leaders, election_type_code(election_type),
                          election_partitions(topic_partitions), retry=False).elections

    def status(self) -> protocol.StatusInfo:
        """Nodes, shards (partitions, bytes, records/s) and routers of the broker."""
        return self._call(protocol.encode_status_request).status

    # --- Consumer groups ---------------------------------------------------------

    def list_groups(self) -> list[str]:
        """Every group with members or committed offsets, sorted: every page of
        ``list_groups_page``, as ``list_topics``. RequestTimedOutError naming the shards
        that did not answer in time, rather than a list without their groups (as
        Kafka's list_consumer_groups().all() fails for a broker that does not answer;
        ``list_groups_page`` lists the others and names them in ``unanswered``)."""
        return self._all_names("listGroupsPage", limits.GROUPS_PER_SHARD_MAX * limits.SHARDS_MAX)

    def list_groups_page(self, prefix: str = "", after: str = "",
                         limit: int = limits.ADMIN_LIST_PAGE_NAMES_DEFAULT) -> GroupsPage:
        """One page of the group names, as ``list_topics_page``."""
        return self._names_page("listGroupsPage", prefix, after, limit)

    def _all_names(self, kind: str, names_max: int) -> list[str]:
        """Every name, a page at a time; at most ``names_max`` names, the most there may be."""
        names: list[str] = []
        step = limits.ADMIN_LIST_PAGE_NAMES_MAX
        for _ in range(names_max // step + 2):
            page = self._names_page(kind, "", names[-1] if names else "", step)
            refuse_partial(kind, page)
            names += page.names
            if not page.more:
                return names
        raise InternalError(f"{kind}: the pages did not end within {names_max} names")

    def _names_page(self, kind: str, prefix: str, after: str, limit: int) -> NamesPage:
        check_names_page_args(kind, prefix, after, limit)
        return self._call(protocol.encode_names_page_request, kind, prefix, after,
                          limit).names_page

    def describe_group(self, group: str) -> protocol.GroupInfo:
        """Members, their partitions and the group's committed offsets."""
        return self._call(protocol.encode_group_request, "describeGroup",
                          checked_str("group", group)).group

    def group_lag(self, group: str) -> list[tuple[str, int, int | None, int, int | None]]:
        """(topic, partition, committed offset, log end offset, lag) for every partition
        (lag: the end less the committed offset, negative for an offset committed past
        the end, None without one)
        of every topic the group has members or committed offsets for. A topic that no
        longer exists is left out: the group's offsets of a deleted topic mean nothing
        (the broker drops them), and one gone topic must not hide the others' lag."""
        info = self.describe_group(group)
        rows = []
        for topic in group_topics(info):
            try:
                rows += [lag_row(topic, partition, info.committed,
                                 self.list_offsets(topic, partition).end_offset)
                         for partition in range(self.partition_count(topic))]
            except UnknownTopicError:
                continue
        return rows

    def reset_group_offsets(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        """Set a group's committed offsets; refused while the group has members. TypeError
        or ValueError, before anything is sent, for a key that is not a (topic,
        partition) pair or an offset that is not an int 0 or more. Each offset is
        stored as given, as Kafka's alter_consumer_group_offsets stores it: one past
        the partition's end makes ``group_lag`` negative, and the group's consumers
        start from ``auto_offset_reset`` there (offsetOutOfRange). ``plinth group
        reset --to-offset`` clamps to the partition's offsets instead, as
        kafka-consumer-groups.sh does, with a warning."""
        group = checked_str("group", group)
        for part in protocol.commit_offsets_parts(checked_offsets("reset_group_offsets", offsets)):
            self._call(protocol.encode_commit_offsets, "resetOffsets", group, "", 0, part)

    def delete_group(self, group: str) -> None:
        """Delete a group's committed offsets and settings (Kafka's DeleteGroups): its
        consumers start again from auto_offset_reset. GroupNotEmptyError while it has
        members (Plinth's or Kafka's), UnknownGroupError if it has nothing to delete."""
        self._call(protocol.encode_group_request, "deleteGroup", checked_str("group", group))

    def delete_group_offsets(self, group: str, partitions
                             ) -> dict[TopicPartition, BrokerError | None]:
        """Delete some of a group's committed offsets (Kafka's OffsetDelete, as
        kafka-python's ``KafkaAdminClient.delete_group_offsets``): ``partitions``, an
        iterable of TopicPartitions or (topic, partition) pairs. Returns each
        partition's outcome, by topic then partition: None if its offset is gone (or
        none was committed), else why it was kept: GroupSubscribedToTopicError (the
        group's active members subscribe to its topic: stop them first),
        UnknownTopicError or PartitionOutOfRangeError. Raised instead, for the whole
        call: UnknownGroupError (neither members nor offsets), GroupNotEmptyError (a
        Kafka group of another protocol type than consumer, with members),
        NotAuthorizedError (admin on the group, consume on each topic). One request
        per topic; TypeError or ValueError for a partition that is not a pair, before
        anything is sent. Safe to repeat. UnsupportedVersionError from a broker too old
        to answer it."""
        group = checked_str("group", group)
        outcomes: dict[TopicPartition, BrokerError | None] = {}
        by_topic = sorted(offsets_to_delete(partitions).items())
        self._require_protocol("delete_group_offsets")
        for topic, numbers in by_topic:
            outcomes.update(offset_deletions(self._call(
                protocol.encode_delete_offsets, group, {(topic, p) for p in numbers})))
        return outcomes

    def delete_records(self, records_to_delete: dict) -> dict[TopicPartition, int]:
        """Delete each partition's records before its offset (Kafka's DeleteRecords, as
        kafka-python's ``KafkaAdminClient.delete_records``): ``{TopicPartition or
        (topic, partition): offset}``, offset -1 for the high watermark. Returns each
        partition's low watermark (its new log start offset; unchanged for an offset
        below it). Every partition is asked, one request each; then the first refusal
        is raised: OffsetOutOfRangeError (past the high watermark, or negative),
        UnknownTopicError, PartitionOutOfRangeError, NotAuthorizedError (admin on the
        topic). ValueError, before anything is sent, for a negative offset but -1."""
        low_watermarks, refusals = {}, []
        for tp, offset in checked_records_to_delete(records_to_delete).items():
            try:
                low_watermarks[tp] = self._call(protocol.encode_delete_records, tp.topic,
                                                tp.partition, offset).offsets.start_offset
            except BrokerError as exc:
                refusals.append(exc)
        if refusals:
            raise refusals[0]
        return low_watermarks

    def list_offsets(self, topic: str, partition: int,
                     timestamp_ms: int = protocol.NO_TIME_LOOKUP, *,
                     require_listed: bool = False) -> protocol.PartitionInfo:
        """Start and end (high watermark) offsets of one partition, from its leader: a
        PartitionInfo whose offsets and sizes are set (``end_offset`` and
        ``high_watermark`` alike, the local and remote starts), while ``replicas``,
        ``in_sync_replicas`` and ``leader_epoch`` are left empty (describe_topic's,
        which the controller knows). With ``timestamp_ms``
        (ms since the epoch, or protocol.MAX_TIMESTAMP) also the first record stamped at
        or after it, in ``found_offset``/``found_timestamp_ms`` (-1: none). ValueError
        for another negative ``timestamp_ms``, TypeError or ValueError for any argument
        of the wrong type or out of range, before anything is sent. Retried within
        request_timeout_ms while a look-up in object storage is requestTimedOut (the
        shard's bound on a slow store): the retry joins the read still under way.

        Of a tiered partition whose shard has not listed object storage yet (a new
        leader, the store down: ``remote_not_listed`` says why), the start offset and
        the remote offsets are what the shard knows, and the store may hold records
        before that start. With ``require_listed`` (the consumer's reset to the
        earliest offset, ``seek_to_beginning``) that is retried as UnavailableError
        within request_timeout_ms instead; a look-up by time always is."""
        return self._call(protocol.encode_list_offsets,
                          *list_offsets_args(topic, partition, timestamp_ms, require_listed),
                          retried=LIST_OFFSETS_RETRIED_ERRORS).offsets
