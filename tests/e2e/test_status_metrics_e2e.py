"""`plinth status` and the Prometheus endpoint against a real broker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request

from plinth import Admin, Consumer, Producer, limits
from tests.shard_processes import shard_pids
from tests.support import free_port, unique_topic, wait_until


def test_status_lists_nodes_shards_with_partitions_and_the_router(broker_factory):
    broker = broker_factory(shards=2)
    topic = unique_topic("st")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 6)
        status = admin.status()
    assert [s.shard_id for s in status.shards] == ["shard-0", "shard-1"]
    assert all(s.alive for s in status.shards)
    assert sum(s.partitions for s in status.shards) == 6
    assert any(alive for _, _, alive in status.nodes)
    assert [address for address, _ in status.routers] == [broker.url]
    out = subprocess.run([sys.executable, "-m", "plinth.cli", "status"], capture_output=True,
                         text=True, env=dict(os.environ, PLINTH_BROKER=broker.url), timeout=60)
    assert out.returncode == 0 and "shard-0" in out.stdout and broker.url in out.stdout


def test_status_shows_the_process_of_each_shard_the_one_that_holds_its_directory(shared_broker):
    # Given a running broker, whose shards' processes all read "ray::ShardActor" in ps
    held_by = wait_until(lambda: len(found := shard_pids(shared_broker.data_dir)) == 2 and found,
                         timeout_s=30)
    # When its status is asked, through Admin and the CLI
    with Admin(broker=shared_broker.url) as admin:
        shards = admin.status().shards
    out = subprocess.run([sys.executable, "-m", "plinth.cli", "status"], capture_output=True,
                         text=True, env=dict(os.environ, PLINTH_BROKER=shared_broker.url),
                         timeout=60)
    # Then each shard's pid is the process holding its directory's lock (the kernel's
    # word, tests/shard_processes.py), shown on its row after its node
    assert {s.shard_id: s.pid for s in shards} == held_by
    lines = out.stdout.splitlines()
    table = lines[lines.index("shards") + 2:]
    rows = {line.split()[0]: line.split()
            for line in table[:next(i for i, line in enumerate(table) if not line.startswith(" "))]}
    assert {shard_id: int(rows[shard_id][3]) for shard_id in held_by} == held_by


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return response.read().decode()


def metric(text: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in metrics")


def test_metrics_show_partition_rates_offsets_latency_errors_and_group_lag(broker_factory):
    port = free_port()
    broker = broker_factory(shards=2, extra_args=("--metrics-port", str(port)))
    topic, group = unique_topic("m"), unique_topic("g")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    with Producer(broker=broker.url) as producer:
        for i in range(100):
            producer.send(topic, b"x" * 10, partition=0)
    with Consumer(topic, broker=broker.url, group=group, auto_offset_reset="earliest",
                  enable_auto_commit=False, session_timeout_ms=3_000) as consumer:
        # Read every record (an empty poll alone may come before the first fetch: the
        # position reset it waits for is not waited for past the poll's timeout)
        read = []
        wait_until(lambda: read.extend(r for rs in consumer.poll(timeout_ms=100).values()
                                       for r in rs) or len(read) == 100, timeout_s=30)
        consumer.commit({(topic, 0): 40})
        try:
            consumer.commit({(topic, 7): 1})   # not owned: counted as an error
        except Exception:
            pass
    text = scrape(port)
    assert metric(text, "plinth_partition_records_in_total", topic=topic, partition=0) == 100
    assert metric(text, "plinth_partition_log_end_offset", topic=topic, partition=0) == 100
    assert metric(text, "plinth_partition_fetch_requests_total", topic=topic, partition=0) >= 1
    assert metric(text, "plinth_group_lag", group=group, topic=topic, partition=0) == 60
    assert metric(text, "plinth_request_latency_seconds_count", kind="produce") >= 1
    assert metric(text, "plinth_errors_total", code="notOwner") >= 1
    # And each shard's disk, as df shows it, and the reserve it refuses produces below
    usage = shutil.disk_usage(broker.data_dir)
    for shard in ("shard-0", "shard-1"):
        assert metric(text, "plinth_shard_disk_total_bytes", shard=shard) == usage.total
        assert abs(metric(text, "plinth_shard_disk_free_bytes", shard=shard)
                   - usage.free) < 256 * 1024 * 1024   # other work writes meanwhile
        assert metric(text, "plinth_shard_disk_reserve_bytes", shard=shard) == \
            limits.PRODUCE_FREE_BYTES_MIN_DEFAULT
    # And the router's memory for its clients against each budget: nothing is in
    # flight once every reply came back
    assert metric(text, "plinth_router_memory_bytes", kind="requests_in_flight") == 0
    assert metric(text, "plinth_router_memory_bytes_max", kind="requests_in_flight") == \
        limits.ROUTER_REQUEST_BYTES_IN_FLIGHT_MAX
    assert metric(text, "plinth_router_memory_bytes_max", kind="replies_unsent") == \
        limits.ROUTER_REPLY_BYTES_UNSENT_MAX
    # And the error replies the router and controller make are counted too, by code, the
    # router named (a missing topic's and an invalid config's were counted nowhere)
    with Admin(broker=broker.url) as admin:
        for call in (lambda: admin.describe_topic(unique_topic("nosuch")),
                     lambda: admin.create_topic(unique_topic("bad"), 1,
                                                config={"retention.ms": "soon"})):
            try:
                call()
            except Exception:
                pass
    text = scrape(port)
    for code in ("unknownTopic", "invalidConfig"):
        assert metric(text, "plinth_errors_total", code=code,
                      source=f"router:{broker.url}") == 1
    assert metric(text, "plinth_shard_up", shard="shard-0") == 1
    # And the probes say the broker is alive and ready
    for path, answer in (("/healthz", b"ok\n"), ("/ready", b"ready\n")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            assert (response.status, response.read()) == (200, answer)
