"""protocol.py: every Request and Reply kind round-trips; untrusted bytes fail one way only."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from plinth import limits, protocol
from plinth.errors import (BROKER_ERRORS, DiskReserveRefusedError, MalformedReplyError,
                           NotEnoughReplicasBeforeWriteError, NotEnoughReplicasError,
                           RemoteObjectNotFoundError, RemoteStorageError,
                           RemoteStorageUnavailableError,
                           MalformedRequestError, OffsetOutOfRangeError, RequestTooLargeError,
                           StorageError, UnknownTopicError)
from plinth.name_pages import NamesPage
from plinth.schemas import protocol as schema


def test_produce_and_fetch_requests_round_trip_every_field():
    produce = protocol.decode_request(protocol.encode_produce(7, "orders", 3, -1))
    assert (produce.request_id, produce.kind, produce.topic, produce.partition, produce.acks) == \
        (7, "produce", "orders", 3, -1)
    fetch = protocol.decode_request(protocol.encode_fetch(8, "orders", 2, 1234, 4096, 250))
    assert (fetch.kind, fetch.partition, fetch.offset, fetch.bytes_max, fetch.wait_ms_max) == \
        ("fetch", 2, 1234, 4096, 250)


def test_admin_requests_round_trip_names_counts_and_config():
    create = protocol.decode_request(protocol.encode_create_topic(1, "t", 12, {"segment.bytes": "4096"}))
    assert (create.kind, create.topic, create.partitions, create.config) == \
        ("createTopic", "t", 12, {"segment.bytes": "4096"})
    assert protocol.decode_request(protocol.encode_topic_request(2, "deleteTopic", "x")).topic == "x"
    assert protocol.decode_request(protocol.encode_list_topics(3)).kind == "listTopics"
    assert protocol.decode_request(protocol.encode_metadata(4, ["a", "b"])).topics == ("a", "b")
    offsets = protocol.decode_request(protocol.encode_list_offsets(5, "t", 9))
    assert (offsets.kind, offsets.partition) == ("listOffsets", 9)
    alter = protocol.decode_request(protocol.encode_create_topic(6, "t", 0, {"retention.ms": "1"},
                                                                 "alterTopic"))
    assert alter == protocol.AlterTopicRequest(6, "t", {"retention.ms": "1"})
    deleting = protocol.decode_request(protocol.encode_create_topic(
        6, "t", 0, {}, "alterTopic", delete_config=("retention.ms", "retention.bytes")))
    assert deleting == protocol.AlterTopicRequest(6, "t", {}, 0, ("retention.ms", "retention.bytes"))
    assert protocol.decode_request(protocol.encode_shards_change(7, "addShards", 2)) == \
        protocol.AddShardsRequest(7, 2)
    assert protocol.decode_request(protocol.encode_shards_change(8, "removeShards", 1)) == \
        protocol.RemoveShardsRequest(8, 1)
    reset = protocol.decode_request(protocol.encode_commit_offsets(
        9, "resetOffsets", "g", "", 0, {("a", 0): 3}))
    assert reset == protocol.ResetOffsetsRequest(9, "g", {("a", 0): 3})


def test_every_change_carries_its_clients_time_left_and_0_when_not_given():
    changes = {
        "createTopic": lambda **t: protocol.encode_create_topic(1, "t", 2, {}, **t),
        "alterTopic": lambda **t: protocol.encode_create_topic(1, "t", 0, {"a": "b"}, "alterTopic",
                                                               **t),
        "createTopics": lambda **t: protocol.encode_create_topics(
            1, [protocol.NewTopic("t", 1, {})], **t),
        "deleteTopic": lambda **t: protocol.encode_topic_request(1, "deleteTopic", "t", **t),
        "addShards": lambda **t: protocol.encode_shards_change(1, "addShards", 1, **t),
        "removeShards": lambda **t: protocol.encode_shards_change(1, "removeShards", 1, **t),
        "moveShard": lambda **t: protocol.encode_move_shard(1, "shard-1", "node-2", **t),
    }
    for kind, encode in changes.items():
        assert protocol.decode_request(encode(timeout_ms=2_500.7)).timeout_ms == 2_500, kind
        assert protocol.decode_request(encode()).timeout_ms == 0, kind
        assert protocol.decode_request(encode(timeout_ms=None)).kind == kind


def test_a_time_left_beyond_the_field_is_sent_as_its_largest_and_one_run_out_as_1_ms():
    assert protocol.timeout_field(10**9) == limits.TIMEOUT_MS_FIELD_MAX == 65_535
    for gone_ms in (0, 0.4, -5_000):   # 0 would read as "not given": the router must drop it
        assert protocol.timeout_field(gone_ms) == 1
    assert protocol.timeout_field(None) == 0
    create = protocol.decode_request(protocol.encode_create_topic(1, "t", 1, {}, timeout_ms=-3))
    assert create.timeout_ms == 1


def test_a_query_carries_no_timeout_and_a_describe_refuses_one_as_a_programmer_error():
    with pytest.raises(AssertionError, match="describeTopic carries no topic id or timeout"):
        protocol.encode_topic_request(1, "describeTopic", "t", timeout_ms=1_000)
    # A timeoutMs on a kind that has none is ignored, not kept.
    message = schema.Request.new_message(requestId=3, timeoutMs=700)
    message.init("describeTopic").name = "t"
    assert protocol.decode_request(message.to_bytes()) == protocol.DescribeTopicRequest(3, "t")


def test_create_topic_carries_its_replication_factor_and_0_for_the_servers_default():
    # Given createTopic requests with a factor and without one
    with_factor = protocol.encode_create_topic(1, "t", 3, {}, replication_factor=3)
    without = protocol.encode_create_topic(2, "t", 3, {})
    # When decoded / Then the factor is there, and 0 (the server's default) when not given
    assert protocol.decode_request(with_factor).replication_factor == 3
    assert protocol.decode_request(without).replication_factor == 0


def test_describe_carries_each_partitions_leader_replicas_in_sync_epoch_and_high_watermark():
    # Given a partition led by shard-2 at epoch 4, one replica out of sync
    part = protocol.PartitionInfo(0, "shard-2", 5, 90, 1000, ["shard-2", "shard-0", "shard-1"],
                                  ["shard-2", "shard-1"], 4, 88)
    # When a describeTopic reply carries it / Then every field comes back
    decoded = protocol.decode_reply(protocol.encode_topics_reply(3, [protocol.TopicInfo(
        "t", 1, {}, [part])])).topics[0].partition_info[0]
    assert decoded == part


def test_a_topic_info_carries_its_topic_id_and_a_delete_the_topic_id_it_is_guarded_by():
    # Given a describe reply of a topic with its id, and deletes with and without an id
    topic_id = "0123456789abcdef0123456789abcdef"
    info = protocol.TopicInfo("orders", 2, {"k": "v"}, [protocol.PartitionInfo(1, "shard-0")],
                              topic_id=topic_id)
    guarded = protocol.encode_topic_request(2, "deleteTopic", "orders", topic_id)
    unguarded = protocol.encode_topic_request(3, "deleteTopic", "orders")
    # When decoded / Then the id comes back with each; a delete without one carries ""
    assert protocol.decode_reply(protocol.encode_topics_reply(1, [info])).topics == [info]
    assert protocol.decode_request(guarded) == protocol.DeleteTopicRequest(2, "orders", topic_id)
    assert protocol.decode_request(unguarded) == protocol.DeleteTopicRequest(3, "orders", "")
    # And a describe request carries none: it is a programmer error to ask
    with pytest.raises(AssertionError, match="describeTopic carries no topic id"):
        protocol.encode_topic_request(4, "describeTopic", "orders", topic_id)


def test_describe_and_list_offsets_carry_the_local_start_and_the_remote_offsets_and_bytes():
    # Given a partition whose offsets 0..399 are in object storage (9000 bytes) and
    # 300..999 on the shard's disk (7000 bytes)
    part = protocol.PartitionInfo(0, "shard-1", 0, 1000, 7000, local_start_offset=300,
                                  remote_start_offset=0, remote_end_offset=400,
                                  remote_bytes=9000)
    # When a describeTopic and a listOffsets reply carry it / Then every field comes back
    described = protocol.decode_reply(protocol.encode_topics_reply(3, [protocol.TopicInfo(
        "t", 1, {}, [part])])).topics[0].partition_info[0]
    assert described == part and described.has_remote
    assert protocol.decode_reply(protocol.encode_offsets_reply(4, part)).offsets == part


def test_describe_carries_why_a_remote_log_is_not_listed_and_nothing_when_it_is():
    # Given a tiered partition whose shard has not listed the store yet
    why = "shard-2 has not listed object storage since it began uploading rt-0: ..."
    part = protocol.PartitionInfo(0, "shard-2", 0, 16927, 9084474, remote_not_listed=why)
    # When a describeTopic reply carries it / Then the reason comes back with it
    described = protocol.decode_reply(protocol.encode_topics_reply(3, [protocol.TopicInfo(
        "rt", 1, {}, [part])])).topics[0].partition_info[0]
    assert described == part and described.remote_not_listed == why
    # And a listed one's (as every broker's before the field) is ""
    listed = protocol.decode_reply(protocol.encode_offsets_reply(4, protocol.PartitionInfo(0)))
    assert listed.offsets.remote_not_listed == ""


def test_list_offsets_carries_a_time_to_look_up_and_its_reply_the_record_found():
    # Given a look-up at a time, one of the largest timestamp, and one without a time
    at_time = protocol.decode_request(protocol.encode_list_offsets(5, "t", 9, 1_700_000_000_000))
    largest = protocol.decode_request(protocol.encode_list_offsets(6, "t", 9,
                                                                   protocol.MAX_TIMESTAMP))
    plain = protocol.decode_request(protocol.encode_list_offsets(7, "t", 9))
    # Then each carries its time, and one without a time says none (-1)
    assert at_time == protocol.ListOffsetsRequest(5, "t", 9, 1_700_000_000_000)
    assert largest.timestamp_ms == protocol.MAX_TIMESTAMP == -3
    assert plain.timestamp_ms == protocol.NO_TIME_LOOKUP == -1
    # And the reply's record found comes back, and an old reply (without it) says none
    found = protocol.PartitionInfo(9, "shard-0", 0, 50, found_offset=17,
                                   found_timestamp_ms=1_700_000_000_017)
    assert protocol.decode_reply(protocol.encode_offsets_reply(5, found)).offsets == found
    old = protocol.decode_reply(protocol.encode_offsets_reply(5, protocol.PartitionInfo(9)))
    assert (old.offsets.found_offset, old.offsets.found_timestamp_ms) == (-1, -1)


def test_a_list_offsets_request_from_before_the_time_field_asks_for_no_look_up():
    # Given a request built as clients before the field did (topic and partition only)
    msg = schema.Request.new_message(requestId=3)
    body = msg.init("listOffsets")
    body.topic, body.partition = "t", 1
    # Then it decodes as a look-up without a time
    assert protocol.decode_request(msg.to_bytes()) == protocol.ListOffsetsRequest(3, "t", 1, -1)


@pytest.mark.parametrize("timestamp_ms", [-2, -4, -(2 ** 63)])
def test_a_negative_time_other_than_the_two_markers_is_refused_naming_it(timestamp_ms):
    # A client's own encoding refuses it
    with pytest.raises(ValueError, match=f"timestamp_ms={timestamp_ms} is negative"):
        protocol.encode_list_offsets(1, "t", 0, timestamp_ms)
    # And a request carrying it anyway is malformed, naming it
    msg = schema.Request.new_message(requestId=3)
    body = msg.init("listOffsets")
    body.topic, body.partition, body.timestampMs = "t", 1, timestamp_ms
    with pytest.raises(MalformedRequestError, match=f"timestampMs {timestamp_ms} is negative"):
        protocol.decode_request(msg.to_bytes())


def test_a_partition_with_nothing_remote_says_so_with_no_remote_offsets():
    part = protocol.PartitionInfo(0, "shard-1", 5, 9, 77, local_start_offset=5)
    decoded = protocol.decode_reply(protocol.encode_offsets_reply(4, part)).offsets
    assert (decoded.remote_start_offset, decoded.remote_end_offset, decoded.remote_bytes) == (
        protocol.NO_REMOTE_OFFSET, protocol.NO_REMOTE_OFFSET, 0)
    assert not decoded.has_remote


def test_status_carries_the_under_replicated_and_offline_partition_counts():
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [], [], 3, 1)
    status = protocol.decode_reply(protocol.encode_status_reply(1, info)).status
    assert (status.under_replicated_partitions, status.offline_partitions) == (3, 1)


def test_status_carries_the_servers_tier_store_claim_and_whether_it_holds_it():
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [], [], tier_claim="NOT HELD yet: x",
                               tier_claim_held=False)
    status = protocol.decode_reply(protocol.encode_status_reply(1, info)).status
    assert (status.tier_claim, status.tier_claim_held) == ("NOT HELD yet: x", False)
    info.tier_claim, info.tier_claim_held = "held at epoch 2 in s3://b/p", True
    status = protocol.decode_reply(protocol.encode_status_reply(1, info)).status
    assert (status.tier_claim, status.tier_claim_held) == ("held at epoch 2 in s3://b/p", True)


def test_every_request_kind_of_the_schema_has_its_class():
    kinds = set(schema.Request.schema.union_fields)
    assert kinds == set(protocol._REQUEST_DECODERS)
    assert {cls.kind for cls in protocol.Request.__args__} == kinds


def test_replies_round_trip_results_and_errors():
    assert protocol.decode_reply(protocol.encode_produce_reply(1, 42)).base_offset == 42
    fetch = protocol.decode_reply(protocol.encode_fetch_reply(2, 100, 10))
    assert (fetch.high_watermark, fetch.log_start_offset) == (100, 10)
    info = protocol.TopicInfo("t", 2, {"k": "v"}, [protocol.PartitionInfo(1, "shard-0", 5, 9, 77)])
    assert protocol.decode_reply(protocol.encode_topics_reply(3, [info])).topics == [info]
    part = protocol.PartitionInfo(0, "shard-1", 0, 3, 99)
    assert protocol.decode_reply(protocol.encode_offsets_reply(4, part)).offsets == part
    error = protocol.decode_reply(protocol.encode_error(5, OffsetOutOfRangeError("valid 0 to 3")))
    assert isinstance(error.error, OffsetOutOfRangeError) and str(error.error) == "valid 0 to 3"


def test_every_error_class_has_a_wire_code_and_every_code_a_class():
    codes = set(schema.ErrorCode.schema.enumerants) - {"none"}
    assert codes == set(BROKER_ERRORS)
    for name, cls in BROKER_ERRORS.items():
        decoded = protocol.decode_reply(protocol.encode_error(1, cls("m"))).error
        assert type(decoded) is cls and decoded.code_name == name


def test_not_enough_replicas_refused_before_the_write_stays_one_and_after_it_does_not():
    # A refusal before the append (the in-sync set already too small) says so on the wire
    refused = protocol.decode_reply(protocol.encode_error(
        1, NotEnoughReplicasBeforeWriteError("t-0: 1 in-sync replicas"))).error
    assert type(refused) is NotEnoughReplicasBeforeWriteError and refused.before_write
    assert refused.code_name == "notEnoughReplicas"
    # One answering a produce appended first does not: it may be stored
    waited = protocol.decode_reply(protocol.encode_error(
        2, NotEnoughReplicasError("t-0: in-sync replicas ['s0'] are 1"))).error
    assert type(waited) is NotEnoughReplicasError and not waited.before_write


def test_a_storage_error_refused_before_the_write_stays_one_and_an_older_brokers_is_maybe_written():
    # A refusal checked before the append (the disk reserve's) says so on the wire
    refused = protocol.decode_reply(protocol.encode_error(1, DiskReserveRefusedError("full")))
    assert type(refused.error) is DiskReserveRefusedError and refused.error.before_write
    assert refused.error.code_name == "storageError" and str(refused.error) == "full"
    # A failed write does not: it may have stored bytes
    failed = protocol.decode_reply(protocol.encode_error(2, StorageError("EIO"))).error
    assert type(failed) is StorageError and not failed.before_write
    # And a broker before the field (its Error has no beforeWrite) reads as a failed write
    msg = schema.Reply.new_message(requestId=3)
    msg.error.code, msg.error.message = "storageError", "full"
    msg.none = None
    assert type(protocol.decode_reply(msg.to_bytes()).error) is StorageError


@pytest.mark.parametrize("error, decoded_as", [
    (RemoteStorageUnavailableError("object storage unavailable: get s3://b/p/t-0/0.log: "
                                   "timed out"), RemoteStorageUnavailableError),
    (RemoteObjectNotFoundError("s3://b/p/t-0/0.log: no such object"), RemoteStorageError),
])
def test_an_object_storage_error_stays_one_on_the_wire_and_an_older_brokers_is_its_code(
        error, decoded_as):
    # A remote read's failure says it came from object storage
    decoded = protocol.decode_reply(protocol.encode_error(1, error)).error
    assert type(decoded) is decoded_as and decoded.remote_storage
    assert decoded.code_name == error.code_name and str(decoded) == str(error)
    # And a broker before the field reads as its code's own class
    msg = schema.Reply.new_message(requestId=2)
    msg.error.code, msg.error.message = error.code_name, "down"
    msg.none = None
    old = protocol.decode_reply(msg.to_bytes()).error
    assert type(old) is BROKER_ERRORS[error.code_name] and not old.remote_storage


def test_an_error_of_the_shards_own_is_not_an_object_storage_one():
    for cls in BROKER_ERRORS.values():
        assert not protocol.decode_reply(protocol.encode_error(1, cls("m"))).error.remote_storage


def test_delete_offsets_and_its_answer_round_trip_each_partitions_outcome():
    request = protocol.decode_request(protocol.encode_delete_offsets(
        3, "g", {("t", 1), ("t", 0), ("u", 4)}))
    assert request == protocol.DeleteOffsetsRequest(3, "g", frozenset({("t", 0), ("t", 1),
                                                                       ("u", 4)}))
    assert isinstance(request, protocol.GROUP_REQUESTS)
    reply = protocol.decode_reply(protocol.encode_offset_deletions_reply(3, [
        protocol.OffsetDeletion("t", 0), protocol.OffsetDeletion("u", 4, UnknownTopicError("u?"))]))
    assert reply.error is None and reply.offset_deletions[0] == protocol.OffsetDeletion("t", 0)
    [_, refused] = reply.offset_deletions
    assert (refused.topic, refused.partition, str(refused.error)) == ("u", 4, "u?")
    assert type(refused.error) is UnknownTopicError


def test_a_header_over_the_limit_is_too_large_and_says_both_sizes():
    with pytest.raises(RequestTooLargeError, match=f"{limits.HEADER_BYTES_MAX + 1} bytes.*{limits.HEADER_BYTES_MAX}"):
        protocol.decode_request(b"\0" * (limits.HEADER_BYTES_MAX + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_decode_to_a_request_or_raise_malformed_request_only(data):
    try:
        protocol.decode_request(data)
    except MalformedRequestError:
        pass


def test_bit_flipped_requests_decode_or_raise_malformed_request_only():
    rng = random.Random(11)
    good = protocol.encode_create_topic(1, "topic-name", 3, {"segment.bytes": "4096"})
    for _ in range(2000):   # any other exception fails the test
        data = bytearray(good)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            protocol.decode_request(bytes(data))
        except MalformedRequestError:
            pass


def test_unknown_error_codes_become_internal_errors_naming_the_code():
    from plinth.errors import error_for_code, InternalError
    err = error_for_code("someFutureCode", "detail")
    assert isinstance(err, InternalError) and "someFutureCode" in str(err)
    assert isinstance(error_for_code("unknownTopic", "x"), UnknownTopicError)


def test_group_requests_and_replies_round_trip():
    hb = protocol.decode_request(protocol.encode_group_heartbeat(
        1, "g", "m1", 4, ["a", "b"], {("a", 0), ("b", 2)}, 3000, "range"))
    assert (hb.kind, hb.group, hb.member_id, hb.member_epoch, hb.topics, hb.owned,
            hb.session_timeout_ms, hb.assignor) == \
        ("groupHeartbeat", "g", "m1", 4, ("a", "b"), {("a", 0), ("b", 2)}, 3000, "range")
    commit = protocol.decode_request(protocol.encode_commit_offsets(
        2, "commitOffsets", "g", "m1", 4, {("a", 0): 17}))
    assert (commit.kind, commit.offsets) == ("commitOffsets", {("a", 0): 17})
    assert protocol.decode_request(protocol.encode_group_request(3, "describeGroup", "g")).group == "g"
    reply = protocol.decode_reply(protocol.encode_heartbeat_reply(4, "m1", 5, 600, {("a", 1)}))
    assert reply.heartbeat == protocol.HeartbeatView("m1", 5, 600, {("a", 1)})
    info = protocol.GroupInfo("g", "sticky", 7, [protocol.MemberInfo("m1", 5, ["a"], {("a", 1)})],
                              {("a", 1): 9})
    assert protocol.decode_reply(protocol.encode_group_reply(5, info)).group == info
    listed = protocol.decode_reply(protocol.encode_groups_reply(
        6, [protocol.GroupListing("g", "Stable"), protocol.GroupListing("h", "Empty")]))
    assert listed.groups == ["g", "h"]


def test_a_list_groups_reply_carries_each_groups_state_and_protocol_type_in_order():
    # Given a classic group rebalancing, a Plinth group with members and one known
    # only by its committed offsets
    listings = [protocol.GroupListing("kafka-app", "PreparingRebalance", "consumer"),
                protocol.GroupListing("orders", "Stable"),
                protocol.GroupListing("stale", "Empty")]
    # When the listGroups reply is encoded and decoded
    reply = protocol.decode_reply(protocol.encode_groups_reply(6, listings))
    # Then the names and, beside them, the states and protocol types come back
    assert (reply.groups, reply.group_listings) == (["kafka-app", "orders", "stale"], listings)


def test_a_list_groups_reply_without_states_reads_as_states_unknown():
    # Given a reply from a writer that predates groupListings: the names only
    msg = schema.Reply.new_message(requestId=6)
    msg.init("groups", 2)
    msg.groups[0], msg.groups[1] = "g", "h"
    # When it is decoded, then each group is listed with no state
    assert protocol.decode_reply(msg.to_bytes()).group_listings == [
        protocol.GroupListing("g", ""), protocol.GroupListing("h", "")]


def test_commit_and_reset_carry_each_offsets_metadata_and_the_committed_reply_returns_it():
    # Given offsets of three partitions, two with metadata (one non-ASCII)
    offsets = {("a", 0): 17, ("a", 1): 18, ("b", 0): 19}
    metadata = {("a", 0): "hello", ("b", 0): "état"}
    # When a commit, a reset and a fetchOffsets answer carry them
    for kind in ("commitOffsets", "resetOffsets"):
        request = protocol.decode_request(protocol.encode_commit_offsets(
            2, kind, "g", "m1" if kind == "commitOffsets" else "", 4, offsets,
            metadata=metadata))
        # Then each decodes to the same offsets and, apart, the metadata of those with one
        assert (request.kind, request.offsets, request.metadata) == (kind, offsets, metadata)
    reply = protocol.decode_reply(protocol.encode_committed_reply(3, offsets, metadata))
    assert (reply.committed, reply.committed_metadata) == (offsets, metadata)


def test_a_commit_without_metadata_and_one_from_before_the_field_decode_with_none():
    # Given a commit from a client that passes no metadata, and one built as clients
    # before the field did (topic, partition and offset only)
    plain = protocol.encode_commit_offsets(2, "commitOffsets", "g", "m1", 4, {("a", 0): 17})
    msg = schema.Request.new_message(requestId=3)
    body = msg.init("commitOffsets")
    body.group, body.memberId, body.memberEpoch = "g", "m1", 4
    entry = body.init("offsets", 1)[0]
    entry.topic, entry.partition, entry.offset = "a", 0, 17
    # Then both decode to the offset without metadata
    for frame in (plain, msg.to_bytes()):
        request = protocol.decode_request(frame)
        assert (request.offsets, request.metadata) == ({("a", 0): 17}, {})


@pytest.mark.parametrize("topic_bytes, metadata_bytes", [
    (1, 0), (15, 0), (limits.TOPIC_NAME_BYTES_MAX, 0), (1, limits.OFFSET_METADATA_BYTES_MAX),
    (limits.TOPIC_NAME_BYTES_MAX, limits.OFFSET_METADATA_BYTES_MAX), (7, 100)])
def test_a_commit_too_big_for_one_header_is_split_into_parts_that_each_fit(
        topic_bytes, metadata_bytes):
    # Given 4,096 partitions of each of two topics, with metadata of the size given,
    # and the longest group name, member id (a Kafka client id of 255 characters that
    # take 4 bytes each, and a UUID) and instance id
    topics = ["a" * topic_bytes, "b" * topic_bytes]
    offsets = {(topic, p): 2**62 + p for topic in topics for p in range(4096)}
    metadata = {tp: "m" * metadata_bytes for tp in offsets} if metadata_bytes else None
    group = "g" * limits.GROUP_NAME_BYTES_MAX
    member = "\U0001F600" * limits.CLASSIC_CLIENT_ID_CHARS_MAX + "-" + "u" * 36
    instance = "i" * limits.CLASSIC_GROUP_INSTANCE_ID_BYTES_MAX
    # When they are split into parts and each part is encoded
    parts = protocol.commit_offsets_parts(offsets, metadata)
    headers = [protocol.encode_commit_offsets(
        1, "commitOffsets", group, member, 7, part, group_instance_id=instance,
        metadata=metadata and {tp: metadata[tp] for tp in part}) for part in parts]
    # Then every header fits, the parts hold every offset once, in order, and each part
    # but the last is more than half full (no needless round trips)
    sizes = [len(header) for header in headers]
    assert max(sizes) <= limits.HEADER_BYTES_MAX, sizes
    assert [tp for part in parts for tp in part] == sorted(offsets)
    assert {tp: o for part in parts for tp, o in part.items()} == offsets
    assert all(size > limits.HEADER_BYTES_MAX // 2 for size in sizes[:-1]), sizes
    decoded = protocol.decode_request(headers[-1])
    assert decoded.offsets == parts[-1]


def test_a_commit_that_fits_one_header_is_one_part_and_no_offsets_are_no_parts():
    offsets = {("t", p): p for p in range(100)}
    assert protocol.commit_offsets_parts(offsets) == [offsets]
    assert protocol.commit_offsets_parts({}) == []


def test_a_reply_that_does_not_decode_raises_malformed_reply_naming_it():
    # Given bytes that are not a Reply (say, from something that is not a router)
    with pytest.raises(MalformedReplyError, match="not a valid Reply"):
        # When the client decodes them, then it says so with its own error
        protocol.decode_reply(b"\x01" * 24)


def test_a_throttled_reply_carries_its_throttle_time_and_an_unthrottled_one_zero():
    # Given a produce reply the broker throttled by 250 ms, and one it did not
    msg = schema.Reply.new_message(requestId=3, throttleTimeMs=250)
    msg.init("produce").baseOffset = 9
    # When the client decodes them, then the throttle time is read (through pycapnp
    # for the throttled one: the hand-packed decoder takes only a throttle of 0)
    assert protocol.decode_reply(msg.to_bytes()).throttle_time_ms == 250
    assert protocol.decode_reply(protocol.encode_produce_reply(3, 9)).throttle_time_ms == 0


def test_status_carries_each_shards_remote_bytes_and_upload_backlog():
    shard = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7501", True, 2, 10, 0.0, 0.0,
                                 remote_bytes=5_000_000, upload_lag_bytes=1_048_576,
                                 upload_lag_s=12.5, upload_errors=3)
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [shard], [])
    assert protocol.decode_reply(protocol.encode_status_reply(1, info)).status.shards == [shard]


def test_status_carries_how_many_of_a_shards_partitions_are_not_listed_in_object_storage():
    shard = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7501", True, 2, 10, 0.0, 0.0,
                                 remote_bytes=0, remote_partitions_not_listed=2)
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [shard], [])
    decoded = protocol.decode_reply(protocol.encode_status_reply(1, info)).status.shards
    assert decoded == [shard] and decoded[0].remote_partitions_not_listed == 2


def test_status_carries_how_many_of_a_shards_partitions_the_disk_refused_appends_to():
    shard = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7501", True, 2, 10, 0.0, 0.0,
                                 partitions_appends_failing=3)
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [shard], [])
    decoded = protocol.decode_reply(protocol.encode_status_reply(1, info)).status.shards
    assert decoded == [shard] and decoded[0].partitions_appends_failing == 3


def test_a_shards_status_carries_its_process_id():
    shard = protocol.ShardStatus("shard-1", "tcp://127.0.0.1:7502", True, 3, 10, 0.0, 0.0,
                                 node="a", pid=31337)
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [shard], [])
    assert protocol.decode_reply(protocol.encode_status_reply(1, info)).status.shards == [shard]


def test_status_carries_why_a_draining_shard_has_not_retired():
    shard = protocol.ShardStatus("shard-2", "tcp://127.0.0.1:7503", True, 0, 10, 0.0, 0.0,
                                 draining=True, draining_reason="1 partition of tiered topics "
                                 "still uploading to object storage")
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [shard], [])
    assert protocol.decode_reply(protocol.encode_status_reply(1, info)).status.shards == [shard]


def test_a_shards_status_carries_its_process_id():
    shard = protocol.ShardStatus("shard-1", "tcp://127.0.0.1:7502", True, 3, 10, 0.0, 0.0,
                                 node="a", pid=31337)
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [shard], [])
    assert protocol.decode_reply(protocol.encode_status_reply(1, info)).status.shards == [shard]


def test_status_carries_why_a_down_shard_is_down():
    shard = protocol.ShardStatus("shard-0", "tcp://127.0.0.1:7501", False, 3, 0, 0.0, 0.0,
                                 down_reason="restarting: died 101 times, next start in 40 s")
    info = protocol.StatusInfo([("n", "127.0.0.1", True)], [shard], [])
    assert protocol.decode_reply(protocol.encode_status_reply(1, info)).status.shards == [shard]


def test_page_requests_and_their_answer_round_trip():
    request = protocol.decode_request(protocol.encode_names_page_request(
        7, "listTopicsPage", "orders.", "orders.10", 50))
    assert request == protocol.ListTopicsPageRequest(7, "orders.", "orders.10", 50)
    request = protocol.decode_request(protocol.encode_names_page_request(8, "listGroupsPage", "", "", 1))
    assert request == protocol.ListGroupsPageRequest(8, "", "", 1)
    page = protocol.decode_reply(protocol.encode_names_page_reply(
        9, NamesPage(["a", "b"], True))).names_page
    assert page == NamesPage(["a", "b"], True)


def test_a_page_of_groups_carries_the_shards_that_did_not_answer():
    page = NamesPage(["g1", "g2"], False, ["shard-1", "shard-3"])
    assert protocol.decode_reply(protocol.encode_names_page_reply(3, page)).names_page == page


def test_a_page_over_the_limit_is_refused_before_it_is_sent():
    with pytest.raises(RequestTooLargeError, match="ADMIN_LIST_PAGE_NAMES_MAX"):
        protocol.encode_names_page_request(1, "listTopicsPage", "", "",
                                           limits.ADMIN_LIST_PAGE_NAMES_MAX + 1)
    with pytest.raises(RequestTooLargeError, match="ADMIN_TOPIC_STATS_NAMES_MAX"):
        protocol.encode_topic_stats_request(1, ["t"] * (limits.ADMIN_TOPIC_STATS_NAMES_MAX + 1))


def test_topic_stats_and_rates_out_round_trip():
    assert protocol.decode_request(protocol.encode_topic_stats_request(3, ["a", "b"])) == \
        protocol.TopicStatsRequest(3, ("a", "b"))
    stats = [protocol.TopicStats("a", 2, 100, 1.5, 150.0, 3.0, 300.0, 2)]
    assert protocol.decode_reply(protocol.encode_topic_stats_reply(4, stats)).topic_stats == stats
    shard = protocol.ShardStatus("shard-0", "tcp://x", True, 1, 10, 1.0, 2.0,
                                 records_out_per_s=3.0, bytes_out_per_s=4.0)
    info = protocol.StatusInfo([], [shard], [])
    decoded = protocol.decode_reply(protocol.encode_status_reply(1, info)).status.shards[0]
    assert (decoded.records_out_per_s, decoded.bytes_out_per_s) == (3.0, 4.0)


def test_the_largest_topic_stats_request_fits_a_header():
    names = ["t" * limits.TOPIC_NAME_BYTES_MAX] * limits.ADMIN_TOPIC_STATS_NAMES_MAX
    header = protocol.encode_topic_stats_request(1, names)
    assert len(header) <= limits.HEADER_BYTES_MAX
    assert protocol.decode_request(header).topics == tuple(names)


def test_the_largest_page_and_topic_stats_answers_decode_within_the_reader_limits():
    names = [f"{i:03d}" + "n" * (limits.TOPIC_NAME_BYTES_MAX - 3)
             for i in range(limits.ADMIN_LIST_PAGE_NAMES_MAX)]
    page = protocol.decode_reply(protocol.encode_names_page_reply(1, NamesPage(names, True)))
    assert page.names_page == NamesPage(names, True)
    stats = [protocol.TopicStats(name, 1) for name in names[:limits.ADMIN_TOPIC_STATS_NAMES_MAX]]
    assert protocol.decode_reply(protocol.encode_topic_stats_reply(2, stats)).topic_stats == stats


def test_a_reply_larger_than_a_request_header_decodes_whole():
    # Given the metadata of TOPICS_MAX topics and the description of a topic of
    # PARTITIONS_PER_TOPIC_MAX partitions with three replicas each
    metadata = protocol.encode_topics_reply(1, [
        protocol.TopicInfo(name=f"topic-{i:05d}", partitions=1,
                           direct_addresses=["tcp://127.0.0.1:40000"], topic_id=f"{i:032x}")
        for i in range(limits.TOPICS_MAX)])
    described = protocol.encode_topics_reply(2, [protocol.TopicInfo(
        name="wide", partitions=limits.PARTITIONS_PER_TOPIC_MAX, partition_info=[
            protocol.PartitionInfo(partition=p, shard="shard-0",
                                   replicas=["shard-0", "shard-1", "shard-2"],
                                   in_sync_replicas=["shard-0", "shard-1"])
            for p in range(limits.PARTITIONS_PER_TOPIC_MAX)])])
    # When a client reads them (each is far beyond the header's traversal limit)
    assert min(len(metadata), len(described)) > 8 * limits.HEADER_TRAVERSAL_WORDS_MAX
    # Then both decode whole
    assert len(protocol.decode_reply(metadata).topics) == limits.TOPICS_MAX
    assert len(protocol.decode_reply(described).topics[0].partition_info) == \
        limits.PARTITIONS_PER_TOPIC_MAX


def test_create_topics_round_trips_every_topic_in_order():
    new_topics = [protocol.NewTopic("b", 3, {"retention.ms": "1"}, 2), protocol.NewTopic("a", 1, {})]
    decoded = protocol.decode_request(protocol.encode_create_topics(7, new_topics))
    assert decoded == protocol.CreateTopicsRequest(7, tuple(new_topics))


def test_a_validate_only_create_topics_round_trips_its_flag():
    new_topics = [protocol.NewTopic("a", 1, {}, 2)]
    decoded = protocol.decode_request(protocol.encode_create_topics(7, new_topics,
                                                                    validate_only=True))
    assert decoded == protocol.CreateTopicsRequest(7, tuple(new_topics), validate_only=True)


def test_the_largest_create_topics_without_config_fits_a_header():
    new_topics = [protocol.NewTopic(f"{i:03d}" + "t" * (limits.TOPIC_NAME_BYTES_MAX - 3), 1, {})
                  for i in range(limits.CREATE_TOPICS_BATCH_MAX)]
    header = protocol.encode_create_topics(1, new_topics)
    assert len(header) <= limits.HEADER_BYTES_MAX
    assert protocol.decode_request(header).topics == tuple(new_topics)


def test_a_create_topics_over_the_header_limit_is_refused_before_it_is_sent():
    config = {f"k{j:02d}": "v" * 200 for j in range(limits.CONFIG_ENTRIES_MAX)}
    new_topics = [protocol.NewTopic(f"t{i}", 1, config) for i in range(10)]
    with pytest.raises(RequestTooLargeError, match=r"createTopics of 10 topics is \d+ bytes, "
                                                   r"over the header limit of 65536"):
        protocol.encode_create_topics(1, new_topics)


def test_a_delete_records_request_round_trips_and_minus_one_means_the_high_watermark():
    request = protocol.decode_request(protocol.encode_delete_records(9, "orders", 3, 1234))
    assert request == protocol.DeleteRecordsRequest(9, "orders", 3, 1234)
    assert protocol.decode_request(protocol.encode_delete_records(
        10, "orders", 3, protocol.DELETE_RECORDS_TO_HIGH_WATERMARK)).offset == -1


def test_a_delete_records_request_with_another_negative_offset_travels_for_the_shard_to_refuse():
    assert protocol.decode_request(protocol.encode_delete_records(9, "orders", 3, -2)).offset == -2


def test_a_topics_reply_says_this_builds_protocol_version_and_an_older_ones_reads_as_0():
    assert protocol.decode_reply(protocol.encode_topics_reply(4, [])).protocol_version == \
        protocol.PROTOCOL_VERSION >= 1
    older = schema.Reply.new_message(requestId=4)   # a broker before 0.2.0: no such field
    older.init("topics", 0)
    assert protocol.decode_reply(older.to_bytes()).protocol_version == 0


def test_a_request_of_a_kind_this_broker_does_not_know_is_malformed_saying_so():
    # Given a request whose union says a kind past this schema's last (a newer client's):
    # the two bytes where listTopics and listGroups differ are the discriminant
    topics, groups = protocol.encode_list_topics(5), protocol.encode_list_groups(5)
    [at] = [i for i in range(0, len(topics), 2) if topics[i:i + 2] != groups[i:i + 2]]
    newer = topics[:at] + (0x7FFF).to_bytes(2, "little") + topics[at + 2:]
    # When the broker decodes it; Then it says what it is, and which broker it is
    with pytest.raises(MalformedRequestError,
                       match=rf"request 5 is of a kind this broker does not know \(Plinth "
                             rf"\S+, protocol version {protocol.PROTOCOL_VERSION}\): a newer "
                             rf"client's request\?"):
        protocol.decode_request(newer)
