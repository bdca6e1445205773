"""ShardActor without Ray: a plain object on a real ShardServer, a real disk and real
sockets. A "restart" is what Ray does after a crash: a new ShardActor on the same
directory, which must serve what its manifest says."""

from __future__ import annotations

import json
import os
import resource
import threading

import pytest

from plinth import limits

from plinth.errors import InvalidPartitionsError, UnavailableError
from plinth.shards.actor import ShardActor
from plinth.shards.shard_calls import PartitionId, PartitionSpec, SealedPartition
from plinth.shards.shard_manifest import MANIFEST_FILE, ShardManifest
from tests.shard_requests import commit_offsets, committed_offsets, join_group, produce

CONFIG = {"retention.ms": "604800000"}


class Announcements:
    """Plays the controller: records each shard_started."""

    def __init__(self, fail: bool = False):
        self.started: list[tuple[str, str]] = []
        self.pids: list[int] = []
        self.fail = fail

    def shard_started(self, shard_id: str, address: str, direct_address: str = "",
                      pid: int = 0) -> None:
        if self.fail:
            raise ConnectionError("the controller is gone")
        self.started.append((shard_id, address))
        self.pids.append(pid)


@pytest.fixture
def shard_dir(tmp_path):
    return tmp_path / "shard-0"


@pytest.fixture
def actors():
    """Starts ShardActors (``start(directory, ...)``); shuts down each still running."""
    running: list[ShardActor] = []

    def start(directory, announce_to=None) -> ShardActor:
        actor = ShardActor("shard-0", str(directory), bind_host="127.0.0.1",
                           announce_to=announce_to)
        running.append(actor)
        return actor

    def restart(actor: ShardActor, directory, announce_to=None) -> ShardActor:
        actor.shutdown(5)
        running.remove(actor)
        return start(directory, announce_to)

    start.restart = restart
    yield start
    for actor in running:
        actor.shutdown(5)


def test_partitions_opened_are_served_again_after_a_restart_from_the_manifest(actors, shard_dir):
    # Given a shard serving a partition with records and one continuing at offset 7
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", 0, CONFIG), PartitionSpec("t", 1, CONFIG, 7)])
    produce(actor.address(), "t", 0, [b"a", b"b", b"c"])
    # When it restarts on the same directory
    actor = actors.restart(actor, shard_dir)
    # Then both partitions are open again, with their records and offsets
    infos = actor.partition_infos([PartitionId("t", 0), PartitionId("t", 1)])
    assert [(i.partition, i.start_offset, i.end_offset) for i in infos] == [(0, 0, 3), (1, 7, 7)]
    assert produce(actor.address(), "t", 1, [b"d"]) == 7


def served_and_kept(actor, shard_dir, pid: PartitionId) -> tuple[bool, bool, bool]:
    """Whether the partition is served, has its directory, and is in the manifest."""
    try:
        actor.partition_infos([pid])
        served = True
    except UnavailableError:   # "not on shard-0"
        served = False
    manifest = ShardManifest.load(shard_dir / MANIFEST_FILE)
    return served, (shard_dir / f"{pid.topic}-{pid.partition}").is_dir(), \
        pid in manifest.partitions


def test_an_open_that_fails_partway_deletes_the_new_partitions_it_opened_before(actors, shard_dir):
    # Given a shard serving t-0, and a file where t-2's directory would go
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", 0, CONFIG)])
    (shard_dir / "t-2").write_bytes(b"not a directory")
    # When a create opens t-1 and then fails on t-2
    with pytest.raises(Exception):
        actor.open_partitions([PartitionSpec("t", 1, CONFIG), PartitionSpec("t", 2, CONFIG)])
    # Then t-1 is gone again (not served, no directory, not in the manifest); t-0 stays
    assert served_and_kept(actor, shard_dir, PartitionId("t", 1)) == (False, False, False)
    assert served_and_kept(actor, shard_dir, PartitionId("t", 0)) == (True, True, True)


def test_partitions_beyond_the_open_file_limit_are_refused_before_any_opens(actors, shard_dir):
    # Given a shard whose open-file limit leaves room for 3 partitions, serving 2
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", 0, CONFIG), PartitionSpec("t", 1, CONFIG)])
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = 3 + limits.SEGMENT_FILES_OPEN_MAX + limits.SHARD_FILES_RESERVED
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, saved[1]))
    try:
        # When 2 more are asked for / Then they are refused, naming the counts, and
        # neither opens; 1 more (and the 2 served, again) still fits
        with pytest.raises(InvalidPartitionsError, match="shard-0 cannot open 2 more "
                                                         "partitions: it holds 2"):
            actor.open_partitions([PartitionSpec("u", 0, CONFIG), PartitionSpec("u", 1, CONFIG)])
        assert served_and_kept(actor, shard_dir, PartitionId("u", 0)) == (False, False, False)
        actor.open_partitions([PartitionSpec("t", 0, CONFIG), PartitionSpec("u", 0, CONFIG)])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, saved)
    assert served_and_kept(actor, shard_dir, PartitionId("u", 0)) == (True, True, True)


def test_a_sealed_partition_returns_its_end_offset_and_stays_read_only_after_a_restart(actors, shard_dir):
    # Given a partition holding three records
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", 0, CONFIG)])
    produce(actor.address(), "t", 0, [b"a", b"b", b"c"])
    # When it is sealed (its writes move to another shard)
    [sealed] = actor.seal_partitions([PartitionId("t", 0)])
    # Then the result says where its new owner continues
    assert isinstance(sealed, SealedPartition)
    assert (sealed.topic, sealed.partition, sealed.end_offset) == ("t", 0, 3)
    # And after a restart it still refuses writes, and keeps its records for reads
    actor = actors.restart(actor, shard_dir)
    with pytest.raises(UnavailableError, match="moved away"):
        produce(actor.address(), "t", 0, [b"late"])
    [info] = actor.partition_infos([PartitionId("t", 0)])
    assert info.end_offset == 3


def test_the_manifest_on_disk_round_trips_every_field(actors, shard_dir):
    # Given a shard told to serve partitions of every kind, and the partition counts
    actor = actors(shard_dir)
    specs = [PartitionSpec("t", 0, CONFIG), PartitionSpec("t", 1, CONFIG, 5, sealed=True),
             PartitionSpec("u", 0, {"segment.bytes": "4096"}, 9, producers=[])]
    actor.open_partitions(specs)
    actor.set_partition_counts({"t": 2, "u": 1})
    # When the manifest is read back from disk
    manifest = ShardManifest.load(shard_dir / MANIFEST_FILE)
    # Then it holds exactly what the shard was told
    assert manifest.partitions == {spec.id: spec for spec in specs}
    assert manifest.partition_counts == {"t": 2, "u": 1}


def test_counts_given_with_opened_partitions_join_the_others_in_the_manifest_for_good(
        actors, shard_dir):
    # Given a shard that knows one topic's partition count
    actor = actors(shard_dir)
    actor.set_partition_counts({"t": 1})
    # When it opens a new topic's partitions with that topic's count
    actor.open_partitions([PartitionSpec("u", 0, CONFIG), PartitionSpec("u", 1, CONFIG)],
                          partition_counts={"u": 2})
    # Then its manifest holds both counts and the partitions, and so does it after a restart
    for _ in range(2):
        manifest = ShardManifest.load(shard_dir / MANIFEST_FILE)
        assert manifest.partition_counts == {"t": 1, "u": 2}
        assert sorted(pid.partition for pid in manifest.partitions) == [0, 1]
        actor = actors.restart(actor, shard_dir)


def test_changed_partition_counts_merge_with_the_others_and_are_kept_across_a_restart(
        actors, shard_dir):
    # Given a shard told every topic's partition count
    actor = actors(shard_dir)
    actor.set_partition_counts({"t": 2, "u": 1, "v": 3})
    # When one topic grows, one is created and one deleted
    actor.change_partition_counts({"t": 4, "w": 1}, ["u"])
    actor = actors.restart(actor, shard_dir)
    # Then after a restart its manifest holds the others as they were, and the changes
    manifest = ShardManifest.load(shard_dir / MANIFEST_FILE)
    assert manifest.partition_counts == {"t": 4, "v": 3, "w": 1}


def test_an_altered_config_and_a_deletion_are_kept_across_a_restart(actors, shard_dir):
    # Given two open partitions
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", 0, CONFIG), PartitionSpec("t", 1, CONFIG)])
    # When one gets a new config and the other is deleted
    assert actor.alter_partitions([PartitionId("t", 0)], {"retention.ms": "1000"}) == 1
    assert actor.delete_partitions([PartitionId("t", 1)]) == 1
    actor = actors.restart(actor, shard_dir)
    # Then after a restart the first has its new config and the second is gone, files too
    manifest = ShardManifest.load(shard_dir / MANIFEST_FILE)
    assert manifest.partitions == {PartitionId("t", 0): PartitionSpec("t", 0, {"retention.ms": "1000"})}
    assert not (shard_dir / "t-1").exists()
    with pytest.raises(UnavailableError, match="not on shard-0"):
        actor.partition_infos([PartitionId("t", 1)])


def test_a_partition_reopened_with_another_config_serves_with_it_at_once(actors, shard_dir):
    # Given an open partition, serving with its config
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", 0, CONFIG)])
    # When the controller reopens it with a config it missed (an alter it did not run
    # before it restarted: the controller saves a change before every shard applied it)
    actor.open_partitions([PartitionSpec("t", 0, {"retention.ms": "1000"})], existing=True)
    # Then it serves with that config now, not only after its next restart
    assert actor._server._partitions[("t", 0)].log.config.retention_ms == 1000
    assert ShardManifest.load(shard_dir / MANIFEST_FILE).partitions[
        PartitionId("t", 0)].config == {"retention.ms": "1000"}


def test_a_manifest_written_by_the_previous_version_is_served(actors, shard_dir):
    # Given a shard directory whose manifest main wrote (no version, a spec without
    # producers) and whose partition holds records
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", 0, CONFIG)])
    produce(actor.address(), "t", 0, [b"a", b"b"])
    actor.shutdown(5)
    (shard_dir / MANIFEST_FILE).write_text(json.dumps({
        "partitions": {"t/0": {"config": CONFIG, "initial_offset": 0, "sealed": False}},
        "partition_counts": {"t": 1}}))
    # When a shard actor starts on it
    actor = actors(shard_dir)
    # Then it serves the partition, records included, and takes writes after them
    assert produce(actor.address(), "t", 0, [b"c"]) == 2


def test_the_shard_announces_its_address_at_every_start(actors, shard_dir):
    # Given a controller that listens for announcements
    controller = Announcements()
    # When a shard starts, then restarts
    actor = actors(shard_dir, controller)
    first = actor.address()
    actor = actors.restart(actor, shard_dir, controller)
    # Then each start announced the address it listens at
    assert controller.started == [("shard-0", first), ("shard-0", actor.address())]


def test_the_shard_says_its_process_when_it_announces_itself_and_in_its_stats(actors, shard_dir):
    # Given a controller that listens for announcements
    controller = Announcements()
    # When a shard starts (in this process: Ray runs each in a ray::ShardActor of its own)
    actor = actors(shard_dir, controller)
    # Then its announcement and its stats name its process, for plinth status to show
    assert controller.pids == [os.getpid()]
    assert actor.stats()["pid"] == os.getpid()


def test_a_shard_whose_controller_is_gone_still_starts_and_serves(actors, shard_dir):
    # Given a controller that cannot be told anything
    # When a shard starts
    actor = actors(shard_dir, Announcements(fail=True))
    # Then it serves anyway
    actor.open_partitions([PartitionSpec("t", 0, CONFIG)])
    assert produce(actor.address(), "t", 0, [b"a"]) == 0


def test_groups_handed_over_by_one_shard_are_coordinated_by_the_one_that_adopts_them(actors, tmp_path):
    # Given a shard that coordinates a group with committed offsets
    source = actors(tmp_path / "source")
    source.set_partition_counts({"t": 1})
    commit_offsets(source.address(), "billing", {("t", 0): 4})
    target = actors(tmp_path / "target")
    target.set_partition_counts({"t": 1})
    assert source.group_names() == ["billing"]
    # When it hands the group over and the other shard adopts it
    target.adopt_groups(source.hand_over_groups(["billing"]))
    # Then only the new shard lists it, with its offsets; the old one sends clients on
    assert (source.group_names(), target.group_names()) == ([], ["billing"])
    assert committed_offsets(target.address(), "billing") == {("t", 0): 4}
    with pytest.raises(UnavailableError, match="moved to another shard"):
        committed_offsets(source.address(), "billing")


def test_a_restarted_shard_answers_group_requests_unavailable_until_its_partitions_are_reopened(
        actors, shard_dir, monkeypatch):
    # Given a shard whose group g committed offsets of both partitions of t
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", 0, CONFIG), PartitionSpec("t", 1, CONFIG)],
                          partition_counts={"t": 2})
    commit_offsets(actor.address(), "g", {("t", 0): 1, ("t", 1): 1})
    actor.shutdown(5)
    # And its restart held after reopening t-0, before t-1 (its socket already bound,
    # as after Ray's restart, when routers reach it at once)
    reopened_one, go_on = threading.Event(), threading.Event()
    address: list[str] = []
    open_all = ShardActor._open

    def open_held(self, specs, restarted=False, **options):
        if not restarted:
            return open_all(self, specs, restarted, **options)
        found = open_all(self, specs[:1], restarted, **options)
        address.append(self._server.address)
        reopened_one.set()
        assert go_on.wait(30), "the test never let the restart go on"
        return {**found, **open_all(self, specs[1:], restarted, **options)}

    monkeypatch.setattr(ShardActor, "_open", open_held)
    restarted: list[ShardActor] = []
    starting = threading.Thread(target=lambda: restarted.append(actors(shard_dir)))
    starting.start()
    try:
        assert reopened_one.wait(30), "the restart never reopened a partition"
        # When a member commits, a consumer asks for the offsets, a member joins
        # Then each is told to retry, naming the shard and its recovery; the commit
        # is not refused as "unknown topic", the offsets are not read as none
        recovering = "shard-0 is recovering after a restart: it has reopened 1 of"
        with pytest.raises(UnavailableError, match=recovering):
            commit_offsets(address[0], "g", {("t", 0): 2})
        with pytest.raises(UnavailableError, match=recovering):
            committed_offsets(address[0], "g")
        with pytest.raises(UnavailableError, match=recovering):
            join_group(address[0], "g", ["t"], 10_000)
    finally:
        go_on.set()
        starting.join(30)
    # And once the restart is done, the retried commit is taken, beside the offsets kept
    actor = restarted[0]
    commit_offsets(actor.address(), "g", {("t", 0): 2})
    assert committed_offsets(actor.address(), "g") == {("t", 0): 2, ("t", 1): 1}


def test_a_restart_logs_a_recovery_that_cut_at_warning_and_the_clean_ones_only_at_debug(
        actors, shard_dir, caplog):
    # Given a shard of five partitions with records, shut down cleanly, one of whose
    # active segments then gets a torn tail (a crash mid-write)
    actor = actors(shard_dir)
    actor.open_partitions([PartitionSpec("t", p, CONFIG) for p in range(5)])
    for p in range(5):
        produce(actor.address(), "t", p, [b"a", b"b"])
    actor.shutdown(5)
    [log_file] = (shard_dir / "t-3").glob("*.log")
    with open(log_file, "ab") as torn:
        torn.write(b"\x00torn")
    # When it restarts
    with caplog.at_level("INFO"):
        actor = actors(shard_dir)
    # Then the torn partition's recovery is its own line at WARNING, the four clean
    # ones (and the groups' log) are at DEBUG only, and the shard says it serves
    recovered = [r for r in caplog.records if r.getMessage().startswith("recovered ")]
    assert [(r.levelname, str(shard_dir / "t-3") in r.getMessage()) for r in recovered] == \
        [("WARNING", True)]
    assert any(r.getMessage().startswith("shard-0 recovered 5 partitions: serving group "
                                         "requests") for r in caplog.records)
    assert produce(actor.address(), "t", 3, [b"c"]) == 2
