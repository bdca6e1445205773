"""``plinth router --data-dir DIR``: one more router for the ``plinth serve`` on DIR, which
runs its own Ray (plinth/server.py: the server writes its Ray's address to
DIR/ray.address, the router joins with the data dir's token, in Ray's local-only
mode). Real processes, as a user starts them: the README's two commands."""

from __future__ import annotations

import os
import struct
import sys
import uuid

import pytest

from plinth import Admin, Producer
from plinth.errors import UnknownTopicError
from plinth.router.kafka import codec
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.messages import METADATA
from plinth.server import RAY_ADDRESS_FILE
from tests.e2e.test_crash_cleanup_e2e import STOP_WAIT_S, kill_leftovers, start_embedded, started_by
from tests.e2e.test_kafka_hostile_e2e import connect, read_exactly, request
from tests.e2e.test_status_metrics_e2e import scrape
from tests.support import free_port, read_all, start_until_ready, unique_topic

PLINTH = [sys.executable, "-m", "plinth.cli"]
RECORDS = 50


def kafka_metadata_errors(address, topic: str) -> list[int]:
    """A Kafka Metadata v12 of ``topic`` on a raw socket: each topic's error code."""
    with connect(address) as sock:
        sock.sendall(request(METADATA, 12, 5, {
            "topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}], "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False}))
        size = struct.unpack(">i", read_exactly(sock, 4))[0]
        _, body = codec.decode_response(METADATA.key, 12, read_exactly(sock, size))
    return [entry["error_code"] for entry in body["topics"]]


def test_a_router_joins_the_server_on_its_data_dir_and_serves_its_topics(tmp_path):
    # Given an embedded server
    server_url, data_dir = f"tcp://127.0.0.1:{free_port()}", tmp_path / "data"
    server, _ = start_embedded(data_dir, server_url, tmp_path / "home")
    started = started_by(server.pid)
    router = None
    try:
        assert (data_dir / RAY_ADDRESS_FILE).read_text().startswith("127.0.0.1:")
        # When a router is started for it by its data dir alone
        router_url, metrics_port = f"tcp://127.0.0.1:{free_port()}", free_port()
        kafka_address = ("127.0.0.1", free_port())
        # (from a shell whose environment names another Ray cluster's token)
        other_token = tmp_path / "other_cluster_token"
        other_token.write_text("0" * 64)
        router, output = start_until_ready(
            PLINTH + ["router", "--data-dir", str(data_dir), "--listen", router_url,
                      "--metrics-port", str(metrics_port),
                      "--kafka-listen", "%s:%d" % kafka_address],
            "plinth router ready", timeout_s=120,
            env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(other_token)})
        # Then records produced through it are read through the server's router
        topic = unique_topic("joined")
        with Admin(broker=router_url) as admin:
            admin.create_topic(topic, 2)
            routers = admin.status().routers
        assert sorted(listen for listen, _ in routers) == sorted([server_url, router_url])
        assert all(node.startswith("127.") for _, node in routers)
        with Producer(broker=router_url, acks="all") as producer:
            futures = [producer.send(topic, b"%d" % n, partition=n % 2) for n in range(RECORDS)]
            assert all(future.get(30) for future in futures)
        values = sorted(int(record.value) for record in read_all(server_url, topic))
        assert values == list(range(RECORDS))
        # And its metrics endpoint exports its own router's series only (the broker-wide
        # ones are the server's: scraping both counted them twice), its errors among them
        with Admin(broker=router_url) as admin, pytest.raises(UnknownTopicError):
            admin.describe_topic(unique_topic("nosuch"))
        assert kafka_metadata_errors(kafka_address, unique_topic("nosuch")) == [
            kafka.UNKNOWN_TOPIC_OR_PARTITION]
        text = scrape(metrics_port)
        assert "plinth_partition_records_in_total" not in text
        assert "plinth_shard_up" not in text and "plinth_request_latency" not in text
        assert f'plinth_errors_total{{code="unknownTopic",source="router:{router_url}"}} 1.0' \
            in text
        # ... and its own Kafka listener's error answers
        assert ('plinth_kafka_errors_total{api="Metadata",error="UNKNOWN_TOPIC_OR_PARTITION",'
                'listener="%s:%d"} 1.0' % kafka_address) in text
        # And a SIGTERM stops it cleanly, leaving the server serving
        router.terminate()
        assert router.wait(STOP_WAIT_S) == 0, "".join(output[-20:])
        with Admin(broker=server_url) as admin:
            assert [listen for listen, _ in admin.status().routers] == [server_url]
    finally:
        if router is not None and router.poll() is None:
            router.kill()
        started = started_by(server.pid) | started
        server.terminate()
        server.wait(STOP_WAIT_S)
        kill_leftovers(started)
    # And the stopped server leaves no ray.address behind for a router to try
    assert not (data_dir / RAY_ADDRESS_FILE).exists()
