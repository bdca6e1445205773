"""The broker's internal hop and its lifecycle, against real ``plinth serve`` processes
(issue 11, findings 1 and 10): a shard's port answers only the cluster's own keys,
one server per data directory, and ``ready`` only once every shard serves."""

from __future__ import annotations

import fcntl
import re
import stat
import subprocess
import sys
import threading
import time

import zmq

from plinth import Admin, Consumer, Producer, limits, protocol
from plinth.cluster_keys import CLUSTER_KEY_FILE
from tests.conftest import READY_TIMEOUT_S, Broker
from tests.e2e.test_direct_clients_e2e import requests_by_shard
from tests.e2e.test_security_e2e import keygen
from tests.support import free_port, unique_topic, wait_until


def plinth_status(broker, *curve_args: str) -> str:
    return subprocess.run([sys.executable, "-m", "plinth.cli", "--broker", broker.url, *curve_args,
                           "status"], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def status_section(status_text: str, title: str, next_titles: tuple[str, ...]) -> str:
    """The lines of ``plinth status`` under ``title``, up to the first of ``next_titles``."""
    section = status_text.split(f"\n{title}\n", 1)[1]
    for next_title in next_titles:
        section = section.split(f"\n{next_title}\n", 1)[0]
    return section


def addresses_in(section: str) -> list[str]:
    return [word for word in section.split() if word.startswith(("tcp://", "ipc://"))]


def shard_addresses(status_text: str) -> list[str]:
    """The shards' own addresses in ``plinth status`` (not their direct sockets for
    clients, nor the routers')."""
    return addresses_in(status_section(status_text, "shards", ("direct sockets", "routers")))


def direct_addresses(status_text: str) -> list[str]:
    """The shards' direct sockets for clients in ``plinth status`` (none: [])."""
    if "\ndirect sockets\n" not in status_text:
        return []
    return addresses_in(status_section(status_text, "direct sockets", ("routers",)))


def test_a_keyless_client_at_a_shards_address_gets_nothing_while_the_router_serves(tmp_path, broker_factory):
    # Given a broker with CurveZMQ on for clients, and a client key it authorizes
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    authorized.mkdir()
    server_public, server_secret = keygen(keys, "server")
    client_public, client_secret = keygen(keys, "client")
    (authorized / client_public.name).write_text(client_public.read_text())
    broker = broker_factory(shards=2, extra_args=(
        "--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized)))
    as_client = dict(curve_key_file=str(client_secret), curve_server_key_file=str(server_public))
    topic = unique_topic("hop")
    with Admin(broker=broker.url, **as_client) as admin:
        admin.create_topic(topic, 2)
    # And the cluster's key pair in its data dir, readable by its owner only
    assert stat.S_IMODE((broker.data_dir / CLUSTER_KEY_FILE).stat().st_mode) == 0o600
    # When a client without keys dials each shard address `plinth status` shows
    addresses = shard_addresses(plinth_status(broker, "--curve-key-file", str(client_secret),
                                              "--curve-server-key-file", str(server_public)))
    assert len(addresses) == 2 and all(a.startswith("tcp://127.") for a in addresses)
    context = zmq.Context.instance()
    intruders = []
    for address in addresses:
        intruder = context.socket(zmq.DEALER)
        intruder.setsockopt(zmq.LINGER, 0)
        intruder.connect(address)
        for partition in (0, 1):
            intruder.send_multipart([b"intruder", protocol.encode_produce(1, topic, partition, 1),
                                     b"forged"])
            intruder.send_multipart([b"intruder", protocol.encode_fetch(2, topic, partition, 0,
                                                                        1 << 20, 0)])
        intruder.send_multipart([b"intruder", protocol.encode_list_topics(3)])
        intruders.append(intruder)
    try:
        # Then, while the broker serves a producer and a consumer through its router,
        with Producer(broker=broker.url, **as_client) as producer:
            for n in range(20):
                producer.send(topic, b"%d" % n, partition=n % 2).get(30)
        with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                      consumer_timeout_ms=5_000, **as_client) as consumer:
            assert sorted(int(r.value) for r in consumer) == list(range(20))
        # the intruders got no reply at all within 5 s of sending
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert not any(intruder.poll(100) for intruder in intruders)
    finally:
        for intruder in intruders:
            intruder.close()


def test_a_second_server_on_a_data_dir_refuses_at_once_naming_it_and_the_holders_pid(broker_factory, ray_cluster):
    # Given a broker serving data dir D
    broker = broker_factory(shards=1)
    # When a second `plinth serve --data-dir D` starts
    started = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "plinth.cli", "serve", "--data-dir",
                             str(broker.data_dir), "--listen", "tcp://127.0.0.1:1",
                             "--ray-address", ray_cluster], capture_output=True, text=True,
                            timeout=120)
    # Then it exits with status 1, well before any start wait, naming D and the pid
    assert second.returncode == 1 and time.monotonic() - started < 25
    assert str(broker.data_dir) in second.stderr and f"process {broker.proc.pid} " in second.stderr
    assert "ready" not in second.stdout
    # And the first broker still serves
    topic = unique_topic("lock")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=broker.url) as producer:
        assert producer.send(topic, b"still here").get(30).offset == 0


def test_ready_is_not_printed_while_a_shard_does_not_serve_and_the_server_says_which_and_why(
        ray_cluster, tmp_path):
    # Given a data dir whose shard-1 directory another process holds locked
    data_dir = tmp_path / "data"
    (data_dir / "shards" / "shard-1").mkdir(parents=True)
    lock = open(data_dir / "shards" / "shard-1" / ".lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    broker = Broker(data_dir, ray_cluster, shards=2)
    # When a server starts on it
    broker.proc = subprocess.Popen(broker.command(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
    threading.Thread(target=lambda: broker.output.extend(broker.proc.stdout), daemon=True).start()
    try:
        # Then it says shard-1 is not serving, and why (it did not answer in time: it
        # waits for its directory's lock)
        wait_until(lambda: "plinth not ready: shard-1 is not serving" in broker.log(),
                   timeout_s=READY_TIMEOUT_S, explain=broker.log)
        assert "ready: listening" not in broker.log() and broker.proc.poll() is None
        # And SIGTERM ends it in good time (saying that shard-1 did not flush, and why:
        # it died in its constructor, waiting for the lock, and is not restarted), never
        # having said ready
        started = time.monotonic()
        broker.stop()
        assert time.monotonic() - started < 45
        assert re.search(r"shard-1 could not start, and is not restarted: StorageError: \S+ "
                         r"is locked by another shard process after waiting [0-9.]+ s; "
                         r"shutdown did not run", broker.log()), broker.log()
        assert "ready: listening" not in broker.log()
    finally:
        broker.kill()
        lock.close()


def test_an_embedded_broker_puts_the_shards_sockets_in_a_0700_dir_of_the_data_dir_and_serves(
        tmp_path):
    # Given an embedded broker (its own Ray, one machine), with the default internal hop
    broker = Broker(tmp_path / "data", None, shards=2)
    broker.start()
    try:
        # Then its shards listen in <data dir>/sockets, which only its owner may open
        sockets = (broker.data_dir / "sockets").resolve()
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
        status = plinth_status(broker)
        assert sorted(shard_addresses(status)) == [
            f"ipc://{sockets}/shard-0", f"ipc://{sockets}/shard-1"]
        # And each shard's direct socket for clients (plaintext broker) is beside it
        assert sorted(direct_addresses(status)) == [
            f"ipc://{sockets}/shard-0.direct", f"ipc://{sockets}/shard-1.direct"]
        # And it serves every partition through its router
        topic = unique_topic("ipc")
        with Admin(broker=broker.url) as admin:
            admin.create_topic(topic, 4)
        with Producer(broker=broker.url, direct_to_shards=False) as producer:
            for n in range(8):
                producer.send(topic, b"%d" % n, partition=n % 4).get(30)
        with Consumer(topic, broker=broker.url, auto_offset_reset="earliest",
                      consumer_timeout_ms=5_000, direct_to_shards=False) as consumer:
            assert sorted(int(r.value) for r in consumer) == list(range(8))
        # And a client of the same user goes to the shards' ipc:// direct sockets: once
        # its connections are made (its first sends pass the router meanwhile, as many
        # as a loaded machine takes), every send does
        with Admin(broker=broker.url) as admin, \
                Producer(broker=broker.url, linger_ms=0) as producer:
            def sent(count: int) -> tuple[int, int]:
                before = requests_by_shard(admin)
                for n in range(count):
                    producer.send(topic, b"%d" % n, partition=n % 4).get(30)
                after = requests_by_shard(admin)
                return tuple(sum(after[s][i] - before[s][i] for s in after) for i in (0, 1))
            wait_until(lambda: sent(4) == (4, 0), timeout_s=30)
            assert sent(40) == (40, 0)
    finally:
        broker.stop()


def test_the_ipc_hop_is_refused_when_joining_a_ray_cluster(tmp_path, ray_cluster):
    # When a server joining a Ray cluster asks for the ipc hop, Then it refuses at once
    refused = subprocess.run([sys.executable, "-m", "plinth.cli", "serve", "--data-dir",
                              str(tmp_path / "d"), "--ray-address", ray_cluster,
                              "--internal-hop", "ipc"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "hops between nodes stay CurveZMQ" in refused.stderr


def test_a_second_broker_under_a_cluster_name_another_serves_is_refused_in_one_line(
        broker_factory, ray_cluster, tmp_path):
    # Given a broker serving the session's Ray cluster under a cluster name
    cluster = unique_topic("twin")
    broker_factory(shards=1, extra_args=("--cluster-name", cluster))
    # When a copy of a data dir starts in the same Ray cluster under the same name
    copy_dir = tmp_path / "copy"
    result = subprocess.run(
        [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(copy_dir), "--listen",
         f"tcp://127.0.0.1:{free_port()}", "--shards", "1", "--console-listen", "off",
         "--ray-address", ray_cluster, "--cluster-name", cluster],
        capture_output=True, text=True, timeout=300)
    # Then it fails in one line naming the namespace, what named it and the way out, not
    # a traceback naming its own data dir as the one served
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == (f"error: InvalidConfigError: another broker already serves the Ray "
                    f"namespace plinth-{cluster} (named by --cluster-name {cluster}) in this "
                    f"Ray cluster (waited {limits.CONTROLLER_NAME_WAIT_S:g} s for it to go); "
                    f"start this one with a --cluster-name of its own")
