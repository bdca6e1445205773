"""The disk reserve (shards/disk_reserve.py) through a real ``plinth serve``: its option,
what producers get when it refuses, and what ``plinth status`` says of each disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from plinth import Admin, Producer, limits
from plinth.errors import PlinthTimeoutError
from tests.support import unique_topic

RESERVE_BEYOND_ANY_DISK = limits.PRODUCE_FREE_BYTES_MIN_MAX   # 1 PiB


def plinth_status(broker, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "plinth.cli", "status", *args],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PLINTH_BROKER=broker.url))
    assert out.returncode == 0, out.stderr
    return out.stdout


def disk_lines(text: str) -> list[str]:
    """The rows of ``plinth status``'s disks section."""
    lines = text.splitlines()
    start = lines.index("disks") + 2   # past its header row
    return [line for line in lines[start:] if line.startswith("  shard-")]


def test_a_broker_with_the_default_reserve_shows_each_shards_disk_taking_produces(
        broker_factory):
    broker = broker_factory(shards=2)
    with Admin(broker=broker.url) as admin:
        shards = admin.status().shards
    usage = shutil.disk_usage(broker.data_dir)
    assert [s.disk_total_bytes for s in shards] == [usage.total, usage.total]
    assert all(s.disk_reserve_bytes == limits.PRODUCE_FREE_BYTES_MIN_DEFAULT for s in shards)
    assert all(0 < s.disk_free_bytes <= usage.total for s in shards)
    rows = disk_lines(plinth_status(broker))
    assert [row.split()[0] for row in rows] == ["shard-0", "shard-1"]
    assert all(row.split()[3] == str(usage.total) and row.endswith("taken") for row in rows)


def test_a_reserve_larger_than_the_disk_refuses_every_produce_saying_so_and_status_shows_it(
        broker_factory):
    # Given a broker whose shards keep more free than any disk has
    broker = broker_factory(shards=1, extra_args=("--produce-free-bytes-min",
                                                  str(RESERVE_BEYOND_ANY_DISK)))
    topic = unique_topic("full")
    with Admin(broker=broker.url) as admin:
        admin.create_topic(topic, 1)
    # When a record is sent / Then the producer retries it until its delivery timeout,
    # saying first that it was not stored (each refusal came before the append), and
    # the error names the file system's free bytes, the reserve and the option
    with Producer(broker=broker.url, linger_ms=0, request_timeout_ms=1_000,
                  delivery_timeout_ms=3_000, retry_backoff_ms=50) as producer:
        with pytest.raises(PlinthTimeoutError) as refused:
            producer.send(topic, b"no room", partition=0).get(30)
    message = str(refused.value)
    assert "delivery_timeout_ms=3000 and was not stored (it was sent, " in message
    assert "each refused before it was stored" in message
    assert f"would leave less than the {RESERVE_BEYOND_ANY_DISK} bytes the shard keeps free " \
           "(--produce-free-bytes-min)" in message
    assert str(broker.data_dir / "shards" / "shard-0") in message
    # And nothing was stored
    with Admin(broker=broker.url) as admin:
        assert admin.list_offsets(topic, 0).end_offset == 0
    # And plinth status shows the disk refusing produces, as --json does
    [row] = disk_lines(plinth_status(broker))
    assert row.split()[4] == str(RESERVE_BEYOND_ANY_DISK)
    assert row.endswith("REFUSED (free is under the reserve)")
    [shard] = json.loads(plinth_status(broker, "--json"))["shards"]
    assert shard["disk_reserve_bytes"] == RESERVE_BEYOND_ANY_DISK
    assert shard["disk_total_bytes"] == shutil.disk_usage(broker.data_dir).total
