"""A ``plinth router`` joins its broker with at least the broker's security: the
controller records which security options ``plinth serve`` was given
(plinth/server.py's ``security_required``), and a router without one of them
refuses to start, naming what it lacks, instead of serving every topic to anyone
who connects (it reaches the shards with the cluster's key whatever its own
options). Real processes: a CurveZMQ + ACL + SASL broker, routers as a user
starts them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from plinth import Admin
from plinth.errors import NotAuthorizedError
from tests.conftest import StandaloneRouter
from tests.e2e.test_kafka_security_e2e import add_users
from tests.e2e.test_security_e2e import as_client, keygen, public_key
from tests.support import free_port, unique_topic

CLUSTER_NAME = unique_topic("router-sec")


@pytest.fixture(scope="module")
def strict_broker(ray_cluster, tmp_path_factory):
    """A broker with CurveZMQ, an ACL, a Kafka listener with SASL users, and metrics."""
    directory = tmp_path_factory.mktemp("router-sec")
    keys, authorized = directory / "keys", directory / "authorized"
    authorized.mkdir()
    server_public, server_secret = keygen(keys, "server")
    admin_public, admin_secret = keygen(keys, "admin")
    reader_public, reader_secret = keygen(keys, "reader")
    for public in (admin_public, reader_public):
        (authorized / public.name).write_text(public.read_text())
    acl = directory / "acl.json"
    acl.write_text(json.dumps({
        public_key(admin_public): [{"operations": ["produce", "consume", "admin"], "topics": "*"}],
        public_key(reader_public): [{"operations": ["consume"], "topics": "*"}]}))
    users = directory / "users.json"
    add_users(users)
    from tests.conftest import Broker

    metrics_port = free_port()
    broker = Broker(directory / "data", ray_cluster, shards=1, extra_args=(
        "--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized),
        "--acl", str(acl), "--kafka-sasl-users", str(users),
        "--kafka-listen", f"127.0.0.1:{free_port()}", "--cluster-name", CLUSTER_NAME,
        "--metrics-port", str(metrics_port)))
    broker.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    broker.keys = ("--curve-secret-key", str(server_secret), "--authorized-keys", str(authorized))
    broker.acl = ("--acl", str(acl))
    broker.as_admin = as_client(admin_secret, server_public)
    broker.as_reader = as_client(reader_secret, server_public)
    broker.start()
    yield broker
    broker.stop()
    broker.end_leftover_shards()


def router_refusal(ray_cluster, *args: str) -> str:
    """Start ``plinth router`` for the module's broker with ``args``; it must exit 1:
    its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "plinth.cli", "router", "--ray-address", ray_cluster,
         "--cluster-name", CLUSTER_NAME, "--listen", f"tcp://127.0.0.1:{free_port()}", *args],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stderr


REQUIRES = (f"error: InvalidConfigError: the broker (cluster {CLUSTER_NAME}) requires of every "
            f"router --curve-secret-key, --acl (and with --kafka-listen, --kafka-sasl-users); ")


def test_a_router_without_the_brokers_keys_acl_or_sasl_refuses_to_start_naming_them(
        strict_broker, ray_cluster):
    # Given a broker with CurveZMQ keys, an ACL and Kafka SASL users
    # When a router joins it as the README's "More routers" showed, with a Kafka listener
    stderr = router_refusal(ray_cluster, "--kafka-listen", f"127.0.0.1:{free_port()}")
    # Then it refuses to start, in one line naming what it lacks and what the broker requires
    assert stderr.splitlines()[-1] == (
        REQUIRES + "this router has no --curve-secret-key and --authorized-keys, no --acl, no "
        "--kafka-sasl-users, so it would serve the broker's topics without them. Start it with "
        "the same options as the broker's plinth serve"), stderr


def test_a_router_with_the_keys_but_without_the_acl_refuses_to_start(strict_broker, ray_cluster):
    # When a router joins with the broker's keys but no --acl (it would let every
    # authenticated key do everything)
    stderr = router_refusal(ray_cluster, *strict_broker.keys)
    # Then it refuses, naming --acl alone
    assert stderr.splitlines()[-1].startswith(REQUIRES + "this router has no --acl, so"), stderr


def test_a_router_with_the_brokers_security_starts_and_applies_the_acl(strict_broker, ray_cluster):
    # When a router joins with the broker's keys and ACL
    router = StandaloneRouter(ray_cluster, CLUSTER_NAME,
                              (*strict_broker.keys, *strict_broker.acl)).start()
    try:
        # Then it serves, with the ACL: the admin may create, the reader may not
        topic = unique_topic("joined")
        with Admin(broker=router.url, **strict_broker.as_admin) as admin:
            admin.create_topic(topic, 1)
        with Admin(broker=router.url, **strict_broker.as_reader) as reader:
            with pytest.raises(NotAuthorizedError, match="may not admin"):
                reader.delete_topic(topic)
    finally:
        router.stop()


def errors_total(metrics_url: str) -> dict[tuple[str, str], float]:
    """plinth_errors_total's samples by (code, source), scraped."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode()
    return {(s.labels["code"], s.labels["source"]): s.value
            for family in text_string_to_metric_families(text) if family.name == "plinth_errors"
            for s in family.samples if s.name == "plinth_errors_total"}


def test_the_routers_acl_refusals_are_in_plinth_errors_total_by_code_and_router(strict_broker):
    # Given the reader, who may only consume, refused twice by the ACL
    sample = ("notAuthorized", f"router:{strict_broker.url}")
    before = errors_total(strict_broker.metrics_url).get(sample, 0)
    topic = unique_topic("metrics")
    with Admin(broker=strict_broker.url, **strict_broker.as_admin) as admin:
        admin.create_topic(topic, 1)
    with Admin(broker=strict_broker.url, **strict_broker.as_reader) as reader:
        for _ in range(2):
            with pytest.raises(NotAuthorizedError):
                reader.delete_topic(topic)
    # When the metrics are scraped, Then the router counted both, under its address
    assert errors_total(strict_broker.metrics_url).get(sample, 0) == before + 2
