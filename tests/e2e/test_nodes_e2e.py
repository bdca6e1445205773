"""Several Ray nodes (all on 127.0.0.1, ray.cluster_utils.Cluster): shards spread over
the nodes; losing a node makes only its shards' partitions unavailable, with a clear
error; when the node returns its shards recover and serve again."""

from __future__ import annotations

import json

import pytest
from ray.cluster_utils import Cluster

import zmq

from plinth import Admin, Consumer, Producer, protocol
from plinth.format.record_batch import BatchBuilder
from tests.conftest import Broker, StandaloneRouter
from tests.support import topic_that_moves, unique_topic, wait_until

PARTITIONS = 12   # both shards own some: all on one has odds 1 in 2,048


@pytest.fixture
def two_node_cluster():
    """Head and worker, each named by a plinth-node resource that pins shards to it."""
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"plinth-node:a": 1}})
    worker = cluster.add_node(num_cpus=1, resources={"plinth-node:b": 1})
    yield cluster, worker
    cluster.shutdown()


def produce_to(url: str, topic: str, partition: int) -> str:
    """'ok', or the class name of the error the partition answered with (one raw request,
    so no client retry hides the answer)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    try:
        builder = BatchBuilder()
        builder.append(None, b"probe", 1, None)
        sock.send_multipart([protocol.encode_produce(1, topic, partition, 1), builder.build()])
        if not sock.poll(10_000):
            return "no reply"
        reply = protocol.decode_reply(sock.recv_multipart()[0])
        return "ok" if reply.error is None else type(reply.error).__name__
    finally:
        sock.close()


def test_losing_a_node_makes_only_its_partitions_unavailable_until_it_returns(two_node_cluster, tmp_path):
    cluster, worker = two_node_cluster
    broker = Broker(tmp_path / "data", cluster.address, shards=2).start()
    try:
        topic = unique_topic("nodes")
        with Admin(broker=broker.url) as admin:
            # Factor 1: each partition on one node (two nodes would default to 2 copies)
            admin.create_topic(topic, PARTITIONS, replication_factor=1)
            owners = {p.partition: p.shard for p in admin.describe_topic(topic).partition_info}
        # The two shards were placed on different nodes
        pins = json.loads((tmp_path / "data" / "metadata.json").read_text())["shard_nodes"]
        assert sorted(pins.values()) == ["plinth-node:a", "plinth-node:b"]
        on_worker = {p for p, shard in owners.items() if pins[shard] == "plinth-node:b"}
        assert 0 < len(on_worker) < PARTITIONS
        assert all(produce_to(broker.url, topic, p) == "ok" for p in range(PARTITIONS))
        # When the worker node dies
        cluster.remove_node(worker)
        # Then its partitions answer "unavailable" and all the others keep serving
        wait_until(lambda: all(produce_to(broker.url, topic, p) == "UnavailableError"
                               for p in on_worker), timeout_s=60)
        on_head = [p for p in range(PARTITIONS) if p not in on_worker]
        assert {p: produce_to(broker.url, topic, p) for p in on_head} == {p: "ok" for p in on_head}
        # And when the node returns, its shard restarts there, recovers and serves again
        cluster.add_node(num_cpus=1, resources={"plinth-node:b": 1})
        wait_until(lambda: all(produce_to(broker.url, topic, p) == "ok" for p in on_worker),
                   timeout_s=120)
        with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                      consumer_timeout_ms=5_000) as consumer:
            records = list(consumer)
        # The records from before the loss are still there, and the new ones after them
        for p in range(PARTITIONS):
            assert len([r for r in records if r.partition == p]) >= 2
    finally:
        broker.stop()


def test_a_node_added_with_a_shard_takes_new_writes_at_once_and_nothing_is_copied(two_node_cluster, tmp_path):
    """Through either router: the one in ``plinth serve`` and a ``plinth router``."""
    cluster, _ = two_node_cluster
    data_dir = tmp_path / "data"
    broker = Broker(data_dir, cluster.address, shards=2,
                    extra_args=("--cluster-name", "nodes-add")).start()
    router = StandaloneRouter(cluster.address, "nodes-add").start()
    try:
        topic = topic_that_moves(PARTITIONS, ["shard-0", "shard-1"], ["shard-0", "shard-1", "shard-2"])
        with Admin(broker=broker.url) as admin:
            # Factor 1: replicated partitions do not move yet (two nodes would default to 2)
            admin.create_topic(topic, PARTITIONS, replication_factor=1)
        with Producer(broker=broker.url) as producer:
            for n in range(PARTITIONS * 5):
                producer.send(topic, b"old-%d" % n, partition=n % PARTITIONS)
        # When a third node joins and one shard is added
        cluster.add_node(num_cpus=1, resources={"plinth-node:c": 1})
        with Admin(broker=broker.url) as admin:
            moves = [m for m in admin.add_shards(1) if m[0] == topic]
        # Then the new shard runs on the new node, and the partitions it won continue there
        pins = json.loads((data_dir / "metadata.json").read_text())["shard_nodes"]
        assert pins["shard-2"] == "plinth-node:c"
        assert moves and all(dst == "shard-2" and offset == 5 for _, _, _, dst, offset in moves)
        old_files = {p: sorted((data_dir / "shards" / src / f"{topic}-{p}").glob("*"))
                     for _, p, src, _, _ in moves}
        old_bytes = {p: [f.read_bytes() for f in files if f.suffix == ".log"]
                     for p, files in old_files.items()}
        # And new writes through the other router land on the new node's shard at once
        with Producer(broker=router.url, request_timeout_ms=5_000) as producer:
            metas = [producer.send(topic, b"new-%d" % n, partition=n % PARTITIONS).get(60)
                     for n in range(PARTITIONS * 5)]
        assert all(m.offset >= 5 for m in metas)
        for _, p, src, dst, _ in moves:
            new_logs = sorted((data_dir / "shards" / dst / f"{topic}-{p}").glob("*.log"))
            assert [f.name for f in new_logs] == [f"{5:020d}.log"] and new_logs[0].stat().st_size > 0
            # And nothing was copied: the old shard's log files are byte for byte the same
            assert [f.read_bytes() for f in old_files[p] if f.suffix == ".log"] == old_bytes[p]
        # And either router reads every partition, old records and new
        for url in (broker.url, router.url):
            with Consumer(topic, broker=url, auto_offset_reset="earliest",
                          consumer_timeout_ms=5_000) as consumer:
                records = list(consumer)
            for p in range(PARTITIONS):
                assert [r.offset for r in records if r.partition == p] == list(range(10))
    finally:
        router.stop()
        broker.stop()
