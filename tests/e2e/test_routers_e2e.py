"""Several routers: `plinth router` joins a running broker by its cluster name;
each router serves every partition; a client given both fails over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from plinth import Admin, Consumer, Producer, limits
from plinth.errors import PlinthError, PlinthTimeoutError
from tests.support import free_port, start_until_ready, unique_topic, wait_until


def start_router(ray_address: str, cluster: str) -> tuple[subprocess.Popen, str]:
    url = f"tcp://127.0.0.1:{free_port()}"
    proc, _ = start_until_ready([sys.executable, "-m", "plinth.cli", "router", "--ray-address",
                                 ray_address, "--cluster-name", cluster, "--listen", url],
                                "router ready")
    return proc, url


def test_a_second_router_serves_every_partition_and_clients_fail_over(broker_factory, ray_cluster):
    cluster = unique_topic("cl")
    broker = broker_factory(shards=2, extra_args=("--cluster-name", cluster))
    proc, second = start_router(ray_cluster, cluster)
    try:
        topic = unique_topic("r")
        with Admin(broker=second) as admin:
            admin.create_topic(topic, 4)
        # Writes through the second router reach every partition, reads through the first
        with Producer(broker=second) as producer:
            metas = [producer.send(topic, b"%d" % p, partition=p).get(30) for p in range(4)]
        assert [m.partition for m in metas] == [0, 1, 2, 3]
        with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                      consumer_timeout_ms=3_000) as consumer:
            assert sorted(r.value for r in consumer) == [b"0", b"1", b"2", b"3"]
        # A producer given both routers keeps going when the second one dies
        with Producer(broker=f"{second},{broker.url}", request_timeout_ms=2_000) as producer:
            producer.send(topic, b"before", partition=0).get(30)
            proc.kill()
            proc.wait(10)
            futures = [producer.send(topic, b"after-%d" % i, partition=i % 4) for i in range(20)]
            assert all(f.get(60).offset >= 0 for f in futures)
    finally:
        proc.kill()
    with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                  consumer_timeout_ms=3_000) as consumer:
        values = [r.value for r in consumer]
    assert values.count(b"before") == 1
    assert sorted(v for v in values if v.startswith(b"after")) == sorted(b"after-%d" % i for i in range(20))


def test_a_client_given_two_routers_stops_asking_one_that_hangs(broker_factory, ray_cluster):
    # Given a client of two routers, each of which has answered it
    cluster = unique_topic("cl")
    broker = broker_factory(shards=1, extra_args=("--cluster-name", cluster))
    proc, second = start_router(ray_cluster, cluster)
    topic = unique_topic("hang")
    try:
        with Admin(broker=f"{second},{broker.url}", request_timeout_ms=1_000) as admin:
            admin.create_topic(topic, 1)
            for _ in range(4):   # round robin: both routers answered
                assert topic in admin.list_topics()
            # When the second router hangs (stopped: its connections stay open)
            os.kill(proc.pid, signal.SIGSTOP)
            # Then within the heartbeat timeout (and a few requests' timeouts) every
            # request goes to the first: 20 in a row are answered. Before, every other
            # one went to the stopped router and timed out, for as long as it hung.
            deadline_s = (time.monotonic() + 4 * limits.CLIENT_ROUTER_HEARTBEAT_TIMEOUT_MS / 1000)
            answered_in_a_row = 0
            while answered_in_a_row < 20:
                assert time.monotonic() < deadline_s, "requests still went to the hung router"
                try:
                    admin.list_topics()
                    answered_in_a_row += 1
                except PlinthTimeoutError:
                    answered_in_a_row = 0
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)


def test_a_standalone_router_outlives_a_restart_of_its_server_and_serves_again(
        broker_factory, router_factory):
    # Given a standalone router of a broker that holds a topic
    cluster = unique_topic("cl")
    broker = broker_factory(shards=2, extra_args=("--cluster-name", cluster))
    router = router_factory(cluster)
    topic = unique_topic("r")
    with Admin(broker=router.url) as admin:
        admin.create_topic(topic, 2)
    # When the server is SIGKILLed and started again (a new controller, new shards)
    broker.kill()
    broker.start()
    # Then the old router finds the new controller and serves admin calls and data again
    def served() -> bool:
        try:
            with Admin(broker=router.url, request_timeout_ms=5_000) as admin:
                return topic in admin.list_topics()
        except PlinthError:
            return False
    wait_until(served, timeout_s=60)
    with Producer(broker=router.url, request_timeout_ms=5_000) as producer:
        assert producer.send(topic, b"after", partition=1).get(60).offset == 0
    with Admin(broker=router.url) as admin:
        assert router.url in [listen for listen, _ in admin.status().routers]


def test_a_router_finds_the_cluster_key_by_its_file_or_the_data_dir_and_refuses_a_public_key_file(
        broker_factory, ray_cluster, tmp_path):
    from plinth.cluster_keys import CLUSTER_KEY_FILE
    from tests.e2e.test_security_e2e import keygen

    # Given a broker, and its cluster key file in its data dir
    cluster = unique_topic("cl")
    broker = broker_factory(shards=2, extra_args=("--cluster-name", cluster))
    topic = unique_topic("k")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 2)
    routers = []
    try:
        # When routers start given --cluster-key-file, and given the server's --data-dir
        for args in (["--cluster-key-file", str(broker.data_dir / CLUSTER_KEY_FILE)],
                     ["--data-dir", str(broker.data_dir)]):
            url = f"tcp://127.0.0.1:{free_port()}"
            proc, _ = start_until_ready([sys.executable, "-m", "plinth.cli", "router",
                                         "--ray-address", ray_cluster, "--cluster-name", cluster,
                                         "--listen", url, *args], "router ready")
            routers.append(proc)
            # Then each reaches every shard
            with Producer(broker=url) as producer:
                assert [producer.send(topic, b"x", partition=p).get(30).partition
                        for p in (0, 1)] == [0, 1]
        # And a router given a public key file refuses at once, naming the file
        public_file, _ = keygen(tmp_path / "keys", "not-the-cluster")
        refused = subprocess.run([sys.executable, "-m", "plinth.cli", "router", "--ray-address",
                                  ray_cluster, "--cluster-name", cluster, "--cluster-key-file",
                                  str(public_file)], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and str(public_file) in refused.stderr
        assert "holds no secret key" in refused.stderr
    finally:
        for proc in routers:
            proc.kill()
            proc.wait(30)
