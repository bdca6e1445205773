"""Shared fixtures: one Ray cluster per test session, real brokers on loopback.

The session's Ray head runs in the pytest process, bound to 127.0.0.1, with
token auth whose token lives in a temp dir (never ~/.ray). Brokers are real
``plinth serve`` subprocesses that join it with ``--ray-address``, so a test
can SIGKILL and restart a broker without paying for a new Ray cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Before anything imports plinth.json_fragments, which reads it once: every save that
# encodes only the changes its writer tracked is checked against the whole document
# (a change the writer did not note fails the test that made it). The brokers and
# Ray workers the tests start inherit it.
os.environ["PLINTH_CHECK_TRACKED_CHANGES"] = "1"

from tests.support import free_port, start_until_ready

READY_TIMEOUT_S = 120

# Before anything imports Ray: its local-only mode keeps the node address at
# 127.0.0.1 (it would otherwise swap in the machine's network address), and
# the brokers started by the tests inherit it.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# No web console beside the brokers the tests start (plinth serve starts one by
# default on a fixed port); the console's own tests ask for one with --console-listen.
os.environ["PLINTH_CONSOLE_LISTEN"] = "off"


@pytest.fixture(scope="session")
def ray_cluster():
    """Start Ray once for the whole session; yield its GCS address."""
    temp_dir = tempfile.mkdtemp(prefix="plinth-t-")
    token_path = Path(temp_dir) / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    # Before Ray starts, so that its workers inherit it: S3 means the session's moto server.
    from tests.moto_s3 import SESSION_PORT, env_for
    os.environ.update(env_for(SESSION_PORT))
    import ray
    from ray._raylet import Config

    Config.initialize("")   # Ray reads RAY_AUTH_MODE once; make it see ours
    ray.init(_node_ip_address="127.0.0.1", _temp_dir=temp_dir, num_cpus=2,
             include_dashboard=False, namespace="plinth-tests")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


class PlinthProcess:
    """A ``plinth`` subprocess on a fixed URL (clients reconnect to it across restarts)."""

    stop_wait_s = 30

    def __init__(self):
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_line(self) -> str:
        raise NotImplementedError

    def start(self):
        self.proc, self.output = start_until_ready(self.command(), self.ready_line(), READY_TIMEOUT_S)
        return self

    def restart(self):
        return self.start()

    def kill(self) -> None:
        """SIGKILL the process: no flush, no goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_wait_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def log(self) -> str:
        return "".join(self.output)


class Broker(PlinthProcess):
    """A ``plinth serve`` subprocess joined to the session's Ray cluster."""

    stop_wait_s = 90   # it flushes and fsyncs every log first

    def __init__(self, data_dir: Path, ray_address: str | None, shards: int = 2,
                 extra_args: tuple[str, ...] = ()):
        super().__init__()
        self.data_dir = data_dir
        self.ray_address = ray_address
        self.shards = shards
        self.extra_args = extra_args

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(self.data_dir),
               "--listen", self.url, "--shards", str(self.shards), *self.extra_args]
        if "--console-listen" not in self.extra_args:
            cmd += ["--console-listen", "off"]
        return cmd + (["--ray-address", self.ray_address] if self.ray_address else [])

    def ready_line(self) -> str:
        return f"ready: listening on {self.url}"

    def end_leftover_shards(self) -> list[str]:
        """End the shard actors a SIGKILLed server left in the session's Ray cluster
        (they are detached: a restarted server would adopt them); returns their names."""
        from plinth.server import namespace_for
        from plinth.shards.shard_handle import ShardHandle

        args = list(self.extra_args)
        cluster_name = args[args.index("--cluster-name") + 1] if "--cluster-name" in args else None
        return ShardHandle.kill_all(namespace_for(self.data_dir, cluster_name))


@pytest.fixture
def broker_factory(ray_cluster, tmp_path):
    brokers: list[Broker] = []

    def make(shards: int = 2, data_dir: Path | None = None, extra_args=()) -> Broker:
        broker = Broker(data_dir or tmp_path / f"data{len(brokers)}", ray_cluster, shards, extra_args)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()
        broker.end_leftover_shards()


@pytest.fixture(scope="module")
def shared_broker(ray_cluster, tmp_path_factory):
    """One broker for a module's tests that don't restart it; topics keep tests apart."""
    broker = Broker(tmp_path_factory.mktemp("shared"), ray_cluster, shards=2).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def kafka_broker(ray_cluster, tmp_path_factory, request):
    """One broker with a Kafka listener (``.kafka_address``, HOST:PORT on loopback) for a
    module's tests; its shards: the module's ``KAFKA_SHARDS`` (default 2)."""
    from tests.support import free_port

    port = free_port()
    broker = Broker(tmp_path_factory.mktemp("kafka"), ray_cluster,
                    shards=getattr(request.module, "KAFKA_SHARDS", 2),
                    extra_args=("--kafka-listen", f"127.0.0.1:{port}"))
    broker.kafka_address = f"127.0.0.1:{port}"
    broker.start()
    yield broker
    broker.stop()
    broker.end_leftover_shards()


class StandaloneRouter(PlinthProcess):
    """A ``plinth router`` subprocess joined to a running broker by its cluster name."""

    def __init__(self, ray_address: str, cluster_name: str, extra_args: tuple[str, ...] = ()):
        super().__init__()
        self.ray_address = ray_address
        self.cluster_name = cluster_name
        self.extra_args = extra_args

    def command(self) -> list[str]:
        return [sys.executable, "-m", "plinth.cli", "router", "--ray-address", self.ray_address,
                "--cluster-name", self.cluster_name, "--listen", self.url, *self.extra_args]

    def ready_line(self) -> str:
        return f"router ready: listening on {self.url}"


@pytest.fixture
def router_factory(ray_cluster):
    """``make(cluster_name)`` starts a ``plinth router`` for the broker started with
    ``--cluster-name cluster_name``; every router is stopped at the end."""
    routers: list[StandaloneRouter] = []

    def make(cluster_name: str, extra_args: tuple[str, ...] = ()) -> StandaloneRouter:
        router = StandaloneRouter(ray_cluster, cluster_name, extra_args)
        routers.append(router)
        return router.start()

    yield make
    for router in routers:
        router.stop()


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server on 127.0.0.1 (tests/moto_s3.py), one per session."""
    from tests.moto_s3 import SESSION_PORT, MotoS3

    server = MotoS3(port=SESSION_PORT).start()
    try:
        yield server
    finally:
        server.stop()
