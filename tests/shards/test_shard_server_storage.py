"""A shard's storage bounds, through its real ZeroMQ socket (shards/shard_server.py's
produce path, partition.py, producer_state.py, segment_files.py): record timestamps
outside the topic's window, producer-id churn, and a shard with many segments on disk."""

from __future__ import annotations

import logging
import random
import struct
import time
from contextlib import contextmanager

import pytest
import zmq

from loadtest.many_segments import (fetch_value, open_descriptors, produce, start_shard,
                                    value_of, write_segments)
from plinth import limits, protocol
from plinth.format.log_entry import iter_entries
from plinth.format.record_batch import BatchBuilder
from plinth.schemas import record_batch as record_batch_schema
from plinth.shards.partition_log import LogConfig
from plinth.shards.shard_server import ShardServer

CLIENT = b"storage-test"
REPLY_WAIT_MS = 10_000
HOUR_MS = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextmanager
def running_shard(directory, log_config=LogConfig()):
    """A started ShardServer serving t-0, and a DEALER playing the router."""
    server = ShardServer("shard-test", directory, "127.0.0.1")
    server.start()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        server.call(server.open_partition, "t", 0, log_config)
        sock.connect(server.address)
        yield server, sock
    finally:
        sock.close()
        server.stop(5)


def send_produce(sock, request_id: int, batch: bytes) -> None:
    sock.send_multipart([CLIENT, protocol.encode_produce(request_id, "t", 0, 1), batch])


def receive_replies(sock, count: int) -> dict[int, protocol.ReplyView]:
    replies = {}
    while len(replies) < count:
        assert sock.poll(REPLY_WAIT_MS), f"no reply in {REPLY_WAIT_MS} ms"
        view = protocol.decode_reply(sock.recv_multipart()[1])
        replies[view.request_id] = view
    return replies


def roundtrip(sock, request_id: int, batch: bytes) -> protocol.ReplyView:
    send_produce(sock, request_id, batch)
    return receive_replies(sock, 1)[request_id]


def batch_at(*timestamps_ms: int, producer_id: int = -1, base_sequence: int = -1) -> bytes:
    builder = BatchBuilder()
    for timestamp_ms in timestamps_ms:
        builder.append(None, b"v", timestamp_ms)
    return builder.build(producer_id=producer_id, base_sequence=base_sequence)


def end_offset(server: ShardServer) -> int:
    return server.call(server.partition_info, "t", 0).end_offset


# --- Timestamps (issue 11, finding 3) ------------------------------------------------------

def test_a_record_stamped_with_the_largest_int64_is_refused_and_the_partition_reads_on(tmp_path):
    # Given a shard with a topic's default window (an hour ahead at most)
    with running_shard(tmp_path / "s") as (server, sock):
        # When a batch holding a record stamped 2**63 - 1 ms is produced (issue 11:
        # stored, it stopped retention of its segment and every later one)
        refused = roundtrip(sock, 1, batch_at(2**63 - 1))
        # Then it is refused with InvalidTimestampError naming partition, timestamp,
        # window and key, and nothing is stored
        assert type(refused.error).__name__ == "InvalidTimestampError"
        message = str(refused.error)
        assert message.startswith(f"t-0: a record's timestamp {2**63 - 1} ms is ")
        assert "message.timestamp.after.max.ms=3600000" in message
        assert end_offset(server) == 0
        # And a record stamped now, and one 59 minutes ahead, are stored and read
        assert roundtrip(sock, 2, batch_at(now_ms(), now_ms() + 59 * 60_000)).base_offset == 0
        sock.send_multipart([CLIENT, protocol.encode_fetch(3, "t", 0, 0, 1 << 20, 0)])
        [(header, _batch)] = list(iter_entries(sock.recv_multipart()[2]))
        assert (header.base_offset, header.record_count) == (0, 2)


def test_a_topic_window_configured_narrower_refuses_old_records_too(tmp_path):
    config = LogConfig(timestamp_before_ms_max=HOUR_MS, timestamp_after_ms_max=0)
    with running_shard(tmp_path / "s", config) as (server, sock):
        old = roundtrip(sock, 1, batch_at(now_ms() - 2 * HOUR_MS))
        assert type(old.error).__name__ == "InvalidTimestampError"
        assert "message.timestamp.before.max.ms=3600000" in str(old.error)
        ahead = roundtrip(sock, 2, batch_at(now_ms() + 60_000))
        assert "message.timestamp.after.max.ms=0" in str(ahead.error)
        assert end_offset(server) == 0


def test_a_record_stamped_before_the_epoch_breaks_a_rule_of_the_batch(tmp_path):
    # Given a batch a client wrote by hand, one record stamped -1 ms (the builder refuses it)
    message = record_batch_schema.RecordBatch.new_message(
        recordCount=2, baseTimestampMs=-1, maxTimestampMs=2,
        timestampDeltasMs=struct.pack("<II", 0, 3), keyLengths=struct.pack("<ii", -1, -1),
        valueLengths=struct.pack("<ii", 0, 0))
    with running_shard(tmp_path / "s") as (server, sock):
        # When it is produced / Then the shard refuses it as an invalid batch, naming the rule
        refused = roundtrip(sock, 1, message.to_bytes())
        assert type(refused.error).__name__ == "InvalidBatchError"
        assert "baseTimestampMs -1 is negative" in str(refused.error)
        assert end_offset(server) == 0


# --- Producer ids (issue 11, finding 8) -----------------------------------------------------

def produce_pipelined(sock, batches: list[bytes], first_request_id: int,
                      in_flight_max: int = 200) -> list[protocol.ReplyView]:
    """Produce the batches in order, at most ``in_flight_max`` awaiting replies; the replies."""
    replies = []
    for start in range(0, len(batches), in_flight_max):
        window = batches[start:start + in_flight_max]
        for n, batch in enumerate(window):
            send_produce(sock, first_request_id + start + n, batch)
        got = receive_replies(sock, len(window))
        replies += [got[first_request_id + start + n] for n in range(len(window))]
    return replies


def test_a_co_tenant_cycling_10000_producer_ids_cannot_make_a_retry_a_duplicate(tmp_path):
    # Given an idempotent producer whose batch was stored at offset 0
    with running_shard(tmp_path / "s") as (server, sock):
        victim = batch_at(now_ms(), producer_id=7, base_sequence=0)
        assert roundtrip(sock, 1, victim).base_offset == 0
        # When a co-tenant sends one batch under each of 10,000 new producer ids
        # (issue 11: the last one evicted the victim's state)
        churn = [batch_at(now_ms(), producer_id=1_000_000 + n, base_sequence=0)
                 for n in range(limits.PRODUCERS_PER_PARTITION_MAX)]
        replies = produce_pipelined(sock, churn, first_request_id=100)
        # Then the ids that fit are stored, and the one beyond the limit is refused,
        # retriably, naming the limit
        errors = [reply.error for reply in replies if reply.error is not None]
        assert len(errors) == 1 and type(errors[0]).__name__ == "TooManyProducersError"
        assert f"its limit of {limits.PRODUCERS_PER_PARTITION_MAX}" in str(errors[0])
        stored = end_offset(server)
        assert stored == limits.PRODUCERS_PER_PARTITION_MAX
        # And the victim's retry of its batch (its reply was lost, say) is recognised:
        # answered with offset 0, not stored again
        retry = roundtrip(sock, 99_999, victim)
        assert (retry.error, retry.base_offset) == (None, 0)
        assert end_offset(server) == stored


def test_a_pipelined_producers_retry_of_its_oldest_batch_and_a_batch_after_a_gap(tmp_path):
    # Given an idempotent producer's first batch stored, then a window of batches
    # sent without waiting for replies (as the producer pipelines them), all stored
    window = limits.PRODUCER_BATCHES_IN_FLIGHT_PER_PARTITION_MAX
    batches = [batch_at(now_ms(), now_ms(), producer_id=7, base_sequence=2 * k)
               for k in range(window + 3)]
    with running_shard(tmp_path / "s") as (server, sock):
        assert roundtrip(sock, 1, batches[0]).base_offset == 0
        replies = produce_pipelined(sock, batches[1:window], first_request_id=10)
        assert [(r.error, r.base_offset) for r in replies] == \
            [(None, 2 * k) for k in range(1, window)]
        # When the oldest of the last window of batches is retried (its reply was lost)
        retry = roundtrip(sock, 20, batches[0])
        # Then it gets its original offsets and nothing is stored again
        assert (retry.error, retry.base_offset) == (None, 0)
        assert end_offset(server) == 2 * window
        # And when a batch comes while the one before it is missing, it is refused
        # as a gap, not stored
        gap = roundtrip(sock, 21, batches[window + 1])
        assert type(gap.error).__name__ == "OutOfOrderSequenceError"
        assert end_offset(server) == 2 * window
        # And the missing one, then the refused one, are taken in order
        assert roundtrip(sock, 22, batches[window]).base_offset == 2 * window
        assert roundtrip(sock, 23, batches[window + 1]).base_offset == 2 * window + 2


# --- Open files (issue 11, finding 7) -----------------------------------------------------------

SEGMENTS = 1_000          # loadtest/many_segments.py runs 100,000 (see the README)
PARTITIONS = 4
FILES_OPEN_MAX = 64
# Besides one file per partition: the socket, the data dir lock, the wakeup pipe,
# the group coordinator's offsets log, ZeroMQ's own; measured 16 with 4 partitions.
SHARD_DESCRIPTORS_MAX = PARTITIONS + 24


def test_a_shard_with_thousands_of_segments_starts_and_serves_with_bounded_descriptors(
        tmp_path, monkeypatch):
    # Given a shard directory holding 1,000 segments over 4 partitions, and a shard
    # that keeps at most 64 older segments' files open
    counts = write_segments(tmp_path / "shard", PARTITIONS, SEGMENTS)
    monkeypatch.setattr(limits, "SEGMENT_FILES_OPEN_MAX", FILES_OPEN_MAX, raising=False)
    before = open_descriptors()
    # When the shard starts and opens every partition (issue 11: it opened every
    # segment's file, and kept them open)
    server = start_shard(tmp_path / "shard", PARTITIONS)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        # Then it holds a few descriptors per partition, not one per segment
        assert open_descriptors() - before <= SHARD_DESCRIPTORS_MAX
        sock.connect(server.address)
        # And it serves reads from 300 older segments spread over every partition
        rng = random.Random(5)
        for _ in range(300):
            partition = rng.randrange(PARTITIONS)
            offset = rng.randrange(counts[partition] - 1)
            assert fetch_value(sock, partition, offset) == value_of(partition, offset)
        # with at most 64 of their files open at once (and the DEALER's two)
        assert open_descriptors() - before <= SHARD_DESCRIPTORS_MAX + 2 + FILES_OPEN_MAX
        # And appends land at each partition's end
        assert [produce(sock, p, b"new") for p in range(PARTITIONS)] == counts
        assert fetch_value(sock, 0, counts[0]) == b"new"
        assert open_descriptors() - before <= SHARD_DESCRIPTORS_MAX + 2 + FILES_OPEN_MAX
    finally:
        sock.close()
        server.stop(10)


def test_a_shard_starting_removes_half_deleted_partition_directories_before_serving(tmp_path):
    # Given a shard's data dir where a crash cut short the removal of t-0's old log
    doomed = tmp_path / "t-0.1764950000000000000-delete"
    doomed.mkdir()
    (doomed / "00000000000000000000.log").write_bytes(b"old records" * 100)
    # When the shard starts and t-0 opens / Then the leftover is gone and t-0 is empty
    with running_shard(tmp_path) as (server, _):
        assert not doomed.exists()
        assert server.call(server.partition_info, "t", 0).end_offset == 0


def test_a_single_copy_partition_whose_directory_went_missing_is_reported_lost_on_restart(
        tmp_path, caplog):
    import logging
    import shutil

    # Given a shard that served t-0 (one copy), stopped, and t-0's directory then lost
    with running_shard(tmp_path):
        pass
    shutil.rmtree(tmp_path / "t-0")
    server = ShardServer("shard-test", tmp_path, "127.0.0.1")
    server.start()
    try:
        # When the restarted shard opens it again from its manifest
        with caplog.at_level(logging.WARNING, logger="plinth.shards"):
            server.call(lambda: server.open_partition("t", 0, LogConfig(), restarted=True))
            # and a partition new to it opens (nothing was lost there)
            server.call(lambda: server.open_partition("u", 0, LogConfig()))
    finally:
        server.stop(5)
    # Then an ERROR says that t-0's records are lost and why nothing repairs them
    [said] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert said.getMessage().startswith(f"t-0: its directory {tmp_path / 't-0'} was missing "
                                        f"and is created empty: every record it held is lost")
    assert "one copy: nothing can repair it" in said.getMessage()


def shard_with_t0_of(directory, topic_id: str, records_appended: int = 0) -> None:
    """Open t-0 as topic ``topic_id``'s in a shard, stop it, then append records to its
    log behind its back (as a shard would have)."""
    from plinth.shards.partition_log import PartitionLog

    server = ShardServer("shard-test", directory, "127.0.0.1")
    server.start()
    try:
        server.call(lambda: server.open_partition("t", 0, LogConfig(), topic_id=topic_id))
    finally:
        server.stop(5)
    log = PartitionLog.open(directory / "t-0", LogConfig())
    for _ in range(records_appended):
        log.append(batch_at(now_ms()), 1, now_ms())
    log.close()


def end_offset_opened_as(directory, topic_id: str, restarted: bool) -> int:
    """t-0's end offset once a shard opened it as topic ``topic_id``'s: created
    (``restarted`` False) or reopened from the shard's manifest."""
    server = ShardServer("shard-test", directory, "127.0.0.1")
    server.start()
    try:
        server.call(lambda: server.open_partition("t", 0, LogConfig(), topic_id=topic_id,
                                                  restarted=restarted))
        return server.call(server.partition_info, "t", 0).end_offset
    finally:
        server.stop(5)


def metadata_of(directory) -> str:
    return (directory / "t-0" / "partition.metadata").read_text()


def set_aside_directories(directory) -> list:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith("-orphan"))


@pytest.mark.parametrize("left_file", ["another id", "none", "a bad one"])
def test_a_create_sets_aside_a_directory_holding_records_not_said_to_be_its_topics(
        tmp_path, caplog, left_file):
    # Given t-0's directory holding 5 records of topic id "old", which no manifest names
    # (a crash came between the manifest forgetting it and its removal), its
    # partition.metadata naming "old", missing, or damaged
    shard_with_t0_of(tmp_path, "old", records_appended=5)
    metadata = tmp_path / "t-0" / "partition.metadata"
    if left_file == "none":
        metadata.unlink()
    elif left_file == "a bad one":
        metadata.write_bytes(b"\x00garbage")
    # When topic t, created again with id "new", creates its partition 0 there
    with caplog.at_level(logging.WARNING, logger="plinth.shards"):
        end_offset = end_offset_opened_as(tmp_path, "new", restarted=False)
    # Then it is empty (the old records are not served as its own) and says whose it is
    assert end_offset == 0
    assert metadata_of(tmp_path) == "version: 1\ntopic_id: new\n"
    # And the old log is kept aside, whole, and the warning names it
    [aside] = set_aside_directories(tmp_path)
    assert aside.startswith("t-0.") and (tmp_path / aside / "00000000000000000000.log").stat(
    ).st_size > 0
    assert f"shard-test: {tmp_path / 't-0'} holds records that may not be topic t's (id " \
           f"new)" in caplog.text and f"Set aside as {tmp_path / aside}" in caplog.text


def test_a_create_over_its_own_topics_directory_or_one_without_records_sets_nothing_aside(
        tmp_path):
    # Given t-0 holding 5 records of topic id "same" (a create a crash cut short, retried)
    shard_with_t0_of(tmp_path, "same", records_appended=5)
    assert end_offset_opened_as(tmp_path, "same", restarted=False) == 5
    # And an empty directory of another id
    shard_with_t0_of(tmp_path / "empty", "old")
    assert end_offset_opened_as(tmp_path / "empty", "new", restarted=False) == 0
    assert set_aside_directories(tmp_path) == set_aside_directories(tmp_path / "empty") == []


def test_a_reopened_partition_keeps_its_log_whatever_its_file_says_and_says_the_damage(
        tmp_path, caplog):
    # Given t-0 with 5 records of topic id "live", whose file was then damaged into
    # another valid-looking id (a flipped bit)
    shard_with_t0_of(tmp_path, "live", records_appended=5)
    (tmp_path / "t-0" / "partition.metadata").write_text("version: 1\ntopic_id: livf\n")
    # When the shard reopens it from its manifest, as topic "live"'s
    with caplog.at_level(logging.WARNING, logger="plinth.shards"):
        end_offset = end_offset_opened_as(tmp_path, "live", restarted=True)
    # Then every record is kept, the damage is an ERROR naming both ids, the file is right
    assert end_offset == 5 and set_aside_directories(tmp_path) == []
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error == (f"shard-test: {tmp_path / 't-0'}: its partition.metadata names topic id "
                     f"livf, but it reopens as topic t's (id live, as the shard's manifest or "
                     f"the controller says): damage; its log is kept and the file written "
                     f"again")
    assert metadata_of(tmp_path) == "version: 1\ntopic_id: live\n"


def end_offset_reopened_then_opened_as(directory, manifest_id: str, controller_id: str
                                       ) -> tuple[int, int]:
    """t-0's end offset once a shard reopened it from its manifest as topic
    ``manifest_id``'s, then once the controller opened it as ``controller_id``'s."""
    server = ShardServer("shard-test", directory, "127.0.0.1")
    server.start()
    try:
        server.call(lambda: server.open_partition("t", 0, LogConfig(), topic_id=manifest_id,
                                                  restarted=True, from_manifest=True))
        reopened = server.call(server.partition_info, "t", 0).end_offset
        server.call(lambda: server.open_partition("t", 0, LogConfig(), topic_id=controller_id,
                                                  restarted=True))
        return reopened, server.call(server.partition_info, "t", 0).end_offset
    finally:
        server.stop(5)


def errors_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_a_manifest_id_its_partition_metadata_and_the_controller_dispute_is_the_damaged_one(
        tmp_path, caplog):
    # Given t-0 with 5 records of topic id "live" (its partition.metadata says so), its
    # shard's manifest damaged into "livf" (a flipped bit)
    shard_with_t0_of(tmp_path, "live", records_appended=5)
    # When the shard reopens it from its manifest, then the controller opens it as "live"
    with caplog.at_level(logging.WARNING, logger="plinth.shards"):
        assert end_offset_reopened_then_opened_as(tmp_path, "livf", "live") == (5, 5)
    # Then every record is kept and served, nothing set aside, the file untouched
    assert set_aside_directories(tmp_path) == []
    assert metadata_of(tmp_path) == "version: 1\ntopic_id: live\n"
    # And the dispute, then its outcome, are ERRORs naming both ids and the damaged file
    assert errors_in(caplog) == [
        f"shard-test: {tmp_path / 't-0'}: its partition.metadata names topic id live, the "
        f"shard's manifest livf: one of them is damaged. Its log is kept; the controller's "
        f"id for topic t says which when it opens the partition (until then it has no topic "
        f"id: no upload to object storage)",
        "shard-test: t-0: the shard's manifest names topic id livf, but the controller and its "
        "partition.metadata say live: the manifest was damaged. Its log is kept and served as "
        "topic t's, and the manifest's entry written again"]
    assert "Set aside" not in caplog.text


def test_a_partition_metadata_the_manifest_and_the_controller_dispute_is_written_again(
        tmp_path, caplog):
    # Given t-0 with 5 records of topic id "live", its partition.metadata damaged to "livf"
    shard_with_t0_of(tmp_path, "live", records_appended=5)
    (tmp_path / "t-0" / "partition.metadata").write_text("version: 1\ntopic_id: livf\n")
    # When reopened from the manifest ("live"), then opened by the controller as "live"
    with caplog.at_level(logging.WARNING, logger="plinth.shards"):
        assert end_offset_reopened_then_opened_as(tmp_path, "live", "live") == (5, 5)
    # Then the log is kept and the file written again
    assert set_aside_directories(tmp_path) == []
    assert metadata_of(tmp_path) == "version: 1\ntopic_id: live\n"
    assert errors_in(caplog)[-1] == (
        "shard-test: t-0: its partition.metadata names topic id livf, but the controller and "
        "the shard's manifest say live: the file was damaged. Its log is kept and the file "
        "written again")


@pytest.mark.parametrize("manifest_id", ["old", "olf"])
def test_a_log_of_another_topic_id_than_the_controllers_is_set_aside_whole_never_deleted(
        tmp_path, caplog, manifest_id):
    # Given t-0 with 5 records of topic id "old" (its manifest saying "old", or, damaged,
    # "olf"): a topic deleted and created again while the shard was down, or a damaged
    # metadata.json (no one can tell)
    shard_with_t0_of(tmp_path, "old", records_appended=5)
    # When reopened from the manifest, then opened by the controller as topic id "new"
    with caplog.at_level(logging.WARNING, logger="plinth.shards"):
        assert end_offset_reopened_then_opened_as(tmp_path, manifest_id, "new") == (5, 0)
    # Then the partition is the new topic's, empty, and the old log is set aside whole
    assert metadata_of(tmp_path) == "version: 1\ntopic_id: new\n"
    [aside] = set_aside_directories(tmp_path)
    assert end_offset_of_log(tmp_path / aside) == 5
    assert (tmp_path / aside / "partition.metadata").read_text().endswith("old\n")
    # And a WARNING names the ids, the path and what to do; nothing is deleted
    said = "old" if manifest_id == "old" else "olf (its partition.metadata: old)"
    assert f"shard-test: t-0 holds topic id {said}'s log, but the controller says topic t " \
           f"has id new" in caplog.text
    assert f"Set aside as {tmp_path / aside}, whole (" in caplog.text
    assert "remove it once it is not needed; the partition opens empty" in caplog.text
    assert "lost" not in caplog.text   # (its records are not: they are aside)


def end_offset_of_log(directory) -> int:
    from plinth.shards.partition_log import PartitionLog

    log = PartitionLog.open(directory, LogConfig())
    try:
        return log.end_offset
    finally:
        log.close()


def test_a_reopened_log_from_before_the_file_keeps_its_records_and_gets_the_file_silently(
        tmp_path, caplog):
    shard_with_t0_of(tmp_path, "same", records_appended=5)
    (tmp_path / "t-0" / "partition.metadata").unlink()
    with caplog.at_level(logging.WARNING, logger="plinth.shards"):
        assert end_offset_opened_as(tmp_path, "other", restarted=True) == 5
    assert metadata_of(tmp_path) == "version: 1\ntopic_id: other\n"
    assert "partition.metadata" not in caplog.text


def test_a_single_copy_partition_whose_recovery_cut_bytes_keeps_no_repair_mark(
        tmp_path, caplog):
    # Given t-0, one copy, with 5 records and a torn tail (a crash mid-write)
    shard_with_t0_of(tmp_path, "one", records_appended=5)
    with open(tmp_path / "t-0" / "00000000000000000000.log", "ab") as log_file:
        log_file.write(b"\1" * 30)
    # When the restarted shard reopens it, twice
    with caplog.at_level(logging.INFO, logger="plinth.shards"):
        assert end_offset_opened_as(tmp_path, "one", restarted=True) == 5
        assert end_offset_opened_as(tmp_path, "one", restarted=True) == 5
    # Then the loss was said once, and no repair mark was made (no replica can clear
    # it), nor said: "not in sync until it has caught up with its leader" is false of a
    # partition that has none
    assert caplog.text.count("records there that were acknowledged are lost (one copy") == 1
    assert not (tmp_path / "t-0" / "needs-repair").exists()
    assert "needs repair" not in caplog.text and "repair mark" not in caplog.text


def test_a_single_copy_partition_clears_a_repair_mark_an_earlier_open_left(tmp_path, caplog):
    # Given t-0, one copy, holding a repair mark from before (left while it had replicas)
    shard_with_t0_of(tmp_path, "one", records_appended=5)
    (tmp_path / "t-0" / "needs-repair").write_text("recovery cut 30 bytes at end offset 5\n")
    # When the restarted shard reopens it
    with caplog.at_level(logging.INFO, logger="plinth.shards"):
        assert end_offset_opened_as(tmp_path, "one", restarted=True) == 5
    # Then the mark goes, saying why
    assert not (tmp_path / "t-0" / "needs-repair").exists()
    assert "t-0: repair mark cleared: one copy: there is no replica to repair it from" in \
        caplog.text
    assert "needs repair" not in caplog.text


def test_a_torn_leader_epoch_checkpoint_keeps_no_partition_of_the_shard_from_opening(
        tmp_path, caplog):
    from plinth.shards.leader_epochs import (
        CHECKPOINT_FILE, EpochEntry, LeaderEpochs, save_leader_epochs)

    # Given a shard that served t-0 and u-0, stopped, and t-0's leader-epoch checkpoint
    # then had one digit changed by hand (its CRC line no longer the lines')
    with running_shard(tmp_path):
        pass
    server = ShardServer("shard-test", tmp_path, "127.0.0.1")
    server.start()
    server.call(lambda: server.open_partition("u", 0, LogConfig()))
    server.stop(5)
    checkpoint = tmp_path / "t-0" / CHECKPOINT_FILE
    save_leader_epochs(checkpoint.parent, LeaderEpochs([EpochEntry(0, 0), EpochEntry(3, 4950)]))
    checkpoint.write_bytes(checkpoint.read_bytes().replace(b"3 4950", b"3 4050"))
    # When the restarted shard opens both again
    server = ShardServer("shard-test", tmp_path, "127.0.0.1")
    server.start()
    try:
        with caplog.at_level(logging.ERROR, logger="plinth.shards"):
            server.call(lambda: server.open_partition("t", 0, LogConfig(), restarted=True))
            server.call(lambda: server.open_partition("u", 0, LogConfig(), restarted=True))
    finally:
        server.stop(5)
    # Then both open; t-0's checkpoint is set aside, with an ERROR naming it and the line
    assert not checkpoint.exists()
    assert (checkpoint.parent / (CHECKPOINT_FILE + ".corrupt")).exists()
    [said] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said.startswith(f"t-0: leader-epoch checkpoint {checkpoint}, line 5: ")
    assert "kept as leader-epoch-checkpoint.corrupt" in said
