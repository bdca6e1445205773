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

from tests.support import free_port, start_until_ready

READY_TIMEOUT_S = 120

# Before anything imports Ray: its local-only mode keeps the node address at
# 127.0.0.1 (it would otherwise swap in the machine's network address), and
# the brokers started by the tests inherit it.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(scope="session")
def ray_cluster():
    """Start Ray once for the whole session; yield its GCS address."""
    temp_dir = tempfile.mkdtemp(prefix="plinth-t-")
    token_path = Path(temp_dir) / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
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


class Broker:
    """A ``plinth serve`` subprocess joined to the session's Ray cluster."""

    def __init__(self, data_dir: Path, ray_address: str | None, shards: int = 2,
                 extra_args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.ray_address = ray_address
        self.shards = shards
        self.extra_args = extra_args
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self) -> "Broker":
        cmd = [sys.executable, "-m", "plinth.cli", "serve", "--data-dir", str(self.data_dir),
               "--listen", self.url, "--shards", str(self.shards), *self.extra_args]
        if self.ray_address:
            cmd += ["--ray-address", self.ray_address]
        self.proc, self.output = start_until_ready(cmd, f"ready: listening on {self.url}",
                                                   READY_TIMEOUT_S)
        return self

    def kill(self) -> None:
        """SIGKILL the server process: no flush, no goodbye."""
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
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def restart(self) -> "Broker":
        return self.start()

    def log(self) -> str:
        return "".join(self.output)


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


@pytest.fixture(scope="module")
def shared_broker(ray_cluster, tmp_path_factory):
    """One broker for a module's tests that don't restart it; topics keep tests apart."""
    broker = Broker(tmp_path_factory.mktemp("shared"), ray_cluster, shards=2).start()
    yield broker
    broker.stop()


class StandaloneRouter:
    """A ``plinth router`` subprocess joined to a running broker by its cluster name.

    Its URL stays the same across restarts, so clients given it reconnect to it.
    """

    def __init__(self, ray_address: str, cluster_name: str):
        self.ray_address = ray_address
        self.cluster_name = cluster_name
        self.url = f"tcp://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self) -> "StandaloneRouter":
        cmd = [sys.executable, "-m", "plinth.cli", "router", "--ray-address", self.ray_address,
               "--cluster-name", self.cluster_name, "--listen", self.url]
        self.proc, self.output = start_until_ready(cmd, f"router ready: listening on {self.url}",
                                                   READY_TIMEOUT_S)
        return self

    def kill(self) -> None:
        """SIGKILL the router process."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM, then wait for the exit; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def restart(self) -> "StandaloneRouter":
        return self.start()


@pytest.fixture
def router_factory(ray_cluster):
    """``make(cluster_name)`` starts a ``plinth router`` for the broker started with
    ``--cluster-name cluster_name``; every router is stopped at the end."""
    routers: list[StandaloneRouter] = []

    def make(cluster_name: str) -> StandaloneRouter:
        router = StandaloneRouter(ray_cluster, cluster_name)
        routers.append(router)
        return router.start()

    yield make
    for router in routers:
        router.stop()
