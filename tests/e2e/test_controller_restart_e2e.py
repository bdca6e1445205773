"""SIGKILL of the controller's process of a running ``plinth serve``: Ray restarts it, it
adopts the running shards, and the broker goes on: nothing acknowledged is lost, produce,
consume and admin calls work after, ``plinth status`` lists the router again. And SIGKILL
of a server in a Ray cluster (``--ray-address``): its shard actors stay up and the
restarted server adopts them."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from plinth import Admin, Producer
from tests.conftest import Broker
from tests.shard_processes import shard_pids
from tests.support import (NumberedWriter, check_exactly_once_in_order, read_all, unique_topic,
                           wait_until)

CONTROLLER_TITLE = b"ray::Controller"
SHARDS = 3
RECOVERY_WAIT_S = 60


def controller_pids(server_pid: int) -> list[int]:
    """The pids of the ``ray::Controller`` processes descended from ``server_pid`` (an
    embedded broker's Ray runs under its server process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "cmdline").read_bytes().startswith(CONTROLLER_TITLE) and \
                    server_pid in _ancestors(int(entry.name)):
                found.append(int(entry.name))
        except OSError:   # it exited meanwhile
            continue
    return found


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        chain.append(pid)
    return chain


def status_or_none(url: str):
    try:
        with Admin(broker=url, request_timeout_ms=5_000) as admin:
            return admin.status()
    except Exception:   # the controller restarts: the call fails, the next one may not
        return None


def test_a_sigkilled_controller_is_restarted_adopts_the_shards_and_loses_nothing_acknowledged(
        tmp_path):
    # Given an embedded broker of three shards on one node, a factor-1 topic and a factor-3
    # topic, and acks="all" producers writing numbered records to both
    broker = Broker(tmp_path / "data", None, shards=SHARDS,
                    extra_args=("--allow-replicas-on-one-node",)).start()
    try:
        one, three = unique_topic("f1"), unique_topic("f3")
        with Admin(broker=broker.url) as admin:
            admin.create_topic(one, 2, replication_factor=1)
            admin.create_topic(three, 3, replication_factor=3,
                               config={"min.insync.replicas": "2"})
        writers = {one: NumberedWriter(broker.url, one, 2, chunk=50),
                   three: NumberedWriter(broker.url, three, 3, chunk=50)}
        for writer in writers.values():
            writer.wait_for_more(500)
        shards_before = wait_until(lambda: len(pids := shard_pids(broker.data_dir)) == SHARDS
                                   and pids, timeout_s=RECOVERY_WAIT_S)
        [controller] = controller_pids(broker.proc.pid)
        # When the controller's process is SIGKILLed while they write
        os.kill(controller, signal.SIGKILL)
        # Then Ray starts a new one, and the broker answers with every shard up
        wait_until(lambda: controller_pids(broker.proc.pid) not in ([], [controller]),
                   timeout_s=RECOVERY_WAIT_S)
        status = wait_until(lambda: (s := status_or_none(broker.url)) and
                            all(shard.alive for shard in s.shards) and s, timeout_s=RECOVERY_WAIT_S)
        # And the shards were adopted, not restarted: the same processes serve them
        assert shard_pids(broker.data_dir) == shards_before
        # And plinth status lists the router again (the new controller learnt of it)
        wait_until(lambda: (s := status_or_none(broker.url)) and s.routers, timeout_s=RECOVERY_WAIT_S)
        assert [listen for listen, _ in status_or_none(broker.url).routers] == [broker.url]
        assert len(status.shards) == SHARDS
        # And the producers keep being acknowledged
        for writer in writers.values():
            writer.wait_for_more(500)
            writer.stop()
        # And every acknowledged record is there exactly once, at its offset, in order
        for topic, writer in writers.items():
            check_exactly_once_in_order(read_all(broker.url, topic), writer.acked, writer.partitions)
            assert not writer.errors, writer.errors[:3]
        # And admin calls work: a new topic is created and takes records
        with Admin(broker=broker.url) as admin:
            admin.create_topic("after", 1, replication_factor=3)
            assert {one, three, "after"} <= set(admin.list_topics())
        with Producer(broker=broker.url) as producer:
            assert producer.send("after", b"x").get(30).offset == 0
    finally:
        broker.stop()


def test_a_sigkilled_server_in_a_ray_cluster_leaves_its_shards_up_and_its_restart_adopts_them(
        broker_factory):
    # Given a broker joined to a Ray cluster, holding acknowledged records
    broker = broker_factory(shards=2)
    topic = unique_topic("adopt")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 2)
    with Producer(broker=broker.url) as producer:
        offsets = [producer.send(topic, b"%d" % n, partition=n % 2).get(30).offset
                   for n in range(10)]
    pids = wait_until(lambda: len(found := shard_pids(broker.data_dir)) == 2 and found,
                      timeout_s=RECOVERY_WAIT_S)
    # When the server is SIGKILLed
    broker.kill()
    # Then its shard actors keep running (they are detached)
    assert shard_pids(broker.data_dir) == pids
    # And when the server is started again on the same data dir, it adopts them
    broker.restart()
    assert shard_pids(broker.data_dir) == pids
    # And it serves what was there and takes more
    assert sorted((r.partition, r.offset) for r in read_all(broker.url, topic)) == \
        sorted((n % 2, offset) for n, offset in enumerate(offsets))
    with Producer(broker=broker.url) as producer:
        assert producer.send(topic, b"after", partition=0).get(30).offset == 5


def test_a_server_whose_controller_is_gone_for_good_still_ends_its_shards_when_it_stops(
        broker_factory):
    import ray

    from plinth.server import CONTROLLER_NAME, namespace_for

    # Given a broker joined to a Ray cluster whose controller was ended for good (no
    # restart: as after CONTROLLER_RESTARTS_MAX deaths)
    broker = broker_factory(shards=2)
    wait_until(lambda: len(shard_pids(broker.data_dir)) == 2, timeout_s=RECOVERY_WAIT_S)
    ray.kill(ray.get_actor(CONTROLLER_NAME, namespace=namespace_for(broker.data_dir)),
             no_restart=True)
    # When the server is stopped (SIGTERM)
    broker.stop()
    # Then it ended the detached shard actors itself, and said so
    wait_until(lambda: shard_pids(broker.data_dir) == {}, timeout_s=RECOVERY_WAIT_S)
    assert "ended shard actors the controller did not" in broker.log()
